package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/testsupport/fakeclock"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
	"github.com/kds-engine/kds-engine/engine/internal/trustfile"
)

const warnKeys = "zone token verification key file changed but cannot be used"

// signer is a key that signs tokens for zone "zone-a".
type signer struct {
	pub ed25519.PublicKey
	tok string
}

func newSigner(t *testing.T) signer {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	iss, err := NewIssuer(priv, testAudience, WithIssuerClock(func() time.Time { return t0 }))
	require.NoError(t, err)
	tok, err := iss.Generate("zone-a", time.Hour)
	require.NoError(t, err)
	return signer{pub: pub, tok: tok}
}

// pubPEM is the PEM of the public keys of signers, as an operator's .pub
// files hold them.
func pubPEM(t *testing.T, signers ...signer) []byte {
	t.Helper()
	var all []byte
	for _, s := range signers {
		p := filepath.Join(t.TempDir(), "k.pub")
		require.NoError(t, WritePublicKey(p, s.pub))
		data, err := os.ReadFile(p)
		require.NoError(t, err)
		all = append(all, data...)
	}
	return all
}

// replaceFile puts data at path by renaming a new file over it, so the
// change shows up as a new inode whatever the file system's clock.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(path+".tmp", data, 0o644)) //nolint:gosec // public keys
	require.NoError(t, os.Rename(path+".tmp", path))
}

// keyFiles is a KeyFileVerifier on one file, with a fake clock and a log.
type keyFiles struct {
	v    *KeyFileVerifier
	file string
	clk  *fakeclock.Clock
	logs *logbuf.Buffer
}

func newKeyFiles(t *testing.T, signing signer, in ...signer) *keyFiles {
	t.Helper()
	k := &keyFiles{file: filepath.Join(t.TempDir(), "trusted.pub"), clk: fakeclock.New(t0), logs: &logbuf.Buffer{}}
	replaceFile(t, k.file, pubPEM(t, in...))
	log := hclog.New(&hclog.LoggerOptions{Output: k.logs, Level: hclog.Debug})
	var err error
	k.v, err = NewKeyFileVerifier(signing.pub, testAudience, []string{k.file}, log, WithVerifierOptions(WithClock(k.clk.Now)))
	require.NoError(t, err)
	return k
}

func (k *keyFiles) accepts(t *testing.T, s signer) bool {
	t.Helper()
	zone, err := k.v.Verify(s.tok, "zone-a")
	if err != nil {
		require.ErrorIs(t, err, ErrUnknownKey, "only the key may be the reason")
		return false
	}
	assert.Equal(t, "zone-a", zone)
	return true
}

func TestKeyFileVerifierTrustsAddedKeyAfterInterval(t *testing.T) {
	signing, old, added := newSigner(t), newSigner(t), newSigner(t)
	k := newKeyFiles(t, signing, old)
	assert.True(t, k.accepts(t, old))
	_, err := k.v.Verify(added.tok, "zone-a")
	require.ErrorIs(t, err, ErrUnknownKey)
	assert.Contains(t, err.Error(), KeyID(added.pub), "the refusal names the key id")

	replaceFile(t, k.file, pubPEM(t, old, added))
	k.clk.Advance(DefaultKeyCheckInterval - time.Millisecond)
	assert.False(t, k.accepts(t, added), "the files are looked at once per interval")
	k.clk.Advance(time.Millisecond)
	assert.True(t, k.accepts(t, added), "trusted without a restart")
	assert.True(t, k.accepts(t, old))
	assert.True(t, k.accepts(t, signing))

	ids := []string{KeyID(signing.pub), KeyID(old.pub), KeyID(added.pub)}
	reloaded := k.logs.Lines("[INFO]", "reloaded zone token verification keys", k.file)
	require.Len(t, reloaded, 1, k.logs.String())
	for _, id := range ids {
		assert.Contains(t, reloaded[0], id)
	}
	assert.ElementsMatch(t, ids, k.v.KeyIDs())
}

func TestKeyFileVerifierDropsRemovedKey(t *testing.T) {
	signing, kept, dropped := newSigner(t), newSigner(t), newSigner(t)
	k := newKeyFiles(t, signing, kept, dropped)
	assert.True(t, k.accepts(t, dropped))

	replaceFile(t, k.file, pubPEM(t, kept))
	k.clk.Advance(DefaultKeyCheckInterval)
	assert.False(t, k.accepts(t, dropped), "a key removed from the file is no longer trusted")
	assert.True(t, k.accepts(t, kept))
	assert.True(t, k.accepts(t, signing))
	assert.NotContains(t, k.v.KeyIDs(), KeyID(dropped.pub))
}

func TestKeyFileVerifierKeepsKeysWhenFileIsBroken(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(t *testing.T, file string)
		reason string
	}{
		{"garbage", func(t *testing.T, file string) { replaceFile(t, file, []byte("not a key\n")) }, "no PEM"},
		{"private key", func(t *testing.T, file string) {
			replaceFile(t, file, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
		}, "PEM block 1: type"},
		{"missing", func(t *testing.T, file string) { require.NoError(t, os.Remove(file)) }, "no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			signing, old, added := newSigner(t), newSigner(t), newSigner(t)
			k := newKeyFiles(t, signing, old)

			tc.break_(t, k.file)
			for range 3 {
				k.clk.Advance(DefaultKeyCheckInterval)
				assert.True(t, k.accepts(t, old), "the previous keys stay trusted")
				assert.True(t, k.accepts(t, signing))
			}
			warned := k.logs.Lines("[WARN]", warnKeys, "file="+k.file, tc.reason)
			assert.Len(t, warned, 1, "one warning per change: %s", k.logs.String())
			assert.Empty(t, k.logs.Lines("reloaded zone token verification keys"))

			// Fixed: tried again and used.
			replaceFile(t, k.file, pubPEM(t, added))
			k.clk.Advance(DefaultKeyCheckInterval)
			assert.True(t, k.accepts(t, added))
			assert.False(t, k.accepts(t, old))
			assert.Len(t, k.logs.Lines("[WARN]"), 1)
			assert.Len(t, k.logs.Lines("[INFO]", "reloaded zone token verification keys"), 1)
		})
	}
}

// The attack a world-writable verification key file allows: another user
// appends their key and signs a token with it. The file is refused at the
// next look (it is writable by others), the key is not trusted, the keys
// trusted before stay trusted, and the warning names the file, its mode
// and the fix, once.
func TestKeyFileVerifierRefusesWorldWritableFileOnReload(t *testing.T) {
	signing, old, attacker := newSigner(t), newSigner(t), newSigner(t)
	k := newKeyFiles(t, signing, old)

	require.NoError(t, os.Chmod(k.file, 0o666))
	f, err := os.OpenFile(k.file, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.Write(pubPEM(t, attacker))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	for range 3 {
		k.clk.Advance(DefaultKeyCheckInterval)
		assert.False(t, k.accepts(t, attacker), "a key appended to a file others can write is not trusted")
		assert.True(t, k.accepts(t, old), "the previous keys stay trusted")
	}
	warned := k.logs.Lines("[WARN]", warnKeys, "file="+k.file, "mode 0666", "writable by group or others", "chmod go-w "+k.file)
	assert.Len(t, warned, 1, k.logs.String())

	// Starting with such a file fails, naming it.
	_, err = NewKeyFileVerifier(signing.pub, testAudience, []string{k.file}, nil)
	require.ErrorIs(t, err, trustfile.ErrUnsafe)
	assert.Contains(t, err.Error(), k.file)
}

// A verification key file owned by another user is refused like one that
// others can write: that user can change it.
func TestKeyFileVerifierRefusesFileOwnedByAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	signing, old, added := newSigner(t), newSigner(t), newSigner(t)
	k := newKeyFiles(t, signing, old)
	replaceFile(t, k.file, pubPEM(t, old, added))
	require.NoError(t, os.Chown(k.file, 4242, 4242))
	k.clk.Advance(DefaultKeyCheckInterval)
	assert.False(t, k.accepts(t, added))
	assert.True(t, k.accepts(t, old))
	assert.Len(t, k.logs.Lines("[WARN]", warnKeys, "owned by uid 4242", "chown 0 "+k.file), 1, k.logs.String())
}

func TestKeyFileVerifierAlwaysTrustsSigningKey(t *testing.T) {
	signing, other, another := newSigner(t), newSigner(t), newSigner(t)
	k := newKeyFiles(t, signing, other)
	assert.True(t, k.accepts(t, signing), "the signing key is not in the file and still trusted")
	replaceFile(t, k.file, pubPEM(t, another))
	k.clk.Advance(DefaultKeyCheckInterval)
	assert.True(t, k.accepts(t, another))
	assert.True(t, k.accepts(t, signing), "and after a reload")

	// Without files only the signing key is trusted.
	v, err := NewKeyFileVerifier(signing.pub, testAudience, nil, nil, WithVerifierOptions(WithClock(k.clk.Now)))
	require.NoError(t, err)
	zone, err := v.Verify(signing.tok, "zone-a")
	require.NoError(t, err)
	assert.Equal(t, "zone-a", zone)
	_, err = v.Verify(other.tok, "zone-a")
	require.ErrorIs(t, err, ErrUnknownKey)
	assert.Equal(t, []string{KeyID(signing.pub)}, v.KeyIDs())
}

func TestKeyFileVerifierStartErrorNamesFile(t *testing.T) {
	signing := newSigner(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pub")
	replaceFile(t, bad, []byte("junk"))
	_, err := NewKeyFileVerifier(signing.pub, testAudience, []string{bad}, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), bad)
	missing := filepath.Join(dir, "missing.pub")
	_, err = NewKeyFileVerifier(signing.pub, testAudience, []string{missing}, nil)
	require.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), missing)
	assert.False(t, strings.Contains(err.Error(), "failed to"))
}

// With WithSigningKeyFile the always-trusted key follows the signing key
// file: a key renamed over it is trusted from the next look, the one it
// replaced only if a verification key file lists it; an unusable signing
// key file keeps the previous keys with one warning.
func TestKeyFileVerifierFollowsSigningKeyFile(t *testing.T) {
	dir := t.TempDir()
	signingFile := filepath.Join(dir, "signing.key")
	oldKey, _, err := LoadOrCreateSigningKey(signingFile)
	require.NoError(t, err)
	next := filepath.Join(dir, "next.key")
	newKey, _, err := LoadOrCreateSigningKey(next)
	require.NoError(t, err)
	issue := func(key ed25519.PrivateKey) string {
		iss, err := NewIssuer(key, testAudience, WithIssuerClock(func() time.Time { return t0 }))
		require.NoError(t, err)
		tok, err := iss.Generate("zone-a", time.Hour)
		require.NoError(t, err)
		return tok
	}
	oldTok, newTok := issue(oldKey), issue(newKey)

	clk, logs := fakeclock.New(t0), &logbuf.Buffer{}
	v, err := NewKeyFileVerifier(oldKey.Public().(ed25519.PublicKey), testAudience, nil,
		hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug}),
		WithSigningKeyFile(signingFile), WithVerifierOptions(WithClock(clk.Now)))
	require.NoError(t, err)
	verify := func(tok string) error { _, err := v.Verify(tok, "zone-a"); return err }
	require.NoError(t, verify(oldTok))
	require.ErrorIs(t, verify(newTok), ErrUnknownKey)

	require.NoError(t, os.Rename(next, signingFile))
	clk.Advance(DefaultKeyCheckInterval)
	require.NoError(t, verify(newTok), "the new signing key is trusted without a restart")
	require.ErrorIs(t, verify(oldTok), ErrUnknownKey, "the replaced key is not trusted unless a key file lists it")
	reloaded := logs.Lines("[INFO]", "reloaded zone token verification keys", "signing_key_id="+KeyID(newKey.Public().(ed25519.PublicKey)))
	assert.Len(t, reloaded, 1, logs.String())

	// A signing key file others can read is not used.
	data, err := os.ReadFile(signingFile)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(signingFile+".tmp", data, 0o644)) //nolint:gosec // the point of the test
	require.NoError(t, os.Chmod(signingFile+".tmp", 0o644))
	require.NoError(t, os.Rename(signingFile+".tmp", signingFile))
	clk.Advance(DefaultKeyCheckInterval)
	require.NoError(t, verify(newTok), "the previous keys stay in force")
	assert.Len(t, logs.Lines("[WARN]", warnKeys, "file="+signingFile), 1, logs.String())
}
