package kdsbench

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"
)

// UpdateConfig sizes the update mode.
type UpdateConfig struct {
	N       int // synced resources (default 100k)
	Updates int // measured engine updates (default 1000)
	// BaselineUpdates is the measured baseline updates (default 200:
	// LinearCache takes tens of milliseconds per update at 100k).
	BaselineUpdates int
	Size            int // spec bytes (default 1 KiB)
	// ZoneMemory puts the zone on the memory store (default bbolt).
	ZoneMemory bool
	// TraceLatency follows every engine update through its stages
	// (changeTracer) and reports where the time goes.
	TraceLatency bool
	// ExecTrace, when set, is a file for a runtime/trace of the measured
	// engine updates.
	ExecTrace string
}

// Update measures single-resource update latency with N resources synced:
// from just before the write on global (admin-API path: validation by the
// plugin, bbolt commit with fsync) until the zone's store has committed the
// new version (bbolt, fsync), seen by a watcher on the zone's store. The
// baseline is LinearCache.UpdateResource until the minimal delta client has
// received the resource.
func Update(ctx context.Context, o Options, c UpdateConfig) (*Report, error) {
	o = o.withDefaults()
	if c.N <= 0 {
		c.N = 100000
	}
	if c.Updates <= 0 {
		c.Updates = 1000
	}
	if c.BaselineUpdates <= 0 {
		c.BaselineUpdates = 200
	}
	if c.Size <= 0 {
		c.Size = 1024
	}
	c.BaselineUpdates = min(c.BaselineUpdates, c.N)
	r := newReport("update", "p99 ≤ 10 ms from the global write until the zone has applied it",
		"N", "path", "updates", "p50 ms", "p99 ms", "max ms")

	// Baseline.
	x, err := startXDS(xdsResources("p", c.N, c.Size), Link{})
	if err != nil {
		return nil, err
	}
	var xa arrivals
	cl, err := dialXDS(x.proxy.Addr().String(), 0, func(name string, v []byte, at time.Time) { xa.saw(0, name, v, at) })
	if err != nil {
		x.close()
		return nil, err
	}
	err = cl.waitCount(ctx, c.N, 2*time.Minute)
	var base []time.Duration
	if err == nil {
		base, err = measureOver(ctx, o.Progress, "update: baseline", c.BaselineUpdates, c.N, 1, &xa, nil, func(i int, name string) error {
			return x.cache.UpdateResource(name, wrapperspb.Bytes(specOf(fmt.Sprintf("u%d", i), c.Size)))
		}, nil)
	}
	cl.close()
	x.close()
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}

	// Engine.
	v, err := newEnv(o.PluginsDir, o.Log)
	if err != nil {
		return nil, err
	}
	defer v.close()
	g, err := v.startLoadedGlobal(ctx, o, "global", "update: load global", c.N, c.Size)
	if err != nil {
		return nil, err
	}
	defer g.stop()
	zc, err := v.zoneConfig(g, "zone-1", localAddr(g.e.KDSAddr()), "")
	if err != nil {
		return nil, err
	}
	if c.ZoneMemory {
		zc.Store = "memory"
	}
	z, err := v.start(zc)
	if err != nil {
		return nil, err
	}
	defer z.stop()
	var ea arrivals
	cnt, stop, err := watchZone(ctx, z, 0, &ea)
	if err != nil {
		return nil, err
	}
	defer stop()
	o.Progress.Start("update: initial sync", c.N)
	if err := cnt.waitFor(ctx, 2*time.Minute, func(m map[resourceKey]string) bool { o.Progress.Set(len(m)); return len(m) >= c.N }); err != nil {
		return nil, fmt.Errorf("initial sync: %w", err)
	}
	o.Progress.Finish()
	var tr *changeTracer
	if c.TraceLatency {
		tr = newChangeTracer()
		defer tr.hook()()
	}
	if c.ExecTrace != "" {
		stopTrace, err := startExecTrace(c.ExecTrace)
		if err != nil {
			return nil, err
		}
		defer stopTrace()
	}
	// The disk floor: the data syncs of the path's commits (global's, and
	// the zone's on bbolt), two each, alone on the same disk, sampled
	// after each engine update so that both see the same load.
	syncs := 4
	if c.ZoneMemory {
		syncs = 2
	}
	floor, err := newDiskFloor(v.dir, syncs)
	if err != nil {
		return nil, err
	}
	defer floor.close()
	writes := make([]time.Duration, 0, c.Updates)
	write := func(i int, name string) error {
		start := time.Now()
		_, err := g.e.Write(ctx, policyWrite(i, name, c.Size))
		end := time.Now()
		if tr != nil {
			tr.wrote(end)
		}
		writes = append(writes, end.Sub(start))
		return err
	}
	floors := make([]time.Duration, 0, c.Updates)
	eng, err := measureOver(ctx, o.Progress, "update: engine", c.Updates, c.N, 1, &ea, tr, write, func() error {
		f, err := floor.sample()
		floors = append(floors, f)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	if tr != nil {
		tr.report(r, "engine", "engine")
	}
	for _, x := range []struct {
		name string
		ds   []time.Duration
	}{{"baseline", base}, {"engine", eng}, {"engine_global_write", writes}, {"disk_floor", floors}} {
		p50, p99, mx := percentile(x.ds, 0.5), percentile(x.ds, 0.99), percentile(x.ds, 1)
		r.row(c.N, x.name, len(x.ds), ms(p50), ms(p99), ms(mx))
		r.Figures[x.name+"_p50_ms"] = ms(p50)
		r.Figures[x.name+"_p99_ms"] = ms(p99)
		r.Figures[x.name+"_max_ms"] = ms(mx)
	}
	r.Figures["n"] = float64(c.N)
	r.Figures["p99_ratio"] = r.Figures["engine_p99_ms"] / r.Figures["baseline_p99_ms"]
	r.Figures["engine_p99_over_disk_floor"] = r.Figures["engine_p99_ms"] / r.Figures["disk_floor_p99_ms"]
	r.Pass = r.Figures["engine_p99_ms"] <= 10
	commits := "global's commit and the zone's"
	if c.ZoneMemory {
		commits = "global's commit only, the zone being on the memory store"
	}
	r.note("disk_floor is, after each engine update, %d page writes each followed by fdatasync, in series, into a file of its own on the same disk: the syncs the engine path holds in its commits (bbolt syncs twice per commit: %s); no durable path through these commits is faster than it", syncs, commits)
	r.note("engine_global_write is the part of each engine update spent in the global write alone (validation and commit on global), until Write returned")
	zs := "bbolt with fsync"
	if c.ZoneMemory {
		zs = "memory"
	}
	r.note("engine path: global write (plugin validation + bbolt commit with fsync) → delta response over TLS → zone validation → zone store (%s) commit → watcher", zs)
	return r, nil
}
