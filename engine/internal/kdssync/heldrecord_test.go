package kdssync

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// The record answers like the map of every held name it replaces, for any
// mix of names in order, out of order, removed and put back.
func TestHeldRecordMatchesAMap(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, seed))
		start := map[string]string{}
		for range rng.IntN(20) {
			start[fmt.Sprintf("default/p-%03d", rng.IntN(400))] = "s"
		}
		h := newHeldRecord(maps.Clone(start))
		model := maps.Clone(start)
		next := 0 // names mostly ascend, as servers send them
		for op := range 2000 {
			var name string
			if rng.IntN(4) == 0 {
				name = fmt.Sprintf("default/p-%03d", rng.IntN(400))
			} else {
				next += rng.IntN(3)
				name = fmt.Sprintf("default/p-%03d", min(next, 399))
			}
			if rng.IntN(5) == 0 {
				h.remove(name)
				delete(model, name)
			} else {
				v := fmt.Sprintf("v%d", op)
				h.set(name, v)
				model[name] = v
			}
			probe := fmt.Sprintf("default/p-%03d", rng.IntN(400))
			if v, ok := h.get(probe); v != model[probe] || ok != (model[probe] != "") {
				t.Fatalf("seed %d op %d: get(%s) = %q, %v; want %q", seed, op, probe, v, ok, model[probe])
			}
			if h.len() != len(model) {
				t.Fatalf("seed %d op %d: len %d, want %d", seed, op, h.len(), len(model))
			}
		}
		if got := h.all(); !maps.Equal(got, model) {
			t.Fatalf("seed %d: all() differs from the model (%d against %d names)", seed, len(got), len(model))
		}
		each := map[string]string{}
		h.each(func(n, v string) { each[n] = v })
		if !maps.Equal(each, model) {
			t.Fatalf("seed %d: each() differs from the model", seed)
		}
	}
}

// An initial sync's names, arriving in ascending order over several
// responses, are recorded in the sorted tail: the map of held names stays
// empty (it grew to every name before).
func TestFreshSyncNamesSkipTheMap(t *testing.T) {
	const typ, n, per = "T", 3000, 1000
	all := checkResponse(t, typ, n, 10)
	c := NewClient([]string{typ}, nil, acceptAll{}, "global", "")
	c.held[typ] = newHeldRecord(nil)
	for i := 0; i < n; i += per {
		resp := &discovery.DeltaDiscoveryResponse{TypeUrl: all.TypeUrl, Nonce: fmt.Sprint(i), Resources: all.Resources[i : i+per]}
		ch, err := c.check(context.Background(), resp)
		if err != nil || len(ch.puts) != per {
			t.Fatalf("check: %v, %d puts", err, len(ch.puts))
		}
		if ch.held != i+per {
			t.Fatalf("held %d after %d names", ch.held, i+per)
		}
	}
	h := c.held[typ]
	if len(h.m) != 0 || len(h.tail) != n {
		t.Fatalf("%d names in the map and %d in the tail, want 0 and %d", len(h.m), len(h.tail), n)
	}
}

// BenchmarkClientCheckInitialSync: the checking stage over a whole initial
// sync of 100k names (30 responses in order, specs of 100 bytes), per
// resource: what recording the held names costs as they grow from none.
func BenchmarkClientCheckInitialSync(b *testing.B) {
	const typ, n, per = "T", 100_000, 3334
	all := checkResponse(b, typ, n, 100)
	var resps []*discovery.DeltaDiscoveryResponse
	for i := 0; i < n; i += per {
		resps = append(resps, &discovery.DeltaDiscoveryResponse{TypeUrl: all.TypeUrl, Nonce: fmt.Sprint(i), Resources: all.Resources[i:min(i+per, n)]})
	}
	c := NewClient([]string{typ}, nil, acceptAll{}, "global", "")
	b.ReportAllocs()
	for b.Loop() {
		c.held[typ] = newHeldRecord(nil)
		for _, resp := range resps {
			if _, err := c.check(context.Background(), resp); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/resource")
}
