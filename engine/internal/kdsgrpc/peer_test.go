package kdsgrpc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

func TestPeerFieldsNameTheClientCertificate(t *testing.T) {
	addr := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 40123}
	assert.Nil(t, peerFields(context.Background()), "no peer, no fields")
	assert.Equal(t, []any{"peer", "10.0.0.7:40123"},
		peerFields(peer.NewContext(context.Background(), &peer.Peer{Addr: addr})), "plaintext: the address only")

	notAfter := time.Date(2027, 3, 1, 12, 0, 0, 0, time.FixedZone("x", 3600))
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: "zone-a"}, SerialNumber: big.NewInt(0xbeef), NotAfter: notAfter}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: addr,
		AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}}})
	assert.Equal(t, []any{"peer", "10.0.0.7:40123",
		"client_cert_subject", "CN=zone-a", "client_cert_serial", "beef", "client_cert_not_after", "2027-03-01T11:00:00Z"},
		peerFields(ctx))

	ctx = peer.NewContext(context.Background(), &peer.Peer{Addr: addr, AuthInfo: credentials.TLSInfo{}})
	assert.Equal(t, []any{"peer", "10.0.0.7:40123"}, peerFields(ctx), "TLS without a client certificate")
}

func TestRevokedSessionEndsUnauthenticated(t *testing.T) {
	err := toStatus(fmt.Errorf("%w: token x", ErrCredentialsRevoked))
	st, ok := status.FromError(err)
	assert.True(t, ok)
	assert.Equal(t, codes.Unauthenticated, st.Code())
	assert.Contains(t, st.Message(), "token x")
}
