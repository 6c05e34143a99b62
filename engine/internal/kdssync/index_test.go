package kdssync

import (
	"encoding/json"
	"fmt"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// TestIndexReplace: Replace leaves the index holding exactly the given
// resources and marks for subscribers only what it changed.
func TestIndexReplace(t *testing.T) {
	ix := NewIndex([]string{"T"})
	r := func(name, version string) *resource.Resource {
		return &resource.Resource{Type: "T", Mesh: "m", Name: name, Version: version, Spec: json.RawMessage(`{}`)}
	}
	for _, x := range []*resource.Resource{r("same", "1"), r("changed", "1"), r("gone", "1")} {
		require.NoError(t, ix.Put(x))
	}
	sub := ix.subscribe("T", make(chan struct{}, 1))
	defer ix.unsubscribe(sub)
	other := &resource.Resource{Type: "Other", Name: "x", Version: "1"}
	require.NoError(t, ix.Replace([]*resource.Resource{r("same", "1"), r("changed", "2"), r("new", "1"), other}))

	dirty := map[string]heldState{}
	sub.take(func(n string, was heldState) { dirty[n] = was })
	assert.Equal(t, map[string]heldState{"m/changed": {"1", true}, "m/gone": {"1", true}, "m/new": {}}, dirty,
		"each name with its state before the changes")

	assert.Equal(t, 3, ix.Len("T"))
	ix.mu.RLock()
	assert.Equal(t, "2", ix.types["T"].entries["m/changed"].res.Version)
	_, held := ix.types["T"].entries["m/gone"]
	ix.mu.RUnlock()
	assert.False(t, held)

	// Only the first change since the last take records the state before.
	require.NoError(t, ix.Put(r("changed", "3")))
	require.NoError(t, ix.Put(r("changed", "4")))
	ix.Delete(resource.Key{Type: "T", Mesh: "m", Name: "new"})
	clear(dirty)
	sub.take(func(n string, was heldState) { dirty[n] = was })
	assert.Equal(t, map[string]heldState{"m/changed": {"2", true}, "m/new": {"1", true}}, dirty)
}

// BenchmarkIndexPutSubscribers: a Put of an existing name with 100
// subscribers, each taken every 256 puts under the index's read lock as a
// serving session does.
func BenchmarkIndexPutSubscribers(b *testing.B) {
	ix := NewIndex([]string{"T"})
	const n = 10000
	for i := range n {
		if err := ix.Put(res("T", "default", fmt.Sprintf("t-%06d", i), "0", 256)); err != nil {
			b.Fatal(err)
		}
	}
	subs := make([]*Subscription, 100)
	for i := range subs {
		subs[i] = ix.subscribe("T", make(chan struct{}, 1))
	}
	rs := make([]*resource.Resource, 1024)
	for i := range rs {
		rs[i] = res("T", "default", fmt.Sprintf("t-%06d", i*7%n), fmt.Sprint(i), 256)
	}
	i := 0
	for b.Loop() {
		if err := ix.Put(rs[i%len(rs)]); err != nil {
			b.Fatal(err)
		}
		i++
		if i%256 == 0 {
			for _, s := range subs {
				ix.mu.RLock()
				s.take(func(string, heldState) {})
				ix.mu.RUnlock()
			}
		}
	}
}

// A take gives back what a burst of changes grew the dirty map to: a Go
// map keeps its peak size when cleared, and every serving session has one
// Subscription per type, so a resync that marks a million names would
// otherwise keep about 40 MB per session and type for the session's life.
func TestTakeGivesBackALargeDirtyMap(t *testing.T) {
	ix := NewIndex([]string{"T"})
	s := ix.subscribe("T", make(chan struct{}, 1))
	defer ix.unsubscribe(s)
	names := make([]string, 200_000)
	for i := range names {
		names[i] = fmt.Sprintf("default/t-%07d", i)
	}
	heap := func() int64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	before := heap()
	ix.mu.Lock()
	for _, n := range names {
		s.mark(n, heldState{version: "1", holds: true})
	}
	ix.mu.Unlock()
	ix.mu.RLock()
	taken := 0
	s.take(func(string, heldState) { taken++ })
	ix.mu.RUnlock()
	require.Equal(t, len(names), taken)
	assert.Less(t, heap()-before, int64(1<<20), "the dirty map is given back once taken")
	runtime.KeepAlive(names)
}
