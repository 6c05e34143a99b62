package engine

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/boltstore"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
	"github.com/kds-engine/kds-engine/internal/testsupport/pgtest"
)

// TestGlobalOnPostgresRidesOutItsLoss: a global on PostgreSQL syncs both
// ways; with the database cut off, /readyz and admin API writes say why
// (503), the zone keeps what it has, and everything resumes, nothing lost,
// once the database is back.
func TestGlobalOnPostgresRidesOutItsLoss(t *testing.T) {
	url := pgtest.NewDatabase(t)
	proxy := pgtest.NewProxy(t, url)
	g := startNode(t, Config{Role: RoleGlobal, PluginsDir: builtinDir, Store: StorePostgres, PostgresURL: proxy.URL(url)})
	z := startZone(t, "zone-1", g, builtinDir, "")

	create(t, g, &resource.Resource{Type: "Mesh", Name: "default", Spec: spec(map[string]any{})})
	acked := create(t, g, meshTimeout("before", "1s"))
	create(t, z, dataplane("web-1", "10.0.0.1"))
	dpKey := func(name string) resource.Key {
		return resource.Key{Type: "Dataplane", Mesh: "default", Zone: "zone-1", Name: name}
	}
	eventually(t, func() bool { return find(z, acked.Key()) != nil }, "policy reaches the zone")
	eventually(t, func() bool { return find(g, dpKey("web-1")) != nil }, "dataplane reaches global")
	code, _ := apiRequest(t, g, "GET", "/readyz", "", "")
	require.Equal(t, http.StatusOK, code)

	proxy.Cut()
	code, e := apiRequest(t, g, "GET", "/readyz", "", "")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, e.Message, "PostgreSQL at 127.0.0.1:")
	assert.Contains(t, e.Message, "unavailable")
	code, e = apiRequest(t, g, "POST", "/api/v1/apply", "", `{"resources":[{"type":"Mesh","name":"during","spec":{}}]}`, "Content-Type", "application/json")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "store_unavailable", e.Code)
	assert.Contains(t, e.Message, "unavailable")
	// The zone keeps serving what it holds and takes local writes.
	assert.NotNil(t, find(z, acked.Key()))
	create(t, z, dataplane("web-2", "10.0.0.2"))

	proxy.Restore()
	eventually(t, func() bool { c, _ := apiRequest(t, g, "GET", "/readyz", "", ""); return c == http.StatusOK }, "ready again")
	eventually(t, func() bool { return find(g, dpKey("web-2")) != nil }, "the zone's write made while global's database was away arrives")
	after := create(t, g, meshTimeout("after", "2s"))
	eventually(t, func() bool { return find(z, after.Key()) != nil }, "global's writes reach the zone again")
	got := find(g, acked.Key())
	require.NotNil(t, got, "acknowledged write kept")
	assert.Equal(t, acked.Version, got.Version)
}

// TestGlobalOnPostgresUnreachableAtStart: Run fails at once with an error
// naming host, port and database, without the password.
func TestGlobalOnPostgresUnreachableAtStart(t *testing.T) {
	cfg := Config{Role: RoleGlobal, PluginsDir: builtinDir, Store: StorePostgres, DataDir: t.TempDir(),
		PostgresURL: "postgres://kds:s3cret@127.0.0.1:1/kds?connect_timeout=2",
		APIAddress:  "127.0.0.1:0", KDSAddress: "127.0.0.1:0", TLSCertFile: certFile, TLSKeyFile: keyFile}
	e, err := New(cfg, hclog.NewNullLogger())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = e.Run(ctx)
	require.Error(t, err)
	assert.True(t, errors.Is(err, ErrStoreUnavailable))
	assert.Contains(t, err.Error(), "127.0.0.1:1 database kds")
	assert.NotContains(t, err.Error(), "s3cret")
}

// TestBoltFileMovedToItsDocumentedPlace: a data dir written by an engine
// that kept the bolt file at DATA/kds.db/kds.db is moved to DATA/kds.db at
// start, with a log line, and its resources are served.
func TestBoltFileMovedToItsDocumentedPlace(t *testing.T) {
	dir := t.TempDir()
	old, err := boltstore.Open(filepath.Join(dir, "kds.db"))
	require.NoError(t, err)
	mt := meshTimeout("kept", "1s")
	mt.Version = "v1"
	_, err = old.Apply(context.Background(), store.Batch{Put: []*resource.Resource{mt}})
	require.NoError(t, err)
	require.NoError(t, old.Close())

	var out logbuf.Buffer
	g := startNodeLogging(t, Config{Role: RoleGlobal, PluginsDir: builtinDir, DataDir: dir},
		hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info}))
	fi, err := os.Stat(filepath.Join(dir, "kds.db"))
	require.NoError(t, err)
	assert.True(t, fi.Mode().IsRegular())
	assert.Len(t, out.Lines("moved the database file", filepath.Join(dir, "kds.db", "kds.db")), 1)
	got := find(g, mt.Key())
	require.NotNil(t, got)
	assert.Equal(t, "v1", got.Version)
}

// TestTwoGlobalsOnOneDatabase: a policy written through global A reaches a
// zone connected to global B (B's feed follows A's commits), and the
// zone's dataplanes, stored through B, are read through A.
func TestTwoGlobalsOnOneDatabase(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a := startNode(t, Config{Role: RoleGlobal, PluginsDir: builtinDir, Store: StorePostgres, PostgresURL: url})
	b := startNode(t, Config{Role: RoleGlobal, PluginsDir: builtinDir, Store: StorePostgres, PostgresURL: url,
		TokenSigningKeyFile: SigningKeyFile(a.e.cfg.DataDir, ""), ClusterID: clusterIDOf(t, a)})
	cfg := zoneConfig(t, "zone-1", a, Config{PluginsDir: builtinDir})
	cfg.GlobalAddress = "localhost:" + portOf(b.e.KDSAddr().String())
	z := startNode(t, cfg)

	create(t, a, &resource.Resource{Type: "Mesh", Name: "default", Spec: spec(map[string]any{})})
	mt := create(t, a, meshTimeout("from-a", "3s"))
	eventually(t, func() bool { r := find(z, mt.Key()); return r != nil && r.Version == mt.Version },
		"a write through A reaches the zone attached to B")

	create(t, z, dataplane("web-1", "10.0.0.1"))
	k := resource.Key{Type: "Dataplane", Mesh: "default", Zone: "zone-1", Name: "web-1"}
	eventually(t, func() bool { return find(a, k) != nil }, "the zone's dataplane, stored through B, read through A")

	require.NoError(t, a.b().Delete(context.Background(), mt.Key(), ""))
	eventually(t, func() bool { return find(z, mt.Key()) == nil }, "a delete through A reaches the zone")
}
