package trustfile

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func write(t *testing.T, dir, name string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte("content"), mode))
	require.NoError(t, os.Chmod(p, mode)) // past the umask
	return p
}

func TestTrustFileRefusesWritableByOthers(t *testing.T) {
	dir := t.TempDir()
	for _, mode := range []os.FileMode{0o666, 0o620, 0o602} {
		p := write(t, dir, "keys.pub", mode)
		_, err := ReadFile(p, Public, "verification key file", 0)
		require.ErrorIs(t, err, ErrUnsafe, "mode %04o", mode)
		assert.Contains(t, err.Error(), "verification key file "+p)
		assert.Contains(t, err.Error(), "writable by group or others")
		assert.Contains(t, err.Error(), "`chmod go-w "+p+"`")
		require.ErrorIs(t, Check(p, Public, "verification key file"), ErrUnsafe)
	}
	p := write(t, dir, "ok.pub", 0o644)
	data, err := ReadFile(p, Public, "verification key file", 0)
	require.NoError(t, err)
	assert.Equal(t, "content", string(data))
}

func TestTrustFileRefusesSecretReadableByOthers(t *testing.T) {
	dir := t.TempDir()
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		p := write(t, dir, "zone.token", mode)
		_, err := ReadFile(p, Secret, "zone token file", 0)
		require.ErrorIs(t, err, ErrUnsafe, "mode %04o", mode)
		assert.Contains(t, err.Error(), "accessible by group or others")
		assert.Contains(t, err.Error(), "`chmod 600 "+p+"`")
	}
	p := write(t, dir, "ok.token", 0o600)
	_, err := ReadFile(p, Secret, "zone token file", 0)
	require.NoError(t, err)
	p = write(t, dir, "ro.token", 0o400)
	_, err = ReadFile(p, Secret, "zone token file", 0)
	require.NoError(t, err)
}

func TestTrustFileRefusesFileOwnedByAnotherUser(t *testing.T) {
	dir := t.TempDir()
	p := write(t, dir, "ca.crt", 0o644)
	// As root: give the file to another user. Otherwise: pretend to be
	// another user than the file's owner.
	if os.Geteuid() == 0 {
		require.NoError(t, os.Chown(p, 4242, 4242))
	} else {
		defer func(f func() int) { euid = f }(euid)
		me := os.Geteuid()
		euid = func() int { return me + 1 }
	}
	_, err := ReadFile(p, Public, "CA file", 0)
	require.ErrorIs(t, err, ErrUnsafe)
	assert.Contains(t, err.Error(), "CA file "+p+" is owned by uid ")
	assert.Contains(t, err.Error(), "not by root or the user kds-engine runs as")
	assert.Contains(t, err.Error(), "fix with `chown ")
}

func TestTrustFileRefusesWritableDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "shared")
	require.NoError(t, os.Mkdir(dir, 0o700))
	p := write(t, dir, "revoked.txt", 0o644)
	require.NoError(t, os.Chmod(dir, 0o777))
	_, err := ReadFile(p, Public, "revocation file", 0)
	require.ErrorIs(t, err, ErrUnsafe)
	assert.Contains(t, err.Error(), "revocation file's directory "+dir)
	assert.Contains(t, err.Error(), "`chmod go-w "+dir+"`")

	// A sticky directory (like /tmp) lets nobody replace another's file.
	require.NoError(t, os.Chmod(dir, 0o777|fs.ModeSticky))
	_, err = ReadFile(p, Public, "revocation file", 0)
	require.NoError(t, err)
}

func TestTrustFileFollowsSymlinksToTheRealFile(t *testing.T) {
	base := t.TempDir()
	dataDir := filepath.Join(base, "data")
	require.NoError(t, os.Mkdir(dataDir, 0o755))
	target := write(t, dataDir, "tls.crt", 0o644)
	link := filepath.Join(base, "tls.crt")
	require.NoError(t, os.Symlink(target, link))
	_, err := ReadFile(link, Public, "TLS certificate file", 0)
	require.NoError(t, err)

	require.NoError(t, os.Chmod(dataDir, 0o777))
	_, err = ReadFile(link, Public, "TLS certificate file", 0)
	require.ErrorIs(t, err, ErrUnsafe, "the directory the file really lives in counts")
	assert.Contains(t, err.Error(), "(where "+link+" leads)")
	require.NoError(t, os.Chmod(dataDir, 0o755))

	require.NoError(t, os.Chmod(target, 0o666))
	_, err = ReadFile(link, Public, "TLS certificate file", 0)
	require.ErrorIs(t, err, ErrUnsafe, "the mode of the file the link leads to counts")
}

func TestTrustFileLimitAndMissing(t *testing.T) {
	dir := t.TempDir()
	p := write(t, dir, "big", 0o600)
	_, err := ReadFile(p, Secret, "zone token file", 3)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "the limit is 3")

	_, err = ReadFile(filepath.Join(dir, "missing"), Public, "CA file", 0)
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.NotErrorIs(t, err, ErrUnsafe)

	_, err = ReadFile(dir, Public, "CA file", 0)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not a regular file")
}
