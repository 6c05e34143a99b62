package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// BenchmarkDecodeSpec decodes a ~1 KiB spec the way the SDK does before a
// validate function runs, and the way encoding/json would (a strict
// Decoder, as the SDK did before it used the v2 decoder), alternating the
// two in each iteration; it reports the cost of each and their ratio.
//
//	go test -run '^$' -bench DecodeSpec -count 5 ./sdk
func BenchmarkDecodeSpec(b *testing.B) {
	raw := []byte(`{"value":"policy-000123","pad":"` + strings.Repeat("x", 980) + `"}`)
	typ := Define(TypeSpec[benchSpec]{Name: "Bench", Direction: GlobalToZone, Scope: ScopeMesh})
	ctx := context.Background()
	stdlib := func() {
		s := new(benchSpec)
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(s); err != nil {
			b.Fatal(err)
		}
	}
	sdk := func() {
		if errs := typ.validate(ctx, Meta{}, raw); len(errs) > 0 {
			b.Fatal(errs)
		}
	}
	const inner = 100
	var tStd, tSDK float64
	for b.Loop() {
		tStd += timed(inner, stdlib)
		tSDK += timed(inner, sdk)
	}
	n := float64(b.N * inner)
	b.ReportMetric(tSDK/n, "sdk-ns/spec")
	b.ReportMetric(tStd/n, "encoding/json-ns/spec")
	b.ReportMetric(tStd/tSDK, "speedup")
}

type benchSpec struct {
	Value string `json:"value,omitempty"`
	Pad   string `json:"pad,omitempty"`
}

// timed runs f n times and returns the nanoseconds it took.
func timed(n int, f func()) float64 {
	start := time.Now()
	for range n {
		f()
	}
	return float64(time.Since(start).Nanoseconds())
}
