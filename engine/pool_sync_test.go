package engine

import (
	"context"
	"fmt"
	"strings"
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
	glog := &logbuf.Buffer{}
	logger := func(out *logbuf.Buffer) hclog.Logger {
		return hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: out})
	}
	gcfg := Config{Role: RoleGlobal, PluginsDir: lenientDir, DataDir: t.TempDir(), MaxMessageSize: maxMsg, MaxResourceSize: 16 << 10}

	// A first run of global makes its key (for the zones' tokens) and its
	// port; the zones write while it is down, and reconnect when it is back.
	g := startNode(t, gcfg)
	names := make([]string, zones)
	cfgs := make([]Config, zones)
	for i := range names {
		names[i] = fmt.Sprintf("zone-%d", i+1)
		cfgs[i] = zoneConfig(t, names[i], g, Config{PluginsDir: lenientDir, MaxMessageSize: maxMsg, MaxResourceSize: 16 << 10})
	}
	gcfg.KDSAddress = g.e.KDSAddr().String()
	g.stop()

	pad := strings.Repeat("s", 200)
	zs := make([]*node, zones)
	for i := range zs {
		zs[i] = startNodeLogging(t, cfgs[i], logger(glog))
		rs := make([]*resource.Resource, statuses)
		for j := range rs {
			rs[j] = &resource.Resource{Type: "SyncStatus", Mesh: "default", Name: fmt.Sprintf("%s-status-%05d", names[i], j), Spec: spec(map[string]any{"pad": pad})}
		}
		require.NoError(t, zs[i].e.BulkLoad(context.Background(), rs))
	}

	start := time.Now()
	g = startNodePrepared(t, gcfg, logger(glog), func(e *Engine) { e.inboundPoolBytes = poolSize })
	pool := g.e.inboundPool
	require.EqualValues(t, poolSize, pool.Limit())
	for _, name := range names {
		require.Eventually(t, func() bool {
			rs, err := g.b().List(context.Background(), api.Filter{Type: "SyncStatus", Zone: name})
			return err == nil && len(rs) == statuses && zoneType(g, name, "SyncStatus").ResourcesReceived == statuses
		}, 2*time.Minute, 20*time.Millisecond, "every status of %s reaches global", name)
	}
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
	assert.Len(t, list(g, "SyncStatus"), zones*statuses)
	if t.Failed() {
		t.Log(glog.String())
	}
}
