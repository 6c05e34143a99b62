package plugin

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A plugins dir that does not exist (a typo, or plugins not built yet) is
// named as missing, with the setting that names it.
func TestMissingPluginsDirSaysSo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "plugins")
	log, _ := testLogger(t)
	h := NewHost(dir, log)
	err := h.Start(context.Background())
	require.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), "plugins dir "+dir+" does not exist; set --plugins-dir")
	require.NoError(t, h.Close())
}

func TestWorldWritablePluginsDirIsRefused(t *testing.T) {
	dir := pluginsDir(t, "alpha")
	require.NoError(t, os.Chmod(dir, 0o777))
	log, _ := testLogger(t)
	h := NewHost(dir, log)
	err := h.Start(context.Background())
	require.ErrorIs(t, err, ErrUnsafePath)
	assert.Contains(t, err.Error(), "writable by group or others")
	assert.Contains(t, err.Error(), "chmod go-w "+dir)
	require.NoError(t, h.Close())
	assert.Empty(t, childPIDs(), "nothing was started")
}

func TestGroupWritablePluginBinaryIsSkipped(t *testing.T) {
	dir := pluginsDir(t, "alpha", "beta")
	alpha := filepath.Join(dir, FilePrefix+"alpha")
	require.NoError(t, os.Chmod(alpha, 0o775))
	h, logs := startHost(t, dir)
	_, ok := h.Registry().Type("AlphaOne")
	assert.False(t, ok, "the unsafe plugin's types are not registered")
	_, ok = h.Registry().Type("BetaThing")
	assert.True(t, ok, "the other plugin loads")
	assert.Contains(t, logs.String(), "refusing to load plugin")
	assert.Contains(t, logs.String(), "chmod go-w")
}

func TestSymlinkedPluginIsCheckedAtItsTarget(t *testing.T) {
	dir := pluginsDir(t, "beta")
	elsewhere := t.TempDir()
	require.NoError(t, os.Chmod(elsewhere, 0o777)) // the target's directory is unsafe
	src := filepath.Join(pluginsDir(t, "alpha"), FilePrefix+"alpha")
	target := filepath.Join(elsewhere, "alpha-binary")
	raw, err := os.ReadFile(src)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(target, raw, 0o755))
	require.NoError(t, os.Symlink(target, filepath.Join(dir, FilePrefix+"alpha")))

	h, logs := startHost(t, dir)
	_, ok := h.Registry().Type("AlphaOne")
	assert.False(t, ok, "a symlink to a binary in a world-writable directory is refused")
	assert.Contains(t, logs.String(), "reached from")

	// The same link to a safe place loads.
	require.NoError(t, os.Chmod(elsewhere, 0o755))
	h2, _ := startHost(t, dir)
	_, ok = h2.Registry().Type("AlphaOne")
	assert.True(t, ok)
}
