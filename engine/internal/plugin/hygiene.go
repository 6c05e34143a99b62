package plugin

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// ErrUnsafePath is returned (wrapped) for a plugins directory, plugin binary
// or lock file that users other than the engine's (and root) could change:
// anyone who can write there can make the engine run their code.
var ErrUnsafePath = errors.New("unsafe plugin path")

// checkSafe resolves symlinks in path and checks the result, and for a file
// also its directory: it must be owned by root or by the engine's user and
// not be writable by group or others.
func checkSafe(path string, isDir bool) error {
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", path, err)
	}
	targets := []string{resolved}
	if !isDir {
		targets = append(targets, filepath.Dir(resolved))
	}
	for _, p := range targets {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("stat %s: %w", p, err)
		}
		if err := checkMode(p, path, fi); err != nil {
			return err
		}
	}
	return nil
}

func checkMode(p, given string, fi fs.FileInfo) error {
	shown := p
	if p != given {
		shown = fmt.Sprintf("%s (reached from %s)", p, given)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%w: %s is writable by group or others (mode %s), so other users could replace what the engine runs; fix with `chmod go-w %s`",
			ErrUnsafePath, shown, fi.Mode().Perm(), p)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if uid := uint32(os.Geteuid()); st.Uid != 0 && st.Uid != uid {
			return fmt.Errorf("%w: %s is owned by uid %d, not by root or the engine's user (uid %d), so that user could replace what the engine runs; fix with `chown %d %s`",
				ErrUnsafePath, shown, st.Uid, uid, uid, p)
		}
	}
	return nil
}
