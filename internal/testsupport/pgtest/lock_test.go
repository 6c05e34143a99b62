package pgtest

import (
	"bufio"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// holdEnv makes the test binary, started by TestExclusiveWaitsForOtherProcesses,
// hold the shared lock for the given duration and exit.
const holdEnv = "KDS_ENGINE_PGTEST_HOLD"

func TestMain(m *testing.M) {
	if d, err := time.ParseDuration(os.Getenv(holdEnv)); err == nil {
		f, err := os.OpenFile(lockPath("lock"), os.O_CREATE|os.O_RDWR, 0o666)
		if err == nil {
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH)
		}
		if err != nil {
			os.Exit(2)
		}
		os.Stdout.WriteString("locked\n")
		time.Sleep(d)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A test that restarts the server waits until another package's test
// using it (another process) has ended.
func TestExclusiveWaitsForOtherProcesses(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holdEnv+"=500ms")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "locked\n", line)

	start := time.Now()
	Exclusive(t)
	assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond, "waited for the other process's test")
	require.NoError(t, cmd.Wait())
}

// In one process too: a test using the server and one restarting it run
// one after the other, and the restarting test's own NewDatabase does not
// wait for itself.
func TestExclusiveAndSharedDoNotOverlap(t *testing.T) {
	var mu sync.Mutex
	var order []string
	note := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
	t.Run("group", func(t *testing.T) {
		t.Run("uses", func(t *testing.T) {
			t.Parallel()
			shared(t)
			note("uses: start")
			time.Sleep(200 * time.Millisecond)
			note("uses: end")
		})
		t.Run("restarts", func(t *testing.T) {
			t.Parallel()
			time.Sleep(50 * time.Millisecond)
			Exclusive(t)
			shared(t) // as NewDatabase does: returns at once
			note("restarts: start")
		})
	})
	assert.Equal(t, []string{"uses: start", "uses: end", "restarts: start"}, order)
}
