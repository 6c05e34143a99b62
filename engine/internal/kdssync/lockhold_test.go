package kdssync

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// BenchmarkServeLockHold measures how long a serving session holds the
// index's read lock while it catches a fresh peer up with 4 MiB responses
// (build, then resolve of the ACK), and how long Puts wait meanwhile: Go's
// RWMutex blocks new readers once a writer waits, so one long hold stalls
// the feed and every other session. names= is the index size (400-byte
// resources); sessions= how many fresh peers sync at once while a writer
// puts one existing name every 100µs.
func BenchmarkServeLockHold(b *testing.B) {
	for _, c := range []struct{ names, sessions int }{{100_000, 1}, {1_000_000, 1}, {100_000, 100}} {
		b.Run(fmt.Sprintf("names=%d/sessions=%d", c.names, c.sessions), func(b *testing.B) {
			ix := NewIndex([]string{"T"})
			for i := range c.names {
				if err := ix.Put(res("T", "default", fmt.Sprintf("t-%07d", i), "1", 400)); err != nil {
					b.Fatal(err)
				}
			}
			var mu sync.Mutex
			var builds, firsts, resolves, puts []time.Duration
			for b.Loop() {
				stop := make(chan struct{})
				writer := make(chan struct{})
				go func() {
					defer close(writer)
					v := 1
					for {
						select {
						case <-stop:
							return
						case <-time.After(100 * time.Microsecond):
						}
						v++
						r := res("T", "default", fmt.Sprintf("t-%07d", v%c.names), strconv.Itoa(v), 400)
						t0 := time.Now()
						if err := ix.Put(r); err != nil {
							panic(err)
						}
						d := time.Since(t0)
						mu.Lock()
						puts = append(puts, d)
						mu.Unlock()
					}
				}()
				var wg sync.WaitGroup
				for range c.sessions {
					ss, p, _ := directSession(b, ix, 4<<20)
					wg.Add(1)
					go func() {
						defer wg.Done()
						if err := ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}}); err != nil {
							panic(err)
						}
						for len(p.resps) > 0 {
							<-p.resps
						}
						st := ss.types["T"]
						st.inflight = nil
						for i := 0; ; i++ {
							f := &flight{nonce: "b" + strconv.Itoa(i)}
							t0 := time.Now()
							resp := ss.build(st, f)
							d := time.Since(t0)
							if len(resp.Resources)+len(resp.RemovedResources) == 0 {
								break
							}
							t0 = time.Now()
							ss.resolve(st, f, nil, nil)
							r := time.Since(t0)
							mu.Lock()
							if i == 0 {
								firsts = append(firsts, d)
							} else {
								builds = append(builds, d)
							}
							resolves = append(resolves, r)
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
				close(stop)
				<-writer
			}
			ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
			q := func(ds []time.Duration, f float64) time.Duration {
				if len(ds) == 0 {
					return 0
				}
				slices.Sort(ds)
				return ds[int(f*float64(len(ds)-1))]
			}
			b.ReportMetric(ms(q(firsts, 1)), "first-build-max-ms")
			b.ReportMetric(ms(q(builds, 0.5)), "build-p50-ms")
			b.ReportMetric(ms(q(builds, 1)), "build-max-ms")
			b.ReportMetric(ms(q(resolves, 0.5)), "resolve-p50-ms")
			b.ReportMetric(ms(q(resolves, 1)), "resolve-max-ms")
			b.ReportMetric(ms(q(puts, 0.99)), "put-p99-ms")
			b.ReportMetric(ms(q(puts, 1)), "put-max-ms")
		})
	}
}

// A serving session releases the index's read lock every lockChunk names:
// while it copies a fresh subscriber's names, compares a resuming
// subscriber's held versions, builds a response and applies its answer.
// Each release lets a Put in (here one per release); what the peer is
// recorded as holding stays exact (checked against what it applied).
func TestServeReleasesTheIndexLockBetweenChunks(t *testing.T) {
	const n, chunk = 3000, 100
	for _, resume := range []bool{false, true} {
		t.Run(fmt.Sprintf("resume=%v", resume), func(t *testing.T) {
			ix := NewIndex([]string{"T"})
			held := map[string]string{}
			for i := range n {
				name := fmt.Sprintf("t-%05d", i)
				require.NoError(t, ix.Put(res("T", "default", name, "1", 400)))
				if resume && i%2 == 0 {
					held[WireName("default", name)] = "1"
				}
			}
			ss, p, ins := directSession(t, ix, 256<<10)
			ss.lockChunk = chunk
			releases, v := 0, 1
			ss.betweenChunks = func() {
				releases++
				v++
				require.NoError(t, ix.Put(res("T", "default", fmt.Sprintf("t-%05d", v%n), strconv.Itoa(v), 400)))
			}
			require.NoError(t, ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}, InitialResourceVersions: held}))
			want := n / chunk
			if resume {
				// The held versions looked up, then compared, and the
				// served names walked.
				want = (2*len(held) + n) / chunk
			}
			assert.GreaterOrEqual(t, releases, want, "the subscription released the lock every %d names", chunk)

			peer := maps.Clone(held)
			for range 100 {
				r := <-p.resps
				releases = 0
				for _, x := range r.GetResources() {
					peer[x.GetName()] = x.GetVersion()
				}
				require.NoError(t, ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResponseNonce: r.GetNonce()}))
				if len(r.GetResources()) > 2*chunk {
					// The answer's chunks, then the next responses'.
					assert.GreaterOrEqual(t, releases, len(r.GetResources())/chunk, "the answer and the next build released the lock")
				}
				if len(p.resps) == 0 {
					break
				}
			}
			ss.betweenChunks = nil
			require.Empty(t, p.resps, "the sync ends")
			for name, v := range peer {
				require.Equal(t, PeerHolding{Subscribed: true, Holds: true, Version: v}, ask(ss, name))
			}
			c, _ := ins.Get("zone-1")
			assert.Equal(t, len(peer), c.Types["T"].ResourcesHeld)
		})
	}
}

// Many names that become pending while a build holds the lock (a resync)
// are sorted into its queue with the lock released, not under it.
func TestBuildSortsALargePendingSetOutsideTheLock(t *testing.T) {
	ix, ss, p, _ := inSyncSession(t, 1000, 1<<20)
	st := ss.types["T"]
	// At most lockChunk: caught up in the build's first hold.
	for i := range 100 {
		require.NoError(t, ix.Put(res("T", "default", fmt.Sprintf("t-%06d", i), "2", 8)))
	}
	ss.lockChunk = 100
	calls, sortedAtRelease := 0, 0
	ss.betweenChunks = func() {
		calls++
		if calls == 1 {
			for i := 500; i < 1000; i++ {
				require.NoError(t, ix.Put(res("T", "default", fmt.Sprintf("t-%06d", i), "2", 8)))
			}
		}
		sortedAtRelease = max(sortedAtRelease, len(st.queue))
	}
	require.NoError(t, ss.trySend(st))
	r := nextResponse(t, p)
	assert.Len(t, r.GetResources(), 600)
	assert.Equal(t, 500, sortedAtRelease, "the 500 names were sorted while the lock was released")
}
