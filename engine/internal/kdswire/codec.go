package kdswire

import (
	"bytes"
	"fmt"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// Codec is the KDS port's gRPC codec (encoding.CodecV2). Its Name is
// "proto", so the content subtype on the wire stays that of the default
// codec. Use it on both ends of the KDS connection:
// grpc.ForceServerCodecV2(Codec{}) on global's server and
// grpc.ForceCodecV2(Codec{}) as a call option on the zone. Messages other
// than *kdsv1.Message go to gRPC's protobuf codec unchanged.
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// Name is "proto": the codec reads and writes protobuf.
func (Codec) Name() string { return grpcproto.Name }

// fallback is gRPC's own protobuf codec.
func fallback() encoding.CodecV2 { return encoding.GetCodecV2(grpcproto.Name) }

// Marshal encodes v. A *kdsv1.Message in the plain form (see the package
// documentation) is written directly; anything else as proto.Marshal
// would. Resource values of a large message are not copied (see
// encoder.pieces).
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*kdsv1.Message)
	if !ok || !fastEncode {
		return fallback().Marshal(v)
	}
	size, ok := (&sizer{check: true}).message(m)
	if !ok {
		return fallback().Marshal(v)
	}
	return marshal(m, size, size >= referAbove)
}

// referAbove is the message size from which Marshal leaves resource values
// in place instead of copying them into one buffer.
const referAbove = 32 << 10

// marshal writes m, which the sizer took at size bytes, into one buffer,
// or with refer into pieces that refer to its resource values.
func marshal(m *kdsv1.Message, size int, refer bool) (mem.BufferSlice, error) {
	if refer {
		e := encoder{refer: true, buf: make([]byte, 0, min(size, 64+size/8))}
		e.message(m)
		out := e.pieces()
		if n := out.Len(); n != size {
			return nil, fmt.Errorf("kds message: encoded %d bytes, sized %d", n, size)
		}
		return out, nil
	}
	if mem.IsBelowBufferPoolingThreshold(size) {
		e := encoder{buf: make([]byte, 0, size)}
		e.message(m)
		if len(e.buf) != size {
			return nil, fmt.Errorf("kds message: encoded %d bytes, sized %d", len(e.buf), size)
		}
		return mem.BufferSlice{mem.SliceBuffer(e.buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	e := encoder{buf: (*buf)[:0]}
	e.message(m)
	if len(e.buf) != size {
		pool.Put(buf)
		return nil, fmt.Errorf("kds message: encoded %d bytes, sized %d", len(e.buf), size)
	}
	*buf = e.buf
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// Unmarshal decodes data into v. For a *kdsv1.Message that carries a
// response or a batch, resource values share one copy of data (see the
// package documentation); the result is what proto.Unmarshal would give.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*kdsv1.Message)
	if !ok {
		return fallback().Unmarshal(data, v)
	}
	if !(aliases(data) || data.Len() >= DeferMin) {
		// A small message, which protobuf decodes whole (copying what
		// it keeps): refused, as a large one is, before anything of it
		// is decoded (a response need not be its first field).
		b := contiguous(data)
		if err := refuseMessage(b, 0, true); err != nil {
			return err
		}
		return proto.Unmarshal(b, m)
	}
	return unmarshalOwned(materialize(data), m)
}

// contiguous is data's bytes: its one buffer's, or a copy of its buffers.
func contiguous(data mem.BufferSlice) []byte {
	if len(data) == 1 {
		return data[0].ReadOnlyData()
	}
	return materialize(data)
}

// materialize copies data into one new slice. Unlike
// mem.BufferSlice.Materialize it does not zero the slice first (bytes.Join
// allocates without zeroing what it is about to fill).
func materialize(data mem.BufferSlice) []byte {
	pieces := make([][]byte, len(data))
	for i, buf := range data {
		pieces[i] = buf.ReadOnlyData()
	}
	return bytes.Join(pieces, nil)
}

// Unmarshal decodes b into m as Codec.Unmarshal does, keeping slices of b
// in m's resource values: the caller must not change b afterwards.
func Unmarshal(b []byte, m *kdsv1.Message) error {
	return unmarshalOwned(b, m)
}

func unmarshalOwned(b []byte, m *kdsv1.Message) error {
	proto.Reset(m)
	if err := refuseMessage(b, 0, false); err != nil {
		return err
	}
	return decode(b, m, true)
}

// decode decodes b into m, an empty message, once refuseMessage let it
// through with its resource entries taken as plain. A message the codec
// leaves to protobuf-go (a resource entry that is not plain, among others)
// is checked again, deep, first, unless check is false.
func decode(b []byte, m *kdsv1.Message, check bool) error {
	if fastDecode {
		if k, ok := decodeMessage(b, 0); ok {
			m.Kind = k.Kind
			return nil
		}
	}
	if check {
		if err := refuseMessage(b, 0, true); err != nil {
			return err
		}
	}
	if err := proto.Unmarshal(b, m); err != nil {
		if where := locate(b); where != "" {
			return fmt.Errorf("kds message (%d bytes): %s: %w", len(b), where, err)
		}
		return fmt.Errorf("kds message (%d bytes): %w", len(b), err)
	}
	// Not in the plain form (a field written twice, say): protobuf decoded
	// it whole; large request lists go back to their encoding all the same.
	switch k := m.Kind.(type) {
	case *kdsv1.Message_Request:
		deferDecoded(k.Request)
	case *kdsv1.Message_Batch:
		for _, im := range k.Batch.GetMessages() {
			if r := im.GetRequest(); r != nil {
				deferDecoded(r)
			}
		}
	}
	return nil
}

// aliases reports whether data starts with a response or a batch, the
// messages worth a buffer of their own. Requests (small ACKs, mostly) are
// decoded from gRPC's pooled buffer by the default codec, unless they are
// large enough (DeferMin) to keep their lists encoded until Expand.
func aliases(data mem.BufferSlice) bool {
	for _, buf := range data {
		if b := buf.ReadOnlyData(); len(b) > 0 {
			return b[0] == tagResponse || b[0] == tagBatch
		}
	}
	return false
}

// fastEncode and fastDecode are off when the generated types carry fields
// this package does not know (a newer go-control-plane, a changed
// kds.proto): every message then goes through protobuf-go. TestSchema
// fails in that case, so that the lists below get updated.
var (
	fastEncode = schemaErr() == nil
	fastDecode = fastEncode
)

// schemaErr checks the descriptors of the messages this package writes and
// reads by hand against the fields it knows.
func schemaErr() error {
	want := []struct {
		m      protoreflect.ProtoMessage
		fields map[protoreflect.FieldNumber]string
	}{
		{&kdsv1.Message{}, map[protoreflect.FieldNumber]string{1: "request", 2: "response", 3: "batch"}},
		{&kdsv1.Batch{}, map[protoreflect.FieldNumber]string{1: "messages"}},
		{&discovery.DeltaDiscoveryResponse{}, map[protoreflect.FieldNumber]string{
			1: "system_version_info", 2: "resources", 4: "type_url", 5: "nonce", 6: "removed_resources",
			7: "control_plane", 8: "removed_resource_names", 9: "resource_errors",
		}},
		{&discovery.Resource{}, map[protoreflect.FieldNumber]string{
			1: "version", 2: "resource", 3: "name", 4: "aliases", 6: "ttl", 7: "cache_control", 8: "resource_name", 9: "metadata",
		}},
		{&anypb.Any{}, map[protoreflect.FieldNumber]string{1: "type_url", 2: "value"}},
	}
	for _, w := range want {
		d := w.m.ProtoReflect().Descriptor()
		fs := d.Fields()
		if fs.Len() != len(w.fields) {
			return fmt.Errorf("%s has %d fields, kdswire knows %d", d.FullName(), fs.Len(), len(w.fields))
		}
		for i := range fs.Len() {
			f := fs.Get(i)
			if w.fields[f.Number()] != string(f.Name()) {
				return fmt.Errorf("%s field %d is %q, kdswire knows %q", d.FullName(), f.Number(), f.Name(), w.fields[f.Number()])
			}
		}
	}
	return nil
}
