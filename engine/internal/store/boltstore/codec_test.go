package boltstore

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

func sample() *resource.Resource {
	return &resource.Resource{
		Type:             "MeshTimeout",
		Mesh:             "default",
		Name:             "web",
		Labels:           map[string]string{"team": "web", "env": "", "a": "1"},
		Spec:             json.RawMessage(`{"connectTimeout":"5s"}`),
		Version:          "17",
		CreationTime:     time.Date(2026, 3, 4, 5, 6, 7, 891011, time.UTC),
		ModificationTime: time.Date(1969, 12, 31, 23, 59, 59, 5, time.UTC),
		Zone:             "zone-1",
	}
}

// TestCodecWireCompatible checks that stored values are kds.v1.Resource in
// both directions: the protobuf library reads what encode writes, and decode
// reads what the protobuf library writes.
func TestCodecWireCompatible(t *testing.T) {
	for _, r := range []*resource.Resource{
		sample(),
		{Type: "T", Name: "minimal", Version: "1"},
		{Type: "T", Name: "epoch", Version: "1", CreationTime: time.Unix(0, 0).UTC()},
	} {
		var p kdsv1.Resource
		require.NoError(t, proto.Unmarshal(encode(r), &p))
		assert.True(t, proto.Equal(r.ToProto(), &p), "%s: protobuf reads our encoding", r.Key())

		lib, err := proto.MarshalOptions{Deterministic: true}.Marshal(r.ToProto())
		require.NoError(t, err)
		got, err := decode(lib)
		require.NoError(t, err)
		assert.Equal(t, r, got, "%s: we read protobuf's encoding", r.Key())

		got, err = decode(encode(r))
		require.NoError(t, err)
		assert.Equal(t, r, got, "%s: round trip", r.Key())
		assert.LessOrEqual(t, len(encode(r)), encodedSize(r), "size bound holds")
	}
}

func TestCodecDeterministic(t *testing.T) {
	a, b := sample(), sample()
	b.Labels = map[string]string{"a": "1", "team": "web", "env": ""}
	assert.Equal(t, encode(a), encode(b))
	b.Labels["a"] = "2"
	assert.NotEqual(t, encode(a), encode(b))
}

func TestDecodeCorrupt(t *testing.T) {
	v := encode(sample())
	_, err := decode(v[:len(v)-3])
	require.ErrorIs(t, err, errCorrupt)
}

func TestItemKeyOrderAndMesh(t *testing.T) {
	a := itemKey(resource.Key{Type: "T", Zone: "z", Mesh: "m", Name: "n"})
	b := itemKey(resource.Key{Type: "T", Zone: "zz", Mesh: "a", Name: "a"})
	assert.Less(t, string(a), string(b), "zone orders before mesh and name")
	assert.Equal(t, "m", string(meshOf(a)))
}

// BenchmarkCodec compares the protowire codec with the protobuf library and
// with JSON on a resource of about 1 KiB; the library is the baseline.
func BenchmarkCodec(b *testing.B) {
	r := sample()
	pad := make([]byte, 1000)
	for i := range pad {
		pad[i] = 'x'
	}
	r.Spec = json.RawMessage(`{"pad":"` + string(pad) + `"}`)
	lib := proto.MarshalOptions{Deterministic: true}
	libBytes, _ := lib.Marshal(r.ToProto())
	jsonBytes, _ := json.Marshal(r)
	ours := encode(r)

	b.Run("encode/protowire", func(b *testing.B) {
		for b.Loop() {
			_ = encode(r)
		}
	})
	b.Run("encode/proto-lib", func(b *testing.B) {
		for b.Loop() {
			_, _ = lib.Marshal(r.ToProto())
		}
	})
	b.Run("encode/json", func(b *testing.B) {
		for b.Loop() {
			_, _ = json.Marshal(r)
		}
	})
	b.Run("decode/protowire", func(b *testing.B) {
		for b.Loop() {
			_, _ = decode(ours)
		}
	})
	b.Run("decode/proto-lib", func(b *testing.B) {
		for b.Loop() {
			var p kdsv1.Resource
			_ = proto.Unmarshal(libBytes, &p)
			_ = resource.FromProto(&p)
		}
	})
	b.Run("decode/json", func(b *testing.B) {
		for b.Loop() {
			var x resource.Resource
			_ = json.Unmarshal(jsonBytes, &x)
		}
	})
}
