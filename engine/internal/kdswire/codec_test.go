package kdswire

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

const testTypeURL = "type.googleapis.com/kds.v1.Resource"

// response returns a response of n resources with values of size bytes,
// as the sync layer's servers send them.
func response(n, size int) *discovery.DeltaDiscoveryResponse {
	r := &discovery.DeltaDiscoveryResponse{
		SystemVersionInfo: "42",
		TypeUrl:           "SyncPolicy",
		Nonce:             "7",
		RemovedResources:  []string{"default/gone", "also-gone"},
	}
	for i := range n {
		v := bytes.Repeat([]byte{byte('a' + i%26)}, size)
		r.Resources = append(r.Resources, &discovery.Resource{
			Name:     fmt.Sprintf("default/res-%06d", i),
			Version:  fmt.Sprintf("v%d", i),
			Resource: &anypb.Any{TypeUrl: testTypeURL, Value: v},
		})
	}
	return r
}

func respMsg(r *discovery.DeltaDiscoveryResponse) *kdsv1.Message {
	return &kdsv1.Message{Kind: &kdsv1.Message_Response{Response: r}}
}

func reqMsg(r *discovery.DeltaDiscoveryRequest) *kdsv1.Message {
	return &kdsv1.Message{Kind: &kdsv1.Message_Request{Request: r}}
}

func batchMsg(ms ...*kdsv1.Message) *kdsv1.Message {
	return &kdsv1.Message{Kind: &kdsv1.Message_Batch{Batch: &kdsv1.Batch{Messages: ms}}}
}

func encode(t testing.TB, m proto.Message) []byte {
	t.Helper()
	bs, err := Codec{}.Marshal(m)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	defer bs.Free()
	return bs.Materialize()
}

// split turns b into a BufferSlice of pieces of at most n bytes, as gRPC
// hands over a message received in several frames.
func split(b []byte, n int) mem.BufferSlice {
	var bs mem.BufferSlice
	for len(b) > n {
		bs = append(bs, mem.SliceBuffer(b[:n]))
		b = b[n:]
	}
	return append(bs, mem.SliceBuffer(b))
}

func TestSchema(t *testing.T) {
	if err := schemaErr(); err != nil {
		t.Fatalf("the generated types changed; update kdswire's field lists: %v", err)
	}
}

// TestMarshalWritesProtobufsBytes: plain messages are written by hand,
// byte for byte as proto.Marshal writes them, and sized as proto.Size
// sizes them.
func TestMarshalWritesProtobufsBytes(t *testing.T) {
	empty := response(0, 0)
	empty.RemovedResources = nil
	noAny := response(2, 10)
	noAny.Resources[1].Resource = nil
	emptyAny := response(2, 10)
	emptyAny.Resources[0].Resource = &anypb.Any{}
	ack := &discovery.DeltaDiscoveryRequest{TypeUrl: "SyncPolicy", ResponseNonce: "7"}
	cases := map[string]*kdsv1.Message{
		"response":       respMsg(response(50, 1024)),
		"empty response": respMsg(empty),
		"no any":         respMsg(noAny),
		"empty any":      respMsg(emptyAny),
		"large values":   respMsg(response(3, 200<<10)),
		"request":        reqMsg(ack),
		"batch":          batchMsg(respMsg(response(3, 100)), reqMsg(ack), respMsg(empty)),
		"no kind":        {},
	}
	for name, m := range cases {
		t.Run(name, func(t *testing.T) {
			n, ok := (&sizer{check: true}).message(m)
			if !ok {
				t.Fatal("not taken by the direct encoder")
			}
			want, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if n != len(want) || Size(m) != len(want) {
				t.Fatalf("size %d / %d, proto.Size %d", n, Size(m), len(want))
			}
			if got := encode(t, m); !bytes.Equal(got, want) {
				t.Fatalf("encoded %d bytes differ from proto.Marshal's %d", len(got), len(want))
			}
			for _, refer := range []bool{false, true} {
				bs, err := marshal(m, n, refer)
				if err != nil {
					t.Fatal(err)
				}
				if got := bs.Materialize(); !bytes.Equal(got, want) {
					t.Fatalf("refer %v: encoded %d bytes differ from proto.Marshal's %d", refer, len(got), len(want))
				}
			}
		})
	}
}

// TestMarshalRefersToLargeValues: a large response's resource values go to
// the transport as they are, not copied.
func TestMarshalRefersToLargeValues(t *testing.T) {
	m := respMsg(response(100, 1024))
	bs, err := Codec{}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	at := map[*byte]bool{}
	for _, b := range bs {
		if d := b.ReadOnlyData(); len(d) > 0 {
			at[&d[0]] = true
		}
	}
	for i, r := range m.GetResponse().GetResources() {
		if !at[&r.GetResource().GetValue()[0]] {
			t.Fatalf("resource %d's value was copied", i)
		}
	}
	want, _ := proto.Marshal(m)
	if !bytes.Equal(bs.Materialize(), want) {
		t.Fatal("pieces differ from proto.Marshal's bytes")
	}
}

// TestMarshalLeavesTheRestToProtobuf: what the direct encoder does not
// write goes through protobuf, fields included, errors included.
func TestMarshalLeavesTheRestToProtobuf(t *testing.T) {
	withTTL := response(2, 10)
	withTTL.Resources[1].Ttl = durationpb.New(5)
	withAlias := response(2, 10)
	withAlias.Resources[0].Aliases = []string{"x"}
	withCP := response(1, 10)
	withCP.ControlPlane = &corev3.ControlPlane{Identifier: "global"}
	withUnknown := response(1, 10)
	withUnknown.Resources[0].ProtoReflect().SetUnknown([]byte{0x58, 0x01}) // field 11, varint
	for name, m := range map[string]*kdsv1.Message{
		"ttl": respMsg(withTTL), "aliases": respMsg(withAlias), "control plane": respMsg(withCP),
		"unknown field": respMsg(withUnknown), "batch with ttl": batchMsg(respMsg(withTTL)),
	} {
		t.Run(name, func(t *testing.T) {
			if _, ok := (&sizer{check: true}).message(m); ok {
				t.Fatal("taken by the direct encoder, which would drop the field")
			}
			got := encode(t, m)
			var back kdsv1.Message
			if err := proto.Unmarshal(got, &back); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(&back, m) {
				t.Fatal("round trip changed the message")
			}
		})
	}
	bad := response(1, 10)
	bad.Resources[0].Name = "bad\xff"
	if _, err := (Codec{}).Marshal(respMsg(bad)); err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Fatalf("invalid UTF-8 in a name: %v, want protobuf's UTF-8 error", err)
	}
	if _, err := (Codec{}).Marshal(&discovery.DeltaDiscoveryRequest{TypeUrl: "bad\xff"}); err == nil {
		t.Fatal("another message type with invalid UTF-8 was encoded")
	}
}

// TestUnmarshalSharesOneBuffer: resource values point into the one copy of
// the message, the rest is what proto.Unmarshal gives.
func TestUnmarshalSharesOneBuffer(t *testing.T) {
	want := respMsg(response(40, 1024))
	wire, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var got kdsv1.Message
	if err := Unmarshal(wire, &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, want) {
		t.Fatal("decoded message differs from the encoded one")
	}
	lo, hi := uintptr(unsafe.Pointer(&wire[0])), uintptr(unsafe.Pointer(&wire[len(wire)-1]))
	for i, r := range got.GetResponse().GetResources() {
		v := r.GetResource().GetValue()
		if p := uintptr(unsafe.Pointer(&v[0])); p < lo || p > hi {
			t.Fatalf("resource %d's value is a copy, not a slice of the message", i)
		}
		if cap(v) != len(v) {
			t.Fatalf("resource %d's value has room to grow into the next field (cap %d, len %d)", i, cap(v), len(v))
		}
		if r.GetResource().GetTypeUrl() != testTypeURL {
			t.Fatalf("resource %d's type URL %q", i, r.GetResource().GetTypeUrl())
		}
	}
	// Through the codec, from gRPC's frame-sized pieces.
	var viaCodec kdsv1.Message
	if err := (Codec{}).Unmarshal(split(wire, 16<<10), &viaCodec); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&viaCodec, want) {
		t.Fatal("codec-decoded message differs")
	}
}

// TestUnmarshalAllocations: decoding a response costs its strings (name and
// version per resource) and a handful of allocations per message, where
// protobuf allocates six per resource (the Resource, the Any, three strings
// and a copy of the value).
func TestUnmarshalAllocations(t *testing.T) {
	const n = 500
	wire, err := proto.Marshal(respMsg(response(n, 1024)))
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(20, func() {
		var m kdsv1.Message
		if err := Unmarshal(wire, &m); err != nil {
			t.Fatal(err)
		}
	})
	if limit := float64(2*n + 20); allocs > limit {
		t.Fatalf("%.0f allocations for %d resources, want at most %.0f", allocs, n, limit)
	}
}

func TestUnmarshalErrorsSayWhat(t *testing.T) {
	wire, err := proto.Marshal(respMsg(response(3, 100)))
	if err != nil {
		t.Fatal(err)
	}
	var m kdsv1.Message
	err = (Codec{}).Unmarshal(split(wire[:len(wire)-5], 64), &m)
	if err == nil || !strings.Contains(err.Error(), "kds message") {
		t.Fatalf("truncated message: %v, want an error naming the kds message", err)
	}
	bad := respMsg(response(1, 10))
	bad.GetResponse().Resources[0].Name = "x"
	wire, _ = proto.Marshal(bad)
	i := bytes.LastIndexByte(wire, 'x')
	wire[i] = 0xff
	err = (Codec{}).Unmarshal(split(wire, 64), &m)
	if err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Fatalf("invalid UTF-8 in a name: %v, want protobuf's UTF-8 error", err)
	}
}

// TestOtherMessagesUseTheDefaultCodec: a message of another service goes
// through gRPC's protobuf codec.
func TestOtherMessagesUseTheDefaultCodec(t *testing.T) {
	in := &discovery.DeltaDiscoveryRequest{TypeUrl: "t", ResourceNamesSubscribe: []string{"a"}}
	b := encode(t, in)
	var out discovery.DeltaDiscoveryRequest
	if err := (Codec{}).Unmarshal(split(b, 3), &out); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, &out) {
		t.Fatal("round trip changed the message")
	}
}

// TestUnmarshalEmptyResourcesCostWhatProtobufCosts: a response of empty
// resources (two bytes each on the wire) costs no more memory than
// protobuf's decoding of it: no Any is allocated for a resource without
// one.
func TestUnmarshalEmptyResourcesCostWhatProtobufCosts(t *testing.T) {
	const n = 100000
	wire := []byte{0x12}
	inner := bytes.Repeat([]byte{0x12, 0x00}, n)
	wire = protowire.AppendBytes(wire, inner)
	allocated := func(f func()) uint64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	var viaProto, viaCodec kdsv1.Message
	p := allocated(func() {
		if err := proto.Unmarshal(wire, &viaProto); err != nil {
			t.Fatal(err)
		}
	})
	c := allocated(func() {
		// Decoded without the refusal on receipt, which such a response
		// meets (TestResponsesThatWouldHoldManyTimesTheirSizeAreRefusedOnReceipt).
		if err := decode(wire, &viaCodec, false); err != nil {
			t.Fatal(err)
		}
	})
	if len(viaCodec.GetResponse().GetResources()) != n || !proto.Equal(&viaCodec, &viaProto) {
		t.Fatal("decoded messages differ")
	}
	if c > p+p/10 {
		t.Fatalf("the codec allocated %d bytes for %d empty resources, protobuf %d", c, n, p)
	}
}

// The messages of a batch are queued and released one by one (mux counts
// each alone), so a response of a batch must not keep the batch's other
// messages alive: here a request of 1 MiB (an unknown field) next to a
// response with one small value. The value may not point into the batch's
// bytes.
func TestBatchResponseDoesNotPinTheBatch(t *testing.T) {
	req := &discovery.DeltaDiscoveryRequest{TypeUrl: "t"}
	req.ProtoReflect().SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, 99, protowire.BytesType), make([]byte, 1<<20)))
	for _, m := range []*kdsv1.Message{
		batchMsg(respMsg(response(1, 10)), reqMsg(req)),
		batchMsg(reqMsg(req), respMsg(response(1, 10))),
		batchMsg(respMsg(response(1, 10)), respMsg(response(1, 1<<20))),
	} {
		wire, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var got kdsv1.Message
		if err := Unmarshal(wire, &got); err != nil {
			t.Fatal(err)
		}
		require(t, proto.Equal(&got, m), "decoded batch differs")
		lo, hi := uintptr(unsafe.Pointer(&wire[0])), uintptr(unsafe.Pointer(&wire[len(wire)-1]))
		for i, in := range got.GetBatch().GetMessages() {
			for _, r := range in.GetResponse().GetResources() {
				v := r.GetResource().GetValue()
				if p := uintptr(unsafe.Pointer(&v[0])); p >= lo && p <= hi {
					t.Errorf("message %d of the batch: a %d-byte value points into the %d-byte batch", i, len(v), len(wire))
				}
			}
		}
	}
}

func require(t *testing.T, ok bool, msg string) {
	t.Helper()
	if !ok {
		t.Fatal(msg)
	}
}

// mux counts a received response at its decoded size (Size), so its values
// may keep at most that many bytes alive. Bytes the decoded message does not
// hold (a value or a string field written twice: the last one wins) must
// not stay alive behind a value that points into the same buffer.
func TestValuesDoNotPinBytesTheResponseDoesNotHold(t *testing.T) {
	big := make([]byte, 1<<20)
	anyTwice := protowire.AppendBytes(protowire.AppendTag(nil, anyValue, protowire.BytesType), big)
	anyTwice = protowire.AppendBytes(protowire.AppendTag(anyTwice, anyValue, protowire.BytesType), []byte("small"))
	resTwice := protowire.AppendBytes(protowire.AppendTag(nil, resResource, protowire.BytesType), wrap(anyValue, big))
	resTwice = protowire.AppendBytes(protowire.AppendTag(resTwice, resResource, protowire.BytesType), wrap(anyValue, []byte("small")))
	var versions []byte
	for range 1 << 16 {
		versions = protowire.AppendBytes(protowire.AppendTag(versions, respSystemVersion, protowire.BytesType), []byte("1234567890"))
	}
	for name, resp := range map[string][]byte{
		"value twice in an Any":      wrap(respResources, append(wrap(resName, []byte("n")), wrap(resResource, anyTwice)...)),
		"Any twice in a resource":    wrap(respResources, append(wrap(resName, []byte("n")), resTwice...)),
		"system version 65536 times": append(versions, wrap(respResources, append(wrap(resName, []byte("n")), wrap(resResource, wrap(anyValue, []byte("small")))...))...),
	} {
		wire := wrap(msgResponse, resp)
		var want, got kdsv1.Message
		if err := proto.Unmarshal(wire, &want); err != nil {
			t.Fatal(err)
		}
		if err := Unmarshal(wire, &got); err != nil {
			t.Fatal(err)
		}
		require(t, proto.Equal(&got, &want), name+": decoded message differs")
		lo, hi := uintptr(unsafe.Pointer(&wire[0])), uintptr(unsafe.Pointer(&wire[len(wire)-1]))
		v := got.GetResponse().GetResources()[0].GetResource().GetValue()
		if p := uintptr(unsafe.Pointer(&v[0])); p >= lo && p <= hi {
			t.Errorf("%s: a %d-byte value of a response of Size %d keeps its %d-byte buffer alive", name, len(v), Size(&got), len(wire))
		}
	}
}

// A malformed message's error says where it is malformed: the field's path
// and offset, and what protobuf's wire format reader found.
func TestUnmarshalErrorsSayWhere(t *testing.T) {
	good := wrap(respResources, append(wrap(resName, []byte("a")), wrap(resResource, wrap(anyValue, []byte("v")))...))
	// The second resource's Any holds a value whose length runs past the
	// Any's end.
	badAny := append(protowire.AppendTag(nil, anyValue, protowire.BytesType), 50, 'x', 'y', 'z')
	bad := wrap(respResources, append(wrap(resName, []byte("b")), wrap(resResource, badAny)...))
	resp := append(append(wrap(respTypeURL, []byte("t")), good...), bad...)
	wire := wrap(msgResponse, resp)
	for _, data := range []mem.BufferSlice{split(wire, 7), split(wrap(msgBatch, wrap(batchMessages, wire)), 7)} {
		var m kdsv1.Message
		err := (Codec{}).Unmarshal(data, &m)
		if err == nil {
			t.Fatal("malformed message accepted")
		}
		for _, want := range []string{"response.resources[1].resource.value at byte", "unexpected EOF"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	}
	var m kdsv1.Message
	wire = wrap(msgResponse, append(wrap(respTypeURL, []byte("t")), good...))
	err := (Codec{}).Unmarshal(split(append(wire, 0x80), 7), &m)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("message at byte %d: field tag", len(wire))) {
		t.Errorf("truncated tag at the end: %v", err)
	}
}

// A batch nested far deeper than protobuf's recursion limit is refused
// (as any batch in a batch, before decoding), and finding where it is
// malformed does not follow it all the way down.
func TestUnmarshalDeepBatches(t *testing.T) {
	b := []byte{0x12, 0x05} // a response whose length runs past the end
	for range protowire.DefaultRecursionLimit/2 + 100 {
		b = wrap(msgBatch, wrap(batchMessages, b))
	}
	var m kdsv1.Message
	if err := (Codec{}).Unmarshal(split(b, 16<<10), &m); !errors.Is(err, ErrRefusedBatch) {
		t.Fatalf("got %v, want ErrRefusedBatch", err)
	}
	if err := proto.Unmarshal(b, &m); err == nil || !strings.Contains(err.Error(), "recursion depth") {
		t.Fatalf("protobuf: got %v, want its recursion depth error", err)
	}
	if where := locate(b); strings.Count(where, "batch") > protowire.DefaultRecursionLimit {
		t.Fatalf("locate followed the batches down: %.200s", where)
	}
}
