package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ev(rev uint64, name string) store.Event {
	return store.Event{Kind: store.EventPut, Origin: store.OriginLocal, Revision: rev,
		Resource: &resource.Resource{Type: "T", Name: name}}
}

func signalled(w *store.Watch) bool {
	select {
	case <-w.C():
		return true
	default:
		return false
	}
}

func TestFeedFansOutInOrderAndCoalesces(t *testing.T) {
	f := store.NewFeed()
	defer f.Close()
	a, err := f.Watch(t.Context())
	require.NoError(t, err)
	b, err := f.Watch(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 2, f.Watchers())

	f.Publish(nil) // ignored
	assert.False(t, signalled(a))

	f.Publish([]store.Event{ev(1, "x"), ev(1, "y")})
	f.Publish([]store.Event{ev(2, "z")})
	assert.True(t, signalled(a), "signalled")
	assert.False(t, signalled(a), "one signal for two commits")
	got := a.Next()
	require.Len(t, got, 3)
	assert.Equal(t, []uint64{1, 1, 2}, []uint64{got[0].Revision, got[1].Revision, got[2].Revision})
	assert.Equal(t, "y", got[1].Resource.Name)
	assert.Nil(t, a.Next())

	got[0].Revision = 99 // the caller owns the slice
	assert.EqualValues(t, 1, b.Next()[0].Revision, "watchers do not share slices")
}

func TestFeedWatchEndsWithContext(t *testing.T) {
	f := store.NewFeed()
	defer f.Close()
	ctx, cancel := context.WithCancelCause(t.Context())
	w, err := f.Watch(ctx)
	require.NoError(t, err)
	f.Publish([]store.Event{ev(1, "x")})
	boom := errors.New("boom")
	cancel(boom)
	select {
	case <-w.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not end")
	}
	require.ErrorIs(t, w.Err(), boom, "Err is the context's cause")
	assert.Equal(t, 0, f.Watchers(), "unregistered")
	assert.Len(t, w.Next(), 1, "events queued before the end are kept")
	f.Publish([]store.Event{ev(2, "y")})
	assert.Nil(t, w.Next())

	_, err = f.Watch(ctx)
	require.ErrorIs(t, err, boom)
}

func TestFeedClose(t *testing.T) {
	f := store.NewFeed()
	w, err := f.Watch(t.Context())
	require.NoError(t, err)
	f.Close()
	f.Close()
	<-w.Done()
	require.ErrorIs(t, w.Err(), store.ErrClosed)
	_, err = f.Watch(t.Context())
	require.ErrorIs(t, err, store.ErrClosed)
}

type failingSnapshot struct {
	store.Store
	feed *store.Feed
}

func (f failingSnapshot) Watch(ctx context.Context) (*store.Watch, error) { return f.feed.Watch(ctx) }

func (failingSnapshot) Snapshot(context.Context, store.Filter) ([]*resource.Resource, uint64, error) {
	return nil, 0, errors.New("disk on fire")
}

func TestSnapshotAndWatch(t *testing.T) {
	feed := store.NewFeed()
	defer feed.Close()
	_, _, _, err := store.SnapshotAndWatch(t.Context(), failingSnapshot{feed: feed}, store.Filter{})
	require.ErrorContains(t, err, "disk on fire")
	assert.Equal(t, 0, feed.Watchers(), "the watch is ended when the snapshot fails")

	m := memory.New()
	defer m.Close()
	ctx := t.Context()
	_, err = m.Create(ctx, &resource.Resource{Type: "T", Name: "before"})
	require.NoError(t, err)
	w, items, rev, err := store.SnapshotAndWatch(ctx, m, store.Filter{})
	require.NoError(t, err)
	require.Len(t, items, 1)
	assert.EqualValues(t, 1, rev)
	_, err = m.Create(ctx, &resource.Resource{Type: "T", Name: "after"})
	require.NoError(t, err)
	<-w.C()
	evs := w.Next()
	require.Len(t, evs, 1)
	assert.Equal(t, "after", evs[0].Resource.Name)
	assert.EqualValues(t, 2, evs[0].Revision)
}

func TestFilter(t *testing.T) {
	r := &resource.Resource{Type: "T", Mesh: "m", Zone: "z", Name: "n", Labels: map[string]string{"a": "1", "b": ""}}
	for _, c := range []struct {
		f    store.Filter
		want bool
	}{
		{store.Filter{}, true},
		{store.Filter{Type: "T", Mesh: "m", Zone: "z"}, true},
		{store.Filter{Type: "U"}, false},
		{store.Filter{Mesh: "x"}, false},
		{store.Filter{Zone: "y"}, false},
		{store.Filter{LocalOnly: true}, false},
		{store.Filter{Labels: map[string]string{"a": "1", "b": ""}}, true},
		{store.Filter{Labels: map[string]string{"a": "2"}}, false},
		{store.Filter{Labels: map[string]string{"c": ""}}, false},
	} {
		assert.Equal(t, c.want, c.f.Matches(r), "%+v", c.f)
	}
	local := &resource.Resource{Type: "T", Name: "n"}
	assert.True(t, store.Filter{LocalOnly: true}.Matches(local))
	require.ErrorIs(t, store.Filter{Zone: "z", LocalOnly: true}.Validate(), store.ErrInvalid)
	require.NoError(t, store.Filter{Zone: "z"}.Validate())
}

func TestCheckKeyAndCompare(t *testing.T) {
	require.NoError(t, store.CheckKey(resource.Key{Type: "T", Name: "n"}))
	require.ErrorIs(t, store.CheckKey(resource.Key{Type: "T"}), store.ErrInvalid)
	require.ErrorIs(t, store.CheckKey(resource.Key{Name: "n"}), store.ErrInvalid)
	require.ErrorIs(t, store.CheckKey(resource.Key{Type: "T", Name: "n", Mesh: "a\x00"}), store.ErrInvalid)
	keys := []resource.Key{
		{Type: "B", Name: "a"},
		{Type: "A", Zone: "z", Mesh: "a", Name: "a"},
		{Type: "A", Zone: "", Mesh: "b", Name: "a"},
		{Type: "A", Zone: "", Mesh: "a", Name: "b"},
	}
	assert.Positive(t, store.CompareKeys(keys[0], keys[1]))
	assert.Positive(t, store.CompareKeys(keys[1], keys[2]), "zone before mesh")
	assert.Positive(t, store.CompareKeys(keys[2], keys[3]), "mesh before name")
	assert.Zero(t, store.CompareKeys(keys[3], keys[3]))
}

// TestWatchOnlySkipsCommitsOfOtherTypes: a watch restricted with Only is
// neither signalled nor handed commits without an event of its types; a
// commit with one comes whole, and Only() with no types takes everything
// again.
func TestWatchOnlySkipsCommitsOfOtherTypes(t *testing.T) {
	f := store.NewFeed()
	defer f.Close()
	w, err := f.Watch(t.Context())
	require.NoError(t, err)
	w.Only("T", "V")
	other := func(rev uint64, name string) store.Event {
		e := ev(rev, name)
		e.Resource.Type = "U"
		return e
	}
	f.Publish([]store.Event{other(1, "u1"), other(1, "u2")})
	assert.False(t, signalled(w), "a commit of other types does not wake the watch")
	assert.Nil(t, w.Next())

	f.Publish([]store.Event{other(2, "u3"), ev(2, "t1")})
	require.True(t, signalled(w))
	got := w.Next()
	require.Len(t, got, 2, "a commit that holds one of the types comes whole")
	assert.Equal(t, "u3", got[0].Resource.Name)
	assert.Equal(t, "t1", got[1].Resource.Name)

	w.Only()
	f.Publish([]store.Event{other(3, "u4")})
	require.True(t, signalled(w), "no types: every commit again")
	assert.Len(t, w.Next(), 1)
}
