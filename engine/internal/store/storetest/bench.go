package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// Batch returns an Apply batch of n Dataplane resources of zone, each with a
// JSON spec of about specBytes bytes and the given version. Names are
// dp-000000, dp-000001, ... in mesh "default".
func Batch(n, specBytes int, zone, version string) store.Batch {
	b := store.Batch{Put: make([]*resource.Resource, n)}
	pad := strings.Repeat("x", max(specBytes-120, 0))
	for i := range n {
		spec := fmt.Sprintf(`{"networking":{"address":"10.%d.%d.%d","inbound":[{"port":8080,"tags":{"service":"web-%d"}}]},"pad":%q}`,
			i>>16&255, i>>8&255, i&255, i%100, pad)
		b.Put[i] = &resource.Resource{
			Type:             "Dataplane",
			Mesh:             "default",
			Zone:             zone,
			Name:             fmt.Sprintf("dp-%06d", i),
			Labels:           map[string]string{"app": fmt.Sprintf("web-%d", i%100), "zone": zone},
			Spec:             json.RawMessage(spec),
			Version:          version,
			CreationTime:     time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
			ModificationTime: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		}
	}
	return b
}

// Resource size used by the benchmarks: about 1 KiB of spec.
const benchSpecBytes = 1024

// ApplySize is one size BenchApply is run at: Total resources applied in
// batches of Batch.
type ApplySize struct {
	Name         string
	Total, Batch int
}

// ApplySizes are the sizes every store's apply benchmark runs, so that the
// stores' figures (and the raw bbolt baseline's) line up row by row.
var ApplySizes = []ApplySize{
	{"10k/batch=10k", 10_000, 10_000},
	{"100k/batch=4k", 100_000, 4_000},
	{"100k/batch=25k", 100_000, 25_000},
	{"100k/batch=100k", 100_000, 100_000},
}

// BenchApply measures applying total resources of about 1 KiB, in batches of
// batchSize, to a fresh store per iteration. It reports resources/s.
func BenchApply(b *testing.B, open func(b *testing.B) store.Store, total, batchSize int) {
	all := Batch(total, benchSpecBytes, "z1", "1")
	var batches []store.Batch
	for i := 0; i < total; i += batchSize {
		batches = append(batches, store.Batch{Put: all.Put[i:min(i+batchSize, total)]})
	}
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		s := open(b)
		b.StartTimer()
		for _, batch := range batches {
			if _, err := s.Apply(ctx, batch); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(total)*float64(b.N)/b.Elapsed().Seconds(), "resources/s")
}

// BenchUpdateLatency preloads stored resources, starts a watcher goroutine,
// and measures, per iteration, the time from calling Update on one resource
// until the watcher goroutine has received its event (ns/op).
func BenchUpdateLatency(b *testing.B, s store.Store, stored int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	batch := Batch(stored, benchSpecBytes, "", "1")
	for i := 0; i < stored; i += 25000 {
		if _, err := s.Apply(ctx, store.Batch{Put: batch.Put[i:min(i+25000, stored)]}); err != nil {
			b.Fatal(err)
		}
	}
	w, err := s.Watch(ctx)
	if err != nil {
		b.Fatal(err)
	}
	seen, done := Revisions(ctx, w, 1)
	r := batch.Put[stored/2].Clone()
	r.Version = ""
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		r.Labels = map[string]string{"i": fmt.Sprint(i)}
		got, err := s.Update(ctx, r)
		if err != nil {
			b.Fatal(err)
		}
		if rev := <-seen; rev != s.Revision() || got.Version == "" {
			b.Fatalf("watcher saw revision %d, store is at %d", rev, s.Revision())
		}
	}
	b.StopTimer()
	cancel()
	<-done
}

// BenchList preloads stored resources spread over zones and measures List
// with filter. It reports resources/s listed.
func BenchList(b *testing.B, s store.Store, stored, zones int, filter store.Filter) {
	ctx := context.Background()
	per := stored / zones
	for z := range zones {
		batch := Batch(per, benchSpecBytes, fmt.Sprintf("zone-%02d", z), "1")
		if _, err := s.Apply(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	var n int
	for b.Loop() {
		list, err := s.List(ctx, filter)
		if err != nil {
			b.Fatal(err)
		}
		n += len(list)
	}
	if n == 0 {
		b.Fatal("filter matched nothing")
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "resources/s")
}

// BenchConcurrentApply measures zones writers applying batches of perBatch
// resources at the same time to one store (global receiving from many
// zones). ns/op is the time for all of them; it reports commits/s.
func BenchConcurrentApply(b *testing.B, s store.Store, zones, batches, perBatch int) {
	ctx := context.Background()
	data := make([]store.Batch, zones)
	for z := range zones {
		data[z] = Batch(batches*perBatch, 256, fmt.Sprintf("zone-%02d", z), "1")
	}
	round := 0
	b.ResetTimer()
	for b.Loop() {
		round++
		version := fmt.Sprint(round)
		var wg sync.WaitGroup
		errs := make(chan error, zones)
		for z := range zones {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range batches {
					part := data[z].Put[i*perBatch : (i+1)*perBatch]
					puts := make([]*resource.Resource, len(part))
					for j, r := range part {
						c := *r
						c.Version = version
						puts[j] = &c
					}
					if _, err := s.Apply(ctx, store.Batch{Put: puts}); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(zones*batches)*float64(b.N)/b.Elapsed().Seconds(), "commits/s")
}

// Revisions forwards the revision of the last event of each batch w
// delivers on seen (buffered buf) until ctx or w ends; done is closed when
// the forwarding goroutine has returned.
func Revisions(ctx context.Context, w *store.Watch, buf int) (seen <-chan uint64, done <-chan struct{}) {
	out := make(chan uint64, buf)
	fin := make(chan struct{})
	go func() {
		defer close(fin)
		for {
			select {
			case <-w.C():
				evs := w.Next()
				select {
				case out <- evs[len(evs)-1].Revision:
				case <-ctx.Done():
					return
				}
			case <-w.Done():
				return
			}
		}
	}()
	return out, fin
}

// BenchSmallApply preloads stored resources of one zone and measures
// applying batches of batchSize new resources to that zone, each with
// Batch.Limit set to limit (0: none): the cost of the limit check on a
// zone that already holds many resources (global receiving from a large
// zone). It reports resources/s applied, and the time of the first Apply
// (first-apply-ns), which is not in ns/op.
func BenchSmallApply(b *testing.B, s store.Store, stored, batchSize, limit int) {
	ctx := context.Background()
	pre := Batch(stored, 256, "z1", "1")
	for i := 0; i < stored; i += 25000 {
		if _, err := s.Apply(ctx, store.Batch{Put: pre.Put[i:min(i+25000, stored)]}); err != nil {
			b.Fatal(err)
		}
	}
	tpl := Batch(batchSize, 256, "z1", "1").Put
	batch := func(i int) []*resource.Resource {
		puts := make([]*resource.Resource, len(tpl))
		for j, r := range tpl {
			c := *r
			c.Name = fmt.Sprintf("new-%09d-%03d", i, j)
			puts[j] = &c
		}
		return puts
	}
	// The first Apply is timed alone: a store may count the zone then.
	start := time.Now()
	if _, err := s.Apply(ctx, store.Batch{Put: batch(-1), Limit: limit}); err != nil {
		b.Fatal(err)
	}
	first := time.Since(start)
	b.ResetTimer()
	n := 0
	for i := 0; b.Loop(); i++ {
		puts := batch(i)
		if _, err := s.Apply(ctx, store.Batch{Put: puts, Limit: limit}); err != nil {
			b.Fatal(err)
		}
		n += len(puts)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "resources/s")
	b.ReportMetric(float64(first.Nanoseconds()), "first-apply-ns")
}

// BenchVersions preloads n resources of zone with specs of specBytes and
// measures reading what the sync reads at session start for that zone:
// with List (the whole resources) or with Versions (keys and versions).
// Run with -benchmem: B/op is the point.
func BenchVersions(b *testing.B, s store.Store, n, specBytes int, useList bool) {
	ctx := context.Background()
	batch := Batch(n, specBytes, "z1", "1")
	for i := 0; i < n; i += 16 {
		if _, err := s.Apply(ctx, store.Batch{Put: batch.Put[i:min(i+16, n)]}); err != nil {
			b.Fatal(err)
		}
	}
	f := store.Filter{Type: "Dataplane", Zone: "z1"}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		var got int
		if useList {
			list, err := s.List(ctx, f)
			if err != nil {
				b.Fatal(err)
			}
			got = len(list)
		} else {
			kvs, err := s.Versions(ctx, f)
			if err != nil {
				b.Fatal(err)
			}
			got = len(kvs)
		}
		if got != n {
			b.Fatalf("read %d resources, want %d", got, n)
		}
	}
}
