package kdswire

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// wrap returns b as the bytes of field num of a message.
func wrap(num protowire.Number, b []byte) []byte {
	out := protowire.AppendTag(make([]byte, 0, len(b)+16), num, protowire.BytesType)
	return protowire.AppendBytes(out, b)
}

// The codec accepts exactly what proto.Unmarshal accepts also near
// protobuf's recursion limit: a resource's metadata nests
// google.protobuf.Value without bound, and decoding a resource on its own
// must not give it the depth of the messages around it. A request's node
// metadata nests the same way, but a node that large is refused on receipt
// (MaxNodeBytes) whatever its depth.
func TestUnmarshalKeepsProtobufsRecursionLimit(t *testing.T) {
	for _, where := range []string{"resource", "batched resource", "batched request"} {
		// A google.protobuf.Value nested in ListValues (two messages a
		// level), from well below the limit to above it.
		value := []byte{0x08, 0x00} // null_value
		for range protowire.DefaultRecursionLimit/2 - 16 {
			value = wrap(6, wrap(1, value))
		}
		agree, refused := 0, false
		for range 24 {
			value = wrap(6, wrap(1, value))
			// Struct{fields: {"": value}} in a map entry.
			st := wrap(1, append([]byte{0x0a, 0x00}, wrap(2, value)...))
			var msg []byte
			switch where {
			case "resource", "batched resource":
				// Metadata{filter_metadata: {"": st}} in a Resource.
				md := wrap(1, append([]byte{0x0a, 0x00}, wrap(2, st)...))
				// With a value 16 times the metadata's size: nested
				// Values cost ~60 times their bytes decoded, which the
				// codec refuses on receipt (MaxResponseExpansion)
				// whatever their depth.
				res := append(wrap(3, []byte("n")), wrap(9, md)...)
				res = append(res, wrap(2, wrap(2, make([]byte, 16*len(md))))...)
				msg = wrap(2, wrap(2, res))
				if where == "batched resource" {
					msg = wrap(3, append(wrap(1, msg), wrap(1, wrap(2, nil))...))
				}
			default:
				// Node{metadata: st} in a request, next to a response.
				msg = wrap(3, append(wrap(1, wrap(2, nil)), wrap(1, wrap(1, wrap(1, wrap(3, st))))...))
			}
			werr := proto.Unmarshal(msg, &kdsv1.Message{})
			gerr := Unmarshal(msg, &kdsv1.Message{})
			if where == "batched request" {
				if !errors.Is(gerr, ErrRefusedRequest) {
					t.Fatalf("%s, %d bytes: codec: %v, want the node refused", where, len(msg), gerr)
				}
				agree, refused = 1, true
				continue
			}
			if (werr == nil) != (gerr == nil) {
				t.Fatalf("%s, %d bytes: proto.Unmarshal: %v, codec: %v", where, len(msg), werr, gerr)
			}
			if werr != nil {
				refused = true
			} else {
				agree++
			}
		}
		if !refused || agree == 0 {
			t.Fatalf("%s: the nesting did not cross the recursion limit (%d accepted)", where, agree)
		}
	}
}
