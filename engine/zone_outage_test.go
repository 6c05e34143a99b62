package engine

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestZoneShowsHowLongGlobalHasBeenAway: while global is down the zone
// keeps retrying; its sync state stays offline since the session ended
// (not since its latest attempt), with the latest attempt's error, and
// kds_session_connected says 0.
func TestZoneShowsHowLongGlobalHasBeenAway(t *testing.T) {
	g := startGlobal(t, builtinDir)
	z := startZone(t, "zone-1", g, builtinDir, "")
	eventually(t, func() bool { return z.b().Ready() == nil }, "zone connected")

	g.stop()
	eventually(t, func() bool {
		c, _ := z.e.Insights().Get(GlobalPeer)
		return !c.Online && !c.DisconnectedAt.IsZero()
	}, "zone sees global gone")
	c, _ := z.e.Insights().Get(GlobalPeer)
	lost := c.DisconnectedAt
	// Reconnect attempts at 50 ms doubling to 500 ms: several in 2 s.
	time.Sleep(2 * time.Second)
	c, _ = z.e.Insights().Get(GlobalPeer)
	assert.False(t, c.Online)
	assert.Equal(t, lost, c.DisconnectedAt, "offline since the session ended, not since the latest attempt")
	assert.Contains(t, c.LastError, "connection refused", "the latest attempt's error")
	connected, ok := seriesValue(t, z, "kds_session_connected", map[string]string{"zone": "zone-1"})
	assert.True(t, ok)
	assert.Zero(t, connected)
}

// TestZoneThatNeverConnectedHasItsSeries: a zone that has not had a
// session yet (global down, a wrong CA or address, a refused token) shows
// kds_session_connected 0, so that an alert on it fires, and exports when
// its own token expires.
func TestZoneThatNeverConnectedHasItsSeries(t *testing.T) {
	g := startGlobal(t, builtinDir)
	cfg := zoneConfig(t, "zone-1", g, Config{PluginsDir: builtinDir})
	raw, err := os.ReadFile(cfg.TokenFile)
	require.NoError(t, err)
	info, err := InspectZoneToken(strings.TrimSpace(string(raw)))
	require.NoError(t, err)
	// Nothing listens at the address the zone is given.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	cfg.GlobalAddress = l.Addr().String()
	require.NoError(t, l.Close())
	z := startNode(t, cfg)

	eventually(t, func() bool {
		err := z.b().Ready()
		return err != nil && strings.Contains(err.Error(), "connection refused")
	}, "readiness says global cannot be reached")
	connected, ok := seriesValue(t, z, "kds_session_connected", map[string]string{"zone": "zone-1"})
	assert.True(t, ok, "kds_session_connected{zone=\"zone-1\"} exists before the first session")
	assert.Zero(t, connected)
	started, ok := seriesValue(t, z, "kds_sessions_started_total", map[string]string{"zone": "zone-1"})
	assert.True(t, ok)
	assert.Zero(t, started)
	expiry, ok := seriesValue(t, z, "kds_zone_token_expiry_timestamp_seconds", map[string]string{"zone": "zone-1"})
	assert.True(t, ok, "the zone exports its own token's expiry")
	assert.Equal(t, float64(info.ExpiresAt.Unix()), expiry)
}

// TestZoneWithWrongCASaysWhichSetting: a zone whose --ca-file does not hold
// the CA of global's certificate says which setting to fix, not only the
// TLS handshake's error.
func TestZoneWithWrongCASaysWhichSetting(t *testing.T) {
	g := startGlobal(t, builtinDir)
	other, _, _, _, err := GenerateDemoPKI(filepath.Join(t.TempDir(), "other"), nil)
	require.NoError(t, err)
	cfg := zoneConfig(t, "zone-1", g, Config{PluginsDir: builtinDir})
	cfg.CAFile = other
	z := startNode(t, cfg)
	eventually(t, func() bool {
		err := z.b().Ready()
		return err != nil && strings.Contains(err.Error(), "x509: certificate signed by unknown authority")
	}, "the handshake fails")
	err = z.b().Ready()
	assert.Contains(t, err.Error(), "global's certificate is not signed by a CA in --ca-file "+other)
	c, _ := z.e.Insights().Get(GlobalPeer)
	assert.Contains(t, c.LastError, "--ca-file "+other)
}

// TestZoneWithoutTLSAgainstTLSGlobalSaysWhatToCheck: a zone started with
// --insecure against a global that serves TLS sees only "error reading
// server preface"; it says to check the port and the TLS setting.
func TestZoneWithoutTLSAgainstTLSGlobalSaysWhatToCheck(t *testing.T) {
	g := startGlobal(t, builtinDir)
	cfg := zoneConfig(t, "zone-1", g, Config{PluginsDir: builtinDir})
	cfg.Insecure = true
	z := startNode(t, cfg)
	eventually(t, func() bool {
		err := z.b().Ready()
		return err != nil && strings.Contains(err.Error(), "server preface")
	}, "the connection fails")
	assert.Contains(t, z.b().Ready().Error(), "both sides agree on TLS")
}
