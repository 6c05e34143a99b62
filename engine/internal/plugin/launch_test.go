package plugin

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	pluginv1 "github.com/kds-engine/kds-engine/sdk/proto/plugin/v1"
)

// otherUID owns files "another user" made in the tests that need root.
const otherUID = 65534

// runLog makes every test plugin started from now on append "NAME PID" to
// a file, and returns a function counting the starts of plugin name.
func runLog(t *testing.T) func(name string) int {
	t.Helper()
	path := filepath.Join(t.TempDir(), "runs")
	t.Setenv("KDS_TESTPLUGIN_RUNLOG", path)
	return func(name string) int {
		b, err := os.ReadFile(path)
		if os.IsNotExist(err) {
			return 0
		}
		require.NoError(t, err)
		n := 0
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, name+" ") {
				n++
			}
		}
		return n
	}
}

// replaceFile puts a copy of src at dst the way an attacker would: written
// next to it and renamed over it, owned by uid (when >= 0).
func replaceFile(t *testing.T, src, dst string, uid int) {
	t.Helper()
	tmp := dst + ".new"
	copyFile(t, src, tmp, 0o755)
	if uid >= 0 {
		require.NoError(t, os.Chown(tmp, uid, uid))
	}
	require.NoError(t, os.Rename(tmp, dst))
}

// tamperedTestPlugin returns a copy of the test plugin binary with bytes
// appended: it runs exactly like the original but hashes differently.
func tamperedTestPlugin(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tampered")
	copyFile(t, filepath.Join(binDir, "testplugin"), p, 0o755)
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("tampered")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return p
}

func isRoot() bool { return os.Geteuid() == 0 }

// assertStaysDown checks that writes of alpha's types fail with the
// plugin-down error, naming the refusal.
func assertStaysDown(t *testing.T, h *Host, want string) {
	t.Helper()
	err := h.Validate(context.Background(), []*resource.Resource{res("AlphaOne", "m", "a", `{}`)})
	require.ErrorIs(t, err, ErrPluginDown)
	assert.Contains(t, err.Error(), `plugin "alpha" (failed, last error: restart refused, nothing was run: `)
	assert.Contains(t, err.Error(), want)
	assert.Zero(t, info(t, h, "alpha").PID)
}

func TestFaultBinaryReplacedInWritableDirIsRefusedAtRestart(t *testing.T) {
	runs := runLog(t)
	dir := pluginsDir(t, "alpha", "beta")
	alpha := filepath.Join(dir, FilePrefix+"alpha")
	h, _ := startHost(t, dir, WithRestartBackoff(20*time.Millisecond, 100*time.Millisecond))
	require.Equal(t, 1, runs("alpha"))
	pid := info(t, h, "alpha").PID

	// The plugins directory is made writable, another user replaces the
	// binary (a working plugin, so a restart that ran it would succeed),
	// and the plugin dies.
	require.NoError(t, os.Chmod(dir, 0o777))
	uid := -1
	if isRoot() {
		uid = otherUID
	}
	replaceFile(t, tamperedTestPlugin(t), alpha, uid)
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))

	a := waitLastError(t, h, "alpha", "plugins dir: unsafe plugin path: "+dir+" is writable by group or others")
	assert.Contains(t, a.LastError, "fix with `chmod go-w "+dir+"`")
	assert.Zero(t, a.Restarts)
	assertStaysDown(t, h, "writable by group or others")
	assert.Equal(t, StateRunning, info(t, h, "beta").State, "other plugins are not affected")

	if isRoot() {
		// The directory fixed, the replacement is still another user's.
		require.NoError(t, os.Chmod(dir, 0o755))
		a = waitLastError(t, h, "alpha", alpha+" is owned by uid 65534, not by root or the engine's user")
		assert.Zero(t, a.Restarts)
	}
	assert.Equal(t, 1, runs("alpha"), "the replacement never ran")
}

func TestFaultSymlinkTargetDirMadeWritableIsRefusedAtRestart(t *testing.T) {
	runs := runLog(t)
	dir := pluginsDir(t)
	elsewhere := t.TempDir()
	target := filepath.Join(elsewhere, "alpha-binary")
	copyFile(t, filepath.Join(binDir, "testplugin"), target, 0o755)
	link := filepath.Join(dir, FilePrefix+"alpha")
	require.NoError(t, os.Symlink(target, link))
	h, _ := startHost(t, dir, WithRestartBackoff(20*time.Millisecond, 100*time.Millisecond))
	require.Equal(t, StateRunning, info(t, h, "alpha").State)

	require.NoError(t, os.Chmod(elsewhere, 0o777))
	replaceFile(t, tamperedTestPlugin(t), target, -1)
	require.NoError(t, syscall.Kill(info(t, h, "alpha").PID, syscall.SIGKILL))

	a := waitLastError(t, h, "alpha", elsewhere+" (reached from "+link+") is writable by group or others")
	assert.Contains(t, a.LastError, "fix with `chmod go-w "+elsewhere+"`")
	assertStaysDown(t, h, elsewhere)
	assert.Equal(t, 1, runs("alpha"), "the replacement never ran")
}

// TestLaunchExecutesTheHashedFile swaps another plugin binary in at the
// binary's path after the launch has checked and hashed it and before it
// executes it: the plugin that runs must be the one that was hashed.
func TestLaunchExecutesTheHashedFile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		launch int32 // the launch of alpha whose path is swapped
		mode   execMode
	}{
		{"first start", 1, execFD},
		{"restart", 2, execFD},
		{"first start, private copy", 1, execCopy},
		{"restart, private copy", 2, execCopy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := pluginsDir(t, "alpha")
			alpha := filepath.Join(dir, FilePrefix+"alpha")
			writeLock(t, dir, lockLine(t, dir, "alpha"))
			other := filepath.Join(dir, ".other")
			copyFile(t, filepath.Join(binDir, "policies"), other, 0o755)
			var launches, swapped atomic.Int32
			swapErr := make(chan error, 1)
			log, logs := testLogger(t)
			h := NewHost(dir, log, WithRestartBackoff(20*time.Millisecond, 100*time.Millisecond))
			h.execMode = tc.mode
			h.beforeExec = func(path string) {
				if path == alpha && launches.Add(1) == tc.launch {
					swapErr <- os.Rename(other, alpha)
					swapped.Add(1)
				}
			}
			t.Cleanup(func() { require.NoError(t, h.Close()) })
			require.NoError(t, h.Start(context.Background()))
			if tc.launch == 2 {
				require.NoError(t, syscall.Kill(info(t, h, "alpha").PID, syscall.SIGKILL))
				require.Eventually(t, func() bool { return info(t, h, "alpha").Restarts == 1 }, eventually, 10*time.Millisecond)
			}
			require.EqualValues(t, 1, swapped.Load(), "the path was swapped")
			require.NoError(t, <-swapErr)
			require.NotEqual(t, fileSum(t, filepath.Join(binDir, "testplugin")), fileSum(t, alpha), "the path now holds another binary")

			a := info(t, h, "alpha")
			assert.Equal(t, StateRunning, a.State)
			assert.Equal(t, "9.9.9", a.Version, "the hashed plugin runs, not the one swapped in")
			assert.Equal(t, []string{"AlphaOne", "AlphaTwo"}, a.Types)
			assert.NotContains(t, logs.String(), "plugin reports a different name")
			assert.NotContains(t, logs.String(), "plugin restarted with different types")
			ve := validationErr(t, h.Validate(context.Background(), []*resource.Resource{res("AlphaOne", "m", "a", `{"bad":true}`)}))
			assert.Equal(t, "spec.bad", ve.Invalid[0].Errors[0].Field, "validated by alpha")
		})
	}
}

func TestLaunchRefusesAnotherUsersFilesAtRestart(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root to give files to another user")
	}
	for name, chown := range map[string]func(dir, bin string) (path string){
		"binary": func(_, bin string) string { return bin },
		// The plugins directory sits in a directory of another user.
		"directory on the way": func(dir, _ string) string { return filepath.Dir(dir) },
	} {
		t.Run(name, func(t *testing.T) {
			runs := runLog(t)
			base := t.TempDir()
			dir := filepath.Join(base, "plugins")
			require.NoError(t, os.Mkdir(dir, 0o755))
			bin := filepath.Join(dir, FilePrefix+"alpha")
			copyFile(t, filepath.Join(binDir, "testplugin"), bin, 0o755)
			h, _ := startHost(t, dir, WithRestartBackoff(20*time.Millisecond, 100*time.Millisecond))
			p := chown(dir, bin)
			require.NoError(t, os.Chown(p, otherUID, otherUID))
			require.NoError(t, syscall.Kill(info(t, h, "alpha").PID, syscall.SIGKILL))
			a := waitLastError(t, h, "alpha", " is owned by uid 65534, not by root or the engine's user (uid 0)")
			assert.Contains(t, a.LastError, p)
			assert.Contains(t, a.LastError, "fix with `chown 0 "+p+"`")
			assertStaysDown(t, h, "owned by uid 65534")
			assert.Equal(t, 1, runs("alpha"))

			// Given back, the next check passes and the plugin runs again.
			require.NoError(t, os.Chown(p, 0, 0))
			require.Eventually(t, func() bool { return info(t, h, "alpha").State == StateRunning }, eventually, 10*time.Millisecond)
			assert.Equal(t, 2, runs("alpha"))
		})
	}
}

func TestLaunchStickyDirectories(t *testing.T) {
	setup := func(t *testing.T, mode os.FileMode) (base, dir string) {
		base = filepath.Join(t.TempDir(), "shared")
		require.NoError(t, os.Mkdir(base, 0o755))
		require.NoError(t, os.Chmod(base, mode))
		dir = filepath.Join(base, "plugins")
		require.NoError(t, os.Mkdir(dir, 0o755))
		copyFile(t, filepath.Join(binDir, "testplugin"), filepath.Join(dir, FilePrefix+"alpha"), 0o755)
		return base, dir
	}
	startErr := func(t *testing.T, dir string) error {
		log, _ := testLogger(t)
		h := NewHost(dir, log)
		defer func() { require.NoError(t, h.Close()) }()
		return h.Start(context.Background())
	}

	t.Run("sticky and world-writable above the plugins dir is safe", func(t *testing.T) {
		_, dir := setup(t, 0o777|os.ModeSticky)
		h, _ := startHost(t, dir)
		assert.Equal(t, StateRunning, info(t, h, "alpha").State)
	})
	t.Run("world-writable without the sticky bit is not", func(t *testing.T) {
		base, dir := setup(t, 0o777)
		err := startErr(t, dir)
		require.ErrorIs(t, err, ErrUnsafePath)
		assert.Contains(t, err.Error(), base+" (a directory on the way to "+dir+") is writable by group or others")
	})
	t.Run("sticky does not excuse the directory holding the binary", func(t *testing.T) {
		dir := pluginsDir(t)
		elsewhere := t.TempDir()
		require.NoError(t, os.Chmod(elsewhere, 0o777|os.ModeSticky))
		target := filepath.Join(elsewhere, "alpha-binary")
		copyFile(t, filepath.Join(binDir, "testplugin"), target, 0o755)
		require.NoError(t, os.Symlink(target, filepath.Join(dir, FilePrefix+"alpha")))
		h, logs := startHost(t, dir)
		assert.Empty(t, h.Plugins(), "refused")
		assert.Contains(t, logs.String(), elsewhere+" (reached from ")
	})
	t.Run("another user's entry in a sticky directory is not", func(t *testing.T) {
		if !isRoot() {
			t.Skip("needs root to give files to another user")
		}
		base, dir := setup(t, 0o777|os.ModeSticky)
		require.NoError(t, os.Chown(dir, otherUID, otherUID))
		err := startErr(t, dir)
		require.ErrorIs(t, err, ErrUnsafePath)
		assert.Contains(t, err.Error(), dir+" is in "+base+", which others can write to")
		assert.Contains(t, err.Error(), "is owned by uid 65534")

		// A symlink another user made there is refused the same way.
		require.NoError(t, os.Chown(dir, 0, 0))
		link := filepath.Join(base, "link")
		require.NoError(t, os.Symlink(dir, link))
		require.NoError(t, os.Lchown(link, otherUID, otherUID))
		err = startErr(t, link)
		require.ErrorIs(t, err, ErrUnsafePath)
		assert.Contains(t, err.Error(), link+" is in "+base+", which others can write to")
	})
}

func TestLaunchRefusesScripts(t *testing.T) {
	dir := pluginsDir(t, "beta")
	require.NoError(t, os.WriteFile(filepath.Join(dir, FilePrefix+"alpha"), []byte("#!/bin/sh\nexit 0\n"), 0o755))
	h, _ := startHost(t, dir)
	a := info(t, h, "alpha")
	assert.Equal(t, StateFailed, a.State)
	assert.Contains(t, a.LastError, "is a script (it starts with #!)")
}

func TestLaunchPrivateCopyIsRemoved(t *testing.T) {
	log, _ := testLogger(t)
	h := NewHost(pluginsDir(t, "alpha"), log)
	h.execMode = execCopy
	require.NoError(t, h.Start(context.Background()))
	require.Equal(t, StateRunning, info(t, h, "alpha").State)
	copies := h.copyPath
	require.NotEmpty(t, copies)
	fi, err := os.Stat(copies)
	require.NoError(t, err)
	assert.Equal(t, os.ModeDir|0o700, fi.Mode(), "private to the engine's user")
	left, err := os.ReadDir(copies)
	require.NoError(t, err)
	assert.Empty(t, left, "a copy is removed once its process runs")
	require.NoError(t, h.Close())
	_, err = os.Stat(copies)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// TestLaunchPluginConnectionIsMutualTLS dials a running plugin's address
// without a certificate: with AutoMTLS the plugin refuses; the same call
// to a plugin started without it succeeds.
func TestLaunchPluginConnectionIsMutualTLS(t *testing.T) {
	describe := func(h *Host) error {
		m := h.byName["alpha"]
		inst, err := m.current()
		require.NoError(t, err)
		rc := inst.client.ReattachConfig()
		require.NotNil(t, rc)
		cc, err := grpc.NewClient("passthrough:///"+rc.Addr.String(),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, rc.Addr.Network(), rc.Addr.String())
			}))
		require.NoError(t, err)
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = pluginv1.NewPluginClient(cc).Describe(ctx, &pluginv1.DescribeRequest{})
		return err
	}

	h, _ := startHost(t, pluginsDir(t, "alpha"))
	assert.Error(t, describe(h), "a client without the engine's certificate is refused")

	log, _ := testLogger(t)
	plain := NewHost(pluginsDir(t, "alpha"), log)
	plain.plainConn = true
	t.Cleanup(func() { require.NoError(t, plain.Close()) })
	require.NoError(t, plain.Start(context.Background()))
	assert.NoError(t, describe(plain), "the control: without AutoMTLS the same call works")
}

func TestLaunchResolveReportsEveryDirectoryOnTheWay(t *testing.T) {
	base, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	for _, d := range []string{"a/b", "c/d"} {
		require.NoError(t, os.MkdirAll(filepath.Join(base, d), 0o755))
	}
	file := filepath.Join(base, "c/d/file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	require.NoError(t, os.Symlink("../../c/d", filepath.Join(base, "a/b/rel")))                       // relative
	require.NoError(t, os.Symlink(filepath.Join(base, "a/b/rel/file"), filepath.Join(base, "a/abs"))) // absolute, through rel
	require.NoError(t, os.Symlink("loop2", filepath.Join(base, "loop1")))
	require.NoError(t, os.Symlink("loop1", filepath.Join(base, "loop2")))

	got, steps, err := resolve(filepath.Join(base, "a/abs"))
	require.NoError(t, err)
	assert.Equal(t, file, got)
	var dirs []string
	for _, s := range steps {
		dirs = append(dirs, s.dir)
	}
	assert.Subset(t, dirs, []string{"/", base, filepath.Join(base, "a"), filepath.Join(base, "a/b"), filepath.Join(base, "c"), filepath.Join(base, "c/d")},
		"every directory searched, those behind the links included")

	got, _, err = resolve(filepath.Join(base, "a/b/../b/rel/./file"))
	require.NoError(t, err)
	assert.Equal(t, file, got)

	_, _, err = resolve(filepath.Join(base, "loop1"))
	assert.ErrorContains(t, err, "more than 40 symlinks")
	_, _, err = resolve(filepath.Join(file, "x"))
	assert.ErrorContains(t, err, "is not a directory")
}
