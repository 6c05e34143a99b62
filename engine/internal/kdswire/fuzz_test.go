package kdswire

import (
	"bytes"
	"errors"
	"testing"
	"unsafe"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

func fuzzSeeds(f *testing.F) {
	withUnknown := response(2, 8)
	withUnknown.Resources[1].ProtoReflect().SetUnknown([]byte{0x58, 0x01})
	// An Any the direct decoder starts and gives up on (an unknown field
	// after its type URL); the next resource's Any must not inherit the
	// type URL.
	dirty := &anypb.Any{TypeUrl: "t"}
	dirty.ProtoReflect().SetUnknown([]byte{0x1a, 0x01, 'u'})
	dup := response(1, 4)
	for _, m := range []*kdsv1.Message{
		respMsg(response(3, 16)),
		respMsg(response(2, referMin+5)),
		respMsg(withUnknown),
		reqMsg(&discovery.DeltaDiscoveryRequest{TypeUrl: "t", ResponseNonce: "1", InitialResourceVersions: map[string]string{"a": "1"}}),
		batchMsg(respMsg(response(2, 4)), reqMsg(&discovery.DeltaDiscoveryRequest{TypeUrl: "t"})),
		respMsg(&discovery.DeltaDiscoveryResponse{Resources: []*discovery.Resource{{Name: "n", Resource: &anypb.Any{}}}}),
		// The first resource's Any is decoded before its aliases send it
		// to protobuf; the second's must not inherit its type URL.
		respMsg(&discovery.DeltaDiscoveryResponse{Resources: []*discovery.Resource{
			{Name: "a", Resource: &anypb.Any{TypeUrl: "t"}, Aliases: []string{"x"}},
			{Name: "b", Resource: &anypb.Any{Value: []byte("v")}},
		}}),
		respMsg(&discovery.DeltaDiscoveryResponse{Resources: []*discovery.Resource{
			{Name: "a", Resource: dirty},
			{Name: "b", Resource: &anypb.Any{Value: []byte("v")}},
		}}),
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// A resource with its name and its Any twice, and a response field
	// between two resources.
	b, _ := proto.Marshal(respMsg(dup))
	f.Add(append(bytes.Clone(b), 0x12, 0x0b, 0x12, 0x09, 0x1a, 0x01, 'x', 0x12, 0x04, 0x12, 0x02, 'v', 'w'))
	// A value written twice, the first one long: the response holds less
	// than its bytes (checkPinning).
	twice := append(wrap(anyValue, make([]byte, 100)), wrap(anyValue, []byte("v"))...)
	f.Add(wrap(msgResponse, wrap(respResources, wrap(resResource, twice))))
	f.Add([]byte{0x12, 0x00, 0x12, 0x00})
	f.Add([]byte{0x1a, 0x02, 0x0a, 0x00})
}

// FuzzUnmarshal: the codec decodes what proto.Unmarshal decodes, to an
// equal message, and refuses what it refuses.
func FuzzUnmarshal(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var want kdsv1.Message
		werr := proto.Unmarshal(b, &want)
		var got kdsv1.Message
		gerr := (Codec{}).Unmarshal(split(bytes.Clone(b), 7), &got)
		if gerr == nil {
			// What a queue's reader does: lists kept encoded are
			// decoded, and refused, when the request is taken.
			gerr = expandAll(&got)
		}
		if werr == nil && errors.Is(gerr, ErrRefusedRequest) {
			// What KDS does not use, refused on receipt, in the bytes
			// (before decoding).
			if refuseMessage(b, 0, true) == nil {
				t.Fatalf("codec refused what it should not: %v", gerr)
			}
			return
		}
		if werr == nil && errors.Is(gerr, ErrRefusedBatch) {
			// A batch kds-engine never sends (in a batch, or of
			// many messages), refused before decoding.
			if refuseMessage(b, 0, true) == nil {
				t.Fatalf("codec refused what it should not: %v", gerr)
			}
			return
		}
		if werr == nil && errors.Is(gerr, ErrRefusedResponse) {
			// A response that would hold many times its size decoded,
			// refused before decoding.
			if _, held := Measure(&want); refuseMessage(b, 0, true) == nil || held <= MaxResponseExpansion*len(b) {
				t.Fatalf("codec refused what it should not: %v", gerr)
			}
			return
		}
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("proto.Unmarshal: %v, codec: %v", werr, gerr)
		}
		if werr == nil && !proto.Equal(&got, &want) {
			t.Fatalf("decoded messages differ:\ncodec %v\nproto %v", &got, &want)
		}
		if werr == nil {
			checkPinning(t, bytes.Clone(b))
		}
	})
}

// checkPinning decodes b, which protobuf accepts, and checks that values
// pointing into b keep no more of it alive than mux counts: a response
// alone may share its message's buffer when its size (Size) covers it; a
// response of a batch of several messages may not share the batch's.
func checkPinning(t *testing.T, b []byte) {
	var m kdsv1.Message
	if err := Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 {
		return
	}
	lo, hi := uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&b[len(b)-1]))
	aliases := func(m *kdsv1.Message) bool {
		for _, r := range m.GetResponse().GetResources() {
			if v := r.GetResource().GetValue(); len(v) > 0 {
				if p := uintptr(unsafe.Pointer(&v[0])); p >= lo && p <= hi {
					return true
				}
			}
		}
		return false
	}
	if ms := m.GetBatch().GetMessages(); len(ms) > 1 {
		for i, in := range ms {
			if aliases(in) {
				t.Fatalf("response %d of a batch of %d shares the batch's %d bytes", i, len(ms), len(b))
			}
		}
		return
	}
	in := &m
	if ms := m.GetBatch().GetMessages(); len(ms) == 1 {
		in = ms[0]
	}
	// The wrapping (tags and lengths, a batch of one) may be written
	// longer than needed: at most 2 x 11 bytes each.
	if aliases(in) && len(b) > Size(&m)+44 {
		t.Fatalf("a response of Size %d shares a buffer of %d bytes", Size(&m), len(b))
	}
}

// FuzzMarshal: for every message proto.Unmarshal accepts, the codec writes
// bytes that decode to an equal message, sized as proto.Size sizes them,
// and for messages without maps the very bytes proto.Marshal writes.
func FuzzMarshal(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var m kdsv1.Message
		if proto.Unmarshal(b, &m) != nil {
			return
		}
		want, werr := proto.Marshal(&m)
		bs, gerr := Codec{}.Marshal(&m)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("proto.Marshal: %v, codec: %v", werr, gerr)
		}
		if werr != nil {
			return
		}
		got := bs.Materialize()
		bs.Free()
		if Size(&m) != proto.Size(&m) {
			t.Fatalf("Size %d, proto.Size %d", Size(&m), proto.Size(&m))
		}
		if len(got) != len(want) {
			t.Fatalf("codec wrote %d bytes, proto.Marshal %d", len(got), len(want))
		}
		if !hasMap(&m) && !bytes.Equal(got, want) {
			t.Fatal("codec's bytes differ from proto.Marshal's")
		}
		var back kdsv1.Message
		if err := proto.Unmarshal(got, &back); err != nil || !proto.Equal(&back, &m) {
			t.Fatalf("round trip: %v", err)
		}
		// The same message with every value left in place, whatever its
		// size.
		if n, ok := (&sizer{check: true}).message(&m); ok {
			bs, err := marshal(&m, n, true)
			if err != nil {
				t.Fatal(err)
			}
			if pieces := bs.Materialize(); !hasMap(&m) && !bytes.Equal(pieces, want) {
				t.Fatal("pieces differ from proto.Marshal's bytes")
			}
		}
	})
}

// hasMap reports whether m holds a request with a map, whose order
// proto.Marshal does not fix.
func hasMap(m *kdsv1.Message) bool {
	if len(m.GetRequest().GetInitialResourceVersions()) > 0 {
		return true
	}
	for _, in := range m.GetBatch().GetMessages() {
		if hasMap(in) {
			return true
		}
	}
	return false
}

// expandAll expands every request in m (Expand), as the reader of each
// request's queue does.
func expandAll(m *kdsv1.Message) error {
	if r := m.GetRequest(); r != nil {
		return Expand(r)
	}
	for _, im := range m.GetBatch().GetMessages() {
		if err := expandAll(im); err != nil {
			return err
		}
	}
	return nil
}
