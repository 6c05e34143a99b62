// Package mux multiplexes the two logical delta-xDS streams of a KDS session
// onto the one bidirectional gRPC stream a zone opens to global.
//
// Each side serves one direction and subscribes to the other. A message's
// logical stream follows from its kind: a request received belongs to this
// side's serving stream ([Session.Server]); a response received belongs to
// this side's subscribing stream ([Session.Client]). Both sides (zone = dialer,
// global = acceptor) use the same [Session] type.
//
// The package exists to make the flow-control deadlock of a naive
// "receive, handle, send, then receive again" loop impossible. Two peers that
// both send bursts of large messages on one HTTP/2 stream fill both flow-control
// windows; if either side's receive loop then waits for its own Send, neither
// side reads again and both block forever while keepalive PINGs (not
// flow-controlled) keep the connection looking healthy. The invariants:
//
//  1. One goroutine per session is the only caller of Stream.Recv and one is
//     the only caller of Stream.Send. [Session.Run] starts both and joins both
//     before it returns; nothing the session starts outlives it.
//  2. The receive path never waits for the send path. Handing a received
//     message to a logical stream is a non-blocking enqueue, and so is
//     producing a reply (ServerStream.Send, ClientStream.Send).
//  3. Each logical stream's send buffer holds Capacity() = types × window +
//     headroom messages. Application-level flow control bounds what is in
//     flight: a delta-xDS server sends at most window responses per type
//     before their ACKs or NACKs ([WithWindow]; the sync layer uses 3), and a
//     client answers each response once, so it has at most window answers per
//     type outstanding. The headroom (default [DefaultHeadroom]) absorbs requests for types this side
//     does not know (a peer with a newer plugin) and the brief overlap of an
//     ACK with a subscription change. The same bound applies to the inbound
//     queue of each logical stream, for the same reason.
//  4. A full buffer, outbound or inbound, means the protocol was broken (by
//     the peer, or by a local caller that ignores flow control): the session
//     ends with [ErrBufferFull] or [ErrInboundFull], naming the logical stream
//     and the count, instead of blocking.
//  5. A gRPC Send that has not returned within the send timeout (default
//     [DefaultSendTimeout]) ends the session with [ErrSendTimeout]; the error
//     text carries the timeout. The zone reconnects with backoff (package
//     kdsgrpc).
//
// The first failure is recorded with context.WithCancelCause and reaches
// everything the session owns: once the session has ended, Recv and Send on
// both logical streams return that cause, and [Session.Run] returns it.
//
// Why the default headroom is 16: it covers a peer a full plugin release
// ahead (a release rarely adds more than a handful of types) plus the
// ACK/update overlaps of the few types busy at any moment, while keeping what
// a violating peer can pin bounded ((types × window + 16) × max message size) and its
// violation detected early. A buffer slot costs a pointer until used. See
// docs/decisions/0001-mux-send-buffers.md.
package mux
