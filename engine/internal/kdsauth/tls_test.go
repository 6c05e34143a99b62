package kdsauth

import (
	"context"
	"crypto/ed25519"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

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
	verifier, err := token.NewVerifier([]ed25519.PublicKey{iss.PublicKey()})
	require.NoError(t, err)
	refused := &recorder{}
	auth, err := NewAuthenticator(verifier, hclog.NewNullLogger(), WithOnRefused(refused.record))
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
	assertRefused(t, err, codes.Unauthenticated, ReasonZoneMismatch)
	assert.Equal(t, []refusal{{"zone-b", ReasonZoneMismatch}}, refused.all())
	assert.EqualValues(t, 1, kds.calls.Load())
}
