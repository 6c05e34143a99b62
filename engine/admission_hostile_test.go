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
	cfg := Config{Role: RoleGlobal, PluginsDir: builtinDir, MaxMessageSize: hostileMaxMsg, MaxResourceSize: 64 << 10, InitialSyncSlots: 1}
	g := startNodeLogging(t, cfg, hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: os.Stderr}))
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

// A zone that takes global's only initial-sync slot and then sends
// nothing gives it back at the idle limit, not the 5-minute hold limit:
// the zone waiting behind it subscribes, and what it sends is stored,
// while the idle zone's session goes on.
func TestIdleZoneGivesItsInitialSyncSlotBack(t *testing.T) {
	const idle = 2 * time.Second
	cfg := Config{Role: RoleGlobal, PluginsDir: builtinDir, InitialSyncSlots: 1, InitialSyncIdle: idle}
	g := startNodeLogging(t, cfg, hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: os.Stderr}))
	eventually(t, func() bool { return g.e.admission != nil }, "global runs")
	a := g.e.admission

	const idler, next = "zone-idle", "zone-next"
	rawSession(t, dialGlobal(t, g), idler, tokenFor(t, g, idler)) // never answers
	eventually(t, func() bool { return a.Running() == 1 }, "the first zone holds the slot")
	slotSince := func(zone string) time.Time {
		for _, c := range g.e.zoneStatus(g.e.Insights().List()) {
			if c.Name == zone {
				return c.InitialSyncSlotSince
			}
		}
		return time.Time{}
	}
	assert.NotZero(t, slotSince(idler), "zone status shows which zone holds the slot")
	start := time.Now()
	s := rawSession(t, dialGlobal(t, g), next, tokenFor(t, g, next))
	eventually(t, func() bool { return a.Waiting() == 1 }, "the second zone waits for it")

	for {
		m, err := s.Recv()
		require.NoError(t, err, "waiting for global's subscription")
		if r := m.GetRequest(); r.GetTypeUrl() == kdssync.TypeURL("Dataplane") && r.GetResponseNonce() == "" {
			break
		}
	}
	assert.GreaterOrEqual(t, time.Since(start), idle/2, "subscribed once the first zone had been idle long enough")
	assert.EqualValues(t, 1, a.Idled())
	assert.Zero(t, a.Expired())
	assert.Zero(t, slotSince(idler), "no longer shown once given back")
	assert.NotZero(t, slotSince(next))
	sendResponse(t, s, kdssync.TypeURL("Dataplane"), "1", wireResource(t, dataplane("next-dp", "10.1.1.1"), "v1"))
	require.Nil(t, awaitReply(t, s, "1").GetErrorDetail(), "an ACK")
	assert.Len(t, zoneResources(t, g, "Dataplane", next), 1)
	// (The second zone's slot goes back idle too, later: it answers only
	// one of the types global subscribes to.)
	eventually(t, func() bool {
		return seriesValueOf(t, g, "kds_initial_sync_holds_expired_total", map[string]string{"limit": "idle"}) >= 1
	}, "the metric shows the slot given back idle")
	c, _ := g.e.Insights().Get(idler)
	assert.True(t, c.Online, "the idle zone's session goes on")
	assert.EqualValues(t, 1, c.Sessions)
}
