package tlsutil

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// quiet discards the reload log of tests that do not look at it.
var quiet = hclog.NewNullLogger()

type server struct {
	addr  string
	calls atomic.Int32
	// peerCN is the common name of the last verified client certificate.
	peerCN atomic.Value
	// peerSerial is the serial number (hex) of that certificate.
	peerSerial atomic.Value
}

// serve runs a gRPC health server over real TCP loopback with cfg.
func serve(t *testing.T, cfg *tls.Config) *server {
	t.Helper()
	s := &server{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	count := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		s.calls.Add(1)
		if p, ok := peer.FromContext(ctx); ok {
			if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
				s.peerCN.Store(info.State.PeerCertificates[0].Subject.CommonName)
				s.peerSerial.Store(serial(info.State.PeerCertificates[0]))
			}
		}
		return handler(ctx, req)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)), grpc.UnaryInterceptor(count))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	s.addr = lis.Addr().String()
	return s
}

// check makes one health RPC and returns the peer info and error.
func check(t *testing.T, addr string, creds credentials.TransportCredentials) (*peer.Peer, error) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	require.NoError(t, err)
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var p peer.Peer
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
	return &p, err
}

func genPKI(t *testing.T, clients ...string) PKI {
	t.Helper()
	pki, err := GeneratePKI(filepath.Join(t.TempDir(), "pki"), []string{"localhost", "127.0.0.1"}, clients)
	require.NoError(t, err)
	return pki
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	block, _ := pem.Decode(data)
	require.NotNil(t, block)
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return cert
}

func TestGeneratePKIFiles(t *testing.T) {
	pki := genPKI(t, "zone-a", "zone-b")

	dir := filepath.Dir(pki.CAFile)
	info, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), info.Mode().Perm())

	keys := []string{pki.CAKeyFile, pki.Server.KeyFile, pki.Clients["zone-a"].KeyFile, pki.Clients["zone-b"].KeyFile}
	for _, k := range keys {
		info, err := os.Stat(k)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), k)
	}

	ca := readCert(t, pki.CAFile)
	assert.True(t, ca.IsCA)
	roots := x509.NewCertPool()
	roots.AddCert(ca)

	srv := readCert(t, pki.Server.CertFile)
	assert.Equal(t, []string{"localhost"}, srv.DNSNames)
	require.Len(t, srv.IPAddresses, 1)
	assert.Equal(t, "127.0.0.1", srv.IPAddresses[0].String())
	assert.WithinDuration(t, time.Now().Add(PKIValidity), srv.NotAfter, time.Hour)
	_, err = srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: "localhost"})
	require.NoError(t, err)

	cl := readCert(t, pki.Clients["zone-a"].CertFile)
	assert.Equal(t, "zone-a", cl.Subject.CommonName)
	_, err = cl.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	require.NoError(t, err)
	_, err = cl.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	assert.Error(t, err, "a client certificate cannot serve")

	// Regenerating over existing files keeps key files private.
	require.NoError(t, os.Chmod(pki.Server.KeyFile, 0o644))
	_, err = GeneratePKI(dir, []string{"localhost"}, nil)
	require.NoError(t, err)
	info, err = os.Stat(pki.Server.KeyFile)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
}

func TestGeneratePKIRejectsBadInput(t *testing.T) {
	_, err := GeneratePKI(t.TempDir(), nil, nil)
	assert.Error(t, err)
	for _, name := range []string{"", "../x", "a/b", ".."} {
		_, err = GeneratePKI(t.TempDir(), []string{"localhost"}, []string{name})
		assert.Error(t, err, name)
	}
}

func TestTLSWithCA(t *testing.T) {
	pki := genPKI(t)
	scfg, err := ServerConfig(pki.Server.CertFile, pki.Server.KeyFile, "", quiet)
	require.NoError(t, err)
	assert.Equal(t, uint16(tls.VersionTLS12), scfg.MinVersion)
	s := serve(t, scfg)

	ccfg, err := ClientConfig(pki.CAFile, "", "", "127.0.0.1", quiet)
	require.NoError(t, err)
	p, err := check(t, s.addr, credentials.NewTLS(ccfg))
	require.NoError(t, err)
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	require.True(t, ok)
	assert.Equal(t, uint16(tls.VersionTLS13), info.State.Version, "TLS 1.3 when both ends support it")

	// TLS 1.2 clients are still served.
	ccfg12, err := ClientConfig(pki.CAFile, "", "", "127.0.0.1", quiet)
	require.NoError(t, err)
	ccfg12.MaxVersion = tls.VersionTLS12
	p, err = check(t, s.addr, credentials.NewTLS(ccfg12))
	require.NoError(t, err)
	assert.Equal(t, uint16(tls.VersionTLS12), p.AuthInfo.(credentials.TLSInfo).State.Version)

	// Older versions are not.
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, pki.CAFile))
	old := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11} //nolint:gosec // testing refusal
	_, err = check(t, s.addr, credentials.NewTLS(old))
	assertUnavailable(t, err)

	// The server name can be set explicitly.
	named, err := ClientConfig(pki.CAFile, "", "", "localhost", quiet)
	require.NoError(t, err)
	_, err = check(t, s.addr, credentials.NewTLS(named))
	require.NoError(t, err)
	assert.EqualValues(t, 3, s.calls.Load())
}

func TestPlaintextClientAgainstTLSListenerFails(t *testing.T) {
	pki := genPKI(t)
	scfg, err := ServerConfig(pki.Server.CertFile, pki.Server.KeyFile, "", quiet)
	require.NoError(t, err)
	s := serve(t, scfg)

	_, err = check(t, s.addr, insecure.NewCredentials())
	assertUnavailable(t, err)
	assert.Zero(t, s.calls.Load())
}

func TestClientRefusesUntrustedOrMisnamedServer(t *testing.T) {
	pki := genPKI(t)
	other := genPKI(t)
	scfg, err := ServerConfig(pki.Server.CertFile, pki.Server.KeyFile, "", quiet)
	require.NoError(t, err)
	s := serve(t, scfg)

	wrongCA, err := ClientConfig(other.CAFile, "", "", "127.0.0.1", quiet)
	require.NoError(t, err)
	_, err = check(t, s.addr, credentials.NewTLS(wrongCA))
	assertUnavailable(t, err, "certificate")

	wrongName, err := ClientConfig(pki.CAFile, "", "", "global.example.com", quiet)
	require.NoError(t, err)
	_, err = check(t, s.addr, credentials.NewTLS(wrongName))
	assertUnavailable(t, err, "global.example.com")
	assert.Zero(t, s.calls.Load())
}

func TestMutualTLS(t *testing.T) {
	pki := genPKI(t, "zone-a")
	other := genPKI(t, "zone-a")
	scfg, err := ServerConfig(pki.Server.CertFile, pki.Server.KeyFile, pki.CAFile, quiet)
	require.NoError(t, err)
	assert.Equal(t, tls.RequireAndVerifyClientCert, scfg.ClientAuth)
	s := serve(t, scfg)

	good, err := ClientConfig(pki.CAFile, pki.Clients["zone-a"].CertFile, pki.Clients["zone-a"].KeyFile, "127.0.0.1", quiet)
	require.NoError(t, err)
	_, err = check(t, s.addr, credentials.NewTLS(good))
	require.NoError(t, err)
	assert.Equal(t, "zone-a", s.peerCN.Load())

	noCert, err := ClientConfig(pki.CAFile, "", "", "127.0.0.1", quiet)
	require.NoError(t, err)
	_, err = check(t, s.addr, credentials.NewTLS(noCert))
	assertUnavailable(t, err)

	foreign, err := ClientConfig(pki.CAFile, other.Clients["zone-a"].CertFile, other.Clients["zone-a"].KeyFile, "127.0.0.1", quiet)
	require.NoError(t, err)
	_, err = check(t, s.addr, credentials.NewTLS(foreign))
	assertUnavailable(t, err)

	assert.EqualValues(t, 1, s.calls.Load(), "only the client with a certificate from the CA got through")
}

func TestConfigErrorsNameTheFile(t *testing.T) {
	pki := genPKI(t, "zone-a")
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.crt")
	empty := filepath.Join(dir, "empty.pem")
	require.NoError(t, os.WriteFile(empty, []byte("nothing here"), 0o600))

	_, err := ServerConfig("", pki.Server.KeyFile, "", quiet)
	assert.ErrorContains(t, err, "--tls-cert-file")

	_, err = ServerConfig(missing, pki.Server.KeyFile, "", quiet)
	assert.ErrorContains(t, err, missing)
	assert.ErrorIs(t, err, os.ErrNotExist)

	_, err = ServerConfig(pki.Server.CertFile, filepath.Join(dir, "missing.key"), "", quiet)
	assert.ErrorContains(t, err, "missing.key")

	_, err = ServerConfig(empty, pki.Server.KeyFile, "", quiet)
	assert.ErrorContains(t, err, empty)
	assert.ErrorContains(t, err, "no PEM CERTIFICATE")

	// A certificate with someone else's key.
	_, err = ServerConfig(pki.Server.CertFile, pki.Clients["zone-a"].KeyFile, "", quiet)
	require.Error(t, err)
	assert.Contains(t, err.Error(), pki.Server.CertFile)
	assert.Contains(t, err.Error(), pki.Clients["zone-a"].KeyFile)

	_, err = ServerConfig(pki.Server.CertFile, pki.Server.KeyFile, empty, quiet)
	assert.ErrorContains(t, err, "client CA file "+empty+": no PEM certificates found")

	_, err = ClientConfig(empty, "", "", "localhost", quiet)
	assert.ErrorContains(t, err, "CA file "+empty)

	_, err = ClientConfig(pki.CAFile, pki.Clients["zone-a"].CertFile, "", "127.0.0.1", quiet)
	assert.ErrorContains(t, err, "--key-file")

	// No CA file: the system roots are used.
	cfg, err := ClientConfig("", "", "", "", quiet)
	require.NoError(t, err)
	assert.Nil(t, cfg.RootCAs)
}

func assertUnavailable(t *testing.T, err error, fragments ...string) {
	t.Helper()
	require.Error(t, err)
	st, ok := status.FromError(err)
	require.True(t, ok, "not a status error: %v", err)
	assert.Equal(t, codes.Unavailable, st.Code(), st.Message())
	for _, f := range fragments {
		assert.Contains(t, st.Message(), f)
	}
}

func TestExpiredCertificateIsRefusedAtLoad(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		Subject:   pkix.Name{CommonName: "old"},
		NotBefore: time.Now().Add(-48 * time.Hour),
		NotAfter:  time.Now().Add(-24 * time.Hour),
	}
	der, _, err := sign(tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kp := KeyPair{CertFile: filepath.Join(dir, "old.crt"), KeyFile: filepath.Join(dir, "old.key")}
	require.NoError(t, writePair(kp.CertFile, kp.KeyFile, der, key))

	_, err = ServerConfig(kp.CertFile, kp.KeyFile, "", quiet)
	require.Error(t, err)
	assert.Contains(t, err.Error(), kp.CertFile)
	assert.Contains(t, err.Error(), "expired at")
}

// GeneratePKI's client certificates name their zone the way global's zone
// check reads it, and nothing else counts as a zone.
func TestClientCertificatesNameTheirZone(t *testing.T) {
	pki, err := GeneratePKI(t.TempDir(), []string{"localhost"}, []string{"zone-a"})
	require.NoError(t, err)
	cl := readCert(t, pki.Clients["zone-a"].CertFile)
	assert.Equal(t, []string{"zone-a"}, CertificateZones(cl))
	assert.Equal(t, "kds-zone://zone-a", ZoneURI("zone-a").String())

	for _, raw := range []string{"kds-zone://zone-b/x", "kds-zone://zone-b:1", "kds-zone://u@zone-b", "kds-zone://zone-b?q", "spiffe://zone-b", "kds-zone:zone-b"} {
		u, err := url.Parse(raw)
		require.NoError(t, err)
		assert.Empty(t, CertificateZones(&x509.Certificate{URIs: []*url.URL{u}, DNSNames: []string{"zone-b"}, Subject: pkix.Name{CommonName: "zone-b"}}), raw)
	}
}
