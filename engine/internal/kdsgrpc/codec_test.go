package kdsgrpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// echoKDS answers every message of a Session with the same message.
type echoKDS struct{ kdsv1.UnimplementedKDSServer }

func (echoKDS) Session(s kdsv1.KDS_SessionServer) error {
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.Send(m); err != nil {
			return err
		}
	}
}

func codecMessages() []*kdsv1.Message {
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: "SyncPolicy", Nonce: "1", SystemVersionInfo: "9", RemovedResources: []string{"gone"}}
	for i := range 200 {
		resp.Resources = append(resp.Resources, &discovery.Resource{
			Name: fmt.Sprintf("default/p-%03d", i), Version: fmt.Sprint(i),
			Resource: &anypb.Any{TypeUrl: "type.googleapis.com/kds.v1.Resource", Value: bytes.Repeat([]byte{byte(i)}, 1000)},
		})
	}
	ack := &discovery.DeltaDiscoveryRequest{TypeUrl: "SyncPolicy", ResponseNonce: "1", InitialResourceVersions: map[string]string{"a": "1"}}
	return []*kdsv1.Message{
		{Kind: &kdsv1.Message_Response{Response: resp}},
		{Kind: &kdsv1.Message_Request{Request: ack}},
		{Kind: &kdsv1.Message_Batch{Batch: &kdsv1.Batch{Messages: []*kdsv1.Message{
			{Kind: &kdsv1.Message_Request{Request: ack}},
			{Kind: &kdsv1.Message_Response{Response: resp}},
		}}}},
	}
}

// TestCodecInteroperates: the KDS codec (ServerOptions, DialOptions) and
// gRPC's default protobuf codec on the other end understand each other
// both ways, as a zone and a global of an older build do.
func TestCodecInteroperates(t *testing.T) {
	for _, tc := range []struct {
		name      string
		server    func() *grpc.Server
		dialExtra []grpc.DialOption
	}{
		{"new zone, older global", func() *grpc.Server { return grpc.NewServer() }, DialOptions(Config{})},
		{"older zone, new global", func() *grpc.Server { return NewServer(Config{}) }, nil},
		{"both new", func() *grpc.Server { return NewServer(Config{}) }, DialOptions(Config{})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serveWith(t, tc.server(), echoKDS{})
			conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, tc.dialExtra...)...)
			require.NoError(t, err)
			defer conn.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s, err := kdsv1.NewKDSClient(conn).Session(ctx)
			require.NoError(t, err)
			for i, m := range codecMessages() {
				require.NoError(t, s.Send(m))
				got, err := s.Recv()
				require.NoError(t, err)
				require.True(t, proto.Equal(m, got), "message %d changed on the way", i)
			}
			require.NoError(t, s.CloseSend())
			_, err = s.Recv()
			require.ErrorIs(t, err, io.EOF)
		})
	}
}
