package kdssync

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// Several peers sync with one server while the index churns (puts, deletes,
// a name deleted and re-created at the same version, Replace) and every
// session releases the index's lock every few names; peers end their
// sessions mid-sync and resume from what they stored, or start over with
// nothing (a fresh region shared through the index's sorted names). Once
// the churn stops, every peer converges to the index (minus what it
// refuses), deletes included, and the server's record (Held, ResourcesHeld)
// is what each peer applied. Run with -race: subscriptions come and go
// while changes mark them.
func TestServeChurnConverges(t *testing.T) {
	const (
		typ   = "T"
		peers = 5
		names = 120
	)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	ix := NewIndex([]string{typ})
	srvIns := insights.NewRegistry()
	srv := NewServer(ix, WithServerInsights(srvIns), WithServerMaxMessageSize(responseOverhead+400))
	srv.lockChunk = 3

	name := func(i int) (mesh, n string) {
		mesh = "default"
		if i%3 == 0 {
			mesh = "m2"
		}
		n = fmt.Sprintf("n-%03d", i)
		if i%17 == 0 {
			n = "bad-" + n // refused by every peer
		}
		return mesh, n
	}
	version := 0
	last := map[int]string{}
	put := func(i int) {
		version++
		last[i] = fmt.Sprint("v", version)
		mesh, n := name(i)
		require.NoError(t, ix.Put(res(typ, mesh, n, last[i], 20)))
	}
	for i := range names / 2 {
		put(i)
	}

	type zone struct {
		peer string
		sink *memSink
		stop func()
	}
	start := func(z *zone) {
		ctx, cancel := context.WithCancel(context.Background())
		p := newPipe(ctx)
		cli := NewClient([]string{typ}, z.sink, rejectValidator{}, "global", z.peer)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _ = srv.Serve(ctx, serverEnd{p}, z.peer) }()
		go func() { defer wg.Done(); _ = cli.Run(ctx, clientEnd{p}) }()
		z.stop = func() { cancel(); wg.Wait() }
	}
	zones := make([]*zone, peers)
	for i := range zones {
		zones[i] = &zone{peer: fmt.Sprintf("zone-%d", i), sink: newMemSink()}
		start(zones[i])
	}

	// Held is asked throughout, from another goroutine.
	askDone := make(chan struct{})
	asked := make(chan struct{})
	go func() {
		defer close(asked)
		for i := 0; ; i++ {
			select {
			case <-askDone:
				return
			default:
			}
			mesh, n := name(i % names)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := srv.Held(ctx, typ, WireName(mesh, n))
			cancel()
			if err != nil {
				t.Errorf("Held: %v", err)
				return
			}
		}
	}()

	// Churn, restarting sessions now and then.
	deadline := time.Now().Add(3 * time.Second)
	for step := 0; time.Now().Before(deadline); step++ {
		i := rng.IntN(names)
		switch r := rng.IntN(100); {
		case r < 55:
			put(i)
		case r < 70:
			mesh, n := name(i)
			ix.Delete(resource.Key{Type: typ, Mesh: mesh, Name: n})
		case r < 80:
			// Deleted and re-created at the same version.
			if v, ok := last[i]; ok {
				mesh, n := name(i)
				ix.Delete(resource.Key{Type: typ, Mesh: mesh, Name: n})
				require.NoError(t, ix.Put(res(typ, mesh, n, v, 20)))
			}
		case r < 82:
			var items []*resource.Resource
			for j := range names {
				if rng.IntN(3) > 0 {
					continue
				}
				if _, ok := last[j]; !ok {
					version++
					last[j] = fmt.Sprint("v", version)
				}
				mesh, n := name(j)
				items = append(items, res(typ, mesh, n, last[j], 20))
			}
			require.NoError(t, ix.Replace(items))
		case r < 86:
			z := zones[rng.IntN(peers)]
			z.stop()
			if rng.IntN(2) == 0 {
				z.sink = newMemSink() // starts over holding nothing
			}
			start(z)
		}
		if step%8 == 0 {
			time.Sleep(time.Millisecond)
		}
	}

	close(askDone)
	<-asked

	want := func() map[string]string {
		ix.mu.RLock()
		defer ix.mu.RUnlock()
		out := map[string]string{}
		for n, e := range ix.types[typ].entries {
			if !strings.Contains(n, "/bad-") {
				out[n] = e.res.Version
			}
		}
		return out
	}()
	for _, z := range zones {
		require.Eventually(t, func() bool {
			got := versions(z.sink)
			if len(got) != len(want) {
				return false
			}
			for n, v := range want {
				if got[n] != v {
					return false
				}
			}
			return true
		}, 20*time.Second, 10*time.Millisecond, "%s converges to the index", z.peer)
	}
	// Quiet: every response answered.
	require.Eventually(t, func() bool {
		c, ok := srvIns.Get(zones[0].peer)
		return ok && c.Types[typ].ResourcesHeld == len(want)
	}, 10*time.Second, 10*time.Millisecond)
	for _, z := range zones {
		require.Eventually(t, func() bool {
			c, ok := srvIns.Get(z.peer)
			return ok && c.Types[typ].ResourcesHeld == len(want)
		}, 10*time.Second, 10*time.Millisecond, "%s ResourcesHeld", z.peer)
	}
	for i := range names {
		mesh, n := name(i)
		w := WireName(mesh, n)
		held, err := srv.Held(context.Background(), typ, w)
		require.NoError(t, err)
		for _, z := range zones {
			h := held[z.peer]
			v, holds := versions(z.sink)[w]
			require.Equal(t, holds, h.Holds, "%s holds %s", z.peer, w)
			require.Equal(t, v, h.Version, "%s version of %s", z.peer, w)
			require.False(t, h.Pending, "%s: nothing in flight for %s", z.peer, w)
		}
	}
	for _, z := range zones {
		z.stop()
	}
}
