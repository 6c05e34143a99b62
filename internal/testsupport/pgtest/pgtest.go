// Package pgtest gives tests a PostgreSQL database of their own on the
// test server. It sits outside engine/ so that every test of the module
// (engine packages, the CLI's end-to-end tests, benchmarks) can use it.
//
// The server is named by KDS_ENGINE_TEST_POSTGRES_URL (default
// postgres://postgres@127.0.0.1:5432/test): a URL whose user may create
// databases. NewDatabase creates a database with a random name on it and
// drops it when the test ends. When the server cannot be reached, the test
// is skipped with one line saying why, unless CI=true: then it fails, so
// that CI never passes by skipping.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL names the variable holding the test server's URL.
const EnvURL = "KDS_ENGINE_TEST_POSTGRES_URL"

// DefaultURL is the test server when EnvURL is unset.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test"

// ServerURL returns the test server's URL (EnvURL, or DefaultURL).
func ServerURL() string {
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	return DefaultURL
}

// Required reports whether PostgreSQL tests must run (CI=true).
func Required() bool { return os.Getenv("CI") == "true" }

// NewDatabase creates an empty database on the test server, registers its
// drop with t.Cleanup (terminating connections left to it), and returns
// its URL. t holds the server (shared, see Exclusive) until it ends. It skips the test if the server cannot be reached, or fails it
// when Required.
func NewDatabase(t testing.TB) string {
	t.Helper()
	shared(t) // released after the drop below: cleanups run last first
	server := ServerURL()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		why := strings.Join(strings.Fields(err.Error()), " ") // one line
		if Required() {
			t.Fatalf("PostgreSQL test server unreachable (CI=true, so this fails; %s): %s", EnvURL, why)
		}
		t.Skipf("skipping: no PostgreSQL test server (%s); set %s or start one on 127.0.0.1:5432", why, EnvURL)
	}
	defer admin.Close(context.Background())
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "kds_test_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database %s: %v", name, err)
	}
	t.Cleanup(func() { Drop(t, server, name) })
	return WithDatabase(t, server, name)
}

// Drop drops database name on the server at serverURL, terminating the
// connections still open to it.
func Drop(t testing.TB, serverURL, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		t.Errorf("drop test database %s: %v", name, err)
		return
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		t.Errorf("drop test database %s: %v", name, err)
	}
}

// WithDatabase returns serverURL (URL or key=value form) naming database
// name instead of its own.
func WithDatabase(t testing.TB, serverURL, name string) string {
	t.Helper()
	if strings.HasPrefix(serverURL, "postgres://") || strings.HasPrefix(serverURL, "postgresql://") {
		u, err := url.Parse(serverURL)
		if err != nil {
			t.Fatalf("%s: %v", EnvURL, err)
		}
		u.Path = "/" + name
		return u.String()
	}
	return serverURL + " dbname=" + name
}
