package memory_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/memory"
	"github.com/kds-engine/kds-engine/engine/internal/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T) store.Store { return memory.New() })
}

func TestFaultConformance(t *testing.T) {
	storetest.RunFault(t, func(*testing.T) store.Store { return memory.New() })
}

func TestClockOption(t *testing.T) {
	t0 := time.Date(2026, 2, 3, 4, 5, 6, 7, time.UTC)
	s := memory.New(memory.WithClock(func() time.Time { return t0 }))
	defer s.Close()
	c, err := s.Create(t.Context(), storetest.Res("T", "x"))
	require.NoError(t, err)
	assert.True(t, c.CreationTime.Equal(t0))
	assert.True(t, c.ModificationTime.Equal(t0))
}
