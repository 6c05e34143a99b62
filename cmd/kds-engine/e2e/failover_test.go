package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine"
)

// TestZoneWithDeadAndLiveGlobalSyncs: a zone given `--global DEAD,LIVE`
// connects to the live address, syncs, and `inspect sync` names the
// address it is on.
func TestZoneWithDeadAndLiveGlobalSyncs(t *testing.T) {
	c := newCluster(t)
	tok, err := engine.GenerateZoneToken(c.global.dataDir, "", "", "zone-1", time.Hour)
	require.NoError(t, err)
	z := &node{name: "zone-1", dataDir: filepath.Join(c.dir, "zone-1")}
	require.NoError(t, os.MkdirAll(z.dataDir, 0o700))
	dead, live := addr(freePort(t)), addr(c.global.kdsPort)
	z.args = []string{"zone", "--name", "zone-1", "--global", dead + "," + live,
		"--data-dir", z.dataDir, "--plugins-dir", pluginsDir,
		"--ca-file", c.pki.ca, "--token-file", writeFile(t, c.dir, "zone-1.token", tok),
		"--reconnect-backoff-base", "100ms", "--reconnect-backoff-max", "1s"}
	c.start(t, z, true) // ready: connected to global

	r := mustCLI(t, "inspect", "sync", "-o", "json", "--api", z.api())
	var conn struct {
		Online    bool   `json:"online"`
		Address   string `json:"address"`
		LastError string `json:"lastError"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &conn), r.stdout)
	assert.True(t, conn.Online)
	assert.Equal(t, live, conn.Address, "inspect sync names the live address")
	assert.Contains(t, conn.LastError, "global at "+dead, "the dead address's failure is shown")
	table := mustCLI(t, "inspect", "sync", "--api", z.api())
	assert.Contains(t, table.stdout, live)

	mustCLI(t, "apply", "-f", examplesFile(t, "global.yaml"), "--api", c.global.api())
	waitFor(t, "MeshTimeout web-timeouts on zone-1", func() (bool, string) {
		rs := list(t, z.api(), "MeshTimeout")
		mt, ok := find(rs, "web-timeouts", "")
		return ok && connectionTimeout(mt) == "5s", fmt.Sprint(rs)
	})
}

// copyTree copies the regular files and directories under from to to,
// files with mode 0600 (global's signing key must not be readable by
// others) and directories with 0700.
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	require.NoError(t, filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o600)
	}))
}

// syncState is the part of `inspect sync -o json` / a zone entry of
// `inspect zones -o json` these tests read.
type syncState struct {
	Name      string `json:"name"`
	Online    bool   `json:"online"`
	Sessions  uint64 `json:"sessions"`
	Address   string `json:"address"`
	Replica   string `json:"replica"`
	LastError string `json:"lastError"`
	Types     map[string]struct {
		ResponsesAcked    uint64 `json:"responsesAcked"`
		ResourcesSent     uint64 `json:"resourcesSent"`
		ResourcesReceived uint64 `json:"resourcesReceived"`
	} `json:"types"`
}

func zoneSync(t *testing.T, z *node) syncState {
	t.Helper()
	return cliJSON[syncState](t, "inspect", "sync", "-o", "json", "--api", z.api())
}

func zoneOnGlobal(t *testing.T, g *node, zone string) syncState {
	t.Helper()
	out := cliJSON[struct {
		Zones []syncState `json:"zones"`
	}](t, "inspect", "zones", "-o", "json", "--api", g.api())
	for _, s := range out.Zones {
		if s.Name == zone {
			return s
		}
	}
	return syncState{}
}

// TestZoneFailsOverWhenGlobalReplicaIsKilled: two global processes with the
// same content (replica 2 starts from a copy of replica 1's data dir); a
// zone given both is on replica 1; replica 1 is killed with SIGKILL; the
// zone resumes on replica 2, which resends it nothing and receives nothing
// again.
func TestZoneFailsOverWhenGlobalReplicaIsKilled(t *testing.T) {
	c := newCluster(t)
	g1 := c.global
	mustCLI(t, "apply", "-f", examplesFile(t, "global.yaml"), "--api", g1.api())
	g2 := &node{name: "global", dataDir: filepath.Join(c.dir, "global-2"), kdsPort: freePort(t)}

	tok, err := engine.GenerateZoneToken(g1.dataDir, "", "", "zone-1", time.Hour)
	require.NoError(t, err)
	z := &node{name: "zone-1", dataDir: filepath.Join(c.dir, "zone-1")}
	require.NoError(t, os.MkdirAll(z.dataDir, 0o700))
	z.args = []string{"zone", "--name", "zone-1", "--global", addr(g1.kdsPort) + "," + addr(g2.kdsPort),
		"--data-dir", z.dataDir, "--plugins-dir", pluginsDir,
		"--ca-file", c.pki.ca, "--token-file", writeFile(t, c.dir, "zone-1.token", tok),
		"--reconnect-backoff-base", "100ms", "--reconnect-backoff-max", "1s"}
	c.start(t, z, true)
	mustCLI(t, "apply", "-f", examplesFile(t, "zone-1.yaml"), "--api", z.api())
	waitFor(t, "zone-1's 2 Dataplanes on replica 1", func() (bool, string) {
		got := names(list(t, g1.api(), "Dataplane"))
		return len(got) == 2, fmt.Sprint(got)
	})

	// Replica 2: a copy of replica 1's data dir (store, signing key,
	// cluster id), taken while replica 1 is stopped.
	require.NoError(t, g1.p.cmd.Process.Signal(os.Interrupt))
	require.Equal(t, 0, g1.p.wait(t, 30*time.Second))
	copyTree(t, g1.dataDir, g2.dataDir)
	c.start(t, g1, false)
	g2.args = []string{"global", "--data-dir", g2.dataDir, "--plugins-dir", pluginsDir,
		"--tls-cert-file", c.pki.cert, "--tls-key-file", c.pki.key}
	g2.apiPort = freePort(t)
	c.start(t, g2, false)

	var before syncState
	waitFor(t, "zone-1 back on replica 1", func() (bool, string) {
		before = zoneSync(t, z)
		return before.Online && before.Address == addr(g1.kdsPort) && before.Types["MeshTimeout"].ResponsesAcked >= 2, fmt.Sprintf("%+v", before)
	})

	g1.p.kill9(t)
	var after syncState
	waitFor(t, "zone-1 on replica 2", func() (bool, string) {
		after = zoneSync(t, z)
		onG2 := zoneOnGlobal(t, g2, "zone-1")
		return after.Online && after.Address == addr(g2.kdsPort) &&
			onG2.Types["MeshTimeout"].ResponsesAcked >= 1 && onG2.Types["Dataplane"].ResponsesAcked >= 1, fmt.Sprintf("%+v", after)
	})
	assert.Contains(t, after.LastError, "global at "+addr(g1.kdsPort), "the zone names the replica it lost")
	assert.Equal(t, before.Types["MeshTimeout"].ResourcesReceived, after.Types["MeshTimeout"].ResourcesReceived,
		"the zone received no MeshTimeout again")
	onG2 := zoneOnGlobal(t, g2, "zone-1")
	assert.Zero(t, onG2.Types["MeshTimeout"].ResourcesSent, "replica 2 resent no policy")
	assert.Zero(t, onG2.Types["Dataplane"].ResourcesReceived, "the zone resent no dataplane")

	mustCLI(t, "apply", "-f", writeFile(t, c.dir, "after.yaml",
		"type: MeshTimeout\nmesh: default\nname: after-failover\nspec:\n  targetRef: {kind: Mesh}\n  to:\n    - targetRef: {kind: Mesh}\n      default: {connectionTimeout: 7s}\n"),
		"--api", g2.api())
	waitFor(t, "a write on replica 2 reaches zone-1", func() (bool, string) {
		rs := list(t, z.api(), "MeshTimeout")
		_, ok := find(rs, "after-failover", "")
		return ok, fmt.Sprint(names(rs))
	})
}
