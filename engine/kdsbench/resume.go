package kdsbench

import (
	"context"
	"fmt"
	"time"

	"github.com/kds-engine/kds-engine/engine"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// ResumeConfig sizes the resume mode.
type ResumeConfig struct {
	N    int // resources each way (default 10k)
	Size int // spec bytes (default 1 KiB)
	// Quiet is how long the resumed session must move no bytes before it
	// counts as settled (default 2 s).
	Quiet time.Duration
}

// Resume syncs N resources each way (global→zone and zone→global), stops
// the zone, starts it again on the same bbolt data with nothing changed,
// and counts the resources and bytes the resumed session carries, against
// the full sync measured first (the baseline).
func Resume(ctx context.Context, o Options, c ResumeConfig) (*Report, error) {
	o = o.withDefaults()
	if c.N <= 0 {
		c.N = 10000
	}
	if c.Size <= 0 {
		c.Size = 1024
	}
	if c.Quiet <= 0 {
		c.Quiet = 2 * time.Second
	}
	r := newReport("resume", "a zone reconnecting with unchanged state is resent 0 resources (both directions)",
		"session", "policies sent global→zone", "statuses sent zone→global", "wire KB")
	v, err := newEnv(o.PluginsDir, o.Log)
	if err != nil {
		return nil, err
	}
	defer v.close()
	g, err := v.startLoadedGlobal(ctx, o, "global", "resume: load global", c.N, c.Size)
	if err != nil {
		return nil, err
	}
	defer g.stop()
	p, err := newProxy(g.e.KDSAddr().String(), true)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	zc, err := v.zoneConfig(g, "zone-1", localAddr(p.Addr()), "")
	if err != nil {
		return nil, err
	}
	fctx, fcancel := context.WithCancel(ctx)
	defer fcancel()
	gst, gjoin, err := follow(fctx, g.e.Store(), store.Filter{Type: statusType, Zone: "zone-1"}, 0, nil)
	if err != nil {
		return nil, err
	}
	defer gjoin()
	defer fcancel()

	// Full sync.
	z, err := v.start(zc)
	if err != nil {
		return nil, err
	}
	if err := z.e.BulkLoad(ctx, makeResources(statusType, "s", c.N, c.Size)); err != nil {
		z.stop()
		return nil, err
	}
	zctx, zcancel := context.WithCancel(ctx)
	defer zcancel()
	zst, zjoin, err := follow(zctx, z.e.Store(), store.Filter{Type: policyType}, 0, nil)
	if err != nil {
		z.stop()
		return nil, err
	}
	o.Progress.Start("resume: full sync", 2*c.N)
	full := func(m map[resourceKey]string) bool { return len(m) >= c.N }
	err = zst.waitFor(ctx, time.Minute, full)
	if err == nil {
		err = gst.waitFor(ctx, time.Minute, full)
	}
	o.Progress.Finish()
	if err == nil {
		err = settle(ctx, p, c.Quiet)
	}
	zc1, _ := z.e.Insights().Get(engine.GlobalPeer)
	fullStatuses := zc1.Types[statusType].ResourcesSent
	zcancel()
	zjoin()
	zstopErr := z.stop()
	if err != nil {
		return nil, fmt.Errorf("full sync: %w", err)
	}
	if zstopErr != nil {
		return nil, zstopErr
	}
	fullPolicies := zoneResourcesSent(g, "zone-1", policyType)
	fullBytes := p.Bytes()

	// Resume with nothing changed.
	z, err = v.start(zc)
	if err != nil {
		return nil, err
	}
	defer z.stop()
	o.Progress.Start("resume: reconnect", 0)
	deadline := time.Now().Add(time.Minute)
	for {
		gc, _ := g.e.Insights().Get("zone-1")
		zcs, _ := z.e.Insights().Get(engine.GlobalPeer)
		if gc.Online && gc.Sessions >= 2 && zcs.Online {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("zone did not reconnect within a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := settle(ctx, p, c.Quiet); err != nil {
		return nil, err
	}
	o.Progress.Finish()
	zc2, _ := z.e.Insights().Get(engine.GlobalPeer)
	resPolicies := zoneResourcesSent(g, "zone-1", policyType) - fullPolicies
	resStatuses := zc2.Types[statusType].ResourcesSent
	resBytes := p.Bytes() - fullBytes

	r.row("full sync (baseline)", fullPolicies, fullStatuses, float64(fullBytes)/1024)
	r.row("resume, unchanged", resPolicies, resStatuses, float64(resBytes)/1024)
	r.Figures["n"] = float64(c.N)
	r.Figures["full_policies_sent"] = float64(fullPolicies)
	r.Figures["full_statuses_sent"] = float64(fullStatuses)
	r.Figures["full_wire_bytes"] = float64(fullBytes)
	r.Figures["resume_policies_sent"] = float64(resPolicies)
	r.Figures["resume_statuses_sent"] = float64(resStatuses)
	r.Figures["resume_wire_bytes"] = float64(resBytes)
	r.Figures["resume_bytes_ratio"] = float64(resBytes) / float64(fullBytes)
	r.Pass = resPolicies == 0 && resStatuses == 0
	r.note("resume wire bytes are TLS and HTTP/2 setup, the token, and each side's subscription listing the versions it holds (initial_resource_versions)")
	return r, nil
}

func zoneResourcesSent(g *node, zone, typ string) uint64 {
	c, _ := g.e.Insights().Get(zone)
	return c.Types[typ].ResourcesSent
}

// settle waits until no byte crossed p for quiet.
func settle(ctx context.Context, p *proxy, quiet time.Duration) error {
	last, since := p.Bytes(), time.Now()
	for time.Since(since) < quiet {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(50 * time.Millisecond):
		}
		if b := p.Bytes(); b != last {
			last, since = b, time.Now()
		}
	}
	return nil
}
