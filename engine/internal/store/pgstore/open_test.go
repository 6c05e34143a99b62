package pgstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/pgstore"
	"github.com/kds-engine/kds-engine/internal/testsupport/pgtest"
)

func TestOpenUnreachableNamesServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for _, url := range []string{
		"postgres://kds:s3cret-pw@127.0.0.1:1/kdsdb?connect_timeout=2",
		"host=127.0.0.1 port=1 user=kds password=s3cret-pw dbname=kdsdb connect_timeout=2",
	} {
		_, err := pgstore.Open(ctx, url)
		require.Error(t, err)
		require.ErrorIs(t, err, store.ErrUnavailable)
		msg := err.Error()
		assert.Contains(t, msg, "127.0.0.1:1 database kdsdb")
		assert.Contains(t, msg, "--postgres-url")
		assert.NotContains(t, msg, "s3cret-pw")
	}
}

func TestOpenBadURL(t *testing.T) {
	_, err := pgstore.Open(t.Context(), "postgres://kds:s3cret-pw@127.0.0.1:5432/db?sslmode=bogus")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "s3cret-pw")
	assert.Contains(t, err.Error(), "bad PostgreSQL URL")
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://kds:s3cret@db.example:5432/kds?sslmode=require": "postgres://kds:xxxxx@db.example:5432/kds?sslmode=require",
		"postgresql://kds@db/kds":                                   "postgresql://kds@db/kds",
		"postgres://db/kds?user=kds&password=s3cret":                "postgres://db/kds?password=xxxxx&user=kds",
		"postgres://kds:p%40ss@db/kds":                              "postgres://kds:xxxxx@db/kds",
		"host=db user=kds password=s3cret dbname=kds":               "host=db user=kds password=xxxxx dbname=kds",
		"host=db password = 's3 cr\\'et' dbname=kds":                "host=db password = xxxxx dbname=kds",
		"host=db PASSWORD=s3cret":                                   "host=db PASSWORD=xxxxx",
		"host=db dbname=kds":                                        "host=db dbname=kds",
		"postgres://kds:s3cret@[::1:5432/kds":                       "postgres://xxxxx@[::1:5432/kds",
	} {
		got := pgstore.RedactURL(in)
		assert.Equal(t, want, got, in)
		assert.NotContains(t, got, "s3cret")
	}
}

// TestMigrationsOnce: replicas opening a new database together apply the
// schema once, and reopening changes nothing.
func TestMigrationsOnce(t *testing.T) {
	url := pgtest.NewDatabase(t)
	var g errgroup.Group
	stores := make([]*pgstore.Store, 4)
	for i := range stores {
		g.Go(func() error {
			s, err := pgstore.Open(t.Context(), url)
			stores[i] = s
			return err
		})
	}
	require.NoError(t, g.Wait())
	for _, s := range stores {
		require.NoError(t, s.Close())
	}
	s := open(t, url)
	_, err := s.Create(t.Context(), &resource.Resource{Type: "T", Name: "x"})
	require.NoError(t, err)

	c, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	defer c.Close(context.Background())
	var rows, version int
	require.NoError(t, c.QueryRow(t.Context(), "SELECT count(*), max(version) FROM kds_schema_migrations").Scan(&rows, &version))
	assert.Equal(t, pgstore.SchemaVersion(), rows, "one row per migration")
	assert.Equal(t, pgstore.SchemaVersion(), version)

	// A schema newer than this build is refused.
	_, err = c.Exec(t.Context(), "INSERT INTO kds_schema_migrations (version, name) VALUES ($1, 'future.sql')", pgstore.SchemaVersion()+1)
	require.NoError(t, err)
	_, err = pgstore.Open(t.Context(), url)
	require.Error(t, err)
	assert.Contains(t, err.Error(), fmt.Sprintf("schema version %d is newer", pgstore.SchemaVersion()+1))
}
