package kdswire

import (
	"testing"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/protobuf/proto"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// benchResponse is a response as global sends it during an initial sync:
// 3,400 resources of ~1.1 KiB, just under the 4 MiB max message size.
func benchResponse(b *testing.B) *kdsv1.Message {
	return respMsg(response(3400, 1100))
}

// BenchmarkUnmarshal decodes one 4 MiB response from 16 KiB pieces (gRPC's
// data frames) with gRPC's protobuf codec (proto) and with this codec
// (kdswire), in the same run.
func BenchmarkUnmarshal(b *testing.B) {
	wire, err := proto.Marshal(benchResponse(b))
	if err != nil {
		b.Fatal(err)
	}
	data := split(wire, 16<<10)
	for _, c := range []struct {
		name  string
		codec encoding.CodecV2
	}{{"proto", encoding.GetCodecV2(grpcproto.Name)}, {"kdswire", Codec{}}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(wire)))
			b.ReportAllocs()
			for b.Loop() {
				var m kdsv1.Message
				if err := c.codec.Unmarshal(data, &m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMarshal encodes the same response as the sender does: the mux
// sizes it (enqueue), then gRPC's codec writes it.
func BenchmarkMarshal(b *testing.B) {
	m := benchResponse(b)
	for _, c := range []struct {
		name  string
		codec encoding.CodecV2
		size  func(*kdsv1.Message) int
	}{
		{"proto", encoding.GetCodecV2(grpcproto.Name), func(m *kdsv1.Message) int { return proto.Size(m) }},
		{"kdswire", Codec{}, Size},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(proto.Size(m)))
			b.ReportAllocs()
			for b.Loop() {
				c.size(m)
				bs, err := c.codec.Marshal(m)
				if err != nil {
					b.Fatal(err)
				}
				bs.Free()
			}
		})
	}
}

// BenchmarkResponseSize: the size check a received response goes through
// (decodeMessage), to set against BenchmarkUnmarshal's kdswire in the same
// run.
func BenchmarkResponseSize(b *testing.B) {
	r := benchResponse(b).GetResponse()
	for b.Loop() {
		if responseSize(r) == 0 {
			b.Fatal("no size")
		}
	}
}
