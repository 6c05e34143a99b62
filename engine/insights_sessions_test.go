package engine

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Global's per-zone insight counters add up across the zone's sessions (as
// docs/api.md says): a reconnecting zone's entry keeps what earlier
// sessions counted, while resourcesHeld is the latest session's figure.
func TestZoneInsightCountersAddUpAcrossSessions(t *testing.T) {
	g := startGlobal(t, builtinDir)
	zoneData := t.TempDir()
	z := startZone(t, "zone-1", g, builtinDir, zoneData)
	create(t, g, meshResource("default"))
	const first = 5
	for i := range first {
		create(t, g, meshTimeout(fmt.Sprintf("t-%d", i), "5s"))
		eventually(t, func() bool { return len(list(z, "MeshTimeout")) == i+1 }, "policy %d synced", i)
	}
	eventually(t, func() bool {
		ts := zoneType(g, "zone-1", "MeshTimeout")
		return ts.ResponsesACKed == ts.ResponsesSent && ts.ResourcesHeld == first
	}, "every response ACKed")
	before := zoneType(g, "zone-1", "MeshTimeout")
	require.GreaterOrEqual(t, before.ResponsesSent, uint64(first), "one response per write at least")
	z.stop()

	z = startZone(t, "zone-1", g, builtinDir, zoneData)
	create(t, g, meshTimeout("after", "5s"))
	eventually(t, func() bool { return len(list(z, "MeshTimeout")) == first+1 }, "the new policy synced")
	eventually(t, func() bool {
		ts := zoneType(g, "zone-1", "MeshTimeout")
		return ts.ResponsesACKed == ts.ResponsesSent && ts.ResourcesHeld == first+1
	}, "every response ACKed")
	c, ok := g.e.Insights().Get("zone-1")
	require.True(t, ok)
	assert.Equal(t, uint64(2), c.Sessions)
	after := c.Types["MeshTimeout"]
	assert.Greater(t, after.ResponsesSent, before.ResponsesSent, "the second session's responses are added to the first's")
	assert.GreaterOrEqual(t, after.ResponsesACKed, before.ResponsesACKed+1)
	assert.Equal(t, before.ResourcesSent+1, after.ResourcesSent, "the resumed session sent only the new policy, added to the count")
	assert.Equal(t, first+1, after.ResourcesHeld, "resourcesHeld is the current figure, not a sum")
}
