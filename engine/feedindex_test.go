package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/memory"
)

// lossyStore is a memory store whose watches come from a feed the test
// controls, so that it can end them with ErrWatchLost after changing the
// store behind their back.
type lossyStore struct {
	store.Store
	feed *store.Feed
}

func (s lossyStore) Watch(ctx context.Context) (*store.Watch, error) { return s.feed.Watch(ctx) }

// TestFeedIndexResyncsOnLostWatch: when the store's change feed loses
// commits (ErrWatchLost), the index is reloaded from a new snapshot
// instead of the engine stopping.
func TestFeedIndexResyncsOnLostWatch(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	s := lossyStore{Store: mem, feed: store.NewFeed()}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	put := func(name string) {
		_, err := mem.Create(ctx, &resource.Resource{Type: "T", Name: name, Spec: json.RawMessage(`{}`)})
		require.NoError(t, err)
	}
	put("a")
	put("b")
	e := &Engine{ix: kdssync.NewIndex([]string{"T"}), log: hclog.NewNullLogger()}
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- e.feedIndex(ctx, s, ready) }()
	<-ready
	require.Equal(t, 2, e.ix.Len("T"))

	// Commits the watch never delivers: a and b go, three others come.
	require.NoError(t, mem.Delete(ctx, resource.Key{Type: "T", Name: "a"}, ""))
	require.NoError(t, mem.Delete(ctx, resource.Key{Type: "T", Name: "b"}, ""))
	for i := range 3 {
		put(fmt.Sprintf("n%d", i))
	}
	require.Equal(t, 2, e.ix.Len("T"), "the watch saw nothing")
	s.feed.EndAll(fmt.Errorf("pruned: %w", store.ErrWatchLost))
	require.Eventually(t, func() bool { return e.ix.Len("T") == 3 }, 10*time.Second, 10*time.Millisecond, "index reloaded")
	require.Eventually(t, func() bool { return s.feed.Watchers() == 1 }, 10*time.Second, 10*time.Millisecond, "watching again")

	// Any other end of the watch still stops the engine.
	s.feed.Close()
	select {
	case err := <-done:
		require.ErrorIs(t, err, store.ErrClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("feedIndex did not return")
	}
}

// TestFeedIndexSleepsThroughOtherTypes: the index feed's goroutine does not
// wake up for commits of types the index does not serve (on a zone, every
// change global sends; on global, every status a zone sends).
func TestFeedIndexSleepsThroughOtherTypes(t *testing.T) {
	mem := memory.New()
	defer mem.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	e := &Engine{ix: kdssync.NewIndex([]string{"T"}), served: []string{"T"}, log: hclog.NewNullLogger()}
	var wakes atomic.Int64
	e.testHookFeed = func() { wakes.Add(1) }
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- e.feedIndex(ctx, mem, ready) }()
	<-ready
	for i := range 20 {
		_, err := mem.Create(ctx, &resource.Resource{Type: "U", Name: fmt.Sprintf("u%d", i), Spec: json.RawMessage(`{}`)})
		require.NoError(t, err)
	}
	// A woken feed would have run the hook by now on any machine this
	// runs on; waiting longer only makes the check stricter.
	time.Sleep(200 * time.Millisecond)
	assert.Zero(t, wakes.Load(), "not woken for commits of a type the index does not serve")
	_, err := mem.Create(ctx, &resource.Resource{Type: "T", Name: "t", Spec: json.RawMessage(`{}`)})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return e.ix.Len("T") == 1 }, 10*time.Second, time.Millisecond)
	assert.Equal(t, int64(1), wakes.Load(), "woken for the served type's commit")
	cancel()
	require.NoError(t, <-done)
}
