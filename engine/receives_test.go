package engine

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestZoneSaysWhichTypesGlobalDoesNotReceive: a zone whose plugins supply a
// zone→global type global has no plugin for shows it in its sync state
// (and logs it): what it writes of that type never reaches global, and
// nothing else would say so.
func TestZoneSaysWhichTypesGlobalDoesNotReceive(t *testing.T) {
	g := startGlobal(t, lenientDir) // receives SyncStatus only
	z := startZone(t, "zone-1", g, manyDir, "")
	eventually(t, func() bool { return z.b().Ready() == nil }, "zone connected")
	eventually(t, func() bool {
		c, _ := z.e.Insights().Get(GlobalPeer)
		return c.Types["Many000"].Error != ""
	}, "the zone records that global does not receive Many000")
	c, _ := z.e.Insights().Get(GlobalPeer)
	for i := range 3 {
		typ := fmt.Sprintf("Many%03d", i)
		assert.True(t, c.Types[typ].Unknown, typ)
		assert.Contains(t, c.Types[typ].Error, "global has no plugin for "+typ)
	}
	assert.Empty(t, c.Types["SyncStatus"].Error, "global receives SyncStatus")
	assert.False(t, c.Types["SyncStatus"].Unknown)
}
