package e2e

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/apitypes"
)

// copyPlugins copies the built plugins into a directory of the test's own
// (mode 0700, like every private plugins dir) and returns it.
func copyPlugins(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"kds-plugin-policies", "kds-plugin-dataplanes"} {
		copyExecutable(t, filepath.Join(pluginsDir, name), filepath.Join(dir, name))
	}
	return dir
}

func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
}

// TestPluginsLock: the lock file `plugins lock` writes is the one global
// enforces: the locked plugins run, a binary added afterwards is refused
// (global runs without it) and `plugins lock --check` names it; a malformed
// lock file stops global with exit 2 and the line.
func TestPluginsLock(t *testing.T) {
	dir := copyPlugins(t)
	r := mustCLI(t, "plugins", "lock", "--plugins-dir", dir)
	assert.Regexp(t, `^[0-9a-f]{64}  kds-plugin-dataplanes\n[0-9a-f]{64}  kds-plugin-policies\n$`, r.stdout)

	// Added after locking: a second copy of policies, which would also
	// stop global with a duplicate type if it were started.
	copyExecutable(t, filepath.Join(pluginsDir, "kds-plugin-policies"), filepath.Join(dir, "kds-plugin-extra"))
	r = cli(t, "plugins", "lock", "--check", "--plugins-dir", dir)
	assert.Equal(t, 2, r.code, "%s", r)
	assert.Contains(t, r.stderr, "kds-plugin-extra is not listed in the plugins lock file "+filepath.Join(dir, "kds-plugins.lock"))

	g := &node{name: "global", dataDir: t.TempDir()}
	g.args = []string{"global", "--data-dir", g.dataDir, "--plugins-dir", dir, "--insecure"}
	(&cluster{}).start(t, g, true)
	var info apitypes.PluginsInfo
	require.NoError(t, json.Unmarshal([]byte(mustCLI(t, "plugins", "list", "-o", "json", "--api", g.api()).stdout), &info))
	states := map[string]apitypes.PluginInfo{}
	for _, p := range info.Plugins {
		states[p.Name] = p
	}
	assert.Equal(t, apitypes.PluginRunning, states["policies"].State)
	assert.Equal(t, apitypes.PluginRunning, states["dataplanes"].State)
	assert.Equal(t, apitypes.PluginFailed, states["extra"].State)
	assert.Contains(t, states["extra"].LastError, "kds-plugin-extra is not listed in the plugins lock file")

	// A malformed lock file: global does not start.
	require.NoError(t, os.Remove(filepath.Join(dir, "kds-plugin-extra")))
	lock := filepath.Join(dir, "kds-plugins.lock")
	f, err := os.OpenFile(lock, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("not-a-digest  kds-plugin-policies\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	p := startProc(t, "global-malformed-lock", "global", "--data-dir", t.TempDir(), "--plugins-dir", dir, "--insecure",
		"--api-addr", addr(freePort(t)), "--kds-addr", addr(freePort(t)))
	assert.Equal(t, 2, p.wait(t, eventually), p.stderr.String())
	assert.Contains(t, p.stderr.String(), "plugins lock file "+lock+", line 5: the digest \"not-a-digest\"")
}
