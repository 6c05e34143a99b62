package resource

import (
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of kds.v1.Resource (proto/kds/v1) and
// google.protobuf.Timestamp, for EncodedSize.
const (
	sizeFieldLabels = 4
	sizeFieldTime   = 7 // creation_time; modification_time (8) has a tag of the same size
)

// EncodedSize returns len(proto.Marshal(r.ToProto())) without building the
// message: the size of r's wire envelope, which the validator checks
// against its limit on every write and every received resource.
func (r *Resource) EncodedSize() int {
	n := sizeField(len(r.Type)) + sizeField(len(r.Mesh)) + sizeField(len(r.Name)) +
		sizeField(len(r.Spec)) + sizeField(len(r.Version)) + sizeField(len(r.Zone))
	for k, v := range r.Labels {
		// A map entry always carries its key and value fields.
		entry := 1 + protowire.SizeBytes(len(k)) + 1 + protowire.SizeBytes(len(v))
		n += protowire.SizeTag(sizeFieldLabels) + protowire.SizeBytes(entry)
	}
	n += sizeTime(r.CreationTime) + sizeTime(r.ModificationTime)
	return n
}

// sizeField is the size of a proto3 string or bytes field of n bytes with
// a one-byte tag (field numbers below 16); empty fields are not encoded.
func sizeField(n int) int {
	if n == 0 {
		return 0
	}
	return 1 + protowire.SizeBytes(n)
}

// sizeTime is the size of a Timestamp field as ToProto sets it: absent for
// the zero time, else seconds and nanos, each omitted when zero.
func sizeTime(t time.Time) int {
	if t.IsZero() {
		return 0
	}
	m := 0
	if s := t.Unix(); s != 0 {
		m += 1 + protowire.SizeVarint(uint64(s))
	}
	if ns := t.Nanosecond(); ns != 0 {
		m += 1 + protowire.SizeVarint(uint64(int64(int32(ns))))
	}
	return protowire.SizeTag(sizeFieldTime) + protowire.SizeBytes(m)
}
