package tlsutil

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/fips140"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/kds-engine/kds-engine/engine/internal/filewatch"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/fakeclock"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
)

// testCA signs certificates for the reload tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return key
}

// newCA makes a self-signed root CA.
func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, cert, err := sign(tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return &testCA{cert: cert, key: key, pem: pemCert(der)}
}

// caOf loads the CA GeneratePKI wrote.
func caOf(t *testing.T, pki PKI) *testCA {
	t.Helper()
	data, err := os.ReadFile(pki.CAKeyFile)
	require.NoError(t, err)
	block, _ := pem.Decode(data)
	require.NotNil(t, block)
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	require.NoError(t, err)
	caPEM, err := os.ReadFile(pki.CAFile)
	require.NoError(t, err)
	return &testCA{cert: readCert(t, pki.CAFile), key: key.(*ecdsa.PrivateKey), pem: caPEM}
}

// leaf is an issued certificate with its key, as PEM and parsed.
type leaf struct {
	certPEM, keyPEM []byte
	cert            *x509.Certificate
	key             *ecdsa.PrivateKey
}

func (l leaf) serial() string { return serial(l.cert) }

// issue signs tmpl (validity defaults to an hour either side of now).
func (ca *testCA) issue(t *testing.T, tmpl *x509.Certificate) leaf {
	t.Helper()
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(time.Hour)
	}
	key := newKey(t)
	der, cert, err := sign(tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	return leaf{certPEM: pemCert(der), keyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), cert: cert, key: key}
}

// intermediate issues a CA certificate under ca.
func (ca *testCA) intermediate(t *testing.T, name string) *testCA {
	t.Helper()
	l := ca.issue(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	})
	return &testCA{cert: l.cert, key: l.key, pem: l.certPEM}
}

func (ca *testCA) server(t *testing.T, hosts ...string) leaf {
	t.Helper()
	return ca.issue(t, serverTemplate(hosts))
}

func (ca *testCA) client(t *testing.T, name string) leaf {
	t.Helper()
	return ca.issue(t, clientTemplate(name))
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// replace writes data to path the way most tools rotate files: into a
// temporary file in the same directory, then renamed over path.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, data, 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

// rewrite writes data into path in place (same inode). If the write left
// size and modification time as they were (a coarse file system clock), it
// writes again a moment later, as a real rotation would happen later.
func rewrite(t *testing.T, path string, data []byte) {
	t.Helper()
	before := filewatch.Stat(path)
	for range 100 {
		require.NoError(t, os.WriteFile(path, data, 0o600))
		if filewatch.Stat(path) != before {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s looks unchanged after rewriting it", path)
}

// pairIn writes l as cert and key files into a new directory.
func pairIn(t *testing.T, l leaf) KeyPair {
	t.Helper()
	dir := t.TempDir()
	kp := KeyPair{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}
	require.NoError(t, os.WriteFile(kp.CertFile, l.certPEM, 0o600))
	require.NoError(t, os.WriteFile(kp.KeyFile, l.keyPEM, 0o600))
	return kp
}

// caFileWith writes the given CAs' certificates into one new file.
func caFileWith(t *testing.T, cas ...*testCA) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.crt")
	require.NoError(t, os.WriteFile(path, bundle(cas...), 0o600))
	return path
}

func bundle(cas ...*testCA) []byte {
	var b []byte
	for _, ca := range cas {
		b = append(b, ca.pem...)
	}
	return b
}

func newLog() (hclog.Logger, *logbuf.Buffer) {
	buf := &logbuf.Buffer{}
	return hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: buf}), buf
}

// serverSerial makes one new connection with ccfg and returns the serial
// of the certificate the server presented.
func serverSerial(t *testing.T, addr string, ccfg *tls.Config) (string, error) {
	t.Helper()
	p, err := check(t, addr, credentials.NewTLS(ccfg))
	if err != nil {
		return "", err
	}
	return serial(p.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0]), nil
}

const (
	warnCert = "TLS certificate files changed but cannot be used"
	warnCA   = "CA file changed but cannot be used"
)

func TestServerCertificateReplacedByRename(t *testing.T) {
	pki := genPKI(t)
	ca := caOf(t, pki)
	old := ca.server(t, "localhost", "127.0.0.1")
	kp := pairIn(t, old)
	log, logs := newLog()
	clk := fakeclock.New(time.Now())
	var loads []Loaded
	var mu sync.Mutex
	scfg, err := ServerConfig(kp.CertFile, kp.KeyFile, "", log, WithClock(clk.Now),
		WithOnLoad(func(l Loaded) { mu.Lock(); loads = append(loads, l); mu.Unlock() }))
	require.NoError(t, err)
	s := serve(t, scfg)
	ccfg, err := ClientConfig(pki.CAFile, "", "", "127.0.0.1", quiet)
	require.NoError(t, err)

	// A connection that stays up across the rotation.
	cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(credentials.NewTLS(ccfg)))
	require.NoError(t, err)
	defer cc.Close()
	onOld := func() string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var p peer.Peer
		_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
		require.NoError(t, err)
		return serial(p.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0])
	}
	assert.Equal(t, old.serial(), onOld())

	renewed := ca.server(t, "localhost", "127.0.0.1")
	replace(t, kp.KeyFile, renewed.keyPEM)
	replace(t, kp.CertFile, renewed.certPEM)

	got, err := serverSerial(t, s.addr, ccfg)
	require.NoError(t, err)
	assert.Equal(t, old.serial(), got, "within the check interval the files are not looked at")

	clk.Advance(DefaultCheckInterval)
	got, err = serverSerial(t, s.addr, ccfg)
	require.NoError(t, err)
	assert.Equal(t, renewed.serial(), got, "a new connection gets the new certificate")
	assert.Equal(t, old.serial(), onOld(), "the connection made before keeps its session")

	reloaded := logs.Lines("[INFO]", "reloaded TLS certificate", kp.CertFile, "serial="+renewed.serial(),
		"not_after="+timestamp(renewed.cert.NotAfter), "subject=CN=localhost")
	assert.Len(t, reloaded, 1, logs.String())
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, loads, 2, "at start and at the reload")
	assert.Equal(t, Loaded{File: kp.CertFile, NotAfter: old.cert.NotAfter}, loads[0])
	assert.Equal(t, Loaded{File: kp.CertFile, NotAfter: renewed.cert.NotAfter}, loads[1])
}

func TestServerCertificateBehindSwappedSymlink(t *testing.T) {
	// A Kubernetes secret volume: tls.crt -> ..data/tls.crt, ..data ->
	// ..<timestamp>; an update writes a new timestamped directory and
	// renames a new ..data link over the old one.
	ca := newCA(t, "ca")
	dir := t.TempDir()
	version := func(name string, l leaf) {
		require.NoError(t, os.Mkdir(filepath.Join(dir, name), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name, "tls.crt"), l.certPEM, 0o600))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name, "tls.key"), l.keyPEM, 0o600))
		require.NoError(t, os.Symlink(name, filepath.Join(dir, "..data_tmp")))
		require.NoError(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	}
	first := ca.server(t, "127.0.0.1")
	version("..2026_01_01_00_00_00.1", first)
	for _, f := range []string{"tls.crt", "tls.key"} {
		require.NoError(t, os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)))
	}
	scfg, err := ServerConfig(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), "", quiet, WithCheckInterval(0))
	require.NoError(t, err)
	s := serve(t, scfg)
	ccfg, err := ClientConfig(caFileWith(t, ca), "", "", "127.0.0.1", quiet)
	require.NoError(t, err)
	got, err := serverSerial(t, s.addr, ccfg)
	require.NoError(t, err)
	assert.Equal(t, first.serial(), got)

	second := ca.server(t, "127.0.0.1")
	version("..2026_02_01_00_00_00.2", second)
	require.NoError(t, os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_00_00.1")))
	got, err = serverSerial(t, s.addr, ccfg)
	require.NoError(t, err)
	assert.Equal(t, second.serial(), got)
}

// A file renamed into place with the size and modification time of the one
// it replaces (cp -p, tar, rsync -t keep times) differs only in its inode.
func TestReplacementWithSameSizeAndTimeIsSeen(t *testing.T) {
	ca := newCA(t, "ca")
	old := ca.server(t, "127.0.0.1")
	kp := pairIn(t, old)
	scfg, err := ServerConfig(kp.CertFile, kp.KeyFile, "", quiet, WithCheckInterval(0))
	require.NoError(t, err)
	s := serve(t, scfg)
	ccfg, err := ClientConfig(caFileWith(t, ca), "", "", "127.0.0.1", quiet)
	require.NoError(t, err)

	renewed := ca.server(t, "127.0.0.1")
	for len(renewed.certPEM) != len(old.certPEM) || len(renewed.keyPEM) != len(old.keyPEM) {
		renewed = ca.server(t, "127.0.0.1")
	}
	for path, data := range map[string][]byte{kp.CertFile: renewed.certPEM, kp.KeyFile: renewed.keyPEM} {
		fi, err := os.Stat(path)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path+".new", data, 0o600))
		require.NoError(t, os.Chtimes(path+".new", fi.ModTime(), fi.ModTime()))
		require.NoError(t, os.Rename(path+".new", path))
		after, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, fi.Size(), after.Size())
		require.Equal(t, fi.ModTime(), after.ModTime())
	}
	got, err := serverSerial(t, s.addr, ccfg)
	require.NoError(t, err)
	assert.Equal(t, renewed.serial(), got)
}

func TestClientCAFileExtendedToNewCA(t *testing.T) {
	caA, caB := newCA(t, "ca-a"), newCA(t, "ca-b")
	srv := pairIn(t, caA.server(t, "127.0.0.1"))
	clientCA := caFileWith(t, caA)
	log, logs := newLog()
	clk := fakeclock.New(time.Now())
	scfg, err := ServerConfig(srv.CertFile, srv.KeyFile, clientCA, log, WithClock(clk.Now))
	require.NoError(t, err)
	s := serve(t, scfg)
	serverCA := caFileWith(t, caA)

	zoneA := pairIn(t, caA.client(t, "zone-a"))
	zoneB := pairIn(t, caB.client(t, "zone-b"))
	clientA, err := ClientConfig(serverCA, zoneA.CertFile, zoneA.KeyFile, "127.0.0.1", quiet)
	require.NoError(t, err)
	clientB, err := ClientConfig(serverCA, zoneB.CertFile, zoneB.KeyFile, "127.0.0.1", quiet)
	require.NoError(t, err)

	_, err = check(t, s.addr, credentials.NewTLS(clientB))
	assertUnavailable(t, err)

	replace(t, clientCA, bundle(caA, caB))
	_, err = check(t, s.addr, credentials.NewTLS(clientB))
	assertUnavailable(t, err)
	assert.EqualValues(t, 0, s.calls.Load(), "a certificate from the new CA is refused until the file is looked at again")

	clk.Advance(DefaultCheckInterval)
	_, err = check(t, s.addr, credentials.NewTLS(clientB))
	require.NoError(t, err)
	assert.Equal(t, "zone-b", s.peerCN.Load())
	_, err = check(t, s.addr, credentials.NewTLS(clientA))
	require.NoError(t, err)
	assert.Equal(t, "zone-a", s.peerCN.Load(), "the old CA is still trusted")
	assert.Len(t, logs.Lines("[INFO]", "reloaded CA certificates", clientCA, "certificates=2", "CN=ca-b"), 1, logs.String())

	// Dropping a CA from the file takes effect the same way.
	replace(t, clientCA, bundle(caB))
	clk.Advance(DefaultCheckInterval)
	_, err = check(t, s.addr, credentials.NewTLS(clientA))
	assertUnavailable(t, err)
	assert.EqualValues(t, 2, s.calls.Load())
}

func TestZoneClientCertificateRotated(t *testing.T) {
	ca := newCA(t, "ca")
	srv := pairIn(t, ca.server(t, "127.0.0.1"))
	scfg, err := ServerConfig(srv.CertFile, srv.KeyFile, caFileWith(t, ca), quiet)
	require.NoError(t, err)
	s := serve(t, scfg)

	first := ca.client(t, "zone-a")
	zone := pairIn(t, first)
	log, logs := newLog()
	clk := fakeclock.New(time.Now())
	ccfg, err := ClientConfig(caFileWith(t, ca), zone.CertFile, zone.KeyFile, "127.0.0.1", log, WithClock(clk.Now))
	require.NoError(t, err)
	_, err = check(t, s.addr, credentials.NewTLS(ccfg))
	require.NoError(t, err)
	assert.Equal(t, first.serial(), s.peerSerial.Load())

	second := ca.client(t, "zone-a")
	replace(t, zone.KeyFile, second.keyPEM)
	replace(t, zone.CertFile, second.certPEM)
	clk.Advance(DefaultCheckInterval)
	_, err = check(t, s.addr, credentials.NewTLS(ccfg))
	require.NoError(t, err)
	assert.Equal(t, second.serial(), s.peerSerial.Load(), "global sees the zone's new certificate")
	assert.Len(t, logs.Lines("[INFO]", "reloaded TLS certificate", zone.CertFile, "serial="+second.serial()), 1, logs.String())
}

func TestHalfWrittenPairKeepsOldUntilKeyArrives(t *testing.T) {
	ca := newCA(t, "ca")
	old := ca.server(t, "127.0.0.1")
	kp := pairIn(t, old)
	log, logs := newLog()
	clk := fakeclock.New(time.Now())
	scfg, err := ServerConfig(kp.CertFile, kp.KeyFile, "", log, WithClock(clk.Now))
	require.NoError(t, err)
	s := serve(t, scfg)
	ccfg, err := ClientConfig(caFileWith(t, ca), "", "", "127.0.0.1", quiet)
	require.NoError(t, err)

	renewed := ca.server(t, "127.0.0.1")
	rewrite(t, kp.CertFile, renewed.certPEM) // the key comes in a second write
	for range 3 {
		clk.Advance(DefaultCheckInterval)
		got, err := serverSerial(t, s.addr, ccfg)
		require.NoError(t, err)
		assert.Equal(t, old.serial(), got, "the old pair is still served")
	}
	warned := logs.Lines("[WARN]", warnCert, kp.CertFile, kp.KeyFile, "private key does not match public key")
	assert.Len(t, warned, 1, "one warning per change: %s", logs.String())

	rewrite(t, kp.KeyFile, renewed.keyPEM)
	clk.Advance(DefaultCheckInterval)
	got, err := serverSerial(t, s.addr, ccfg)
	require.NoError(t, err)
	assert.Equal(t, renewed.serial(), got, "adopted once the key matches")
	assert.Len(t, logs.Lines("reloaded TLS certificate", "serial="+renewed.serial()), 1, logs.String())
}

func TestBrokenFilesKeepTheLastGoodMaterial(t *testing.T) {
	ca := newCA(t, "ca")
	other := newCA(t, "other")
	expired := ca.issue(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "127.0.0.1"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	for _, tc := range []struct {
		name   string
		break_ func(t *testing.T, kp KeyPair, clientCA string)
		warn   []string
	}{
		{"garbage certificate", func(t *testing.T, kp KeyPair, _ string) { replace(t, kp.CertFile, []byte("not a certificate")) },
			[]string{warnCert, "no PEM CERTIFICATE block found"}},
		{"garbage key", func(t *testing.T, kp KeyPair, _ string) {
			replace(t, kp.KeyFile, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n"))
		},
			[]string{warnCert, "failed to find any PEM data in key input"}},
		{"certificate removed", func(t *testing.T, kp KeyPair, _ string) { require.NoError(t, os.Remove(kp.CertFile)) },
			[]string{warnCert, "no such file or directory"}},
		{"expired certificate", func(t *testing.T, kp KeyPair, _ string) {
			replace(t, kp.KeyFile, expired.keyPEM)
			replace(t, kp.CertFile, expired.certPEM)
		}, []string{warnCert, "expired at"}},
		{"garbage client CA", func(t *testing.T, _ KeyPair, clientCA string) { replace(t, clientCA, []byte("garbage")) },
			[]string{warnCA, "client CA file " + "CAFILE" + ": no PEM certificates found"}},
		{"client CA half written", func(t *testing.T, _ KeyPair, clientCA string) {
			replace(t, clientCA, other.pem[:len(other.pem)/2])
		}, []string{warnCA, "no PEM certificates found"}},
		{"client CA removed", func(t *testing.T, _ KeyPair, clientCA string) { require.NoError(t, os.Remove(clientCA)) },
			[]string{warnCA, "no such file or directory"}},
		// Another user appends their CA to a client CA file all can write.
		{"client CA writable by others", func(t *testing.T, _ KeyPair, clientCA string) {
			require.NoError(t, os.Chmod(clientCA, 0o666))
			f, err := os.OpenFile(clientCA, os.O_APPEND|os.O_WRONLY, 0)
			require.NoError(t, err)
			_, err = f.Write(other.pem)
			require.NoError(t, err)
			require.NoError(t, f.Close())
		}, []string{warnCA, "client CA file CAFILE has mode 0666", "chmod go-w CAFILE"}},
		{"key readable by others", func(t *testing.T, kp KeyPair, _ string) {
			renewed := ca.server(t, "127.0.0.1")
			replace(t, kp.CertFile, renewed.certPEM)
			replace(t, kp.KeyFile, renewed.keyPEM)
			require.NoError(t, os.Chmod(kp.KeyFile, 0o644))
		}, []string{warnCert, "TLS key file", "mode 0644", "chmod 600"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good := ca.server(t, "127.0.0.1")
			kp := pairIn(t, good)
			clientCA := caFileWith(t, ca)
			log, logs := newLog()
			scfg, err := ServerConfig(kp.CertFile, kp.KeyFile, clientCA, log, WithCheckInterval(0))
			require.NoError(t, err)
			s := serve(t, scfg)
			zone := pairIn(t, ca.client(t, "zone-a"))
			ccfg, err := ClientConfig(caFileWith(t, ca), zone.CertFile, zone.KeyFile, "127.0.0.1", quiet)
			require.NoError(t, err)

			tc.break_(t, kp, clientCA)
			for range 2 {
				got, err := serverSerial(t, s.addr, ccfg)
				require.NoError(t, err, "the running listener keeps working")
				assert.Equal(t, good.serial(), got)
			}
			var warn []string
			for _, w := range tc.warn {
				warn = append(warn, strings.ReplaceAll(w, "CAFILE", clientCA))
			}
			assert.Len(t, logs.Lines(append(warn, "[WARN]")...), 1, logs.String())

			// A good file is adopted again.
			renewed := ca.server(t, "127.0.0.1")
			replace(t, kp.KeyFile, renewed.keyPEM)
			replace(t, kp.CertFile, renewed.certPEM)
			replace(t, clientCA, ca.pem)
			got, err := serverSerial(t, s.addr, ccfg)
			require.NoError(t, err)
			assert.Equal(t, renewed.serial(), got)
		})
	}
}

func TestClientCAFileRotated(t *testing.T) {
	caA, caB, caC := newCA(t, "ca-a"), newCA(t, "ca-b"), newCA(t, "ca-c")
	srv := pairIn(t, caA.server(t, "127.0.0.1"))
	scfg, err := ServerConfig(srv.CertFile, srv.KeyFile, "", quiet, WithCheckInterval(0))
	require.NoError(t, err)
	s := serve(t, scfg)
	serveCert := func(l leaf) {
		replace(t, srv.KeyFile, l.keyPEM)
		replace(t, srv.CertFile, l.certPEM)
	}

	caFile := caFileWith(t, caA)
	log, logs := newLog()
	clk := fakeclock.New(time.Now())
	ccfg, err := ClientConfig(caFile, "", "", "127.0.0.1", log, WithClock(clk.Now))
	require.NoError(t, err)
	_, err = serverSerial(t, s.addr, ccfg)
	require.NoError(t, err)

	fromB := caB.server(t, "127.0.0.1")
	serveCert(fromB)
	_, err = serverSerial(t, s.addr, ccfg)
	assertUnavailable(t, err, "certificate signed by unknown authority")

	replace(t, caFile, caB.pem)
	_, err = serverSerial(t, s.addr, ccfg)
	assertUnavailable(t, err, "certificate signed by unknown authority")

	clk.Advance(DefaultCheckInterval)
	got, err := serverSerial(t, s.addr, ccfg)
	require.NoError(t, err, "accepted after the reload")
	assert.Equal(t, fromB.serial(), got)
	assert.Len(t, logs.Lines("[INFO]", "reloaded CA certificates", caFile, "CN=ca-b"), 1, logs.String())

	// Still as strict as before: a certificate that does not chain to the
	// current CA file (the old CA's included), a wrong name.
	serveCert(caA.server(t, "127.0.0.1"))
	_, err = serverSerial(t, s.addr, ccfg)
	assertUnavailable(t, err, "certificate signed by unknown authority")
	serveCert(caC.server(t, "127.0.0.1"))
	_, err = serverSerial(t, s.addr, ccfg)
	assertUnavailable(t, err, "certificate signed by unknown authority")
	serveCert(caB.server(t, "global.example.com", "127.0.0.2"))
	_, err = serverSerial(t, s.addr, ccfg)
	assertUnavailable(t, err, "not 127.0.0.1")

	serveCert(fromB)
	got, err = serverSerial(t, s.addr, ccfg)
	require.NoError(t, err)
	assert.Equal(t, fromB.serial(), got)
}

// TestClientVerificationIsAsStrictAsGo runs the same server chains against
// ClientConfig's verification and Go's own (RootCAs and ServerName): both
// must accept and refuse the same ones.
func TestClientVerificationIsAsStrictAsGo(t *testing.T) {
	root := newCA(t, "root")
	stranger := newCA(t, "stranger")
	inter := root.intermediate(t, "intermediate")
	expiredInter := root.issue(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "expired intermediate"}, KeyUsage: x509.KeyUsageCertSign,
		BasicConstraintsValid: true, IsCA: true,
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
	})
	notCA := root.client(t, "not a CA")
	serverTmpl := func(mod func(*x509.Certificate)) *x509.Certificate {
		c := &x509.Certificate{
			Subject:     pkix.Name{CommonName: "localhost"},
			DNSNames:    []string{"localhost"},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		if mod != nil {
			mod(c)
		}
		return c
	}
	chain := func(l leaf, above ...*x509.Certificate) tls.Certificate {
		c := tls.Certificate{Certificate: [][]byte{l.cert.Raw}, PrivateKey: l.key}
		for _, a := range above {
			c.Certificate = append(c.Certificate, a.Raw)
		}
		return c
	}
	good := root.issue(t, serverTmpl(nil))
	viaInter := inter.issue(t, serverTmpl(nil))
	for _, tc := range []struct {
		name       string
		cert       tls.Certificate
		serverName string
		ok         bool
	}{
		{"good, DNS name", chain(good), "localhost", true},
		{"good, IP address", chain(good), "127.0.0.1", true},
		{"wrong DNS name", chain(good), "global.example.com", false},
		{"wrong IP address", chain(good), "127.0.0.2", false},
		{"expired", chain(root.issue(t, serverTmpl(func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Minute)
		}))), "localhost", false},
		{"not yet valid", chain(root.issue(t, serverTmpl(func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)
		}))), "localhost", false},
		{"unknown CA", chain(stranger.issue(t, serverTmpl(nil))), "localhost", false},
		{"unknown CA sent along", chain(stranger.issue(t, serverTmpl(nil)), stranger.cert), "localhost", false},
		{"self-signed", chain(func() leaf {
			ss := newCA(t, "localhost")
			return leaf{cert: ss.cert, key: ss.key}
		}()), "localhost", false},
		{"client certificate only", chain(root.issue(t, serverTmpl(func(c *x509.Certificate) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}))), "localhost", false},
		{"through an intermediate", chain(viaInter, inter.cert), "localhost", true},
		{"intermediate not sent", chain(viaInter), "localhost", false},
		{"expired intermediate", chain((&testCA{cert: expiredInter.cert, key: expiredInter.key}).issue(t, serverTmpl(nil)), expiredInter.cert), "localhost", false},
		{"issued by a non-CA", chain((&testCA{cert: notCA.cert, key: notCA.key}).issue(t, serverTmpl(nil)), notCA.cert), "localhost", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := handshakeServer(t, &tls.Config{Certificates: []tls.Certificate{tc.cert}, MinVersion: MinVersion})
			roots := x509.NewCertPool()
			roots.AddCert(root.cert)
			goErr := handshake(addr, &tls.Config{RootCAs: roots, ServerName: tc.serverName, MinVersion: MinVersion})
			ours, err := ClientConfig(caFileWith(t, root), "", "", tc.serverName, quiet)
			require.NoError(t, err)
			ourErr := handshake(addr, ours)
			if tc.ok {
				require.NoError(t, goErr, "Go's verification")
				require.NoError(t, ourErr)
				return
			}
			require.Error(t, goErr, "Go's verification")
			require.Error(t, ourErr, "refused like Go refuses it: %v", goErr)
			var goVerr, ourVerr *tls.CertificateVerificationError
			require.ErrorAs(t, goErr, &goVerr)
			require.ErrorAs(t, ourErr, &ourVerr)
			// The two handshakes may fall in different seconds: the time
			// of verification is not part of the reason.
			now := regexp.MustCompile(`current time \S+ is`)
			same := func(err error) string { return now.ReplaceAllString(err.Error(), "current time NOW is") }
			assert.Equal(t, same(goVerr.Err), same(ourVerr.Err), "the same reason")
		})
	}
}

// handshakeServer accepts TLS connections with cfg on loopback, completes
// each handshake and closes the connection.
func handshakeServer(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			_ = conn.(*tls.Conn).Handshake()
			_ = conn.Close()
		}
	})
	t.Cleanup(func() {
		lis.Close()
		wg.Wait()
	})
	return lis.Addr().String()
}

// handshake dials addr and completes a TLS handshake with cfg.
func handshake(addr string, cfg *tls.Config) error {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

func TestClientConfigNeedsServerNameWithCAFile(t *testing.T) {
	caFile := caFileWith(t, newCA(t, "ca"))
	_, err := ClientConfig(caFile, "", "", "", quiet)
	require.Error(t, err)
	assert.Contains(t, err.Error(), caFile)
	assert.Contains(t, err.Error(), "no server name")

	// Without a CA file Go's own verification runs against the system
	// roots, with the dialed host as the name.
	cfg, err := ClientConfig("", "", "", "", quiet)
	require.NoError(t, err)
	assert.False(t, cfg.InsecureSkipVerify)
	assert.Nil(t, cfg.VerifyConnection)
}

func TestStartupWithBrokenFilesFails(t *testing.T) {
	ca := newCA(t, "ca")
	good := pairIn(t, ca.server(t, "127.0.0.1"))
	mismatched := pairIn(t, ca.server(t, "127.0.0.1"))
	require.NoError(t, os.WriteFile(mismatched.KeyFile, ca.server(t, "127.0.0.1").keyPEM, 0o600))

	_, err := ServerConfig(mismatched.CertFile, mismatched.KeyFile, "", quiet)
	require.Error(t, err)
	assert.Contains(t, err.Error(), mismatched.CertFile)
	assert.Contains(t, err.Error(), "private key does not match public key")

	missing := filepath.Join(t.TempDir(), "missing.crt")
	_, err = ServerConfig(good.CertFile, good.KeyFile, missing, quiet)
	require.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), missing)

	_, err = ClientConfig(caFileWith(t, ca), mismatched.CertFile, mismatched.KeyFile, "127.0.0.1", quiet)
	require.Error(t, err)
	assert.Contains(t, err.Error(), mismatched.CertFile)
}

func TestCheckInterval(t *testing.T) {
	ca := newCA(t, "ca")
	first := ca.server(t, "127.0.0.1")
	kp := pairIn(t, first)
	clk := fakeclock.New(time.Now())
	w, err := watchKeyPair(kp.CertFile, kp.KeyFile, quiet, newOptions([]Option{WithClock(clk.Now), WithCheckInterval(time.Minute)}))
	require.NoError(t, err)
	second := ca.server(t, "127.0.0.1")
	replace(t, kp.KeyFile, second.keyPEM)
	replace(t, kp.CertFile, second.certPEM)

	clk.Advance(time.Minute - time.Millisecond)
	assert.Equal(t, first.serial(), serial(w.Current().Leaf))
	clk.Advance(time.Millisecond)
	assert.Equal(t, second.serial(), serial(w.Current().Leaf))

	// Looking does not push the next look out: the minute counts from the
	// last look at the files.
	third := ca.server(t, "127.0.0.1")
	replace(t, kp.KeyFile, third.keyPEM)
	replace(t, kp.CertFile, third.certPEM)
	for range 5 {
		clk.Advance(10 * time.Second)
		assert.Equal(t, second.serial(), serial(w.Current().Leaf))
	}
	clk.Advance(10 * time.Second)
	assert.Equal(t, third.serial(), serial(w.Current().Leaf))
}

// In FIPS 140-3 mode Go restricts the chains it accepts beyond what
// VerifyConnection checks, so there the client keeps Go's verification.
func TestFIPSModeKeepsGoVerification(t *testing.T) {
	if os.Getenv("KDS_TLSUTIL_FIPS_CHILD") == "1" {
		require.True(t, fips140.Enabled())
		cfg, err := ClientConfig(caFileWith(t, newCA(t, "ca")), "", "", "localhost", quiet)
		require.NoError(t, err)
		assert.False(t, cfg.InsecureSkipVerify)
		assert.Nil(t, cfg.VerifyConnection)
		assert.NotNil(t, cfg.RootCAs)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFIPSModeKeepsGoVerification$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "GODEBUG=fips140=on", "KDS_TLSUTIL_FIPS_CHILD=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "--- PASS: TestFIPSModeKeepsGoVerification")
}

// The zone's certificate is offered the way Go offers Config.Certificates:
// only when the server's request accepts it (its CA list, its signature
// algorithms), else no certificate at all.
func TestClientCertificateOfferedLikeGo(t *testing.T) {
	caA, caB := newCA(t, "ca-a"), newCA(t, "ca-b")
	srv := caA.server(t, "127.0.0.1")
	fromB := caB.client(t, "zone-b")
	zone := pairIn(t, fromB)
	poolA := x509.NewCertPool()
	poolA.AddCert(caA.cert)
	for _, tc := range []struct {
		name    string
		server  *tls.Config
		wantErr string
	}{
		{"server asks for certificates from another CA", &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: poolA},
			"client didn't provide a certificate"},
		{"server names no CA", &tls.Config{ClientAuth: tls.RequireAnyClientCert}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.server.Certificates = []tls.Certificate{{Certificate: [][]byte{srv.cert.Raw}, PrivateKey: srv.key}}
			tc.server.MinVersion = MinVersion
			lis, err := tls.Listen("tcp", "127.0.0.1:0", tc.server)
			require.NoError(t, err)
			defer lis.Close()
			serverErr := func(client *tls.Config) string {
				t.Helper()
				got := make(chan string, 1)
				go func() {
					conn, err := lis.Accept()
					if err != nil {
						got <- err.Error()
						return
					}
					defer conn.Close()
					if err := conn.(*tls.Conn).Handshake(); err != nil {
						got <- err.Error()
						return
					}
					got <- ""
				}()
				conn, err := tls.Dial("tcp", lis.Addr().String(), client)
				require.NoError(t, err)
				_, _ = conn.Read(make([]byte, 1)) // lets the server finish (TLS 1.3 checks the client last)
				conn.Close()
				return <-got
			}
			goCert, err := tls.X509KeyPair(fromB.certPEM, fromB.keyPEM)
			require.NoError(t, err)
			goErr := serverErr(&tls.Config{RootCAs: poolA, ServerName: "127.0.0.1", Certificates: []tls.Certificate{goCert}, MinVersion: MinVersion})
			ours, err := ClientConfig(caFileWith(t, caA), zone.CertFile, zone.KeyFile, "127.0.0.1", quiet)
			require.NoError(t, err)
			ourErr := serverErr(ours)
			assert.Equal(t, goErr, ourErr)
			if tc.wantErr == "" {
				assert.Empty(t, ourErr)
			} else {
				assert.Contains(t, ourErr, tc.wantErr)
			}
		})
	}
}
