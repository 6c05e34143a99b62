package pgstore

import (
	"context"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/internal/testsupport/pgtest"
)

// TestMigrationToLeasesKeepsData: a database at schema version 1 with
// resources and session generations is migrated to version 2 by Open; the
// data stays, the old rows are ended leases, and the next claim takes the
// next generation.
func TestMigrationToLeasesKeepsData(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	require.NoError(t, migrateTo(ctx, pool, hclog.NewNullLogger(), 1))
	_, err = pool.Exec(ctx, `INSERT INTO kds_resources (type, zone, mesh, name, version, revision) VALUES ('T', '', '', 'kept', 'v-1', 1);
		UPDATE kds_counter SET revision = 1, version = 1;
		INSERT INTO kds_sessions (zone, generation) VALUES ('z', 7)`)
	require.NoError(t, err)
	pool.Close()

	s, err := Open(ctx, url)
	require.NoError(t, err)
	defer s.Close()
	var v int
	require.NoError(t, s.pool.QueryRow(ctx, "SELECT max(version) FROM kds_schema_migrations").Scan(&v))
	assert.Equal(t, 2, v)
	rs, err := s.List(ctx, store.Filter{})
	require.NoError(t, err)
	require.Len(t, rs, 1)
	assert.Equal(t, "v-1", rs[0].Version)
	ls, err := s.Leases(ctx)
	require.NoError(t, err)
	require.Len(t, ls, 1)
	assert.Equal(t, Lease{Zone: "z", Generation: 7}, ls[0], "a row from before leases is no live lease")
	g, err := s.ClaimLease(ctx, "z", "")
	require.NoError(t, err)
	assert.EqualValues(t, 8, g)
}
