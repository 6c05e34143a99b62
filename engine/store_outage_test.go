package engine

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/guard"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/memory"
	"github.com/kds-engine/kds-engine/engine/internal/store/pgstore"
	"github.com/kds-engine/kds-engine/internal/testsupport/pgtest"
)

// outageSetup is a global on PostgreSQL reached through a proxy the test
// cuts, and one zone, synced both ways.
type outageSetup struct {
	url   string // the database, directly
	proxy *pgtest.Proxy
	g, z  *node
}

func startOutageSetup(t *testing.T) outageSetup {
	return startOutageSetupWith(t, Config{})
}

// startOutageSetupWith is startOutageSetup with global's lease timings
// from cfg.
func startOutageSetupWith(t *testing.T, cfg Config) outageSetup {
	url := pgtest.NewDatabase(t)
	proxy := pgtest.NewProxy(t, url)
	g := startNode(t, Config{Role: RoleGlobal, PluginsDir: builtinDir, Store: StorePostgres, PostgresURL: proxy.URL(url),
		LeaseHeartbeat: cfg.LeaseHeartbeat, LeaseExpiry: cfg.LeaseExpiry})
	z := startZone(t, "zone-1", g, builtinDir, "")
	create(t, g, meshResource("default"))
	return outageSetup{url: url, proxy: proxy, g: g, z: z}
}

// sessionsStarted is kds_sessions_started_total for zone-1 on n (global
// counts the zone's sessions, the zone its own).
func sessionsStarted(t *testing.T, n *node) float64 {
	return seriesValueOf(t, n, "kds_sessions_started_total", map[string]string{"zone": "zone-1"})
}

// TestStoreOutageKeepsSessionsUp: while global's database is cut off, the
// zone's session stays up on both sides (no new session starts), the
// zone's write waits un-ACKed while global retries storing it, /readyz
// and kds_store_available say the store is away; once the database is
// back the write lands, and global's writes made before the outage are on
// the zone.
func TestStoreOutageKeepsSessionsUp(t *testing.T) {
	s := startOutageSetup(t)
	g, z := s.g, s.z
	before := create(t, g, meshTimeout("before", "1s"))
	create(t, z, dataplane("web-1", "10.0.0.1"))
	dpKey := resource.Key{Type: "Dataplane", Mesh: "default", Zone: "zone-1", Name: "web-1"}
	eventually(t, func() bool { return find(g, dpKey) != nil }, "dataplane reaches global")
	// The dataplane's response is ACKed once global stored it.
	eventually(t, func() bool {
		ts := zoneType(z, GlobalPeer, "Dataplane")
		return ts.ResponsesSent > 0 && ts.ResponsesACKed == ts.ResponsesSent
	}, "the zone's responses are all ACKed")
	require.Equal(t, 1.0, seriesValueOf(t, g, "kds_store_available", nil))
	require.Equal(t, 1.0, sessionsStarted(t, g))
	require.Equal(t, 1.0, sessionsStarted(t, z))
	acked := zoneType(z, GlobalPeer, "Dataplane").ResponsesACKed

	s.proxy.Cut()
	code, e := apiRequest(t, g, "GET", "/readyz", "", "")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, e.Message, "store: PostgreSQL at 127.0.0.1:")
	code, e = apiRequest(t, g, "POST", "/api/v1/apply", "", `{"resources":[{"type":"Mesh","name":"during","spec":{}}]}`, "Content-Type", "application/json")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "store_unavailable", e.Code)
	eventually(t, func() bool { return seriesValueOf(t, g, "kds_store_available", nil) == 0 }, "kds_store_available drops to 0")

	during := create(t, z, dataplane("web-2", "10.0.0.2"))
	// Global tried to store the zone's response, failed, and tried again:
	// the session survived a failed apply.
	eventually(t, func() bool {
		return seriesValueOf(t, g, "kds_sync_apply_retries_total", map[string]string{"zone": "zone-1"}) >= 3
	}, "global retries storing the zone's response")
	ts := zoneType(z, GlobalPeer, "Dataplane")
	assert.Greater(t, ts.ResponsesSent, acked, "the zone sent its write")
	assert.Equal(t, acked, ts.ResponsesACKed, "nothing global did not store is ACKed")
	assert.Equal(t, 1.0, sessionsStarted(t, g), "global kept the zone's session")
	assert.Equal(t, 1.0, sessionsStarted(t, z), "the zone kept its session")
	c, _ := g.e.Insights().Get("zone-1")
	assert.True(t, c.Online)
	assert.Zero(t, seriesValueOf(t, g, "kds_sessions_ended_total", map[string]string{"zone": "zone-1"}))

	s.proxy.Restore()
	k := during.Key()
	k.Zone = "zone-1"
	eventually(t, func() bool { r := find(g, k); return r != nil && r.Version == during.Version },
		"the zone's write made during the outage lands on global")
	eventually(t, func() bool {
		ts := zoneType(z, GlobalPeer, "Dataplane")
		return ts.ResponsesACKed == ts.ResponsesSent
	}, "and is ACKed")
	eventually(t, func() bool { c, _ := apiRequest(t, g, "GET", "/readyz", "", ""); return c == http.StatusOK }, "ready again")
	eventually(t, func() bool { return seriesValueOf(t, g, "kds_store_available", nil) == 1 }, "kds_store_available back to 1")
	r := find(z, before.Key())
	require.NotNil(t, r, "global's write made before the outage is on the zone")
	assert.Equal(t, before.Version, r.Version)
	after := create(t, g, meshTimeout("after", "2s"))
	eventually(t, func() bool { return find(z, after.Key()) != nil }, "global's writes reach the zone again")
	assert.Equal(t, 1.0, sessionsStarted(t, g), "one session from start to end (global)")
	assert.Equal(t, 1.0, sessionsStarted(t, z), "one session from start to end (zone)")
}

// TestStoreOutageResyncSendsOnlyChanges: while global is cut off from its
// database, another replica changes global's resources and the change
// log loses those commits (pruned). When the database is back, global's
// feed cannot deliver them (ErrWatchLost): it reloads its served resources
// from a fresh snapshot, and the zone, on the same session, receives only
// what changed against what it ACKed.
func TestStoreOutageResyncSendsOnlyChanges(t *testing.T) {
	s := startOutageSetup(t)
	g, z := s.g, s.z
	var mts []*resource.Resource
	for i := range 6 {
		mts = append(mts, create(t, g, meshTimeout(fmt.Sprintf("mt-%d", i), "1s")))
	}
	eventually(t, func() bool {
		for _, mt := range mts {
			if r := find(z, mt.Key()); r == nil || r.Version != mt.Version {
				return false
			}
		}
		return true
	}, "policies reach the zone")
	eventually(t, func() bool {
		ts := zoneType(g, "zone-1", "MeshTimeout")
		return ts.ResponsesSent > 0 && ts.ResponsesACKed == ts.ResponsesSent
	}, "global's responses are all ACKed")
	sent := zoneType(g, "zone-1", "MeshTimeout").ResourcesSent

	s.proxy.Cut()
	ctx := context.Background()
	other, err := pgstore.Open(ctx, s.url) // another replica, still connected
	require.NoError(t, err)
	defer other.Close()
	var rev0 uint64
	conn, err := pgx.Connect(ctx, s.url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	require.NoError(t, conn.QueryRow(ctx, "SELECT revision FROM kds_counter WHERE id = 1").Scan(&rev0))
	changed := meshTimeout("mt-0", "9s")
	changed.Version = "other-1"
	added := meshTimeout("added", "3s")
	added.Version = "other-2"
	_, err = other.Apply(ctx, store.Batch{Put: []*resource.Resource{changed, added}, Delete: []resource.Key{mts[1].Key()}})
	require.NoError(t, err)
	// The log loses those commits, as if pruned while global was away.
	_, err = conn.Exec(ctx, "DELETE FROM kds_changes WHERE revision > $1", rev0)
	require.NoError(t, err)

	s.proxy.Restore()
	eventually(t, func() bool {
		r := find(z, added.Key())
		c := find(z, changed.Key())
		return r != nil && c != nil && c.Version == "other-1" && find(z, mts[1].Key()) == nil
	}, "the zone receives the changes after the reload")
	eventually(t, func() bool {
		ts := zoneType(g, "zone-1", "MeshTimeout")
		return ts.ResponsesACKed == ts.ResponsesSent
	}, "and ACKs them")
	assert.Equal(t, sent+2, zoneType(g, "zone-1", "MeshTimeout").ResourcesSent,
		"only the changed and the added policy were sent, not the unchanged ones")
	for _, mt := range mts[2:] {
		r := find(z, mt.Key())
		require.NotNil(t, r)
		assert.Equal(t, mt.Version, r.Version)
	}
	assert.Equal(t, 1.0, sessionsStarted(t, g), "global kept the zone's session")
	assert.Equal(t, 1.0, sessionsStarted(t, z), "the zone kept its session")
}

// flakyStore fails Apply with the errors in fail, one per call, then
// passes calls to the memory store.
type flakyStore struct {
	store.Store
	mu    sync.Mutex
	fail  []error
	calls int
}

func (s *flakyStore) Apply(ctx context.Context, b store.Batch) (uint64, error) {
	s.mu.Lock()
	s.calls++
	var err error
	if len(s.fail) > 0 {
		err, s.fail = s.fail[0], s.fail[1:]
	}
	s.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return s.Store.Apply(ctx, b)
}

func (s *flakyStore) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// TestSinkWaitsOutAnUnavailableStore: the sink retries an apply that
// failed because the store was unavailable until it is stored, reporting
// each failed attempt and the success; any other error returns at once;
// the end of the session's context ends the wait.
func TestSinkWaitsOutAnUnavailableStore(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	down := fmt.Errorf("PostgreSQL at h:1 database d unavailable: connection refused: %w", store.ErrUnavailable)
	dp := dataplane("dp-1", "10.0.0.1")
	dp.Zone, dp.Version = "z", "v1"

	fs := &flakyStore{Store: mem, fail: []error{down, down, down}}
	var attempts []int
	k := &sink{s: guard.New(fs, guard.Global, dpTypes{}), zone: "z", retried: func(a int, _ error) { attempts = append(attempts, a) }}
	require.NoError(t, k.Apply(t.Context(), []*resource.Resource{dp}, nil))
	assert.Equal(t, []int{1, 2, 3, 0}, attempts, "three failed attempts, then stored")
	got, err := mem.Get(t.Context(), dp.Key())
	require.NoError(t, err)
	assert.Equal(t, "v1", got.Version)

	// Any other store error ends the apply (and the session) at once.
	fs = &flakyStore{Store: mem, fail: []error{fmt.Errorf("apply: %w", store.ErrConflict)}}
	k = &sink{s: guard.New(fs, guard.Global, dpTypes{}), zone: "z"}
	require.ErrorIs(t, k.Apply(t.Context(), []*resource.Resource{dp}, nil), store.ErrConflict)
	assert.Equal(t, 1, fs.Calls())

	// The session ending stops the wait, with the store's error.
	fs = &flakyStore{Store: mem, fail: slices.Repeat([]error{down}, 1000)}
	k = &sink{s: guard.New(fs, guard.Global, dpTypes{}), zone: "z"}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- k.Apply(ctx, []*resource.Resource{dp}, nil) }()
	eventually(t, func() bool { return fs.Calls() >= 2 }, "retrying")
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, store.ErrUnavailable)
	case <-time.After(30 * time.Second):
		t.Fatal("Apply did not return after its context ended")
	}
}

// TestStoreOutageLongerThanTheLeaseExpiry: an outage of the whole database
// that outlasts the session leases' expiry does not end the sessions when
// the database returns. No lease was renewed meanwhile, but no replica
// could renew one either: the leader that takes over after the outage
// gives every replica a lease expiry's time to renew before it expires
// anything, so the zone keeps its one session.
func TestStoreOutageLongerThanTheLeaseExpiry(t *testing.T) {
	s := startOutageSetupWith(t, Config{LeaseHeartbeat: 250 * time.Millisecond, LeaseExpiry: time.Second})
	g, z := s.g, s.z
	eventually(t, func() bool { return seriesValueOf(t, g, "kds_leader", nil) == 1 }, "global leads")
	before := create(t, g, meshTimeout("before-outage", "1s"))
	eventually(t, func() bool { return find(z, before.Key()) != nil }, "the zone is synced")
	require.Equal(t, 1.0, sessionsStarted(t, g))
	require.Equal(t, 1.0, sessionsStarted(t, z))

	s.proxy.Cut()
	eventually(t, func() bool { return seriesValueOf(t, g, "kds_leader", nil) == 0 }, "leadership is lost with the database")
	// Several lease expiries without a heartbeat.
	time.Sleep(4 * time.Second)
	s.proxy.Restore()
	eventually(t, func() bool { return seriesValueOf(t, g, "kds_leader", nil) == 1 }, "global leads again")
	// Give the leader several expiries after it took over: a lease it
	// expired would end the session at the next heartbeat.
	after := create(t, g, meshTimeout("after-outage", "2s"))
	eventually(t, func() bool { return find(z, after.Key()) != nil }, "global's writes reach the zone again")
	time.Sleep(4 * time.Second)
	dp := create(t, z, dataplane("web-after", "10.0.0.9"))
	k := dp.Key()
	k.Zone = "zone-1"
	eventually(t, func() bool { return find(g, k) != nil }, "the zone's writes reach global again")
	assert.Equal(t, 1.0, sessionsStarted(t, g), "global kept the zone's session through the outage")
	assert.Equal(t, 1.0, sessionsStarted(t, z), "the zone kept its session through the outage")
	assert.Zero(t, seriesValueOf(t, g, "kds_sessions_ended_total", map[string]string{"zone": "zone-1"}))
}

// TestZoneStatusDuringOutageNamesThisReplica: while the session leases
// cannot be read, a replica answers zone status from its own sessions
// (api.md): a zone whose session runs here is still shown online on this
// replica (REPLICA in inspect zones), not without a replica.
func TestZoneStatusDuringOutageNamesThisReplica(t *testing.T) {
	s := startOutageSetup(t)
	eventually(t, func() bool {
		zs := s.g.e.Zones()
		return len(zs) == 1 && zs[0].Online && zs[0].Replica == s.g.e.ReplicaID()
	}, "zone-1 online on this replica, from its lease")

	s.proxy.Cut()
	defer s.proxy.Restore()
	zs := s.g.e.Zones()
	require.Len(t, zs, 1)
	assert.True(t, zs[0].Online)
	assert.Equal(t, s.g.e.ReplicaID(), zs[0].Replica, "the replica serving the zone's session")
}
