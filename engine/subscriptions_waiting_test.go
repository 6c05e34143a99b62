package engine

import (
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sendGate holds an engine's session send loop after each message it
// sends while it is shut (its send observer waits), so that the peer gets
// no answer; open lets it go.
type sendGate struct {
	once sync.Once
	ch   chan struct{}
}

func newSendGate() *sendGate { return &sendGate{ch: make(chan struct{})} }

func (g *sendGate) observe(string, int) { <-g.ch }
func (g *sendGate) open()               { g.once.Do(func() { close(g.ch) }) }

// Over real sessions: a zone with 40 zone→global types of 250 resources
// with long names restarts with 64 KiB messages, and global resumes every
// type in parts. Their first parts (~48 KiB each) come to far more than
// half of the zone's inbound budget for global's requests (16 × 64 KiB),
// so while the zone answers none of them most subscriptions wait: global
// shows kds_subscriptions_waiting{zone,stream="zone_to_global"} above 0
// and, per waiting type, waitingSince and waitingBytes in its insights.
// Once the zone answers, every subscription is sent and the gauge and the
// insights return to 0; when the session ends with subscriptions waiting,
// they are cleared too.
func TestSubscriptionsWaitingShowWhileTheyWait(t *testing.T) {
	const types, n, maxMsg = 40, 250, 64 << 10
	g, z, zcfg, names := manyTypesZone(t, types, n, maxMsg)
	for _, typ := range names {
		eventually(t, func() bool { return zoneType(g, "zone-1", typ).ResourcesReceived == n }, "global received every %s", typ)
	}
	z.stop()
	eventually(t, func() bool { c, _ := g.e.Insights().Get("zone-1"); return !c.Online }, "zone offline")

	series := map[string]string{"zone": "zone-1", "stream": "zone_to_global"}
	gauge := func() (float64, bool) { return seriesValue(t, g, "kds_subscriptions_waiting", series) }
	waitingTypes := func() (count int, bytes int64) {
		c, _ := g.e.Insights().Get("zone-1")
		for _, typ := range names {
			ts := c.Types[typ]
			if !ts.WaitingSince.IsZero() {
				count++
				bytes += ts.WaitingBytes
			}
		}
		return count, bytes
	}
	// restartHeld starts the zone with its send loop held.
	restartHeld := func() (*node, *sendGate) {
		gate := newSendGate()
		zn := startNodePrepared(t, zcfg(), hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: os.Stderr}), func(e *Engine) { e.observeSent = gate.observe })
		t.Cleanup(gate.open) // before the node's stop (cleanups run last first)
		return zn, gate
	}
	waitingShows := func(round string) {
		t.Helper()
		var v float64
		eventually(t, func() bool { v, _ = gauge(); return v > 0 }, "%s: the gauge shows waiting subscriptions", round)
		count, bytes := waitingTypes()
		t.Logf("%s: kds_subscriptions_waiting %v, %d types waiting in insights, %d bytes", round, v, count, bytes)
		assert.Positive(t, count, round)
		assert.Greater(t, bytes, int64(count)*maxMsg/2, "%s: each waiting type's parts take a good part of a message", round)
	}
	cleared := func(round string) {
		t.Helper()
		eventually(t, func() bool { v, _ := gauge(); return v == 0 }, "%s: the gauge is back to 0", round)
		eventually(t, func() bool { count, _ := waitingTypes(); return count == 0 }, "%s: no type waits in insights", round)
	}

	// Sent: the zone answers once let go, and every waiting subscription
	// goes.
	acked := map[string]uint64{}
	for _, typ := range names {
		acked[typ] = zoneType(g, "zone-1", typ).ResponsesACKed
	}
	z, gate := restartHeld()
	waitingShows("held zone")
	gate.open()
	cleared("answered")
	for _, typ := range names {
		eventually(t, func() bool { return zoneType(g, "zone-1", typ).ResponsesACKed > acked[typ] }, "global resumed %s", typ)
	}
	v, ok := gauge()
	assert.True(t, ok, "the session goes on: the series stays")
	assert.Zero(t, v)
	z.stop()
	eventually(t, func() bool { c, _ := g.e.Insights().Get("zone-1"); return !c.Online }, "zone offline")

	// The session ends while subscriptions wait: the zone goes away while
	// its send loop is still held (its stream is cancelled all the same).
	z, gate = restartHeld()
	waitingShows("held zone, ended")
	z.cancel()
	eventually(t, func() bool { c, _ := g.e.Insights().Get("zone-1"); return !c.Online }, "the session ended")
	cleared("session ended")
	_, ok = gauge()
	assert.False(t, ok, "the zone's series go with its session")
	gate.open()
	select {
	case err := <-z.done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("zone did not stop")
	}
	z.cancel = nil
}
