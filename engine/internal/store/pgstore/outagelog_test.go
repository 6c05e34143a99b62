package pgstore_test

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/store/pgstore"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
	"github.com/kds-engine/kds-engine/internal/testsupport/pgtest"
)

// TestListenOutageLoggedOnce: while the database is away, the LISTEN
// connection's failed reconnects (every 100 ms doubling to 5 s) are not
// each a warning: the loss is logged once, and its return once.
func TestListenOutageLoggedOnce(t *testing.T) {
	url := pgtest.NewDatabase(t)
	proxy := pgtest.NewProxy(t, url)
	logs := &logbuf.Buffer{}
	s := open(t, proxy.URL(url), pgstore.WithLogger(hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: logs})))
	require.Eventually(t, func() bool { return s.ListenPID() != 0 }, eventually, 10*time.Millisecond)

	proxy.Cut()
	require.Eventually(t, func() bool { return len(logs.Lines("LISTEN")) > 0 }, eventually, 10*time.Millisecond, "the loss is logged")
	// 100+200+400+800+1600 ms: at least five failed reconnects more.
	time.Sleep(3500 * time.Millisecond)
	assert.Len(t, logs.Lines("LISTEN"), 1, "one line for the whole outage:\n%s", strings.Join(logs.Lines("LISTEN"), "\n"))

	proxy.Restore()
	require.Eventually(t, func() bool { return s.ListenPID() != 0 }, eventually, 10*time.Millisecond)
	require.Eventually(t, func() bool { return len(logs.Lines("LISTEN")) == 2 }, eventually, 10*time.Millisecond)
	back := logs.Lines("LISTEN")[1]
	assert.Contains(t, back, "[INFO]")
	assert.Contains(t, back, "LISTEN connection open again")
}

// TestDuplicateReplicaIDWarned: two running replicas given the same
// --replica-id (a copied config) write leases under one name, so zone
// status cannot tell which holds a zone. A replica that sees a live lease
// under its id that it did not claim warns, naming the zone and the id;
// its own claims and another id's leases warn nothing.
func TestDuplicateReplicaIDWarned(t *testing.T) {
	url := pgtest.NewDatabase(t)
	logs := &logbuf.Buffer{}
	timings := pgstore.WithLeaseTimings(100*time.Millisecond, time.Second)
	a := open(t, url, pgstore.WithReplica("g1"), timings, pgstore.WithLogger(hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: logs})))
	b := open(t, url, pgstore.WithReplica("g1"), timings)
	c := open(t, url, pgstore.WithReplica("g2"), timings)
	ctx := t.Context()
	_, err := a.ClaimLease(ctx, "zone-a", "10.0.0.1:1")
	require.NoError(t, err)
	_, err = c.ClaimLease(ctx, "zone-c", "10.0.0.3:1")
	require.NoError(t, err)
	_, err = b.ClaimLease(ctx, "zone-b", "10.0.0.2:1")
	require.NoError(t, err)

	require.Eventually(t, func() bool { return len(logs.Lines("another running replica")) > 0 }, eventually, 20*time.Millisecond)
	time.Sleep(500 * time.Millisecond) // more heartbeats: still one warning
	warned := logs.Lines("another running replica")
	require.Len(t, warned, 1, "%s", strings.Join(warned, "\n"))
	assert.Contains(t, warned[0], "[WARN]")
	assert.Contains(t, warned[0], "zone=zone-b")
	assert.Contains(t, warned[0], "replica=g1")
	assert.Contains(t, warned[0], "--replica-id")
	assert.Empty(t, logs.Lines("zone=zone-a"), "its own claim")
	assert.Empty(t, logs.Lines("zone=zone-c"), "another id's lease")
}

// TestShorterLeaderExpiryWarned: replicas of one database must share the
// lease timings. When the leader expires a lease that its replica renewed
// within its own --lease-expiry (the leader's expiry is shorter than this
// replica's heartbeat), that replica's log says the timings differ, rather
// than leaving the operator with "not renewed in time".
func TestShorterLeaderExpiryWarned(t *testing.T) {
	url := pgtest.NewDatabase(t)
	leader := open(t, url, pgstore.WithReplica("g1"), pgstore.WithLeaseTimings(50*time.Millisecond, 200*time.Millisecond))
	require.Eventually(t, leader.IsLeader, eventually, 10*time.Millisecond)
	logs := &logbuf.Buffer{}
	slow := open(t, url, pgstore.WithReplica("g2"), pgstore.WithLeaseTimings(500*time.Millisecond, 5*time.Second),
		pgstore.WithLogger(hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: logs})))
	var lost losses
	slow.OnLeaseLost(lost.add)
	_, err := slow.ClaimLease(t.Context(), "zone-1", "10.0.0.1:1")
	require.NoError(t, err)

	require.Eventually(t, func() bool { return len(lost.list()) == 1 }, eventually, 20*time.Millisecond, "the leader expires the lease")
	require.Eventually(t, func() bool { return len(logs.Lines("lease timings differ")) == 1 }, eventually, 20*time.Millisecond)
	line := logs.Lines("lease timings differ")[0]
	assert.Contains(t, line, "[WARN]")
	assert.Contains(t, line, "--lease-expiry")
	assert.Contains(t, line, "zone=zone-1")
}
