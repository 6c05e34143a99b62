package boltstore

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/storetest"
)

// queued waits until n writes wait in s's commit queue.
func queued(t *testing.T, s *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.qmu.Lock()
		got := len(s.queue)
		s.qmu.Unlock()
		if got == n {
			return
		}
		require.Less(t, got, n)
		require.True(t, time.Now().Before(deadline), "%d writes queued, want %d", got, n)
		time.Sleep(time.Millisecond)
	}
}

// TestFaultFencedApplyInGroupCommit queues, in a known order, writes that
// one group commit takes at once: a claim that replaces a session, an
// Apply of the replaced session after the claim, and one over its limit.
// Those two fail alone, like a conflict; the claim and every other write
// commit, each with its own revision.
func TestFaultFencedApplyInGroupCommit(t *testing.T) {
	ctx := t.Context()
	s, err := Open(t.TempDir(), WithNoSync(true))
	require.NoError(t, err)
	defer s.Close()
	g1, err := s.ClaimSession(ctx, "z1")
	require.NoError(t, err)
	_, err = s.Apply(ctx, storetest.Batch(2, 64, "z2", "1"))
	require.NoError(t, err)
	w, err := s.Watch(ctx)
	require.NoError(t, err)

	put := func(zone, name string) []*resource.Resource {
		r := storetest.Res("Dataplane", name)
		r.Zone, r.Version = zone, "1"
		return []*resource.Resource{r}
	}
	type result struct {
		rev uint64
		gen uint64
		err error
	}
	writes := []func() result{
		func() result {
			rev, err := s.Apply(ctx, store.Batch{Put: put("z1", "a"), Fence: &store.Fence{Zone: "z1", Generation: g1}})
			return result{rev: rev, err: err}
		},
		func() result {
			gen, err := s.ClaimSession(ctx, "z1")
			return result{gen: gen, err: err}
		},
		func() result {
			rev, err := s.Apply(ctx, store.Batch{Put: put("z1", "b"), Fence: &store.Fence{Zone: "z1", Generation: g1}})
			return result{rev: rev, err: err}
		},
		func() result {
			rev, err := s.Apply(ctx, store.Batch{Put: put("z2", "c"), Limit: 2})
			return result{rev: rev, err: err}
		},
		func() result {
			rev, err := s.Apply(ctx, store.Batch{Put: put("z1", "d"), Fence: &store.Fence{Zone: "z1", Generation: g1 + 1}})
			return result{rev: rev, err: err}
		},
		func() result {
			rev, err := s.Apply(ctx, store.Batch{Put: put("z2", "e")})
			return result{rev: rev, err: err}
		},
	}
	results := make([]chan result, len(writes))
	s.wmu.Lock() // hold the commit so that the writes queue up
	locked := true
	defer func() {
		if locked {
			s.wmu.Unlock()
		}
	}()
	for i, fn := range writes {
		results[i] = make(chan result, 1)
		go func() { results[i] <- fn() }()
		queued(t, s, i+1)
	}
	locked = false
	s.wmu.Unlock()
	got := make([]result, len(writes))
	for i := range writes {
		select {
		case got[i] = <-results[i]:
		case <-time.After(30 * time.Second):
			t.Fatalf("write %d did not return", i)
		}
	}

	require.NoError(t, got[0].err, "fenced with the generation current when it committed")
	require.NoError(t, got[1].err)
	assert.Equal(t, g1+1, got[1].gen)
	require.ErrorIs(t, got[2].err, store.ErrFenced, "queued after the claim")
	assert.Contains(t, got[2].err.Error(), "was replaced by")
	require.ErrorIs(t, got[3].err, store.ErrLimitExceeded)
	require.NoError(t, got[4].err, "fenced with the new generation")
	require.NoError(t, got[5].err, "a write after the failures in the same group")
	base := got[0].rev
	assert.Equal(t, []uint64{base, base + 1, base + 2}, []uint64{got[0].rev, got[4].rev, got[5].rev}, "one revision per successful write, in queue order")

	list, err := s.List(context.Background(), store.Filter{Type: "Dataplane"})
	require.NoError(t, err)
	var names []string
	for _, r := range list {
		names = append(names, r.Zone+"/"+r.Name)
	}
	assert.Equal(t, []string{"z1/a", "z1/d", "z2/dp-000000", "z2/dp-000001", "z2/e"}, names)

	var evs []store.Event
	for len(evs) < 3 {
		select {
		case <-w.C():
			evs = append(evs, w.Next()...)
		case <-time.After(30 * time.Second):
			t.Fatalf("got %d events, want 3", len(evs))
		}
	}
	require.Len(t, evs, 3, "no event for the failed writes")
	for i, name := range []string{"a", "d", "e"} {
		assert.Equal(t, name, evs[i].Resource.Name)
	}
}
