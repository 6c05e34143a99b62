package plugin

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrUnsafePath is returned (wrapped) for a plugins directory, plugin binary
// or lock file that users other than the engine's (and root) could change,
// or that sits below a directory they could change: anyone who can write
// there can make the engine run their code.
//
// The rules, applied with every symlink followed and to every directory the
// lookup passes through, from / down:
//   - every directory must be owned by root or the engine's user;
//   - a directory must not be writable by group or others, except a
//     directory with the sticky bit (such as /tmp) that does not itself hold
//     the checked file: there others cannot rename or remove what they do
//     not own, so the entry looked up in it (a directory or a symlink) must
//     be owned by root or the engine's user;
//   - the checked file or directory itself must be owned by root or the
//     engine's user and not be writable by group or others, sticky or not.
var ErrUnsafePath = errors.New("unsafe plugin path")

// maxSymlinks bounds the symlinks followed while resolving one path, like
// the kernel's limit, so a loop ends with an error.
const maxSymlinks = 40

// lookup is one directory entry looked up while resolving a path.
type lookup struct {
	dir   string      // the directory searched, symlinks resolved
	entry string      // dir/name
	fi    fs.FileInfo // of entry, not following a symlink
}

// resolve follows path component by component, as the kernel does, and
// returns the resolved path and every lookup on the way, symlink entries
// included. Unlike filepath.EvalSymlinks it reports the directories a
// symlink leads through, which must be as safe as the others.
func resolve(path string) (string, []lookup, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", nil, fmt.Errorf("resolve %s: %w", path, err)
	}
	rest := strings.Split(abs, "/")
	cur := "/"
	var steps []lookup
	links := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur) // cur has no symlinks: its parent is lexical
			continue
		}
		next := filepath.Join(cur, c)
		fi, err := os.Lstat(next)
		if err != nil {
			return "", nil, fmt.Errorf("resolve %s: %w", path, err)
		}
		steps = append(steps, lookup{dir: cur, entry: next, fi: fi})
		if fi.Mode()&fs.ModeSymlink != 0 {
			if links++; links > maxSymlinks {
				return "", nil, fmt.Errorf("resolve %s: more than %d symlinks", path, maxSymlinks)
			}
			target, err := os.Readlink(next)
			if err != nil {
				return "", nil, fmt.Errorf("resolve %s: %w", path, err)
			}
			if filepath.IsAbs(target) {
				cur = "/"
			}
			rest = append(strings.Split(target, "/"), rest...)
			continue
		}
		if len(rest) > 0 && !fi.IsDir() && hasName(rest) {
			return "", nil, fmt.Errorf("resolve %s: %s is not a directory", path, next)
		}
		cur = next
	}
	return cur, steps, nil
}

// hasName reports whether components holds more than "" and ".".
func hasName(components []string) bool {
	for _, c := range components {
		if c != "" && c != "." {
			return true
		}
	}
	return false
}

// checkSafe checks path (a directory when isDir, a file otherwise) and
// every directory its lookup passes through by the rules of ErrUnsafePath,
// and returns the resolved path and the resolved file's or directory's
// FileInfo (not following symlinks: it is the object itself).
func checkSafe(path string, isDir bool) (string, fs.FileInfo, error) {
	resolved, steps, err := resolve(path)
	if err != nil {
		return "", nil, err
	}
	var final fs.FileInfo
	if len(steps) > 0 {
		final = steps[len(steps)-1].fi
	} else if final, err = os.Lstat(resolved); err != nil { // path is /
		return "", nil, fmt.Errorf("stat %s: %w", resolved, err)
	}
	// holder is the directory that holds the checked file: no sticky-bit
	// exception there.
	holder := ""
	if !isDir && len(steps) > 0 {
		holder = steps[len(steps)-1].dir
	}
	checked := map[string]fs.FileInfo{}
	for _, s := range steps {
		dfi, ok := checked[s.dir]
		if !ok {
			if dfi, err = os.Lstat(s.dir); err != nil {
				return "", nil, fmt.Errorf("stat %s: %w", s.dir, err)
			}
			if !dfi.IsDir() {
				return "", nil, fmt.Errorf("%w: %s, a directory on the way to %s, changed while it was checked", ErrUnsafePath, s.dir, path)
			}
			if err := checkOwner(s.dir, path, dfi); err != nil {
				return "", nil, err
			}
			checked[s.dir] = dfi
		}
		if !groupOrOtherWritable(dfi) {
			continue
		}
		if dfi.Mode()&fs.ModeSticky == 0 || s.dir == holder {
			return "", nil, writableErr(s.dir, path, dfi)
		}
		// A sticky directory: what is looked up in it must not be owned by
		// someone else, who could then remove and replace it.
		if uid, ok := owner(s.fi); ok && !trustedUID(uid) {
			return "", nil, fmt.Errorf("%w: %s is in %s, which others can write to (mode %s), and is owned by uid %d, not by root or the engine's user (uid %d), so that user could replace it; move the plugins out of %s or fix with `chown %d %s`",
				ErrUnsafePath, describe(s.entry, path), s.dir, dfi.Mode(), uid, os.Geteuid(), s.dir, os.Geteuid(), s.entry)
		}
	}
	switch {
	case isDir && !final.IsDir():
		return "", nil, fmt.Errorf("%s is not a directory", describe(resolved, path))
	case !isDir && !final.Mode().IsRegular():
		return "", nil, fmt.Errorf("%s is not a regular file", describe(resolved, path))
	}
	if err := checkMode(resolved, path, final); err != nil {
		return "", nil, err
	}
	return resolved, final, nil
}

// openChecked checks path with checkSafe, opens the resolved file (refusing
// a symlink put there since), and checks that the open file is the one
// checked and, through the descriptor, still safe. What the caller reads
// from the file, or executes through it, is then the file that passed.
func openChecked(path string) (*os.File, error) {
	resolved, fi, err := checkSafe(path, false)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(resolved, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", resolved, err)
	}
	ofi, err := f.Stat()
	if err == nil && !os.SameFile(fi, ofi) {
		err = fmt.Errorf("%w: %s was replaced while it was checked; the next attempt checks it again", ErrUnsafePath, describe(resolved, path))
	}
	if err == nil && !ofi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", describe(resolved, path))
	}
	if err == nil {
		err = checkMode(resolved, path, ofi)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// checkMode checks a file or directory itself: owned by root or the
// engine's user, not writable by group or others.
func checkMode(p, given string, fi fs.FileInfo) error {
	if groupOrOtherWritable(fi) {
		return writableErr(p, given, fi)
	}
	return checkOwner(p, given, fi)
}

func checkOwner(p, given string, fi fs.FileInfo) error {
	if uid, ok := owner(fi); ok && !trustedUID(uid) {
		euid := os.Geteuid()
		return fmt.Errorf("%w: %s is owned by uid %d, not by root or the engine's user (uid %d), so that user could replace what the engine runs; fix with `chown %d %s`",
			ErrUnsafePath, describe(p, given), uid, euid, euid, p)
	}
	return nil
}

func writableErr(p, given string, fi fs.FileInfo) error {
	return fmt.Errorf("%w: %s is writable by group or others (mode %s), so other users could replace what the engine runs; fix with `chmod go-w %s`",
		ErrUnsafePath, describe(p, given), fi.Mode(), p)
}

// describe names p for an error about the check of given.
func describe(p, given string) string {
	switch {
	case p == given:
		return p
	case strings.HasPrefix(given, p+"/") || p == "/":
		return fmt.Sprintf("%s (a directory on the way to %s)", p, given)
	default:
		return fmt.Sprintf("%s (reached from %s)", p, given)
	}
}

func groupOrOtherWritable(fi fs.FileInfo) bool { return fi.Mode().Perm()&0o022 != 0 }

// owner returns the owner's uid, if the system reports one.
func owner(fi fs.FileInfo) (uint32, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Uid, true
}

// trustedUID reports whether uid is root or the engine's effective user.
func trustedUID(uid uint32) bool { return uid == 0 || uid == uint32(os.Geteuid()) }
