// Package kdswire is the gRPC codec of the KDS port: it encodes and decodes
// kds.v1.Message (the envelope of the KDS Session stream) with less copying
// and fewer allocations than the generic protobuf codec, and hands every
// other message to that codec.
//
// The bytes on the wire are those of proto.Marshal: [Codec.Marshal] writes,
// for the messages kds-engine's servers send, exactly what protobuf-go
// writes, and [Codec.Unmarshal] yields what proto.Unmarshal yields (the
// same message by proto.Equal, the same acceptance of malformed input),
// except that it refuses a request that carries fields KDS does not use
// and that decode to many times their size ([ErrRefusedRequest]), and a
// response whose entries would hold more than [MaxResponseExpansion] times
// its size decoded ([ErrRefusedResponse]). [Measure] tells what a decoded
// message holds, which the mux counts against its byte budgets.
// Older peers interoperate because nothing about the format changes; the
// codec keeps the "proto" content subtype.
//
// What it does differently:
//
//   - Receiving a response (or a batch), the stream message is copied out of
//     gRPC's frame buffers once, into a buffer of its own, and each
//     resource's Any.value is a slice of that buffer instead of a copy of
//     its own; the envoy Resource and Any structs of one response are
//     allocated together. Strings (names, versions) are copied as usual, so
//     what outlives the response (a held name, a version) does not pin its
//     buffer. The buffer lives as long as a resource value that points into
//     it; the sync layer keeps values only until they are applied (the
//     stores copy what they keep).
//   - Sending a response, resources are written directly with protowire
//     (their values are already encoded: the index holds every resource in
//     wire form), without the reflection-driven size and marshal passes.
//
// Anything outside the plain form the engine sends (fields the engine does
// not set, unknown fields, repeated or misplaced fields, invalid UTF-8,
// truncation) goes through protobuf-go, which decides; FuzzUnmarshal and
// FuzzMarshal compare the two paths.
package kdswire
