package boltstore

import (
	"context"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/storetest"
)

// leafFill is how full the leaf pages of typ's bucket are (bytes in use
// over bytes allocated).
func leafFill(t *testing.T, s *Store, typ string) float64 {
	t.Helper()
	var st bolt.BucketStats
	if err := s.db.View(func(tx *bolt.Tx) error {
		st = tx.Bucket(bucketTypes).Bucket([]byte(typ)).Stats()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return float64(st.LeafInuse) / float64(st.LeafAlloc)
}

// A zone's sync whose keys all sort before (or between) what a type's
// bucket holds fills its pages as full as a sync that appends, instead of
// leaving them half full, and is applied as creates.
func TestApplyPacksKeysBetweenStoredOnes(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), WithNoSync(true))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 3000
	if _, err = s.Apply(ctx, store.Batch{Put: storetest.Batch(n, 1024, "zone-c", "1").Put}); err != nil {
		t.Fatal(err)
	}
	appended := leafFill(t, s, "Dataplane")
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	w, err := s.Watch(wctx)
	if err != nil {
		t.Fatal(err)
	}
	// zone-a's resources go in front of zone-c's, zone-b's between them,
	// in batches as a sync sends them, each under the limit.
	for _, zone := range []string{"zone-a", "zone-b"} {
		all := storetest.Batch(n, 1024, zone, "1").Put
		for i := 0; i < n; i += 1000 {
			if _, err := s.Apply(ctx, store.Batch{Put: all[i : i+1000], Limit: n}); err != nil {
				t.Fatalf("%s: %v", zone, err)
			}
		}
	}
	if got := leafFill(t, s, "Dataplane"); got < 0.8 || got < appended-0.05 {
		t.Errorf("leaf pages %.0f%% full after syncs in front of stored keys, %.0f%% after the appending one", 100*got, 100*appended)
	}
	for _, zone := range []string{"zone-a", "zone-b", "zone-c"} {
		vs, err := s.Versions(ctx, store.Filter{Type: "Dataplane", Zone: zone})
		if err != nil || len(vs) != n {
			t.Fatalf("%s holds %d (%v), want %d", zone, len(vs), err, n)
		}
	}
	// Each resource was published once, as a put.
	evs := w.Next()
	if len(evs) != 2*n {
		t.Errorf("%d events, want %d", len(evs), 2*n)
	}
	for _, ev := range evs {
		if ev.Kind != store.EventPut {
			t.Fatalf("event %v", ev)
		}
	}
	// Over the limit: the count kept for the limit saw every create.
	_, err = s.Apply(ctx, store.Batch{Put: storetest.Batch(n+1, 1024, "zone-a", "2").Put[n:], Limit: n})
	if err == nil {
		t.Error("a put past the limit of a zone synced in front of stored keys was accepted")
	}
}
