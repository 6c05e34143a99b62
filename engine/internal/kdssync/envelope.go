package kdssync

import (
	"encoding/json"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// Field numbers of kds.v1.Resource (proto/kds/v1), its labels' map entries
// and google.protobuf.Timestamp.
const (
	envType             protowire.Number = 1
	envMesh             protowire.Number = 2
	envName             protowire.Number = 3
	envLabels           protowire.Number = 4
	envSpec             protowire.Number = 5
	envVersion          protowire.Number = 6
	envCreationTime     protowire.Number = 7
	envModificationTime protowire.Number = 8
	envZone             protowire.Number = 9

	entryKey   protowire.Number = 1
	entryValue protowire.Number = 2

	tsSeconds protowire.Number = 1
	tsNanos   protowire.Number = 2
)

// envelopeHint holds what the caller expects an envelope's string fields
// to be (from the wire resource that carries it). A field whose bytes equal
// its hint is set to the hint itself, sharing its memory, instead of to a
// new copy; a field that differs is copied as usual, so a hint never
// changes what is decoded, only how many strings are allocated.
type envelopeHint struct {
	typ, mesh, name, version string
}

// hinted returns v as a string: hint itself if v holds the same bytes (the
// comparison does not allocate), a copy otherwise.
func hinted(v []byte, hint string) string {
	if len(v) > 0 && string(v) == hint {
		return hint
	}
	return string(v)
}

// decodeEnvelope decodes a kds.v1.Resource envelope as
// resource.FromProto(proto.Unmarshal(b)) does. The returned Spec shares b's
// memory (the caller owns b and does not change it), and string fields
// equal to their hint share the hint's. Envelopes in the form
// kds-engine's senders write (each known field with its own wire type,
// valid UTF-8, each timestamp at most once, no unknown fields) are read
// here directly, without the reflection-driven decoder and without copying
// the spec; anything else goes through proto.Unmarshal, which decides.
func decodeEnvelope(b []byte, h envelopeHint) (*resource.Resource, error) {
	return decodeEnvelopeInto(&resource.Resource{}, b, h)
}

// decodeEnvelopeInto is decodeEnvelope into r, which must be zero; it
// returns r, or a new resource when b is not in the plain form.
func decodeEnvelopeInto(r *resource.Resource, b []byte, h envelopeHint) (*resource.Resource, error) {
	if decodeEnvelopeFast(r, b, h) {
		return r, nil
	}
	var p kdsv1.Resource
	if err := proto.Unmarshal(b, &p); err != nil {
		return nil, err
	}
	return resource.FromProto(&p), nil
}

// decodeEnvelopeFast decodes b into r, which must be zero, if b is in the
// plain form decodeEnvelope describes; it reports false for everything
// else (including malformed input), leaving r partly filled.
func decodeEnvelopeFast(r *resource.Resource, b []byte, h envelopeHint) (ok bool) {
	var seenCreation, seenModification bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return false
		}
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch num {
		case envType, envMesh, envName, envVersion, envZone:
			if !utf8.Valid(v) {
				return false
			}
			switch num {
			case envType:
				r.Type = hinted(v, h.typ)
			case envMesh:
				r.Mesh = hinted(v, h.mesh)
			case envName:
				r.Name = hinted(v, h.name)
			case envVersion:
				r.Version = hinted(v, h.version)
			default:
				r.Zone = string(v)
			}
		case envSpec:
			if len(v) == 0 {
				r.Spec = nil
			} else {
				r.Spec = json.RawMessage(v[:len(v):len(v)])
			}
		case envLabels:
			k, val, ok := decodeLabelEntry(v)
			if !ok {
				return false
			}
			if r.Labels == nil {
				r.Labels = map[string]string{}
			}
			r.Labels[k] = val
		case envCreationTime, envModificationTime:
			t, ok := decodeTimestamp(v)
			if !ok {
				return false
			}
			if num == envCreationTime {
				if seenCreation {
					return false
				}
				seenCreation, r.CreationTime = true, t
			} else {
				if seenModification {
					return false
				}
				seenModification, r.ModificationTime = true, t
			}
		default:
			return false
		}
	}
	return true
}

// decodeLabelEntry reads a map entry holding at most one key and one value,
// both valid UTF-8 strings.
func decodeLabelEntry(b []byte) (key, value string, ok bool) {
	var seenKey, seenValue bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return "", "", false
		}
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		if n < 0 || !utf8.Valid(v) {
			return "", "", false
		}
		b = b[n:]
		switch {
		case num == entryKey && !seenKey:
			seenKey, key = true, string(v)
		case num == entryValue && !seenValue:
			seenValue, value = true, string(v)
		default:
			return "", "", false
		}
	}
	return key, value, true
}

// decodeTimestamp reads a Timestamp holding at most one seconds and one
// nanos field, as Timestamp.AsTime returns it.
func decodeTimestamp(b []byte) (time.Time, bool) {
	var secs uint64
	var nanos uint64
	var seenSecs, seenNanos bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.VarintType {
			return time.Time{}, false
		}
		b = b[n:]
		x, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return time.Time{}, false
		}
		b = b[n:]
		switch {
		case num == tsSeconds && !seenSecs:
			seenSecs, secs = true, x
		case num == tsNanos && !seenNanos:
			seenNanos, nanos = true, x
		default:
			return time.Time{}, false
		}
	}
	return time.Unix(int64(secs), int64(int32(nanos))).UTC(), true
}
