package engine

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
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
	iss, err := token.NewIssuer(newKey, clusterIDOf(t, g))
	require.NoError(t, err)
	tok, err := iss.Generate("zone-a", time.Hour)
	require.NoError(t, err)
	tokenFile := filepath.Join(t.TempDir(), "zone-a.token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(tok), 0o600))
	cfg := zoneConfig(t, "zone-a", g, Config{PluginsDir: builtinDir})
	cfg.TokenFile = tokenFile
	zone := startNode(t, cfg)
	refused := func() bool {
		before := refusedFor(t, g, "unknown_key")
		st := recvUntilErr(t, rawSession(t, dialGlobal(t, g), "zone-b", tok))
		// (The zone's own attempts are refused for the same reason.)
		return st.Code() == codes.Unauthenticated && refusedFor(t, g, "unknown_key") > before
	}
	require.True(t, refused(), "a token signed by a key global does not trust yet is refused")
	require.Error(t, zone.b().Ready(), "the zone is not connected")

	// Trusted once the key is in the file: the zone's next attempt gets in.
	writePublicKeys(t, trusted, oldPub, newPub)
	create(t, g, &resource.Resource{Type: "Mesh", Name: "default", Spec: spec(map[string]any{})})
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

// Replacing the signing key file of a running global switches the key it
// always trusts, without a restart: tokens signed with the new key get in,
// tokens of the old key only while a verification key file lists it.
func TestRunningGlobalFollowsItsSigningKeyFile(t *testing.T) {
	dataDir := t.TempDir()
	signingFile := SigningKeyFile(dataDir, "") // the default one, in the data dir
	oldKey, _, err := token.LoadOrCreateSigningKey(signingFile)
	require.NoError(t, err)
	trusted := filepath.Join(t.TempDir(), "trusted.pub")
	writePublicKeys(t, trusted, oldKey.Public().(ed25519.PublicKey))
	g := startNode(t, Config{Role: RoleGlobal, PluginsDir: builtinDir, DataDir: dataDir, TokenVerificationKeyFiles: []string{trusted},
		SessionsPerMinute: -1}) // this test opens many sessions as zone-a
	oldTok, err := GenerateZoneToken(g.e.cfg.DataDir, "", "", "zone-a", time.Hour)
	require.NoError(t, err)

	// Step 3 of the rotation: the new key goes in place of the old one.
	next := filepath.Join(t.TempDir(), "next.key")
	newKey, _, err := token.LoadOrCreateSigningKey(next)
	require.NoError(t, err)
	writePublicKeys(t, trusted, oldKey.Public().(ed25519.PublicKey), newKey.Public().(ed25519.PublicKey))
	require.NoError(t, os.Rename(next, signingFile))
	newTok, err := GenerateZoneToken(g.e.cfg.DataDir, "", "", "zone-a", time.Hour)
	require.NoError(t, err)
	require.NotEqual(t, oldTok, newTok)

	// Global sends its session header only to a session it accepted; a
	// refused one ends with a status that refers to global's log.
	accepted := func(tok string) (bool, string) {
		s := rawSession(t, dialGlobal(t, g), "zone-a", tok)
		if md, err := s.Header(); err == nil && len(md) > 0 {
			return true, ""
		}
		return false, recvUntilErr(t, s).Message()
	}
	require.Eventually(t, func() bool { ok, _ := accepted(newTok); return ok }, 30*time.Second, 100*time.Millisecond,
		"a token of the new signing key gets in")
	ok, why := accepted(oldTok)
	assert.True(t, ok, "the old key is still listed: %s", why)

	// Step 5: only the new key stays; the old key is no longer trusted,
	// although it was the signing key global started with.
	writePublicKeys(t, trusted, newKey.Public().(ed25519.PublicKey))
	require.Eventually(t, func() bool {
		before := refusedFor(t, g, "unknown_key")
		ok, _ := accepted(oldTok)
		return !ok && refusedFor(t, g, "unknown_key") == before+1
	}, 30*time.Second, 100*time.Millisecond, "the old key is dropped")
	ok, why = accepted(newTok)
	assert.True(t, ok, why)
}
