package mux_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/testsupport/bench"
)

// TestDeadlock reproduces the flow-control deadlock over real gRPC on
// loopback with static 64 KiB HTTP/2 windows: both ends send a burst of k
// requests of s bytes, each answered by a response of s bytes, in both
// directions at once. The naive peer ("receive, hand the reply to a size-1
// send buffer, then receive again") stalls; the engine session completes
// every cell, because its receive path never waits for its send path.
func TestDeadlock(t *testing.T) {
	const kib = 1 << 10
	t.Run("naive stalls", func(t *testing.T) {
		for _, c := range []struct{ s, k int }{{64 * kib, 100}, {256 * kib, 1000}} {
			t.Run(fmt.Sprintf("S=%dKiB/K=%d", c.s/kib, c.k), func(t *testing.T) {
				t.Parallel()
				res, err := bench.Burst(context.Background(), bench.Naive, c.s, c.k, 3*time.Second)
				require.NoError(t, err)
				assert.False(t, res.Completed, "the naive pattern was expected to deadlock")
				assert.Less(t, res.Progress, res.Target)
				t.Logf("naive stalled after %d of %d events", res.Progress, res.Target)
			})
		}
	})
	t.Run("engine completes", func(t *testing.T) {
		for _, s := range []int{16 * kib, 64 * kib, 256 * kib} {
			for _, k := range []int{10, 100, 1000} {
				t.Run(fmt.Sprintf("S=%dKiB/K=%d", s/kib, k), func(t *testing.T) {
					// The cells are latency-bound (flow-control round
					// trips), so running them side by side uses both
					// cores; it matters under -race.
					t.Parallel()
					// A generous stall limit: the machine may be busy; a
					// real deadlock never moves again.
					res, err := bench.Burst(context.Background(), bench.Engine, s, k, 15*time.Second)
					require.NoError(t, err)
					require.True(t, res.Completed, "engine stalled after %d of %d events", res.Progress, res.Target)
					t.Logf("engine: %d events in %s", res.Target, res.Elapsed.Round(time.Millisecond))
				})
			}
		}
	})
}
