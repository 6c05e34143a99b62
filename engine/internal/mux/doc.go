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
//  3. Each logical stream's send buffer and inbound queue are bounded in
//     messages: the stream a side subscribes on holds types × window +
//     headroom ([Params.ClientCapacity]), the stream it serves peer types ×
//     window + headroom ([Params.ServerCapacity]), where types is this
//     side's registered type count and peer types the peer's, which the two
//     sides announce when the session starts ([WithPeer]; without it the
//     peer is taken to be like this side). Application-level flow control bounds what
//     is in flight: a delta-xDS server sends at most window responses per
//     type before their ACKs or NACKs ([WithWindow]; the sync layer uses 3),
//     and a client answers each response once, so it has at most window
//     answers per type outstanding. See "Sizing the four queues" below.
//  4. Each logical stream's inbound queue is also bounded in bytes per
//     session ([WithInboundBudget], default [DefaultInboundBudgetMessages]
//     × the session's max message size for the peer's requests,
//     [ResponseBudgetMultiple] times that for its responses), and all
//     sessions' inbound queues together by an [InboundPool]
//     ([WithInboundPool], default size [DefaultInboundPoolBytes]). A
//     message costs what it holds decoded (kdswire.Measure) plus
//     [MessageOverhead]: for a request, its encoded size (proto.Size of
//     the whole session message, the size the sender counted and
//     checked; the large lists stay encoded until read); for a response,
//     its encoded size plus the decoded structures of its entries
//     (kdswire.ResourceOverhead per resource), since a resource entry of
//     a few bytes on the wire becomes some 250 bytes of structs decoded.
//  5. A full queue or buffer, in messages or in the session's bytes, means
//     the protocol was broken (by the peer, or by a local caller that
//     ignores flow control): the session ends with [ErrBufferFull] or
//     [ErrInboundFull], naming the logical stream, the type URL of the
//     message that did not fit, the count and the bytes, instead of
//     blocking. An exhausted pool is not a violation by anyone: the
//     receive loop waits for room (see below).
//  6. A gRPC Send that has not returned within the send timeout (default
//     [DefaultSendTimeout]) ends the session with [ErrSendTimeout]; the error
//     text carries the timeout. The zone reconnects with backoff (package
//     kdsgrpc).
//  7. Send refuses a message over the session's max message size with
//     [ErrMessageTooLarge]: the smaller of this side's and the peer's
//     announced size, so the peer's gRPC never refuses what this side sends.
//
// # The model
//
// model/kds.pml is a Promela model of one session: both peers with the
// goroutines of this package (receive loop, send loop) and the sync
// layer's handlers, the HTTP/2 stream and connection windows, the four
// bounded queues per side and the send timeout. `make model` has spin show
// that the naive design deadlocks and that this design, within the bounds
// listed in docs/decisions/0013-spin-model.md, has no deadlock, sends
// everything it enqueues (or ends the session with an error), and
// overflows a queue only when a peer broke the protocol. The model's
// constants are checked against this package's and kdssync's
// (TestModelParams); a change to the capacity formula, the window or the
// headroom must be reflected there.
//
// # Coalescing
//
// With [WithCoalesce] (kdsgrpc sets it when the peer announced
// kds-coalesce: 1), the send loop, after taking one message, also takes
// whatever else is already queued on either logical stream, taking turns,
// and sends them as one kdsv1.Batch in one Stream.Send: at most
// [MaxBatchMessages] messages and never more than the session's max message
// size. It never waits to fill a batch, so a message alone goes alone, as
// it is. The receive loop routes the messages of a batch one by one, in
// order, exactly as if each had arrived alone (each counts against its
// queue's capacity and budgets); a batch inside a batch is
// [ErrUnknownMessage]. Every session accepts batches; it sends them only to
// a peer that announced it accepts them, so a peer that does not know the
// kind never receives one. This is what makes one small ACK per response
// cheap: the ACKs queued while a Send is under way share the next one.
//
// The invariants are unchanged: one sender and one receiver, the receive
// path never waits for the send path, the queues are bounded in messages
// and bytes as before, and no stream message exceeds the max message size.
// The spin model still sends one message per Send; a batch is the same
// messages sent back to back with nothing in between, which the model's
// send loop can also do, except that the receiver sees them only once the
// whole batch arrived: that only delays what the receive loop enqueues,
// and the receive loop waits for nothing of the send path either way.
//
// # Sizing the four queues
//
// Which side's type count bounds each of the four queues on a side:
//
//   - the client stream's send buffer (this side's subscriptions and
//     answers): one subscription and at most window answers per type this
//     side receives, so this side's count;
//   - the client stream's inbound queue (the peer's responses): at most
//     window per type this side subscribed to, so this side's count;
//   - the server stream's inbound queue (the peer's subscriptions and
//     answers): the mirror of the peer's client send buffer, so the peer's
//     count, types this side does not know included, since the peer
//     subscribes to those too;
//   - the server stream's send buffer (responses to the peer): at most
//     window per type the peer subscribed to, answers for types this side
//     does not serve included, so the peer's count.
//
// Both sides thus compute the same figure for one logical stream: the
// sender's buffer and the receiver's queue agree, whichever side has more
// types. Sizing every queue from this side's count alone lets a peer with
// more types overflow the server stream's inbound queue with its first
// burst of subscriptions (a global with more types than 3 × a zone's + 16
// did so, and the zone reconnected in a loop). The headroom (default
// [DefaultHeadroom]) absorbs re-subscriptions and the brief overlap of an
// ACK with a subscription change and, with a peer that announced nothing
// (an older build, assumed to be like this side), requests for types this
// side does not know. The window is a protocol constant of the sync layer
// that both sides share, so it is not announced. Queues allocate as they
// fill, so a large bound costs nothing until used, and the byte budgets
// (invariant 4) bound what a peer that announces many types can make this
// side hold.
//
// # Failures
//
// The first failure is recorded with context.WithCancelCause and reaches
// everything the session owns: once the session has ended, Recv and Send on
// both logical streams return that cause, and [Session.Run] returns it.
//
// # Defaults
//
// Why the default headroom is 16: it covers a peer a full plugin release
// ahead (a release rarely adds more than a handful of types) plus the
// ACK/update overlaps of the few types busy at any moment, while keeping
// violations detected early. See docs/decisions/0001-mux-send-buffers.md.
//
// Why the per-session byte budget is 16 max-size messages per logical
// stream: a peer that follows the protocol may have window (3) responses
// of every type in flight, each up to the max message size, and the
// receiver takes one at a time off the queue to validate it. A full initial
// sync of the two heavy zone→global types (Dataplane, DataplaneInsight)
// can put six max-size responses on the queue, a large policy set a few
// more; 16 covers five heavy types syncing at once. Responses are counted
// at what they hold decoded, which for what the sync layer sends is 1.24
// times their encoding (1 KiB policies) to 1.85 (200-byte statuses, the
// churn benchmark's shape) and 3.94 (resources of an empty spec, 97 bytes
// each); so the response queue's budget is twice the request queue's
// ([ResponseBudgetMultiple]): 25, 17 and 8 max-size responses of these
// shapes fit, five heavy types of statuses as before, and at worst the
// two heavy types' six
// (TestHonestMaxSizeResponsesFitTheBudget). Requests are small
// except subscriptions, one per type with the versions the peer holds,
// which the sync layer's client keeps under half of this budget in flight
// however many types subscribe at once ([Params.PeerInboundBudget]). A
// smaller budget (two messages) would end honest sessions during large
// initial syncs and make them reconnect; the budget is a bound against a
// peer that ignores flow control, not a throttle. What one peer can make
// this side hold is then at most 3 × 16 × the max message size (192 MiB at
// the 4 MiB default: 64 of requests, 128 of responses, counted as they
// hold decoded) plus the one message its receive loop holds, instead
// of (types × window + headroom) × the max message size per stream.
//
// Why the receive loop waits when the shared pool is exhausted instead of
// ending the session: the pool is shared, so the session that finds it
// exhausted is usually not the one that filled it; ending it would let a
// few peers that keep their queues full disconnect every other peer.
// Waiting stops this session's reads, and HTTP/2 flow control then stops
// its peer, which is back-pressure and nothing more. It cannot deadlock:
// the pool is freed by the sync layer's readers of every session's
// queues, which never wait for any receive loop (invariant 2 keeps the
// receive loops from waiting for the send path, and the readers only
// enqueue their replies), and the pool is taken in arrival order, so a
// waiting session gets room as soon as enough has been read. The wait ends
// when the session ends, or the stream does. A peer whose Send then stays
// blocked for longer than its send timeout ends its own session, as with
// any slow reader. Many honest peers' initial syncs at once fill a
// small pool without ending anything (the engine's
// TestManyZonesInitialSyncIntoASmallPoolWaitsAndEndsNothing);
// [InboundPool.Waits] counts the waits. Global keeps honest zones from
// filling it in the first place: it admits only as many zones' initial
// syncs at once as the pool holds (kdssync.Admission, decision 0041),
// because with a slow intake the waits would otherwise reach the zones'
// send timeout.
package mux
