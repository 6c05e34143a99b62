package kdsbench

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseStat(t *testing.T) {
	// A command name with spaces and parentheses must not shift the fields.
	line := "4242 (kds plugin (x)) S 17 4242 17 0 -1 4194560 500 0 0 0 123 45 0 0 20 0 9 0 100 0 0\n"
	pid, ppid, cpu, err := parseStat([]byte(line))
	require.NoError(t, err)
	assert.Equal(t, 4242, pid)
	assert.Equal(t, 17, ppid)
	assert.Equal(t, 168*clockTick, cpu)

	for _, bad := range []string{"", "12 (x S 1", "12 (x) S 1 2 3", "x (y) S 1 2 3 4 5 6 7 8 9 10 11 12 13", "12 (y) S 1 2 3 4 5 6 7 8 9 10 u 12 13"} {
		_, _, _, err := parseStat([]byte(bad))
		assert.Error(t, err, "%q", bad)
	}
}

func TestChildCPUOnlyCountsChildren(t *testing.T) {
	proc := t.TempDir()
	write := func(pid, stat string) {
		require.NoError(t, os.MkdirAll(filepath.Join(proc, pid), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(proc, pid, "stat"), []byte(stat), 0o644))
	}
	write("10", "10 (bench) S 1 0 0 0 0 0 0 0 0 0 500 500 0 0")
	write("11", "11 (plugin) S 10 0 0 0 0 0 0 0 0 0 30 20 0 0")
	write("12", "12 (other) S 99 0 0 0 0 0 0 0 0 0 70 0 0 0")
	write("13", "13 (broken")
	got := childCPU(proc, 10)
	assert.Equal(t, map[int]time.Duration{11: 50 * clockTick}, got)
	assert.Nil(t, childCPU(filepath.Join(proc, "missing"), 10))

	before := cpuSample{self: time.Second, children: map[int]time.Duration{11: 5 * clockTick, 14: time.Second}}
	after := cpuSample{self: 3 * time.Second, children: map[int]time.Duration{11: 50 * clockTick, 15: 2 * clockTick}}
	// self grew 2 s, child 11 by 45 ticks, child 15 (new) counts in full,
	// child 14 (gone) is not subtracted.
	assert.Equal(t, 2*time.Second+47*clockTick, after.since(before))
}

func TestSampleCPUSeesThisProcess(t *testing.T) {
	before := sampleCPU()
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) {
	}
	assert.Positive(t, sampleCPU().since(before))
}

// A backlog flat at the number of statuses (global far behind: pending
// cannot grow past it) is not keeping up; a small flat backlog is.
func TestChurnKeptUp(t *testing.T) {
	flat := func(n, v int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = v
		}
		return s
	}
	small := churnPhase{rate: 10000, pendings: flat(120, 3000)}
	assert.True(t, small.keptUp())
	saturated := churnPhase{rate: 10000, pendings: flat(120, 100000)}
	assert.False(t, saturated.keptUp())
	growing := churnPhase{rate: 10000, pendings: append(flat(60, 1000), flat(60, 9000)...)}
	assert.False(t, growing.keptUp())
}

// A missed churn verdict names each target it missed, and only those.
func TestChurnMissedNamesWhatMissed(t *testing.T) {
	assert.Empty(t, churnMissed(true, churnP99, churnRSSGrow))
	assert.Equal(t, []string{"RSS grew 25.0 % after the first minute > 10 %"}, churnMissed(true, churnP99, 0.25))
	missed := churnMissed(false, 436*time.Millisecond, 0)
	assert.Equal(t, []string{"global did not keep up", "write→apply p99 436 ms > 250ms"}, missed)
}
