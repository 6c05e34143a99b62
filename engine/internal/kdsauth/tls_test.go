package kdsauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
	"github.com/kds-engine/kds-engine/engine/internal/tlsutil"
	"github.com/kds-engine/kds-engine/engine/internal/token"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// The whole edge as global and a zone run it: mTLS on the port, the token
// sent by TokenFileCredentials in its default (TLS-only) mode, the identity
// reaching the handler.
func TestTokenOverMutualTLS(t *testing.T) {
	pki, err := tlsutil.GeneratePKI(filepath.Join(t.TempDir(), "pki"), []string{"localhost", "127.0.0.1"}, []string{"zone-a"})
	require.NoError(t, err)
	scfg, err := tlsutil.ServerConfig(pki.Server.CertFile, pki.Server.KeyFile, pki.CAFile, hclog.NewNullLogger())
	require.NoError(t, err)

	iss := newIssuer(t, time.Now())
	verifier, err := token.NewVerifier([]ed25519.PublicKey{iss.PublicKey()}, testAudience)
	require.NoError(t, err)
	refused := &recorder{}
	logs := &logbuf.Buffer{}
	auth, err := NewAuthenticator(verifier, hclog.New(&hclog.LoggerOptions{Output: logs}), WithOnRefused(refused.record))
	require.NoError(t, err)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	kds := &echoKDS{}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(scfg)), grpc.StreamInterceptor(auth.StreamInterceptor()))
	kdsv1.RegisterKDSServer(srv, kds)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})

	tok, err := iss.Generate("zone-a", time.Hour)
	require.NoError(t, err)
	e := &env{tokenDir: t.TempDir()}
	creds, err := NewTokenFileCredentials(e.tokenFile(t, tok))
	require.NoError(t, err)
	require.True(t, creds.RequireTransportSecurity())
	ccfg, err := tlsutil.ClientConfig(pki.CAFile, pki.Clients["zone-a"].CertFile, pki.Clients["zone-a"].KeyFile, "127.0.0.1", hclog.NewNullLogger())
	require.NoError(t, err)

	session := func(zone string) (string, error) {
		cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(ccfg)), grpc.WithPerRPCCredentials(creds))
		require.NoError(t, err)
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		stream, err := kdsv1.NewKDSClient(cc).Session(metadata.AppendToOutgoingContext(ctx, MetadataZone, zone))
		if err != nil {
			return "", err
		}
		msg, err := stream.Recv()
		if err != nil {
			return "", err
		}
		return msg.GetResponse().GetSystemVersionInfo(), nil
	}

	zone, err := session("zone-a")
	require.NoError(t, err)
	assert.Equal(t, "zone-a", zone)

	// A valid certificate does not make up for a token of another zone.
	_, err = session("zone-b")
	assertRefusedLogged(t, err, logs, ReasonZoneMismatch)
	assert.Equal(t, []refusal{{"zone-b", ReasonZoneMismatch}}, refused.all())
	assert.EqualValues(t, 1, kds.calls.Load())
}

// issueClient signs a client certificate with the PKI's CA: subject CN cn
// and the given URI SANs.
func issueClient(t *testing.T, pki tlsutil.PKI, cn string, uris ...*url.URL) tlsutil.KeyPair {
	t.Helper()
	caPEM, err := os.ReadFile(pki.CAFile)
	require.NoError(t, err)
	block, _ := pem.Decode(caPEM)
	ca, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	keyPEM, err := os.ReadFile(pki.CAKeyFile)
	require.NoError(t, err)
	block, _ = pem.Decode(keyPEM)
	caKey, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		URIs:         uris,
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	dir := t.TempDir()
	kp := tlsutil.KeyPair{CertFile: filepath.Join(dir, "c.crt"), KeyFile: filepath.Join(dir, "c.key")}
	require.NoError(t, os.WriteFile(kp.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(kp.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))
	return kp
}

// Under mTLS with WithClientCertZone, a zone's certificate opens sessions
// for the zone it names (URI SAN kds-zone://NAME) only: the certificate of
// zone-a with a token of zone-b is refused, as is a certificate that names
// no zone (only a common name); without the option both pass on the token.
func TestClientCertificateMustNameTheTokensZone(t *testing.T) {
	pki, err := tlsutil.GeneratePKI(filepath.Join(t.TempDir(), "pki"), []string{"127.0.0.1"}, []string{"zone-a"})
	require.NoError(t, err)
	scfg, err := tlsutil.ServerConfig(pki.Server.CertFile, pki.Server.KeyFile, pki.CAFile, hclog.NewNullLogger())
	require.NoError(t, err)
	iss := newIssuer(t, time.Now())
	verifier, err := token.NewVerifier([]ed25519.PublicKey{iss.PublicKey()}, testAudience)
	require.NoError(t, err)

	serve := func(opts ...Option) (addr string, logs *logbuf.Buffer) {
		logs = &logbuf.Buffer{}
		auth, err := NewAuthenticator(verifier, hclog.New(&hclog.LoggerOptions{Output: logs}), opts...)
		require.NoError(t, err)
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(scfg)), grpc.StreamInterceptor(auth.StreamInterceptor()))
		kdsv1.RegisterKDSServer(srv, &echoKDS{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.Serve(lis)
		}()
		t.Cleanup(func() {
			srv.Stop()
			<-done
		})
		return lis.Addr().String(), logs
	}
	session := func(addr string, kp tlsutil.KeyPair, zone string) (string, error) {
		ccfg, err := tlsutil.ClientConfig(pki.CAFile, kp.CertFile, kp.KeyFile, "127.0.0.1", hclog.NewNullLogger())
		require.NoError(t, err)
		tok, err := iss.Generate(zone, time.Hour)
		require.NoError(t, err)
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(ccfg)))
		require.NoError(t, err)
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, MetadataZone, zone, MetadataAuthorization, "Bearer "+tok)
		stream, err := kdsv1.NewKDSClient(cc).Session(ctx)
		if err != nil {
			return "", err
		}
		msg, err := stream.Recv()
		if err != nil {
			return "", err
		}
		return msg.GetResponse().GetSystemVersionInfo(), nil
	}
	certA := pki.Clients["zone-a"]
	cnOnly := issueClient(t, pki, "zone-b")
	otherURI := issueClient(t, pki, "zone-b", &url.URL{Scheme: "kds-zone", Host: "zone-b", Path: "/x"}, &url.URL{Scheme: "spiffe", Host: "zone-b"})

	strict, logs := serve(WithClientCertZone())
	zone, err := session(strict, certA, "zone-a")
	require.NoError(t, err, "the certificate names its zone")
	assert.Equal(t, "zone-a", zone)
	_, err = session(strict, certA, "zone-b")
	assertRefusedLogged(t, err, logs, ReasonCertificateMismatch, "names zones zone-a", "token is for zone zone-b", "kds-zone://zone-b")
	_, err = session(strict, cnOnly, "zone-b")
	assertRefusedLogged(t, err, logs, ReasonCertificateMismatch, "names no zone", "CN=zone-b")
	_, err = session(strict, otherURI, "zone-b")
	assertRefusedLogged(t, err, logs, ReasonCertificateMismatch, "names no zone")

	// Relaxed (no per-zone certificates): the token alone decides.
	relaxed, _ := serve()
	zone, err = session(relaxed, certA, "zone-b")
	require.NoError(t, err)
	assert.Equal(t, "zone-b", zone)
}

// Without a verified client certificate (no mTLS) the option refuses
// every session rather than skip the check.
func TestClientCertZoneWithoutCertificateRefuses(t *testing.T) {
	iss := newIssuer(t, time.Now())
	verifier, err := token.NewVerifier([]ed25519.PublicKey{iss.PublicKey()}, testAudience)
	require.NoError(t, err)
	logs := &logbuf.Buffer{}
	auth, err := NewAuthenticator(verifier, hclog.New(&hclog.LoggerOptions{Output: logs}), WithClientCertZone())
	require.NoError(t, err)
	tok, err := iss.Generate("zone-a", time.Hour)
	require.NoError(t, err)
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(MetadataZone, "zone-a", MetadataAuthorization, "Bearer "+tok))
	_, err = auth.Authenticate(ctx, "/m")
	assertRefusedLogged(t, err, logs, ReasonCertificateMismatch, "no verified client certificate")
}
