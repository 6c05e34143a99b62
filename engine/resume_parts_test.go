package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// bulk writes n resources of typ named prefix-N in mesh default on n's
// side.
func bulk(t *testing.T, n *node, typ, prefix string, count int) {
	t.Helper()
	rs := make([]*resource.Resource, count)
	for i := range rs {
		rs[i] = &resource.Resource{Type: typ, Mesh: "default", Name: fmt.Sprintf("%s-%05d", prefix, i), Spec: spec(map[string]any{})}
	}
	require.NoError(t, n.e.BulkLoad(context.Background(), rs))
}

// With the smallest max message size both sides accept (64 KiB), 3000 held
// versions of a type do not fit one subscription request: a zone that
// restarts sends them in parts, in both directions, and nothing unchanged
// is sent again. (Before held versions could go in parts, every reconnect
// of such a zone ended with "message too large".)
func TestResumeInPartsOverRealSessions(t *testing.T) {
	const n, maxMsg = 3000, 64 << 10
	g := startNode(t, Config{Role: RoleGlobal, PluginsDir: lenientDir, MaxMessageSize: maxMsg, MaxResourceSize: 16 << 10})
	zoneData := t.TempDir()
	zcfg := func() Config {
		return zoneConfig(t, "zone-1", g, Config{PluginsDir: lenientDir, DataDir: zoneData, MaxMessageSize: maxMsg, MaxResourceSize: 16 << 10})
	}
	z := startNode(t, zcfg())
	bulk(t, g, "SyncPolicy", "p", n)
	eventually(t, func() bool { return len(list(z, "SyncPolicy")) == n }, "policies reach the zone")
	bulk(t, z, "SyncStatus", "s", n)
	eventually(t, func() bool { return len(list(g, "SyncStatus")) == n }, "statuses reach global")
	// Insights are recorded after the store commit: wait for the last one.
	eventually(t, func() bool { return zoneType(g, "zone-1", "SyncStatus").ResourcesReceived == n }, "global recorded the statuses")
	sent := zoneType(g, "zone-1", "SyncPolicy").ResourcesSent
	received := zoneType(g, "zone-1", "SyncStatus").ResourcesReceived
	z.stop()
	eventually(t, func() bool { c, _ := g.e.Insights().Get("zone-1"); return !c.Online }, "zone offline")

	// While the zone is away: one policy changes, one is deleted.
	p1 := find(g, resource.Key{Type: "SyncPolicy", Mesh: "default", Name: "p-00001"})
	require.NotNil(t, p1)
	upd := p1.Clone()
	upd.Spec = spec(map[string]any{"value": "changed"})
	_, err := g.b().Update(context.Background(), upd)
	require.NoError(t, err)
	gone := resource.Key{Type: "SyncPolicy", Mesh: "default", Name: "p-00002"}
	require.NoError(t, g.b().Delete(context.Background(), gone, ""))

	z = startNode(t, zcfg())
	eventually(t, func() bool { c, _ := g.e.Insights().Get("zone-1"); return c.Online && c.Sessions == 2 }, "zone back")
	eventually(t, func() bool {
		c := find(z, p1.Key())
		return c != nil && string(c.Spec) == string(upd.Spec) && find(z, gone) == nil
	}, "the change and the delete reach the resumed zone")
	eventually(t, func() bool { return zoneType(g, "zone-1", "SyncStatus").ResponsesACKed >= 2 }, "global applied the zone's resumed answer")
	assert.Len(t, list(z, "SyncPolicy"), n-1)
	assert.Len(t, list(g, "SyncStatus"), n)
	assert.Equal(t, sent+1, zoneType(g, "zone-1", "SyncPolicy").ResourcesSent, "global sent only the changed policy")
	assert.Equal(t, received, zoneType(g, "zone-1", "SyncStatus").ResourcesReceived, "the zone sent no status again")
	c, _ := g.e.Insights().Get("zone-1")
	assert.EqualValues(t, 2, c.Sessions, "one session each time: no reconnect loop")
}

// manyTypesPrefix starts the names manyTypesZone writes: long names, so
// that a type's held versions need several parts at small messages.
var manyTypesPrefix = strings.Repeat("s", 230)

// manyTypesZone starts a global and a zone "zone-1" of manyDir's plugin at
// maxMsg messages, the zone writing n resources of each of its first
// types types (their names returned); zcfg is the zone's config, to start
// it again on the same data.
func manyTypesZone(t *testing.T, types, n, maxMsg int) (g, z *node, zcfg func() Config, names []string) {
	t.Helper()
	g = startNode(t, Config{Role: RoleGlobal, PluginsDir: manyDir, MaxMessageSize: maxMsg, MaxResourceSize: 16 << 10})
	zoneData := t.TempDir()
	zcfg = func() Config {
		return zoneConfig(t, "zone-1", g, Config{PluginsDir: manyDir, DataDir: zoneData, MaxMessageSize: maxMsg, MaxResourceSize: 16 << 10})
	}
	z = startNode(t, zcfg())
	names = make([]string, types)
	for i := range names {
		names[i] = fmt.Sprintf("Many%03d", i)
		bulk(t, z, names[i], manyTypesPrefix, n)
	}
	return g, z, zcfg, names
}

// Many types resuming in parts at once, over real gRPC: a zone with 150
// zone→global types of 250 resources with long names each, at 64 KiB
// messages, restarts, and global sends the held versions of all 150 in
// parts. Their first parts alone (150 × ~48 KiB) come to seven times the
// zone's inbound budget for global's requests (16 messages of 64 KiB);
// sent at once they could end the session (ErrInboundFull) on every
// reconnect. Paced, every type
// resumes in one session each time and nothing is sent again.
func TestManyTypesResumeInPartsOverRealSessions(t *testing.T) {
	const types, n, maxMsg = 150, 250, 64 << 10
	g, z, zcfg, names := manyTypesZone(t, types, n, maxMsg)
	received := map[string]uint64{}
	for _, typ := range names {
		eventually(t, func() bool { return zoneType(g, "zone-1", typ).ResourcesReceived == n }, "global received every %s", typ)
		received[typ] = zoneType(g, "zone-1", typ).ResourcesReceived
	}
	z.stop()
	eventually(t, func() bool { c, _ := g.e.Insights().Get("zone-1"); return !c.Online }, "zone offline")

	z = startNode(t, zcfg())
	// While global resumes: one status of each type changes.
	for _, typ := range names {
		r := find(z, resource.Key{Type: typ, Mesh: "default", Name: manyTypesPrefix + "-00001"})
		require.NotNil(t, r)
		upd := r.Clone()
		upd.Spec = spec(map[string]any{"value": "changed"})
		_, err := z.b().Update(context.Background(), upd)
		require.NoError(t, err)
	}
	eventually(t, func() bool { c, _ := g.e.Insights().Get("zone-1"); return c.Online && c.Sessions == 2 }, "zone back")
	for _, typ := range names {
		eventually(t, func() bool { return zoneType(g, "zone-1", typ).ResourcesReceived == received[typ]+1 }, "global resumed %s", typ)
	}
	for _, typ := range names {
		assert.Len(t, zoneResources(t, g, typ, "zone-1"), n, typ)
	}
	c, _ := g.e.Insights().Get("zone-1")
	assert.EqualValues(t, 2, c.Sessions, "one session each time: no reconnect loop")
	assert.NotContains(t, c.LastError, "inbound queue full")
}
