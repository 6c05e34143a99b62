package cli

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakePlugins makes a plugins directory with an executable kds-plugin-NAME
// holding content for each entry; the lock command hashes, never runs them.
func fakePlugins(t *testing.T, bins map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range bins {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "kds-plugin-"+name), []byte(content), 0o755))
	}
	return dir
}

func sumOf(s string) string { return fmt.Sprintf("%x", sha256.Sum256([]byte(s))) }

func TestPluginsLockWritesTheLockFile(t *testing.T) {
	dir := fakePlugins(t, map[string]string{"policies": "p1", "dataplanes": "d1"})
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kds-plugin-notes"), []byte("not executable"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "README.txt"), []byte("hi"), 0o644))
	lock := filepath.Join(dir, "kds-plugins.lock")

	code, out, errOut := runCLI(t, nil, "plugins", "lock", "--plugins-dir", dir)
	require.Equal(t, ExitOK, code, errOut)
	lines := sumOf("d1") + "  kds-plugin-dataplanes\n" + sumOf("p1") + "  kds-plugin-policies\n"
	assert.Equal(t, lines, out, "what was written, sorted by name")
	assert.Equal(t, "wrote "+lock+": 2 plugin binaries\n", errOut)
	raw, err := os.ReadFile(lock)
	require.NoError(t, err)
	assert.Regexp(t, "^(#[^\n]*\n)*"+lines+"$", string(raw), "comments, then the lines printed")
	st, err := os.Stat(lock)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), st.Mode().Perm())

	// Again after an upgrade, from the environment like global's --plugins-dir:
	// the file is replaced.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kds-plugin-policies"), []byte("p2"), 0o755))
	code, out, errOut = runCLI(t, map[string]string{"KDS_ENGINE_PLUGINS_DIR": dir}, "plugins", "lock")
	require.Equal(t, ExitOK, code, errOut)
	assert.Contains(t, out, sumOf("p2")+"  kds-plugin-policies\n")
	raw, err = os.ReadFile(lock)
	require.NoError(t, err)
	assert.Contains(t, string(raw), sumOf("p2"))
	assert.NotContains(t, string(raw), sumOf("p1"))
}

func TestPluginsLockCheck(t *testing.T) {
	dir := fakePlugins(t, map[string]string{"policies": "p1", "dataplanes": "d1"})
	lock := filepath.Join(dir, "kds-plugins.lock")
	code, _, errOut := runCLI(t, nil, "plugins", "lock", "--plugins-dir", dir)
	require.Equal(t, ExitOK, code, errOut)

	code, out, errOut := runCLI(t, nil, "plugins", "lock", "--check", "--plugins-dir", dir)
	require.Equal(t, ExitOK, code, errOut)
	assert.Equal(t, "kds-plugin-dataplanes: OK\nkds-plugin-policies: OK\n"+lock+" matches 2 plugin binaries\n", out)
	assert.Empty(t, errOut)

	// A swapped binary and a new one: each named, exit 2, nothing written.
	before, err := os.ReadFile(lock)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kds-plugin-policies"), []byte("evil"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kds-plugin-extra"), []byte("e"), 0o755))
	code, out, errOut = runCLI(t, nil, "plugins", "lock", "--check", "--plugins-dir", dir)
	assert.Equal(t, ExitFailed, code)
	assert.Equal(t, "kds-plugin-dataplanes: OK\n", out)
	assert.Contains(t, errOut, "plugins lock --check: the engine would refuse 2 plugin binaries in "+dir+":\n")
	assert.Contains(t, errOut, "\n  kds-plugin-extra is not listed in the plugins lock file "+lock)
	assert.Contains(t, errOut, "\n  checksum mismatch: kds-plugin-policies has sha256 "+sumOf("evil")+", the plugins lock file "+lock+" (line 4) expects "+sumOf("p1"))
	after, err := os.ReadFile(lock)
	require.NoError(t, err)
	assert.Equal(t, string(before), string(after), "--check writes nothing")

	// An entry without a binary is a warning, as at engine start.
	require.NoError(t, os.Remove(filepath.Join(dir, "kds-plugin-extra")))
	require.NoError(t, os.Remove(filepath.Join(dir, "kds-plugin-policies")))
	code, out, errOut = runCLI(t, nil, "plugins", "lock", "--check", "--plugins-dir", dir)
	assert.Equal(t, ExitOK, code, errOut)
	assert.Equal(t, "kds-plugin-dataplanes: OK\n"+lock+" matches 1 plugin binary\n", out)
	assert.Equal(t, "plugins lock --check: warning: kds-plugin-policies (line 4) names no plugin binary in "+dir+"; the engine ignores the entry\n", errOut)
}

func TestPluginsLockErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	for _, args := range [][]string{{}, {"--check"}} {
		code, out, errOut := runCLI(t, nil, append([]string{"plugins", "lock", "--plugins-dir", missing}, args...)...)
		assert.Equal(t, ExitUsage, code, args)
		assert.Empty(t, out)
		assert.Contains(t, errOut, "plugins dir "+missing+" does not exist; set --plugins-dir (or "+pluginsDirEnv+")")
		assert.NotContains(t, errOut, "not a directory")
	}
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	code, out, errOut := runCLI(t, nil, "plugins", "lock", "--plugins-dir", file)
	assert.Equal(t, ExitUsage, code)
	assert.Empty(t, out)
	assert.Contains(t, errOut, file+" is not a directory")
	code, _, errOut = runCLI(t, nil, "plugins", "lock", "extra")
	assert.Equal(t, ExitUsage, code)
	assert.Contains(t, errOut, `unknown command "extra"`)

	// Nothing to lock.
	empty := t.TempDir()
	code, _, errOut = runCLI(t, nil, "plugins", "lock", "--plugins-dir", empty)
	assert.Equal(t, ExitFailed, code)
	assert.Contains(t, errOut, "plugins lock: no plugin binaries (executable kds-plugin-* files) in "+empty)

	// --check without a lock file.
	dir := fakePlugins(t, map[string]string{"policies": "p1"})
	code, _, errOut = runCLI(t, nil, "plugins", "lock", "--check", "--plugins-dir", dir)
	assert.Equal(t, ExitFailed, code)
	assert.Contains(t, errOut, "plugins lock --check: no plugins lock file "+filepath.Join(dir, "kds-plugins.lock")+"; write one with `kds-engine plugins lock --plugins-dir "+dir+"`")

	// A malformed lock file: the line is named.
	lock := filepath.Join(dir, "kds-plugins.lock")
	require.NoError(t, os.WriteFile(lock, []byte("# x\nabc  kds-plugin-policies\n"), 0o644))
	code, _, errOut = runCLI(t, nil, "plugins", "lock", "--check", "--plugins-dir", dir)
	assert.Equal(t, ExitFailed, code)
	assert.Contains(t, errOut, "plugins lock file "+lock+", line 2: the digest \"abc\" has 3 characters")

	// A group-writable binary is not locked; nothing is written.
	require.NoError(t, os.Remove(lock))
	require.NoError(t, os.Chmod(filepath.Join(dir, "kds-plugin-policies"), 0o775))
	code, _, errOut = runCLI(t, nil, "plugins", "lock", "--plugins-dir", dir)
	assert.Equal(t, ExitFailed, code)
	assert.Contains(t, errOut, "kds-plugin-policies is writable by group or others")
	_, err := os.Stat(lock)
	assert.ErrorIs(t, err, os.ErrNotExist)
}
