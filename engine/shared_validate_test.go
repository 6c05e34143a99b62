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
// Responses of several sessions that arrive while a call to that plugin is
// in flight are validated together in one call, and each session still
// gets its own resources' verdicts: the refused status is NACKed to its own
// zone, the others are stored.
func TestZoneSessionsShareGlobalsPluginCalls(t *testing.T) {
	const zones = 4
	var (
		armed   atomic.Bool
		entered = make(chan struct{})
		held    = make(chan struct{})
	)
	hold := plugin.WithCallHook(func(int) {
		if armed.CompareAndSwap(true, false) {
			close(entered)
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

	// Zone 0's response is validated first and its call held; the others
	// arrive while it is in flight.
	armed.Store(true)
	create(t, zs[0], status("s", false))
	<-entered
	for i := 1; i < zones; i++ {
		create(t, zs[i], status("s", i == 2))
	}
	eventually(t, func() bool { return pluginInfo(t, g, name).Waiting == zones-1 }, "the other sessions wait for the call in flight")
	close(held)

	eventually(t, func() bool { return zoneType(g, "zone-2", "SyncStatus").ResponsesNACKed == 1 }, "zone-2's refused status is NACKed")
	eventually(t, func() bool { return len(list(g, "SyncStatus")) == 2*zones-1 }, "the other zones' statuses are stored")
	for i := range zones {
		got := find(g, resource.Key{Type: "SyncStatus", Mesh: "default", Name: "s", Zone: fmt.Sprint("zone-", i)})
		if i == 2 {
			assert.Nil(t, got, "zone-2's status was refused")
		} else {
			assert.NotNil(t, got, "zone-%d's status was stored", i)
		}
	}
	st := zoneType(g, "zone-2", "SyncStatus")
	assert.Contains(t, st.LastNACKError, "spec.reject")
	for _, z := range []string{"zone-0", "zone-1", "zone-3"} {
		assert.Zero(t, zoneType(g, z, "SyncStatus").ResponsesNACKed, z)
	}
	require.Equal(t, int64(2), pluginInfo(t, g, name).Calls-before,
		"%d sessions' responses took two plugin calls: the one held, and one for the %d that waited", zones, zones-1)
}
