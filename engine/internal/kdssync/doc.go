// Package kdssync is kds-engine's delta-xDS sync: the server that serves one
// direction's types over a session's serving stream, and the client that
// subscribes to the other direction over its subscribing stream.
//
// Protocol, per resource type (type URL TypeURLPrefix+TypeName):
//
//   - The subscriber opens a type with a request carrying the wildcard
//     subscription and initial_resource_versions: the versions it already
//     holds. The server answers with what differs (changed or new resources,
//     and removed_resources for names it no longer has), so a resumed zone
//     with unchanged state receives nothing but one empty response.
//   - Held versions that do not fit one request go in parts, one part per
//     type on the wire (resume.go); subscriptions sent and not yet
//     answered take at most half of the peer's inbound budget, all types
//     together, the rest waiting for earlier answers (pacer.go).
//   - The server has at most DefaultWindow (3) responses per type in flight:
//     the next one is sent only after the ACK or NACK of the oldest. Large
//     updates are split into several responses of at most the max message
//     size (this is the application-level flow control that bounds the
//     transport's send buffers, DESIGN.md §2 invariant 3: types × window +
//     headroom). A window above one lets the subscriber validate one response
//     while it stores the previous one and the next is on the wire; see
//     docs/decisions/0005-sync-window.md.
//   - A response that leaves more of its type pending (the server will send
//     another as the window allows) ends its system_version_info with
//     MorePending. The first response to a "*" subscription without it
//     completes the subscriber's initial state of the type; global admits
//     only a bounded number of zones' initial syncs at once and counts on
//     this to know when one is over (admission.go).
//   - A large initial sync goes out in store-key order (mesh, then name), so
//     each response is a contiguous key range the receiving store appends.
//   - The subscriber validates a response through its plugins and applies it
//     atomically (one store transaction), then ACKs; if anything is invalid it
//     applies nothing and NACKs with an error naming the resources and fields.
//     Responses are answered in arrival order; validation of the next response
//     overlaps the store transaction of the previous one, and responses that
//     are checked and waiting together share one transaction
//     (docs/decisions/0027-batched-sync-apply.md).
//   - After a NACK the server does not resend the rejected versions: it sends
//     a resource again only when its content (version) changes.
//   - A request for a type this side does not serve gets an empty response
//     with a resource error that says so; the stream stays up (invariant 6).
//
// The server is fed by an Index: a shared, pre-encoded view of the served
// resources that the engine keeps current from the store's change feed. An
// update costs O(changed resources) per connected peer, never O(all).
//
// Attribution: the client stamps every resource it receives with the peer
// identity the engine passes in (on global, the zone the connection
// authenticated as), never with anything in the payload.
package kdssync
