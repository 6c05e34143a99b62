package engine

import (
	"fmt"
	"os"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/kds-engine/kds-engine/engine/apitypes"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
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

// zoneEntry is global's entry for zone as GET /api/v1/zones shows it.
func zoneEntry(g *node, zone string) apitypes.Conn {
	for _, c := range g.e.Zones() {
		if c.Name == zone {
			return c
		}
	}
	return apitypes.Conn{}
}

// TestGlobalSaysWhichTypesZoneDoesNotReceive: a zone without the plugin of
// a global→zone type global serves never subscribes to it, so global's
// resources of that type never reach the zone. The zone announces the
// types it receives; global shows each type it serves that the zone does
// not receive in that zone's sync state (and logs it once per session),
// and drops the mark once the zone has the plugin.
func TestGlobalSaysWhichTypesZoneDoesNotReceive(t *testing.T) {
	buf := &logbuf.Buffer{}
	g := startNodeLogging(t, Config{Role: RoleGlobal, PluginsDir: lenientDir}, // serves SyncPolicy, OldOnly
		hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: buf}))
	z := startZone(t, "zone-1", g, strictDir, "") // receives SyncPolicy, FutureType
	eventually(t, func() bool { return z.b().Ready() == nil }, "zone connected")
	eventually(t, func() bool { return zoneEntry(g, "zone-1").Types["OldOnly"].Error != "" },
		"global records that zone-1 does not receive OldOnly")
	c := zoneEntry(g, "zone-1")
	assert.True(t, c.Types["OldOnly"].Unknown)
	assert.Contains(t, c.Types["OldOnly"].Error, "zone zone-1 has no plugin for OldOnly")
	assert.Contains(t, c.Types["OldOnly"].Error, "install the plugin on the zone")
	assert.Empty(t, c.Types["SyncPolicy"].Error, "zone-1 receives SyncPolicy")
	assert.False(t, c.Types["SyncPolicy"].Unknown)
	// FutureType, which global does not serve, is the zone asking for a
	// type global does not know (recorded as before), not one it lacks.
	assert.NotContains(t, c.Types["FutureType"].Error, "has no plugin for")
	warned := buf.Lines("zone has no plugin for types global serves", "zone=zone-1", "OldOnly")
	assert.Len(t, warned, 1, "one warning for the session:\n%s", buf.String())
	for _, l := range warned {
		assert.NotContains(t, l, "SyncPolicy")
		assert.NotContains(t, l, "FutureType")
	}

	// The zone gets the plugin: the next session clears the mark.
	z.stop()
	z = startZone(t, "zone-1", g, lenientDir, "")
	eventually(t, func() bool { return z.b().Ready() == nil }, "zone connected again")
	eventually(t, func() bool {
		c := zoneEntry(g, "zone-1")
		return c.Sessions >= 2 && c.Online && c.Types["OldOnly"].Error == "" && !c.Types["OldOnly"].Unknown
	}, "the mark goes once zone-1 receives OldOnly")
}

// TestGlobalRefusesMalformedReceives: global refuses, with InvalidArgument
// naming the key, a zone whose kds-receives is not one list of distinct
// type names; a zone that does not send the key (an older build) marks
// nothing, and only the types global serves are ever recorded.
func TestGlobalRefusesMalformedReceives(t *testing.T) {
	g := startNodeLogging(t, Config{Role: RoleGlobal, PluginsDir: lenientDir},
		hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Error, Output: os.Stderr}))
	for _, tc := range []struct {
		name string
		md   metadata.MD
		want string
	}{
		{"duplicate", metadata.Pairs("kds-receives", "SyncPolicy,SyncPolicy"), "SyncPolicy is listed twice"},
		{"not a type name", metadata.Pairs("kds-receives", "SyncPolicy,sync-policy"), "sync-policy"},
		{"empty name", metadata.Pairs("kds-receives", "SyncPolicy,,OldOnly"), "not a type name"},
		{"trailing comma", metadata.Pairs("kds-receives", "SyncPolicy,"), "not a type name"},
		{"twice", metadata.Pairs("kds-receives", "SyncPolicy", "kds-receives", "OldOnly"), "kds-receives was sent 2 times"},
	} {
		st := recvUntilErr(t, rawAnnouncing(t, g, "zone-odd", tc.md))
		assert.Equal(t, codes.InvalidArgument, st.Code(), "%s: %s", tc.name, st.Message())
		assert.Contains(t, st.Message(), "kds-receives", tc.name)
		assert.Contains(t, st.Message(), tc.want, tc.name)
	}
	_, seen := g.e.Insights().Get("zone-odd")
	assert.False(t, seen, "no refused session started")

	// No key: nothing known, nothing marked.
	rawAnnouncing(t, g, "zone-old", nil)
	eventually(t, func() bool { return zoneEntry(g, "zone-old").Online }, "zone-old's session started")

	// Types global does not serve are ignored; an empty list receives nothing.
	rawAnnouncing(t, g, "zone-new", metadata.Pairs("kds-receives", "SyncPolicy,FutureType,Unheard"))
	rawAnnouncing(t, g, "zone-none", metadata.Pairs("kds-receives", ""))
	eventually(t, func() bool {
		return zoneEntry(g, "zone-new").Types["OldOnly"].Error != "" && zoneEntry(g, "zone-none").Types["SyncPolicy"].Error != ""
	}, "global records what zone-new and zone-none do not receive")
	c := zoneEntry(g, "zone-new")
	require.Contains(t, c.Types, "OldOnly")
	for _, typ := range []string{"SyncPolicy", "FutureType", "Unheard"} {
		assert.Empty(t, c.Types[typ].Error, typ)
	}
	assert.NotContains(t, c.Types, "FutureType")
	assert.NotContains(t, c.Types, "Unheard")
	assert.NotEmpty(t, zoneEntry(g, "zone-none").Types["OldOnly"].Error)
	for typ, ts := range zoneEntry(g, "zone-old").Types {
		assert.Empty(t, ts.Error, "zone-old announced nothing: %s", typ)
	}
}
