package kdsbench

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/internal/testsupport/pgtest"
)

// A small ha run: every part measures, the figures are reported (no
// timing is asserted), and the databases the run created are dropped.
func TestHASmoke(t *testing.T) {
	pgtest.NewDatabase(t) // skips (or fails with CI=true) without a server
	server := pgtest.ServerURL()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	before := benchDatabases(t, server)
	r, err := HA(ctx, Options{PluginsDir: pluginsDir}, HAConfig{
		PostgresURL: server, N: 300, Updates: 20, SyncN: 500, Repeat: 1, Writes: 60, Writers: 4,
	})
	require.NoError(t, err)
	for _, f := range []string{
		"latency_bolt_p99_ms", "latency_same_replica_p99_ms", "latency_cross_replica_p99_ms",
		"sync_bolt_rps", "sync_pg_rps", "sync_ratio", "sync_pg_bulk_load_seconds",
		"writes_bolt_per_second", "writes_pg_1_per_second", "writes_pg_3_per_second", "writes_pg_3_vs_1",
	} {
		assert.Positive(t, r.Figures[f], f)
	}
	assert.Equal(t, before, benchDatabases(t, server), "the run dropped the databases it created")

	_, err = HA(ctx, Options{PluginsDir: pluginsDir}, HAConfig{PostgresURL: server, Parts: []string{"bogus"}})
	require.EqualError(t, err, `part "bogus": want latency, sync or writes`)
}

// benchDatabases counts the databases named like the ha mode's.
func benchDatabases(t *testing.T, server string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, server)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var n int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname LIKE 'kds\_bench\_%'`).Scan(&n))
	return n
}
