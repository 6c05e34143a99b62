package kdsbench

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/kds-engine/kds-engine/engine"
	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// SyncConfig sizes the sync mode.
type SyncConfig struct {
	// Ns are the resource counts to sync (default 10k and 100k).
	Ns []int
	// Size is the approximate spec size in bytes (default 1 KiB).
	Size int
	// Repeat runs each N this many times (default 1), each run with its own
	// baseline; the verdict uses each path's median.
	Repeat int
}

// syncRun is one measured initial sync.
type syncRun struct {
	elapsed   time.Duration
	bytes     int64
	responses int
	maxMsg    int           // 0: not measured
	cpu       time.Duration // CPU used by this process and the plugins while the clock ran
}

func (s syncRun) rps(n int) float64 { return float64(n) / s.elapsed.Seconds() }

// syncTrial is one run of the baseline and both engine directions. base is
// the baseline's second (warm, judged) client, cold its first.
type syncTrial struct{ base, cold, g2z, z2g syncRun }

// Sync measures the initial sync of N resources global→zone and zone→global
// through real engines (TLS, plugin validation, bbolt on both sides)
// against go-control-plane's delta server and a minimal client. The clock
// starts when the zone's connection is let through (the zone has started,
// its plugin is up) and stops when the receiving store holds N.
func Sync(ctx context.Context, o Options, c SyncConfig) (*Report, error) {
	o = o.withDefaults()
	if len(c.Ns) == 0 {
		c.Ns = []int{10000, 100000}
	}
	if c.Size <= 0 {
		c.Size = 1024
	}
	c.Repeat = max(c.Repeat, 1)
	r := newReport("sync", "100k resources global→zone in ≤ 2 s and ≥ 0.7× the go-control-plane baseline's resources/s (10k and zone→global are shown, not judged)",
		"N", "path", "time s", "CPU s", "resources/s", "wire MB", "responses", "largest msg KB", "ratio vs baseline")
	v, err := newEnv(o.PluginsDir, o.Log)
	if err != nil {
		return nil, err
	}
	defer v.close()
	for _, n := range c.Ns {
		var trials []syncTrial
		for i := range c.Repeat {
			o.Progress.Start(fmt.Sprintf("sync %d: baseline", n), 0)
			base, cold, err := syncXDS(ctx, n, c.Size, Link{})
			o.Progress.Finish()
			if err != nil {
				return nil, fmt.Errorf("baseline %d: %w", n, err)
			}
			g2z, z2g, err := syncEngine(ctx, o, v, n, c.Size, i)
			if err != nil {
				return nil, fmt.Errorf("engine %d: %w", n, err)
			}
			trials = append(trials, syncTrial{base: base, cold: cold, g2z: g2z, z2g: z2g})
		}
		label := func(i int) string {
			if c.Repeat == 1 {
				return ""
			}
			return fmt.Sprintf(" (run %d)", i+1)
		}
		row := func(path string, run syncRun, ratio any) {
			r.row(n, path, run.elapsed.Seconds(), run.cpu.Seconds(), run.rps(n), float64(run.bytes)/1e6, run.responses, float64(run.maxMsg)/1024, ratio)
		}
		for i, t := range trials {
			row("baseline first client, cold (not judged)"+label(i), t.cold, "-")
			row("baseline (go-control-plane delta)"+label(i), t.base, "1")
			for _, x := range []struct {
				name string
				run  syncRun
			}{{"global→zone", t.g2z}, {"zone→global", t.z2g}} {
				row("engine "+x.name+label(i), x.run, x.run.rps(n)/t.base.rps(n))
			}
		}
		// Each path's median run is judged and reported in the figures
		// (the only run when Repeat is 1): times vary by tens of percent
		// between runs on a shared machine.
		median := func(pick func(syncTrial) syncRun) syncRun {
			runs := make([]syncRun, len(trials))
			for i, t := range trials {
				runs[i] = pick(t)
			}
			return medianRun(runs)
		}
		med := syncTrial{
			base: median(func(t syncTrial) syncRun { return t.base }),
			cold: median(func(t syncTrial) syncRun { return t.cold }),
			g2z:  median(func(t syncTrial) syncRun { return t.g2z }),
			z2g:  median(func(t syncTrial) syncRun { return t.z2g }),
		}
		if c.Repeat > 1 {
			m := fmt.Sprintf(" (median of %d)", c.Repeat)
			row("baseline (go-control-plane delta)"+m, med.base, "1")
			row("engine global→zone"+m, med.g2z, med.g2z.rps(n)/med.base.rps(n))
			row("engine zone→global"+m, med.z2g, med.z2g.rps(n)/med.base.rps(n))
		}
		for _, x := range []struct {
			key string
			run syncRun
		}{{"g2z", med.g2z}, {"z2g", med.z2g}} {
			ratio := x.run.rps(n) / med.base.rps(n)
			key := fmt.Sprintf("%s_%d_", x.key, n)
			r.Figures[key+"seconds"] = x.run.elapsed.Seconds()
			r.Figures[key+"rps"] = x.run.rps(n)
			r.Figures[key+"wire_bytes"] = float64(x.run.bytes)
			r.Figures[key+"responses"] = float64(x.run.responses)
			r.Figures[key+"largest_msg_bytes"] = float64(x.run.maxMsg)
			r.Figures[key+"ratio"] = ratio
			r.Figures[key+"cpu_seconds"] = x.run.cpu.Seconds()
			r.Figures[key+"ratio_cold"] = x.run.rps(n) / med.cold.rps(n)
			if n == 100000 && x.key == "g2z" && (ratio < 0.7 || x.run.elapsed > 2*time.Second) {
				r.Pass = false
			}
		}
		bk := fmt.Sprintf("baseline_%d_", n)
		r.Figures[bk+"seconds"] = med.base.elapsed.Seconds()
		r.Figures[bk+"rps"] = med.base.rps(n)
		r.Figures[bk+"wire_bytes"] = float64(med.base.bytes)
		r.Figures[bk+"responses"] = float64(med.base.responses)
		r.Figures[bk+"largest_msg_bytes"] = float64(med.base.maxMsg)
		r.Figures[bk+"cpu_seconds"] = med.base.cpu.Seconds()
		r.Figures[fmt.Sprintf("baseline_cold_%d_seconds", n)] = med.cold.elapsed.Seconds()
		r.note("N=%d: engine global→zone is %.2f× the cold baseline (its first client), %.2f× the warm one", n,
			med.g2z.rps(n)/med.cold.rps(n), med.g2z.rps(n)/med.base.rps(n))
		if cpu := med.g2z.cpu; cpu > 0 && med.base.cpu > 0 {
			cores := runtime.NumCPU()
			r.note("N=%d: engine global→zone used %.2f s of CPU (%.2f× the warm baseline's %.2f s): on %d cores it needs at least %.2f s, so it can reach at most %.2f× the warm baseline's resources/s", n,
				cpu.Seconds(), cpu.Seconds()/med.base.cpu.Seconds(), med.base.cpu.Seconds(), cores,
				cpu.Seconds()/float64(cores), med.base.elapsed.Seconds()/(cpu.Seconds()/float64(cores)))
		}
	}
	if !slices.Contains(c.Ns, 100000) {
		r.note("the target is for N=100000, which this run did not measure (MISS means not shown to pass)")
		r.Pass = false
	}
	if c.Repeat > 1 {
		r.note("each N ran %d times, each run with its own baseline; the verdict and the JSON figures use each path's median time (ratios of medians)", c.Repeat)
	}
	r.note("the judged baseline is the server's second client: its first (cold, shown, not judged) pays for growing a fresh heap for the one large message")
	r.note("engine wire bytes include TLS; the baseline runs plaintext gRPC. Engine responses are capped by the max message size (4 MiB); the engine's largest message is the sender's largest response (insights' largestResponseBytes)")
	return r, nil
}

// syncXDS times go-control-plane's delta server sending n resources over
// link to two fresh clients, one after the other, and returns the second (warm) and
// the first (cold) run. The warm one is judged: the baseline's one
// ~110 MiB message takes several times longer on a heap that has not yet
// grown to hold it, and a control plane serving a new zone has long been
// running.
func syncXDS(ctx context.Context, n, size int, link Link) (warm, cold syncRun, err error) {
	x, err := startXDS(xdsResources("p", n, size), link)
	if err != nil {
		return warm, cold, err
	}
	defer x.close()
	receive := func() (syncRun, error) {
		before, cpu := x.proxy.Bytes(), sampleCPU()
		start := time.Now()
		cl, err := dialXDS(x.proxy.Addr().String(), n, nil)
		if err != nil {
			return syncRun{}, err
		}
		defer cl.close()
		if err := cl.waitCount(ctx, n, 2*time.Minute); err != nil {
			return syncRun{}, err
		}
		el, used := time.Since(start), sampleCPU().since(cpu)
		cl.mu.Lock()
		defer cl.mu.Unlock()
		return syncRun{elapsed: el, bytes: x.proxy.Bytes() - before, responses: cl.responses, maxMsg: cl.maxMsg, cpu: used}, nil
	}
	if cold, err = receive(); err != nil {
		return warm, cold, fmt.Errorf("first client: %w", err)
	}
	warm, err = receive()
	return warm, cold, err
}

// syncEngine runs both directions on one global.
func syncEngine(ctx context.Context, o Options, v *env, n, size, run int) (g2z, z2g syncRun, err error) {
	g, err := v.startLoadedGlobal(ctx, o, fmt.Sprintf("global-sync-%d-%d", n, run), fmt.Sprintf("sync %d: load global", n), n, size)
	if err != nil {
		return g2z, z2g, err
	}
	defer g.discard()

	// global → zone
	zname := fmt.Sprintf("sync-a-%d-%d", n, run)
	g2z, err = syncOnce(ctx, o, v, g, zname, n, Link{}, func(z *node) (store.Store, store.Filter) {
		return z.e.Store(), store.Filter{Type: policyType}
	}, nil)
	if err != nil {
		return g2z, z2g, fmt.Errorf("global→zone: %w", err)
	}

	// zone → global, on a fresh global that has nothing to send back.
	if err := g.discard(); err != nil {
		return g2z, z2g, err
	}
	g, err = v.startGlobal(fmt.Sprintf("global-sync-b-%d-%d", n, run), nil)
	if err != nil {
		return g2z, z2g, err
	}
	defer g.discard()
	zname = fmt.Sprintf("sync-b-%d-%d", n, run)
	z2g, err = syncOnce(ctx, o, v, g, zname, n, Link{}, func(*node) (store.Store, store.Filter) {
		return g.e.Store(), store.Filter{Type: statusType, Zone: zname}
	}, func(z *node) error {
		o.Progress.Start(fmt.Sprintf("sync %d: load zone", n), n)
		defer o.Progress.Finish()
		return z.e.BulkLoad(ctx, makeResources(statusType, "s", n, size))
	})
	if err != nil {
		return g2z, z2g, fmt.Errorf("zone→global: %w", err)
	}
	return g2z, z2g, nil
}

// sentTo returns what node sent peer for typ, from node's insights.
func sentTo(n *node, peer, typ string) insights.TypeState {
	c, _ := n.e.Insights().Get(peer)
	return c.Types[typ]
}

// syncOnce starts zone behind a closed proxy imitating link, runs prepare,
// then opens the proxy and times until the watched store holds n
// resources.
func syncOnce(ctx context.Context, o Options, v *env, g *node, zname string, n int, link Link,
	watched func(z *node) (store.Store, store.Filter), prepare func(z *node) error,
) (syncRun, error) {
	g2z := prepare == nil
	p, err := newLinkProxy(g.e.KDSAddr().String(), false, link)
	if err != nil {
		return syncRun{}, err
	}
	defer p.Close()
	zc, err := v.zoneConfig(g, zname, localAddr(p.Addr()), "")
	if err != nil {
		return syncRun{}, err
	}
	z, err := v.start(zc)
	if err != nil {
		return syncRun{}, err
	}
	defer z.discard()
	if prepare != nil {
		if err := prepare(z); err != nil {
			return syncRun{}, err
		}
	}
	s, f := watched(z)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cnt, join, err := follow(wctx, s, f, n, nil)
	if err != nil {
		return syncRun{}, err
	}
	defer join()
	defer cancel()
	o.Progress.Start(fmt.Sprintf("sync %d: %s", n, zname), n)
	defer o.Progress.Finish()
	// A profile of this timed window alone, into PREFIX-zone.prof.
	var profile string
	if o.WindowProfile != "" {
		profile = fmt.Sprintf("%s-%s.prof", o.WindowProfile, zname)
	}
	stopProfile, err := StartCPUProfile(profile)
	if err != nil {
		return syncRun{}, fmt.Errorf("window profile: %w", err)
	}
	defer stopProfile()
	cpu := sampleCPU()
	start := time.Now()
	p.Open()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	waitErr := make(chan error, 1)
	go func() {
		waitErr <- cnt.waitFor(wctx, 2*time.Minute, func(m map[resourceKey]string) bool { return len(m) >= n })
	}()
	for {
		select {
		case err := <-waitErr:
			el, used := time.Since(start), sampleCPU().since(cpu)
			stopProfile()
			if err != nil {
				return syncRun{}, fmt.Errorf("%d of %d after %s: %w", cnt.len(), n, el, err)
			}
			// The sender's insights: global's for the zone, or the zone's
			// for global.
			sender, peer, typ := z, engine.GlobalPeer, statusType
			if g2z {
				sender, peer, typ = g, zname, policyType
			}
			ts := sentTo(sender, peer, typ)
			return syncRun{elapsed: el, bytes: p.Bytes(), responses: int(ts.ResponsesSent), maxMsg: ts.LargestResponseBytes, cpu: used}, nil
		case <-tick.C:
			o.Progress.Set(cnt.len())
		}
	}
}
