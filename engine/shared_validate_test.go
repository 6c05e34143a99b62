package engine

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/plugin"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// pluginInfo returns n's snapshot of plugin.
func pluginInfo(t *testing.T, n *node, name string) plugin.PluginInfo {
	t.Helper()
	for _, p := range n.e.host.Plugins() {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no plugin %q", name)
	return plugin.PluginInfo{}
}

// Global validates what each zone session receives with its own plugin.
// Responses of several sessions that arrive while the shared calls to that
// plugin are in flight are validated together in one call, and each session still
// gets its own resources' verdicts: the refused status is NACKed to its own
// zone, the others are stored.
func TestZoneSessionsShareGlobalsPluginCalls(t *testing.T) {
	const zones = plugin.SharedCallsInFlight + 3
	var (
		armed   atomic.Int32 // calls still to hold
		entered = make(chan struct{}, plugin.SharedCallsInFlight)
		held    = make(chan struct{})
	)
	hold := plugin.WithCallHook(func(int) {
		if armed.Add(-1) >= 0 {
			entered <- struct{}{}
			<-held
		}
	})
	log := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: os.Stderr})
	g := startNodePrepared(t, Config{Role: RoleGlobal, PluginsDir: strictDir}, log, func(e *Engine) {
		e.hostOpts = append(e.hostOpts, hold)
	})
	t.Cleanup(func() {
		select {
		case <-held:
		default:
			close(held) // a failed test must not leave the call held
		}
	})
	status := func(name string, reject bool) *resource.Resource {
		return &resource.Resource{Type: "SyncStatus", Mesh: "default", Name: name, Spec: spec(map[string]any{"reject": reject})}
	}
	var zs []*node
	for i := range zones {
		z := startZone(t, fmt.Sprint("zone-", i), g, lenientDir, "")
		create(t, z, status("warm", false))
		zs = append(zs, z)
	}
	eventually(t, func() bool { return len(list(g, "SyncStatus")) == zones }, "every zone's first status reaches global")
	const name = "synctest-strict"
	before := pluginInfo(t, g, name).Calls

	// The first zones' responses are validated first and their calls held;
	// the others arrive while they are in flight.
	const first = plugin.SharedCallsInFlight
	armed.Store(first)
	for i := range first {
		create(t, zs[i], status("s", false))
		<-entered
	}
	for i := first; i < zones; i++ {
		create(t, zs[i], status("s", i == first+1))
	}
	eventually(t, func() bool { return pluginInfo(t, g, name).Waiting == zones-first }, "the other sessions wait for the calls in flight")
	close(held)
	bad := fmt.Sprint("zone-", first+1)

	eventually(t, func() bool { return zoneType(g, bad, "SyncStatus").ResponsesNACKed == 1 }, "%s's refused status is NACKed", bad)
	eventually(t, func() bool { return len(list(g, "SyncStatus")) == 2*zones-1 }, "the other zones' statuses are stored")
	for i := range zones {
		z := fmt.Sprint("zone-", i)
		got := find(g, resource.Key{Type: "SyncStatus", Mesh: "default", Name: "s", Zone: z})
		if z == bad {
			assert.Nil(t, got, "%s's status was refused", z)
			assert.Contains(t, zoneType(g, z, "SyncStatus").LastNACKError, "spec.reject")
		} else {
			assert.NotNil(t, got, "%s's status was stored", z)
			assert.Zero(t, zoneType(g, z, "SyncStatus").ResponsesNACKed, z)
		}
	}
	require.Equal(t, int64(first+1), pluginInfo(t, g, name).Calls-before,
		"%d sessions' responses took %d plugin calls: the ones held, and one for the %d that waited", zones, first+1, zones-first)
}
