// Package storetest is the conformance suite for store.Store implementations.
// An implementation passes it by calling Run from a test:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return memory.New() })
//	}
//
// newStore must return a fresh, empty store for every call; the suite closes
// it. The package also holds benchmarks every implementation runs the same
// way (see bench.go).
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// eventually is the generous bound for anything asynchronous.
const eventually = 10 * time.Second

// Run runs the conformance suite against stores made by newStore.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	open := func(t *testing.T) store.Store {
		s := newStore(t)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	tests := []namedTest{
		{"CreateGet", testCreateGet},
		{"CreateAlreadyExists", testCreateAlreadyExists},
		{"CreateInvalid", testCreateInvalid},
		{"UpdateOptimisticConcurrency", testUpdate},
		{"UpdateNotFound", testUpdateNotFound},
		{"Delete", testDelete},
		{"CopiesNotRetained", testCopies},
		{"VersionsUniqueAcrossTypes", testVersionsUnique},
		{"ListFilters", testListFilters},
		{"ListInvalidFilter", testListInvalidFilter},
		{"ZoneAttribution", testZoneAttribution},
		{"ApplyKeepsVersions", testApplyKeepsVersions},
		{"ApplyAtomic", testApplyAtomic},
		{"ApplyDeletesAndNoops", testApplyDeletesAndNoops},
		{"ApplyLimit", testApplyLimit},
		{"ApplyLimitCountsEveryWrite", testApplyLimitCountsEveryWrite},
		{"Versions", testVersions},
		{"Count", testCount},
		{"ConcurrentCreatesOneWins", testConcurrentCreates},
		{"ConcurrentUpdatesNoLostUpdate", testNoLostUpdate},
		{"WatchEvents", testWatchEvents},
		{"WatchNeverBlocksWriters", testWatchNeverBlocksWriters},
		{"WatchConcurrentWriters", testWatchConcurrentWriters},
		{"SnapshotThenWatchNoGap", testSnapshotThenWatch},
		{"WatchCancel", testWatchCancel},
		{"CanceledContext", testCanceledContext},
		{"Close", testClose},
	}
	runEach(t, open, tests)
}

// namedTest is one conformance test.
type namedTest struct {
	name string
	fn   func(t *testing.T, s store.Store)
}

// runEach runs every test as a subtest on a store of its own.
func runEach(t *testing.T, open func(*testing.T) store.Store, tests []namedTest) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
}

// Res returns a resource of type typ named name in mesh "default", with a
// small JSON spec.
func Res(typ, name string) *resource.Resource {
	return &resource.Resource{
		Type: typ,
		Mesh: "default",
		Name: name,
		Spec: json.RawMessage(`{"port":8080}`),
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), eventually*3)
	t.Cleanup(cancel)
	return ctx
}

func mustCreate(t *testing.T, s store.Store, r *resource.Resource) *resource.Resource {
	t.Helper()
	got, err := s.Create(ctxT(t), r)
	require.NoError(t, err)
	return got
}

// newVersion checks that v, a version the store just assigned to a local
// write, is non-empty and none of the versions in seen (if seen is not nil),
// and adds it to seen.
func newVersion(t *testing.T, seen map[string]bool, v string) {
	t.Helper()
	require.NotEmpty(t, v, "the store assigns a version")
	if seen != nil {
		require.False(t, seen[v], "version %q assigned twice", v)
		seen[v] = true
	}
}

func testCreateGet(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	in := Res("MeshTimeout", "web")
	in.Labels = map[string]string{"team": "web"}
	in.Version = "ignored"
	before := time.Now().Add(-time.Second)
	created, err := s.Create(ctx, in)
	require.NoError(t, err)
	assert.NotEqual(t, "ignored", created.Version)
	newVersion(t, nil, created.Version)
	assert.True(t, created.CreationTime.After(before), "creation time set")
	assert.True(t, created.ModificationTime.Equal(created.CreationTime))

	got, err := s.Get(ctx, in.Key())
	require.NoError(t, err)
	assertSame(t, created, got)
	assert.Equal(t, map[string]string{"team": "web"}, got.Labels)
	assert.JSONEq(t, `{"port":8080}`, string(got.Spec))

	_, err = s.Get(ctx, Res("MeshTimeout", "other").Key())
	require.ErrorIs(t, err, store.ErrNotFound)
	assert.Contains(t, err.Error(), "other")
}

func testCreateAlreadyExists(t *testing.T, s store.Store) {
	first := mustCreate(t, s, Res("MeshTimeout", "web"))
	_, err := s.Create(ctxT(t), Res("MeshTimeout", "web"))
	require.ErrorIs(t, err, store.ErrAlreadyExists)
	got, err := s.Get(ctxT(t), first.Key())
	require.NoError(t, err)
	assert.Equal(t, first.Version, got.Version, "failed create changed nothing")
}

func testCreateInvalid(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	_, err := s.Create(ctx, Res("MeshTimeout", ""))
	require.ErrorIs(t, err, store.ErrInvalid)
	_, err = s.Create(ctx, Res("", "web"))
	require.ErrorIs(t, err, store.ErrInvalid)
	_, err = s.Create(ctx, Res("MeshTimeout", "a\x00b"))
	require.ErrorIs(t, err, store.ErrInvalid)
	_, err = s.Create(ctx, nil)
	require.ErrorIs(t, err, store.ErrInvalid)
	all, err := s.List(ctx, store.Filter{})
	require.NoError(t, err)
	assert.Empty(t, all)
	assert.Zero(t, s.Revision())
}

func testUpdate(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	v1 := mustCreate(t, s, Res("MeshTimeout", "web"))

	upd := v1.Clone()
	upd.Spec = json.RawMessage(`{"port":9090}`)
	upd.Labels = map[string]string{"x": "y"}
	v2, err := s.Update(ctx, upd)
	require.NoError(t, err)
	seen := map[string]bool{}
	newVersion(t, seen, v1.Version)
	newVersion(t, seen, v2.Version)
	assert.True(t, v2.CreationTime.Equal(v1.CreationTime), "creation time kept")
	assert.False(t, v2.ModificationTime.Before(v1.ModificationTime))
	assert.JSONEq(t, `{"port":9090}`, string(v2.Spec))

	// A writer still holding v1 loses.
	stale := v1.Clone()
	stale.Spec = json.RawMessage(`{"port":1}`)
	_, err = s.Update(ctx, stale)
	require.ErrorIs(t, err, store.ErrConflict)
	assert.Contains(t, err.Error(), strconv.Quote(v1.Version), "message names the expected version")
	assert.Contains(t, err.Error(), strconv.Quote(v2.Version), "message names the stored version")
	got, err := s.Get(ctx, v1.Key())
	require.NoError(t, err)
	assertSame(t, v2, got)

	// An empty version skips the check.
	blind := v1.Clone()
	blind.Version = ""
	v3, err := s.Update(ctx, blind)
	require.NoError(t, err)
	newVersion(t, seen, v3.Version)
	assert.JSONEq(t, `{"port":8080}`, string(v3.Spec))
}

func testUpdateNotFound(t *testing.T, s store.Store) {
	_, err := s.Update(ctxT(t), Res("MeshTimeout", "ghost"))
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.Update(ctxT(t), Res("MeshTimeout", ""))
	require.ErrorIs(t, err, store.ErrInvalid)
}

func testDelete(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	v1 := mustCreate(t, s, Res("MeshTimeout", "web"))
	err := s.Delete(ctx, v1.Key(), "999999")
	require.ErrorIs(t, err, store.ErrConflict)
	assert.Contains(t, err.Error(), `"999999"`)
	assert.Contains(t, err.Error(), strconv.Quote(v1.Version))

	require.NoError(t, s.Delete(ctx, v1.Key(), v1.Version))
	_, err = s.Get(ctx, v1.Key())
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, s.Delete(ctx, v1.Key(), ""), store.ErrNotFound)

	// Empty version deletes unconditionally; the name can be reused and
	// gets a fresh version.
	v2 := mustCreate(t, s, Res("MeshTimeout", "web"))
	assert.NotEqual(t, v1.Version, v2.Version, "a recreated resource gets a version never used before")
	require.NoError(t, s.Delete(ctx, v2.Key(), ""))
}

func testCopies(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	in := Res("MeshTimeout", "web")
	in.Labels = map[string]string{"team": "web"}
	created, err := s.Create(ctx, in)
	require.NoError(t, err)

	in.Labels["team"] = "mutated-input"
	in.Spec[2] = 'X'
	created.Labels["team"] = "mutated-output"
	created.Spec[2] = 'Y'

	got, err := s.Get(ctx, in.Key())
	require.NoError(t, err)
	assert.Equal(t, "web", got.Labels["team"])
	assert.JSONEq(t, `{"port":8080}`, string(got.Spec))

	got.Labels["team"] = "mutated-get"
	list, err := s.List(ctx, store.Filter{Type: "MeshTimeout"})
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, "web", list[0].Labels["team"])

	batch := Res("MeshTimeout", "synced")
	batch.Version = "7"
	batch.Labels = map[string]string{"a": "b"}
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{batch}})
	require.NoError(t, err)
	batch.Labels["a"] = "mutated"
	batch.Spec[2] = 'Z'
	got, err = s.Get(ctx, batch.Key())
	require.NoError(t, err)
	assert.Equal(t, "b", got.Labels["a"])
	assert.JSONEq(t, `{"port":8080}`, string(got.Spec))
}

func testVersionsUnique(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	seen := map[string]bool{}
	for i := range 20 {
		typ := []string{"A", "B", "C"}[i%3]
		r := mustCreate(t, s, Res(typ, fmt.Sprintf("r%d", i)))
		newVersion(t, seen, r.Version)
		u, err := s.Update(ctx, r)
		require.NoError(t, err)
		newVersion(t, seen, u.Version)
		if i%2 == 0 {
			// Deleting and creating the same key again never brings a
			// version back.
			require.NoError(t, s.Delete(ctx, r.Key(), ""))
			again := mustCreate(t, s, Res(typ, fmt.Sprintf("r%d", i)))
			newVersion(t, seen, again.Version)
		}
	}
}

func testListFilters(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	mk := func(typ, mesh, zone, name string, labels map[string]string) {
		r := Res(typ, name)
		r.Mesh, r.Zone, r.Labels = mesh, zone, labels
		mustCreate(t, s, r)
	}
	mk("Dataplane", "m1", "z1", "b", map[string]string{"app": "web", "env": "prod"})
	mk("Dataplane", "m1", "z1", "a", map[string]string{"app": "web", "env": "dev"})
	mk("Dataplane", "m2", "z2", "a", map[string]string{"app": "db"})
	mk("Dataplane", "m1", "", "local", nil)
	mk("MeshTimeout", "m1", "", "t1", map[string]string{"app": "web"})
	mk("Zone", "", "", "z1", nil)

	names := func(f store.Filter) []string {
		t.Helper()
		list, err := s.List(ctx, f)
		require.NoError(t, err)
		out := make([]string, len(list))
		for i, r := range list {
			out[i] = r.Key().String()
		}
		return out
	}
	assert.Equal(t, []string{
		"Dataplane m1/local", "Dataplane z1/m1/a", "Dataplane z1/m1/b", "Dataplane z2/m2/a",
		"MeshTimeout m1/t1", "Zone z1",
	}, names(store.Filter{}), "everything, ordered by type, zone, mesh, name")
	assert.Equal(t, []string{"Dataplane m1/local", "Dataplane z1/m1/a", "Dataplane z1/m1/b", "Dataplane z2/m2/a"},
		names(store.Filter{Type: "Dataplane"}), "all zones")
	assert.Equal(t, []string{"Dataplane z1/m1/a", "Dataplane z1/m1/b"},
		names(store.Filter{Type: "Dataplane", Zone: "z1"}))
	assert.Equal(t, []string{"Dataplane m1/local"},
		names(store.Filter{Type: "Dataplane", LocalOnly: true}))
	assert.Equal(t, []string{"Dataplane m1/local", "Dataplane z1/m1/a", "Dataplane z1/m1/b", "MeshTimeout m1/t1"},
		names(store.Filter{Mesh: "m1"}))
	assert.Equal(t, []string{"Dataplane z1/m1/a", "Dataplane z1/m1/b", "MeshTimeout m1/t1"},
		names(store.Filter{Labels: map[string]string{"app": "web"}}))
	assert.Equal(t, []string{"Dataplane z1/m1/b"},
		names(store.Filter{Labels: map[string]string{"app": "web", "env": "prod"}}), "all labels must match")
	assert.Empty(t, names(store.Filter{Labels: map[string]string{"app": "web", "missing": ""}}),
		"a required label must be present even with an empty value")
	assert.Empty(t, names(store.Filter{Type: "Nope"}))
	assert.Empty(t, names(store.Filter{Type: "Dataplane", Zone: "z3"}))

	items, rev, err := s.Snapshot(ctx, store.Filter{Type: "Zone"})
	require.NoError(t, err)
	assert.Len(t, items, 1)
	assert.Equal(t, s.Revision(), rev)
	assert.EqualValues(t, 6, rev, "one revision per local write")
}

func testListInvalidFilter(t *testing.T, s store.Store) {
	_, err := s.List(ctxT(t), store.Filter{Zone: "z1", LocalOnly: true})
	require.ErrorIs(t, err, store.ErrInvalid)
}

func testZoneAttribution(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	var keys []resource.Key
	for _, zone := range []string{"z1", "z2", ""} {
		r := Res("Dataplane", "web-1")
		r.Zone = zone
		r.Spec = json.RawMessage(fmt.Sprintf(`{"zone":%q}`, zone))
		mustCreate(t, s, r)
		keys = append(keys, r.Key())
	}
	for _, k := range keys {
		got, err := s.Get(ctx, k)
		require.NoError(t, err)
		assert.Equal(t, k.Zone, got.Zone)
		assert.JSONEq(t, fmt.Sprintf(`{"zone":%q}`, k.Zone), string(got.Spec))
	}
	require.NoError(t, s.Delete(ctx, keys[0], ""))
	_, err := s.Get(ctx, keys[0])
	require.ErrorIs(t, err, store.ErrNotFound)
	for _, k := range keys[1:] {
		_, err := s.Get(ctx, k)
		require.NoError(t, err, "deleting z1's web-1 leaves %s", k)
	}
	// Apply for one zone touches only that zone.
	r := Res("Dataplane", "web-1")
	r.Zone, r.Version = "z2", "42"
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{r}, Delete: []resource.Key{keys[0]}})
	require.NoError(t, err)
	local, err := s.Get(ctx, keys[2])
	require.NoError(t, err)
	assert.NotEqual(t, "42", local.Version)
}

func testApplyKeepsVersions(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	created := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	modified := created.Add(time.Hour)
	var puts []*resource.Resource
	for i := range 3 {
		r := Res("MeshTimeout", fmt.Sprintf("p%d", i))
		r.Version = fmt.Sprintf("sender-v%d", i)
		r.CreationTime, r.ModificationTime = created, modified
		r.Labels = map[string]string{"i": strconv.Itoa(i)}
		puts = append(puts, r)
	}
	w, err := s.Watch(ctx)
	require.NoError(t, err)
	rev, err := s.Apply(ctx, store.Batch{Put: puts})
	require.NoError(t, err)
	assert.Equal(t, s.Revision(), rev)
	assert.EqualValues(t, 1, rev, "one batch, one revision")
	evs := waitEvents(t, w, len(puts))
	require.Len(t, evs, len(puts))
	for _, ev := range evs {
		i, err := strconv.Atoi(ev.Resource.Labels["i"])
		require.NoError(t, err)
		assertSame(t, puts[i], ev.Resource)
		assert.Equal(t, store.EventPut, ev.Kind)
		assert.Equal(t, store.OriginSync, ev.Origin)
		assert.Equal(t, rev, ev.Revision)
	}
	for _, p := range puts {
		got, err := s.Get(ctx, p.Key())
		require.NoError(t, err)
		assertSame(t, p, got)
	}
	// A later local write still gets a version of the store's own.
	c := mustCreate(t, s, Res("MeshTimeout", "local"))
	newVersion(t, map[string]bool{"sender-v0": true, "sender-v1": true, "sender-v2": true}, c.Version)

	// Apply replaces a resource wholesale, version included.
	upd := puts[0].Clone()
	upd.Version = "sender-v9"
	upd.Labels = nil
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{upd}})
	require.NoError(t, err)
	got, err := s.Get(ctx, upd.Key())
	require.NoError(t, err)
	assertSame(t, upd, got)
}

func testApplyAtomic(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	existing := Res("MeshTimeout", "keep")
	existing.Version = "1"
	_, err := s.Apply(ctx, store.Batch{Put: []*resource.Resource{existing}})
	require.NoError(t, err)
	before, rev0, err := s.Snapshot(ctx, store.Filter{})
	require.NoError(t, err)

	w, err := s.Watch(ctx)
	require.NoError(t, err)

	good := func(name string) *resource.Resource {
		r := Res("MeshTimeout", name)
		r.Version = "5"
		return r
	}
	noVersion := good("nov")
	noVersion.Version = ""
	bad := []struct {
		name  string
		batch store.Batch
	}{
		{"empty name", store.Batch{Put: []*resource.Resource{good("a"), good(""), good("b")}, Delete: []resource.Key{existing.Key()}}},
		{"empty type", store.Batch{Put: []*resource.Resource{good("a"), Res("", "x")}}},
		{"nil resource", store.Batch{Put: []*resource.Resource{good("a"), nil}}},
		{"no version", store.Batch{Put: []*resource.Resource{good("a"), noVersion}}},
		{"duplicate put", store.Batch{Put: []*resource.Resource{good("a"), good("a")}}},
		{"put and delete", store.Batch{Put: []*resource.Resource{good("a")}, Delete: []resource.Key{good("a").Key()}}},
		{"invalid delete key", store.Batch{Put: []*resource.Resource{good("a")}, Delete: []resource.Key{{Type: "MeshTimeout"}}}},
	}
	for _, b := range bad {
		_, err := s.Apply(ctx, b.batch)
		require.ErrorIs(t, err, store.ErrInvalid, b.name)
	}
	after, rev1, err := s.Snapshot(ctx, store.Filter{})
	require.NoError(t, err)
	assert.Equal(t, rev0, rev1, "no revision consumed")
	assert.Equal(t, keysOf(before), keysOf(after), "nothing changed")
	assert.Empty(t, w.Next(), "no events")
}

func testApplyDeletesAndNoops(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	a, b := Res("T", "a"), Res("T", "b")
	a.Version, b.Version = "1", "1"
	_, err := s.Apply(ctx, store.Batch{Put: []*resource.Resource{a, b}})
	require.NoError(t, err)
	w, err := s.Watch(ctx)
	require.NoError(t, err)

	// Identical put and delete of an unknown key: nothing happens.
	rev, err := s.Apply(ctx, store.Batch{Put: []*resource.Resource{a.Clone()}, Delete: []resource.Key{Res("T", "ghost").Key()}})
	require.NoError(t, err)
	assert.EqualValues(t, 1, rev, "no-op batch returns the current revision")
	assert.EqualValues(t, 1, s.Revision())
	_, err = s.Apply(ctx, store.Batch{})
	require.NoError(t, err)
	assert.Empty(t, w.Next())

	// Only the changed puts of a mixed batch are written.
	c, d := Res("T", "0"), Res("T", "z")
	c.Version, d.Version = "1", "1"
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{d, b.Clone(), c}})
	require.NoError(t, err)
	evs := waitEvents(t, w, 2)
	require.Len(t, evs, 2)
	assert.ElementsMatch(t, []string{"0", "z"}, []string{evs[0].Resource.Name, evs[1].Resource.Name})
	assert.EqualValues(t, 2, s.Revision())
	_, err = s.Apply(ctx, store.Batch{Delete: []resource.Key{c.Key(), d.Key()}})
	require.NoError(t, err)
	require.Len(t, waitEvents(t, w, 2), 2)

	// A changed put and a real delete in one commit.
	a2 := a.Clone()
	a2.Version = "2"
	rev, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{a2}, Delete: []resource.Key{b.Key()}})
	require.NoError(t, err)
	assert.EqualValues(t, 4, rev)
	evs = waitEvents(t, w, 2)
	require.Len(t, evs, 2)
	for _, ev := range evs {
		assert.Equal(t, rev, ev.Revision, "one commit, one revision")
		assert.Equal(t, store.OriginSync, ev.Origin)
	}
	assert.Equal(t, store.EventPut, evs[0].Kind)
	assert.Equal(t, "2", evs[0].Resource.Version)
	assert.Equal(t, store.EventDelete, evs[1].Kind)
	assert.Equal(t, b.Key(), evs[1].Resource.Key())
	assert.Equal(t, "1", evs[1].Resource.Version, "delete event carries the last version")
	_, err = s.Get(ctx, b.Key())
	require.ErrorIs(t, err, store.ErrNotFound)
}

// testConcurrentCreates races writers creating the same keys: exactly one
// create per key succeeds, the rest get ErrAlreadyExists, and versions are
// unique.
func testConcurrentCreates(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	const writers, keys = 8, 10
	var mu sync.Mutex
	wins := map[string]int{}
	versions := map[string]bool{}
	g, gctx := errgroup.WithContext(ctx)
	for range writers {
		g.Go(func() error {
			for k := range keys {
				r, err := s.Create(gctx, Res("T", fmt.Sprintf("k%d", k)))
				if errors.Is(err, store.ErrAlreadyExists) {
					continue
				}
				if err != nil {
					return err
				}
				mu.Lock()
				wins[r.Name]++
				if versions[r.Version] {
					mu.Unlock()
					return fmt.Errorf("version %s handed out twice", r.Version)
				}
				versions[r.Version] = true
				mu.Unlock()
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	require.Len(t, wins, keys)
	for name, n := range wins {
		assert.Equal(t, 1, n, "creates of %s that succeeded", name)
	}
	assert.EqualValues(t, keys, s.Revision(), "failed creates commit nothing")
}

// testNoLostUpdate has writers increment a counter in one resource with
// read-modify-write and retry on ErrConflict; every increment must land.
func testNoLostUpdate(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	r := Res("T", "counter")
	r.Labels = map[string]string{"n": "0"}
	mustCreate(t, s, r)
	const writers, increments = 4, 15
	var conflicts atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range writers {
		g.Go(func() error {
			for range increments {
				for {
					cur, err := s.Get(gctx, r.Key())
					if err != nil {
						return err
					}
					n, err := strconv.Atoi(cur.Labels["n"])
					if err != nil {
						return err
					}
					cur.Labels["n"] = strconv.Itoa(n + 1)
					_, err = s.Update(gctx, cur)
					if errors.Is(err, store.ErrConflict) {
						conflicts.Add(1)
						continue
					}
					if err != nil {
						return err
					}
					break
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	got, err := s.Get(ctx, r.Key())
	require.NoError(t, err)
	assert.Equal(t, strconv.Itoa(writers*increments), got.Labels["n"], "no lost update (%d conflicts retried)", conflicts.Load())
}

func testWatchEvents(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	w, err := s.Watch(ctx)
	require.NoError(t, err)
	c := mustCreate(t, s, Res("T", "x"))
	u, err := s.Update(ctx, c)
	require.NoError(t, err)
	require.NoError(t, s.Delete(ctx, c.Key(), u.Version))

	evs := waitEvents(t, w, 3)
	require.Len(t, evs, 3)
	assert.Equal(t, []store.EventKind{store.EventPut, store.EventPut, store.EventDelete},
		[]store.EventKind{evs[0].Kind, evs[1].Kind, evs[2].Kind})
	assert.Equal(t, []string{c.Version, u.Version, u.Version},
		[]string{evs[0].Resource.Version, evs[1].Resource.Version, evs[2].Resource.Version})
	for i, ev := range evs {
		assert.Equal(t, store.OriginLocal, ev.Origin)
		assert.EqualValues(t, i+1, ev.Revision)
		assert.Equal(t, c.Key(), ev.Resource.Key())
	}
	assert.Nil(t, w.Next(), "drained")
	assert.NoError(t, w.Err())
}

func testWatchNeverBlocksWriters(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	idle, err := s.Watch(ctx) // never read until the end
	require.NoError(t, err)
	const n = 300
	for i := range n {
		mustCreate(t, s, Res("T", fmt.Sprintf("r%03d", i)))
	}
	evs := idle.Next()
	require.Len(t, evs, n, "every event kept for the slow watcher")
	for i, ev := range evs {
		assert.EqualValues(t, i+1, ev.Revision)
	}
}

// testWatchConcurrentWriters checks order and completeness: replaying the
// events of concurrent local and sync writers rebuilds exactly the store.
func testWatchConcurrentWriters(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	w, err := s.Watch(ctx)
	require.NoError(t, err)

	const writers, perWriter = 4, 60
	g, gctx := errgroup.WithContext(ctx)
	for wi := range writers {
		g.Go(func() error { return churn(gctx, s, wi, perWriter) })
	}
	require.NoError(t, g.Wait())
	final := s.Revision()

	state := map[resource.Key]string{}
	var last uint64
	var commits int
	deadline := time.After(eventually)
	for last < final {
		select {
		case <-w.C():
		case <-deadline:
			t.Fatalf("watch saw revision %d, store is at %d", last, final)
		}
		for _, ev := range w.Next() {
			require.GreaterOrEqual(t, ev.Revision, last, "commit order")
			if ev.Revision > last {
				require.Equal(t, last+1, ev.Revision, "no commit skipped")
				commits++
			}
			last = ev.Revision
			replay(state, ev)
		}
	}
	assert.EqualValues(t, final, commits)
	list, err := s.List(ctx, store.Filter{})
	require.NoError(t, err)
	assert.Equal(t, versionsOf(list), state)
}

// churn performs local and sync writes: creates, updates, deletes, batches.
func churn(ctx context.Context, s store.Store, writer, n int) error {
	for i := range n {
		name := fmt.Sprintf("w%d-%d", writer, i%7)
		switch i % 4 {
		case 0, 1:
			r := Res("T", name)
			if _, err := s.Create(ctx, r); err != nil && !errors.Is(err, store.ErrAlreadyExists) {
				return err
			}
			if _, err := s.Update(ctx, r); err != nil {
				return err
			}
		case 2:
			if err := s.Delete(ctx, Res("T", name).Key(), ""); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		case 3:
			var b store.Batch
			for j := range 3 {
				r := Res("S", fmt.Sprintf("w%d-%d", writer, (i+j)%5))
				r.Zone = fmt.Sprintf("z%d", writer)
				r.Version = fmt.Sprintf("%d-%d", i, j)
				b.Put = append(b.Put, r)
			}
			b.Delete = []resource.Key{{Type: "S", Mesh: "default", Zone: fmt.Sprintf("z%d", writer), Name: fmt.Sprintf("w%d-%d", writer, (i+4)%5)}}
			if _, err := s.Apply(ctx, b); err != nil {
				return err
			}
		}
	}
	return nil
}

// testSnapshotThenWatch runs the documented recipe while writers run and
// checks the rebuilt state equals the store once they stop.
func testSnapshotThenWatch(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	for i := range 20 {
		mustCreate(t, s, Res("T", fmt.Sprintf("pre-%d", i)))
	}
	filter := store.Filter{Type: "T"}

	g, gctx := errgroup.WithContext(ctx)
	started := make(chan struct{})
	g.Go(func() error {
		close(started)
		return churn(gctx, s, 0, 80)
	})
	<-started
	w, items, rev, err := store.SnapshotAndWatch(ctx, s, filter)
	require.NoError(t, err)
	require.NoError(t, g.Wait())
	final := s.Revision()

	state := versionsOf(items)
	last := rev
	deadline := time.After(eventually)
	for last < final {
		select {
		case <-w.C():
		case <-deadline:
			t.Fatalf("watch saw revision %d, store is at %d", last, final)
		}
		for _, ev := range w.Next() {
			if ev.Revision <= rev {
				continue
			}
			last = ev.Revision
			if filter.Matches(ev.Resource) {
				replay(state, ev)
			}
		}
	}
	list, err := s.List(ctx, filter)
	require.NoError(t, err)
	assert.Equal(t, versionsOf(list), state)
}

func testWatchCancel(t *testing.T, s store.Store) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithCancel(ctxT(t))
	w, err := s.Watch(ctx)
	require.NoError(t, err)
	cancel()
	select {
	case <-w.Done():
	case <-time.After(eventually):
		t.Fatal("watch did not end after its context was canceled")
	}
	require.ErrorIs(t, w.Err(), context.Canceled)
	mustCreate(t, s, Res("T", "after"))
	assert.Empty(t, w.Next(), "an ended watch queues nothing")

	_, err = s.Watch(ctx)
	require.ErrorIs(t, err, context.Canceled, "watch with a dead context")
}

func testCanceledContext(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(ctxT(t))
	cancel()
	_, err := s.Create(ctx, Res("T", "x"))
	require.ErrorIs(t, err, context.Canceled)
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{{Type: "T", Name: "y", Version: "1"}}})
	require.ErrorIs(t, err, context.Canceled)
	_, err = s.List(ctx, store.Filter{})
	require.ErrorIs(t, err, context.Canceled)
	_, err = s.Versions(ctx, store.Filter{})
	require.ErrorIs(t, err, context.Canceled)
	_, err = s.ClaimSession(ctx, "z1")
	require.ErrorIs(t, err, context.Canceled)
	assert.Zero(t, s.Revision())
}

func testClose(t *testing.T, s store.Store) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := ctxT(t)
	c := mustCreate(t, s, Res("T", "x"))
	w, err := s.Watch(ctx)
	require.NoError(t, err)
	rev := s.Revision()

	require.NoError(t, s.Close())
	select {
	case <-w.Done():
	case <-time.After(eventually):
		t.Fatal("watch did not end when the store closed")
	}
	require.ErrorIs(t, w.Err(), store.ErrClosed)
	require.NoError(t, s.Close(), "Close is idempotent")

	_, err = s.Get(ctx, c.Key())
	assert.ErrorIs(t, err, store.ErrClosed)
	_, err = s.List(ctx, store.Filter{})
	assert.ErrorIs(t, err, store.ErrClosed)
	_, _, err = s.Snapshot(ctx, store.Filter{})
	assert.ErrorIs(t, err, store.ErrClosed)
	_, err = s.Versions(ctx, store.Filter{})
	assert.ErrorIs(t, err, store.ErrClosed)
	_, err = s.ClaimSession(ctx, "z1")
	assert.ErrorIs(t, err, store.ErrClosed)
	_, err = s.Create(ctx, Res("T", "y"))
	assert.ErrorIs(t, err, store.ErrClosed)
	_, err = s.Update(ctx, c)
	assert.ErrorIs(t, err, store.ErrClosed)
	assert.ErrorIs(t, s.Delete(ctx, c.Key(), ""), store.ErrClosed)
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{{Type: "T", Name: "z", Version: "1"}}})
	assert.ErrorIs(t, err, store.ErrClosed)
	_, err = s.Watch(ctx)
	assert.ErrorIs(t, err, store.ErrClosed)
	assert.Equal(t, rev, s.Revision())
}

// waitEvents collects events until at least n arrived or time runs out.
func waitEvents(t *testing.T, w *store.Watch, n int) []store.Event {
	t.Helper()
	var out []store.Event
	deadline := time.After(eventually)
	for len(out) < n {
		select {
		case <-w.C():
			out = append(out, w.Next()...)
		case <-deadline:
			t.Fatalf("got %d events, want %d", len(out), n)
		}
	}
	return out
}

func replay(state map[resource.Key]string, ev store.Event) {
	switch ev.Kind {
	case store.EventPut:
		state[ev.Resource.Key()] = ev.Resource.Version
	case store.EventDelete:
		delete(state, ev.Resource.Key())
	}
}

func versionsOf(list []*resource.Resource) map[resource.Key]string {
	m := make(map[resource.Key]string, len(list))
	for _, r := range list {
		m[r.Key()] = r.Version
	}
	return m
}

func keysOf(list []*resource.Resource) []resource.Key {
	out := make([]resource.Key, len(list))
	for i, r := range list {
		out[i] = r.Key()
	}
	slices.SortFunc(out, store.CompareKeys)
	return out
}

// assertSame compares two resources field by field, times by instant.
func assertSame(t *testing.T, want, got *resource.Resource) {
	t.Helper()
	assert.Equal(t, want.Key(), got.Key())
	assert.Equal(t, want.Version, got.Version)
	assert.Equal(t, len(want.Labels), len(got.Labels))
	for k, v := range want.Labels {
		assert.Equal(t, v, got.Labels[k], "label %s", k)
	}
	assert.Equal(t, string(want.Spec), string(got.Spec))
	assert.True(t, want.CreationTime.Equal(got.CreationTime), "creation time %v != %v", want.CreationTime, got.CreationTime)
	assert.True(t, want.ModificationTime.Equal(got.ModificationTime), "modification time %v != %v", want.ModificationTime, got.ModificationTime)
}

// testCount checks a store.Counter (skipped for a store without one)
// against Versions: local and zone resources, replaced and deleted ones,
// more than fit one page, and a type never written.
func testCount(t *testing.T, s store.Store) {
	c, ok := s.(store.Counter)
	if !ok {
		t.Skip("the store keeps no count")
	}
	ctx := ctxT(t)
	pad := strings.Repeat("x", 400)
	var puts []*resource.Resource
	for i := range 500 {
		r := Res("Dataplane", fmt.Sprintf("dp-%d", i))
		r.Zone, r.Version = fmt.Sprintf("z%d", i%3), "1"
		r.Spec = json.RawMessage(fmt.Sprintf(`{"pad":%q}`, pad))
		puts = append(puts, r)
	}
	_, err := s.Apply(ctx, store.Batch{Put: puts})
	require.NoError(t, err)
	mustCreate(t, s, Res("Dataplane", "local"))
	mustCreate(t, s, Res("Mesh", "default"))
	// Replacing changes no count; deleting does.
	again := Res("Dataplane", "dp-1")
	again.Zone, again.Version = "z1", "2"
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{again}, Delete: []resource.Key{puts[2].Key(), puts[3].Key()}})
	require.NoError(t, err)
	for typ, want := range map[string]int{"Dataplane": 499, "Mesh": 1, "Nothing": 0} {
		kvs, err := s.Versions(ctx, store.Filter{Type: typ})
		require.NoError(t, err)
		require.Len(t, kvs, want, typ)
		n, err := c.Count(ctx, typ)
		require.NoError(t, err)
		assert.Equal(t, want, n, typ)
	}
	require.NoError(t, s.Delete(ctx, resource.Key{Type: "Mesh", Mesh: "default", Name: "default"}, ""))
	n, err := c.Count(ctx, "Mesh")
	require.NoError(t, err)
	assert.Zero(t, n, "the last Mesh deleted")
}
