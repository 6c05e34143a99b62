package kdssync

import (
	"fmt"
	"maps"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// A subscription tells the server every name and version the client holds
// of the type (initial_resource_versions), so that a reconnect resends
// only what changed. That list grows with what the client holds and can
// outgrow one message. When the peer accepts it (WithResumeParts), the
// client then sends it in parts:
//
//  1. every part but the last is a request without the "*" subscription
//     carrying some of the held versions;
//  2. the server keeps what they say of names it serves and answers each
//     part with a response that removes the part's names it does not
//     serve (those are gone whatever else the peer holds, so the server
//     keeps no record of them); the client applies and ACKs it and only
//     then sends the next part, so at most one part per type is on the
//     wire;
//  3. the last part is the subscription ("*") with the rest of the held
//     versions and the versions refused in earlier sessions. The server
//     then serves the type from everything the parts said, exactly as if
//     it had come in one request.

// subscriptionOverhead is left free in every subscription request for its
// other fields and the mux envelope.
const subscriptionOverhead = 16 << 10

// maxPartNames bounds the held versions one part carries, well under what
// a server accepts in one request (MaxNamesPerRequest), whatever the
// message size.
const maxPartNames = MaxNamesPerRequest / 2

// resumeParts is what is left to send of one type's held versions.
type resumeParts struct {
	names []string // held names not sent yet
	// limit is the encoded size a part's versions may take.
	limit int
	// final goes with the last part: the refused versions.
	final *discovery.DeltaDiscoveryRequest
}

// versionEntrySize is the encoded size of one initial_resource_versions
// entry (field 3, a map entry of key and value).
func versionEntrySize(name, version string) int {
	entry := protowire.SizeTag(1) + protowire.SizeBytes(len(name)) + protowire.SizeTag(2) + protowire.SizeBytes(len(version))
	return protowire.SizeTag(3) + protowire.SizeBytes(entry)
}

// subscription returns the first request of typ's subscription: the whole
// subscription when it fits one request, else its first part (the rest is
// left in c.resume). The versions refused in earlier sessions go with the
// subscription, names and versions only: the server needs nothing else.
func (c *Client) subscription(typ string) (*discovery.DeltaDiscoveryRequest, error) {
	final := &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL(typ), ResourceNamesSubscribe: []string{"*"}}
	earlier := c.rejections.list(typ)
	if len(earlier) > 0 {
		slim := make([]*kdsv1.RejectedResource, len(earlier))
		for i, r := range earlier {
			slim[i] = slimRejected(r)
		}
		st, err := rejectionStatus(int32(codes.OK), "versions refused in earlier sessions", slim)
		if err != nil {
			return nil, err
		}
		final.ErrorDetail = st
	}
	versions := c.held[typ]
	limit := c.maxMsg - subscriptionOverhead - proto.Size(final)
	size := 0
	for n, v := range versions {
		size += versionEntrySize(n, v)
	}
	// The "*" counts among the names a server accepts (requestNames).
	if size <= limit && len(versions)+len(earlier)+len(final.ResourceNamesSubscribe) <= MaxNamesPerRequest {
		// A copy: the transport may marshal the request after Send
		// returns, while check updates held.
		final.InitialResourceVersions = maps.Clone(versions)
		return final, nil
	}
	if !c.parts {
		return nil, fmt.Errorf("subscribe to %s: the %d versions held take %d bytes, more than fits one request (%d bytes of the session's %d-byte max message size, %d names with the refused ones and the subscription), and the peer does not accept them in parts (a build without kds-resume-parts): upgrade it, or raise --max-message-size on both sides",
			typ, len(versions), size, limit, c.maxMsg, MaxNamesPerRequest)
	}
	if limit < 1<<10 {
		return nil, fmt.Errorf("subscribe to %s: the versions refused in earlier sessions leave %d bytes of a %d-byte message for held versions", typ, limit, c.maxMsg)
	}
	rp := &resumeParts{names: make([]string, 0, len(versions)), limit: limit, final: final}
	for n := range versions {
		rp.names = append(rp.names, n)
	}
	c.resume[typ] = rp
	c.log.Debug("sending held versions in parts", "type", typ, "held", len(versions), "bytes", size)
	return c.nextPart(typ), nil
}

// nextPart returns the next part of typ's subscription, the subscription
// itself when it is the last one (and then forgets typ's parts). A name no
// longer held is left out; the version sent is the one held now.
func (c *Client) nextPart(typ string) *discovery.DeltaDiscoveryRequest {
	rp := c.resume[typ]
	held := c.held[typ]
	versions := map[string]string{}
	size := 0
	for len(rp.names) > 0 && len(versions) < maxPartNames {
		n := rp.names[0]
		v, ok := held[n]
		if !ok {
			rp.names = rp.names[1:]
			continue
		}
		es := versionEntrySize(n, v)
		if size+es > rp.limit && len(versions) > 0 {
			break
		}
		size += es
		versions[n] = v
		rp.names = rp.names[1:]
	}
	if len(rp.names) > 0 {
		return &discovery.DeltaDiscoveryRequest{TypeUrl: rp.final.GetTypeUrl(), InitialResourceVersions: versions}
	}
	delete(c.resume, typ)
	rp.final.InitialResourceVersions = versions
	return rp.final
}
