// Package filewatch keeps material loaded from files current without a
// goroutine: whoever uses the material asks for it, and at most once per
// interval that look stats the files and reloads them when one changed
// (content, inode, mode or owner). A reload that fails keeps the previous
// material and is retried when the files change again. The TLS files
// (tlsutil), the zone token verification keys and revocation file
// (token) and the zone's token file (kdsauth) use it; their loads check
// each file with package trustfile, so a file whose mode or owner turns
// unsafe is refused at the next look.
package filewatch

import (
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
)

// Stamp is what stat says about a file: enough to notice that it was
// rewritten, renamed over or reached through a swapped symlink, or that
// its mode or owner changed (which decides whether it may be trusted, see
// package trustfile), without reading it.
type Stamp struct {
	exists   bool
	size     int64
	mtime    int64 // Unix nanoseconds
	mode     os.FileMode
	dev, ino uint64
	uid      uint32
}

// Stat follows symlinks, so a Kubernetes secret volume whose ..data link
// was swapped shows up as another inode. A missing or unreadable file has
// the zero Stamp: the load that follows reports why.
func Stat(path string) Stamp {
	fi, err := os.Stat(path)
	if err != nil {
		return Stamp{}
	}
	s := Stamp{exists: true, size: fi.Size(), mtime: fi.ModTime().UnixNano(), mode: fi.Mode()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.dev, s.ino, s.uid = uint64(st.Dev), st.Ino, st.Uid //nolint:unconvert // Dev is not uint64 everywhere
	}
	return s
}

// Config says which files to watch and what to do with them.
type Config[T any] struct {
	// Files are stat'ed on each look; any change reloads.
	Files []string
	// Load reads the files.
	Load func() (T, error)
	// Adopted is called with material that was just put to use (reload
	// false at start, true after a change). It runs under the watcher's
	// lock, so never concurrently, and must be quick. Optional.
	Adopted func(v T, reload bool)
	// Rejected is called once per change whose load failed; the previous
	// material stays in use. Optional.
	Rejected func(err error)
	// Interval is how long, at least, lies between two looks at the files.
	// Zero or less looks on every use.
	Interval time.Duration
	// Now is the clock for Interval (default time.Now).
	Now func() time.Time
}

// Watched is material loaded from files and kept current. Safe for
// concurrent use.
type Watched[T any] struct {
	c Config[T]

	mu      sync.Mutex
	cur     T
	stamps  []Stamp
	checked time.Time
}

// New loads the files once and returns the watcher; an error from the
// first load is returned as is.
func New[T any](c Config[T]) (*Watched[T], error) {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Adopted == nil {
		c.Adopted = func(T, bool) {}
	}
	if c.Rejected == nil {
		c.Rejected = func(error) {}
	}
	w := &Watched[T]{c: c}
	// Stat before reading: a change after the stat is then always noticed
	// by the next look (at worst the same content is loaded twice).
	w.stamps = w.stat()
	v, err := c.Load()
	if err != nil {
		return nil, err
	}
	w.cur, w.checked = v, c.Now()
	c.Adopted(v, false)
	return w, nil
}

func (w *Watched[T]) stat() []Stamp {
	s := make([]Stamp, len(w.c.Files))
	for i, f := range w.c.Files {
		s[i] = Stat(f)
	}
	return s
}

// Current returns the material to use now, looking at the files first if
// the interval has passed since the last look.
func (w *Watched[T]) Current() T {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.c.Now()
	if w.c.Interval > 0 && now.Sub(w.checked) < w.c.Interval {
		return w.cur
	}
	w.checked = now
	stamps := w.stat()
	if slices.Equal(stamps, w.stamps) {
		return w.cur
	}
	// Remember these files even if they cannot be used, so one change is
	// reported once; a later change (the key of a pair arriving, a file
	// written to the end) is tried again.
	w.stamps = stamps
	v, err := w.c.Load()
	if err != nil {
		w.c.Rejected(err)
		return w.cur
	}
	w.cur = v
	w.c.Adopted(v, true)
	return v
}
