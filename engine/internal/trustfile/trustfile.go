// Package trustfile is the one check every file that grants or checks
// trust passes before kds-engine reads it: the token signing key, the zone
// token verification key files, the revocation file, TLS certificates, keys
// and CA files, the zone's token file and the admin API token file. Anyone
// who can change such a file decides whom kds-engine trusts (a key appended
// to a verification key file signs tokens for every zone), and anyone who
// can read a secret one can act as its owner.
//
// The rule, with symlinks followed:
//
//   - the file is a regular file owned by root or by the user kds-engine
//     runs as (its effective uid), and group and others cannot write it;
//   - a Secret file (a private key or a token) cannot be read by group or
//     others either;
//   - the directory the file really lives in is owned by root or that user
//     and group and others cannot write it, unless it is sticky (like
//     /tmp), where they cannot replace a file they do not own.
//
// ReadFile checks the file it opened (not the name again), so what is read
// is what was checked. Errors wrap ErrUnsafe and name the file, what is
// wrong (mode or owner) and the command that fixes it. Callers that reload
// a file call ReadFile on every reload, so a file that turns unsafe while
// kds-engine runs is refused like one at start.
package trustfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// ErrUnsafe is wrapped by every refusal of a file for its owner or mode.
var ErrUnsafe = errors.New("unsafe trust file")

// Kind says how private a file must be.
type Kind int

const (
	// Public files may be read by anyone but changed only by their owner:
	// certificates, CA files, public keys, the revocation file, and TLS
	// private keys (see docs/security.md for why those are not Secret).
	Public Kind = iota
	// Secret files are readable and writable by their owner only: the
	// token signing key, zone tokens and the admin API token.
	Secret
)

// euid is the user kds-engine runs as; a variable for tests.
var euid = os.Geteuid

// ReadFile opens path, checks the opened file and its directory against
// the rule for kind, and returns its content. what names the file in
// errors ("zone token file"). A file larger than limit bytes (limit > 0) is
// refused without being read. A missing file yields an error matching
// fs.ErrNotExist.
func ReadFile(path string, kind Kind, what string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := checkFile(path, what, kind, fi); err != nil {
		return nil, err
	}
	if err := checkDir(path, what); err != nil {
		return nil, err
	}
	if limit > 0 && fi.Size() > limit {
		return nil, fmt.Errorf("%s %s is %d bytes, the limit is %d", what, path, fi.Size(), limit)
	}
	r := io.Reader(f)
	if limit > 0 {
		r = io.LimitReader(f, limit+1)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if limit > 0 && int64(len(data)) > limit {
		return nil, fmt.Errorf("%s %s is over %d bytes", what, path, limit)
	}
	return data, nil
}

// Check applies the rule for kind to the file at path (symlinks followed)
// and its directory without reading the file.
func Check(path string, kind Kind, what string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := checkFile(path, what, kind, fi); err != nil {
		return err
	}
	return checkDir(path, what)
}

func checkFile(path, what string, kind Kind, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s %s is not a regular file", what, path)
	}
	if err := checkOwner(path, path, what, fi); err != nil {
		return err
	}
	perm := fi.Mode().Perm()
	if kind == Secret && perm&0o077 != 0 {
		return fmt.Errorf("%w: %s %s has mode %04o and is accessible by group or others, so other users could read or change the secret in it; fix with `chmod 600 %s`",
			ErrUnsafe, what, path, perm, path)
	}
	if perm&0o022 != 0 {
		return fmt.Errorf("%w: %s %s has mode %04o and is writable by group or others, so other users could change what kds-engine trusts; fix with `chmod go-w %s`",
			ErrUnsafe, what, path, perm, path)
	}
	return nil
}

// checkDir checks the directory the file really lives in: whoever can
// write it can replace the file.
func checkDir(path, what string) error {
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	dir := filepath.Dir(resolved)
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%s: directory: %w", what, err)
	}
	shown := dir
	if resolved != path {
		shown = fmt.Sprintf("%s (where %s leads)", dir, path)
	}
	if err := checkOwner(shown, dir, what+"'s directory", fi); err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
		return fmt.Errorf("%w: %s's directory %s has mode %04o and is writable by group or others, so other users could replace %s; fix with `chmod go-w %s`",
			ErrUnsafe, what, shown, perm, path, dir)
	}
	return nil
}

// checkOwner refuses a file or directory (shown in the message, fixed by
// chown of fix) that neither root nor the engine's user owns.
func checkOwner(shown, fix, what string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	uid := euid()
	if owner := int(st.Uid); owner != 0 && owner != uid {
		return fmt.Errorf("%w: %s %s is owned by uid %d, not by root or the user kds-engine runs as (uid %d), so that user could change it; fix with `chown %d %s`",
			ErrUnsafe, what, shown, owner, uid, uid, fix)
	}
	return nil
}
