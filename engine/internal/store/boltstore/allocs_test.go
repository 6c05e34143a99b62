package boltstore

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// syncPuts returns n label-free resources of ~1 KiB in key order, as a
// zone's initial sync receives them.
func syncPuts(n int, prefix string) []*resource.Resource {
	pad := strings.Repeat("x", 1000)
	rs := make([]*resource.Resource, n)
	for i := range rs {
		rs[i] = &resource.Resource{
			Type: "SyncPolicy", Mesh: "default", Name: fmt.Sprintf("%s-%06d", prefix, i),
			Spec: json.RawMessage(`{"pad":"` + pad + `"}`), Version: "v1",
		}
	}
	return rs
}

// An Apply that is not Owned (a sync's) allocates its events' resources
// and its item keys together, not once per put: what is left per put is
// bbolt's own (its copy of the key, a cursor and its stack) and the
// growth of the transaction's nodes.
func TestApplyAllocationsPerPut(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	// A first commit creates the bucket and warms the store.
	if _, err := s.Apply(ctx, store.Batch{Put: syncPuts(100, "a")}); err != nil {
		t.Fatal(err)
	}
	const n = 3000
	puts := syncPuts(n, "b")
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if _, err := s.Apply(ctx, store.Batch{Put: puts}); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	per := float64(after.Mallocs-before.Mallocs) / n
	t.Logf("%.2f allocations per put", per)
	// Measured 3.36 per put (5.36 when each put took its event's
	// resource and its key on its own).
	if per > 4.4 {
		t.Fatalf("%.2f allocations per put, want at most 4.4", per)
	}
}
