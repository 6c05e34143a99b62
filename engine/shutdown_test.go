package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// errTestSignal stands in for the CLI's shutdown cause ("shutdown signal:
// terminated"): Run gets a context cancelled with a cause, as in production.
var errTestSignal = errors.New("shutdown signal: terminated")

// TestShutdownWithCauseWhileWritingIsClean stops an engine many times with a
// cancel cause while resources are being written, at a random moment after
// it started. Every component that notices the shutdown (the store watch
// feeding the sync index ends with the same cause at the same moment) must
// make Run return nil: the first SIGTERM exits 0.
func TestShutdownWithCauseWhileWritingIsClean(t *testing.T) {
	iterations := 20
	if testing.Short() {
		iterations = 5
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Error, Output: os.Stderr})
	for i := range iterations {
		cfg := Config{Role: RoleGlobal, PluginsDir: lenientDir, Store: StoreMemory, DataDir: t.TempDir(),
			APIAddress: "127.0.0.1:0", KDSAddress: "127.0.0.1:0", Insecure: true}
		e, err := New(cfg, log)
		require.NoError(t, err)
		// Once armed, the index feed stops in the middle of handling
		// events until released: the shutdown then lands while it is busy,
		// and when it looks again both the shutdown and the end of its
		// store watch (ended by the same cause) are there to see, in
		// either order.
		var armed atomic.Bool
		hold, release := make(chan struct{}), make(chan struct{})
		e.testHookFeed = func() {
			if armed.CompareAndSwap(true, false) {
				close(hold)
				<-release
			}
		}
		ctx, cancel := context.WithCancelCause(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx) }()
		select {
		case <-e.Started():
		case err := <-done:
			cancel(nil)
			t.Fatalf("iteration %d: engine did not start: %v", i, err)
		}
		b := backend{e}
		// Writers keep the store's change feed busy while the engine runs.
		wctx, wstop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; wctx.Err() == nil; n++ {
					_, _ = b.Create(wctx, &resource.Resource{Type: "SyncPolicy", Mesh: "default",
						Name: fmt.Sprintf("p-%d-%d", w, n), Spec: spec(map[string]any{})})
				}
			}()
		}
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		armed.Store(true)
		<-hold
		cancel(errTestSignal)
		// Give the watch's own shutdown (run by the context) a moment to
		// land; without it the feed may see only the shutdown, which
		// hides nothing but proves less.
		time.Sleep(10 * time.Millisecond)
		close(release)
		var runErr error
		select {
		case runErr = <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("iteration %d: engine did not stop", i)
		}
		wstop()
		wg.Wait()
		require.NoError(t, runErr, "iteration %d: a shutdown with a cause must stop cleanly", i)
	}
}

// TestStopErr keeps real failures during a shutdown visible while the
// shutdown's own cause is a clean stop.
func TestStopErr(t *testing.T) {
	live := context.Background()
	ended, cancel := context.WithCancelCause(context.Background())
	cancel(errTestSignal)
	boom := errors.New("disk full")
	for _, tc := range []struct {
		name   string
		parent context.Context
		err    error
		want   error
	}{
		{"nil", ended, nil, nil},
		{"cause wrapped", ended, fmt.Errorf("store watch ended: %w", errTestSignal), nil},
		{"canceled", ended, fmt.Errorf("serve: %w", context.Canceled), nil},
		{"other failure during shutdown", ended, boom, boom},
		{"cause-like error without a shutdown", live, fmt.Errorf("x: %w", errTestSignal), errTestSignal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := stopErr(tc.parent, tc.err)
			if tc.want == nil {
				require.NoError(t, got)
			} else {
				require.ErrorIs(t, got, tc.want)
			}
		})
	}
}

// A stop while a client holds an admin API connection on which it has
// sent nothing yet (browsers open such ahead of use) is clean: the
// connection is closed when the grace runs out instead of failing Run.
func TestShutdownWithAnIdleNewAPIConnectionIsClean(t *testing.T) {
	n := startNode(t, Config{Role: RoleGlobal, PluginsDir: lenientDir})
	addr := n.e.APIAddr().String()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	// The API has accepted c once a later connection's request is
	// answered (one accept loop, in order).
	resp, err := http.Get("http://" + addr + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	n.stop()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
	_, err = c.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "the engine closed the connection")
}
