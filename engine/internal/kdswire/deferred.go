package kdswire

import (
	"fmt"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// A received request waits in the peer's inbound queue (mux), which counts
// it at its encoded size. Decoded, its lists take more than that: a held
// version is ~60 bytes on the wire and ~105 in a Go map (string headers,
// map slots, allocation rounding), a short name in a subscribe list 3 on
// the wire and 16 or more decoded. So a peer filling the queue with held
// versions made this side hold up to twice the documented queue budget.
// Large lists therefore stay encoded while the request waits: the codec
// keeps them as the request's unknown fields (a copy of their bytes, so
// the queue counts exactly what it holds), and Expand decodes them when
// the request is taken off the queue, one request at a time per stream.

// Fields of envoy's DeltaDiscoveryRequest whose decoded form can be much
// larger than their encoding: resource_names_subscribe,
// resource_names_unsubscribe, initial_resource_versions. They hold strings
// only, so decoding them later needs no recursion limit of their depth.
// (The resource locators, which nest messages, are decoded at once.)
const (
	reqNamesSubscribe   protowire.Number = 3
	reqNamesUnsubscribe protowire.Number = 4
	reqInitialVersions  protowire.Number = 5
)

// DeferMin is the encoded size of a request's lists from which they stay
// encoded until Expand (smaller requests, ACKs and most subscriptions, are
// decoded at once: their decoded overhead is within mux's per-message
// charge).
const DeferMin = 16 << 10

func deferredField(num protowire.Number) bool {
	switch num {
	case reqNamesSubscribe, reqNamesUnsubscribe, reqInitialVersions:
		return true
	}
	return false
}

// decodeRequest decodes v, an encoded DeltaDiscoveryRequest found levels
// deep, keeping its list fields encoded when they reach DeferMin bytes.
// v may be a slice of a buffer the caller reuses: nothing of it is kept.
func decodeRequest(v []byte, levels int) (*discovery.DeltaDiscoveryRequest, bool) {
	req := &discovery.DeltaDiscoveryRequest{}
	listBytes := 0
	if !scan(v, func(num protowire.Number, _ protowire.Type, field []byte) bool {
		if deferredField(num) {
			listBytes += len(field)
		}
		return true
	}) {
		return nil, false
	}
	if listBytes < DeferMin {
		if nested(levels).Unmarshal(v, req) != nil {
			return nil, false
		}
		return req, true
	}
	eager := make([]byte, 0, len(v)-listBytes)
	lists := make([]byte, 0, listBytes)
	scan(v, func(num protowire.Number, _ protowire.Type, field []byte) bool {
		if deferredField(num) {
			lists = append(lists, field...)
		} else {
			eager = append(eager, field...)
		}
		return true
	})
	if nested(levels).Unmarshal(eager, req) != nil {
		return nil, false
	}
	// Decoding the lists now only to check them would cost what deferring
	// saves; Expand decodes them and reports what is wrong then. Their
	// framing (tags, lengths) was checked by scan.
	r := req.ProtoReflect()
	r.SetUnknown(append(r.GetUnknown(), lists...))
	return req, true
}

// deferDecoded moves req's lists, decoded already (a message the codec left
// to protobuf), back to their encoding when they reach DeferMin bytes.
func deferDecoded(req *discovery.DeltaDiscoveryRequest) {
	if req == nil {
		return
	}
	lists := &discovery.DeltaDiscoveryRequest{
		ResourceNamesSubscribe:   req.ResourceNamesSubscribe,
		ResourceNamesUnsubscribe: req.ResourceNamesUnsubscribe,
		InitialResourceVersions:  req.InitialResourceVersions,
	}
	if proto.Size(lists) < DeferMin {
		return
	}
	b, err := proto.Marshal(lists)
	if err != nil {
		return // it decoded, so it encodes; keep it decoded if not
	}
	req.ResourceNamesSubscribe, req.ResourceNamesUnsubscribe, req.InitialResourceVersions = nil, nil, nil
	r := req.ProtoReflect()
	r.SetUnknown(append(r.GetUnknown(), b...))
}

// Expand decodes the lists the codec kept encoded in req (see DeferMin)
// into req's fields, in place; a request without them is left as it is. A
// request's lists were not checked on receipt: Expand's error says what
// was wrong with them. Not safe for concurrent use with other readers of
// req; the one goroutine that takes requests off a queue calls it.
func Expand(req *discovery.DeltaDiscoveryRequest) error {
	if req == nil {
		return nil
	}
	r := req.ProtoReflect()
	u := r.GetUnknown()
	if len(u) == 0 {
		return nil
	}
	r.SetUnknown(nil)
	if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(u, req); err != nil {
		return fmt.Errorf("request for type %q: its resource lists (%d bytes): %w", req.GetTypeUrl(), len(u), err)
	}
	return nil
}
