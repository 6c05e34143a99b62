// Package kdsgrpc is the gRPC edge of a KDS session: global accepts the
// kdsv1.KDS/Session stream ([Global]), a zone dials it ([Dialer]); both run a
// mux.Session on the stream and hand it to a sync handler.
//
// The zone identifies itself with the request metadata key "kds-zone"
// ([ZoneMetadataKey]). gRPC status codes appear only here: a missing or
// invalid zone name is codes.InvalidArgument, and a session's error is mapped
// to a status when the RPC ends. Global answers every session with a header
// before any message ([WithSessionHeader]; the engine announces its schema
// digests there), which the zone's handler reads with [PeerHeader].
//
// Both sides announce their registered type count and max message size when
// a session starts ([TypesMetadataKey], [MaxMessageSizeMetadataKey]): the
// zone in its request metadata, global in its session header. Each side
// sizes its mux.Session from both (mux.WithPeer): the stream it serves from
// the peer's count, every message at most the smaller size. A figure that
// is absent means an older peer, taken to be like this side; one that is
// out of range refuses the session ([ErrInvalidAnnouncement]:
// codes.InvalidArgument on global, a refused attempt on the zone, reported
// to [WithRefusedHook]). Each side's gRPC receive limit stays its own max
// message size, which is at least the agreed one.
//
// Both sides apply keepalive and the max message size from [Config]; TLS and
// tokens are added by the caller as extra grpc.ServerOption / grpc.DialOption.
// The zone side may be given several global addresses (replicas; a host
// name counts as each address it resolves to, see [ParseAddresses]). After
// any session error it moves on to the next address at once, and waits
// between rounds over all of them with exponential backoff and jitter
// ([Backoff]); [Dialer] states the exact policy.
package kdsgrpc
