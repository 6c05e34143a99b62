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

// BenchmarkUnmarshalBatch: four 1 MiB responses received as one batch
// (each response copied out of the batch's buffer into its own) against
// the same four received one by one, in the same run.
func BenchmarkUnmarshalBatch(b *testing.B) {
	var one []*kdsv1.Message
	for range 4 {
		one = append(one, respMsg(response(850, 1100)))
	}
	batch, err := proto.Marshal(batchMsg(one...))
	if err != nil {
		b.Fatal(err)
	}
	single, err := proto.Marshal(one[0])
	if err != nil {
		b.Fatal(err)
	}
	b.Run("batch", func(b *testing.B) {
		data := split(batch, 16<<10)
		b.SetBytes(int64(len(batch)))
		for b.Loop() {
			var m kdsv1.Message
			if err := (Codec{}).Unmarshal(data, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("alone", func(b *testing.B) {
		data := split(single, 16<<10)
		b.SetBytes(4 * int64(len(single)))
		for b.Loop() {
			for range 4 {
				var m kdsv1.Message
				if err := (Codec{}).Unmarshal(data, &m); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}

// BenchmarkResponseEstimate: the estimate of what a received response
// would hold decoded (refuseMessage), against decoding it (decode), on
// the same 4 MiB response in the same run.
func BenchmarkResponseEstimate(b *testing.B) {
	wire, err := proto.Marshal(benchResponse(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("estimate", func(b *testing.B) {
		for b.Loop() {
			if err := refuseMessage(wire, 0, false); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			if err := decode(wire, &kdsv1.Message{}, false); err != nil {
				b.Fatal(err)
			}
		}
	})
}
