package engine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
)

// histogramCount returns the sample count of histogram name's series whose
// labels include labels (0 when there is none).
func histogramCount(t *testing.T, n *node, name string, labels map[string]string) uint64 {
	t.Helper()
	return findSeries(t, n, name, labels).GetHistogram().GetSampleCount()
}

// Every batch sent to a plugin for validation is timed: an apply through the
// API adds one observation per Validate call to the plugin's histogram.
func TestValidationDurationObservedPerBatch(t *testing.T) {
	g := startGlobal(t, builtinDir)
	create(t, g, meshResource("default"))
	lbl := map[string]string{"plugin": "policies"}
	beforeCount := histogramCount(t, g, "kds_validation_duration_seconds", lbl)
	beforeCalls := pluginCalls(g, "policies")

	var docs []any
	for i := range 3 {
		docs = append(docs, meshTimeout(fmt.Sprintf("t-%d", i), "5s"))
	}
	body, err := json.Marshal(map[string]any{"resources": docs})
	require.NoError(t, err)
	resp, err := http.Post("http://"+g.e.APIAddr().String()+"/api/v1/apply", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	calls := pluginCalls(g, "policies") - beforeCalls
	require.Positive(t, calls, "the apply asked the plugin")
	assert.Equal(t, uint64(calls), histogramCount(t, g, "kds_validation_duration_seconds", lbl)-beforeCount,
		"one observation per Validate call")
	assert.Zero(t, histogramCount(t, g, "kds_validation_duration_seconds", map[string]string{"plugin": "dataplanes"}),
		"no batch went to the dataplanes plugin")
}

// The byte and message counters of one logical stream agree across the
// session: once both directions have converged and nothing is in flight,
// what global received on a stream is what the zone sent on it, and the
// other way round (both count the whole session message).
func TestStreamCountersAgreeAcrossTheSession(t *testing.T) {
	g := startGlobal(t, builtinDir)
	z := startZone(t, "zone-1", g, builtinDir, "")
	create(t, g, meshResource("default"))
	for i := range 3 {
		create(t, g, meshTimeout(fmt.Sprintf("t-%d", i), "5s"))
	}
	for i := range 4 {
		create(t, z, dataplane(fmt.Sprintf("dp-%d", i), fmt.Sprintf("10.0.0.%d", i+1)))
	}
	eventually(t, func() bool { return len(list(z, "MeshTimeout")) == 3 && len(list(g, "Dataplane")) == 4 }, "both directions converge")

	type counts struct{ gSent, gRecv, zSent, zRecv, gMsgSent, gMsgRecv, zMsgSent, zMsgRecv float64 }
	read := func(stream string) counts {
		l := map[string]string{"zone": "zone-1", "stream": stream}
		return counts{
			gSent: seriesValueOf(t, g, "kds_stream_sent_bytes_total", l), gRecv: seriesValueOf(t, g, "kds_stream_received_bytes_total", l),
			zSent: seriesValueOf(t, z, "kds_stream_sent_bytes_total", l), zRecv: seriesValueOf(t, z, "kds_stream_received_bytes_total", l),
			gMsgSent: seriesValueOf(t, g, "kds_stream_messages_sent_total", l), gMsgRecv: seriesValueOf(t, g, "kds_stream_messages_received_total", l),
			zMsgSent: seriesValueOf(t, z, "kds_stream_messages_sent_total", l), zMsgRecv: seriesValueOf(t, z, "kds_stream_messages_received_total", l),
		}
	}
	// The metrics are sampled from the sessions every second: wait until
	// both sides' samples show the same traffic.
	var last map[string]counts
	agree := func() bool {
		last = map[string]counts{}
		for _, s := range []string{"global_to_zone", "zone_to_global"} {
			c := read(s)
			last[s] = c
			if c.gSent == 0 || c.zSent == 0 || c.gSent != c.zRecv || c.zSent != c.gRecv ||
				c.gMsgSent != c.zMsgRecv || c.zMsgSent != c.gMsgRecv {
				return false
			}
		}
		return true
	}
	eventually(t, agree, "sent and received counters agree across the session")
	t.Logf("counters: %+v", last)

	// Each side samples how many of its subscriptions wait for room in
	// the peer's inbound budget, on the stream it subscribes on: none here.
	for _, c := range []struct {
		n      *node
		stream string
	}{{z, "global_to_zone"}, {g, "zone_to_global"}} {
		v, ok := seriesValue(t, c.n, "kds_subscriptions_waiting", map[string]string{"zone": "zone-1", "stream": c.stream})
		assert.True(t, ok, "kds_subscriptions_waiting on %s", c.stream)
		assert.Zero(t, v, c.stream)
	}
}

// subscriptionsWaiting counts the types of a connection whose subscription
// waits (insights), for kds_subscriptions_waiting.
func TestSubscriptionsWaitingCountsWaitingTypes(t *testing.T) {
	e := &Engine{ins: insights.NewRegistry()}
	e.ins.UpdateType("global", "A", func(ts *insights.TypeState) { ts.WaitingSince, ts.WaitingBytes = time.Now(), 5<<20 })
	e.ins.UpdateType("global", "B", func(ts *insights.TypeState) { ts.ResourcesHeld = 3 })
	e.ins.UpdateType("global", "C", func(ts *insights.TypeState) {
		ts.WaitingSince, ts.WaitingBytes, ts.WaitingFor = time.Now(), 6<<20, insights.WaitingForPeerBudget
	})
	// An initial-sync slot is not room in the peer's budget.
	e.ins.UpdateType("global", "D", func(ts *insights.TypeState) {
		ts.WaitingSince, ts.WaitingFor = time.Now(), insights.WaitingForSlot
	})
	assert.Equal(t, 2, e.subscriptionsWaiting("global"))
	assert.Zero(t, e.subscriptionsWaiting("zone-9"))
}
