package pgtest

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// recorder stands in for a test: it records Skipf and Fatalf and stops the
// goroutine as the real ones do.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func run(t *testing.T) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		NewDatabase(r)
	}()
	<-done
	return r
}

func TestUnreachableSkipsOrFailsUnderCI(t *testing.T) {
	t.Setenv(EnvURL, "postgres://postgres@127.0.0.1:1/test?connect_timeout=2")

	t.Setenv("CI", "")
	r := run(t)
	if r.failed != "" || !strings.HasPrefix(r.skipped, "skipping: no PostgreSQL test server") || strings.Contains(r.skipped, "\n") {
		t.Fatalf("without CI: want one skip line, got skip %q fail %q", r.skipped, r.failed)
	}

	t.Setenv("CI", "true")
	r = run(t)
	if r.skipped != "" || !strings.Contains(r.failed, "CI=true") {
		t.Fatalf("with CI=true: want a failure, got skip %q fail %q", r.skipped, r.failed)
	}
}

func TestNewDatabaseIsOwnAndDropped(t *testing.T) {
	var url string
	t.Run("create", func(t *testing.T) {
		url = NewDatabase(t)
		c, err := pgx.Connect(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		var name string
		if err := c.QueryRow(context.Background(), "SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(name, "kds_test_") {
			t.Fatalf("connected to %q", name)
		}
	})
	if url == "" {
		return // skipped: no server
	}
	c, err := pgx.Connect(context.Background(), url)
	if err == nil {
		c.Close(context.Background())
		t.Fatal("the database still exists after its test ended")
	}
}
