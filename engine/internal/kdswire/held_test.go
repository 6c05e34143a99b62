package kdswire

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	must "github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// hostileResponses are responses that decode to many times their
// encoding: entries as small as the wire allows, through the codec's own
// path and through protobuf-go's (a field written twice sends the whole
// response there), and fields kds-engine never sends.
func hostileResponses(t *testing.T) map[string][]byte {
	const n = 100000
	enc := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		must.NoError(t, err)
		return b
	}
	resp := func(f func(r *discovery.DeltaDiscoveryResponse, i int)) *discovery.DeltaDiscoveryResponse {
		r := &discovery.DeltaDiscoveryResponse{TypeUrl: "x", Nonce: "1"}
		for i := range n {
			f(r, i)
		}
		return r
	}
	// twice writes the nonce a second time: protobuf keeps the last, and
	// the codec leaves such a response to protobuf-go.
	twice := func(b []byte) []byte {
		_, v, _, ok := nextBytesField(b)
		must.True(t, ok)
		v = protowire.AppendBytes(protowire.AppendTag(v, respNonce, protowire.BytesType), []byte("2"))
		return protowire.AppendBytes(protowire.AppendTag(nil, msgResponse, protowire.BytesType), v)
	}
	empty := resp(func(r *discovery.DeltaDiscoveryResponse, _ int) {
		r.Resources = append(r.Resources, &discovery.Resource{})
	})
	// Two-byte strings: a one-byte string costs no allocation in Go.
	small := resp(func(r *discovery.DeltaDiscoveryResponse, i int) {
		r.Resources = append(r.Resources, &discovery.Resource{Name: "ab", Version: "cd", Resource: &anypb.Any{Value: []byte{1}}})
	})
	bare := resp(func(r *discovery.DeltaDiscoveryResponse, i int) {
		r.Resources = append(r.Resources, &discovery.Resource{Resource: &anypb.Any{}})
	})
	removed := resp(func(r *discovery.DeltaDiscoveryResponse, i int) {
		r.RemovedResources = append(r.RemovedResources, "")
	})
	removedShort := resp(func(r *discovery.DeltaDiscoveryResponse, i int) {
		r.RemovedResources = append(r.RemovedResources, "ab")
	})
	aliases := &discovery.DeltaDiscoveryResponse{TypeUrl: "x", Resources: []*discovery.Resource{{Name: "a", Aliases: make([]string, n)}}}
	errs := resp(func(r *discovery.DeltaDiscoveryResponse, _ int) {
		r.ResourceErrors = append(r.ResourceErrors, &discovery.ResourceError{})
	})
	details := &discovery.DeltaDiscoveryResponse{TypeUrl: "x", ResourceErrors: []*discovery.ResourceError{{ErrorDetail: &status.Status{}}}}
	for range n {
		details.ResourceErrors[0].ErrorDetail.Details = append(details.ResourceErrors[0].ErrorDetail.Details, &anypb.Any{})
	}
	names := resp(func(r *discovery.DeltaDiscoveryResponse, _ int) {
		r.RemovedResourceNames = append(r.RemovedResourceNames, &discovery.ResourceName{})
	})
	filters := map[string]*structpb.Struct{}
	for i := range n / 10 {
		filters[fmt.Sprint(i)] = &structpb.Struct{}
	}
	meta := &discovery.DeltaDiscoveryResponse{TypeUrl: "x", Resources: []*discovery.Resource{{Name: "a", Metadata: &corev3.Metadata{FilterMetadata: filters}}}}
	out := map[string][]byte{
		"empty resources":           enc(respMsg(empty)),
		"empty resources, protobuf": twice(enc(respMsg(empty))),
		"small resources":           enc(respMsg(small)),
		"small resources, protobuf": twice(enc(respMsg(small))),
		"resources of an empty Any": enc(respMsg(bare)),
		"empty removed names":       enc(respMsg(removed)),
		"two-byte removed names":    enc(respMsg(removedShort)),
		"aliases":                   enc(respMsg(aliases)),
		"empty resource errors":     enc(respMsg(errs)),
		"error details":             enc(respMsg(details)),
		"removed resource names":    enc(respMsg(names)),
		"batched small resources":   enc(batchMsg(respMsg(&discovery.DeltaDiscoveryResponse{TypeUrl: "y"}), respMsg(small))),
		"metadata":                  enc(respMsg(meta)),
	}
	return out
}

// A received response is counted (Measure) at no less than what it holds
// decoded, whatever its shape: a queue that counts its responses so bounds
// what they hold. Counted at their encoded size, the responses above held
// up to 71x that (empty resource entries, 2 bytes each on the wire).
func TestResponsesHoldNoMoreThanTheyAreCounted(t *testing.T) {
	for name, b := range hostileResponses(t) {
		const copies = 4
		got, held, _ := decodeCopies(copies, func(m *kdsv1.Message) error {
			// Decoded as the codec does, without its refusal on receipt.
			must.NoError(t, decode(bytes.Clone(b), m, false), name)
			return nil
		})
		size, counted := Measure(got[0])
		assert.LessOrEqual(t, size, len(b), name)
		t.Logf("%s: %d bytes, %d held per response (%.1fx its encoding), counted at %d (%.1fx)",
			name, len(b), held/copies, float64(held)/float64(copies*len(b)), counted, float64(counted)/float64(len(b)))
		assert.LessOrEqual(t, held, int64(copies*counted), "%s: holds no more than it is counted at", name)
		runtime.KeepAlive(got)
	}
}

// A response that would hold more than MaxResponseExpansion times its size
// decoded is refused on receipt, before anything of it is decoded: every
// response above, lists nested in a resource or a resource error
// included. Decoding it first held what the queue would then refuse to
// count, up to 76.8x its size (290 MiB for a 4 MiB message).
func TestResponsesThatWouldHoldManyTimesTheirSizeAreRefusedOnReceipt(t *testing.T) {
	for name, b := range hostileResponses(t) {
		var want kdsv1.Message
		must.NoError(t, proto.Unmarshal(b, &want), "%s: protobuf accepts it", name)
		const copies = 4
		got, held, err := decodeCopies(copies, func(m *kdsv1.Message) error { return (Codec{}).Unmarshal(split(b, 16<<10), m) })
		_, counted := Measure(&want)
		t.Logf("%s: %d bytes, counted at %.1fx: %d held per response: %v", name, len(b), float64(counted)/float64(len(b)), held/copies, err)
		assert.Greater(t, counted, MaxResponseExpansion*len(b)+ResponseExpansionSlack, name)
		assert.ErrorIs(t, err, ErrRefusedResponse, name)
		assert.Less(t, held, int64(copies*len(b))*5/4+copies*4096, "%s: holds no more than its encoding", name)
		runtime.KeepAlive(got)
	}
}

// A small message (under DeferMin) that does not start with its response
// (a request field first: protobuf keeps the last of a oneof's fields) is
// decoded whole by protobuf-go; it is refused before that, as a large
// one is, when its response would hold many times its size.
func TestSmallResponseBehindARequestIsRefusedBeforeDecoding(t *testing.T) {
	r := &discovery.DeltaDiscoveryResponse{TypeUrl: "x"}
	for range 7000 {
		r.Resources = append(r.Resources, &discovery.Resource{})
	}
	resp, err := proto.Marshal(r)
	must.NoError(t, err)
	b := protowire.AppendBytes(protowire.AppendTag(nil, msgRequest, protowire.BytesType), nil)
	b = protowire.AppendBytes(protowire.AppendTag(b, msgResponse, protowire.BytesType), resp)
	must.Less(t, len(b), DeferMin, "small: protobuf decodes it whole")

	var want kdsv1.Message
	must.NoError(t, proto.Unmarshal(b, &want), "protobuf accepts it")
	must.NotNil(t, want.GetResponse(), "the response is the field that counts")
	_, counted := Measure(&want)
	must.Greater(t, counted, MaxResponseExpansion*len(b)+ResponseExpansionSlack, "it holds many times its size")

	for _, pieces := range []int{len(b), 100} {
		var got kdsv1.Message
		err := (Codec{}).Unmarshal(split(bytes.Clone(b), pieces), &got)
		assert.ErrorIs(t, err, ErrRefusedResponse, "in pieces of %d bytes", pieces)
		assert.True(t, got.GetResponse() == nil, "nothing of it decoded")
	}
}

// hostileBatches are batches that kds-engine never sends and that protobuf
// would decode to many times their encoding (measured 35× to 75×): a batch
// inside a batch's message, batches of empty messages or of empty
// requests, small (decoded whole by protobuf-go) and large (the codec's
// path).
func hostileBatches(t *testing.T) map[string][]byte {
	t.Helper()
	of := func(n int, inner []byte) []byte {
		var ms []byte
		for range n {
			ms = protowire.AppendBytes(protowire.AppendTag(ms, batchMessages, protowire.BytesType), inner)
		}
		return protowire.AppendBytes(protowire.AppendTag(nil, msgBatch, protowire.BytesType), ms)
	}
	emptyResp := func(n int) *kdsv1.Message {
		r := &discovery.DeltaDiscoveryResponse{TypeUrl: "x"}
		for range n {
			r.Resources = append(r.Resources, &discovery.Resource{})
		}
		return respMsg(r)
	}
	nested := func(n int) []byte {
		b, err := proto.Marshal(batchMsg(batchMsg(emptyResp(n))))
		must.NoError(t, err)
		return b
	}
	emptyReq := []byte{byte(msgRequest)<<3 | byte(protowire.BytesType), 0}
	return map[string][]byte{
		"small nested batch":      nested(7000),
		"large nested batch":      nested(100_000),
		"small batch of empties":  of(8000, nil),
		"large batch of empties":  of(100_000, nil),
		"small batch of requests": of(4000, emptyReq),
		"large batch of requests": of(100_000, emptyReq),
	}
}

// A batch that would hold many times its size decoded is refused before
// anything of it is decoded, small or large, whole or in pieces; a batch
// as mux sends it (at most mux.MaxBatchMessages messages, here ACKs) is
// not.
func TestHostileBatchesAreRefusedBeforeDecoding(t *testing.T) {
	for name, b := range hostileBatches(t) {
		var want kdsv1.Message
		must.NoError(t, proto.Unmarshal(b, &want), "%s: protobuf accepts it", name)
		for _, pieces := range []int{len(b), 16 << 10, 100} {
			var got kdsv1.Message
			err := (Codec{}).Unmarshal(split(bytes.Clone(b), pieces), &got)
			assert.ErrorIs(t, err, ErrRefusedBatch, "%s (%d bytes) in pieces of %d bytes", name, len(b), pieces)
			assert.Nil(t, got.GetKind(), "%s: nothing of it decoded", name)
		}
	}

	var acks []*kdsv1.Message
	for i := range 64 {
		acks = append(acks, reqMsg(&discovery.DeltaDiscoveryRequest{TypeUrl: "x", ResponseNonce: fmt.Sprint(i)}))
	}
	b, err := proto.Marshal(batchMsg(acks...))
	must.NoError(t, err)
	var got kdsv1.Message
	must.NoError(t, (Codec{}).Unmarshal(split(b, len(b)), &got))
	assert.Len(t, got.GetBatch().GetMessages(), 64)
}
