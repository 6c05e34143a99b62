package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// DefaultCheckInterval is how often, at most, the files behind a config are
// looked at again: on a handshake, once this long has passed since the last
// look.
const DefaultCheckInterval = time.Second

// Loaded describes certificates that were just put to use: at start or on a
// reload.
type Loaded struct {
	// File is the certificate file of a certificate and key, or the CA file.
	File string
	// CA is true for a CA file (--client-ca-file, --ca-file), false for a
	// certificate and key.
	CA bool
	// NotAfter is when the certificate expires; for a CA file, the earliest
	// of its certificates.
	NotAfter time.Time
}

// Option changes how ServerConfig and ClientConfig watch their files.
type Option func(*options)

type options struct {
	interval time.Duration
	onLoad   func(Loaded)
	now      func() time.Time
}

// WithCheckInterval sets how often, at most, a handshake looks at the files
// again (default DefaultCheckInterval). Zero or less looks on every
// handshake.
func WithCheckInterval(d time.Duration) Option {
	return func(o *options) { o.interval = d }
}

// WithOnLoad calls fn each time certificates are put to use: once per file
// (or certificate and key) at start, then after every successful reload. fn
// runs during a handshake and must be quick; it is never called concurrently
// for the same file.
func WithOnLoad(fn func(Loaded)) Option {
	return func(o *options) {
		if fn != nil {
			o.onLoad = fn
		}
	}
}

// WithClock replaces time.Now for the check interval (for tests).
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

func newOptions(opts []Option) options {
	o := options{interval: DefaultCheckInterval, onLoad: func(Loaded) {}, now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// stamp is what stat says about a file: enough to notice that it was
// rewritten, renamed over or reached through a swapped symlink, without
// reading it.
type stamp struct {
	exists   bool
	size     int64
	mtime    int64 // Unix nanoseconds
	dev, ino uint64
}

// statFile follows symlinks, so a Kubernetes secret volume whose ..data link
// was swapped shows up as another inode.
func statFile(path string) stamp {
	fi, err := os.Stat(path)
	if err != nil {
		// Missing or unreadable: the load that follows reports why.
		return stamp{}
	}
	s := stamp{exists: true, size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.dev, s.ino = uint64(st.Dev), st.Ino //nolint:unconvert // Dev is not uint64 everywhere
	}
	return s
}

// watched is material loaded from files, reloaded when a look at the files
// (at most once per interval, on demand) finds them changed. A load that
// fails keeps the previous material; it is retried when the files change
// again.
type watched[T any] struct {
	files []string
	load  func() (T, error)
	// adopted logs material that was just put to use (reload: false at
	// start) and reports it to onLoad.
	adopted func(v T, reload bool)
	// rejected logs a load that failed after the files changed.
	rejected func(err error)
	interval time.Duration
	now      func() time.Time

	mu      sync.Mutex
	cur     T
	stamps  []stamp
	checked time.Time
}

func newWatched[T any](w *watched[T]) (*watched[T], error) {
	// Stat before reading: a change after the stat is then always noticed
	// by the next look (at worst the same content is loaded twice).
	w.stamps = w.stat()
	v, err := w.load()
	if err != nil {
		return nil, err
	}
	w.cur, w.checked = v, w.now()
	w.adopted(v, false)
	return w, nil
}

func (w *watched[T]) stat() []stamp {
	s := make([]stamp, len(w.files))
	for i, f := range w.files {
		s[i] = statFile(f)
	}
	return s
}

// current returns the material to use now, looking at the files first if
// the interval has passed since the last look.
func (w *watched[T]) current() T {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	if w.interval > 0 && now.Sub(w.checked) < w.interval {
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
	v, err := w.load()
	if err != nil {
		w.rejected(err)
		return w.cur
	}
	w.cur = v
	w.adopted(v, true)
	return v
}

// watchKeyPair loads certFile and keyFile and keeps them current.
func watchKeyPair(certFile, keyFile string, log hclog.Logger, o options) (*watched[*tls.Certificate], error) {
	return newWatched(&watched[*tls.Certificate]{
		files: []string{certFile, keyFile},
		load: func() (*tls.Certificate, error) {
			c, err := loadKeyPair(certFile, keyFile)
			return &c, err
		},
		adopted: func(c *tls.Certificate, reload bool) {
			msg := "loaded TLS certificate"
			lvl := hclog.Debug
			if reload {
				msg, lvl = "reloaded TLS certificate; new connections use it", hclog.Info
			}
			log.Log(lvl, msg, "file", certFile, "key_file", keyFile,
				"subject", c.Leaf.Subject.String(), "serial", serial(c.Leaf), "not_after", timestamp(c.Leaf.NotAfter))
			o.onLoad(Loaded{File: certFile, NotAfter: c.Leaf.NotAfter})
		},
		rejected: func(err error) {
			log.Warn("TLS certificate files changed but cannot be used; still using the previous certificate, will try again when the files change",
				"file", certFile, "key_file", keyFile, "error", err)
		},
		interval: o.interval,
		now:      o.now,
	})
}

// caBundle is a CA file's certificates and the pool made of them.
type caBundle struct {
	pool  *x509.CertPool
	certs []*x509.Certificate
}

// watchCAs loads the CA certificates in path (what names the setting in
// errors) and keeps them current.
func watchCAs(path, what string, log hclog.Logger, o options) (*watched[caBundle], error) {
	return newWatched(&watched[caBundle]{
		files: []string{path},
		load:  func() (caBundle, error) { return loadCAs(path, what) },
		adopted: func(b caBundle, reload bool) {
			msg := "loaded CA certificates"
			lvl := hclog.Debug
			if reload {
				msg, lvl = "reloaded CA certificates; new connections are verified against them", hclog.Info
			}
			subjects := make([]string, len(b.certs))
			serials := make([]string, len(b.certs))
			notAfter := make([]string, len(b.certs))
			earliest := b.certs[0].NotAfter
			for i, c := range b.certs {
				subjects[i], serials[i], notAfter[i] = c.Subject.String(), serial(c), timestamp(c.NotAfter)
				if c.NotAfter.Before(earliest) {
					earliest = c.NotAfter
				}
			}
			log.Log(lvl, msg, "file", path, "certificates", len(b.certs),
				"subject", subjects, "serial", serials, "not_after", notAfter)
			o.onLoad(Loaded{File: path, CA: true, NotAfter: earliest})
		},
		rejected: func(err error) {
			log.Warn("CA file changed but cannot be used; still using the previous CA certificates, will try again when the file changes",
				"file", path, "error", err)
		},
		interval: o.interval,
		now:      o.now,
	})
}

// loadCAs reads the PEM CERTIFICATE blocks of path. Like
// x509.CertPool.AppendCertsFromPEM it skips other blocks and certificates
// that do not parse; at least one certificate must remain.
func loadCAs(path, what string) (caBundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return caBundle{}, fmt.Errorf("read %s: %w", what, err)
	}
	b := caBundle{pool: x509.NewCertPool()}
	for len(data) > 0 {
		var block *pem.Block
		if block, data = pem.Decode(data); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" || len(block.Headers) != 0 {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			continue
		}
		b.pool.AddCert(c)
		b.certs = append(b.certs, c)
	}
	if len(b.certs) == 0 {
		return caBundle{}, fmt.Errorf("%s %s: no PEM certificates found", what, path)
	}
	return b, nil
}

func serial(c *x509.Certificate) string { return fmt.Sprintf("%x", c.SerialNumber) }

func timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
