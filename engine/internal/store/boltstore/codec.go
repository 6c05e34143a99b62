package boltstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// sep separates the parts of an item key; store.CheckKey refuses NUL bytes
// in keys, so it cannot occur inside a part, and because it is the lowest
// byte the bytewise order of item keys is the (Zone, Mesh, Name) order.
const sep = 0

// itemKey is the key of a resource inside its type's bucket:
// Zone NUL Mesh NUL Name.
func itemKey(k resource.Key) []byte {
	return appendItemKey(make([]byte, 0, itemKeySize(k)), k)
}

// itemKeySize is the length of k's item key.
func itemKeySize(k resource.Key) int { return len(k.Zone) + len(k.Mesh) + len(k.Name) + 2 }

// appendItemKey appends k's item key to b.
func appendItemKey(b []byte, k resource.Key) []byte {
	b = append(b, k.Zone...)
	b = append(b, sep)
	b = append(b, k.Mesh...)
	b = append(b, sep)
	return append(b, k.Name...)
}

// keyOf parses an item key of type typ back into the resource key.
func keyOf(typ string, k []byte) (resource.Key, error) {
	s := string(k) // one allocation shared by the three parts
	i := strings.IndexByte(s, sep)
	if i < 0 {
		return resource.Key{}, fmt.Errorf("%w: item key %q of %s has no zone separator", errCorrupt, s, typ)
	}
	j := strings.IndexByte(s[i+1:], sep)
	if j < 0 {
		return resource.Key{}, fmt.Errorf("%w: item key %q of %s has no mesh separator", errCorrupt, s, typ)
	}
	j += i + 1
	return resource.Key{Type: typ, Zone: s[:i], Mesh: s[i+1 : j], Name: s[j+1:]}, nil
}

// zonePrefix is the item-key prefix of every resource of one zone ("" for
// resources without a zone).
func zonePrefix(zone string) []byte {
	return append([]byte(zone), sep)
}

// meshOf returns the Mesh part of an item key.
func meshOf(k []byte) []byte {
	i := bytes.IndexByte(k, sep)
	if i < 0 {
		return nil
	}
	rest := k[i+1:]
	j := bytes.IndexByte(rest, sep)
	if j < 0 {
		return nil
	}
	return rest[:j]
}

// Stored values are kds.v1.Resource in protobuf wire format, written and
// read here with protowire rather than through proto reflection: the value
// stays readable by any protobuf tool, and encoding and decoding cost a
// fraction (see docs/benchmarks.md). Field numbers follow proto/kds/v1.
const (
	fType             protowire.Number = 1
	fMesh             protowire.Number = 2
	fName             protowire.Number = 3
	fLabels           protowire.Number = 4
	fSpec             protowire.Number = 5
	fVersion          protowire.Number = 6
	fCreationTime     protowire.Number = 7
	fModificationTime protowire.Number = 8
	fZone             protowire.Number = 9

	fMapKey   protowire.Number = 1
	fMapValue protowire.Number = 2

	fSeconds protowire.Number = 1
	fNanos   protowire.Number = 2
)

// encodedSize bounds the encoding of r, for preallocation.
func encodedSize(r *resource.Resource) int {
	n := len(r.Type) + len(r.Mesh) + len(r.Name) + len(r.Spec) + len(r.Version) + len(r.Zone) + 6*6 + 2*26
	for k, v := range r.Labels {
		n += len(k) + len(v) + 18
	}
	return n
}

// appendEncoded appends r's encoding to b. It is deterministic (labels
// sorted by key), so equal resources encode to equal bytes; Apply relies on
// it to skip no-op puts.
func appendEncoded(b []byte, r *resource.Resource) []byte {
	b, _ = appendEncodedSpec(b, r)
	return b
}

// appendEncodedSpec is appendEncoded that also reports where r.Spec's bytes
// start in the result (-1 if r has no spec).
func appendEncodedSpec(b []byte, r *resource.Resource) (out []byte, specAt int) {
	specAt = -1
	b = appendString(b, fType, r.Type)
	b = appendString(b, fMesh, r.Mesh)
	b = appendString(b, fName, r.Name)
	if len(r.Labels) > 0 {
		keys := make([]string, 0, len(r.Labels))
		for k := range r.Labels {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			v := r.Labels[k]
			b = protowire.AppendTag(b, fLabels, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(
				protowire.SizeTag(fMapKey)+protowire.SizeBytes(len(k))+
					protowire.SizeTag(fMapValue)+protowire.SizeBytes(len(v))))
			b = protowire.AppendTag(b, fMapKey, protowire.BytesType)
			b = protowire.AppendString(b, k)
			b = protowire.AppendTag(b, fMapValue, protowire.BytesType)
			b = protowire.AppendString(b, v)
		}
	}
	if len(r.Spec) > 0 {
		b = protowire.AppendTag(b, fSpec, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(len(r.Spec)))
		specAt = len(b)
		b = append(b, r.Spec...)
	}
	b = appendString(b, fVersion, r.Version)
	b = appendTime(b, fCreationTime, r.CreationTime)
	b = appendTime(b, fModificationTime, r.ModificationTime)
	return appendString(b, fZone, r.Zone), specAt
}

func appendString(b []byte, n protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, n, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendTime(b []byte, n protowire.Number, t time.Time) []byte {
	if t.IsZero() {
		return b
	}
	secs, nanos := t.Unix(), int64(t.Nanosecond())
	size := 0
	if secs != 0 {
		size += protowire.SizeTag(fSeconds) + protowire.SizeVarint(uint64(secs))
	}
	if nanos != 0 {
		size += protowire.SizeTag(fNanos) + protowire.SizeVarint(uint64(nanos))
	}
	b = protowire.AppendTag(b, n, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	if secs != 0 {
		b = protowire.AppendTag(b, fSeconds, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(secs))
	}
	if nanos != 0 {
		b = protowire.AppendTag(b, fNanos, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(nanos))
	}
	return b
}

// encode returns r's encoding in a new slice.
func encode(r *resource.Resource) []byte {
	return appendEncoded(make([]byte, 0, encodedSize(r)), r)
}

var errCorrupt = errors.New("corrupt stored resource")

// decode parses a stored value. The result shares no memory with v, which
// is only valid during its transaction.
func decode(v []byte) (*resource.Resource, error) {
	r := &resource.Resource{}
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return nil, fmt.Errorf("%w: %w", errCorrupt, protowire.ParseError(n))
		}
		v = v[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, v); n < 0 {
				return nil, fmt.Errorf("%w: %w", errCorrupt, protowire.ParseError(n))
			}
			v = v[n:]
			continue
		}
		field, n := protowire.ConsumeBytes(v)
		if n < 0 {
			return nil, fmt.Errorf("%w: field %d: %w", errCorrupt, num, protowire.ParseError(n))
		}
		v = v[n:]
		var err error
		switch num {
		case fType:
			r.Type = string(field)
		case fMesh:
			r.Mesh = string(field)
		case fName:
			r.Name = string(field)
		case fLabels:
			var k, val string
			if k, val, err = decodeLabel(field); err == nil {
				if r.Labels == nil {
					r.Labels = make(map[string]string, 4)
				}
				r.Labels[k] = val
			}
		case fSpec:
			r.Spec = json.RawMessage(bytes.Clone(field))
		case fVersion:
			r.Version = string(field)
		case fCreationTime:
			r.CreationTime, err = decodeTime(field)
		case fModificationTime:
			r.ModificationTime, err = decodeTime(field)
		case fZone:
			r.Zone = string(field)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: field %d: %w", errCorrupt, num, err)
		}
	}
	return r, nil
}

// decodeVersion returns the version field of a stored value, skipping every
// other field without copying it (the spec's bytes are stepped over by
// their length). Like decode, the last occurrence wins.
func decodeVersion(v []byte) (string, error) {
	var version []byte
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return "", fmt.Errorf("%w: %w", errCorrupt, protowire.ParseError(n))
		}
		v = v[n:]
		if num == fVersion && typ == protowire.BytesType {
			field, n := protowire.ConsumeBytes(v)
			if n < 0 {
				return "", fmt.Errorf("%w: field %d: %w", errCorrupt, num, protowire.ParseError(n))
			}
			version, v = field, v[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, v); n < 0 {
			return "", fmt.Errorf("%w: field %d: %w", errCorrupt, num, protowire.ParseError(n))
		}
		v = v[n:]
	}
	return string(version), nil
}

func decodeLabel(v []byte) (key, value string, err error) {
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return "", "", protowire.ParseError(n)
		}
		v = v[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, v); n < 0 {
				return "", "", protowire.ParseError(n)
			}
			v = v[n:]
			continue
		}
		s, n := protowire.ConsumeBytes(v)
		if n < 0 {
			return "", "", protowire.ParseError(n)
		}
		v = v[n:]
		switch num {
		case fMapKey:
			key = string(s)
		case fMapValue:
			value = string(s)
		}
	}
	return key, value, nil
}

func decodeTime(v []byte) (time.Time, error) {
	var secs, nanos int64
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return time.Time{}, protowire.ParseError(n)
		}
		v = v[n:]
		if typ != protowire.VarintType {
			if n = protowire.ConsumeFieldValue(num, typ, v); n < 0 {
				return time.Time{}, protowire.ParseError(n)
			}
			v = v[n:]
			continue
		}
		x, n := protowire.ConsumeVarint(v)
		if n < 0 {
			return time.Time{}, protowire.ParseError(n)
		}
		v = v[n:]
		switch num {
		case fSeconds:
			secs = int64(x)
		case fNanos:
			nanos = int64(int32(x))
		}
	}
	return time.Unix(secs, nanos).UTC(), nil
}
