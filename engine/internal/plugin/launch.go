package plugin

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
)

// refusal is an error of the checks a launch runs before it executes
// anything (the plugins directory, the binary and its directories, the lock
// file, the checksums): nothing was run. Its text is the error's.
type refusal struct{ err error }

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

func refused(err error) error { return &refusal{err: err} }

// isRefusal reports whether err is (or wraps) a refusal.
func isRefusal(err error) bool {
	var r *refusal
	return errors.As(err, &r)
}

// image is the checked, opened binary of one launch, ready to execute.
type image struct {
	// path is what is executed: the open file itself, through
	// /proc/self/fd, or a private copy of it.
	path string
	// sum returns the sha256 of exactly what path executes.
	sum func() ([]byte, error)
	// release closes the open file and removes a private copy; call it
	// once the process has started (or failed to).
	release func()
}

// execMode says how a launch executes the file it checked.
type execMode int

const (
	// execFD executes the open file through /proc/self/fd/N: the kernel
	// runs the inode that was checked and hashed, whatever the path names
	// by then. Linux.
	execFD execMode = iota
	// execCopy copies the open file into a private directory of the host
	// (0700, the engine's user), hashing while it copies, and executes
	// the copy. For systems without /proc.
	execCopy
)

func defaultExecMode() execMode {
	if runtime.GOOS == "linux" {
		return execFD
	}
	return execCopy
}

// openImage checks the plugins directory and the binary at path (see
// ErrUnsafePath), opens the binary once and prepares that open file for
// execution. Every error is a refusal.
func (h *Host) openImage(path string) (*image, error) {
	if _, _, err := checkSafe(h.dir, true); err != nil {
		return nil, refused(fmt.Errorf("plugins dir: %w", err))
	}
	f, err := openChecked(path)
	if err != nil {
		return nil, refused(err)
	}
	if err := refuseScript(f, path); err != nil {
		f.Close()
		return nil, refused(err)
	}
	switch h.execMode {
	case execCopy:
		img, err := h.privateCopy(f, path)
		f.Close()
		if err != nil {
			return nil, refused(err)
		}
		return img, nil
	default:
		p := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
		if _, err := os.Stat(p); err != nil {
			f.Close()
			return nil, refused(fmt.Errorf("plugins run through /proc/self/fd, which is not available (%w); mount /proc", err))
		}
		return &image{
			path:    p,
			sum:     func() ([]byte, error) { return hashReader(io.NewSectionReader(f, 0, 1<<62)) },
			release: func() { f.Close() },
		}, nil
	}
}

// refuseScript refuses a #! script: the kernel would have its interpreter
// open the script again by name, not run the file that was checked.
func refuseScript(f *os.File, path string) error {
	var head [2]byte
	if n, _ := f.ReadAt(head[:], 0); n == 2 && bytes.Equal(head[:], []byte("#!")) {
		return fmt.Errorf("%s is a script (it starts with #!); a plugin must be an executable the kernel runs directly, because the engine executes the file it checked and an interpreter would open the script again by name", path)
	}
	return nil
}

// privateCopy copies f into the host's private directory, hashing what it
// writes, and returns the copy as the image.
func (h *Host) privateCopy(f *os.File, path string) (*image, error) {
	dir, err := h.copyDir()
	if err != nil {
		return nil, err
	}
	out, err := os.CreateTemp(dir, filepath.Base(path)+"-*")
	if err != nil {
		return nil, fmt.Errorf("copy %s for execution: %w", path, err)
	}
	remove := func() { os.Remove(out.Name()) }
	hs := sha256.New()
	_, err = io.Copy(io.MultiWriter(out, hs), io.NewSectionReader(f, 0, 1<<62))
	if err == nil {
		err = out.Chmod(0o500)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		remove()
		return nil, fmt.Errorf("copy %s for execution: %w", path, err)
	}
	sum := hs.Sum(nil)
	return &image{path: out.Name(), sum: func() ([]byte, error) { return sum, nil }, release: remove}, nil
}

// copyDir returns the host's private directory for copies, creating it
// (0700) on first use; Close removes it.
func (h *Host) copyDir() (string, error) {
	h.copyMu.Lock()
	defer h.copyMu.Unlock()
	if h.copyPath == "" {
		d, err := os.MkdirTemp("", "kds-engine-plugins-")
		if err != nil {
			return "", fmt.Errorf("private plugin directory: %w", err)
		}
		h.copyPath = d
	}
	if _, _, err := checkSafe(h.copyPath, true); err != nil {
		return "", fmt.Errorf("private plugin directory: %w", err)
	}
	return h.copyPath, nil
}

func hashReader(r io.Reader) ([]byte, error) {
	hs := sha256.New()
	if _, err := io.Copy(hs, r); err != nil {
		return nil, fmt.Errorf("hash binary: %w", err)
	}
	return hs.Sum(nil), nil
}
