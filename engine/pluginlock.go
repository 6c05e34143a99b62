package engine

import (
	"github.com/kds-engine/kds-engine/engine/internal/plugin"
)

// PluginLockFile is the name of the lock file in the plugins directory: the
// sha256 of every kds-plugin-* binary there, in sha256sum format. When it
// exists the engine refuses to start a plugin binary it does not list or
// whose digest differs, checked before every start of the plugin;
// docs/plugins.md describes the rules.
const PluginLockFile = plugin.LockFileName

// ErrUnsafePluginPath is wrapped by the errors refusing a plugins
// directory, plugin binary or lock file that users other than the engine's
// (and root) could change; docs/plugins.md describes the rules.
var ErrUnsafePluginPath = plugin.ErrUnsafePath

// CheckPluginsDir checks dir as the engine does before it looks for plugins
// there: it must exist, be a directory and be safe (ErrUnsafePluginPath). A
// missing dir's error says "plugins dir DIR does not exist; " followed by
// how, which tells the user how to name the right one, and wraps
// fs.ErrNotExist.
func CheckPluginsDir(dir, how string) error { return plugin.CheckDir(dir, how) }

// PluginLockEntry is one line of a plugin lock file.
type PluginLockEntry struct {
	File   string // kds-plugin-NAME
	SHA256 string // lower-case hex
}

// WritePluginLock writes the lock file of the plugins directory dir, listing
// every plugin binary the engine would load from it, sorted by file name,
// mode 0644; it replaces an existing lock file atomically. It refuses (and
// writes nothing) when dir is unsafe or holds no plugin binary, or when the
// engine would refuse a binary there as unsafe. It returns what it wrote.
func WritePluginLock(dir string) ([]PluginLockEntry, error) {
	es, err := plugin.WriteLock(dir)
	if err != nil {
		return nil, err
	}
	out := make([]PluginLockEntry, len(es))
	for i, e := range es {
		out[i] = PluginLockEntry{File: e.File, SHA256: e.SHA256}
	}
	return out, nil
}

// PluginLockCheck is what CheckPluginLock found.
type PluginLockCheck struct {
	Path     string   // the lock file
	Verified []string // plugin binaries that pass, sorted
	Refused  []string // why each other plugin binary would be refused
	Stale    []string // entries naming no plugin binary (a warning only)
}

// CheckPluginLock runs against the plugins directory dir the checks the
// engine runs before starting each plugin there (lock file, .sha256 files,
// file safety), without starting anything. It returns an error when dir
// cannot be read or is unsafe, or the lock file is missing, unsafe or
// malformed; otherwise the result lists what passes and what would be
// refused.
func CheckPluginLock(dir string) (PluginLockCheck, error) {
	c, err := plugin.CheckLock(dir)
	if err != nil {
		return PluginLockCheck{}, err
	}
	return PluginLockCheck{Path: c.Path, Verified: c.Verified, Refused: c.Refused, Stale: c.Stale}, nil
}
