package pgstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/pgstore"
	"github.com/kds-engine/kds-engine/engine/internal/store/storetest"
	"github.com/kds-engine/kds-engine/internal/testsupport/pgtest"
)

// losses records what OnLeaseLost reports.
type losses struct {
	mu  sync.Mutex
	got []pgstore.LeaseLoss
}

func (l *losses) add(x pgstore.LeaseLoss) { l.mu.Lock(); l.got = append(l.got, x); l.mu.Unlock() }

func (l *losses) list() []pgstore.LeaseLoss {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]pgstore.LeaseLoss(nil), l.got...)
}

func lease(t *testing.T, s *pgstore.Store, zone string) pgstore.Lease {
	t.Helper()
	ls, err := s.Leases(context.Background())
	require.NoError(t, err)
	for _, l := range ls {
		if l.Zone == zone {
			return l
		}
	}
	return pgstore.Lease{}
}

func zoneRes(zone, name, version string) *resource.Resource {
	r := storetest.Res("T", name)
	r.Zone, r.Version = zone, version
	return r
}

// TestLeaseTakenOverByAnotherReplica: a claim of the zone on replica B
// tells replica A at once, by notification (A renews its leases only every
// hour, so no heartbeat can explain it), without A writing anything; A's
// later write is fenced; both replicas see the lease live on B.
func TestLeaseTakenOverByAnotherReplica(t *testing.T) {
	url := pgtest.NewDatabase(t)
	slow := pgstore.WithLeaseTimings(time.Hour, 2*time.Hour)
	a := open(t, url, slow, pgstore.WithReplica("replica-a"))
	b := open(t, url, slow, pgstore.WithReplica("replica-b"))
	var lost losses
	a.OnLeaseLost(lost.add)
	ctx := t.Context()

	ga, err := a.ClaimLease(ctx, "z", "10.0.0.1:4000")
	require.NoError(t, err)
	_, err = a.Apply(ctx, store.Batch{Put: []*resource.Resource{zoneRes("z", "r", "a-1")}, Fence: &store.Fence{Zone: "z", Generation: ga}})
	require.NoError(t, err)
	la := lease(t, b, "z")
	assert.True(t, la.Live)
	assert.Equal(t, "replica-a", la.Replica)
	assert.Equal(t, "10.0.0.1:4000", la.Peer)
	assert.Equal(t, ga, la.Generation)

	gb, err := b.ClaimLease(ctx, "z", "10.0.0.2:4000")
	require.NoError(t, err)
	require.Greater(t, gb, ga)
	require.Eventually(t, func() bool { return len(lost.list()) == 1 }, eventually, 10*time.Millisecond, "A learns its lease is gone")
	assert.Equal(t, pgstore.LeaseLoss{Zone: "z", Generation: ga, By: gb, Replica: "replica-b"}, lost.list()[0])
	assert.True(t, lost.list()[0].Replaced())

	_, err = a.Apply(ctx, store.Batch{Put: []*resource.Resource{zoneRes("z", "r", "a-2")}, Fence: &store.Fence{Zone: "z", Generation: ga}})
	require.ErrorIs(t, err, store.ErrFenced, "the replaced session's write is fenced in its commit")
	for _, s := range []*pgstore.Store{a, b} {
		l := lease(t, s, "z")
		assert.True(t, l.Live)
		assert.Equal(t, "replica-b", l.Replica)
		assert.Equal(t, "10.0.0.2:4000", l.Peer)
	}
	// B's own claim is not a loss for B.
	var bl losses
	b.OnLeaseLost(bl.add)
	_, err = b.Apply(ctx, store.Batch{Put: []*resource.Resource{zoneRes("z", "r", "b-1")}, Fence: &store.Fence{Zone: "z", Generation: gb}})
	require.NoError(t, err)
	assert.Empty(t, bl.list())
}

// TestLeaseLostAtHeartbeat: a claim that sent no notification (made
// behind the Store's back) is found at the next heartbeat.
func TestLeaseLostAtHeartbeat(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a := open(t, url, pgstore.WithLeaseTimings(20*time.Millisecond, time.Minute), pgstore.WithReplica("replica-a"))
	var lost losses
	a.OnLeaseLost(lost.add)
	ga, err := a.ClaimLease(t.Context(), "z", "")
	require.NoError(t, err)
	before := lease(t, a, "z").HeartbeatAt
	require.Eventually(t, func() bool { return lease(t, a, "z").HeartbeatAt.After(before) }, eventually, 10*time.Millisecond, "heartbeats renew the lease")
	assert.Empty(t, lost.list())

	exec(t, url, "UPDATE kds_sessions SET generation = generation + 1, replica = 'elsewhere' WHERE zone = 'z'")
	require.Eventually(t, func() bool { return len(lost.list()) == 1 }, eventually, 10*time.Millisecond, "the heartbeat finds the row taken")
	assert.Equal(t, pgstore.LeaseLoss{Zone: "z", Generation: ga, By: ga + 1, Replica: "elsewhere"}, lost.list()[0])
}

// TestLeaseExpiresWhenItsReplicaDies: a replica closed without ending its
// leases (as a killed process leaves them) has its zone shown offline by
// the other replica once the expiry has passed, and the leader marks the
// lease ended. A lease ended cleanly is offline at once, and the next
// claim takes the next generation.
func TestLeaseExpiresWhenItsReplicaDies(t *testing.T) {
	url := pgtest.NewDatabase(t)
	timing := pgstore.WithLeaseTimings(50*time.Millisecond, 300*time.Millisecond)
	b := open(t, url, timing, pgstore.WithReplica("replica-b"))
	a, err := pgstore.Open(context.Background(), url, timing, pgstore.WithReplica("replica-a"))
	require.NoError(t, err)
	ctx := t.Context()
	ga, err := a.ClaimLease(ctx, "z", "")
	require.NoError(t, err)
	require.True(t, lease(t, b, "z").Live)
	require.NoError(t, a.Close())

	require.Eventually(t, func() bool { return !lease(t, b, "z").Live }, eventually, 10*time.Millisecond, "the dead replica's lease expires")
	require.Eventually(t, func() bool { return !lease(t, b, "z").EndedAt.IsZero() }, eventually, 10*time.Millisecond, "the leader marks it ended")
	l := lease(t, b, "z")
	assert.Equal(t, "replica-a", l.Replica, "the last holder is kept")
	assert.Equal(t, ga, l.Generation)

	gb, err := b.ClaimLease(ctx, "z", "")
	require.NoError(t, err)
	assert.Equal(t, ga+1, gb)
	require.True(t, lease(t, b, "z").Live)
	require.NoError(t, b.EndLease(ctx, "z", gb))
	l = lease(t, b, "z")
	assert.False(t, l.Live, "ended cleanly: offline at once")
	assert.Equal(t, gb, l.Generation, "the row stays")
	g3, err := b.ClaimLease(ctx, "z", "")
	require.NoError(t, err)
	assert.Equal(t, gb+1, g3)
}

// TestLeadership: of two replicas the first opened leads; when it closes
// (its leader connection goes with it) the other takes over.
func TestLeadership(t *testing.T) {
	url := pgtest.NewDatabase(t)
	timing := pgstore.WithLeaseTimings(50*time.Millisecond, time.Second)
	var mu sync.Mutex
	var changes []bool
	a, err := pgstore.Open(context.Background(), url, timing)
	require.NoError(t, err)
	b := open(t, url, timing, pgstore.WithLeaderHook(func(v bool) { mu.Lock(); changes = append(changes, v); mu.Unlock() }))
	require.Eventually(t, a.IsLeader, eventually, 10*time.Millisecond)
	assert.False(t, b.IsLeader())
	require.NoError(t, a.Close())
	require.Eventually(t, b.IsLeader, eventually, 10*time.Millisecond, "B takes over")
	mu.Lock()
	assert.Equal(t, []bool{true}, changes)
	mu.Unlock()
	assert.NotEqual(t, a.Replica(), b.Replica(), "replica ids differ by default")
}

// TestLeadershipLostWithItsConnection: the leader's connection killed
// ends its leadership, and a replica takes it again.
func TestLeadershipLostWithItsConnection(t *testing.T) {
	url := pgtest.NewDatabase(t)
	var mu sync.Mutex
	var changes []bool
	a := open(t, url, pgstore.WithLeaseTimings(50*time.Millisecond, time.Second),
		pgstore.WithLeaderHook(func(v bool) { mu.Lock(); changes = append(changes, v); mu.Unlock() }))
	require.Eventually(t, a.IsLeader, eventually, 10*time.Millisecond)
	exec(t, url, "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND granted", uint32(0x65616400))
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(changes) >= 3 }, eventually, 10*time.Millisecond,
		"leadership lost with the connection, then taken again")
	mu.Lock()
	assert.Equal(t, []bool{true, false, true}, changes[:3])
	mu.Unlock()
}

// TestNewLeaderGivesLeasesAnExpiryToRenew: after an outage of the whole
// database no lease was renewed, through no fault of its replica. The
// leader that takes over first (B, back before A) must not expire A's
// lease at once: A gets a lease expiry to renew it, and keeps it. Without
// the grace, B expires A's lease the moment it leads, while A is still cut
// off, and A loses its zone on its next heartbeat.
func TestNewLeaderGivesLeasesAnExpiryToRenew(t *testing.T) {
	url := pgtest.NewDatabase(t)
	const expiry = 2 * time.Second
	timing := pgstore.WithLeaseTimings(100*time.Millisecond, expiry)
	pb, pa := pgtest.NewProxy(t, url), pgtest.NewProxy(t, url)
	b := open(t, pb.URL(url), timing, pgstore.WithReplica("replica-b"))
	require.Eventually(t, b.IsLeader, eventually, 10*time.Millisecond)
	a := open(t, pa.URL(url), timing, pgstore.WithReplica("replica-a"))
	var lost losses
	a.OnLeaseLost(lost.add)
	ga, err := a.ClaimLease(t.Context(), "z", "")
	require.NoError(t, err)

	pa.Cut()
	pb.Cut()
	require.Eventually(t, func() bool { return !b.IsLeader() }, eventually, 10*time.Millisecond, "B loses leadership with the database")
	time.Sleep(expiry + expiry/2) // A's lease ages past its expiry
	pb.Restore()
	require.Eventually(t, b.IsLeader, eventually, 10*time.Millisecond, "B leads again")
	time.Sleep(expiry / 2) // A comes back well inside the grace, not at once
	pa.Restore()
	// Past the new leader's grace and several heartbeats after it.
	time.Sleep(expiry + expiry/2)
	assert.Empty(t, lost.list(), "A kept its lease")
	l := lease(t, b, "z")
	assert.True(t, l.Live, "the lease is live again")
	assert.Equal(t, "replica-a", l.Replica)
	assert.Equal(t, ga, l.Generation)
	assert.True(t, l.EndedAt.IsZero(), "never marked ended")
}
