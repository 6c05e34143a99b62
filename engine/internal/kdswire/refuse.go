package kdswire

import (
	"errors"
	"fmt"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
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

func refused(format string, args ...any) error {
	return fmt.Errorf("kds request with %s: %w", fmt.Sprintf(format, args...), ErrRefusedRequest)
}

// A received response is counted at what it holds decoded (Measure) once
// it is decoded, but decoding it is what costs: a response of empty
// resource entries held 72x its encoding, 290 MiB for one 4 MiB message,
// before anyone could count it. So the codec estimates what a response
// will hold from its fields before decoding anything of it, and refuses
// one that would hold more than MaxResponseExpansion times its size (plus
// ResponseExpansionSlack). What kds-engine sends is well below: an entry
// always carries a name, a version and an Any whose type URL alone is 37
// bytes, and a max-size response of resources of an empty spec (97 bytes
// each) is estimated at 4.3x its size (it holds 3.94x).
const (
	// MaxResponseExpansion is how many times its encoded size a received
	// response may hold decoded, as estimated before decoding it.
	MaxResponseExpansion = 8
	// ResponseExpansionSlack is added to that bound, so that a small
	// response is never refused for it.
	ResponseExpansionSlack = 64 << 10
)

// ErrRefusedResponse is wrapped by the codec's error for a received
// response that would hold more than MaxResponseExpansion times its size
// decoded. gRPC ends the stream with that error's text.
var ErrRefusedResponse = errors.New("response refused")

// Per occurrence on the wire, what the estimate before decoding adds to a
// response's bytes: a message (a struct of at most 144 bytes for these
// types, its pointer and append's growth), a string or bytes of a list (a
// header, with append's growth). A plain resource entry is two messages
// (the Resource and its Any), 320 bytes against the 235 measured at most.
const (
	estimateMessage = 160
	estimateListed  = 32
)

// responseTotals adds up the occurrences of one response (protobuf merges
// a response written in pieces): its bytes, and what it would hold decoded.
type responseTotals struct {
	bytes, held int
}

// The descriptors refuseResponse walks a response by.
var (
	responseDescriptor = (&discovery.DeltaDiscoveryResponse{}).ProtoReflect().Descriptor()
	resourceDescriptor = (&discovery.Resource{}).ProtoReflect().Descriptor()
)

// refuseResponse checks v, an encoded DeltaDiscoveryResponse (or one
// occurrence of it, adding to t), without decoding it: it walks the
// fields the types know (see estimate for deep), and adds estimateMessage
// for each message and estimateListed for each string of a list to its
// bytes.
// Malformed input is not its concern: what it cannot read it leaves to the
// decoder.
func refuseResponse(v []byte, t *responseTotals, deep bool) error {
	t.bytes += len(v)
	t.held += len(v) + estimate(v, responseDescriptor, 0, deep)
	if t.held > MaxResponseExpansion*t.bytes+ResponseExpansionSlack {
		return fmt.Errorf("kds response of %d bytes would hold %d decoded, more than %d times its size: %w",
			t.bytes, t.held, MaxResponseExpansion, ErrRefusedResponse)
	}
	return nil
}

// estimate is what the messages and listed strings of b, a message of
// type d found depth levels below the response, add decoded. Past
// protobuf's recursion limit it stops: the decoder refuses such nesting.
// The fields of the plain form (a response's resources and removed names,
// a resource's name, version and Any) are counted without a descriptor
// lookup, and an Any, whose fields are a string and bytes, is not walked.
// Unless deep, a resource entry is not walked either and counts as a
// plain one (two messages): the codec decodes only plain entries itself,
// and walks the whole response deep before it hands one that is not to
// protobuf-go.
func estimate(b []byte, d protoreflect.MessageDescriptor, depth int, deep bool) int {
	if depth > protowire.DefaultRecursionLimit {
		return 0
	}
	n := 0
	for len(b) > 0 {
		num, typ, tn := protowire.ConsumeTag(b)
		if tn < 0 {
			return n
		}
		if typ != protowire.BytesType {
			fn := protowire.ConsumeFieldValue(num, typ, b[tn:])
			if fn < 0 {
				return n
			}
			b = b[tn+fn:]
			continue
		}
		v, vn := protowire.ConsumeBytes(b[tn:])
		if vn < 0 {
			return n
		}
		b = b[tn+vn:]
		switch {
		case d == responseDescriptor && num == respResources:
			if !deep {
				n += 2 * estimateMessage // a plain entry: the Resource and its Any
				continue
			}
			n += estimateMessage + estimate(v, resourceDescriptor, depth+1, deep)
			continue
		case d == responseDescriptor && num == respRemoved:
			n += estimateListed
			continue
		case d == resourceDescriptor && (num == resName || num == resVersion):
			continue
		case d == resourceDescriptor && num == resResource:
			n += estimateMessage // an Any: a string and bytes
			continue
		}
		fd := d.Fields().ByNumber(num)
		switch {
		case fd == nil:
			// An unknown field is kept as its bytes.
		case fd.Message() != nil:
			n += estimateMessage + estimate(v, fd.Message(), depth+1, deep)
		case fd.IsList():
			n += estimateListed
		}
	}
	return n
}

// ErrRefusedBatch is wrapped by the codec's error for a received batch
// that kds-engine never sends and that would hold many times its size
// decoded: a batch inside a batch's message, or a batch of so many
// messages (empty ones cost 2 bytes each on the wire and ~70 decoded, with
// a request ~270) that they would hold more than MaxResponseExpansion
// times its size (plus ResponseExpansionSlack; a batch holds at most
// mux.MaxBatchMessages messages, well within the slack). gRPC ends the
// stream with that error's text.
var ErrRefusedBatch = errors.New("batch refused")

// estimateBatched is what the estimate adds per message of a batch: the
// Message, and the request or response it carries (whose own fields are
// estimated apart).
const estimateBatched = 2 * estimateMessage

// refuseMessage applies refuseRequest to the requests of b, an encoded
// kds.v1.Message, and refuseResponse (deep or not) to its responses: its
// own, or those of its batch. A batch in a batch's message is refused
// (mux refuses it decoded; protobuf would decode all of it first), and so
// is a batch whose messages would hold many times its size.
func refuseMessage(b []byte, depth int, deep bool) error {
	var (
		err     error
		totals  requestTotals // of the request, however many times written
		resp    responseTotals
		batched int // messages of the batch, however many times written
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
		case num == msgResponse:
			err = refuseResponse(value, &resp, deep)
		case num == msgBatch && depth > 0:
			err = fmt.Errorf("kds batch inside a batch: %w", ErrRefusedBatch)
		case num == msgBatch:
			scan(value, func(num protowire.Number, typ protowire.Type, field []byte) bool {
				if num != batchMessages || typ != protowire.BytesType {
					return true
				}
				if batched++; len(b)+batched*estimateBatched > MaxResponseExpansion*len(b)+ResponseExpansionSlack {
					err = fmt.Errorf("kds batch of %d bytes with over %d messages would hold more than %d times its size: %w",
						len(b), batched-1, MaxResponseExpansion, ErrRefusedBatch)
					return false
				}
				if _, inner, _, ok := nextBytesField(field); ok {
					err = refuseMessage(inner, depth+1, deep)
				}
				return err == nil
			})
		}
		return err == nil
	})
	return err
}
