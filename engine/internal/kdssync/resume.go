package kdssync

import (
	"fmt"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// A subscription tells the server every name and version the client holds
// of the type (initial_resource_versions), so that a reconnect resends
// only what changed, and the versions it refused in earlier sessions. That
// list grows with what the client holds and can outgrow one message. When
// the peer accepts it (WithResumeParts), the client then sends it in
// parts:
//
//  1. every part but the last is a request without the "*" subscription
//     carrying some of the refused versions (first) and of the held ones;
//  2. the server keeps what they say of names it serves and answers each
//     part with a response that removes the part's names it does not
//     serve (those are gone whatever else the peer holds, so the server
//     keeps no record of them); the client applies and ACKs it and only
//     then sends the next part, so at most one part per type is on the
//     wire;
//  3. the last part is the subscription ("*") with the rest. The server
//     then serves the type from everything the parts said, exactly as if
//     it had come in one request.
//
// Across types, the client paces its subscriptions (see pacer.go): the
// first parts of many types do not all go at once.

// subscriptionOverhead is left free in every subscription request for its
// other fields and the mux envelope.
const subscriptionOverhead = 16 << 10

// maxPartNames bounds the held and refused versions one part carries, well
// under what a server accepts in one request (MaxNamesPerRequest),
// whatever the message size.
const maxPartNames = MaxNamesPerRequest / 2

// refusedMessage is the message of a subscription's refused versions.
const refusedMessage = "versions refused in earlier sessions"

// subPlan is how one type's subscription goes, decided before anything of
// it is built: in one request, or in parts.
type subPlan struct {
	typ string
	// refused are the versions refused in earlier sessions, names and
	// versions only: the server needs nothing else.
	refused []*kdsv1.RejectedResource
	// parts: the held and refused versions do not fit one request; limit
	// is the encoded size each part's entries may take.
	parts bool
	limit int
	// cost is what the subscription holds of the pacing budget until it
	// is answered: its encoded size, or for one in parts the size of its
	// largest possible part (one part is on the wire at a time).
	cost int64
	// since is when the subscription was first left waiting for room
	// (zero if it never waited).
	since time.Time
}

// resumeParts is what is left to send of one type's subscription in parts.
type resumeParts struct {
	url     string
	names   []string                  // held names not sent yet
	refused []*kdsv1.RejectedResource // refused versions not sent yet
	limit   int
}

// versionEntrySize is the encoded size of one initial_resource_versions
// entry (field 3, a map entry of key and value).
func versionEntrySize(name, version string) int {
	entry := protowire.SizeTag(1) + protowire.SizeBytes(len(name)) + protowire.SizeTag(2) + protowire.SizeBytes(len(version))
	return protowire.SizeTag(3) + protowire.SizeBytes(entry)
}

// refusedEntrySize is the encoded size of one refused entry in a
// Rejection (field 1).
func refusedEntrySize(r *kdsv1.RejectedResource) int {
	return protowire.SizeTag(1) + protowire.SizeBytes(proto.Size(r))
}

// withRefused sets req's error detail to the refused versions, if any.
func withRefused(req *discovery.DeltaDiscoveryRequest, refused []*kdsv1.RejectedResource) error {
	if len(refused) == 0 {
		return nil
	}
	st, err := rejectionStatus(int32(codes.OK), refusedMessage, refused)
	if err != nil {
		return err
	}
	req.ErrorDetail = st
	return nil
}

// plan decides how typ's subscription goes. It fails when the held
// versions do not fit one request and the peer does not take them in
// parts.
func (c *Client) plan(typ string) (*subPlan, error) {
	p := &subPlan{typ: typ}
	for _, r := range c.rejections.list(typ) {
		p.refused = append(p.refused, slimRejected(r))
	}
	// What every request of the subscription carries besides its entries
	// (the "*" and the refused versions' wrapping are only in some).
	base := &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL(typ), ResourceNamesSubscribe: []string{"*"}}
	if len(p.refused) > 0 {
		if err := withRefused(base, []*kdsv1.RejectedResource{{}}); err != nil {
			return nil, err
		}
	}
	baseSize := proto.Size(base)
	held := c.held[typ]
	size := 0
	held.each(func(n, v string) { size += versionEntrySize(n, v) })
	for _, r := range p.refused {
		size += refusedEntrySize(r)
	}
	limit := c.maxMsg - subscriptionOverhead - baseSize
	// The "*" counts among the names a server accepts (requestNames).
	if size <= limit && held.len()+len(p.refused)+1 <= MaxNamesPerRequest {
		p.cost = int64(baseSize+size) + requestOverhead
		return p, nil
	}
	if !c.parts {
		return nil, fmt.Errorf("subscribe to %s: the %d versions held take %d bytes, more than fits one request (%d bytes of the session's %d-byte max message size, %d names with the refused ones and the subscription), and the peer does not accept them in parts (a build without kds-resume-parts): upgrade it, or raise --max-message-size on both sides",
			typ, held.len(), size, limit, c.maxMsg, MaxNamesPerRequest)
	}
	if limit < 1<<10 {
		return nil, fmt.Errorf("subscribe to %s: a %d-byte max message size leaves %d bytes per request for held versions", typ, c.maxMsg, limit)
	}
	p.parts, p.limit = true, limit
	p.cost = int64(c.maxMsg) + requestOverhead
	return p, nil
}

// first returns the first request of p's subscription: the whole
// subscription when it fits one request, else its first part (the rest is
// left in c.resume).
func (c *Client) first(p *subPlan) (*discovery.DeltaDiscoveryRequest, error) {
	held := c.held[p.typ]
	if !p.parts {
		// A copy: the transport may marshal the request after Send
		// returns, while check updates held.
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL(p.typ), ResourceNamesSubscribe: []string{"*"},
			InitialResourceVersions: held.all()}
		if err := withRefused(req, p.refused); err != nil {
			return nil, err
		}
		return req, nil
	}
	rp := &resumeParts{url: TypeURL(p.typ), names: make([]string, 0, held.len()), refused: p.refused, limit: p.limit}
	held.each(func(n, _ string) { rp.names = append(rp.names, n) })
	c.resume[p.typ] = rp
	c.log.Debug("sending held versions in parts", "type", p.typ, "held", held.len(), "refused", len(p.refused))
	return c.nextPart(p.typ)
}

// nextPart returns the next part of typ's subscription, the subscription
// itself when it is the last one (and then forgets typ's parts). Refused
// versions go first. A name no longer held is left out; the version sent
// is the one held now.
func (c *Client) nextPart(typ string) (*discovery.DeltaDiscoveryRequest, error) {
	rp := c.resume[typ]
	held := c.held[typ]
	var refused []*kdsv1.RejectedResource
	versions := map[string]string{}
	size, n := 0, 0
	full := false
	for len(rp.refused) > 0 && n < maxPartNames {
		es := refusedEntrySize(rp.refused[0])
		if size+es > rp.limit && n > 0 {
			full = true
			break
		}
		size += es
		n++
		refused = append(refused, rp.refused[0])
		rp.refused = rp.refused[1:]
	}
	for !full && len(rp.names) > 0 && n < maxPartNames {
		name := rp.names[0]
		v, ok := held.get(name)
		if !ok {
			rp.names = rp.names[1:]
			continue
		}
		es := versionEntrySize(name, v)
		if size+es > rp.limit && n > 0 {
			break
		}
		size += es
		n++
		versions[name] = v
		rp.names = rp.names[1:]
	}
	req := &discovery.DeltaDiscoveryRequest{TypeUrl: rp.url, InitialResourceVersions: versions}
	if err := withRefused(req, refused); err != nil {
		return nil, err
	}
	if len(rp.names) > 0 || len(rp.refused) > 0 {
		return req, nil
	}
	delete(c.resume, typ)
	req.ResourceNamesSubscribe = []string{"*"}
	return req, nil
}
