package pgstore_test

import (
	"context"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/pgstore"
	"github.com/kds-engine/kds-engine/engine/internal/store/storetest"
	"github.com/kds-engine/kds-engine/internal/testsupport/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// open opens a store on url, closed when the test ends.
func open(t *testing.T, url string, opts ...pgstore.Option) *pgstore.Store {
	t.Helper()
	opts = append([]pgstore.Option{pgstore.WithLogger(hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: hclog.DefaultOutput}))}, opts...)
	s, err := pgstore.Open(context.Background(), url, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, pgtest.NewDatabase(t))
	})
}

func TestFaultConformance(t *testing.T) {
	storetest.RunFault(t, func(t *testing.T) store.Store {
		return open(t, pgtest.NewDatabase(t))
	})
}
