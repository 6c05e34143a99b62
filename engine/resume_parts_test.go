package engine

import (
	"context"
	"fmt"
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
