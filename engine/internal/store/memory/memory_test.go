package memory_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
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

// An Owned batch's resources are stored as they are; any other batch's are
// copied, so that its caller may go on modifying them.
func TestApplyOwned(t *testing.T) {
	ctx := t.Context()
	s := memory.New()
	defer s.Close()
	w, err := s.Watch(ctx)
	require.NoError(t, err)
	owned, copied := storetest.Res("T", "owned"), storetest.Res("T", "copied")
	owned.Version, copied.Version = "1", "1"
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{owned}, Owned: true})
	require.NoError(t, err)
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{copied}})
	require.NoError(t, err)
	var evs []store.Event
	for len(evs) < 2 {
		<-w.C()
		evs = append(evs, w.Next()...)
	}
	assert.Same(t, owned, evs[0].Resource, "an owned put is kept, not copied")
	assert.NotSame(t, copied, evs[1].Resource, "a put its caller still owns is copied")
	copied.Spec[2] = 'X'
	got, err := s.Get(ctx, copied.Key())
	require.NoError(t, err)
	assert.JSONEq(t, `{"port":8080}`, string(got.Spec), "the caller's later change does not reach the store")
}
