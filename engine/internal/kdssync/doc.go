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
//   - The server has at most one response per type in flight: the next one is
//     sent only after the ACK or NACK of the previous one. Large updates are
//     split into several responses of at most the max message size, each
//     waiting for its ACK (this is the application-level flow control that
//     bounds the transport's send buffers, DESIGN.md §2 invariant 3).
//   - The subscriber validates a response through its plugins and applies it
//     atomically (one store transaction), then ACKs; if anything is invalid it
//     applies nothing and NACKs with an error naming the resources and fields.
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
