package boltstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/boltstore"
	"github.com/kds-engine/kds-engine/engine/internal/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := boltstore.Open(t.TempDir())
		require.NoError(t, err)
		return s
	})
}

func TestFaultConformance(t *testing.T) {
	t.Run("GroupCommit", func(t *testing.T) {
		storetest.RunFault(t, func(t *testing.T) store.Store {
			s, err := boltstore.Open(t.TempDir())
			require.NoError(t, err)
			return s
		})
	})
	t.Run("WithoutGroupCommit", func(t *testing.T) {
		storetest.RunFault(t, func(t *testing.T) store.Store {
			s, err := boltstore.Open(t.TempDir())
			require.NoError(t, err)
			boltstore.DisableGroupCommitForTest(s)
			return s
		})
	})
}

func open(t *testing.T, dir string, opts ...boltstore.Option) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(dir, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestSecondOpenFailsWithLockError(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	_, err := boltstore.Open(dir, boltstore.WithLockTimeout(100*time.Millisecond))
	require.ErrorIs(t, err, boltstore.ErrLocked)
	assert.Contains(t, err.Error(), "data dir is in use by another kds-engine")
	assert.Contains(t, err.Error(), filepath.Join(dir, boltstore.FileName), "names the locked file")

	require.NoError(t, s.Close())
	again := open(t, dir, boltstore.WithLockTimeout(time.Second))
	assert.Equal(t, filepath.Join(dir, boltstore.FileName), again.Path())
}

func TestOpenRejectsBadLockTimeout(t *testing.T) {
	_, err := boltstore.Open(t.TempDir(), boltstore.WithLockTimeout(0))
	require.Error(t, err)
}

func TestOpenCreatesDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	open(t, dir)
	_, err := os.Stat(filepath.Join(dir, boltstore.FileName))
	require.NoError(t, err)
}

// TestDurableAcrossReopen checks that resources, both counters and the
// deletes survive a restart, and that versions never go backwards.
func TestDurableAcrossReopen(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s, err := boltstore.Open(dir)
	require.NoError(t, err)

	local, err := s.Create(ctx, storetest.Res("MeshTimeout", "web"))
	require.NoError(t, err)
	gone, err := s.Create(ctx, storetest.Res("MeshTimeout", "gone"))
	require.NoError(t, err)
	require.NoError(t, s.Delete(ctx, gone.Key(), ""))
	synced := storetest.Res("Dataplane", "dp-1")
	synced.Zone, synced.Version = "z1", "sender-7"
	synced.Labels = map[string]string{"app": "web"}
	synced.CreationTime = time.Date(2025, 5, 6, 7, 8, 9, 123, time.UTC)
	synced.ModificationTime = synced.CreationTime.Add(time.Minute)
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{synced}})
	require.NoError(t, err)
	before, rev, err := s.Snapshot(ctx, store.Filter{})
	require.NoError(t, err)
	require.EqualValues(t, 4, rev)
	require.NoError(t, s.Close())

	s2 := open(t, dir)
	assert.Equal(t, rev, s2.Revision(), "revision continues")
	after, rev2, err := s2.Snapshot(ctx, store.Filter{})
	require.NoError(t, err)
	assert.Equal(t, rev, rev2)
	require.Len(t, after, len(before))
	for i := range before {
		assert.Equal(t, before[i], after[i])
	}
	_, err = s2.Get(ctx, gone.Key())
	require.ErrorIs(t, err, store.ErrNotFound, "the delete was durable")

	// The next local write continues both counters; the deleted resource's
	// version is not handed out again.
	w, err := s2.Watch(ctx)
	require.NoError(t, err)
	recreated, err := s2.Create(ctx, storetest.Res("MeshTimeout", "gone"))
	require.NoError(t, err)
	assert.Greater(t, counter(t, recreated.Version), counter(t, gone.Version))
	assert.Greater(t, counter(t, recreated.Version), counter(t, local.Version))
	assert.NotEqual(t, epoch(t, recreated.Version), epoch(t, local.Version), "a new epoch per open")
	<-w.C()
	evs := w.Next()
	require.Len(t, evs, 1)
	assert.Equal(t, rev+1, evs[0].Revision)
}

func TestCountersSurviveManyRestarts(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	var last uint64
	for i := range 3 {
		s, err := boltstore.Open(dir)
		require.NoError(t, err)
		r, err := s.Create(ctx, storetest.Res("T", fmt.Sprintf("r%d", i)))
		require.NoError(t, err)
		v := counter(t, r.Version)
		require.Greater(t, v, last)
		last = v
		assert.EqualValues(t, i+1, s.Revision())
		require.NoError(t, s.Close())
	}
}

// TestApplyLargeBatchAtomic writes a large batch, then fails one whose last
// entry is invalid, and checks the file is unchanged.
func TestApplyLargeBatchAtomic(t *testing.T) {
	ctx := t.Context()
	s := open(t, t.TempDir(), boltstore.WithNoSync(true))
	batch := storetest.Batch(2000, 256, "z1", "v1")
	_, err := s.Apply(ctx, batch)
	require.NoError(t, err)

	next := storetest.Batch(2000, 256, "z1", "v2")
	next.Put = append(next.Put, &resource.Resource{Type: "Dataplane", Name: "no-version"})
	_, err = s.Apply(ctx, next)
	require.ErrorIs(t, err, store.ErrInvalid)
	list, err := s.List(ctx, store.Filter{Zone: "z1"})
	require.NoError(t, err)
	require.Len(t, list, 2000)
	for _, r := range list {
		require.Equal(t, "v1", r.Version)
	}
}

func TestLayoutVersionChecked(t *testing.T) {
	dir := t.TempDir()
	s, err := boltstore.Open(dir)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.NoError(t, boltstore.SetLayoutForTest(filepath.Join(dir, boltstore.FileName), "99"))
	_, err = boltstore.Open(dir)
	require.ErrorContains(t, err, `unsupported layout version "99"`)
}

func TestSpecBytesRoundTrip(t *testing.T) {
	s := open(t, t.TempDir())
	r := storetest.Res("T", "x")
	r.Spec = json.RawMessage(`{"b": [1, 2, {"c": null}], "a": "é"}`)
	_, err := s.Create(context.Background(), r)
	require.NoError(t, err)
	got, err := s.Get(t.Context(), r.Key())
	require.NoError(t, err)
	assert.Equal(t, string(r.Spec), string(got.Spec), "spec bytes kept exactly")
}

// TestApplyRollsBackOnMidTransactionFailure makes bbolt itself fail in the
// middle of a batch (a key longer than bbolt allows) and checks that the
// puts and deletes before it were rolled back and nothing was published.
func TestApplyRollsBackOnMidTransactionFailure(t *testing.T) {
	ctx := t.Context()
	s := open(t, t.TempDir(), boltstore.WithNoSync(true))
	first := storetest.Batch(100, 256, "z1", "v1")
	_, err := s.Apply(ctx, first)
	require.NoError(t, err)
	before, rev, err := s.Snapshot(ctx, store.Filter{})
	require.NoError(t, err)
	w, err := s.Watch(ctx)
	require.NoError(t, err)

	next := storetest.Batch(100, 256, "z1", "v2")
	huge := next.Put[50].Clone()
	huge.Name = strings.Repeat("n", 40_000)
	next.Put = append(next.Put, huge)
	next.Delete = []resource.Key{first.Put[0].Key()}
	next.Put = next.Put[1:]
	_, err = s.Apply(ctx, next)
	require.Error(t, err)

	after, rev2, err := s.Snapshot(ctx, store.Filter{})
	require.NoError(t, err)
	assert.Equal(t, rev, rev2)
	assert.Equal(t, s.Revision(), rev)
	require.Len(t, after, len(before))
	for i := range before {
		assert.Equal(t, before[i], after[i])
	}
	assert.Empty(t, w.Next())

	// The store still works after the failed commit.
	_, err = s.Apply(ctx, storetest.Batch(3, 64, "z2", "v1"))
	require.NoError(t, err)
	assert.Equal(t, rev+1, s.Revision())
}

// TestConformanceWithoutGroupCommit runs the suite against the one-write-
// per-transaction path the group-commit benchmark uses as its baseline.
func TestConformanceWithoutGroupCommit(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := boltstore.Open(t.TempDir())
		require.NoError(t, err)
		boltstore.DisableGroupCommitForTest(s)
		return s
	})
}

func TestClockOption(t *testing.T) {
	t0 := time.Date(2026, 2, 3, 4, 5, 6, 7, time.FixedZone("x", 3600))
	now := t0
	s := open(t, t.TempDir(), boltstore.WithClock(func() time.Time { return now }))
	c, err := s.Create(t.Context(), storetest.Res("T", "x"))
	require.NoError(t, err)
	assert.True(t, c.CreationTime.Equal(t0))
	assert.Equal(t, time.UTC, c.CreationTime.Location(), "times are stored in UTC")
	now = t0.Add(time.Hour)
	u, err := s.Update(t.Context(), c)
	require.NoError(t, err)
	assert.True(t, u.CreationTime.Equal(t0))
	assert.True(t, u.ModificationTime.Equal(t0.Add(time.Hour)))
	got, err := s.Get(t.Context(), c.Key())
	require.NoError(t, err)
	assert.Equal(t, u, got, "what Update returns is what Get reads")
}
