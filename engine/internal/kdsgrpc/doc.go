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
// Both sides apply keepalive and the max message size from [Config]; TLS and
// tokens are added by the caller as extra grpc.ServerOption / grpc.DialOption.
// The zone side may be given several global addresses (replicas; a host
// name counts as each address it resolves to, see [ParseAddresses]). After
// any session error it moves on to the next address at once, and waits
// between rounds over all of them with exponential backoff and jitter
// ([Backoff]); [Dialer] states the exact policy.
package kdsgrpc
