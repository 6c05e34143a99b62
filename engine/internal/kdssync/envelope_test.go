package kdssync

import (
	"reflect"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// envelopeSeeds are envelopes as senders write them and a few that only
// the general decoder accepts or that it refuses.
func envelopeSeeds(t testing.TB) [][]byte {
	full := &kdsv1.Resource{Type: "T", Mesh: "m", Name: "n", Labels: map[string]string{"a": "1", "": ""},
		Spec: []byte(`{"x":1}`), Version: "v1", Zone: "z",
		CreationTime: timestamppb.New(time.Unix(1700000000, 5)), ModificationTime: &timestamppb.Timestamp{}}
	var seeds [][]byte
	for _, m := range []*kdsv1.Resource{
		{}, {Type: "T", Name: "n"}, full,
		{Type: "T", Spec: []byte{}}, {Name: "n", CreationTime: &timestamppb.Timestamp{Seconds: -62135596800, Nanos: -1}},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	b, _ := proto.Marshal(full)
	seeds = append(seeds,
		protowire.AppendString(protowire.AppendTag(nil, envName, protowire.BytesType), "\xff"), // invalid UTF-8
		protowire.AppendVarint(protowire.AppendTag(nil, envName, protowire.VarintType), 7),     // wrong wire type
		protowire.AppendString(protowire.AppendTag(b, 20, protowire.BytesType), "unknown"),     // unknown field
		append(b, b...), // every field twice: timestamps merge, labels merge
		b[:len(b)-1],    // truncated
		protowire.AppendBytes(protowire.AppendTag(b, envSpec, protowire.BytesType), nil), // an empty spec last
	)
	entry := protowire.AppendString(protowire.AppendTag(nil, entryKey, protowire.BytesType), "k")
	entry = protowire.AppendString(protowire.AppendTag(entry, entryKey, protowire.BytesType), "k2")
	seeds = append(seeds, protowire.AppendBytes(protowire.AppendTag(nil, envLabels, protowire.BytesType), entry))
	return seeds
}

// The direct decoder gives what proto.Unmarshal and resource.FromProto
// give, and leaves whatever it does not read plainly to them.
func FuzzDecodeEnvelope(f *testing.F) {
	for _, s := range envelopeSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkDecodeEnvelope(t, b) })
}

func TestDecodeEnvelopeMatchesProto(t *testing.T) {
	fast := 0
	for _, s := range envelopeSeeds(t) {
		if checkDecodeEnvelope(t, s) {
			fast++
		}
	}
	if fast < 4 {
		t.Errorf("only %d seeds took the direct path", fast)
	}
}

// checkDecodeEnvelope compares both decoders on b and reports whether the
// direct one took it.
func checkDecodeEnvelope(t *testing.T, b []byte) bool {
	t.Helper()
	var p kdsv1.Resource
	perr := proto.Unmarshal(b, &p)
	got, ok := decodeEnvelopeFast(b)
	if ok {
		if perr != nil {
			t.Fatalf("direct decoder accepted %x, proto.Unmarshal refuses it: %v", b, perr)
		}
		if want := resource.FromProto(&p); !reflect.DeepEqual(got, want) {
			t.Fatalf("%x: direct %#v, proto %#v", b, got, want)
		}
	}
	r, err := decodeEnvelope(b)
	if (err != nil) != (perr != nil) {
		t.Fatalf("%x: decodeEnvelope error %v, proto.Unmarshal error %v", b, err, perr)
	}
	if err == nil && !reflect.DeepEqual(r, resource.FromProto(&p)) {
		t.Fatalf("%x: decodeEnvelope %#v", b, r)
	}
	return ok
}

// BenchmarkDecodeEnvelope compares the direct decoder with proto.Unmarshal
// and FromProto on a 1 KiB envelope with two labels and timestamps.
func BenchmarkDecodeEnvelope(b *testing.B) {
	r := res("T", "default", "policy-000001", "7", 1000)
	r.Labels = map[string]string{"app": "web", "team": "a"}
	r.CreationTime, r.ModificationTime = time.Unix(1700000000, 1), time.Unix(1700000001, 2)
	env, err := proto.Marshal(r.ToProto())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeEnvelope(env); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("proto", func(b *testing.B) {
		for b.Loop() {
			var p kdsv1.Resource
			if err := proto.Unmarshal(env, &p); err != nil {
				b.Fatal(err)
			}
			_ = resource.FromProto(&p)
		}
	})
}
