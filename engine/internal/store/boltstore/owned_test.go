package boltstore

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/storetest"
)

// An Owned Apply publishes the caller's resources themselves (no copy of
// the labels and specs), and the values it wrote are not disturbed by the
// Applies that reuse its arena: its events, what a read returns and what
// the next commits store stay what each batch carried.
func TestOwnedApplyPublishesTheCallersResources(t *testing.T) {
	ctx := t.Context()
	s, err := Open(t.TempDir(), WithNoSync(true))
	require.NoError(t, err)
	defer s.Close()
	w, err := s.Watch(ctx)
	require.NoError(t, err)

	var batches []store.Batch
	for i, zone := range []string{"z1", "z2", "z3"} {
		b := storetest.Batch(200, 512+i*100, zone, "1")
		b.Owned = true
		batches = append(batches, b)
	}
	var events []store.Event
	for _, b := range batches {
		_, err := s.Apply(ctx, b)
		require.NoError(t, err)
		<-w.C()
		events = append(events, w.Next()...)
	}
	var want []*resource.Resource
	for _, b := range batches {
		want = append(want, b.Put...)
	}
	require.Len(t, events, len(want))
	for i, ev := range events {
		assert.Same(t, want[i], ev.Resource, "event %d is the caller's resource", i)
	}
	stored, err := s.List(ctx, store.Filter{Type: "Dataplane"})
	require.NoError(t, err)
	require.Len(t, stored, len(want))
	for i, r := range stored {
		assert.JSONEq(t, string(want[i].Spec), string(r.Spec), "%s", r.Key())
		assert.Equal(t, want[i].Labels, r.Labels, "%s", r.Key())
	}
}
