package kdswire

import (
	"fmt"
	"runtime"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	must "github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

func heldRequest(n int) *discovery.DeltaDiscoveryRequest {
	held := make(map[string]string, n)
	for i := range n {
		held[fmt.Sprintf("default/name-%026d", i)] = "v-0000000000001"
	}
	return &discovery.DeltaDiscoveryRequest{
		TypeUrl: "type.googleapis.com/kds.v1.Resource/MeshTimeout", ResponseNonce: "7",
		ResourceNamesSubscribe: []string{"*"}, InitialResourceVersions: held,
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// decodeCopies decodes copies messages with dec, each into its own
// message, and returns them, what they hold together on the heap while all
// are kept, and the last decode's error.
func decodeCopies(copies int, dec func(*kdsv1.Message) error) (got []*kdsv1.Message, held int64, err error) {
	got = make([]*kdsv1.Message, copies)
	before := heapInUse()
	for i := range got {
		got[i] = &kdsv1.Message{}
		err = dec(got[i])
	}
	held = int64(heapInUse()) - int64(before)
	return got, held, err
}

// A subscription's held versions wait in the inbound queue as the bytes
// mux counts for them (the message's encoded size), not as a Go map about
// twice that size; Expand decodes them to what protobuf decodes.
func TestLargeRequestListsStayEncodedUntilExpand(t *testing.T) {
	want := &kdsv1.Message{Kind: &kdsv1.Message_Request{Request: heldRequest(50000)}}
	b, err := proto.Marshal(want)
	must.NoError(t, err)

	const copies = 8
	got := make([]*kdsv1.Message, copies)
	before := heapInUse()
	for i := range got {
		got[i] = &kdsv1.Message{}
		must.NoError(t, (Codec{}).Unmarshal(split(b, 7), got[i]))
	}
	held := int64(heapInUse()) - int64(before)
	t.Logf("%d requests of %d bytes held %d bytes (%.2f× their encoding)", copies, len(b), held, float64(held)/float64(copies*len(b)))
	assert.Less(t, held, int64(copies*len(b))*5/4, "a waiting request holds about its encoded size")
	for _, m := range got {
		r := m.GetRequest()
		assert.Empty(t, r.GetInitialResourceVersions(), "kept encoded until Expand")
		assert.Equal(t, want.GetRequest().GetTypeUrl(), r.GetTypeUrl(), "the type URL routes it: decoded at once")
		assert.Equal(t, "7", r.GetResponseNonce())
		assert.Equal(t, len(b), Size(m), "counted at what it holds")
	}
	runtime.KeepAlive(got)

	must.NoError(t, Expand(got[0].GetRequest()))
	assert.True(t, proto.Equal(want, got[0]), "Expand gives what protobuf decodes")
	assert.Empty(t, got[0].GetRequest().ProtoReflect().GetUnknown())
}

// A message protobuf decodes whole (not in the plain form: its request
// written twice, the last one wins) keeps its lists encoded too.
func TestLargeRequestListsStayEncodedWhenNotPlain(t *testing.T) {
	req := heldRequest(5000)
	inner, err := proto.Marshal(req)
	must.NoError(t, err)
	var b []byte
	for range 2 {
		b = protowire.AppendTag(b, msgRequest, protowire.BytesType)
		b = protowire.AppendBytes(b, inner)
	}
	var m kdsv1.Message
	must.NoError(t, (Codec{}).Unmarshal(split(b, 3), &m))
	assert.Empty(t, m.GetRequest().GetInitialResourceVersions())
	must.NoError(t, Expand(m.GetRequest()))
	var want kdsv1.Message
	must.NoError(t, proto.Unmarshal(b, &want))
	assert.True(t, proto.Equal(&want, &m))
}

// Small requests (ACKs, most subscriptions) decode at once.
func TestSmallRequestsDecodeAtOnce(t *testing.T) {
	want := &kdsv1.Message{Kind: &kdsv1.Message_Request{Request: heldRequest(10)}}
	b, err := proto.Marshal(want)
	must.NoError(t, err)
	var m kdsv1.Message
	must.NoError(t, (Codec{}).Unmarshal(split(b, 3), &m))
	assert.True(t, proto.Equal(want, &m))
	assert.Empty(t, m.GetRequest().ProtoReflect().GetUnknown())
}

// Lists that do not decode are refused when the request is taken, with an
// error that names the type and the lists.
func TestExpandRefusesMalformedLists(t *testing.T) {
	req := heldRequest(1000)
	req.InitialResourceVersions["bad\xffname"] = "v"
	inner, err := proto.MarshalOptions{}.Marshal(req)
	if err != nil {
		// protobuf refuses to write invalid UTF-8: build the entry by hand.
		req.InitialResourceVersions = map[string]string{}
		for i := range 1000 {
			req.InitialResourceVersions[fmt.Sprintf("default/name-%026d", i)] = "v-1"
		}
		inner, err = proto.Marshal(req)
		must.NoError(t, err)
		var entry []byte
		entry = protowire.AppendTag(entry, 1, protowire.BytesType)
		entry = protowire.AppendString(entry, "bad\xffname")
		entry = protowire.AppendTag(entry, 2, protowire.BytesType)
		entry = protowire.AppendString(entry, "v")
		inner = protowire.AppendTag(inner, reqInitialVersions, protowire.BytesType)
		inner = protowire.AppendBytes(inner, entry)
	}
	b := protowire.AppendTag(nil, msgRequest, protowire.BytesType)
	b = protowire.AppendBytes(b, inner)
	var want kdsv1.Message
	must.Error(t, proto.Unmarshal(b, &want), "protobuf refuses it")

	var m kdsv1.Message
	must.NoError(t, (Codec{}).Unmarshal(split(b, 3), &m), "accepted on receipt, as bytes")
	err = Expand(m.GetRequest())
	must.Error(t, err)
	assert.Contains(t, err.Error(), "MeshTimeout")
	assert.Contains(t, err.Error(), "resource lists")
}
