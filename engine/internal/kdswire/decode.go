package kdswire

import (
	"bytes"
	"unicode/utf8"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// Field numbers this package reads and writes (proto/kds/v1/kds.proto and
// envoy's discovery.proto; schemaErr checks them).
const (
	msgRequest  protowire.Number = 1
	msgResponse protowire.Number = 2
	msgBatch    protowire.Number = 3

	batchMessages protowire.Number = 1

	respSystemVersion protowire.Number = 1
	respResources     protowire.Number = 2
	respTypeURL       protowire.Number = 4
	respNonce         protowire.Number = 5
	respRemoved       protowire.Number = 6

	resVersion  protowire.Number = 1
	resResource protowire.Number = 2
	resName     protowire.Number = 3

	anyTypeURL protowire.Number = 1
	anyValue   protowire.Number = 2
)

// The first byte of a kds.v1.Message that carries a response or a batch
// (tag, length-delimited).
const (
	tagResponse = byte(msgResponse)<<3 | byte(protowire.BytesType)
	tagBatch    = byte(msgBatch)<<3 | byte(protowire.BytesType)
)

// decodeMessage decodes b, a kds.v1.Message, if it is in the plain form:
// exactly one field, a request, a response or (at depth 0) a batch of
// plain messages. ok is false for anything else, malformed input
// included; the caller then leaves the decision to proto.Unmarshal.
// Resource values are slices of b.
func decodeMessage(b []byte, depth int) (m *kdsv1.Message, ok bool) {
	num, v, rest, ok := nextBytesField(b)
	if !ok || len(rest) != 0 {
		return nil, false // truncated, or more than one field
	}
	switch num {
	case msgRequest:
		req, ok := decodeRequest(v, 1+2*depth)
		if !ok {
			return nil, false
		}
		return &kdsv1.Message{Kind: &kdsv1.Message_Request{Request: req}}, true
	case msgResponse:
		resp, ok := decodeResponse(v, 1+2*depth)
		if !ok || len(v) > responseSize(resp) {
			// A response whose bytes are more than it holds (a field
			// written twice: the last one wins) is left to protobuf,
			// which copies its values: mux counts a response at its
			// size, so its values may keep no more than that alive.
			return nil, false
		}
		return &kdsv1.Message{Kind: &kdsv1.Message_Response{Response: resp}}, true
	case msgBatch:
		if depth > 0 {
			return nil, false
		}
		count := 0
		if !scan(v, func(num protowire.Number, typ protowire.Type, _ []byte) bool {
			count++
			return num == batchMessages && typ == protowire.BytesType
		}) {
			return nil, false
		}
		batch := &kdsv1.Batch{Messages: make([]*kdsv1.Message, 0, count)}
		for len(v) > 0 {
			_, _, n := protowire.ConsumeTag(v)
			inner, vn := protowire.ConsumeBytes(v[n:])
			v = v[n+vn:]
			if count > 1 && len(inner) > 0 && inner[0] == tagResponse {
				// The messages of a batch are queued, counted and
				// released one by one (mux), so a response that shared
				// the batch's buffer would keep the other messages' bytes
				// alive for as long as it waits, uncounted: each
				// response gets a buffer of its own size.
				inner = bytes.Clone(inner)
			}
			im, ok := decodeMessage(inner, depth+1)
			if !ok {
				return nil, false
			}
			batch.Messages = append(batch.Messages, im)
		}
		return &kdsv1.Message{Kind: &kdsv1.Message_Batch{Batch: batch}}, true
	}
	return nil, false
}

// nested returns the options that decode a message found levels deep in a
// kds.v1.Message as proto.Unmarshal does when it decodes the whole: with
// what remains of protobuf's recursion limit at that depth, so that the
// codec accepts no deeper nesting than protobuf does.
func nested(levels int) proto.UnmarshalOptions {
	return proto.UnmarshalOptions{RecursionLimit: protowire.DefaultRecursionLimit - levels}
}

// scan walks the fields of b, calling each with the field's number, wire
// type and whole encoding (tag included) until it returns false. It
// reports whether every field was well formed and accepted.
func scan(b []byte, each func(num protowire.Number, typ protowire.Type, field []byte) bool) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 || !each(num, typ, b[:n+m]) {
			return false
		}
		b = b[n+m:]
	}
	return true
}

// nextBytesField takes the first field of b, which must be
// length-delimited: its number, its value and what follows it. ok is false
// for anything else, malformed input included.
func nextBytesField(b []byte) (num protowire.Number, v, rest []byte, ok bool) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || typ != protowire.BytesType {
		return 0, nil, nil, false
	}
	v, vn := protowire.ConsumeBytes(b[n:])
	if vn < 0 {
		return 0, nil, nil, false
	}
	return num, v, b[n+vn:], true
}

// anyChunk is how many Any structs decodeResponse allocates at a time.
const anyChunk = 256

// decodeResponse decodes a DeltaDiscoveryResponse. Its resources are
// decoded here (decodeResource; if one is not plain, ok is false and the
// caller leaves the whole message to protobuf-go), every other field by
// proto.Unmarshal with
// Merge, run by run of consecutive fields: the same result as decoding the
// whole message at once, since no other field touches resources.
//
// levels is how deep in the whole message the response is (1, or 3 in a
// batch): protobuf's recursion limit counts from the top.
func decodeResponse(b []byte, levels int) (*discovery.DeltaDiscoveryResponse, bool) {
	count := 0
	if !scan(b, func(num protowire.Number, typ protowire.Type, _ []byte) bool {
		if num == respResources && typ == protowire.BytesType {
			count++
		}
		return true
	}) {
		return nil, false
	}
	resp := &discovery.DeltaDiscoveryResponse{}
	if count > 0 {
		resp.Resources = make([]*discovery.Resource, 0, count)
	}
	// The response's Resource structs in one allocation (protobuf makes one
	// per entry, so an entry costs no more than it did), their Any structs
	// in chunks as resources that carry one arrive: a flood of empty
	// resources must not cost an Any each.
	res := make([]discovery.Resource, count)
	var anys []anypb.Any
	var typeURL string // the last type URL seen, shared by the next equal one
	merge := nested(levels)
	merge.Merge = true
	run := -1 // start of the current run of other fields
	for at := 0; at < len(b); {
		num, typ, n := protowire.ConsumeTag(b[at:])
		m := protowire.ConsumeFieldValue(num, typ, b[at+n:])
		if num != respResources || typ != protowire.BytesType {
			if run < 0 {
				run = at
			}
			at += n + m
			continue
		}
		if run >= 0 {
			if merge.Unmarshal(b[run:at], resp) != nil {
				return nil, false
			}
			run = -1
		}
		v, _ := protowire.ConsumeBytes(b[at+n:])
		at += n + m
		i := len(resp.Resources)
		r := &res[i]
		if len(anys) == 0 {
			anys = make([]anypb.Any, min(anyChunk, count-i))
		}
		if !decodeResource(v, r, &anys[0], &typeURL) {
			// Not plain: the whole message goes to protobuf-go, after
			// the codec estimated, deep, what such entries hold decoded
			// (refuseMessage).
			return nil, false
		}
		if r.Resource == &anys[0] {
			anys = anys[1:]
		}
		resp.Resources = append(resp.Resources, r)
	}
	if run >= 0 && merge.Unmarshal(b[run:], resp) != nil {
		return nil, false
	}
	return resp, true
}

// decodeResource decodes b into r (and its Any into a) if every field is
// a name, a version or a resource, each length-delimited and valid
// (UTF-8 for strings). A field seen twice is decoded as protobuf does: the
// last string wins, a second Any merges into the first. *typeURL is shared
// with the caller so that equal type URLs share one string.
func decodeResource(b []byte, r *discovery.Resource, a *anypb.Any, typeURL *string) bool {
	for len(b) > 0 {
		num, v, rest, ok := nextBytesField(b)
		if !ok {
			return false
		}
		b = rest
		switch num {
		case resName, resVersion:
			if !utf8.Valid(v) {
				return false
			}
			if num == resName {
				r.Name = string(v)
			} else {
				r.Version = string(v)
			}
		case resResource:
			if !decodeAny(v, a, typeURL) {
				return false
			}
			r.Resource = a
		default:
			return false
		}
	}
	return true
}

// decodeAny decodes b into a (merging, as protobuf does for a repeated
// message field occurrence). The value is a slice of b, capped so that an
// append to it cannot write into what follows.
func decodeAny(b []byte, a *anypb.Any, typeURL *string) bool {
	for len(b) > 0 {
		num, v, rest, ok := nextBytesField(b)
		if !ok {
			return false
		}
		b = rest
		switch num {
		case anyTypeURL:
			if string(v) != *typeURL {
				if !utf8.Valid(v) {
					return false
				}
				*typeURL = string(v)
			}
			a.TypeUrl = *typeURL
		case anyValue:
			a.Value = v[:len(v):len(v)]
		default:
			return false
		}
	}
	return true
}
