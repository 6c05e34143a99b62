package boltstore

import (
	"bytes"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// sep separates the parts of an item key; store.CheckKey refuses NUL bytes
// in keys, so it cannot occur inside a part, and because it is the lowest
// byte the bytewise order of item keys is the (Zone, Mesh, Name) order.
const sep = 0

// itemKey is the key of a resource inside its type's bucket:
// Zone NUL Mesh NUL Name.
func itemKey(k resource.Key) []byte {
	b := make([]byte, 0, len(k.Zone)+len(k.Mesh)+len(k.Name)+2)
	b = append(b, k.Zone...)
	b = append(b, sep)
	b = append(b, k.Mesh...)
	b = append(b, sep)
	return append(b, k.Name...)
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

var marshal = proto.MarshalOptions{Deterministic: true}

// encode renders r as a kds.v1.Resource. Deterministic, so that equal
// resources encode to equal bytes (Apply relies on it to skip no-op puts).
func encode(r *resource.Resource) ([]byte, error) {
	b, err := marshal.Marshal(r.ToProto())
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", r.Key(), err)
	}
	return b, nil
}

// decode parses a stored value. The result shares no memory with v, which
// is only valid during its transaction.
func decode(v []byte) (*resource.Resource, error) {
	var p kdsv1.Resource
	if err := proto.Unmarshal(v, &p); err != nil {
		return nil, fmt.Errorf("decode stored resource: %w", err)
	}
	return resource.FromProto(&p), nil
}
