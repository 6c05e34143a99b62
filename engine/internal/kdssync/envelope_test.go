package kdssync

import (
	"reflect"
	"testing"
	"time"
	"unsafe"

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
	got := &resource.Resource{}
	ok := decodeEnvelopeFast(got, b, envelopeHint{})
	if ok {
		if perr != nil {
			t.Fatalf("direct decoder accepted %x, proto.Unmarshal refuses it: %v", b, perr)
		}
		if want := resource.FromProto(&p); !reflect.DeepEqual(got, want) {
			t.Fatalf("%x: direct %#v, proto %#v", b, got, want)
		}
	}
	want := resource.FromProto(&p)
	// Hints never change the result: none, the right ones, wrong ones.
	for _, h := range []envelopeHint{
		{},
		{typ: want.Type, mesh: want.Mesh, name: want.Name, version: want.Version},
		{typ: want.Type + "x", mesh: "x" + want.Mesh, name: want.Name[:len(want.Name)/2], version: "v"},
	} {
		r, err := decodeEnvelope(b, h)
		if (err != nil) != (perr != nil) {
			t.Fatalf("%x: decodeEnvelope (hint %+v) error %v, proto.Unmarshal error %v", b, h, err, perr)
		}
		if err == nil && !reflect.DeepEqual(r, want) {
			t.Fatalf("%x: decodeEnvelope (hint %+v) %#v", b, h, r)
		}
	}
	return ok
}

// Fields equal to their hint share the hint's memory; the others are
// copies.
func TestDecodeEnvelopeSharesHints(t *testing.T) {
	r := res("T", "default", "policy-1", "e1-7", 10)
	env, err := proto.Marshal(r.ToProto())
	if err != nil {
		t.Fatal(err)
	}
	wire := "default/policy-1"
	h := envelopeHint{typ: "T", mesh: wire[:7], name: wire[8:], version: "e1-7"}
	got, err := decodeEnvelope(env, h)
	if err != nil {
		t.Fatal(err)
	}
	same := func(a, b string) bool { return len(a) > 0 && unsafe.StringData(a) == unsafe.StringData(b) }
	if !same(got.Type, h.typ) || !same(got.Mesh, h.mesh) || !same(got.Name, h.name) || !same(got.Version, h.version) {
		t.Errorf("decoded %+v does not share the hint's strings", got)
	}
	other := envelopeHint{typ: "U", mesh: "other", name: "policy-2", version: "e1-8"}
	got, err = decodeEnvelope(env, other)
	if err != nil {
		t.Fatal(err)
	}
	if got.Type != "T" || got.Mesh != "default" || got.Name != "policy-1" || got.Version != "e1-7" {
		t.Errorf("decoded %+v with wrong hints", got)
	}
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
			if _, err := decodeEnvelope(env, envelopeHint{}); err != nil {
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
