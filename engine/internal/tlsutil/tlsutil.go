// Package tlsutil builds the TLS configurations of the KDS connection —
// global's listener (optionally requiring client certificates: mTLS) and the
// zone's dialer — from PEM files, and generates a small self-contained PKI
// (a CA, a server certificate, client certificates) for demos and tests.
//
// Both sides require TLS 1.2 or newer; TLS 1.3 is negotiated whenever both
// ends support it. Errors name the file involved and what is wrong with it.
package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"
)

// MinVersion is the oldest TLS version either side accepts.
const MinVersion = tls.VersionTLS12

// ServerConfig returns the TLS configuration for a listener presenting the
// certificate chain in certFile with the private key in keyFile (PEM). When
// clientCAFile is non-empty the listener requires every client to present a
// certificate that verifies against the CA certificates in that file (mTLS);
// otherwise client certificates are not requested.
//
// The returned config is new and owned by the caller.
func ServerConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("TLS server needs both a certificate file (--tls-cert-file) and a key file (--tls-key-file)")
	}
	cert, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:   MinVersion,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.NoClientCert,
	}
	if clientCAFile != "" {
		pool, err := loadCertPool(clientCAFile, "client CA file")
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ClientConfig returns the TLS configuration for dialing a server. caFile
// holds the CA certificates the server's certificate must verify against;
// empty means the system roots. certFile and keyFile are the client's own
// certificate for mTLS: both or neither. serverName, when set, is the name
// the server certificate must be valid for (instead of the dialed host).
//
// The returned config is new and owned by the caller.
func ClientConfig(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion: MinVersion,
		ServerName: serverName,
	}
	if caFile != "" {
		pool, err := loadCertPool(caFile, "CA file")
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	switch {
	case certFile != "" && keyFile != "":
		cert, err := loadKeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	case certFile != "" || keyFile != "":
		return nil, fmt.Errorf("client certificate needs both a certificate file (--cert-file, got %q) and a key file (--key-file, got %q)", certFile, keyFile)
	}
	return cfg, nil
}

func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("read TLS certificate file: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("read TLS key file: %w", err)
	}
	if block, _ := pem.Decode(certPEM); block == nil || block.Type != "CERTIFICATE" {
		return tls.Certificate{}, fmt.Errorf("TLS certificate file %s: no PEM CERTIFICATE block found", certFile)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("TLS certificate %s with key %s: %w", certFile, keyFile, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("TLS certificate file %s: %w", certFile, err)
		}
	}
	if now := time.Now(); now.After(leaf.NotAfter) {
		return tls.Certificate{}, fmt.Errorf("TLS certificate file %s expired at %s; renew it",
			certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return cert, nil
}

func loadCertPool(path, what string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s %s: no PEM certificates found", what, path)
	}
	return pool, nil
}
