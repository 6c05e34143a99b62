package e2e

import (
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// changedTimeout is web-timeouts with another connectionTimeout.
const changedTimeout = `type: MeshTimeout
mesh: default
name: web-timeouts
labels: {team: web}
spec:
  targetRef: {kind: Mesh}
  to:
    - targetRef: {kind: MeshService, name: web}
      default:
        connectionTimeout: 7s
        idleTimeout: 1h
`

// TestZoneCrashRestart: a zone killed with SIGKILL and restarted on its
// data dir converges: a policy changed on global meanwhile arrives, and its
// dataplanes stay on global (and in its own store).
func TestZoneCrashRestart(t *testing.T) {
	c, z := syncedCluster(t)

	z.p.kill9(t)
	waitFor(t, "zone-1 offline on global", func() (bool, string) {
		online, out := zoneOnline(t, c.global, "zone-1")
		return !online, out
	})
	assert.Equal(t, []string{"zone-1/default/frontend-1", "zone-1/default/web-1"}, names(list(t, c.global.api(), "Dataplane")),
		"global dropped the zone's dataplanes while it was down")
	r := mustCLI(t, "apply", "-f", writeFile(t, t.TempDir(), "changed.yaml", changedTimeout), "--api", c.global.api())
	require.Contains(t, r.stdout, "MeshTimeout default/web-timeouts updated")

	c.start(t, z, false)

	waitFor(t, "the changed MeshTimeout on the restarted zone", func() (bool, string) {
		mt, ok := find(list(t, z.api(), "MeshTimeout"), "web-timeouts", "")
		return ok && connectionTimeout(mt) == "7s", fmt.Sprintf("%v %q", ok, connectionTimeout(mt))
	})
	waitFor(t, "zone-1 online again", func() (bool, string) { return zoneOnline(t, c.global, "zone-1") })

	assert.Equal(t, []string{"default/frontend-1", "default/web-1"}, names(list(t, z.api(), "Dataplane")),
		"the zone's own store kept its dataplanes")
	assert.Equal(t, []string{"zone-1/default/frontend-1", "zone-1/default/web-1"}, names(list(t, c.global.api(), "Dataplane")),
		"global kept the zone's dataplanes")
	// Other policies are still there on the zone.
	for _, typ := range []string{"Mesh", "MeshTrafficPermission", "MeshRetry"} {
		assert.Len(t, list(t, z.api(), typ), 1, typ)
	}
}

// TestGlobalCrashRestart: global killed with SIGKILL and restarted on its
// data dir and ports loses nothing, and the zone reconnects by itself.
func TestGlobalCrashRestart(t *testing.T) {
	c, z := syncedCluster(t)
	policiesBefore := names(list(t, c.global.api(), "MeshTimeout"))

	plugins := children(c.global.p.cmd.Process.Pid)
	require.Len(t, plugins, 2, "global runs two plugin processes")
	c.global.p.kill9(t)
	// Plugins notice that the engine that started them is gone and exit,
	// so a crashed engine leaves no processes behind.
	waitFor(t, "plugins of the killed global exited", func() (bool, string) {
		for _, pid := range plugins {
			if alive(pid) {
				return false, fmt.Sprintf("plugin pid %d still running", pid)
			}
		}
		return true, ""
	})
	c.start(t, c.global, false)

	assert.Equal(t, policiesBefore, names(list(t, c.global.api(), "MeshTimeout")))
	for _, typ := range []string{"Mesh", "MeshTrafficPermission", "MeshRetry"} {
		assert.Len(t, list(t, c.global.api(), typ), 1, typ)
	}
	assert.Equal(t, []string{"zone-1/default/frontend-1", "zone-1/default/web-1"}, names(list(t, c.global.api(), "Dataplane")),
		"global lost the zone's dataplanes")

	waitFor(t, "zone-1 reconnected", func() (bool, string) { return zoneOnline(t, c.global, "zone-1") })

	r := mustCLI(t, "apply", "-f", writeFile(t, t.TempDir(), "new.yaml", `type: MeshTimeout
mesh: default
name: db-timeouts
spec:
  targetRef: {kind: Mesh}
  to:
    - targetRef: {kind: MeshService, name: db}
      default: {connectionTimeout: 2s}
`), "--api", c.global.api())
	require.Contains(t, r.stdout, "MeshTimeout default/db-timeouts created")
	waitFor(t, "the new MeshTimeout on the zone", func() (bool, string) {
		got := names(list(t, z.api(), "MeshTimeout"))
		return slices.Equal(got, []string{"default/db-timeouts", "default/web-timeouts"}), fmt.Sprint(got)
	})
	// Still both dataplanes after the zone resynced with the new global.
	assert.Equal(t, []string{"zone-1/default/frontend-1", "zone-1/default/web-1"}, names(list(t, c.global.api(), "Dataplane")))
}
