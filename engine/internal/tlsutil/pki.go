package tlsutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// PKIValidity is how long GeneratePKI's certificates are valid.
const PKIValidity = 365 * 24 * time.Hour

// KeyPair names a certificate file and its private key file.
type KeyPair struct {
	CertFile string
	KeyFile  string
}

// PKI lists the files GeneratePKI wrote.
type PKI struct {
	// CAFile is the CA certificate: the zone's --ca-file and global's
	// --client-ca-file.
	CAFile string
	// CAKeyFile is the CA's private key (to issue more certificates).
	CAKeyFile string
	// Server is global's --tls-cert-file / --tls-key-file.
	Server KeyPair
	// Clients holds a zone's --cert-file / --key-file by client name.
	Clients map[string]KeyPair
}

// GeneratePKI creates dir (mode 0700 if missing) and writes into it a new
// CA (ca.crt, ca.key), a server certificate valid for hosts (server.crt,
// server.key; each host is an IP address or a DNS name, e.g. "localhost",
// "127.0.0.1") and one client certificate per name in clients
// (client-NAME.crt, client-NAME.key, with NAME as the common name and the
// URI SAN kds-zone://NAME, the form global's zone check reads). Keys
// are ECDSA P-256, certificates are valid for PKIValidity, private key files
// have mode 0600. Existing files of those names are replaced.
//
// It is meant for demos and tests; production deployments bring their own
// PKI.
func GeneratePKI(dir string, hosts []string, clients []string) (PKI, error) {
	if len(hosts) == 0 {
		return PKI{}, errors.New("generate PKI: at least one server host is required")
	}
	for _, c := range clients {
		if c == "" || strings.ContainsAny(c, `/\`) || c == "." || c == ".." {
			return PKI{}, fmt.Errorf("generate PKI: client name %q cannot be used in a file name", c)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return PKI{}, fmt.Errorf("generate PKI: %w", err)
	}
	now := time.Now()
	notBefore, notAfter := now.Add(-5*time.Minute), now.Add(PKIValidity)

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return PKI{}, fmt.Errorf("generate CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "kds-engine CA"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, caCert, err := sign(caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return PKI{}, fmt.Errorf("create CA certificate: %w", err)
	}
	pki := PKI{
		CAFile:    filepath.Join(dir, "ca.crt"),
		CAKeyFile: filepath.Join(dir, "ca.key"),
		Clients:   make(map[string]KeyPair, len(clients)),
	}
	if err := writePair(pki.CAFile, pki.CAKeyFile, caDER, caKey); err != nil {
		return PKI{}, err
	}

	serverTmpl := serverTemplate(hosts)
	serverTmpl.NotBefore, serverTmpl.NotAfter = notBefore, notAfter
	pki.Server = KeyPair{CertFile: filepath.Join(dir, "server.crt"), KeyFile: filepath.Join(dir, "server.key")}
	if err := issue(serverTmpl, caCert, caKey, pki.Server); err != nil {
		return PKI{}, fmt.Errorf("create server certificate: %w", err)
	}

	for _, name := range clients {
		tmpl := clientTemplate(name)
		tmpl.NotBefore, tmpl.NotAfter = notBefore, notAfter
		kp := KeyPair{CertFile: filepath.Join(dir, "client-"+name+".crt"), KeyFile: filepath.Join(dir, "client-"+name+".key")}
		if err := issue(tmpl, caCert, caKey, kp); err != nil {
			return PKI{}, fmt.Errorf("create client certificate %q: %w", name, err)
		}
		pki.Clients[name] = kp
	}
	return pki, nil
}

// serverTemplate is a server certificate for hosts (IP addresses or DNS
// names; the first is the common name), without validity or serial.
func serverTemplate(hosts []string) *x509.Certificate {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return tmpl
}

// clientTemplate is a client certificate for name, without validity or
// serial: the common name is name, and, when name can be the host of a URI
// as is (zone names can), the URI SAN kds-zone://NAME names the zone it is
// for (see CertificateZones).
func clientTemplate(name string) *x509.Certificate {
	c := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if u := ZoneURI(name); u.String() == ZoneURIScheme+"://"+name {
		c.URIs = []*url.URL{u}
	}
	return c
}

// ZoneURIScheme is the scheme of the URI SAN that names the zone a client
// certificate is for: kds-zone://NAME.
const ZoneURIScheme = "kds-zone"

// ZoneURI is the URI SAN that names zone in a client certificate.
func ZoneURI(zone string) *url.URL { return &url.URL{Scheme: ZoneURIScheme, Host: zone} }

// CertificateZones returns the zones c names: the host of each URI SAN of
// the form kds-zone://NAME (nothing else in the URI). Other SANs and the
// subject are not zone names: a CA may issue DNS names or common names for
// other purposes, a kds-zone URI only for a zone.
func CertificateZones(c *x509.Certificate) []string {
	var zones []string
	for _, u := range c.URIs {
		if u.Scheme == ZoneURIScheme && u.Host != "" && u.Opaque == "" && u.User == nil &&
			u.Path == "" && u.RawQuery == "" && u.Fragment == "" && u.Port() == "" {
			zones = append(zones, u.Host)
		}
	}
	return zones
}

func issue(tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey, kp KeyPair) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	der, _, err := sign(tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	return writePair(kp.CertFile, kp.KeyFile, der, key)
}

func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) ([]byte, *x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse certificate: %w", err)
	}
	return der, cert, nil
}

func writePair(certFile, keyFile string, certDER []byte, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	if err := writeFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}), 0o644)
}

// writeFile writes data with exactly mode, also when the file existed with
// another mode (the mode is set before the data goes in).
func writeFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close() //nolint:errcheck,gosec // the chmod error is the one worth reporting
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close() //nolint:errcheck,gosec // the write error is the one worth reporting
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}
