package kdswire

import (
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// A received message waits in the peer's inbound queue (mux) counted
// against a byte budget that bounds what a peer can make this side hold.
// A response's encoding says little about that: each resource entry, 2
// bytes on the wire when empty, becomes an envoy Resource struct, an Any
// and a pointer decoded (a response of empty entries held 72x its
// encoding, see TestResponsesHoldNoMoreThanTheyAreCounted). Measure counts
// a message at what it holds decoded, at most: its encoded size plus the
// decoded structures of each entry of the lists a KDS response carries,
// with the sizes taken from the structs the codec (and protobuf-go, on its
// fallback path) allocates; the most measured per entry beyond its bytes
// was 235.
const (
	// ResourceOverhead is what a decoded response holds per resource entry
	// on top of the entry's encoded bytes: a discovery.Resource (136 bytes,
	// 144 when protobuf-go allocates it alone), an anypb.Any (80), the
	// slice's pointer to it (8, 16 with append's growth), and the
	// allocation rounding of its name, version and (protobuf-go) value.
	ResourceOverhead = 288
	// RemovedOverhead is what a decoded response holds per removed name on
	// top of its encoded bytes: a string header (16, 32 with append's
	// growth) and the rounding of the name's allocation.
	RemovedOverhead = 32
	// OtherExpansion is how many times its encoded size a response that
	// is not in the plain form kds-engine sends (fields other than a system
	// version, a type URL, a nonce, resources of a name, a version and an
	// Any, and removed names) is counted at: above what protobuf-go built
	// from every shape measured (76.8x at most: an empty message in a
	// repeated field, 2 bytes, becomes a struct of up to 144 bytes and a
	// pointer). kds-engine sends such a response only to refuse a type it
	// does not serve, a few hundred bytes.
	OtherExpansion = 80
)

// Measure returns m's encoded size (Size) and what m holds decoded at
// most, in bytes, as received by Codec.Unmarshal: for a response, its size
// plus ResourceOverhead per resource and RemovedOverhead per removed name,
// or OtherExpansion times its size when it is not in the plain form; for a
// request, its size (lists of names kept encoded until Expand are counted
// as such; the lists of messages that decode to many times their size are
// refused on receipt, see ErrRefusedRequest); for a batch, its size plus
// what its responses hold beyond theirs.
func Measure(m *kdsv1.Message) (size, held int) {
	switch k := m.GetKind().(type) {
	case *kdsv1.Message_Response:
		if fastEncode && len(m.ProtoReflect().GetUnknown()) == 0 {
			if n, ok := (&sizer{}).response(k.Response); ok {
				size = tagLen + protowire.SizeBytes(n)
				return size, size + plainExtra(k.Response)
			}
		}
		size = proto.Size(m)
		return size, OtherExpansion * size
	case *kdsv1.Message_Batch:
		size = Size(m)
		held = size
		for _, inner := range k.Batch.GetMessages() {
			if inner.GetResponse() != nil {
				n, h := Measure(inner)
				held += h - n
			}
		}
		return size, held
	}
	size = Size(m)
	return size, size
}

// plainExtra is what r, a response in the plain form, holds decoded beyond
// its encoded bytes.
func plainExtra(r *discovery.DeltaDiscoveryResponse) int {
	return ResourceOverhead*len(r.Resources) + RemovedOverhead*len(r.RemovedResources)
}
