package storetest

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// This file: the parts of the contract the sync layer relies on besides
// Apply itself: Batch.Limit and Versions.

// zoneRes is zone's Dataplane name, as a sync put with version v.
func zoneRes(zone, name, v string) *resource.Resource {
	r := Res("Dataplane", name)
	r.Zone, r.Version = zone, v
	return r
}

func puts(zone, v string, names ...string) []*resource.Resource {
	out := make([]*resource.Resource, len(names))
	for i, n := range names {
		out[i] = zoneRes(zone, n, v)
	}
	return out
}

func testApplyLimit(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	_, err := s.Apply(ctx, store.Batch{Put: puts("z1", "1", "a", "b", "c"), Limit: 3})
	require.NoError(t, err, "up to the limit")

	before, rev, err := s.Snapshot(ctx, store.Filter{})
	require.NoError(t, err)
	w, err := s.Watch(ctx)
	require.NoError(t, err)
	_, err = s.Apply(ctx, store.Batch{Put: append(puts("z1", "2", "a"), zoneRes("z1", "d", "1")), Limit: 3})
	require.ErrorIs(t, err, store.ErrLimitExceeded)
	for _, want := range []string{"Dataplane", "zone z1", "make 4 resources", "limit of 3"} {
		assert.Contains(t, err.Error(), want)
	}
	after, rev2, err := s.Snapshot(ctx, store.Filter{})
	require.NoError(t, err)
	assert.Equal(t, rev, rev2, "nothing committed")
	require.Len(t, after, len(before))
	for i := range before {
		assertSame(t, before[i], after[i])
	}
	assert.Empty(t, w.Next(), "no events")

	// Replacing stored resources does not add to the count; a delete in
	// the same batch makes room.
	_, err = s.Apply(ctx, store.Batch{Put: puts("z1", "2", "a", "b", "c"), Limit: 3})
	require.NoError(t, err)
	_, err = s.Apply(ctx, store.Batch{Put: puts("z1", "1", "d"), Delete: []resource.Key{zoneRes("z1", "a", "").Key()}, Limit: 3})
	require.NoError(t, err)
	// The same names in another zone, and another type in the same zone,
	// are counted apart.
	_, err = s.Apply(ctx, store.Batch{Put: puts("z2", "1", "a", "b", "c"), Limit: 3})
	require.NoError(t, err)
	other := zoneRes("z1", "x", "1")
	other.Type = "DataplaneInsight"
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{other}, Limit: 1})
	require.NoError(t, err)
	// No limit, or one on another (type, zone) than the puts', does not
	// refuse.
	_, err = s.Apply(ctx, store.Batch{Put: puts("z1", "1", "e")})
	require.NoError(t, err)
	_, err = s.Apply(ctx, store.Batch{Put: puts("z2", "2", "a"), Delete: []resource.Key{zoneRes("z1", "e", "").Key()}, Limit: 3})
	require.NoError(t, err)
	// Each (type, zone) of a batch is checked.
	_, err = s.Apply(ctx, store.Batch{Put: append(puts("z1", "3", "b"), puts("z2", "1", "d")...), Limit: 3})
	require.ErrorIs(t, err, store.ErrLimitExceeded)
	assert.Contains(t, err.Error(), "zone z2")

	got, err := s.List(ctx, store.Filter{Type: "Dataplane"})
	require.NoError(t, err)
	assert.Equal(t, []string{
		"Dataplane z1/default/b", "Dataplane z1/default/c", "Dataplane z1/default/d",
		"Dataplane z2/default/a", "Dataplane z2/default/b", "Dataplane z2/default/c",
	}, keyStrings(got))
	// A lowered limit: a (type, zone) already over it still takes updates
	// and deletes, but no batch that grows it.
	_, err = s.Apply(ctx, store.Batch{Put: puts("z1", "4", "b", "c"), Limit: 2})
	require.NoError(t, err, "updates of a (type, zone) over a lowered limit")
	_, err = s.Apply(ctx, store.Batch{Put: puts("z1", "1", "f"), Delete: []resource.Key{zoneRes("z1", "d", "").Key()}, Limit: 2})
	require.NoError(t, err, "a create that a delete makes room for")
	_, err = s.Apply(ctx, store.Batch{Put: puts("z1", "1", "g"), Limit: 2})
	require.ErrorIs(t, err, store.ErrLimitExceeded, "a batch that grows it")
}

// testApplyLimitCountsEveryWrite: the count a limited Apply checks follows
// every kind of commit made since the (type, zone) was last counted: local
// creates and deletes, unlimited applies, deletes that drop the type, and
// failed commits (which count nothing).
func testApplyLimitCountsEveryWrite(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	apply := func(b store.Batch) error {
		_, err := s.Apply(ctx, b)
		return err
	}
	require.NoError(t, apply(store.Batch{Put: puts("z1", "1", "a", "b"), Limit: 2}))
	require.ErrorIs(t, apply(store.Batch{Put: puts("z1", "1", "c"), Limit: 2}), store.ErrLimitExceeded)

	// A local delete makes room.
	require.NoError(t, s.Delete(ctx, zoneRes("z1", "a", "").Key(), ""))
	require.NoError(t, apply(store.Batch{Put: puts("z1", "1", "c"), Limit: 2}), "room after a local delete")
	// A local create takes it: now 3 stored, so a create is over 3.
	local := Res("Dataplane", "local")
	local.Zone = "z1"
	mustCreate(t, s, local)
	err := apply(store.Batch{Put: puts("z1", "1", "x"), Limit: 3})
	require.ErrorIs(t, err, store.ErrLimitExceeded, "a local create counts")
	assert.Contains(t, err.Error(), "make 4 resources")
	require.NoError(t, apply(store.Batch{Put: puts("z1", "2", "b"), Limit: 3}))

	// An unlimited apply counts too.
	require.NoError(t, apply(store.Batch{Put: puts("z1", "1", "d", "e")}))
	err = apply(store.Batch{Put: puts("z1", "1", "x"), Limit: 5})
	require.ErrorIs(t, err, store.ErrLimitExceeded)
	assert.Contains(t, err.Error(), "make 6 resources")

	// Deleting everything (the store may drop the type) and starting over.
	require.NoError(t, apply(store.Batch{Delete: []resource.Key{
		zoneRes("z1", "b", "").Key(), zoneRes("z1", "c", "").Key(), zoneRes("z1", "d", "").Key(), zoneRes("z1", "e", "").Key(),
	}}))
	require.NoError(t, s.Delete(ctx, local.Key(), ""))
	require.NoError(t, apply(store.Batch{Put: puts("z1", "1", "p", "q"), Limit: 2}))
	require.ErrorIs(t, apply(store.Batch{Put: puts("z1", "1", "r"), Limit: 2}), store.ErrLimitExceeded)

	// A failed batch (invalid) counted nothing.
	bad := puts("z1", "1", "s")
	bad = append(bad, zoneRes("z1", "", "1"))
	require.ErrorIs(t, apply(store.Batch{Put: bad}), store.ErrInvalid)
	require.NoError(t, apply(store.Batch{Put: puts("z1", "2", "p", "q"), Limit: 2}))

	list, err := s.List(ctx, store.Filter{Type: "Dataplane", Zone: "z1"})
	require.NoError(t, err)
	assert.Len(t, list, 2)
}

func testVersions(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	mk := func(typ, mesh, zone, name string, labels map[string]string) {
		r := Res(typ, name)
		r.Mesh, r.Zone, r.Labels = mesh, zone, labels
		mustCreate(t, s, r)
	}
	mk("Dataplane", "m1", "z1", "b", map[string]string{"app": "web"})
	mk("Dataplane", "m1", "z1", "a", nil)
	mk("Dataplane", "m2", "z2", "a", nil)
	mk("Dataplane", "m1", "", "local", nil)
	mk("MeshTimeout", "m1", "", "t1", nil)
	mk("Zone", "", "", "z1", nil)
	synced := zoneRes("z1", "synced", "sender-7")
	synced.Spec = rawSpec(`{"pad":"` + strings.Repeat("x", 64<<10) + `"}`)
	_, err := s.Apply(ctx, store.Batch{Put: []*resource.Resource{synced}})
	require.NoError(t, err)

	for _, f := range []store.Filter{
		{},
		{Type: "Dataplane"},
		{Type: "Dataplane", Zone: "z1"},
		{Type: "Dataplane", LocalOnly: true},
		{Mesh: "m1"},
		{Type: "Dataplane", Zone: "z1", Mesh: "m1"},
		{LocalOnly: true},
		{Type: "Nope"},
		{Type: "Dataplane", Zone: "z3"},
	} {
		list, err := s.List(ctx, f)
		require.NoError(t, err)
		want := make([]store.KeyVersion, len(list))
		for i, r := range list {
			want[i] = store.KeyVersion{Key: r.Key(), Version: r.Version}
		}
		got, err := s.Versions(ctx, f)
		require.NoError(t, err, "%+v", f)
		if len(want) == 0 {
			assert.Empty(t, got, "%+v", f)
			continue
		}
		assert.Equal(t, want, got, "Versions is List's keys and versions, in List's order (%+v)", f)
	}
	got, err := s.Versions(ctx, store.Filter{Type: "Dataplane", Zone: "z1"})
	require.NoError(t, err)
	require.Len(t, got, 3)
	assert.Equal(t, store.KeyVersion{Key: synced.Key(), Version: "sender-7"}, got[0], "a synced resource keeps the sender's version")

	_, err = s.Versions(ctx, store.Filter{Labels: map[string]string{"app": "web"}})
	require.ErrorIs(t, err, store.ErrInvalid, "labels are not read, so a filter on them is refused")
	_, err = s.Versions(ctx, store.Filter{Zone: "z1", LocalOnly: true})
	require.ErrorIs(t, err, store.ErrInvalid)
}
