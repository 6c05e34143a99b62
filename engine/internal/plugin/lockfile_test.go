package plugin

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lockLine is the lock file line of kds-plugin-NAME in dir as it is now.
func lockLine(t *testing.T, dir, name string) string {
	t.Helper()
	return fmt.Sprintf("%x  %s", fileSum(t, filepath.Join(dir, FilePrefix+name)), FilePrefix+name)
}

// writeLock replaces dir's lock file (mode 0644) with lines, atomically, so
// a host restarting a plugin meanwhile never reads half of it.
func writeLock(t *testing.T, dir string, lines ...string) string {
	t.Helper()
	path := filepath.Join(dir, LockFileName)
	require.NoError(t, writeFileAtomic(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	return path
}

// waitLastError waits until plugin name is failed (a restart refused) with
// an error containing want.
func waitLastError(t *testing.T, h *Host, name, want string) PluginInfo {
	t.Helper()
	var p PluginInfo
	require.Eventually(t, func() bool {
		p = info(t, h, name)
		return p.State == StateFailed && strings.Contains(p.LastError, want)
	}, eventually, 10*time.Millisecond, "plugin %s failed with %q", name, want)
	return p
}

func TestLockFileMatchingBinariesStart(t *testing.T) {
	dir := pluginsDir(t, "alpha", "beta")
	alpha := filepath.Join(dir, FilePrefix+"alpha")
	writeChecksum(t, alpha, fileSum(t, alpha)) // a matching .sha256 as well
	writeLock(t, dir, "# plugins of this host", "", lockLine(t, dir, "alpha"), lockLine(t, dir, "beta"))

	h, logs := startHost(t, dir)
	ps := h.Plugins()
	require.Len(t, ps, 2, "the lock file is not a plugin")
	for _, p := range ps {
		assert.Equal(t, StateRunning, p.State, p.Name)
	}
	_, ok := h.Registry().Type("AlphaOne")
	assert.True(t, ok)
	assert.Contains(t, logs.String(), "plugins lock file found")
	assert.NotContains(t, logs.String(), "skipping file", "the lock file is not reported as a skipped file")
}

func TestLockFileMismatchIsRefused(t *testing.T) {
	dir := pluginsDir(t, "alpha", "beta")
	lock := writeLock(t, dir, fmt.Sprintf("%x  %salpha", make([]byte, sha256.Size), FilePrefix), lockLine(t, dir, "beta"))
	assertAlphaRefused(t, dir,
		"checksum mismatch: kds-plugin-alpha has sha256 ",
		"the plugins lock file "+lock+" (line 1) expects 0000",
		"kds-engine plugins lock --plugins-dir "+dir)
}

func TestLockFileUnlistedBinaryIsRefused(t *testing.T) {
	dir := pluginsDir(t, "alpha", "beta")
	lock := writeLock(t, dir, lockLine(t, dir, "beta"))

	h, _ := startHost(t, dir)
	a := info(t, h, "alpha")
	assert.Equal(t, StateFailed, a.State)
	assert.Contains(t, a.LastError, "kds-plugin-alpha is not listed in the plugins lock file "+lock)
	assert.Equal(t, StateRunning, info(t, h, "beta").State)
}

func TestLockFileAndChecksumFileMustBothMatch(t *testing.T) {
	dir := pluginsDir(t, "alpha", "beta")
	alpha := filepath.Join(dir, FilePrefix+"alpha")
	writeLock(t, dir, lockLine(t, dir, "alpha"), lockLine(t, dir, "beta"))
	writeChecksum(t, alpha, make([]byte, sha256.Size))

	h, _ := startHost(t, dir)
	a := info(t, h, "alpha")
	assert.Equal(t, StateFailed, a.State, "a matching lock entry does not excuse a mismatching .sha256")
	assert.Contains(t, a.LastError, "checksum mismatch: kds-plugin-alpha has sha256 ")
	assert.Contains(t, a.LastError, "kds-plugin-alpha.sha256 expects 0000")

	writeChecksum(t, alpha, fileSum(t, alpha))
	writeLock(t, dir, fmt.Sprintf("%x  %salpha", make([]byte, sha256.Size), FilePrefix), lockLine(t, dir, "beta"))
	h, _ = startHost(t, dir)
	a = info(t, h, "alpha")
	assert.Equal(t, StateFailed, a.State, "a matching .sha256 does not excuse a mismatching lock entry")
	assert.Contains(t, a.LastError, "plugins lock file")
}

func TestLockFileIsVerifiedBeforeEveryRestart(t *testing.T) {
	dir := pluginsDir(t, "alpha", "beta")
	alpha := filepath.Join(dir, FilePrefix+"alpha")
	lock := writeLock(t, dir, lockLine(t, dir, "alpha"), lockLine(t, dir, "beta"))
	h, _ := startHost(t, dir, WithRestartBackoff(20*time.Millisecond, 100*time.Millisecond))
	pid := info(t, h, "alpha").PID

	// Swap the binary for another one; the restart must refuse it.
	require.NoError(t, os.Remove(alpha))
	copyFile(t, filepath.Join(binDir, "policies"), alpha, 0o755)
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	a := waitLastError(t, h, "alpha", "checksum mismatch: kds-plugin-alpha has sha256")
	assert.Contains(t, a.LastError, "the plugins lock file "+lock+" (line 1)")

	// The lock file edited to drop the entry: refused as unlisted.
	writeLock(t, dir, lockLine(t, dir, "beta"))
	waitLastError(t, h, "alpha", "kds-plugin-alpha is not listed in the plugins lock file")

	// The lock file removed: one that existed at Start is needed at every restart.
	require.NoError(t, os.Remove(lock))
	waitLastError(t, h, "alpha", "plugins lock file "+lock+" existed when the engine started and is gone")

	// Made group-writable: refused like at Start.
	require.NoError(t, writeFileAtomic(lock, []byte(lockLine(t, dir, "alpha")+"\n"+lockLine(t, dir, "beta")+"\n"), 0o664))
	waitLastError(t, h, "alpha", "writable by group or others")
	assert.Zero(t, info(t, h, "alpha").Restarts)

	// Locked again, the new binary is the operator's choice: it starts.
	require.NoError(t, os.Chmod(lock, 0o644))
	require.Eventually(t, func() bool {
		a := info(t, h, "alpha")
		return a.State == StateRunning && a.Restarts == 1
	}, eventually, 10*time.Millisecond)
	assert.Equal(t, StateRunning, info(t, h, "beta").State)
}

func TestMalformedLockFileFailsStart(t *testing.T) {
	good := strings.Repeat("ab", sha256.Size)
	for name, tc := range map[string]struct{ content, want string }{
		"bad hex":      {"# header\n" + strings.Repeat("g", 64) + "  kds-plugin-alpha\n", `line 2: the digest "gggg`},
		"short digest": {"abc123  kds-plugin-alpha\n", `line 1: the digest "abc123" has 6 characters; want the 64 hex digits of a sha256`},
		"long digest":  {good + "00  kds-plugin-alpha\n", "line 1: the digest"},
		"no name":      {"\n\n" + good + "\n", "line 3: no file name after the digest"},
		"not a plugin": {good + "  README.txt\n", `line 1: "README.txt" is not a plugin binary name; want kds-plugin-NAME`},
		"bare prefix":  {good + "  kds-plugin-\n", `line 1: "kds-plugin-" is not a plugin binary name`},
		"path":         {good + "  /usr/bin/kds-plugin-alpha\n", `line 1: "/usr/bin/kds-plugin-alpha" has a path separator`},
		"relative":     {good + "  sub/kds-plugin-alpha\n", `line 1: "sub/kds-plugin-alpha" has a path separator`},
		"checksum":     {good + "  kds-plugin-alpha.sha256\n", `line 1: "kds-plugin-alpha.sha256" is a checksum file`},
		"twice":        {good + "  kds-plugin-alpha\n# again\n" + good + " *kds-plugin-alpha\n", "line 3: kds-plugin-alpha is listed again (first on line 1)"},
		"escaped":      {`\` + good + "  kds-plugin-a\\nb\n", "line 1: escaped file names"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := pluginsDir(t, "beta")
			path := filepath.Join(dir, LockFileName)
			require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o644))
			log, _ := testLogger(t)
			h := NewHost(dir, log)
			err := h.Start(context.Background())
			require.Error(t, err)
			assert.Contains(t, err.Error(), "plugins lock file "+path+", ")
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), "kds-engine plugins lock --plugins-dir "+dir)
			require.NoError(t, h.Close())
			assert.Empty(t, childPIDs(), "nothing was started")
		})
	}
}

func TestStaleLockEntryIsAWarning(t *testing.T) {
	dir := pluginsDir(t, "alpha", "beta")
	noexec := filepath.Join(dir, FilePrefix+"noexec")
	require.NoError(t, os.WriteFile(noexec, []byte("data"), 0o644))
	writeLock(t, dir, lockLine(t, dir, "alpha"), strings.Repeat("0", 64)+"  kds-plugin-gone", lockLine(t, dir, "beta"), lockLine(t, dir, "noexec"))

	h, logs := startHost(t, dir)
	assert.Equal(t, StateRunning, info(t, h, "alpha").State)
	assert.Equal(t, StateRunning, info(t, h, "beta").State)
	assert.Regexp(t, `\[WARN\] +test\.plugins: plugins lock file entry names no plugin binary in the plugins directory \(missing, or not an executable file\); ignoring the entry: entry=kds-plugin-gone line=2`, logs.String())
	assert.Regexp(t, `ignoring the entry: entry=kds-plugin-noexec line=4`, logs.String())
}

func TestUnsafeLockFileIsRefused(t *testing.T) {
	for _, mode := range []os.FileMode{0o664, 0o646} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := pluginsDir(t, "alpha")
			lock := filepath.Join(dir, LockFileName)
			require.NoError(t, writeFileAtomic(lock, []byte(lockLine(t, dir, "alpha")+"\n"), mode))
			log, _ := testLogger(t)
			h := NewHost(dir, log)
			err := h.Start(context.Background())
			require.ErrorIs(t, err, ErrUnsafePath)
			assert.Contains(t, err.Error(), "plugins lock file: unsafe plugin path: "+lock+" is writable by group or others")
			assert.Contains(t, err.Error(), "chmod go-w "+lock)
			require.NoError(t, h.Close())
			assert.Empty(t, childPIDs(), "nothing was started")
		})
	}
}

func TestWriteLockIsAcceptedByStart(t *testing.T) {
	dir := pluginsDir(t, "beta", "alpha")
	require.NoError(t, os.WriteFile(filepath.Join(dir, FilePrefix+"noexec"), []byte("x"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "README.txt"), []byte("x"), 0o644))
	entries, err := WriteLock(dir)
	require.NoError(t, err)
	assert.Equal(t, []LockEntry{
		{File: "kds-plugin-alpha", SHA256: fmt.Sprintf("%x", fileSum(t, filepath.Join(dir, "kds-plugin-alpha")))},
		{File: "kds-plugin-beta", SHA256: fmt.Sprintf("%x", fileSum(t, filepath.Join(dir, "kds-plugin-beta")))},
	}, entries, "every executable plugin binary, sorted")
	fi, err := os.Stat(filepath.Join(dir, LockFileName))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
	left, err := filepath.Glob(filepath.Join(dir, ".*"))
	require.NoError(t, err)
	assert.Empty(t, left, "no temporary file left")

	c, err := CheckLock(dir)
	require.NoError(t, err)
	assert.Equal(t, LockCheck{Path: filepath.Join(dir, LockFileName), Verified: []string{"kds-plugin-alpha", "kds-plugin-beta"}}, c)

	h, _ := startHost(t, dir)
	assert.Equal(t, StateRunning, info(t, h, "alpha").State)
	assert.Equal(t, StateRunning, info(t, h, "beta").State)
}

func TestWriteLockRefusesUnsafeOrEmptyDirs(t *testing.T) {
	dir := pluginsDir(t, "alpha", "beta")
	require.NoError(t, os.Chmod(filepath.Join(dir, FilePrefix+"alpha"), 0o775))
	_, err := WriteLock(dir)
	require.ErrorIs(t, err, ErrUnsafePath)
	assert.Contains(t, err.Error(), "not locking binaries the engine would refuse to run")
	assert.Contains(t, err.Error(), "kds-plugin-alpha is writable by group or others")
	_, err = os.Stat(filepath.Join(dir, LockFileName))
	assert.ErrorIs(t, err, os.ErrNotExist, "nothing written")

	empty := t.TempDir()
	_, err = WriteLock(empty)
	assert.ErrorContains(t, err, "no plugin binaries (executable kds-plugin-* files) in "+empty+"; nothing to lock")
}
