package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/pgstore"
	"github.com/kds-engine/kds-engine/engine/internal/store/storetest"
	"github.com/kds-engine/kds-engine/internal/testsupport/pgtest"
)

const eventually = 15 * time.Second

// collect reads w until it has seen revision upto, and returns the events.
func collect(t *testing.T, w *store.Watch, upto uint64) []store.Event {
	t.Helper()
	var out []store.Event
	deadline := time.After(eventually)
	for len(out) == 0 || out[len(out)-1].Revision < upto {
		select {
		case <-w.C():
			out = append(out, w.Next()...)
		case <-w.Done():
			t.Fatalf("watch ended: %v", w.Err())
		case <-deadline:
			last := uint64(0)
			if len(out) > 0 {
				last = out[len(out)-1].Revision
			}
			t.Fatalf("watch reached revision %d, want %d", last, upto)
		}
	}
	return out
}

// checkOrder asserts events cover every revision from first to the last
// one, in order, without a gap.
func checkOrder(t *testing.T, evs []store.Event, first uint64) {
	t.Helper()
	next := first
	for _, ev := range evs {
		if ev.Revision == next-1 && next > first {
			continue // another event of the same commit
		}
		require.Equal(t, next, ev.Revision, "commits in order, none skipped, none twice")
		next++
	}
}

func exec(t *testing.T, url, sql string, args ...any) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer c.Close(ctx)
	_, err = c.Exec(ctx, sql, args...)
	require.NoError(t, err)
}

// TestReplicasShareTheFeed: writes through A reach B's watcher in order,
// also after B's LISTEN connection is killed (B catches up from the log);
// and B's writes reach A.
func TestReplicasShareTheFeed(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a := open(t, url)
	// B polls rarely, so that only LISTEN or the catch-up after a
	// reconnect can explain it seeing A's writes promptly.
	b := open(t, url, pgstore.WithPollInterval(time.Hour))
	ctx := t.Context()
	wb, err := b.Watch(ctx)
	require.NoError(t, err)
	wa, err := a.Watch(ctx)
	require.NoError(t, err)

	for i := range 20 {
		_, err := a.Create(ctx, storetest.Res("T", fmt.Sprintf("a%d", i)))
		require.NoError(t, err)
	}
	evs := collect(t, wb, 20)
	checkOrder(t, evs, 1)
	for i, ev := range evs {
		assert.Equal(t, fmt.Sprintf("a%d", i), ev.Resource.Name)
		assert.Equal(t, store.OriginLocal, ev.Origin)
	}
	assert.EqualValues(t, 20, b.Revision())

	// Kill B's LISTEN connection; write while it is down and right after.
	pid := b.ListenPID()
	require.NotZero(t, pid)
	exec(t, url, "SELECT pg_terminate_backend($1)", int32(pid))
	for i := range 10 {
		r := storetest.Res("S", fmt.Sprintf("s%d", i))
		r.Zone, r.Version = "z1", "1"
		_, err := a.Apply(ctx, store.Batch{Put: []*resource.Resource{r}})
		require.NoError(t, err)
	}
	evs = collect(t, wb, 30)
	checkOrder(t, evs, 21)
	require.Eventually(t, func() bool { p := b.ListenPID(); return p != 0 && p != pid }, eventually, 10*time.Millisecond, "B listens again")

	// B writes; A sees A's and B's commits, in order, once each.
	_, err = b.Create(ctx, storetest.Res("T", "from-b"))
	require.NoError(t, err)
	evs = collect(t, wa, 31)
	checkOrder(t, evs, 1)
	assert.Equal(t, "from-b", evs[len(evs)-1].Resource.Name)
}

// TestReplicasConcurrentWritersOneOrder: A and B write concurrently; both
// watchers see the same commits in the same order, every revision once,
// and replaying them rebuilds the table; versions never repeat.
func TestReplicasConcurrentWritersOneOrder(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a, b := open(t, url), open(t, url)
	ctx := t.Context()
	wa, err := a.Watch(ctx)
	require.NoError(t, err)
	wb, err := b.Watch(ctx)
	require.NoError(t, err)
	var (
		mu       sync.Mutex
		versions = map[string]bool{}
	)
	g, gctx := errgroup.WithContext(ctx)
	for i, s := range []*pgstore.Store{a, b, a, b} {
		g.Go(func() error {
			for j := range 25 {
				r, err := s.Create(gctx, storetest.Res("T", fmt.Sprintf("w%d-%d", i, j)))
				if err != nil {
					return err
				}
				mu.Lock()
				dup := versions[r.Version]
				versions[r.Version] = true
				mu.Unlock()
				if dup {
					return fmt.Errorf("version %s assigned twice", r.Version)
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	ea, eb := collect(t, wa, 100), collect(t, wb, 100)
	checkOrder(t, ea, 1)
	require.Equal(t, len(ea), len(eb))
	for i := range ea {
		assert.Equal(t, ea[i].Revision, eb[i].Revision)
		assert.Equal(t, ea[i].Resource.Version, eb[i].Resource.Version)
	}
	list, err := b.List(ctx, store.Filter{})
	require.NoError(t, err)
	assert.Len(t, list, 100)
}

// TestReplicasFencing: a zone's session claimed on A is replaced by a
// claim on B; A's Apply with the older generation is fenced while B's
// goes through, also when both race.
func TestReplicasFencing(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a, b := open(t, url), open(t, url)
	ctx := t.Context()
	put := func(name string) []*resource.Resource {
		r := storetest.Res("Dataplane", name)
		r.Zone, r.Version = "z1", "1"
		return []*resource.Resource{r}
	}
	for round := range 5 {
		ga, err := a.ClaimSession(ctx, "z1")
		require.NoError(t, err)
		_, err = a.Apply(ctx, store.Batch{Put: put(fmt.Sprintf("a%d", round)), Fence: &store.Fence{Zone: "z1", Generation: ga}})
		require.NoError(t, err)

		// Claim on B while A keeps applying with its generation.
		var g errgroup.Group
		var fenced int
		g.Go(func() error {
			for i := 0; ; i++ {
				_, err := a.Apply(ctx, store.Batch{Put: put(fmt.Sprintf("a%d-%d", round, i)), Fence: &store.Fence{Zone: "z1", Generation: ga}})
				if errors.Is(err, store.ErrFenced) {
					fenced++
					return nil
				}
				if err != nil {
					return err
				}
			}
		})
		gb, err := b.ClaimSession(ctx, "z1")
		require.NoError(t, err)
		require.Greater(t, gb, ga)
		require.NoError(t, g.Wait())
		assert.Equal(t, 1, fenced)
		_, err = a.Apply(ctx, store.Batch{Put: put("late"), Fence: &store.Fence{Zone: "z1", Generation: ga}})
		require.ErrorIs(t, err, store.ErrFenced)
		assert.Contains(t, err.Error(), fmt.Sprintf("replaced by %d", gb))
		_, err = b.Apply(ctx, store.Batch{Put: put(fmt.Sprintf("b%d", round)), Fence: &store.Fence{Zone: "z1", Generation: gb}})
		require.NoError(t, err)
	}
	_, err := a.Get(ctx, resource.Key{Type: "Dataplane", Mesh: "default", Zone: "z1", Name: "late"})
	require.ErrorIs(t, err, store.ErrNotFound)
}

// TestDatabaseWentBack: a database that goes back to an older state (a
// restore) makes the store draw a new version epoch, so no version is
// assigned twice, and ends its watchers with ErrWatchLost.
func TestDatabaseWentBack(t *testing.T) {
	url := pgtest.NewDatabase(t)
	s := open(t, url)
	ctx := t.Context()
	seen := map[string]bool{}
	var last *resource.Resource
	for i := range 5 {
		r, err := s.Create(ctx, storetest.Res("T", fmt.Sprintf("r%d", i)))
		require.NoError(t, err)
		seen[r.Version], last = true, r
	}
	w, err := s.Watch(ctx)
	require.NoError(t, err)
	// What a restore of a copy taken after the second write looks like.
	exec(t, url, "UPDATE kds_counter SET revision = 2, version = 2")
	exec(t, url, "DELETE FROM kds_changes WHERE revision > 2")
	for i := range 5 {
		r, err := s.Create(ctx, storetest.Res("T", fmt.Sprintf("after%d", i)))
		require.NoError(t, err)
		require.False(t, seen[r.Version], "version %s assigned twice", r.Version)
		seen[r.Version] = true
		assert.NotEqual(t, strings.SplitN(last.Version, "-", 2)[0], strings.SplitN(r.Version, "-", 2)[0], "a new epoch")
	}
	select {
	case <-w.Done():
		require.ErrorIs(t, w.Err(), store.ErrWatchLost)
		assert.Contains(t, w.Err().Error(), "behind revision 5")
	case <-time.After(eventually):
		t.Fatal("watch not ended")
	}
	// A new watch follows from the database's revision on.
	w2, err := s.Watch(ctx)
	require.NoError(t, err)
	_, err = s.Create(ctx, storetest.Res("T", "new"))
	require.NoError(t, err)
	evs := collect(t, w2, 8)
	assert.Equal(t, "new", evs[len(evs)-1].Resource.Name)
}

// TestCutOffPastRetention: a store cut off from the database while the
// change log is pruned past what it read ends its watchers with
// ErrWatchLost when the database comes back, and then follows again.
func TestCutOffPastRetention(t *testing.T) {
	url := pgtest.NewDatabase(t)
	proxy := pgtest.NewProxy(t, url)
	a := open(t, url, pgstore.WithRetention(2, 0, 20*time.Millisecond))
	b := open(t, proxy.URL(url), pgstore.WithPollInterval(50*time.Millisecond))
	ctx := t.Context()
	w, err := b.Watch(ctx)
	require.NoError(t, err)
	_, err = a.Create(ctx, storetest.Res("T", "before"))
	require.NoError(t, err)
	collect(t, w, 1)

	proxy.Cut()
	for i := range 10 {
		_, err := a.Create(ctx, storetest.Res("T", fmt.Sprintf("r%d", i)))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		var n int
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			return false
		}
		defer c.Close(ctx)
		return c.QueryRow(ctx, "SELECT count(*) FROM kds_changes WHERE revision <= 5").Scan(&n) == nil && n == 0
	}, eventually, 20*time.Millisecond, "A prunes the log")
	proxy.Restore()
	select {
	case <-w.Done():
		require.ErrorIs(t, w.Err(), store.ErrWatchLost)
		assert.Contains(t, w.Err().Error(), "pruned")
	case <-time.After(eventually):
		t.Fatal("watch not ended")
	}
	require.Eventually(t, func() bool { return b.Revision() == 11 }, eventually, 10*time.Millisecond)
	items, rev, err := b.Snapshot(ctx, store.Filter{})
	require.NoError(t, err)
	assert.EqualValues(t, 11, rev)
	assert.Len(t, items, 11)
}

// TestUnavailable: with the database cut off, operations fail with
// ErrUnavailable naming the server, Health says so, and everything works
// again once it is back; nothing acknowledged is lost.
func TestUnavailable(t *testing.T) {
	url := pgtest.NewDatabase(t)
	proxy := pgtest.NewProxy(t, url)
	s := open(t, proxy.URL(url))
	ctx := t.Context()
	acked, err := s.Create(ctx, storetest.Res("T", "acked"))
	require.NoError(t, err)
	require.NoError(t, s.Health(ctx))

	proxy.Cut()
	_, err = s.Create(ctx, storetest.Res("T", "during"))
	require.ErrorIs(t, err, store.ErrUnavailable)
	assert.Contains(t, err.Error(), "127.0.0.1:")
	assert.Contains(t, err.Error(), "database kds_test_")
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{{Type: "T", Name: "x", Version: "1"}}})
	require.ErrorIs(t, err, store.ErrUnavailable)
	_, err = s.List(ctx, store.Filter{})
	require.ErrorIs(t, err, store.ErrUnavailable)
	_, err = s.ClaimSession(ctx, "z1")
	require.ErrorIs(t, err, store.ErrUnavailable)
	err = s.Health(ctx)
	require.ErrorIs(t, err, store.ErrUnavailable)
	assert.Contains(t, err.Error(), "unavailable")
	// /readyz shows it after "store: ", as the guide documents.
	assert.Regexp(t, `^PostgreSQL at 127\.0\.0\.1:\d+ database kds_test_\w+ unavailable: `, err.Error())
	// One line, though the driver's connect errors list each attempt on a
	// line of its own: it goes into /readyz, log lines and table cells.
	assert.NotContains(t, err.Error(), "\n")
	_, err = s.Create(ctx, storetest.Res("T", "during-2"))
	require.ErrorIs(t, err, store.ErrUnavailable)
	assert.NotContains(t, err.Error(), "\n")

	proxy.Restore()
	require.Eventually(t, func() bool { return s.Health(ctx) == nil }, eventually, 50*time.Millisecond)
	got, err := s.Get(ctx, acked.Key())
	require.NoError(t, err)
	assert.Equal(t, acked.Version, got.Version)
	_, err = s.Create(ctx, storetest.Res("T", "after"))
	require.NoError(t, err)
}

// checkCounts asserts that kds_counts matches what kds_resources holds.
func checkCounts(t *testing.T, url string) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer c.Close(ctx)
	var wrong int
	require.NoError(t, c.QueryRow(ctx, `SELECT count(*) FROM
		(SELECT type, zone, count(*) AS n FROM kds_resources GROUP BY type, zone) r
		FULL JOIN (SELECT * FROM kds_counts WHERE n <> 0) c USING (type, zone)
		WHERE r.n IS DISTINCT FROM c.n`).Scan(&wrong))
	assert.Zero(t, wrong, "kds_counts rows that disagree with kds_resources")
}

// TestCountsFollowEveryWrite: creates, deletes and applies (puts, deletes,
// no-ops) through two replicas keep kds_counts exact.
func TestCountsFollowEveryWrite(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a, b := open(t, url), open(t, url)
	ctx := t.Context()
	g, gctx := errgroup.WithContext(ctx)
	for i, s := range []*pgstore.Store{a, b} {
		g.Go(func() error {
			for j := range 40 {
				r := storetest.Res("T", fmt.Sprintf("w%d-%d", i, j%9))
				if _, err := s.Create(gctx, r); err != nil && !errors.Is(err, store.ErrAlreadyExists) {
					return err
				}
				if j%3 == 0 {
					if err := s.Delete(gctx, r.Key(), ""); err != nil && !errors.Is(err, store.ErrNotFound) {
						return err
					}
				}
				var batch store.Batch
				for k := range 3 {
					p := storetest.Res("S", fmt.Sprintf("p%d", (j+k)%7))
					p.Zone, p.Version = fmt.Sprintf("z%d", i), fmt.Sprintf("%d", j/2)
					batch.Put = append(batch.Put, p)
				}
				batch.Delete = []resource.Key{{Type: "S", Mesh: "default", Zone: fmt.Sprintf("z%d", i), Name: fmt.Sprintf("p%d", (j+5)%7)}}
				batch.Limit = 100
				if _, err := s.Apply(gctx, batch); err != nil {
					return err
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	checkCounts(t, url)
}

// TestFailedWritesKeepTheEpoch: writes that fail (alone, or inside a group
// commit) give their version counters back without making the store
// believe the database went back: the epoch stays, versions stay unique.
func TestFailedWritesKeepTheEpoch(t *testing.T) {
	url := pgtest.NewDatabase(t)
	s := open(t, url)
	ctx := t.Context()
	first, err := s.Create(ctx, storetest.Res("T", "x"))
	require.NoError(t, err)
	epoch := strings.SplitN(first.Version, "-", 2)[0]
	_, err = s.Create(ctx, storetest.Res("T", "x"))
	require.ErrorIs(t, err, store.ErrAlreadyExists)
	var (
		mu       sync.Mutex
		versions = map[string]bool{first.Version: true}
	)
	g, gctx := errgroup.WithContext(ctx)
	for i := range 8 {
		g.Go(func() error {
			for j := range 10 {
				r, err := s.Create(gctx, storetest.Res("T", fmt.Sprintf("k%d", (i+j)%12)))
				if errors.Is(err, store.ErrAlreadyExists) {
					continue
				}
				if err != nil {
					return err
				}
				mu.Lock()
				dup := versions[r.Version]
				versions[r.Version] = true
				mu.Unlock()
				if dup {
					return fmt.Errorf("version %s twice", r.Version)
				}
				if got := strings.SplitN(r.Version, "-", 2)[0]; got != epoch {
					return fmt.Errorf("epoch changed from %s to %s", epoch, got)
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	assert.Len(t, versions, 13)
}
