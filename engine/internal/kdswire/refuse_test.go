package kdswire

import (
	"runtime"
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	must "github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

func requestMsg(r *discovery.DeltaDiscoveryRequest) *kdsv1.Message {
	return &kdsv1.Message{Kind: &kdsv1.Message_Request{Request: r}}
}

// hostileRequests are requests whose fields KDS does not use and that
// decode to many times their encoding, large (the codec's own path) and
// small (protobuf's), alone and in a batch.
func hostileRequests(t *testing.T) map[string][]byte {
	const n = 100000
	locators := &discovery.DeltaDiscoveryRequest{TypeUrl: "x"}
	extensions := &discovery.DeltaDiscoveryRequest{TypeUrl: "x", Node: &core.Node{}}
	details := &discovery.DeltaDiscoveryRequest{TypeUrl: "x", ErrorDetail: &status.Status{}}
	for range n {
		locators.ResourceLocatorsUnsubscribe = append(locators.ResourceLocatorsUnsubscribe, &discovery.ResourceLocator{})
		extensions.Node.Extensions = append(extensions.Node.Extensions, &core.Extension{})
		details.ErrorDetail.Details = append(details.ErrorDetail.Details, &anypb.Any{})
	}
	enc := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		must.NoError(t, err)
		return b
	}
	out := map[string][]byte{
		"locators":        enc(requestMsg(locators)),
		"node extensions": enc(requestMsg(extensions)),
		"error details":   enc(requestMsg(details)),
		"batched locators": enc(&kdsv1.Message{Kind: &kdsv1.Message_Batch{Batch: &kdsv1.Batch{Messages: []*kdsv1.Message{
			requestMsg(&discovery.DeltaDiscoveryRequest{TypeUrl: "y", ResponseNonce: "1"}), requestMsg(locators),
		}}}}),
		"small locators": enc(requestMsg(&discovery.DeltaDiscoveryRequest{TypeUrl: "x",
			ResourceLocatorsSubscribe: []*discovery.ResourceLocator{{Name: "a"}}})),
		"small error details": enc(requestMsg(&discovery.DeltaDiscoveryRequest{TypeUrl: "x",
			ErrorDetail: &status.Status{Details: make([]*anypb.Any, MaxErrorDetails+1)}})),
		"small node": enc(requestMsg(&discovery.DeltaDiscoveryRequest{TypeUrl: "x",
			Node: &core.Node{Id: strings.Repeat("n", MaxNodeBytes)}})),
	}
	// A node written in pieces below the bound each, which protobuf merges
	// into one: the request's message field twice, each with its node.
	piece := enc(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Extensions: extensions.Node.Extensions[:MaxNodeBytes/4]}})
	var pieces []byte
	for range 40 {
		pieces = protowire.AppendTag(pieces, msgRequest, protowire.BytesType)
		pieces = protowire.AppendBytes(pieces, piece)
	}
	out["node in pieces"] = pieces
	// A small batch (below DeferMin) that does not start with the batch's
	// tag goes to protobuf: an empty request first, which the batch after
	// it replaces (the last of a oneof's fields wins).
	few := &discovery.DeltaDiscoveryRequest{TypeUrl: "x"}
	for range 4000 {
		few.ResourceLocatorsSubscribe = append(few.ResourceLocatorsSubscribe, &discovery.ResourceLocator{})
	}
	lead := protowire.AppendBytes(protowire.AppendTag(nil, msgRequest, protowire.BytesType), nil)
	out["small batch behind a request"] = append(lead, enc(&kdsv1.Message{Kind: &kdsv1.Message_Batch{Batch: &kdsv1.Batch{Messages: []*kdsv1.Message{
		requestMsg(few),
	}}}})...)
	return out
}

// A request that carries resource locators, a node larger than
// MaxNodeBytes or an error detail of more than MaxErrorDetails details is
// refused on receipt, before it is decoded: KDS uses none of them, and
// they decode to 36-68 times their encoding (an empty locator is 2 bytes
// on the wire and ~70 decoded), which a waiting request would hold
// against a queue that counts its encoding.
func TestRequestsOfUnusedMessageListsAreRefusedOnReceipt(t *testing.T) {
	for name, b := range hostileRequests(t) {
		var want kdsv1.Message
		must.NoError(t, proto.Unmarshal(b, &want), "%s: protobuf accepts it", name)
		const copies = 4
		got, held, err := decodeCopies(copies, func(m *kdsv1.Message) error { return (Codec{}).Unmarshal(split(b, 3), m) })
		t.Logf("%s: %d bytes, %d held per request (%.2f× its encoding): %v", name, len(b), held/copies, float64(held)/float64(copies*len(b)), err)
		assert.ErrorIs(t, err, ErrRefusedRequest, name)
		// Slack for the messages themselves and the heap's noise.
		assert.Less(t, held, int64(copies*len(b))*5/4+copies*4096, "%s: holds no more than its encoding", name)
		runtime.KeepAlive(got)
	}
}

// What KDS and xDS clients send is accepted as protobuf decodes it: a node
// that names its client, a NACK's rejection list in one detail.
func TestRequestsWithASmallNodeOrARejectionAreAccepted(t *testing.T) {
	big := heldRequest(5000)
	big.Node = &core.Node{Id: "zone-1", Cluster: "kds"}
	big.ErrorDetail = &status.Status{Code: 3, Message: "refused", Details: []*anypb.Any{{TypeUrl: "type.googleapis.com/kds.v1.Rejection", Value: []byte("x")}}}
	for _, r := range []*discovery.DeltaDiscoveryRequest{
		{TypeUrl: "x", ResponseNonce: "1", Node: &core.Node{Id: "zone-1"}},
		big,
	} {
		want := requestMsg(r)
		b, err := proto.Marshal(want)
		must.NoError(t, err)
		var got kdsv1.Message
		must.NoError(t, (Codec{}).Unmarshal(split(b, 3), &got))
		must.NoError(t, Expand(got.GetRequest()))
		assert.True(t, proto.Equal(want, &got))
	}
}

// A node's bound is the same on both decode paths (a small request decoded
// by protobuf, a large one by the codec): a node of exactly MaxNodeBytes
// passes, one byte more is refused. A node written in pieces is refused
// by the pieces' bytes added up, on both paths (both check the bytes
// before decoding), though protobuf would merge them into a node within
// the bound (here the second piece's id replaces the first's).
func TestNodeBoundAgreesOnBothPaths(t *testing.T) {
	node := func(size int) *core.Node {
		n := &core.Node{Id: "n"}
		n.Id = strings.Repeat("n", size-(proto.Size(n)-1))
		for proto.Size(n) > size { // the length's varint grew
			n.Id = n.Id[1:]
		}
		must.Equal(t, size, proto.Size(n))
		return n
	}
	small := func(n *core.Node) []byte {
		b, err := proto.Marshal(requestMsg(&discovery.DeltaDiscoveryRequest{TypeUrl: "x", Node: n}))
		must.NoError(t, err)
		must.Less(t, len(b), DeferMin)
		return b
	}
	large := func(n *core.Node) []byte {
		r := heldRequest(400)
		r.Node = n
		b, err := proto.Marshal(requestMsg(r))
		must.NoError(t, err)
		must.GreaterOrEqual(t, len(b), DeferMin)
		return b
	}
	decode := func(b []byte) error {
		var m kdsv1.Message
		return (Codec{}).Unmarshal(split(b, 3), &m)
	}
	for name, enc := range map[string]func(*core.Node) []byte{"small": small, "large": large} {
		assert.NoError(t, decode(enc(node(MaxNodeBytes))), "%s: a node of exactly %d bytes", name, MaxNodeBytes)
		assert.ErrorIs(t, decode(enc(node(MaxNodeBytes+1))), ErrRefusedRequest, "%s: one byte more", name)
	}

	// The same request's node in two pieces of 600 bytes: 1200 written,
	// 600 merged.
	piece := func(b []byte) []byte {
		r, err := proto.Marshal(&discovery.DeltaDiscoveryRequest{Node: node(600)})
		must.NoError(t, err)
		return protowire.AppendBytes(protowire.AppendTag(b, msgRequest, protowire.BytesType), r)
	}
	pieces := piece(piece(nil))
	must.Less(t, len(pieces), DeferMin)
	assert.ErrorIs(t, decode(pieces), ErrRefusedRequest, "small: the pieces' bytes add up")
	padded := pieces
	for len(padded) < DeferMin {
		r, err := proto.Marshal(&discovery.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{strings.Repeat("s", 1000)}})
		must.NoError(t, err)
		padded = protowire.AppendBytes(protowire.AppendTag(padded, msgRequest, protowire.BytesType), r)
	}
	assert.ErrorIs(t, decode(padded), ErrRefusedRequest, "large: the pieces' bytes add up")
}
