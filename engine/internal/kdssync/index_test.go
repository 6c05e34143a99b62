package kdssync

import (
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
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

// A session subscribing or ending does not take the index's write lock:
// while readers hold the lock (sessions building responses) it would wait
// for them, and every reader and Put behind it would wait too. A Put
// still marks a subscription registered meanwhile.
func TestSubscribeDoesNotWaitForReaders(t *testing.T) {
	ix := NewIndex([]string{"T"})
	ix.mu.RLock()
	done := make(chan *Subscription)
	go func() {
		s := ix.subscribe("T", make(chan struct{}, 1))
		ix.unsubscribe(s)
		done <- ix.subscribe("T", make(chan struct{}, 1))
	}()
	var s *Subscription
	select {
	case s = <-done:
	case <-time.After(5 * time.Second):
		ix.mu.RUnlock()
		t.Fatal("subscribe waited for a reader of the index")
	}
	ix.mu.RUnlock()
	require.NoError(t, ix.Put(res("T", "m", "a", "1", 4)))
	assert.True(t, s.changed())
	ix.unsubscribe(s)
}

// The index keeps its names sorted for the subscriptions that follow while
// no name is added or removed, with their entries while nothing changes: a
// new version keeps the list and drops the entries, a new name drops both.
func TestIndexKeepsSortedNames(t *testing.T) {
	ix, _ := sparseIndex(t, 50)
	ti := ix.types["T"]
	ss, _, _ := directSession(t, ix, 64<<10)
	require.NoError(t, ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}}))
	ix.mu.RLock()
	first, ents := ti.cachedNames()
	ix.mu.RUnlock()
	require.Len(t, first, 50)
	assert.True(t, slices.IsSortedFunc(first, compareWireNames))
	require.Len(t, ents, 50)
	for i, name := range first {
		require.Equal(t, ti.entries[name], ents[i], "the entry of %s", name)
	}

	require.NoError(t, ix.Put(res("T", "default", "t-000003", "2", 8)))
	ix.mu.RLock()
	names, ents := ti.cachedNames()
	assert.Equal(t, &first[0], &names[0], "a version change keeps the list")
	assert.Nil(t, ents, "and drops the entries")
	ix.mu.RUnlock()
	require.NoError(t, ix.Put(res("T", "default", "new", "1", 8)))
	ix.mu.RLock()
	names, _ = ti.cachedNames()
	assert.Nil(t, names, "a new name drops it")
	ix.mu.RUnlock()
}

// A fresh subscriber starting from the kept list uses its entries only
// while they are current: after a version change it sends the index's
// version of the name, not the kept one.
func TestFreshSubscriberAfterAVersionChange(t *testing.T) {
	ix, _ := sparseIndex(t, 50)
	first, p1, _ := directSession(t, ix, 64<<10)
	require.NoError(t, first.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}}))
	nextResponse(t, p1)
	require.NoError(t, ix.Put(res("T", "default", "t-000003", "2", 8)))
	ss, p, _ := directSession(t, ix, 64<<10)
	require.NoError(t, ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}}))
	r := nextResponse(t, p)
	require.Len(t, r.GetResources(), 50)
	assert.Equal(t, "2", r.GetResources()[3].GetVersion())
}
