package kdsbench

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/kds-engine/kds-engine/engine"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// SyncConfig sizes the sync mode.
type SyncConfig struct {
	// Ns are the resource counts to sync (default 10k and 100k).
	Ns []int
	// Size is the approximate spec size in bytes (default 1 KiB).
	Size int
}

// syncRun is one measured initial sync.
type syncRun struct {
	elapsed   time.Duration
	bytes     int64
	responses int
	maxMsg    int // 0: not measured
}

func (s syncRun) rps(n int) float64 { return float64(n) / s.elapsed.Seconds() }

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
	r := newReport("sync", "100k resources global→zone in ≤ 2 s and ≥ 0.7× the go-control-plane baseline's resources/s (10k and zone→global are shown, not judged)",
		"N", "path", "time s", "resources/s", "wire MB", "responses", "largest msg KB", "ratio vs baseline")
	v, err := newEnv(o.PluginsDir, o.Log)
	if err != nil {
		return nil, err
	}
	defer v.close()
	for _, n := range c.Ns {
		o.Progress.Start(fmt.Sprintf("sync %d: baseline", n), 0)
		base, err := syncXDS(ctx, n, c.Size)
		o.Progress.Finish()
		if err != nil {
			return nil, fmt.Errorf("baseline %d: %w", n, err)
		}
		g2z, z2g, err := syncEngine(ctx, o, v, n, c.Size)
		if err != nil {
			return nil, fmt.Errorf("engine %d: %w", n, err)
		}
		r.row(n, "baseline (go-control-plane delta)", base.elapsed.Seconds(), base.rps(n), float64(base.bytes)/1e6, base.responses, float64(base.maxMsg)/1024, "1")
		for _, x := range []struct {
			name string
			run  syncRun
		}{{"global→zone", g2z}, {"zone→global", z2g}} {
			ratio := x.run.rps(n) / base.rps(n)
			r.row(n, "engine "+x.name, x.run.elapsed.Seconds(), x.run.rps(n), float64(x.run.bytes)/1e6, x.run.responses, "n/m", ratio)
			key := fmt.Sprintf("%s_%d_", map[string]string{"global→zone": "g2z", "zone→global": "z2g"}[x.name], n)
			r.Figures[key+"seconds"] = x.run.elapsed.Seconds()
			r.Figures[key+"rps"] = x.run.rps(n)
			r.Figures[key+"wire_bytes"] = float64(x.run.bytes)
			r.Figures[key+"responses"] = float64(x.run.responses)
			r.Figures[key+"ratio"] = ratio
			if n == 100000 && x.name == "global→zone" && (ratio < 0.7 || x.run.elapsed > 2*time.Second) {
				r.Pass = false
			}
		}
		bk := fmt.Sprintf("baseline_%d_", n)
		r.Figures[bk+"seconds"] = base.elapsed.Seconds()
		r.Figures[bk+"rps"] = base.rps(n)
		r.Figures[bk+"wire_bytes"] = float64(base.bytes)
		r.Figures[bk+"responses"] = float64(base.responses)
		r.Figures[bk+"largest_msg_bytes"] = float64(base.maxMsg)
	}
	if !slices.Contains(c.Ns, 100000) {
		r.note("the target is for N=100000, which this run did not measure (MISS means not shown to pass)")
		r.Pass = false
	}
	r.note("engine wire bytes include TLS; the baseline runs plaintext gRPC. Engine responses are capped by the max message size (4 MiB); the largest engine message is not measured (n/m), wire MB / responses bounds its mean")
	return r, nil
}

func syncXDS(ctx context.Context, n, size int) (syncRun, error) {
	x, err := startXDS(xdsResources("p", n, size))
	if err != nil {
		return syncRun{}, err
	}
	defer x.close()
	start := time.Now()
	cl, err := dialXDS(x.proxy.Addr().String(), nil)
	if err != nil {
		return syncRun{}, err
	}
	defer cl.close()
	if err := cl.waitCount(ctx, n, 2*time.Minute); err != nil {
		return syncRun{}, err
	}
	el := time.Since(start)
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return syncRun{elapsed: el, bytes: x.proxy.Bytes(), responses: cl.responses, maxMsg: cl.maxMsg}, nil
}

// syncEngine runs both directions on one global.
func syncEngine(ctx context.Context, o Options, v *env, n, size int) (g2z, z2g syncRun, err error) {
	g, err := v.startGlobal(fmt.Sprintf("global-sync-%d", n), nil)
	if err != nil {
		return g2z, z2g, err
	}
	defer g.stop()
	o.Progress.Start(fmt.Sprintf("sync %d: load global", n), n)
	if err := g.e.BulkLoad(ctx, makeResources(policyType, "p", n, size)); err != nil {
		return g2z, z2g, fmt.Errorf("load global: %w", err)
	}
	o.Progress.Finish()

	// global → zone
	zname := fmt.Sprintf("sync-a-%d", n)
	g2z, err = syncOnce(ctx, o, v, g, zname, n, func(z *node) (store.Store, store.Filter) {
		return z.e.Store(), store.Filter{Type: policyType}
	}, nil)
	if err != nil {
		return g2z, z2g, fmt.Errorf("global→zone: %w", err)
	}

	// zone → global, on a fresh global that has nothing to send back.
	if err := g.stop(); err != nil {
		return g2z, z2g, err
	}
	g, err = v.startGlobal(fmt.Sprintf("global-sync-b-%d", n), nil)
	if err != nil {
		return g2z, z2g, err
	}
	defer g.stop()
	zname = fmt.Sprintf("sync-b-%d", n)
	z2g, err = syncOnce(ctx, o, v, g, zname, n, func(*node) (store.Store, store.Filter) {
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

// zoneSent returns the responses global sent zone for typ.
func zoneSent(g *node, zone, typ string) uint64 {
	c, _ := g.e.Insights().Get(zone)
	return c.Types[typ].ResponsesSent
}

// syncOnce starts zone behind a closed proxy, runs prepare, then opens the
// proxy and times until the watched store holds n resources.
func syncOnce(ctx context.Context, o Options, v *env, g *node, zname string, n int,
	watched func(z *node) (store.Store, store.Filter), prepare func(z *node) error,
) (syncRun, error) {
	g2z := prepare == nil
	p, err := newProxy(g.e.KDSAddr().String(), false)
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
	defer z.stop()
	if prepare != nil {
		if err := prepare(z); err != nil {
			return syncRun{}, err
		}
	}
	s, f := watched(z)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cnt, join, err := follow(wctx, s, f, nil)
	if err != nil {
		return syncRun{}, err
	}
	defer join()
	defer cancel()
	o.Progress.Start(fmt.Sprintf("sync %d: %s", n, zname), n)
	defer o.Progress.Finish()
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
			el := time.Since(start)
			if err != nil {
				return syncRun{}, fmt.Errorf("%d of %d after %s: %w", cnt.len(), n, el, err)
			}
			run := syncRun{elapsed: el, bytes: p.Bytes()}
			if g2z {
				run.responses = int(zoneSent(g, zname, policyType))
			} else {
				c, _ := z.e.Insights().Get(engine.GlobalPeer)
				run.responses = int(c.Types[statusType].ResponsesSent)
			}
			return run, nil
		case <-tick.C:
			o.Progress.Set(cnt.len())
		}
	}
}
