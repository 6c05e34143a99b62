package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// RunFault runs the part of the contract that guards against faults of the
// deployment rather than of a caller: versions that never repeat, also
// across a restart that loses the store, and session fencing. Each store
// package runs it from a test named TestFault… (next to Run), so that
// `go test -run TestFault` reaches it:
//
//	func TestFaultConformance(t *testing.T) {
//		storetest.RunFault(t, func(t *testing.T) store.Store { return memory.New() })
//	}
//
// newStore has Run's contract: a fresh, empty store per call.
func RunFault(t *testing.T, newStore func(t *testing.T) store.Store) {
	open := func(t *testing.T) store.Store {
		s := newStore(t)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	t.Run("VersionsDifferAfterStoreLoss", func(t *testing.T) { testVersionsAfterStoreLoss(t, open) })
	tests := []namedTest{
		{"VersionsNeverRepeat", testVersionsNeverRepeat},
		{"FencedApply", testFencedApply},
		{"FencedApplyChangesNothing", testFencedApplyChangesNothing},
		{"FenceInvalid", testFenceInvalid},
		{"ClaimSessionConcurrent", testClaimSessionConcurrent},
		{"ClaimSessionInvalid", testClaimSessionInvalid},
	}
	runEach(t, open, tests)
}

// testVersionsAfterStoreLoss: a store that starts over (a memory store in a
// new process, a bolt store on a new data dir) must not hand out the
// versions its predecessor handed out, even for the same key and the same
// sequence of writes: a peer still holds them and would take the new
// content for the old.
func testVersionsAfterStoreLoss(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := ctxT(t)
	write := func(s store.Store, content string) []string {
		r := Res("Dataplane", "dp-1")
		r.Spec = rawSpec(fmt.Sprintf(`{"content":%q}`, content))
		c, err := s.Create(ctx, r)
		require.NoError(t, err)
		u, err := s.Update(ctx, c)
		require.NoError(t, err)
		return []string{c.Version, u.Version}
	}
	first := open(t)
	before := write(first, "old")
	require.NoError(t, first.Close())

	second := open(t)
	after := write(second, "new")
	for _, v := range after {
		assert.NotContains(t, before, v, "a store that started over handed out a version of its predecessor")
	}
}

func testVersionsNeverRepeat(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	seen := map[string]bool{}
	for i := range 30 {
		r := Res("Dataplane", "dp-1")
		r.Spec = rawSpec(fmt.Sprintf(`{"i":%d}`, i))
		c, err := s.Create(ctx, r)
		require.NoError(t, err)
		newVersion(t, seen, c.Version)
		c.Spec = rawSpec(fmt.Sprintf(`{"i":%d,"updated":true}`, i))
		u, err := s.Update(ctx, c)
		require.NoError(t, err)
		newVersion(t, seen, u.Version)
		require.NoError(t, s.Delete(ctx, u.Key(), u.Version))
	}
}

// fencedPut is a put of zone's resource name with the given version.
func fencedPut(zone, name, version string) *resource.Resource {
	r := Res("Dataplane", name)
	r.Zone, r.Version = zone, version
	return r
}

func testFencedApply(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	g1, err := s.ClaimSession(ctx, "z1")
	require.NoError(t, err)
	assert.NotZero(t, g1)
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{fencedPut("z1", "a", "1")}, Fence: &store.Fence{Zone: "z1", Generation: g1}})
	require.NoError(t, err, "the current session writes")

	g2, err := s.ClaimSession(ctx, "z1")
	require.NoError(t, err)
	require.Greater(t, g2, g1)

	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{fencedPut("z1", "b", "1")}, Fence: &store.Fence{Zone: "z1", Generation: g1}})
	require.ErrorIs(t, err, store.ErrFenced)
	assert.Contains(t, err.Error(), fmt.Sprintf("zone z1: session generation %d was replaced by %d", g1, g2))
	_, err = s.Apply(ctx, store.Batch{Fence: &store.Fence{Zone: "z1", Generation: g1}})
	require.ErrorIs(t, err, store.ErrFenced, "an empty batch of a replaced session is refused too")
	_, err = s.Apply(ctx, store.Batch{Delete: []resource.Key{fencedPut("z1", "a", "").Key()}, Fence: &store.Fence{Zone: "z1", Generation: g1}})
	require.ErrorIs(t, err, store.ErrFenced, "deletes are fenced")
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{fencedPut("z1", "b", "1")}, Fence: &store.Fence{Zone: "z1", Generation: g2 + 1}})
	require.ErrorIs(t, err, store.ErrFenced, "a generation not claimed yet")
	assert.Contains(t, err.Error(), "never claimed")

	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{fencedPut("z1", "b", "1")}, Fence: &store.Fence{Zone: "z1", Generation: g2}})
	require.NoError(t, err, "the new session writes")

	// Zones are fenced independently; unfenced batches are not fenced.
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{fencedPut("z2", "a", "1")}, Fence: &store.Fence{Zone: "z2", Generation: 1}})
	require.ErrorIs(t, err, store.ErrFenced, "z2 has no session yet")
	h1, err := s.ClaimSession(ctx, "z2")
	require.NoError(t, err)
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{fencedPut("z2", "a", "1")}, Fence: &store.Fence{Zone: "z2", Generation: h1}})
	require.NoError(t, err, "claiming z1 twice does not fence z2")
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{fencedPut("z1", "c", "1")}})
	require.NoError(t, err)

	got, err := s.List(ctx, store.Filter{Type: "Dataplane"})
	require.NoError(t, err)
	assert.Equal(t, []string{"Dataplane z1/default/a", "Dataplane z1/default/b", "Dataplane z1/default/c", "Dataplane z2/default/a"}, keyStrings(got))
}

// testFencedApplyChangesNothing: a fenced-out batch with puts (new and
// replacing), deletes and a limit leaves the store, the revision and the
// watchers untouched.
func testFencedApplyChangesNothing(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	g1, err := s.ClaimSession(ctx, "z1")
	require.NoError(t, err)
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{fencedPut("z1", "a", "1"), fencedPut("z1", "b", "1")}, Fence: &store.Fence{Zone: "z1", Generation: g1}})
	require.NoError(t, err)
	_, err = s.ClaimSession(ctx, "z1")
	require.NoError(t, err)
	before, rev, err := s.Snapshot(ctx, store.Filter{})
	require.NoError(t, err)
	w, err := s.Watch(ctx)
	require.NoError(t, err)

	_, err = s.Apply(ctx, store.Batch{
		Put:    []*resource.Resource{fencedPut("z1", "a", "2"), fencedPut("z1", "c", "1")},
		Delete: []resource.Key{fencedPut("z1", "b", "").Key()},
		Fence:  &store.Fence{Zone: "z1", Generation: g1},
		Limit:  10,
	})
	require.ErrorIs(t, err, store.ErrFenced)

	after, rev2, err := s.Snapshot(ctx, store.Filter{})
	require.NoError(t, err)
	assert.Equal(t, rev, rev2, "no revision consumed")
	assert.Equal(t, rev, s.Revision())
	require.Len(t, after, len(before))
	for i := range before {
		assertSame(t, before[i], after[i])
	}
	// A later commit is the next one the watcher sees: nothing was
	// published for the fenced batch.
	mustCreate(t, s, Res("T", "after"))
	evs := waitEvents(t, w, 1)
	require.Len(t, evs, 1, "no event for the fenced batch")
	assert.Equal(t, "after", evs[0].Resource.Name)
}

func testFenceInvalid(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	put := []*resource.Resource{fencedPut("z1", "a", "1")}
	for name, f := range map[string]*store.Fence{
		"no zone":      {Generation: 1},
		"generation 0": {Zone: "z1"},
		"NUL in zone":  {Zone: "z\x001", Generation: 1},
	} {
		_, err := s.Apply(ctx, store.Batch{Put: put, Fence: f})
		require.ErrorIs(t, err, store.ErrInvalid, name)
	}
	_, err := s.Apply(ctx, store.Batch{Fence: &store.Fence{Zone: "z1"}})
	require.ErrorIs(t, err, store.ErrInvalid, "checked in an empty batch too")
	all, err := s.List(ctx, store.Filter{})
	require.NoError(t, err)
	assert.Empty(t, all)
}

// testClaimSessionConcurrent: claims racing for one zone each get their own
// generation, each claimer sees its generations grow, every later claim is
// greater than all of them, and only the last one writes.
func testClaimSessionConcurrent(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	const claimers, claims = 6, 8
	var mu sync.Mutex
	var all []uint64
	g, gctx := errgroup.WithContext(ctx)
	for c := range claimers {
		g.Go(func() error {
			var last uint64
			for range claims {
				zone := "z1"
				if c == 0 {
					zone = "other" // interleaved claims of another zone
				}
				gen, err := s.ClaimSession(gctx, zone)
				if err != nil {
					return err
				}
				if gen <= last {
					return fmt.Errorf("claimer %d got generation %d after %d", c, gen, last)
				}
				last = gen
				if zone == "z1" {
					mu.Lock()
					all = append(all, gen)
					mu.Unlock()
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	slices.Sort(all)
	require.Len(t, slices.Compact(slices.Clone(all)), len(all), "generations handed out twice: %v", all)
	latest, err := s.ClaimSession(ctx, "z1")
	require.NoError(t, err)
	require.Greater(t, latest, all[len(all)-1])
	for _, gen := range []uint64{all[0], all[len(all)-1]} {
		_, err := s.Apply(ctx, store.Batch{Put: []*resource.Resource{fencedPut("z1", "x", strconv.FormatUint(gen, 10))}, Fence: &store.Fence{Zone: "z1", Generation: gen}})
		require.ErrorIs(t, err, store.ErrFenced, "generation %d", gen)
	}
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{fencedPut("z1", "x", "1")}, Fence: &store.Fence{Zone: "z1", Generation: latest}})
	require.NoError(t, err)
}

func testClaimSessionInvalid(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	_, err := s.ClaimSession(ctx, "")
	require.ErrorIs(t, err, store.ErrInvalid)
	_, err = s.ClaimSession(ctx, "a\x00b")
	require.ErrorIs(t, err, store.ErrInvalid)
	require.NoError(t, s.Close())
	_, err = s.ClaimSession(ctx, "z1")
	require.ErrorIs(t, err, store.ErrClosed)
	require.False(t, errors.Is(err, store.ErrInvalid))
}

func keyStrings(list []*resource.Resource) []string {
	out := make([]string, len(list))
	for i, r := range list {
		out[i] = r.Key().String()
	}
	return out
}

func rawSpec(s string) json.RawMessage { return json.RawMessage(s) }
