package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// BenchmarkTransport compares raw gRPC bidi streaming with the engine
// session carrying the same payloads, both directions at once, in one run.
// The ratio metric is engine throughput over raw throughput.
func BenchmarkTransport(b *testing.B) {
	for _, c := range []struct{ size, n int }{{1 << 10, 20480}, {64 << 10, 2048}} {
		b.Run(fmt.Sprintf("%dKiB", c.size>>10), func(b *testing.B) {
			res, err := Compare(context.Background(), c.size, c.n, b.N)
			require.NoError(b, err)
			b.ReportMetric(res.RawMBps(), "raw-MB/s")
			b.ReportMetric(res.EngineMBps(), "engine-MB/s")
			b.ReportMetric(res.Ratio(), "engine/raw")
		})
	}
}

// The workloads themselves work and leave nothing behind.
func TestCompareSmoke(t *testing.T) {
	res, err := Compare(context.Background(), 1<<10, 256, 1)
	require.NoError(t, err)
	assert.Positive(t, res.Raw)
	assert.Positive(t, res.Engine)
	assert.Positive(t, res.Ratio())
}

func TestBurstSmoke(t *testing.T) {
	res, err := Burst(context.Background(), Engine, 1<<10, 10, 10*time.Second)
	require.NoError(t, err)
	assert.True(t, res.Completed)
	assert.Equal(t, res.Target, res.Progress)
}
