package token

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/trustfile"
)

func TestLoadOrCreateSigningKeyCreatesPrivateFileAndDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	path := filepath.Join(dir, "signing.pem")

	key, created, err := LoadOrCreateSigningKey(path)
	require.NoError(t, err)
	assert.True(t, created)
	assert.Len(t, key, ed25519.PrivateKeySize)

	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	dinfo, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), dinfo.Mode().Perm())

	again, created, err := LoadOrCreateSigningKey(path)
	require.NoError(t, err)
	assert.False(t, created, "second start must load, not replace, the key")
	assert.True(t, key.Equal(again))

	leftovers, err := filepath.Glob(filepath.Join(dir, ".signing-key-*"))
	require.NoError(t, err)
	assert.Empty(t, leftovers, "temporary files must be cleaned up")
}

func TestLoadOrCreateSigningKeyConcurrentCreatorsAgree(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signing.pem")
	const n = 8
	keys := make([]ed25519.PrivateKey, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys[i], _, errs[i] = LoadOrCreateSigningKey(path)
		}()
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		assert.True(t, keys[0].Equal(keys[i]), "creator %d got a different key", i)
	}
}

func TestSigningKeyReadableByOthersIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signing.pem")
	_, _, err := LoadOrCreateSigningKey(path)
	require.NoError(t, err)
	require.NoError(t, os.Chmod(path, 0o640))

	_, _, err = LoadOrCreateSigningKey(path)
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)
	assert.Contains(t, err.Error(), "0640")
	assert.Contains(t, err.Error(), "chmod 600 "+path)

	_, err = LoadSigningKey(path)
	require.Error(t, err, "LoadSigningKey applies the same check")
	assert.Contains(t, err.Error(), "chmod 600 "+path)
}

func TestLoadSigningKeyErrors(t *testing.T) {
	dir := t.TempDir()

	_, err := LoadSigningKey(filepath.Join(dir, "absent.pem"))
	assert.ErrorIs(t, err, fs.ErrNotExist)

	garbage := writeFile(t, dir, "garbage.pem", []byte("not a key"), 0o600)
	_, err = LoadSigningKey(garbage)
	require.Error(t, err)
	assert.Contains(t, err.Error(), garbage)
	assert.Contains(t, err.Error(), "PRIVATE KEY")

	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKCS8PrivateKey(ec)
	require.NoError(t, err)
	ecPath := writeFile(t, dir, "ec.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	_, err = LoadSigningKey(ecPath)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "want an Ed25519 key")

	_, _, err = LoadOrCreateSigningKey(garbage)
	require.Error(t, err, "an unreadable existing key must not be replaced")
	data, err := os.ReadFile(garbage)
	require.NoError(t, err)
	assert.Equal(t, "not a key", string(data))
}

func TestPublicKeysRoundTripAndRotationFiles(t *testing.T) {
	dir := t.TempDir()
	pubA, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	pubB, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)

	a := filepath.Join(dir, "a.pub")
	b := filepath.Join(dir, "b.pub")
	require.NoError(t, WritePublicKey(a, pubA))
	require.NoError(t, WritePublicKey(b, pubB))

	keys, err := LoadVerificationKeys(a, b)
	require.NoError(t, err)
	require.Len(t, keys, 2)
	assert.True(t, pubA.Equal(keys[0]))
	assert.True(t, pubB.Equal(keys[1]))

	// One file may hold several keys (a bundle).
	da, err := os.ReadFile(a)
	require.NoError(t, err)
	db, err := os.ReadFile(b)
	require.NoError(t, err)
	bundle := writeFile(t, dir, "bundle.pub", append(da, db...), 0o644)
	keys, err = LoadVerificationKeys(bundle)
	require.NoError(t, err)
	assert.Len(t, keys, 2)
}

func TestLoadVerificationKeysErrors(t *testing.T) {
	dir := t.TempDir()

	_, err := LoadVerificationKeys()
	require.Error(t, err)

	empty := writeFile(t, dir, "empty.pub", nil, 0o644)
	_, err = LoadVerificationKeys(empty)
	require.Error(t, err)
	assert.Contains(t, err.Error(), empty)

	// A private key does not belong in a verification key file.
	priv, _, err := LoadOrCreateSigningKey(filepath.Join(dir, "signing.pem"))
	require.NoError(t, err)
	_, err = LoadVerificationKeys(filepath.Join(dir, "signing.pem"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"PRIVATE KEY"`)
	_ = priv

	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	require.NoError(t, err)
	ecPath := writeFile(t, dir, "ec.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
	_, err = LoadVerificationKeys(ecPath)
	require.Error(t, err)
	assert.Contains(t, err.Error(), ecPath)
	assert.Contains(t, err.Error(), "want an Ed25519 key")

	_, err = LoadVerificationKeys(filepath.Join(dir, "absent.pub"))
	assert.ErrorIs(t, err, fs.ErrNotExist)

	assert.Error(t, WritePublicKey(filepath.Join(dir, "short.pub"), ed25519.PublicKey{1, 2, 3}))
}

func TestKeyIDIsStableAndDistinct(t *testing.T) {
	pubA, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	pubB, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	assert.Equal(t, KeyID(pubA), KeyID(append(ed25519.PublicKey(nil), pubA...)))
	assert.NotEqual(t, KeyID(pubA), KeyID(pubB))
	assert.Len(t, KeyID(pubA), 16)
}

func writeFile(t *testing.T, dir, name string, data []byte, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, data, mode))
	require.NoError(t, os.Chmod(path, mode)) // umask-independent
	return path
}

// Keys made with "openssl genpkey -algorithm ed25519" and "openssl pkey
// -pubout" (the rotation procedure in docs/security.md) load as they are.
func TestOpenSSLKeysLoad(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "openssl-ed25519-test-only.pem"))
	require.NoError(t, err)
	priv := writeFile(t, t.TempDir(), "signing.pem", data, 0o600)
	key, err := LoadSigningKey(priv)
	require.NoError(t, err)

	pubs, err := LoadVerificationKeys(filepath.Join("testdata", "openssl-ed25519-test-only.pub"))
	require.NoError(t, err)
	require.Len(t, pubs, 1)
	assert.True(t, pubs[0].Equal(key.Public()))
}

func TestLoadOrCreateClusterID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "cluster-id")
	id, created, err := LoadOrCreateClusterID(path)
	require.NoError(t, err)
	assert.True(t, created)
	require.NoError(t, ValidateClusterID(id))
	assert.Len(t, id, 32)

	again, created, err := LoadOrCreateClusterID(path)
	require.NoError(t, err)
	assert.False(t, created)
	assert.Equal(t, id, again, "the id is stable across starts")

	require.NoError(t, os.WriteFile(path, []byte("Not An Id\n"), 0o600))
	_, _, err = LoadOrCreateClusterID(path)
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)

	require.NoError(t, os.WriteFile(path, []byte("prod-eu\n"), 0o600))
	require.NoError(t, os.Chmod(path, 0o666))
	_, _, err = LoadOrCreateClusterID(path)
	require.ErrorIs(t, err, trustfile.ErrUnsafe, "a cluster id others can change is refused")
	require.NoError(t, os.Chmod(path, 0o644))
	id, _, err = LoadOrCreateClusterID(path)
	require.NoError(t, err)
	assert.Equal(t, "prod-eu", id)
}

// Two creators racing (global starting while token generate runs) end up
// with the same id.
func TestLoadOrCreateClusterIDConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cluster-id")
	ids := make([]string, 8)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			id, _, err := LoadOrCreateClusterID(path)
			assert.NoError(t, err)
			ids[i] = id
		})
	}
	wg.Wait()
	for _, id := range ids {
		assert.Equal(t, ids[0], id)
	}
}
