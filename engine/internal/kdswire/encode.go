package kdswire

import (
	"unicode/utf8"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// Size returns proto.Size(m), without walking a plain response's resources
// through protobuf's reflection.
func Size(m *kdsv1.Message) int {
	if fastEncode {
		if n, ok := (&sizer{}).message(m); ok {
			return n
		}
	}
	return proto.Size(m)
}

// responseSize returns proto.Size(r), without the reflection walk for a
// plain response.
func responseSize(r *discovery.DeltaDiscoveryResponse) int {
	if n, ok := (&sizer{}).response(r); ok {
		return n
	}
	return proto.Size(r)
}

// Every field number written here is below 16: its tag is one byte.
const tagLen = 1

// sizer sizes messages in the plain form the encoder writes. With check
// it also refuses strings that are not valid UTF-8 (protobuf refuses to
// write them; Marshal leaves them to it), remembering the last valid type
// URL so that the one every resource carries is checked once.
type sizer struct {
	check   bool
	typeURL string
}

func (z *sizer) valid(s string) bool { return !z.check || utf8.ValidString(s) }

// message returns the encoded size of m and whether m is in the form
// encoder writes: a request (sized and written by protobuf), a plain
// response (response), or a batch of those; no unknown fields, no nil
// messages.
func (z *sizer) message(m *kdsv1.Message) (int, bool) {
	if m == nil || len(m.ProtoReflect().GetUnknown()) > 0 {
		return 0, false
	}
	var n int
	switch k := m.Kind.(type) {
	case nil:
		return 0, true
	case *kdsv1.Message_Request:
		if k.Request == nil {
			return 0, false
		}
		n = proto.Size(k.Request)
	case *kdsv1.Message_Response:
		var ok bool
		if n, ok = z.response(k.Response); !ok {
			return 0, false
		}
	case *kdsv1.Message_Batch:
		if k.Batch == nil || len(k.Batch.ProtoReflect().GetUnknown()) > 0 {
			return 0, false
		}
		for _, inner := range k.Batch.Messages {
			in, ok := z.message(inner)
			if !ok {
				return 0, false
			}
			n += tagLen + protowire.SizeBytes(in)
		}
	default:
		return 0, false
	}
	return tagLen + protowire.SizeBytes(n), true
}

// stringSize is the encoded size of a proto3 string field holding s (none
// when s is empty).
func stringSize(s string) int {
	if s == "" {
		return 0
	}
	return tagLen + protowire.SizeBytes(len(s))
}

// response returns r's encoded size if r sets only the fields the sync
// layer sets (system version, resources, type URL, nonce, removed
// resources) and its resources are plain (resource). Anything else is left
// to protobuf.
func (z *sizer) response(r *discovery.DeltaDiscoveryResponse) (int, bool) {
	if r == nil || r.RemovedResourceNames != nil || r.ControlPlane != nil || r.ResourceErrors != nil ||
		len(r.ProtoReflect().GetUnknown()) > 0 ||
		!z.valid(r.SystemVersionInfo) || !z.valid(r.TypeUrl) || !z.valid(r.Nonce) {
		return 0, false
	}
	n := stringSize(r.SystemVersionInfo) + stringSize(r.TypeUrl) + stringSize(r.Nonce)
	for _, res := range r.Resources {
		rn, ok := z.resource(res)
		if !ok {
			return 0, false
		}
		n += tagLen + protowire.SizeBytes(rn)
	}
	for _, s := range r.RemovedResources {
		if !z.valid(s) {
			return 0, false
		}
		n += tagLen + protowire.SizeBytes(len(s))
	}
	return n, true
}

// resource returns r's encoded size if r has a name, a version and a
// resource (an Any) at most, and no unknown fields.
func (z *sizer) resource(r *discovery.Resource) (int, bool) {
	if r == nil || r.ResourceName != nil || len(r.Aliases) > 0 || r.Ttl != nil || r.CacheControl != nil || r.Metadata != nil ||
		len(r.ProtoReflect().GetUnknown()) > 0 || !z.valid(r.Name) || !z.valid(r.Version) {
		return 0, false
	}
	n := stringSize(r.Version) + stringSize(r.Name)
	if a := r.Resource; a != nil {
		if len(a.ProtoReflect().GetUnknown()) > 0 {
			return 0, false
		}
		if a.TypeUrl != z.typeURL {
			if !z.valid(a.TypeUrl) {
				return 0, false
			}
			z.typeURL = a.TypeUrl
		}
		n += tagLen + protowire.SizeBytes(anySize(a))
	}
	return n, true
}

// resourceSize is the encoded size of a resource the sizer took.
func resourceSize(r *discovery.Resource) int {
	n := stringSize(r.Version) + stringSize(r.Name)
	if r.Resource != nil {
		n += tagLen + protowire.SizeBytes(anySize(r.Resource))
	}
	return n
}

func anySize(a *anypb.Any) int {
	n := stringSize(a.TypeUrl)
	if len(a.Value) > 0 {
		n += tagLen + protowire.SizeBytes(len(a.Value))
	}
	return n
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// encoder writes messages a sizer took, in the field order protobuf-go
// writes, so the bytes are those of proto.Marshal. With refer, resource
// values of at least referMin bytes are not copied: buf gets everything
// else and refs says where each value goes (see pieces).
type encoder struct {
	buf   []byte
	refer bool
	refs  []valueRef
}

// valueRef is a value that belongs at offset at of the encoder's buf.
type valueRef struct {
	at int
	v  []byte
}

// referMin is the smallest value the encoder leaves in place: below it,
// copying costs less than one more piece for the transport to write.
const referMin = 256

func (e *encoder) message(m *kdsv1.Message) {
	var z sizer
	switch k := m.Kind.(type) {
	case *kdsv1.Message_Request:
		// Sized by the sizer just before: the cached size is current.
		n := proto.Size(k.Request)
		e.buf = protowire.AppendTag(e.buf, msgRequest, protowire.BytesType)
		e.buf = protowire.AppendVarint(e.buf, uint64(n))
		out, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(e.buf, k.Request)
		if err == nil {
			// On error (unreachable for a message proto.Size
			// walked) the caller's length check reports the short
			// write.
			e.buf = out
		}
	case *kdsv1.Message_Response:
		n, _ := z.response(k.Response)
		e.buf = protowire.AppendTag(e.buf, msgResponse, protowire.BytesType)
		e.buf = protowire.AppendVarint(e.buf, uint64(n))
		e.response(k.Response)
	case *kdsv1.Message_Batch:
		n := 0
		for _, inner := range k.Batch.Messages {
			in, _ := z.message(inner)
			n += tagLen + protowire.SizeBytes(in)
		}
		e.buf = protowire.AppendTag(e.buf, msgBatch, protowire.BytesType)
		e.buf = protowire.AppendVarint(e.buf, uint64(n))
		for _, inner := range k.Batch.Messages {
			in, _ := z.message(inner)
			e.buf = protowire.AppendTag(e.buf, batchMessages, protowire.BytesType)
			e.buf = protowire.AppendVarint(e.buf, uint64(in))
			e.message(inner)
		}
	}
}

func (e *encoder) response(r *discovery.DeltaDiscoveryResponse) {
	b := appendString(e.buf, respSystemVersion, r.SystemVersionInfo)
	for _, res := range r.Resources {
		n := resourceSize(res)
		b = protowire.AppendTag(b, respResources, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
		b = appendString(b, resVersion, res.Version)
		if a := res.Resource; a != nil {
			an := anySize(a)
			b = protowire.AppendTag(b, resResource, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(an))
			b = appendString(b, anyTypeURL, a.TypeUrl)
			if len(a.Value) > 0 {
				b = protowire.AppendTag(b, anyValue, protowire.BytesType)
				if e.refer && len(a.Value) >= referMin {
					b = protowire.AppendVarint(b, uint64(len(a.Value)))
					e.refs = append(e.refs, valueRef{at: len(b), v: a.Value})
				} else {
					b = protowire.AppendBytes(b, a.Value)
				}
			}
		}
		b = appendString(b, resName, res.Name)
	}
	b = appendString(b, respTypeURL, r.TypeUrl)
	b = appendString(b, respNonce, r.Nonce)
	for _, s := range r.RemovedResources {
		b = protowire.AppendTag(b, respRemoved, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	e.buf = b
}

// pieces returns what the encoder wrote as a BufferSlice: stretches of buf
// with the referred values between them, in order. The values are not
// copied; the transport reads them when it writes the message, after Send
// returned, which is why a message handed to Send must not change (see
// mux's ServerStream.Send). One slice holds every piece, so that the
// BufferSlice's entries are pointers into it and cost no allocation each.
func (e *encoder) pieces() mem.BufferSlice {
	bufs := make([]mem.SliceBuffer, 0, 2*len(e.refs)+1)
	prev := 0
	for _, r := range e.refs {
		if r.at > prev {
			bufs = append(bufs, e.buf[prev:r.at:r.at])
		}
		bufs = append(bufs, r.v)
		prev = r.at
	}
	if prev < len(e.buf) {
		bufs = append(bufs, e.buf[prev:])
	}
	out := make(mem.BufferSlice, len(bufs))
	for i := range bufs {
		out[i] = &bufs[i]
	}
	return out
}
