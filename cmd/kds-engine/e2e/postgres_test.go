package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine"
	"github.com/kds-engine/kds-engine/internal/testsupport/pgtest"
)

// TestGlobalPostgresUnreachableExitsOne: `kds-engine global --store
// postgres` with no server at the URL exits 1 naming host, port and
// database, and shows the password nowhere.
func TestGlobalPostgresUnreachableExitsOne(t *testing.T) {
	port := freePort(t)
	url := "postgres://kds:s3cret-pw@127.0.0.1:" + strconv.Itoa(port) + "/kdsdb?connect_timeout=2"
	r := cli(t, "global", "--store", "postgres", "--postgres-url", url, "--insecure",
		"--kds-addr", addr(freePort(t)), "--api-addr", addr(freePort(t)),
		"--plugins-dir", pluginsDir, "--data-dir", t.TempDir())
	assert.Equal(t, 1, r.code, r.String())
	assert.Contains(t, r.stderr, fmt.Sprintf("cannot reach PostgreSQL at 127.0.0.1:%d database kdsdb", port))
	assert.NotContains(t, r.stderr+r.stdout, "s3cret-pw")
}

// postgresGlobal starts a cluster whose global (TLS with a fresh demo PKI)
// stores in the PostgreSQL database at url, and waits until it is ready.
func postgresGlobal(t *testing.T, url string) *cluster {
	t.Helper()
	dir := t.TempDir()
	ca, cert, key, _, err := engine.GenerateDemoPKI(filepath.Join(dir, "pki"), nil)
	require.NoError(t, err)
	c := &cluster{dir: dir, pki: pki{ca: ca, cert: cert, key: key}, zones: map[string]*node{}}
	g := &node{name: "global", dataDir: filepath.Join(dir, "global")}
	require.NoError(t, os.MkdirAll(g.dataDir, 0o700))
	g.args = []string{"global", "--data-dir", g.dataDir, "--plugins-dir", pluginsDir,
		"--tls-cert-file", cert, "--tls-key-file", key, "--store", "postgres", "--postgres-url", url}
	c.global = g
	c.start(t, g, true)
	return c
}

// TestGlobalPostgresCrashRestart: a global on PostgreSQL killed with
// SIGKILL and restarted loses nothing it acknowledged, and its zone keeps
// syncing.
func TestGlobalPostgresCrashRestart(t *testing.T) {
	c := postgresGlobal(t, pgtest.NewDatabase(t))
	g := c.global
	z := c.addZone(t, "zone-1")

	r := mustCLI(t, "apply", "-f", examplesFile(t, "global.yaml"), "--api", g.api())
	require.Contains(t, r.stdout, "4 resources applied: 4 created")
	before := list(t, g.api(), "MeshTimeout")
	require.Len(t, before, 1)
	_, err := os.Stat(filepath.Join(g.dataDir, "kds.db"))
	require.ErrorIs(t, err, os.ErrNotExist, "no bolt file next to a PostgreSQL store")

	g.p.kill9(t)
	c.start(t, g, false)
	after := list(t, g.api(), "MeshTimeout")
	require.Len(t, after, 1)
	assert.Equal(t, before[0].Version, after[0].Version, "the acknowledged write survived")

	r = mustCLI(t, "apply", "-f", writeFile(t, t.TempDir(), "changed.yaml", changedTimeout), "--api", g.api())
	require.Contains(t, r.stdout, "MeshTimeout default/web-timeouts updated")
	waitFor(t, "the changed MeshTimeout on the zone", func() (bool, string) {
		mt, ok := find(list(t, z.api(), "MeshTimeout"), "web-timeouts", "")
		return ok && connectionTimeout(mt) == "7s", fmt.Sprintf("%v %q", ok, connectionTimeout(mt))
	})
}
