package engine

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/kds-engine/kds-engine/engine/internal/token"
)

// writePublicKeys writes the public keys into path (by rename).
func writePublicKeys(t *testing.T, path string, keys ...ed25519.PublicKey) {
	t.Helper()
	var all []byte
	for _, k := range keys {
		p := filepath.Join(t.TempDir(), "k.pub")
		require.NoError(t, token.WritePublicKey(p, k))
		data, err := os.ReadFile(p)
		require.NoError(t, err)
		all = append(all, data...)
	}
	require.NoError(t, os.WriteFile(path+".tmp", all, 0o600))
	require.NoError(t, os.Rename(path+".tmp", path))
}

// A running global trusts a key added to its verification key file and
// stops trusting one removed from it, without a restart; a session that
// started meanwhile keeps running.
func TestRunningGlobalPicksUpVerificationKeys(t *testing.T) {
	oldPub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	newPub, newKey, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	trusted := filepath.Join(t.TempDir(), "trusted.pub")
	writePublicKeys(t, trusted, oldPub)
	g := startNode(t, Config{Role: RoleGlobal, PluginsDir: builtinDir, TokenVerificationKeyFiles: []string{trusted}})

	// A zone with a token signed by the new key is refused.
	iss, err := token.NewIssuer(newKey)
	require.NoError(t, err)
	tok, err := iss.Generate("zone-a", time.Hour)
	require.NoError(t, err)
	tokenFile := filepath.Join(t.TempDir(), "zone-a.token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(tok), 0o600))
	cfg := zoneConfig(t, "zone-a", g, Config{PluginsDir: builtinDir})
	cfg.TokenFile = tokenFile
	zone := startNode(t, cfg)
	refused := func() bool {
		st := recvUntilErr(t, rawSession(t, dialGlobal(t, g), "zone-b", tok))
		return st.Code() == codes.Unauthenticated && strings.Contains(st.Message(), "(unknown_key)")
	}
	require.True(t, refused(), "a token signed by a key global does not trust yet is refused")
	require.Error(t, zone.b().Ready(), "the zone is not connected")

	// Trusted once the key is in the file: the zone's next attempt gets in.
	writePublicKeys(t, trusted, oldPub, newPub)
	create(t, g, meshTimeout("after-add", "1s"))
	eventually(t, func() bool { return find(zone, meshTimeout("after-add", "").Key()) != nil }, "the zone syncs once its key is trusted")

	// Removed from the file: new sessions with it are refused, the running
	// session is not affected.
	writePublicKeys(t, trusted, oldPub)
	require.Eventually(t, refused, 30*time.Second, 100*time.Millisecond, "a new session with the removed key is refused")
	create(t, g, meshTimeout("after-remove", "2s"))
	eventually(t, func() bool { return find(zone, meshTimeout("after-remove", "").Key()) != nil }, "the running session keeps syncing")
	assert.Equal(t, 1.0, metricSum(t, g, "kds_sessions_started_total", "zone-a"), "one session from start to end")
}
