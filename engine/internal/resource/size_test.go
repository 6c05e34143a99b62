package resource

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

func TestEncodedSizeIsTheEnvelopesSize(t *testing.T) {
	cases := []*Resource{
		{},
		{Type: "T", Name: "n", Version: "1"},
		{Type: "T", Mesh: "m", Name: "n", Zone: "z", Version: "v", Spec: json.RawMessage(`{}`)},
		{Type: "T", Name: "n", Spec: json.RawMessage(strings.Repeat("x", 200))},
		{Type: "T", Name: "n", Spec: json.RawMessage(strings.Repeat("x", 70000))},
		{Type: "T", Name: "n", Labels: map[string]string{"": "", "k": "", "v": "x"}},
		{Type: "T", Name: "n", Labels: map[string]string{"a": strings.Repeat("v", 130), strings.Repeat("k", 200): "x"}},
		{Type: "T", Name: "n", CreationTime: time.Unix(0, 0)},
		{Type: "T", Name: "n", CreationTime: time.Unix(0, 1), ModificationTime: time.Unix(1, 0)},
		{Type: "T", Name: "n", CreationTime: time.Unix(-5, 999999999), ModificationTime: time.Date(9999, 12, 31, 23, 59, 59, 1, time.UTC)},
		{Type: "T", Name: "n", CreationTime: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC)},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	str := func(max int) string { return strings.Repeat("a", rng.IntN(max)) }
	for range 500 {
		r := &Resource{Type: str(20), Mesh: str(300), Name: str(300), Version: str(20), Zone: str(3), Spec: json.RawMessage(str(5000))}
		for range rng.IntN(4) {
			if r.Labels == nil {
				r.Labels = map[string]string{}
			}
			r.Labels[str(200)+"k"] = str(200)
		}
		if rng.IntN(2) == 0 {
			r.CreationTime = time.Unix(rng.Int64N(1<<40)-1<<39, rng.Int64N(1e9))
		}
		if rng.IntN(2) == 0 {
			r.ModificationTime = time.Unix(rng.Int64N(1<<34), 0)
		}
		cases = append(cases, r)
	}
	for i, r := range cases {
		if got, want := r.EncodedSize(), proto.Size(r.ToProto()); got != want {
			t.Errorf("case %d: EncodedSize %d, proto.Size %d (%+v)", i, got, want, r)
		}
	}
}

// BenchmarkEncodedSize compares EncodedSize with sizing the envelope
// message for a 1 KiB resource with two labels.
func BenchmarkEncodedSize(b *testing.B) {
	r := &Resource{Type: "SyncPolicy", Mesh: "default", Name: "policy-000001", Version: "7",
		Labels: map[string]string{"app": "web", "team": "a"}, Spec: json.RawMessage(strings.Repeat("x", 1024)),
		CreationTime: time.Unix(1700000000, 1)}
	b.Run("arithmetic", func(b *testing.B) {
		for b.Loop() {
			_ = r.EncodedSize()
		}
	})
	b.Run("proto", func(b *testing.B) {
		for b.Loop() {
			_ = proto.Size(r.ToProto())
		}
	})
}
