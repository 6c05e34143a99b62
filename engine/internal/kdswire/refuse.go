package kdswire

import (
	"errors"
	"fmt"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// A received request waits in the peer's inbound queue counted at its
// encoded size (mux). Some fields of envoy's DeltaDiscoveryRequest that
// KDS never reads are lists of messages, and a message costs far more
// decoded than encoded: an empty resource locator is 2 bytes on the wire
// and a pointer plus a ~70-byte struct decoded, so a request of locators
// held 36.8x its encoding, one of node extensions 68.8x, an error detail of
// empty Any details 44.8x (100,000 entries each; see
// TestRequestsOfUnusedMessageListsAreRefusedOnReceipt). A peer could make
// this side hold gigabytes with the bytes of one queue's budget. Deferring
// their decoding (as for the name lists, see DeferMin) would only move
// that cost to the queue's reader; so the codec refuses, before decoding
// anything of it, a request that carries what KDS has no use for:
//
//   - resource locators (resource_locators_subscribe and _unsubscribe):
//     KDS subscribes by name;
//   - a node of more than MaxNodeBytes encoded: kds-engine sends none, and
//     a node that only names its client (what an xDS client sends) is far
//     smaller;
//   - an error detail with more than MaxErrorDetails details: a KDS NACK
//     carries one, the rejection list.

// Fields of envoy's DeltaDiscoveryRequest, and of google.rpc.Status, that
// the codec checks on receipt.
const (
	reqNode                protowire.Number = 1
	reqErrorDetail         protowire.Number = 7
	reqLocatorsSubscribe   protowire.Number = 8
	reqLocatorsUnsubscribe protowire.Number = 9

	statusDetails protowire.Number = 3
)

const (
	// MaxNodeBytes is the largest node a received request may carry,
	// encoded.
	MaxNodeBytes = 1 << 10
	// MaxErrorDetails is the most details a received request's error
	// detail may carry.
	MaxErrorDetails = 4
)

// ErrRefusedRequest is wrapped by the codec's error for a received request
// that carries what KDS does not use (see MaxNodeBytes, MaxErrorDetails,
// and resource locators). gRPC ends the stream with that error's text.
var ErrRefusedRequest = errors.New("request refused")

// requestTotals adds up what refuseRequest checks over the occurrences of
// one request's fields: protobuf merges a message field written more than
// once, so a node in pieces is one node decoded.
type requestTotals struct {
	nodeBytes int
	details   int
}

// refuseRequest checks v, an encoded DeltaDiscoveryRequest (or one
// occurrence of it, adding to t), without decoding it. Malformed input is
// not its concern: it returns nil for what it cannot read and leaves the
// verdict to the decoder.
func refuseRequest(v []byte, t *requestTotals) error {
	var err error
	scan(v, func(num protowire.Number, typ protowire.Type, field []byte) bool {
		if typ != protowire.BytesType {
			return true
		}
		_, value, _, ok := nextBytesField(field)
		if !ok {
			return true
		}
		switch num {
		case reqLocatorsSubscribe, reqLocatorsUnsubscribe:
			err = refused("resource locators (field %d): KDS subscribes by name", num)
		case reqNode:
			if t.nodeBytes += len(value); t.nodeBytes > MaxNodeBytes {
				err = refused("a node of %d bytes: at most %d", t.nodeBytes, MaxNodeBytes)
			}
		case reqErrorDetail:
			scan(value, func(num protowire.Number, _ protowire.Type, _ []byte) bool {
				if num == statusDetails {
					t.details++
				}
				return true
			})
			if t.details > MaxErrorDetails {
				err = refused("an error detail of %d details: at most %d", t.details, MaxErrorDetails)
			}
		}
		return err == nil
	})
	return err
}

// refuseDecoded is refuseMessage for m, a message decoded already (a small
// one, which protobuf decoded from gRPC's buffer): its request, or the
// requests of its batch. A message's bytes may hold other fields before
// its batch (the last of a oneof's fields wins), so a small batch is not
// always one that starts with the batch's tag and takes refuseMessage's
// path.
func refuseDecoded(m *kdsv1.Message) error {
	if b := m.GetBatch(); b != nil {
		for _, inner := range b.GetMessages() {
			if err := refuseDecodedRequest(inner.GetRequest()); err != nil {
				return err
			}
		}
		return nil
	}
	return refuseDecodedRequest(m.GetRequest())
}

// refuseDecodedRequest is refuseRequest for a request decoded already.
func refuseDecodedRequest(r *discovery.DeltaDiscoveryRequest) error {
	switch {
	case r == nil:
		return nil
	case len(r.GetResourceLocatorsSubscribe()) > 0:
		return refused("resource locators (field %d): KDS subscribes by name", reqLocatorsSubscribe)
	case len(r.GetResourceLocatorsUnsubscribe()) > 0:
		return refused("resource locators (field %d): KDS subscribes by name", reqLocatorsUnsubscribe)
	case r.Node != nil && proto.Size(r.Node) > MaxNodeBytes:
		return refused("a node of %d bytes: at most %d", proto.Size(r.Node), MaxNodeBytes)
	case len(r.GetErrorDetail().GetDetails()) > MaxErrorDetails:
		return refused("an error detail of %d details: at most %d", len(r.GetErrorDetail().GetDetails()), MaxErrorDetails)
	}
	return nil
}

func refused(format string, args ...any) error {
	return fmt.Errorf("kds request with %s: %w", fmt.Sprintf(format, args...), ErrRefusedRequest)
}

// refuseMessage applies refuseRequest to the requests of b, an encoded
// kds.v1.Message: its own, or those of its batch (a batch in a batch is
// not looked into: mux refuses it).
func refuseMessage(b []byte, depth int) error {
	var (
		err    error
		totals requestTotals // of the request, however many times written
	)
	scan(b, func(num protowire.Number, typ protowire.Type, field []byte) bool {
		if typ != protowire.BytesType {
			return true
		}
		_, value, _, ok := nextBytesField(field)
		if !ok {
			return true
		}
		switch {
		case num == msgRequest:
			err = refuseRequest(value, &totals)
		case num == msgBatch && depth == 0:
			scan(value, func(num protowire.Number, typ protowire.Type, field []byte) bool {
				if num != batchMessages || typ != protowire.BytesType {
					return true
				}
				if _, inner, _, ok := nextBytesField(field); ok {
					err = refuseMessage(inner, depth+1)
				}
				return err == nil
			})
		}
		return err == nil
	})
	return err
}
