package engine

import (
	"os"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
)

// A zone that waits for an initial-sync slot cannot park responses in
// global's shared inbound pool: global reads what it sends meanwhile and
// refuses it at once, instead of leaving it queued (holding the pool)
// until the zone's turn. Here a hostile zone holds the only slot by never
// answering global's subscriptions, and a second one sends a response
// nobody asked for while it waits.
func TestZoneWaitingForAnInitialSyncSlotCannotParkResponses(t *testing.T) {
	cfg := Config{Role: RoleGlobal, PluginsDir: builtinDir, MaxMessageSize: hostileMaxMsg, MaxResourceSize: 64 << 10}
	g := startNodePrepared(t, cfg, hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: os.Stderr}),
		func(e *Engine) { e.initialSyncSlots = 1 })
	eventually(t, func() bool { return g.e.admission != nil }, "global runs")
	a := g.e.admission

	const hog, parker = "zone-hog", "zone-parker"
	rawSession(t, dialGlobal(t, g), hog, tokenFor(t, g, hog)) // never answers
	eventually(t, func() bool { return a.Running() == 1 }, "the first zone holds the slot")
	s := rawSession(t, dialGlobal(t, g), parker, tokenFor(t, g, parker))
	eventually(t, func() bool { return a.Waiting() == 1 }, "the second zone waits for it")

	start := time.Now()
	sendResponse(t, s, kdssync.TypeURL("Dataplane"), "1", wireResource(t, dataplane("parked", "10.9.9.9"), "p-1"))
	nack := awaitReply(t, s, "1")
	require.NotNil(t, nack.GetErrorDetail(), "refused: nothing is subscribed yet")
	assert.Contains(t, nack.GetErrorDetail().GetMessage(), "not subscribed to yet")
	assert.Less(t, time.Since(start), 10*time.Second, "answered while the zone still waits")
	assert.Equal(t, 1, a.Waiting(), "it still waits")
	eventually(t, func() bool { return g.e.inboundPool.Queued() == 0 }, "nothing of it is left in the pool")
	assert.Empty(t, zoneResources(t, g, "Dataplane", parker))

	// The first zone reconnecting does not keep its slot: its newer session
	// replaces the one holding it, the slot goes to the zone that waited,
	// and the newer session waits behind it.
	require.NotZero(t, zoneType(g, parker, "Dataplane").WaitingSince)
	rawSession(t, dialGlobal(t, g), hog, tokenFor(t, g, hog))
	eventually(t, func() bool {
		ts := zoneType(g, parker, "Dataplane")
		return ts.WaitingSince.IsZero() && ts.WaitingFor == ""
	}, "the second zone subscribes")
	eventually(t, func() bool { return a.Running() == 1 && a.Waiting() == 1 }, "the first zone's newer session waits")
	assert.Equal(t, insights.WaitingForSlot, zoneType(g, hog, "Dataplane").WaitingFor)
}
