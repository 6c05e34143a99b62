package engine

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path+".tmp", []byte(content), 0o600))
	require.NoError(t, os.Rename(path+".tmp", path))
}

// Listing a zone's token id in the revocation file, without a restart,
// ends the zone's running session and refuses its new ones; other zones
// keep syncing; a new token lets the zone back in.
func TestRevokedTokenEndsItsSessions(t *testing.T) {
	revoked := filepath.Join(t.TempDir(), "revoked.txt")
	writeFile(t, revoked, "# nothing revoked yet\n")
	var out logbuf.Buffer
	g := startNodeLogging(t, Config{Role: RoleGlobal, PluginsDir: builtinDir, TokenRevocationFile: revoked},
		hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Info, Output: &out}))
	acfg := zoneConfig(t, "zone-a", g, Config{PluginsDir: builtinDir})
	zoneA := startNode(t, acfg)
	zoneB := startNode(t, zoneConfig(t, "zone-b", g, Config{PluginsDir: builtinDir}))
	create(t, g, &resource.Resource{Type: "Mesh", Name: "default", Spec: spec(map[string]any{})})
	create(t, g, meshTimeout("before", "1s"))
	for _, z := range []*node{zoneA, zoneB} {
		eventually(t, func() bool { return find(z, meshTimeout("before", "").Key()) != nil }, "zones sync before the revocation")
	}
	raw, err := os.ReadFile(acfg.TokenFile)
	require.NoError(t, err)
	tokA := strings.TrimSpace(string(raw))
	info, err := InspectZoneToken(tokA)
	require.NoError(t, err)
	idA := info.ID

	writeFile(t, revoked, "# leaked\n"+idA+"\n")
	eventually(t, func() bool { return zoneA.b().Ready() != nil }, "zone-a's running session is ended")
	assert.Equal(t, 1.0, metricSum(t, g, "kds_sessions_ended_total", "zone-a"), "ended once")
	assert.Equal(t, 1.0, endedFor(t, g, "zone-a", "auth"), "for reason auth")
	ended := out.Lines("[WARN]", "ending the session of a revoked zone token", "zone=zone-a", "token_id="+idA)
	assert.Len(t, ended, 1, out.String())

	// zone-a keeps retrying with its revoked token, so its own attempts
	// may be refused too: the raw session's refusal adds at least one.
	refusedBefore := refusedFor(t, g, "revoked")
	linesBefore := len(out.Lines("[WARN]", "refused zone session", "reason=revoked", idA))
	st := recvUntilErr(t, rawSession(t, dialGlobal(t, g), "zone-a", tokA))
	requireGenericRefusal(t, st)
	assert.GreaterOrEqual(t, refusedFor(t, g, "revoked"), refusedBefore+1)
	assert.Greater(t, len(out.Lines("[WARN]", "refused zone session", "reason=revoked", idA)), linesBefore, "global's log names the token: %s", out.String())

	create(t, g, meshTimeout("after", "2s"))
	eventually(t, func() bool { return find(zoneB, meshTimeout("after", "").Key()) != nil }, "zone-b keeps syncing")
	assert.Nil(t, find(zoneA, meshTimeout("after", "").Key()), "zone-a gets nothing more")
	assert.Equal(t, 1.0, metricSum(t, g, "kds_sessions_started_total", "zone-b"), "zone-b's session is untouched")

	// Global refuses zone-a's next attempts without saying why; zone-a
	// remembers that global ended its session for this very token.
	eventually(t, func() bool {
		err := zoneA.b().Ready()
		return err != nil && strings.Contains(err.Error(), "session refused") &&
			strings.Contains(err.Error(), "because its token (id "+idA) && strings.Contains(err.Error(), "is revoked")
	}, "zone-a's refused attempts say its token was revoked")

	// A new token for zone-a: its next attempt gets in and catches up.
	writeFile(t, acfg.TokenFile, strings.TrimSpace(string(mustRead(t, zoneToken(t, g, "zone-a")))))
	eventually(t, func() bool { return find(zoneA, meshTimeout("after", "").Key()) != nil }, "zone-a is back with a new token")
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

// endedFor is kds_sessions_ended_total{zone, reason} on n.
func endedFor(t *testing.T, n *node, zone, reason string) float64 {
	t.Helper()
	mfs, err := n.e.promReg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "kds_sessions_ended_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["zone"] == zone && labels["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
