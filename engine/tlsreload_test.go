package engine

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
	"github.com/kds-engine/kds-engine/engine/internal/tlsutil"
)

// copyTo copies src to dir/name by writing a temporary file and renaming
// it over the target, the way certificate tools replace files.
func copyTo(t *testing.T, src, dir, name string) string {
	t.Helper()
	data, err := os.ReadFile(src)
	require.NoError(t, err)
	dst := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(dst+".tmp", data, 0o600))
	require.NoError(t, os.Rename(dst+".tmp", dst))
	return dst
}

// concat writes the contents of srcs into dir/name (by rename).
func concat(t *testing.T, dir, name string, srcs ...string) string {
	t.Helper()
	var all []byte
	for _, s := range srcs {
		data, err := os.ReadFile(s)
		require.NoError(t, err)
		all = append(all, data...)
	}
	dst := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(dst+".tmp", all, 0o600))
	require.NoError(t, os.Rename(dst+".tmp", dst))
	return dst
}

func leafOf(t *testing.T, certPath string) *x509.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(certPath, certPath[:len(certPath)-len(".crt")]+".key")
	require.NoError(t, err)
	return c.Leaf
}

// metricValue is the gauge value of name with label setting on n.
func metricValue(t *testing.T, n *node, name, setting string) (float64, bool) {
	return seriesValue(t, n, name, map[string]string{"setting": setting})
}

// A running global serves certificates replaced on disk on its KDS port
// and admin API, accepts zone certificates from a CA added to its client CA
// file, and keeps the zone's session up meanwhile.
func TestRunningGlobalPicksUpRotatedCertificates(t *testing.T) {
	caA, certA, keyA, clientsA, err := GenerateDemoPKI(filepath.Join(t.TempDir(), "a"), []string{"zone-a"})
	require.NoError(t, err)
	caB, certB, keyB, _, err := GenerateDemoPKI(filepath.Join(t.TempDir(), "b"), nil)
	require.NoError(t, err)

	live := t.TempDir()
	g := startNode(t, Config{Role: RoleGlobal, PluginsDir: builtinDir,
		TLSCertFile: copyTo(t, certA, live, "kds.crt"), TLSKeyFile: copyTo(t, keyA, live, "kds.key"),
		ClientCAFile:   copyTo(t, caA, live, "client-ca.crt"),
		APITLSCertFile: copyTo(t, certA, live, "api.crt"), APITLSKeyFile: copyTo(t, keyA, live, "api.key")})
	zone := startNode(t, zoneConfig(t, "zone-a", g, Config{PluginsDir: builtinDir, CAFile: caA,
		CertFile: clientsA["zone-a"][0], KeyFile: clientsA["zone-a"][1]}))
	create(t, g, &resource.Resource{Type: "Mesh", Name: "default", Spec: spec(map[string]any{})})
	create(t, g, meshTimeout("before", "1s"))
	eventually(t, func() bool { return find(zone, meshTimeout("before", "").Key()) != nil }, "zone syncs before the rotation")

	const expiry = "kds_tls_certificate_expiry_timestamp_seconds"
	oldLeaf, newLeaf := leafOf(t, certA), leafOf(t, certB)
	v, ok := metricValue(t, g, expiry, "tls-cert-file")
	require.True(t, ok)
	assert.Equal(t, float64(oldLeaf.NotAfter.Unix()), v)
	_, ok = metricValue(t, g, expiry, "client-ca-file")
	assert.True(t, ok)
	_, ok = metricValue(t, zone, expiry, "ca-file")
	assert.True(t, ok)
	_, ok = metricValue(t, zone, expiry, "cert-file")
	assert.True(t, ok)

	concat(t, live, "client-ca.crt", caA, caB)
	copyTo(t, keyB, live, "kds.key")
	copyTo(t, certB, live, "kds.crt")
	copyTo(t, keyB, live, "api.key")
	copyTo(t, certB, live, "api.crt")

	both := x509.NewCertPool()
	for _, f := range []string{caA, caB} {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		require.True(t, both.AppendCertsFromPEM(data))
	}
	zoneCert, err := tls.LoadX509KeyPair(clientsA["zone-a"][0], clientsA["zone-a"][1])
	require.NoError(t, err)
	presented := func(addr string, protos ...string) string {
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{
			RootCAs: both, ServerName: "localhost", NextProtos: protos, Certificates: []tls.Certificate{zoneCert}, MinVersion: tls.VersionTLS12}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err.Error()
		}
		defer conn.Close()
		return conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	kdsAddr := "127.0.0.1:" + portOf(g.e.KDSAddr().String())
	apiAddr := g.e.APIAddr().String()
	want := newLeaf.SerialNumber.String()
	require.Eventually(t, func() bool { return presented(kdsAddr, "h2") == want }, 30*time.Second, 50*time.Millisecond,
		"the KDS port presents the new certificate (last: %s)", presented(kdsAddr, "h2"))
	require.Eventually(t, func() bool { return presented(apiAddr) == want }, 30*time.Second, 50*time.Millisecond,
		"the admin API presents the new certificate")

	// The admin API still answers over the new certificate.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: both, MinVersion: tls.VersionTLS12}}}
	resp, err := client.Get("https://localhost:" + portOf(apiAddr) + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	v, _ = metricValue(t, g, expiry, "tls-cert-file")
	assert.Equal(t, float64(newLeaf.NotAfter.Unix()), v)
	v, _ = metricValue(t, g, expiry, "api-tls-cert-file")
	assert.Equal(t, float64(newLeaf.NotAfter.Unix()), v)

	// The zone's session was not interrupted.
	create(t, g, meshTimeout("after", "2s"))
	eventually(t, func() bool { return find(zone, meshTimeout("after", "").Key()) != nil }, "zone syncs after the rotation")
	assert.Equal(t, 1.0, metricSum(t, g, "kds_sessions_started_total", "zone-a"), "one session from start to end")
}

// renewCert issues a certificate like the one in certPath (subject, key
// usages, names, start of validity) from pki's CA, with a new key, a new serial and
// the expiry notAfter, and writes it with its key into a new directory.
func renewCert(t *testing.T, pki tlsutil.PKI, certPath string, notAfter time.Time) (cert, key string) {
	t.Helper()
	ca, err := tls.LoadX509KeyPair(pki.CAFile, pki.CAKeyFile)
	require.NoError(t, err)
	old := leafOf(t, certPath)
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	require.NoError(t, err)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial, Subject: old.Subject, URIs: old.URIs, DNSNames: old.DNSNames, IPAddresses: old.IPAddresses,
		KeyUsage: old.KeyUsage, ExtKeyUsage: old.ExtKeyUsage,
		NotBefore: old.NotBefore, NotAfter: notAfter,
	}, ca.Leaf, &priv.PublicKey, ca.PrivateKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	require.NoError(t, err)
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "renewed.crt"), filepath.Join(dir, "renewed.key")
	require.NoError(t, os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))
	return cert, key
}

// A running zone presents its client certificate, replaced on disk by one
// from the same CA with a new serial, on its next session with global,
// without a restart.
func TestRunningZonePresentsRotatedClientCertificate(t *testing.T) {
	pki, err := tlsutil.GeneratePKI(filepath.Join(t.TempDir(), "pki"), []string{"localhost", "127.0.0.1", "::1"}, []string{"zone-a"})
	require.NoError(t, err)
	gcfg := Config{Role: RoleGlobal, PluginsDir: builtinDir,
		TLSCertFile: pki.Server.CertFile, TLSKeyFile: pki.Server.KeyFile, ClientCAFile: pki.CAFile}
	g := startNode(t, gcfg)
	live := t.TempDir()
	zoneCert := copyTo(t, pki.Clients["zone-a"].CertFile, live, "zone.crt")
	zoneKey := copyTo(t, pki.Clients["zone-a"].KeyFile, live, "zone.key")
	zone := startNode(t, zoneConfig(t, "zone-a", g, Config{PluginsDir: builtinDir, CAFile: pki.CAFile,
		CertFile: zoneCert, KeyFile: zoneKey}))
	create(t, g, &resource.Resource{Type: "Mesh", Name: "default", Spec: spec(map[string]any{})})
	create(t, g, meshTimeout("before", "1s"))
	eventually(t, func() bool { return find(zone, meshTimeout("before", "").Key()) != nil }, "zone syncs before the rotation")

	const expiry = "kds_tls_certificate_expiry_timestamp_seconds"
	oldLeaf := leafOf(t, zoneCert)
	v, ok := metricValue(t, zone, expiry, "cert-file")
	require.True(t, ok)
	assert.Equal(t, float64(oldLeaf.NotAfter.Unix()), v)

	renewedCert, renewedKey := renewCert(t, pki, zoneCert, oldLeaf.NotAfter.Add(24*time.Hour))
	newLeaf := leafOf(t, renewedCert)
	require.Equal(t, oldLeaf.Issuer.String(), newLeaf.Issuer.String(), "the same CA")
	require.NotEqual(t, oldLeaf.SerialNumber, newLeaf.SerialNumber)
	copyTo(t, renewedKey, live, "zone.key")
	copyTo(t, renewedCert, live, "zone.crt")
	// The zone looks at its files at most once per check interval: let one
	// pass, so that its next handshake does.
	time.Sleep(tlsutil.DefaultCheckInterval)

	// A new session: global restarts on the same address and data, and
	// logs the certificate the zone presents.
	kdsAddr := g.e.KDSAddr().String()
	g.stop()
	var out logbuf.Buffer
	gcfg.KDSAddress, gcfg.DataDir = kdsAddr, g.e.cfg.DataDir
	g = startNodeLogging(t, gcfg, hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Info, Output: &out}))
	create(t, g, meshTimeout("after", "2s"))
	eventually(t, func() bool { return find(zone, meshTimeout("after", "").Key()) != nil }, "zone syncs after the rotation")
	started := out.Lines("session started", "zone=zone-a")
	require.Len(t, started, 1, "one new session:\n%s", out.String())
	assert.Contains(t, started[0], "client_cert_serial="+newLeaf.SerialNumber.Text(16), "the zone presents the new certificate")
	assert.Contains(t, started[0], "client_cert_not_after="+newLeaf.NotAfter.UTC().Format(time.RFC3339))
	assert.Equal(t, 1.0, metricSum(t, g, "kds_sessions_started_total", "zone-a"))
	v, _ = metricValue(t, zone, expiry, "cert-file")
	assert.Equal(t, float64(newLeaf.NotAfter.Unix()), v, "the zone reports the expiry of the certificate it now uses")
}
