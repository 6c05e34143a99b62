package plugin

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// LockFileName is the plugins directory's lock file. It is in sha256sum
// format: one "<64 hex digits>  kds-plugin-NAME" line per plugin binary
// (a '*' before the name is accepted), blank lines and lines starting with
// '#' ignored.
//
// When it exists, the host enforces it at Start and before every restart:
//   - a plugin binary it does not list is refused, like a checksum mismatch
//     (the plugin fails to load; Start fails only if the plugin is required);
//   - a listed binary whose sha256 differs is refused the same way;
//   - an entry naming no plugin binary of the directory is logged as a
//     warning at Start and otherwise ignored;
//   - a malformed file (a digest that is not 64 hex digits, no name, a name
//     that is not kds-plugin-NAME or has a path separator, a name listed
//     twice) fails Start, naming the line;
//   - the file must pass the safety checks of the binaries (ErrUnsafePath:
//     owned by root or the engine's user, not writable by group or others,
//     and so every directory above it), or Start fails;
//   - a kds-plugin-NAME.sha256 next to a binary is checked as well: both
//     must match.
//
// The file is read again before every restart, so a binary swapped or the
// file edited while the engine runs is caught then; a lock file present at
// Start that is gone at a restart refuses the restart. A refused restart
// leaves the plugin StateFailed until a later check passes.
const LockFileName = "kds-plugins.lock"

// LockEntry is one plugin binary of a lock file.
type LockEntry struct {
	File   string // kds-plugin-NAME
	SHA256 string // lower-case hex
}

// lockFile is a parsed lock file.
type lockFile struct {
	path    string
	entries map[string]lockEntry // by file name
}

type lockEntry struct {
	sum  []byte
	line int
}

// loadLock reads the lock file of dir: nil and no error when there is none.
// An unsafe or malformed file is an error.
func loadLock(dir string) (*lockFile, error) {
	path := filepath.Join(dir, LockFileName)
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("plugins lock file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("plugins lock file %s is not a regular file; remove it or write it with `kds-engine plugins lock --plugins-dir %s`", path, dir)
	}
	f, err := openChecked(path)
	if err != nil {
		return nil, fmt.Errorf("plugins lock file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("plugins lock file: %w", err)
	}
	return parseLock(path, b)
}

// parseLock parses the lock file at path from b, reporting every bad line.
func parseLock(path string, b []byte) (*lockFile, error) {
	lf := &lockFile{path: path, entries: map[string]lockEntry{}}
	var errs []error
	bad := func(n int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("plugins lock file %s, line %d: %s", path, n, fmt.Sprintf(format, args...)))
	}
	for i, line := range strings.Split(string(b), "\n") {
		n := i + 1
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		digest, rest := line, ""
		if sp := strings.IndexAny(line, " \t"); sp >= 0 {
			digest, rest = line[:sp], line[sp+1:]
		}
		if strings.HasPrefix(digest, `\`) {
			bad(n, "escaped file names (a line starting with \\) are not supported; plugin binaries are named kds-plugin-NAME")
			continue
		}
		sum, err := hex.DecodeString(digest)
		switch {
		case len(digest) != 2*sha256.Size:
			bad(n, "the digest %q has %d characters; want the 64 hex digits of a sha256", short(digest), len(digest))
			continue
		case err != nil:
			bad(n, "the digest %q is not hexadecimal; want the 64 hex digits of a sha256", short(digest))
			continue
		}
		name := strings.TrimPrefix(strings.TrimSpace(rest), "*")
		switch {
		case name == "":
			bad(n, "no file name after the digest; want \"<sha256>  kds-plugin-NAME\"")
			continue
		case strings.Contains(name, "/"):
			bad(n, "%q has a path separator; list the bare file name of a binary in the plugins directory", name)
			continue
		case !strings.HasPrefix(name, FilePrefix) || name == FilePrefix:
			bad(n, "%q is not a plugin binary name; want %sNAME", name, FilePrefix)
			continue
		case strings.HasSuffix(name, ChecksumSuffix):
			bad(n, "%q is a checksum file, not a plugin binary", name)
			continue
		}
		if prev, dup := lf.entries[name]; dup {
			bad(n, "%s is listed again (first on line %d); list each binary once", name, prev.line)
			continue
		}
		lf.entries[name] = lockEntry{sum: sum, line: n}
	}
	if len(errs) > 0 {
		dir := filepath.Dir(path)
		errs = append(errs, fmt.Errorf("fix the lines above, or write the file again from the binaries in %s with `kds-engine plugins lock --plugins-dir %s`", dir, dir))
		return nil, errors.Join(errs...)
	}
	return lf, nil
}

// short keeps a bad digest readable in an error message.
func short(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

// expect returns the lock file's digest for the binary at path, or an
// error when the binary is not listed.
func (lf *lockFile) expect(path string) (lockEntry, error) {
	name := filepath.Base(path)
	e, ok := lf.entries[name]
	if !ok {
		dir := filepath.Dir(lf.path)
		return lockEntry{}, fmt.Errorf("%s is not listed in the plugins lock file %s, which must list every plugin binary in %s; if you trust the binary, add it with `kds-engine plugins lock --plugins-dir %s`, otherwise remove it",
			name, lf.path, dir, dir)
	}
	return e, nil
}

// stale returns, sorted, the entries naming no binary in bins.
func (lf *lockFile) stale(bins []binary) []string {
	have := map[string]bool{}
	for _, b := range bins {
		have[filepath.Base(b.path)] = true
	}
	var out []string
	for name := range lf.entries {
		if !have[name] {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// verifyBinary runs on the binary at path what a launch runs before it
// executes it: it opens it after the safety checks (openChecked), refuses a
// script and verifies the open file with verifyDigest. CheckLock reports
// it.
func verifyBinary(path string, lock *lockFile) error {
	f, err := openChecked(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := refuseScript(f, path); err != nil {
		return err
	}
	return verifyDigest(path, lock, func() ([]byte, error) { return hashReader(f) })
}

// verifyDigest compares digest(), the sha256 of what runs for the binary at
// path, with its entry in lock (unless lock is nil) and with path.sha256
// (when that file exists): every one present must match, and a lock file
// must list the binary. digest is called only when one of them applies.
func verifyDigest(path string, lock *lockFile, digest func() ([]byte, error)) error {
	type want struct {
		sum  []byte
		from string // names where the digest came from
		hint string
	}
	var wants []want
	if lock != nil {
		e, err := lock.expect(path)
		if err != nil {
			return err
		}
		dir := filepath.Dir(lock.path)
		wants = append(wants, want{e.sum, fmt.Sprintf("the plugins lock file %s (line %d)", lock.path, e.line),
			fmt.Sprintf("; if you installed this binary on purpose, update the lock file with `kds-engine plugins lock --plugins-dir %s`", dir)})
	}
	sum, sumPath, err := readChecksumFile(path)
	if err != nil {
		return err
	}
	if sum != nil {
		wants = append(wants, want{sum, filepath.Base(sumPath), ""})
	}
	if len(wants) == 0 {
		return nil
	}
	got, err := digest()
	if err != nil {
		return err
	}
	for _, w := range wants {
		if !bytes.Equal(got, w.sum) {
			return fmt.Errorf("checksum mismatch: %s has sha256 %x, %s expects %x%s", filepath.Base(path), got, w.from, w.sum, w.hint)
		}
	}
	return nil
}

// readChecksumFile returns the digest in path.sha256 and that file's path;
// a nil digest when there is no such file.
func readChecksumFile(path string) ([]byte, string, error) {
	sumPath := path + ChecksumSuffix
	b, err := os.ReadFile(sumPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, sumPath, nil
	}
	if err != nil {
		return nil, sumPath, fmt.Errorf("read checksum: %w", err)
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return nil, sumPath, fmt.Errorf("checksum file %s is empty", sumPath)
	}
	want, err := hex.DecodeString(fields[0])
	if err != nil || len(want) != sha256.Size {
		return nil, sumPath, fmt.Errorf("checksum file %s: first field is not a sha256 hex digest", sumPath)
	}
	if len(fields) > 1 {
		if named := strings.TrimPrefix(fields[1], "*"); filepath.Base(named) != filepath.Base(path) {
			return nil, sumPath, fmt.Errorf("checksum file %s names %q, not %q", sumPath, named, filepath.Base(path))
		}
	}
	return want, sumPath, nil
}

// hashFile opens the file at path after the safety checks (openChecked)
// and hashes that open file.
func hashFile(path string) ([]byte, error) {
	f, err := openChecked(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return hashReader(f)
}

// WriteLock hashes every plugin binary in dir (the files Start would load)
// and replaces dir's lock file with their digests, sorted by file name,
// mode 0644. The file is written to a temporary file in dir and renamed
// over the old one, so the host never reads a partial lock file. It refuses
// (and writes nothing) when dir is unsafe, holds no plugin binary, or holds
// a binary Start would refuse as unsafe. It returns what it wrote.
func WriteLock(dir string) ([]LockEntry, error) {
	bins, _, err := scanDir(dir)
	if err != nil {
		return nil, err
	}
	var unsafe []error
	for _, b := range bins {
		if b.unsafe != nil {
			unsafe = append(unsafe, b.unsafe)
		}
	}
	if len(unsafe) > 0 {
		return nil, fmt.Errorf("not locking binaries the engine would refuse to run: %w", errors.Join(unsafe...))
	}
	if len(bins) == 0 {
		return nil, fmt.Errorf("no plugin binaries (executable %s* files) in %s; nothing to lock", FilePrefix, dir)
	}
	entries := make([]LockEntry, len(bins))
	var buf bytes.Buffer
	buf.WriteString("# sha256 of every plugin binary in this directory, written by `kds-engine plugins lock`.\n" +
		"# The engine refuses a kds-plugin-* binary that is not listed here or does not match.\n")
	for i, b := range bins {
		sum, err := hashFile(b.path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.path, err)
		}
		entries[i] = LockEntry{File: filepath.Base(b.path), SHA256: hex.EncodeToString(sum)}
		fmt.Fprintf(&buf, "%s  %s\n", entries[i].SHA256, entries[i].File)
	}
	if err := writeFileAtomic(filepath.Join(dir, LockFileName), buf.Bytes(), 0o644); err != nil {
		return nil, err
	}
	return entries, nil
}

// writeFileAtomic replaces path with data and mode: it writes a temporary
// file next to it and renames it over path.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename: nothing to remove
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// LockCheck is what CheckLock found.
type LockCheck struct {
	Path     string   // the lock file
	Verified []string // plugin binaries that would start, sorted
	// Refused lists, sorted by binary, why each other plugin binary would
	// be refused: not listed, a mismatch, or unsafe.
	Refused []string
	// Stale lists entries that name no plugin binary in the directory
	// (a warning at Start, not an error).
	Stale []string
}

// CheckLock runs against dir the checks Start runs before starting each
// plugin binary there: the lock file's safety and syntax, then for every
// binary its safety, its lock entry and its .sha256 file. It returns an
// error when dir cannot be read or is unsafe, or when the lock file is
// missing, unsafe or malformed; what each binary would meet otherwise is in
// the LockCheck.
func CheckLock(dir string) (LockCheck, error) {
	bins, _, err := scanDir(dir)
	if err != nil {
		return LockCheck{}, err
	}
	lock, err := loadLock(dir)
	if err != nil {
		return LockCheck{}, err
	}
	path := filepath.Join(dir, LockFileName)
	if lock == nil {
		return LockCheck{}, fmt.Errorf("no plugins lock file %s; write one with `kds-engine plugins lock --plugins-dir %s`", path, dir)
	}
	c := LockCheck{Path: path}
	for _, b := range bins {
		err := b.unsafe
		if err == nil {
			err = verifyBinary(b.path, lock)
		}
		if err != nil {
			c.Refused = append(c.Refused, err.Error())
			continue
		}
		c.Verified = append(c.Verified, filepath.Base(b.path))
	}
	for _, name := range lock.stale(bins) {
		c.Stale = append(c.Stale, fmt.Sprintf("%s (line %d) names no plugin binary in %s", name, lock.entries[name].line, dir))
	}
	return c, nil
}
