package engine

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/apitypes"
	"github.com/kds-engine/kds-engine/engine/internal/metrics"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// Global's insights name each zone session's peer address, the id of the
// token it authenticated with and the send buffers of both logical streams;
// Holders says which zone holds which version of a policy, and why a zone
// refused one.
func TestZoneSessionDetailsAndHolders(t *testing.T) {
	g := startGlobal(t, lenientDir)
	cfg := zoneConfig(t, "zone-1", g, Config{PluginsDir: strictDir})
	raw, err := os.ReadFile(cfg.TokenFile)
	require.NoError(t, err)
	info, err := InspectZoneToken(strings.TrimSpace(string(raw)))
	require.NoError(t, err)
	z := startNode(t, cfg)

	fine := create(t, g, syncPolicy("fine", false))
	refused := create(t, g, syncPolicy("refused", true))
	eventually(t, func() bool { return zoneType(g, "zone-1", "SyncPolicy").ResponsesNACKed == 1 }, "NACK recorded")

	var c apitypes.Conn
	eventually(t, func() bool {
		c, _ = g.e.Insights().Get("zone-1")
		return len(c.Streams) == 2
	}, "send buffers sampled")
	assert.Equal(t, info.ID, c.TokenID)
	assert.True(t, strings.HasPrefix(c.Peer, "127.0.0.1:"), c.Peer)
	capa := g.e.host.Capacity().Total
	assert.Equal(t, []string{string(metrics.StreamGlobalToZone), string(metrics.StreamZoneToGlobal)},
		[]string{c.Streams[0].Name, c.Streams[1].Name})
	assert.Equal(t, "server", c.Streams[0].Role)
	for _, s := range c.Streams {
		assert.Equal(t, capa, s.Capacity)
		assert.GreaterOrEqual(t, s.SendBufferHighWater, 1, "%s sent at least one message", s.Name)
		assert.LessOrEqual(t, s.SendBufferHighWater, s.Capacity)
	}

	version, zones, err := g.b().Holders(context.Background(), fine.Key())
	require.NoError(t, err)
	assert.Equal(t, fine.Version, version)
	require.Len(t, zones, 1)
	assert.Equal(t, apitypes.Holding{Zone: "zone-1", Online: true, Holds: true, Version: fine.Version}, zones[0])

	_, zones, err = g.b().Holders(context.Background(), refused.Key())
	require.NoError(t, err)
	require.Len(t, zones, 1)
	assert.False(t, zones[0].Holds)
	assert.Equal(t, refused.Version, zones[0].RejectedVersion)
	require.NotEmpty(t, zones[0].RejectedErrors)
	assert.Contains(t, zones[0].RejectedErrors[0], "this zone refuses rejected specs")

	_, _, err = g.b().Holders(context.Background(), resource.Key{Type: "SyncPolicy", Mesh: "default", Name: "nope"})
	require.ErrorIs(t, err, resource.ErrNotFound)

	// An offline zone is listed, and nothing is claimed about what it holds.
	z.stop()
	eventually(t, func() bool {
		_, zones, err = g.b().Holders(context.Background(), fine.Key())
		return err == nil && len(zones) == 1 && !zones[0].Online
	}, "offline zone")
	assert.Equal(t, apitypes.Holding{Zone: "zone-1"}, zones[0])
}
