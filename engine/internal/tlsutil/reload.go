package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kds-engine/kds-engine/engine/internal/filewatch"
	"github.com/kds-engine/kds-engine/engine/internal/trustfile"
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

// watchKeyPair loads certFile and keyFile and keeps them current.
func watchKeyPair(certFile, keyFile string, log hclog.Logger, o options) (*filewatch.Watched[*tls.Certificate], error) {
	return filewatch.New(filewatch.Config[*tls.Certificate]{
		Files: []string{certFile, keyFile},
		Load: func() (*tls.Certificate, error) {
			c, err := loadKeyPair(certFile, keyFile)
			return &c, err
		},
		Adopted: func(c *tls.Certificate, reload bool) {
			msg := "loaded TLS certificate"
			lvl := hclog.Debug
			if reload {
				msg, lvl = "reloaded TLS certificate; new connections use it", hclog.Info
			}
			log.Log(lvl, msg, append([]any{"file", certFile, "key_file", keyFile}, CertificateFields("", c.Leaf)...)...)
			o.onLoad(Loaded{File: certFile, NotAfter: c.Leaf.NotAfter})
		},
		Rejected: func(err error) {
			log.Warn("TLS certificate files changed but cannot be used; still using the previous certificate, will try again when the files change",
				"file", certFile, "key_file", keyFile, "error", err)
		},
		Interval: o.interval,
		Now:      o.now,
	})
}

// caBundle is a CA file's certificates and the pool made of them.
type caBundle struct {
	pool  *x509.CertPool
	certs []*x509.Certificate
}

// watchCAs loads the CA certificates in path (what names the setting in
// errors) and keeps them current.
func watchCAs(path, what string, log hclog.Logger, o options) (*filewatch.Watched[caBundle], error) {
	return filewatch.New(filewatch.Config[caBundle]{
		Files: []string{path},
		Load:  func() (caBundle, error) { return loadCAs(path, what) },
		Adopted: func(b caBundle, reload bool) {
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
		Rejected: func(err error) {
			log.Warn("CA file changed but cannot be used; still using the previous CA certificates, will try again when the file changes",
				"file", path, "error", err)
		},
		Interval: o.interval,
		Now:      o.now,
	})
}

// loadCAs reads the PEM CERTIFICATE blocks of path, which must pass
// trustfile's rule for public files. Like
// x509.CertPool.AppendCertsFromPEM it skips other blocks and certificates
// that do not parse; at least one certificate must remain.
func loadCAs(path, what string) (caBundle, error) {
	data, err := trustfile.ReadFile(path, trustfile.Public, what, maxPEMFileSize)
	if err != nil {
		return caBundle{}, err
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

// CertificateFields returns the log fields that identify c: its subject,
// serial number (hex) and expiry (RFC 3339, UTC), each key starting with
// prefix. Every log line that names a certificate uses them, so the same
// certificate reads the same in each.
func CertificateFields(prefix string, c *x509.Certificate) []any {
	return []any{prefix + "subject", c.Subject.String(), prefix + "serial", serial(c), prefix + "not_after", timestamp(c.NotAfter)}
}

func timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
