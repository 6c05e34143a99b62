package engine

import (
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// Faults of a store: lost, started over, restored from an older copy. The
// sync resumes by comparing versions and takes an equal version for equal
// content, so each test makes the store that started over write a resource
// again while its peer still holds an old version of it, and checks that
// the peer ends up with the writer's content.

// restartGlobal stops g and starts a global with the same configuration,
// data dir and KDS address, so that zones reconnect to it. before runs
// while global is stopped.
func restartGlobal(t *testing.T, g *node, before func()) *node {
	t.Helper()
	cfg := g.e.cfg
	cfg.KDSAddress = g.e.KDSAddr().String()
	g.stop()
	if before != nil {
		before()
	}
	return startNode(t, cfg)
}

// holds reports whether n stores k with a spec containing want.
func holds(n *node, k resource.Key, want string) bool {
	r := find(n, k)
	return r != nil && strings.Contains(string(r.Spec), want)
}

func dpKey(zone, name string) resource.Key {
	return resource.Key{Type: "Dataplane", Mesh: "default", Zone: zone, Name: name}
}

// zoneLosesItsStore runs the common part of the zone tests: a zone syncs
// dp-1 and receives a policy, then, while global is down, it comes back
// from restart (with whatever its store kept) and writes dp-1 with other
// content before it can reach global. Global must end up with the new
// content, and the zone with global's policy.
//
// The types come from the synctest plugin, which registers no Mesh type: with
// the built-in plugins a zone that lost its store cannot write a Dataplane
// before it has received its Mesh from global (the admin API refuses a
// mesh-scoped write into a mesh it does not hold), so that ordering cannot
// happen with them.
func zoneLosesItsStore(t *testing.T, zcfg func(g *node) Config, restart func()) {
	g := startGlobal(t, lenientDir)
	policy := create(t, g, &resource.Resource{Type: "SyncPolicy", Mesh: "default", Name: "p1", Spec: spec(map[string]any{"value": "5s"})})
	status := func(value string) *resource.Resource {
		return &resource.Resource{Type: "SyncStatus", Mesh: "default", Name: "dp-1", Spec: spec(map[string]any{"value": value})}
	}
	statusKey := resource.Key{Type: "SyncStatus", Mesh: "default", Zone: "zone-1", Name: "dp-1"}
	cfg := zcfg(g)
	z := startNode(t, cfg)
	create(t, z, status("10.0.0.1"))
	eventually(t, func() bool { return holds(g, statusKey, "10.0.0.1") }, "dp-1 reaches global")
	eventually(t, func() bool { return holds(z, policy.Key(), "5s") }, "the policy reaches the zone")

	z.stop()
	g = restartGlobal(t, g, func() {
		restart()
		// The zone comes back while global is down and writes dp-1 anew.
		z = startNode(t, cfg)
		create(t, z, status("10.0.0.2"))
	})
	eventually(t, func() bool { return holds(g, statusKey, "10.0.0.2") },
		"global holds the zone's new content of dp-1, not the content of the version the zone wrote before it lost its store")
	eventually(t, func() bool { return holds(z, policy.Key(), "5s") }, "the policy reaches the zone again")
}

// TestFaultZoneDataDirLost: a zone on the bolt store loses its data dir and
// starts with an empty one.
func TestFaultZoneDataDirLost(t *testing.T) {
	dataDir := t.TempDir()
	zoneLosesItsStore(t,
		func(g *node) Config {
			return zoneConfig(t, "zone-1", g, Config{PluginsDir: lenientDir, DataDir: dataDir})
		},
		func() {
			require.NoError(t, os.RemoveAll(dataDir))
		})
}

// TestFaultZoneMemoryStoreRestarted: a zone on the memory store restarts.
func TestFaultZoneMemoryStoreRestarted(t *testing.T) {
	zoneLosesItsStore(t,
		func(g *node) Config {
			return zoneConfig(t, "zone-1", g, Config{PluginsDir: lenientDir, Store: StoreMemory})
		},
		func() {})
}

// copyDir copies the regular files under from into to (created).
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, path)
		if err != nil {
			return err
		}
		target := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(target, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	require.NoError(t, err)
}

// TestFaultGlobalRestoredFromOlderCopy: global's data dir is put back from
// a copy taken before a policy was added and another changed. The restored
// content is the true content: the zones drop the added policy and take
// the changed one back to its content in the copy; the zones send global
// the dataplanes the copy lacks; and policy writes on the restored global,
// whose version counter starts again from the copy's, reach the zones,
// including a zone that was offline and still holds the versions written
// after the copy was taken.
func TestFaultGlobalRestoredFromOlderCopy(t *testing.T) {
	g := startGlobal(t, builtinDir)
	dataDir := g.e.cfg.DataDir
	online := startZone(t, "zone-a", g, builtinDir, "")
	offlineCfg := zoneConfig(t, "zone-b", g, Config{PluginsDir: builtinDir, DataDir: t.TempDir()})
	offline := startNode(t, offlineCfg)
	zones := []*node{online, offline}

	create(t, g, &resource.Resource{Type: "Mesh", Name: "default", Spec: spec(map[string]any{})})
	p1 := create(t, g, meshTimeout("p1", "5s"))
	create(t, online, dataplane("dp-a1", "10.0.1.1"))
	create(t, offline, dataplane("dp-b1", "10.0.2.1"))
	for _, z := range zones {
		eventually(t, func() bool { return holds(z, p1.Key(), "5s") }, "p1 reaches %s", z.e.cfg.ZoneName)
	}
	eventually(t, func() bool {
		return find(g, dpKey("zone-a", "dp-a1")) != nil && find(g, dpKey("zone-b", "dp-b1")) != nil
	}, "dataplanes reach global")

	backup := t.TempDir()
	g = restartGlobal(t, g, func() { copyDir(t, dataDir, backup) })

	// After the copy: two policy writes (p2, and p1 changed) and a
	// dataplane per zone.
	p2 := create(t, g, meshTimeout("p2", "6s"))
	upd := meshTimeout("p1", "7s")
	_, err := g.b().Update(context.Background(), upd)
	require.NoError(t, err)
	create(t, online, dataplane("dp-a2", "10.0.1.2"))
	create(t, offline, dataplane("dp-b2", "10.0.2.2"))
	for _, z := range zones {
		eventually(t, func() bool { return holds(z, p1.Key(), "7s") && find(z, p2.Key()) != nil }, "the writes reach %s", z.e.cfg.ZoneName)
	}
	eventually(t, func() bool {
		return find(g, dpKey("zone-a", "dp-a2")) != nil && find(g, dpKey("zone-b", "dp-b2")) != nil
	}, "dataplanes reach global")

	offline.stop()
	g = restartGlobal(t, g, func() {
		require.NoError(t, os.RemoveAll(dataDir))
		copyDir(t, backup, dataDir)
	})
	require.True(t, holds(g, p1.Key(), "5s"), "global holds p1 as in the copy")
	require.Nil(t, find(g, p2.Key()), "global does not hold p2")

	// The zone that stayed online converges to the restored content, and
	// sends global the dataplane the copy lacks.
	eventually(t, func() bool { return holds(online, p1.Key(), "5s") && find(online, p2.Key()) == nil },
		"zone-a holds p1 as in the copy, and no p2")
	eventually(t, func() bool {
		return find(g, dpKey("zone-a", "dp-a1")) != nil && find(g, dpKey("zone-a", "dp-a2")) != nil
	},
		"global holds every dataplane of zone-a")

	// Two writes of p1 on the restored global, as many as global made
	// after the copy: a version counter restored with the file would now
	// hand out again the version of p1 that zone-b holds (with "7s").
	for _, timeout := range []string{"9s", "11s"} {
		_, err := g.b().Update(context.Background(), meshTimeout("p1", timeout))
		require.NoError(t, err)
	}
	eventually(t, func() bool { return holds(online, p1.Key(), "11s") }, "the new write reaches zone-a")

	offline = startNode(t, offlineCfg)
	eventually(t, func() bool { return holds(offline, p1.Key(), "11s") && find(offline, p2.Key()) == nil },
		"zone-b, offline during the restore, holds the restored global's p1 and no p2")
	eventually(t, func() bool {
		return find(g, dpKey("zone-b", "dp-b1")) != nil && find(g, dpKey("zone-b", "dp-b2")) != nil
	},
		"global holds every dataplane of zone-b")
}
