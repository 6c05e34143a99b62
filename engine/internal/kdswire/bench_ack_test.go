package kdswire

import (
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// BenchmarkUnmarshalAnswer decodes the small requests of the hot path as
// gRPC hands them to the codec (one buffer): an ACK, an ACK with an xDS
// client's node, and a NACK with a rejection list of 20 resources.
func BenchmarkUnmarshalAnswer(b *testing.B) {
	ack := &discovery.DeltaDiscoveryRequest{TypeUrl: "kds.io/MeshTimeout", ResponseNonce: "0000000000000042"}
	withNode := proto.Clone(ack).(*discovery.DeltaDiscoveryRequest)
	withNode.Node = &core.Node{Id: "zone-1", Cluster: "kds", UserAgentName: "envoy"}
	var rs []*kdsv1.RejectedResource
	for range 20 {
		rs = append(rs, &kdsv1.RejectedResource{Name: "default/web-timeouts", Version: "v42"})
	}
	a, err := anypb.New(&kdsv1.Rejection{Resources: rs})
	if err != nil {
		b.Fatal(err)
	}
	nack := proto.Clone(ack).(*discovery.DeltaDiscoveryRequest)
	nack.ErrorDetail = &status.Status{Code: 3, Message: "20 resources refused", Details: []*anypb.Any{a}}
	for _, c := range []struct {
		name string
		r    *discovery.DeltaDiscoveryRequest
	}{{"ack", ack}, {"node", withNode}, {"nack", nack}} {
		wire, err := proto.Marshal(&kdsv1.Message{Kind: &kdsv1.Message_Request{Request: c.r}})
		if err != nil {
			b.Fatal(err)
		}
		data := split(wire, len(wire))
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(wire)))
			b.ReportAllocs()
			for b.Loop() {
				var m kdsv1.Message
				if err := (Codec{}).Unmarshal(data, &m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
