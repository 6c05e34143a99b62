// Package tlsutil builds the TLS configurations kds-engine uses — global's
// KDS listener (optionally requiring client certificates: mTLS), the zone's
// dialer and the admin API listener — from PEM files, and generates a small
// self-contained PKI (a CA, a server certificate, client certificates) for
// demos and tests.
//
// Both sides require TLS 1.2 or newer; TLS 1.3 is negotiated whenever both
// ends support it. Errors name the file involved and what is wrong with it.
//
// # Reloading
//
// The configs follow their files: certificates and keys, client CA files and
// CA files can be replaced while the process runs, and the next handshake
// uses the new ones. A handshake looks at the files again (a stat, no read)
// once the check interval (DefaultCheckInterval, WithCheckInterval) has
// passed since the last look, and reloads them when a file's size,
// modification time or inode changed. Stat follows symlinks, so files
// replaced by rename and Kubernetes secret volumes (whose ..data symlink is
// swapped) are noticed as well as files rewritten in place. Only a file
// rewritten in place that keeps its size and whose modification time does
// not move (a rewrite within the file system's timestamp granularity) goes
// unnoticed until its next change: replace files by rename where possible.
//
// Contracts:
//
//   - Every file passes package trustfile's rule, at start and at every
//     reload: owned by root or the engine's user, not writable by group or
//     others, and private key files not readable by them either.
//   - A config returned without error has usable material, and keeps it:
//     new files that cannot be used — missing, unparsable, expired, a
//     certificate whose key does not match (say the certificate was written
//     and the key not yet), a file that fails trustfile's rule — are not
//     adopted; the previous material stays in
//     use and a warning naming the files and the reason is logged once per
//     change. The next change is tried again, so a pair written as two files
//     is adopted once both are there.
//   - Successful reloads are logged at info with the file and each new
//     certificate's subject, serial and expiry (the first load at debug), and
//     reported to WithOnLoad.
//   - Only new handshakes see new material. TLS connections already up keep
//     the session they negotiated (TLS does not re-handshake).
//   - Verification is as strict as Go's standard verification against the
//     current CA file: chain, expiry and key usage; on the client also the
//     server name, which ClientConfig therefore needs with a CA file.
//   - No goroutines: all work happens in the handshakes.
package tlsutil

import (
	"crypto/fips140"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kds-engine/kds-engine/engine/internal/filewatch"
	"github.com/kds-engine/kds-engine/engine/internal/trustfile"
)

// MinVersion is the oldest TLS version either side accepts.
const MinVersion = tls.VersionTLS12

// ServerConfig returns the TLS configuration for a listener presenting the
// certificate chain in certFile with the private key in keyFile (PEM). When
// clientCAFile is non-empty the listener requires every client to present a
// certificate that verifies against the CA certificates in that file (mTLS);
// otherwise client certificates are not requested. All three files are
// reloaded when they change (see the package documentation); log receives
// the reload messages (nil discards them).
//
// The returned config is new and owned by the caller. With a client CA file,
// each handshake runs with a copy of it (made at the first handshake after a
// CA reload) that holds the current CA certificates, returned by its
// GetConfigForClient: change the returned config before it is first used,
// not a copy of it (gRPC's credentials.NewTLS, which adds its ALPN protocol
// to its copy and to what GetConfigForClient returns, is fine).
func ServerConfig(certFile, keyFile, clientCAFile string, log hclog.Logger, opts ...Option) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("TLS server needs both a certificate file (--tls-cert-file) and a key file (--tls-key-file)")
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	o := newOptions(opts)
	pair, err := watchKeyPair(certFile, keyFile, log, o)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion: MinVersion,
		ClientAuth: tls.NoClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return pair.Current(), nil
		},
	}
	if clientCAFile == "" {
		return cfg, nil
	}
	cas, err := watchCAs(clientCAFile, "client CA file", log, o)
	if err != nil {
		return nil, err
	}
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.ClientCAs = cas.Current().pool
	// Go verifies the client's certificate against the ClientCAs of the
	// config the handshake runs with, so each handshake gets a config with
	// the current pool; one copy per pool, made when first needed.
	var forPool atomic.Pointer[tls.Config]
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		pool := cas.Current().pool
		if c := forPool.Load(); c != nil && c.ClientCAs == pool {
			return c, nil
		}
		c := cfg.Clone()
		c.ClientCAs = pool
		c.GetConfigForClient = nil
		forPool.Store(c)
		return c, nil
	}
	return cfg, nil
}

// ClientConfig returns the TLS configuration for dialing a server. caFile
// holds the CA certificates the server's certificate must verify against;
// empty means the system roots. certFile and keyFile are the client's own
// certificate for mTLS: both or neither. serverName is the name the server
// certificate must be valid for (a DNS name or an IP address); it is
// required with caFile, and without caFile empty means the dialed host.
// caFile, certFile and keyFile are reloaded when they change (see the
// package documentation); log receives the reload messages (nil discards
// them).
//
// With caFile, the returned config verifies the server itself, in
// VerifyConnection, against the CA certificates the file holds at the
// handshake, exactly as Go would (chain, expiry, key usage and serverName);
// InsecureSkipVerify is set only to hand verification to it, and
// ConnectionState.VerifiedChains stays empty. In FIPS 140-3 mode, where Go
// restricts verified chains further, the CA file is instead read once and
// Go's own verification is used. Do not clear VerifyConnection.
//
// The returned config is new and owned by the caller.
func ClientConfig(caFile, certFile, keyFile, serverName string, log hclog.Logger, opts ...Option) (*tls.Config, error) {
	if caFile != "" && serverName == "" {
		return nil, fmt.Errorf("TLS client with CA file %s: no server name given; pass the name the server's certificate must be valid for", caFile)
	}
	cc, err := NewClientConfigs(caFile, certFile, keyFile, log, opts...)
	if err != nil {
		return nil, err
	}
	return cc.For(serverName)
}

// ClientConfigs makes client configurations for several servers that share
// one CA file and one client certificate (replicas of one service reached
// at different names or addresses): the files are loaded and watched once,
// and For returns the configuration for one server name. Safe for
// concurrent use.
type ClientConfigs struct {
	caFile string
	cas    *filewatch.Watched[caBundle]
	pair   *filewatch.Watched[*tls.Certificate]
}

// NewClientConfigs loads caFile, certFile and keyFile as ClientConfig does
// and returns the source of per-server configurations.
func NewClientConfigs(caFile, certFile, keyFile string, log hclog.Logger, opts ...Option) (*ClientConfigs, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	o := newOptions(opts)
	cc := &ClientConfigs{caFile: caFile}
	if caFile != "" {
		cas, err := watchCAs(caFile, "CA file", log, o)
		if err != nil {
			return nil, err
		}
		if fips140.Enabled() {
			log.Info("FIPS 140-3 mode: the CA file is read at start only; restart to use a changed one", "file", caFile)
		}
		cc.cas = cas
	}
	switch {
	case certFile != "" && keyFile != "":
		pair, err := watchKeyPair(certFile, keyFile, log, o)
		if err != nil {
			return nil, err
		}
		cc.pair = pair
	case certFile != "" || keyFile != "":
		return nil, fmt.Errorf("client certificate needs both a certificate file (--cert-file, got %q) and a key file (--key-file, got %q)", certFile, keyFile)
	}
	return cc, nil
}

// For returns a new configuration, owned by the caller, that verifies the
// server's certificate for serverName (see ClientConfig; with a CA file
// serverName is required).
func (cc *ClientConfigs) For(serverName string) (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion: MinVersion,
		ServerName: serverName,
	}
	if cc.cas != nil {
		if serverName == "" {
			return nil, fmt.Errorf("TLS client with CA file %s: no server name given; pass the name the server's certificate must be valid for", cc.caFile)
		}
		cas := cc.cas
		if fips140.Enabled() {
			cfg.RootCAs = cas.Current().pool
		} else {
			cfg.InsecureSkipVerify = true //nolint:gosec // VerifyConnection verifies against the current CA file
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				return verifyServer(cs.PeerCertificates, cas.Current().pool, serverName)
			}
		}
	}
	if pair := cc.pair; pair != nil {
		cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			// What Go does with Config.Certificates: send the certificate
			// only if the server's request allows it, else none.
			c := pair.Current()
			if cri.SupportsCertificate(c) != nil {
				return &tls.Certificate{}, nil
			}
			return c, nil
		}
	}
	return cfg, nil
}

// verifyServer is Go's verification of a server's certificate chain
// (crypto/tls verifyServerCertificate): certs[0] must chain to roots through
// the other certificates, be valid now, allow server authentication and be
// valid for name.
func verifyServer(certs []*x509.Certificate, roots *x509.CertPool, name string) error {
	if len(certs) == 0 {
		return errors.New("tls: server presented no certificate")
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		DNSName:       name,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := certs[0].Verify(opts); err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}
	}
	return nil
}

// maxPEMFileSize bounds a certificate, key or CA file.
const maxPEMFileSize = 16 << 20

// loadKeyPair reads a certificate (chain) and its private key. Both files
// must pass trustfile's rule: the certificate may be readable by anyone,
// the key by its owner only.
func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := trustfile.ReadFile(certFile, trustfile.Public, "TLS certificate file", maxPEMFileSize)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := trustfile.ReadFile(keyFile, trustfile.Secret, "TLS key file", maxPEMFileSize)
	if err != nil {
		return tls.Certificate{}, err
	}
	if block, _ := pem.Decode(certPEM); block == nil || block.Type != "CERTIFICATE" {
		return tls.Certificate{}, fmt.Errorf("TLS certificate file %s: no PEM CERTIFICATE block found", certFile)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("TLS certificate %s with key %s: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("TLS certificate file %s: %w", certFile, err)
		}
	}
	leaf := cert.Leaf
	if now := time.Now(); now.After(leaf.NotAfter) {
		return tls.Certificate{}, fmt.Errorf("TLS certificate file %s expired at %s; renew it",
			certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return cert, nil
}
