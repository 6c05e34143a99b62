package kdswire

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// The messages locate descends into: for a message kind, the kind of each
// length-delimited field it holds (and the field's name).
type field struct {
	name string
	kind string
}

var known = map[string]map[protowire.Number]field{
	"message": {msgRequest: {"request", ""}, msgResponse: {"response", "response"}, msgBatch: {"batch", "batch"}},
	"batch":   {batchMessages: {"messages", "message"}},
	"response": {
		respSystemVersion: {"system_version_info", ""}, respResources: {"resources", "resource"},
		respTypeURL: {"type_url", ""}, respNonce: {"nonce", ""}, respRemoved: {"removed_resources", ""},
	},
	"resource": {resVersion: {"version", ""}, resResource: {"resource", "any"}, resName: {"name", ""}},
	"any":      {anyTypeURL: {"type_url", ""}, anyValue: {"value", ""}},
}

// locate returns where b, a kds.v1.Message protobuf refused, is not well
// formed protobuf: the path of the field (as far as this package knows the
// messages) and its offset in b, with what is wrong. It returns "" when it
// finds nothing wrong with the wire format (protobuf refused b for another
// reason, such as invalid UTF-8, which its error names).
func locate(b []byte) string {
	return walk(b, 0, "message", "message", 0)
}

// maxLocateDepth bounds how deep walk descends: a hostile message may nest
// batches far deeper than the messages the sync layer sends (protobuf
// refuses those, and locate is called then).
const maxLocateDepth = 6

func walk(b []byte, at int, kind, path string, depth int) string {
	index := 0 // of the next entry of the kind's repeated field
	for off := 0; off < len(b); {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return fmt.Sprintf("%s at byte %d: field tag: %v", path, at+off, protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, b[off+n:])
		f, ok := known[kind][num]
		i := -1
		if kind == "batch" && num == batchMessages || kind == "response" && num == respResources {
			i = index
			index++
		}
		name := func() string {
			name := fmt.Sprintf("%s field %d", path, num)
			if ok {
				name = path + "." + f.name
			}
			if i >= 0 {
				name = fmt.Sprintf("%s[%d]", name, i)
			}
			return name
		}
		if m < 0 {
			return fmt.Sprintf("%s at byte %d (wire type %d): %v", name(), at+off, typ, protowire.ParseError(m))
		}
		if ok && f.kind != "" && typ == protowire.BytesType && depth < maxLocateDepth {
			v, _ := protowire.ConsumeBytes(b[off+n:])
			if where := walk(v, at+off+n+(m-len(v)), f.kind, name(), depth+1); where != "" {
				return where
			}
		}
		off += n + m
	}
	return ""
}
