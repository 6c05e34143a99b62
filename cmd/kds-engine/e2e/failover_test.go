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
