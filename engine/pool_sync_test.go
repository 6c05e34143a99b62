package engine

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/api"
	"github.com/kds-engine/kds-engine/engine/internal/mux"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
)

// Many honest zones push their initial sync into a global whose shared
// inbound pool is far smaller than what they send at once: global
// restarts, 8 zones that wrote 3,000 statuses each (200-byte specs, 64 KiB
// messages: ~16 max-size responses per zone, ~15 MiB counted decoded in
// all, up to 8 × 3 responses in flight) reconnect together, and global's
// pool holds 512 KiB (four such responses). The pool fills and receive
// loops wait for room: every status of every zone arrives, in one session
// per zone, with no session ended or refused and no "inbound queue full",
// the pool never held more than its size, and kds_inbound_pool_waits_total
// shows the waits.
func TestManyZonesInitialSyncIntoASmallPoolWaitsAndEndsNothing(t *testing.T) {
	const (
		zones    = 8
		statuses = 3000
		maxMsg   = 64 << 10
		poolSize = 512 << 10
	)
	start := time.Now()
	// Without initial-sync slots, which would keep the zones sending at
	// once within the pool: this shows the pool's own waiting, which
	// bounds what global holds whatever the zones do.
	g, zs, names, glog := zonesReconnecting(t, zones, statuses, maxMsg, Config{InboundPoolSize: poolSize, InitialSyncSlots: -1}, Config{}, nil)
	pool := g.e.inboundPool
	require.EqualValues(t, poolSize, pool.Limit())
	waitForStatuses(t, g, names, statuses)
	t.Logf("%d zones × %d statuses converged in %v; pool of %d bytes: peak %d, %d waits for room, the longest %v",
		zones, statuses, time.Since(start).Round(time.Millisecond), pool.Limit(), pool.Peak(), pool.Waits(), pool.LongestWait())

	assert.Positive(t, pool.Waits(), "the pool was full: receive loops waited for room")
	// A wait means a response did not fit what was left; honest responses
	// count less than 4 times their size.
	assert.Greater(t, pool.Peak(), pool.Limit()-4*maxMsg, "the pool was filled to within one response of its size")
	assert.LessOrEqual(t, pool.Peak(), pool.Limit(), "the queues never held more than the pool")
	eventually(t, func() bool {
		return seriesValueOf(t, g, "kds_inbound_pool_waits_total", nil) == float64(pool.Waits())
	}, "kds_inbound_pool_waits_total shows the waits")
	assert.Zero(t, pool.Queued(), "everything received was taken")
	eventually(t, func() bool { return seriesValueOf(t, g, "kds_inbound_pool_bytes", nil) == 0 }, "kds_inbound_pool_bytes is back to 0")
	assertOneSessionEach(t, g, zs, names, glog)
	assert.Len(t, list(g, "SyncStatus"), zones*statuses)
}

// A global that takes in slowly (its plugins busy: every validation of a
// received response 300 ms, one at a time) with a small pool and a static
// 64 KiB HTTP/2 window, and zones whose send timeout is short: with every
// zone sending its initial sync at once, receive loops would wait for room
// in the pool for longer than the zones' send timeout (their Send held by
// HTTP/2 flow control meanwhile) and the zones' sessions would end and
// reconnect (measured without admission: waits up to 1.5 s, and zones'
// sessions ended by their send timeout). Global admits the
// zones' initial syncs a slot at a time (the pool holds one zone's
// responses in flight), so no receive loop waits long, no Send times out,
// every status arrives in one session per zone, and the metrics show the
// zones that waited for a slot.
func TestSlowGlobalAdmitsZonesInitialSyncsSoNoSendIsHeld(t *testing.T) {
	const (
		zones       = 6
		statuses    = 3000
		maxMsg      = 256 << 10
		poolSize    = 2 << 20
		sendTimeout = 2 * time.Second
	)
	var mu sync.Mutex
	busyPlugins := func(string) {
		mu.Lock()
		defer mu.Unlock()
		time.Sleep(300 * time.Millisecond)
	}
	start := time.Now()
	// Idle is counted only while every response is answered: zones whose
	// responses wait in global's slow checks are not idle.
	gcfg := Config{PluginsDir: manyDir, InitialWindowSize: 64 << 10, InboundPoolSize: poolSize, InitialSyncIdle: time.Second}
	g, zs, names, glog := zonesReconnecting(t, zones, statuses, maxMsg, gcfg, Config{PluginsDir: manyDir, SendTimeout: sendTimeout}, func(e *Engine) {
		e.testHookCheck = busyPlugins
	})
	adm := g.e.admission
	require.NotNil(t, adm)
	require.Equal(t, 1, adm.Slots(), "the pool holds one zone's responses in flight")
	waitForStatuses(t, g, names, statuses)
	pool := g.e.inboundPool
	t.Logf("%d zones × %d statuses converged in %v; %d waits for a slot; pool peak %d of %d, %d waits for room, the longest %v",
		zones, statuses, time.Since(start).Round(time.Millisecond), adm.Waits(), pool.Peak(), pool.Limit(), pool.Waits(), pool.LongestWait())

	assert.Positive(t, adm.Waits(), "zones waited for a slot")
	assert.Zero(t, adm.Expired(), "no slot was held to the limit")
	assert.Zero(t, adm.Idled(), "no zone was taken for idle while global checked its responses")
	assert.Less(t, pool.LongestWait(), sendTimeout/2, "no receive loop waited for room anywhere near the zones' send timeout")
	eventually(t, func() bool {
		return seriesValueOf(t, g, "kds_initial_sync_waits_total", nil) == float64(adm.Waits()) &&
			seriesValueOf(t, g, "kds_initial_syncs", map[string]string{"state": "running"}) == 0 &&
			seriesValueOf(t, g, "kds_initial_syncs", map[string]string{"state": "waiting"}) == 0
	}, "the metrics show the waits, and no initial sync running or waiting once all arrived")
	assertOneSessionEach(t, g, zs, names, glog)
	for _, z := range zs {
		assert.Zero(t, seriesSum(t, z, "kds_send_timeouts_total", nil), "no zone's Send timed out")
	}
}

// zonesReconnecting starts global once (it makes its key, for the zones'
// tokens, and its port), then n zones (zcfg on top of the test plugin's
// config) that each write statuses 200-byte statuses while global is down,
// and starts global again with prep run before it runs: the zones reconnect
// together and send every status. Every node logs warnings to glog.
func zonesReconnecting(t *testing.T, n, statuses, maxMsg int, gcfg, zcfg Config, prep func(*Engine)) (g *node, zs []*node, names []string, glog *logbuf.Buffer) {
	t.Helper()
	glog = &logbuf.Buffer{}
	logger := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: glog})
	gcfg.Role, gcfg.PluginsDir, gcfg.DataDir, gcfg.MaxMessageSize, gcfg.MaxResourceSize = RoleGlobal, cmp.Or(gcfg.PluginsDir, lenientDir), t.TempDir(), maxMsg, 16<<10
	g = startNode(t, gcfg)
	names = make([]string, n)
	cfgs := make([]Config, n)
	zcfg.PluginsDir, zcfg.MaxMessageSize, zcfg.MaxResourceSize = cmp.Or(zcfg.PluginsDir, lenientDir), maxMsg, 16<<10
	for i := range names {
		names[i] = fmt.Sprintf("zone-%d", i+1)
		cfgs[i] = zoneConfig(t, names[i], g, zcfg)
	}
	gcfg.KDSAddress = g.e.KDSAddr().String()
	g.stop()

	pad := strings.Repeat("s", 200)
	zs = make([]*node, n)
	for i := range zs {
		zs[i] = startNodeLogging(t, cfgs[i], logger)
		var rs []*resource.Resource
		for _, typ := range statusTypes(gcfg) {
			for j := range statuses {
				rs = append(rs, &resource.Resource{Type: typ, Mesh: "default", Name: fmt.Sprintf("%s-status-%05d", names[i], j), Spec: spec(map[string]any{"pad": pad})})
			}
		}
		require.NoError(t, zs[i].e.BulkLoad(context.Background(), rs))
	}
	g = startNodePrepared(t, gcfg, logger, prep)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(glog.String())
		}
	})
	return g, zs, names, glog
}

// statusTypes are the types zonesReconnecting writes statuses of: with the
// plugin of many types, two.
func statusTypes(cfg Config) []string {
	if cfg.PluginsDir == manyDir {
		return []string{"SyncStatus", "Many000"}
	}
	return []string{"SyncStatus"}
}

// waitForStatuses waits until global holds every zone's statuses.
func waitForStatuses(t *testing.T, g *node, names []string, statuses int) {
	t.Helper()
	for _, name := range names {
		for _, typ := range statusTypes(g.e.cfg) {
			require.Eventually(t, func() bool {
				rs, err := g.b().List(context.Background(), api.Filter{Type: typ, Zone: name})
				return err == nil && len(rs) == statuses && zoneType(g, name, typ).ResourcesReceived == uint64(statuses)
			}, 2*time.Minute, 20*time.Millisecond, "every %s of %s reaches global", typ, name)
		}
	}
}

// assertOneSessionEach checks that each zone (names[i] is zs[i]'s) had one
// session, never ended or refused on either side, and that no inbound
// queue overflowed.
func assertOneSessionEach(t *testing.T, g *node, zs []*node, names []string, glog *logbuf.Buffer) {
	t.Helper()
	for i, name := range names {
		c, ok := g.e.Insights().Get(name)
		require.True(t, ok, name)
		assert.True(t, c.Online, "%s is online", name)
		assert.EqualValues(t, 1, c.Sessions, "%s: one session, never ended", name)
		assert.Empty(t, c.LastError, name)
		assert.Equal(t, 1.0, seriesSum(t, g, "kds_sessions_started_total", map[string]string{"zone": name}), "%s: global started one session", name)
		assert.Equal(t, 1.0, seriesSum(t, zs[i], "kds_sessions_started_total", nil), "%s started one session", name)
		assert.Zero(t, seriesSum(t, zs[i], "kds_sessions_ended_total", nil), "%s ended no session", name)
	}
	assert.Zero(t, seriesSum(t, g, "kds_sessions_ended_total", nil), "global ended no session")
	assert.Zero(t, seriesSum(t, g, "kds_auth_refused_total", nil), "global refused no session")
	assert.Empty(t, glog.Lines(mux.ErrInboundFull.Error()), "no inbound queue overflowed")
}
