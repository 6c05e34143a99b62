package engine

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/apitypes"
	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/internal/testsupport/pgtest"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// zonesView is GET /api/v1/zones on n.
func zonesView(t *testing.T, n *node) apitypes.ZonesResponse {
	t.Helper()
	resp, err := http.Get("http://" + n.e.APIAddr().String() + "/api/v1/zones")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var out apitypes.ZonesResponse
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return out
}

// zoneOn reports whether n's zone list shows zone online on replica.
func zoneOn(t *testing.T, n *node, zone, replica string) bool {
	t.Helper()
	for _, c := range zonesView(t, n).Zones {
		if c.Name == zone {
			return c.Online && c.Replica == replica
		}
	}
	return false
}

// zoneOffline reports whether n's zone list shows zone offline.
func zoneOffline(t *testing.T, n *node, zone string) bool {
	t.Helper()
	for _, c := range zonesView(t, n).Zones {
		if c.Name == zone {
			return !c.Online
		}
	}
	return false
}

// replicaPair starts two global replicas on one database (B shares A's
// signing key and cluster id), A first, so A leads. pgURLA, if not
// empty, is the URL A connects through.
func replicaPair(t *testing.T, url, pgURLA string, heartbeat, expiry time.Duration) (a, b *node) {
	t.Helper()
	if pgURLA == "" {
		pgURLA = url
	}
	a = startNode(t, Config{Role: RoleGlobal, PluginsDir: builtinDir, Store: StorePostgres, PostgresURL: pgURLA,
		ReplicaID: "replica-a", LeaseHeartbeat: heartbeat, LeaseExpiry: expiry})
	b = startNode(t, Config{Role: RoleGlobal, PluginsDir: builtinDir, Store: StorePostgres, PostgresURL: url,
		ReplicaID: "replica-b", LeaseHeartbeat: heartbeat, LeaseExpiry: expiry,
		TokenSigningKeyFile: SigningKeyFile(a.e.cfg.DataDir, ""), ClusterID: clusterIDOf(t, a)})
	return a, b
}

// A zone's session moves from replica A to replica B (a second session of
// the zone connects to B): A ends its session at once with the reason
// replaced, though that session writes nothing after it started (the
// leases renew only every hour, so only the claim's notification can tell
// A); a later write under A's fence is refused in its commit; both
// replicas show the zone online on B.
func TestLeaseZoneMovesToAnotherReplica(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a, b := replicaPair(t, url, "", time.Hour, 2*time.Hour)
	assert.Equal(t, "replica-a", zonesView(t, a).Replica)
	assert.Equal(t, "replica-b", zonesView(t, b).Replica)
	eventually(t, func() bool { return seriesValueOf(t, a, "kds_leader", nil) == 1 }, "A, started first, leads")
	assert.Equal(t, float64(0), seriesValueOf(t, b, "kds_leader", nil))

	const zone = "zone-1"
	tok := tokenFor(t, a, zone)
	dpURL := kdssync.TypeURL("Dataplane")
	older := rawSession(t, dialGlobal(t, a), zone, tok)
	sendResponse(t, older, dpURL, "1", wireResource(t, dataplane("dp-1", "10.0.9.1"), "old-1"))
	require.Nil(t, awaitReply(t, older, "1").GetErrorDetail())
	for _, n := range []*node{a, b} {
		eventually(t, func() bool { return zoneOn(t, n, zone, "replica-a") }, "online on A, seen by %s", n.e.cfg.ReplicaID)
	}
	leases, err := a.e.live.leases.Leases(context.Background())
	require.NoError(t, err)
	require.Len(t, leases, 1)
	genA := leases[0].Generation

	moved := time.Now()
	newer := rawSession(t, dialGlobal(t, b), zone, tok)
	st := recvUntilErr(t, older)
	t.Logf("A's session ended %s after the newer session was opened on B (figure only)", time.Since(moved))
	assert.Contains(t, st.Message(), "replaced by a newer session on global replica replica-b")
	eventually(t, func() bool {
		return seriesValueOf(t, a, "kds_sessions_ended_total", map[string]string{"zone": zone, "reason": "replaced"}) == 1
	}, "A counts its session as replaced")
	sendResponse(t, newer, dpURL, "1", wireResource(t, dataplane("dp-1", "10.0.9.2"), "new-2"))
	require.Nil(t, awaitReply(t, newer, "1").GetErrorDetail())

	late := dataplane("dp-1", "10.0.9.3")
	late.Zone, late.Version = zone, "old-2"
	err = (&sink{s: a.e.store, zone: zone, fence: &store.Fence{Zone: zone, Generation: genA}}).Apply(context.Background(), []*resource.Resource{late}, nil)
	require.ErrorIs(t, err, store.ErrFenced, "a write under A's session's fence")
	got := find(a, resource.Key{Type: "Dataplane", Mesh: "default", Zone: zone, Name: "dp-1"})
	require.NotNil(t, got)
	assert.Equal(t, "new-2", got.Version)

	for _, n := range []*node{a, b} {
		eventually(t, func() bool { return zoneOn(t, n, zone, "replica-b") }, "online on B, seen by %s", n.e.cfg.ReplicaID)
	}
	// A keeps the counters of the session it served; B has its own.
	ca := zonesView(t, a).Zones[0]
	assert.EqualValues(t, 1, ca.Sessions)
	assert.Empty(t, ca.Streams, "A shows no stream state for a session it does not serve")
	assert.Equal(t, float64(0), seriesValueOf(t, a, "kds_session_connected", map[string]string{"zone": zone}))
}

// A replica cut off from the database (as good as dead to the others: no
// heartbeats, its leader connection gone) has its zone shown offline by
// the other replica once the lease expires, and the other replica takes
// over leadership and marks the lease ended. When the zone connects to
// the other replica it is online there, on every replica's view; the cut
// off replica, back, finds its lease ended and ends its session.
func TestLeaseDeadReplicasZoneGoesOffline(t *testing.T) {
	url := pgtest.NewDatabase(t)
	proxy := pgtest.NewProxy(t, url)
	a, b := replicaPair(t, url, proxy.URL(url), 100*time.Millisecond, time.Second)
	const zone = "zone-1"
	tok := tokenFor(t, a, zone)
	older := rawSession(t, dialGlobal(t, a), zone, tok)
	awaitSubscriptions(t, a, older)
	eventually(t, func() bool { return zoneOn(t, b, zone, "replica-a") }, "online on A, seen by B")

	cut := time.Now()
	proxy.Cut()
	eventually(t, func() bool { return zoneOffline(t, b, zone) }, "B shows the zone offline once A's lease expired")
	t.Logf("B showed the zone offline %s after A was cut off, lease expiry 1s (figure only)", time.Since(cut))
	eventually(t, func() bool { return seriesValueOf(t, b, "kds_leader", nil) == 1 }, "B leads")
	eventually(t, func() bool {
		ls, err := b.e.live.leases.Leases(context.Background())
		return err == nil && len(ls) == 1 && !ls[0].EndedAt.IsZero()
	}, "the leader marks the lease ended")
	c := zonesView(t, b).Zones[0]
	assert.Equal(t, "replica-a", c.Replica, "the replica that held it last")
	assert.False(t, c.DisconnectedAt.IsZero())

	proxy.Restore()
	st := recvUntilErr(t, older)
	assert.Contains(t, st.Message(), "session lease expired")

	newer := rawSession(t, dialGlobal(t, b), zone, tok)
	for _, n := range []*node{a, b} {
		eventually(t, func() bool { return zoneOn(t, n, zone, "replica-b") }, "online on B, seen by %s", n.e.cfg.ReplicaID)
	}
	_ = newer
}

// awaitSubscriptions reads s until g has subscribed to every type it
// receives from zones: g's session has read what it holds of the zone
// from its store, and touches the store no more while the zone is idle.
func awaitSubscriptions(t *testing.T, g *node, s kdsv1.KDS_SessionClient) {
	t.Helper()
	want := map[string]bool{}
	for _, typ := range g.e.received {
		want[kdssync.TypeURL(typ)] = true
	}
	for len(want) > 0 {
		m, err := s.Recv()
		require.NoError(t, err, "waiting for global's subscriptions")
		if r := m.GetRequest(); r != nil {
			delete(want, r.GetTypeUrl())
		}
	}
}

// A global on its own store names itself as the replica of its zones and
// leads.
func TestBoltGlobalIsItsOwnReplica(t *testing.T) {
	g := startNode(t, Config{Role: RoleGlobal, PluginsDir: builtinDir, ReplicaID: "solo"})
	z := startZone(t, "zone-1", g, builtinDir, "")
	eventually(t, func() bool { return zoneOn(t, g, "zone-1", "solo") }, "online on this replica")
	assert.Equal(t, "solo", zonesView(t, g).Replica)
	assert.Equal(t, "solo", g.e.ReplicaID())
	require.Len(t, g.e.Zones(), 1)
	assert.Equal(t, "solo", g.e.Zones()[0].Replica)
	assert.Nil(t, z.e.Zones(), "a zone has no zone list")
	assert.Equal(t, float64(1), seriesValueOf(t, g, "kds_leader", nil))
}
