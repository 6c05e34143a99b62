package kdsbench

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/kds-engine/kds-engine/engine"
	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// ChurnConfig sizes the churn mode.
type ChurnConfig struct {
	// Zones is the number of zones (default 100).
	Zones int
	// PerZone is the status resources each zone rewrites every Interval
	// (default 1000).
	PerZone int
	// Interval is how often each resource changes (default 10 s): the
	// offered rate is Zones × PerZone / Interval updates per second.
	Interval time.Duration
	// Duration is how long the steady phase runs (default 5 min).
	Duration time.Duration
	// Size is the approximate spec size in bytes (default 512).
	Size int
	// RampStep, when positive, runs a ramp after the steady phase: the
	// rate is multiplied by 1.5 every RampStep until global stops keeping
	// up (or RampMax is reached).
	RampStep time.Duration
	// RampMax caps the ramp's rate multiplier (default 16).
	RampMax float64
	// FullZones runs every zone as a full engine (memory store, its own
	// plugin process validating each write before it is synced). Off (the
	// default), the zones are light zones (see startLightZone): the
	// engine's dialer, mux and kdssync server serving their statuses from
	// an in-memory index the writers put into, with no plugin and no store.
	// Global is the same real engine either way; light zones leave the
	// machine's CPU to it instead of to 100 zones' validation, which a real
	// deployment spreads over 100 machines.
	FullZones bool
	// TraceLatency follows every update through the stages of its way
	// (zone sent, global received, checked, applying, applied, visible)
	// and the store's group commits, and reports where the write→apply
	// latency goes. It costs some CPU per update.
	TraceLatency bool
	// SteadyProfile, when set, is the file a CPU profile of the steady phase
	// alone is written to (not together with a profile of the whole run).
	SteadyProfile string
}

// Churn targets.
const (
	churnP99     = 250 * time.Millisecond
	churnRSSGrow = 0.10
)

// Churn measures what real meshes do to global: every zone's statuses
// change all the time. Zones × PerZone resources (the synctest plugin's
// zone→global type) are rewritten every Interval, spread evenly, by
// in-process zones on the memory store; global runs bbolt. It reports
// the latency from a zone's write to global's commit of it, whether
// global keeps up (the updates not yet applied do not grow), RSS over
// time, and CPU per update; the optional ramp finds the rate where global
// stops keeping up. The baseline, measured first in the same run, is the
// same zones writing at 1% of the rate: the write→apply latency of an idle
// global, which the steady phase's is compared with.
func Churn(ctx context.Context, o Options, c ChurnConfig) (*Report, error) {
	o = o.withDefaults()
	c = c.withDefaults()
	rate := float64(c.Zones*c.PerZone) / c.Interval.Seconds()
	r := newReport("churn", fmt.Sprintf("%d zones × %d statuses every %s (%.0f updates/s) for %s: global keeps up, write→apply p99 ≤ %s, RSS growth ≤ %.0f%% after the first minute",
		c.Zones, c.PerZone, c.Interval, rate, c.Duration, churnP99, churnRSSGrow*100),
		"phase", "updates/s offered", "updates/s written", "applied", "p50 ms", "p99 ms", "max ms", "pending (median/max)", "RSS MiB", "CPU µs/update", "of it plugins µs")
	v, err := newEnv(o.PluginsDir, o.Log)
	if err != nil {
		return nil, err
	}
	defer v.close()
	g, err := v.startGlobal("global-churn", nil)
	if err != nil {
		return nil, err
	}
	defer g.discard()

	t := newChurnTracker(c.Zones, c.PerZone)
	if c.TraceLatency {
		t.trace = newStageTracer()
		defer t.trace.start()()
	}
	wctx, cancelWatch := context.WithCancel(ctx)
	defer cancelWatch()
	var joinWatch func()
	pprof.Do(wctx, benchLabels, func(wctx context.Context) {
		_, joinWatch, err = follow(wctx, g.e.Store(), store.Filter{Type: statusType}, 0, t.applied)
	})
	if err != nil {
		return nil, err
	}
	defer joinWatch()
	defer cancelWatch()

	var zs churnZones
	if c.FullZones {
		zs, err = startFullChurnZones(ctx, o, v, g, t, c)
	} else {
		zs, err = startLightChurnZones(o, v, g, t, c)
	}
	defer zs.stop()
	if err != nil {
		return nil, err
	}
	if err := t.waitSettled(ctx, 2*time.Minute, zs.failed); err != nil {
		return nil, fmt.Errorf("initial sync of the zones' statuses: %w", err)
	}
	if !zs.connectAt.IsZero() {
		took, peak, pool := time.Since(zs.connectAt), readStatus("self", "VmHWM:"), g.e.InboundPool()
		r.Figures["initial_sync_s"] = took.Seconds()
		r.Figures["initial_sync_rss_before_mib"] = mib(zs.rssBefore)
		r.Figures["initial_sync_peak_rss_mib"] = mib(peak)
		r.Figures["initial_sync_pool_peak_mib"] = mib(uint64(pool.Peak))
		r.Figures["initial_sync_pool_waits"] = float64(pool.Waits)
		r.Figures["initial_sync_pool_longest_wait_ms"] = ms(pool.LongestWait)
		reconnected := 0 // zones global saw more than one session of
		for i := range c.Zones {
			if zi, _ := g.e.Insights().Get(churnZone(i)); zi.Sessions > 1 {
				reconnected++
			}
		}
		r.Figures["initial_sync_zones_reconnected"] = float64(reconnected)
		slots := g.e.InitialSyncs()
		r.Figures["initial_sync_slots"] = float64(slots.Slots)
		r.Figures["initial_sync_slot_waits"] = float64(slots.Waits)
		r.Figures["initial_sync_slots_expired"] = float64(slots.Expired)
		r.Figures["initial_sync_slots_idled"] = float64(slots.Idled)
		r.note("initial sync: %d zones holding %d statuses each connected together; global held all %d after %.1f s, %d zones needing more than one session; this process's RSS %.0f MiB before they connected, peak %.0f MiB; global's shared inbound pool peaked at %.1f of %.0f MiB, %d waits for room, the longest %.0f ms; %d zones waited for one of %d initial-sync slots, %d held to the hold limit, %d given back idle",
			c.Zones, c.PerZone, c.Zones*c.PerZone, took.Seconds(), reconnected, mib(zs.rssBefore), mib(peak), mib(uint64(pool.Peak)), mib(uint64(pool.Limit)), pool.Waits, ms(pool.LongestWait), slots.Waits, slots.Slots, slots.Expired, slots.Idled)
	}

	phase := func(name string, mult float64, d time.Duration) (churnPhase, error) {
		o.Progress.Start("churn: "+name, int(d.Seconds()))
		defer o.Progress.Finish()
		return t.run(ctx, zs, c, mult, d, func(s int) { o.Progress.Set(s) })
	}
	idle, err := phase("baseline (1% of the rate)", 0.01, c.baselineDuration())
	if err != nil {
		return nil, err
	}
	idle.report(r, "baseline: 1% of the rate", rate*0.01)
	if t.trace != nil {
		t.trace.report(r, "baseline", "baseline")
	}
	r.Figures["baseline_p99_ms"] = ms(percentile(idle.lat, 0.99))
	stopProfile, err := StartCPUProfile(c.SteadyProfile)
	if err != nil {
		return nil, fmt.Errorf("steady phase profile (not with a profile of the whole run): %w", err)
	}
	steady, err := phase("steady", 1, c.Duration)
	if perr := stopProfile(); err == nil {
		err = perr
	}
	if err != nil {
		return nil, err
	}
	steady.report(r, "steady", rate)
	if t.trace != nil {
		t.trace.report(r, "steady", "steady")
	}
	p99 := percentile(steady.lat, 0.99)
	r.Figures["steady_p50_ms"] = ms(percentile(steady.lat, 0.5))
	r.Figures["steady_p99_ms"] = ms(p99)
	if b := r.Figures["baseline_p99_ms"]; b > 0 {
		r.Figures["steady_p99_vs_baseline"] = ms(p99) / b
	}
	r.Figures["steady_updates_per_s"] = steady.writtenRate()
	r.Figures["steady_cpu_us_per_update"] = steady.cpuPerUpdate()
	r.Figures["steady_cpu_plugins_us_per_update"] = steady.perUpdate(steady.cpuPlugins)
	r.Figures["steady_cpu_this_process_us_per_update"] = steady.perUpdate(steady.cpu - steady.cpuPlugins)
	r.Figures["full_zones"] = b2f(c.FullZones)
	r.Figures["steady_pending_first_minute_median"] = float64(steady.pendingMedian(0, time.Minute))
	r.Figures["steady_pending_last_minute_median"] = float64(steady.pendingMedian(c.Duration-time.Minute, c.Duration))
	grow := steady.rssGrowth(time.Minute)
	r.Figures["steady_rss_growth_after_first_minute"] = grow
	keeps := steady.keptUp() && steady.offered()
	r.Figures["steady_kept_up"] = b2f(keeps)
	if !steady.offered() {
		r.note("the writers reached only %.0f of %.0f updates/s: this machine cannot offer the rate while it runs global and the zones, so keeping up at this rate is not shown", steady.writtenRate(), rate)
	}
	if missed := churnMissed(keeps, p99, grow); len(missed) > 0 {
		r.Pass = false
		r.note("steady phase missed: %s", strings.Join(missed, "; "))
	}
	if c.Duration < 2*time.Minute {
		r.note("the steady phase ran %s; the RSS and backlog verdicts compare its first minute with the rest, so they need more than 2 minutes (MISS means not shown to pass)", c.Duration)
		r.Pass = false
	}

	if c.RampStep > 0 {
		// Up by ×1.5 while global keeps up; if it did not keep up with the
		// configured rate, down by ÷1.5 until it does.
		up := keeps
		last := 0.0
		if up {
			last = 1
		}
		for mult := 1.0; ; {
			if up {
				mult *= 1.5
			} else {
				mult /= 1.5
			}
			if mult > c.RampMax || mult < 1/c.RampMax {
				break
			}
			p, err := phase(fmt.Sprintf("ramp ×%.2f", mult), mult, c.RampStep)
			if err != nil {
				return nil, err
			}
			p.report(r, fmt.Sprintf("ramp ×%.2f", mult), rate*mult)
			ok := p.keptUp() && p.offered()
			if up && !ok {
				break
			}
			if ok {
				last = mult
				if !up {
					break
				}
			}
		}
		r.Figures["ramp_max_rate_kept_up"] = rate * last
		if last > 0 {
			r.note("highest rate offered in full and kept up with: %.0f updates/s (×%.2f of the configured rate; ramp steps of %s, ×1.5 apart)", rate*last, last, c.RampStep)
		} else {
			r.note("global did not keep up even at ×%.3f of the configured rate", 1/c.RampMax)
		}
	}
	if c.FullZones {
		r.note("zones run in this process as full engines on the memory store (one kds-plugin-synctest process each, validating every write); global runs bbolt. RSS is this whole process's VmRSS (global and the zones; the zones hold a fixed set); CPU includes the plugins' processes (\"plugins\": global's and the zones')")
	} else {
		r.note("zones are light zones in this process (the engine's dialer, TLS, token, mux and kdssync server serving each zone's statuses from an in-memory index; no zone plugin, no zone store); global is the full engine: bbolt with fsync, every status validated by its kds-plugin-synctest process. RSS is this whole process's VmRSS; CPU is this process (global, the light zones, the writers) plus global's plugin process (\"plugins\"); a CPU profile (--cpuprofile) tells global's share: the zones' samples carry the label side=zone, the tracker's side=bench")
	}
	r.note("pending = statuses whose latest zone write global has not committed yet, sampled every second; global keeps up when the last minute's median pending is at most 1.5× the first minute's + the updates of half a second, and at most the updates of one second")
	return r, nil
}

func (c ChurnConfig) withDefaults() ChurnConfig {
	if c.Zones <= 0 {
		c.Zones = 100
	}
	if c.PerZone <= 0 {
		c.PerZone = 1000
	}
	if c.Interval <= 0 {
		c.Interval = 10 * time.Second
	}
	if c.Duration <= 0 {
		c.Duration = 5 * time.Minute
	}
	if c.Size <= 0 {
		c.Size = 512
	}
	if c.RampMax <= 0 {
		c.RampMax = 16
	}
	return c
}

// baselineDuration is how long the 1% phase runs: long enough for a few
// hundred samples at the default sizes.
func (c ChurnConfig) baselineDuration() time.Duration {
	return min(30*time.Second, max(c.Duration/4, 2*time.Second))
}

func churnZone(i int) string { return fmt.Sprintf("churn-%d", i) }

// benchLabels marks the CPU profile samples of the churn tracker (global's
// watcher that records what it committed, and the sampler).
var benchLabels = pprof.Labels("side", "bench")

// churnZones are the running zones of a churn run.
type churnZones struct {
	// write makes zone i's status r its latest (r.Version is the tracker's
	// sequence) and returns once the zone will sync it.
	write func(ctx context.Context, i int, r *resource.Resource) error
	// failed returns an error when a zone can no longer sync.
	failed func() error
	stops  []func()
	// Light zones only: when the first zone started to connect, holding
	// its statuses, and this process's RSS just before.
	connectAt time.Time
	rssBefore uint64
}

// stop stops every zone started.
func (zs churnZones) stop() {
	for _, f := range zs.stops {
		f()
	}
}

// startFullChurnZones starts c.Zones zone engines on the memory store, each
// with its own plugin process, loaded with their statuses. Writes go
// through each zone's validated write path.
func startFullChurnZones(ctx context.Context, o Options, v *env, g *node, t *churnTracker, c ChurnConfig) (churnZones, error) {
	zones := make([]*node, c.Zones)
	zs := churnZones{
		write: func(ctx context.Context, i int, r *resource.Resource) error {
			r.Version = "" // the zone's store versions its writes
			_, err := zones[i].e.Write(ctx, r)
			return err
		},
		failed: func() error { return nil },
	}
	o.Progress.Start("churn: start zones and load their statuses", c.Zones)
	defer o.Progress.Finish()
	for i := range zones {
		zc, err := v.zoneConfig(g, churnZone(i), localAddr(g.e.KDSAddr()), "")
		if err != nil {
			return zs, err
		}
		zc.Store = engine.StoreMemory
		z, err := v.start(zc)
		if err != nil {
			return zs, err
		}
		zs.stops = append(zs.stops, func() { _ = z.stop() })
		zones[i] = z
		rs := make([]*resource.Resource, c.PerZone)
		for j := range rs {
			rs[j] = t.next(i, j, c.Size)
			rs[j].Version = ""
		}
		if err := z.e.BulkLoad(ctx, rs); err != nil {
			return zs, fmt.Errorf("load zone %d: %w", i, err)
		}
		o.Progress.Set(i + 1)
	}
	return zs, nil
}

// startLightChurnZones starts c.Zones light zones, each serving its
// statuses from its own index. A write is a Put into the zone's index: what
// a zone engine's change feed does after its store committed the write.
func startLightChurnZones(o Options, v *env, g *node, t *churnTracker, c ChurnConfig) (churnZones, error) {
	ixs := make([]*kdssync.Index, c.Zones)
	var lz []*lightZone
	zs := churnZones{
		write: func(_ context.Context, i int, r *resource.Resource) error { return ixs[i].Put(r) },
		failed: func() error {
			for _, z := range lz {
				if err := z.failed(); err != nil {
					return err
				}
			}
			return nil
		},
	}
	for i := range ixs {
		ixs[i] = kdssync.NewIndex([]string{statusType})
		for j := range c.PerZone {
			if err := ixs[i].Put(t.next(i, j, c.Size)); err != nil {
				return zs, fmt.Errorf("zone %d: %w", i, err)
			}
		}
	}
	// Every zone holds its statuses before the first connects, so that
	// their initial syncs reach global together, as when global comes back
	// to zones that wrote while it was away.
	runtime.GC()
	resetPeakRSS()
	zs.rssBefore, zs.connectAt = readRSS(), time.Now()
	o.Progress.Start("churn: start light zones with their statuses", c.Zones)
	defer o.Progress.Finish()
	var none arrivals // no policies are written: nothing arrives
	for i := range ixs {
		z, err := startLightZone(v, g, churnZone(i), i, &none, ixs[i], nil, o.Log)
		if err != nil {
			return zs, err
		}
		lz = append(lz, z)
		zs.stops = append(zs.stops, z.stop)
		o.Progress.Set(i + 1)
	}
	return zs, nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// churnTracker knows, for every (zone, status), the sequence number of the
// latest write and of the latest one global committed, and collects the
// write→commit latencies.
type churnTracker struct {
	zones   map[string]int
	written [][]atomic.Int64
	held    [][]atomic.Int64 // the sequence global committed last

	mu  sync.Mutex
	lat []time.Duration // guarded by mu; reset per phase

	// trace, when set, breaks each update's latency into stages.
	trace *stageTracer
}

func newChurnTracker(zones, per int) *churnTracker {
	t := &churnTracker{zones: make(map[string]int, zones), written: make([][]atomic.Int64, zones), held: make([][]atomic.Int64, zones)}
	for i := range zones {
		t.zones[churnZone(i)] = i
		t.written[i] = make([]atomic.Int64, per)
		t.held[i] = make([]atomic.Int64, per)
	}
	return t
}

// next returns zone i's status j at its next sequence number, stamped with
// the time of the write; its version is the sequence.
func (t *churnTracker) next(i, j, size int) *resource.Resource {
	seq := t.written[i][j].Load() + 1
	t.written[i][j].Store(seq)
	val := fmt.Sprintf("c%d-%d", seq, time.Now().UnixNano())
	return &resource.Resource{Type: statusType, Mesh: benchMesh, Name: fmt.Sprintf("s-%d", j), Version: strconv.FormatInt(seq, 10), Spec: specOf(val, size)}
}

var churnValue = []byte(`"value":"c`)

// applied is global's watcher callback: it records the sequence and the
// latency of every status global commits.
func (t *churnTracker) applied(ev store.Event) {
	now := time.Now()
	if ev.Kind != store.EventPut {
		return
	}
	i, ok := t.zones[ev.Resource.Zone]
	if !ok {
		return
	}
	j, err := strconv.Atoi(ev.Resource.Name[len("s-"):])
	if err != nil || j < 0 || j >= len(t.held[i]) {
		return
	}
	spec := ev.Resource.Spec
	k := bytes.Index(spec, churnValue)
	if k < 0 {
		return
	}
	rest := spec[k+len(churnValue):]
	dash := bytes.IndexByte(rest, '-')
	end := bytes.IndexByte(rest, '"')
	if dash < 0 || end < dash {
		return
	}
	seq, err1 := strconv.ParseInt(string(rest[:dash]), 10, 64)
	at, err2 := strconv.ParseInt(string(rest[dash+1:end]), 10, 64)
	if err1 != nil || err2 != nil {
		return
	}
	t.held[i][j].Store(seq)
	if t.trace != nil {
		t.trace.seen(string(rest[:end]), time.Unix(0, at), now)
	}
	t.mu.Lock()
	t.lat = append(t.lat, now.Sub(time.Unix(0, at)))
	t.mu.Unlock()
}

// pending counts the statuses whose latest write global has not committed.
func (t *churnTracker) pending() int {
	n := 0
	for i := range t.written {
		for j := range t.written[i] {
			if t.held[i][j].Load() != t.written[i][j].Load() {
				n++
			}
		}
	}
	return n
}

// waitSettled waits until global holds every zone's latest write, or failed
// returns an error.
func (t *churnTracker) waitSettled(ctx context.Context, limit time.Duration, failed func() error) error {
	deadline := time.Now().Add(limit)
	for t.pending() > 0 {
		if err := failed(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d statuses not at global after %s", t.pending(), limit)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// churnPhase is what one phase measured.
type churnPhase struct {
	d        time.Duration
	written  int64
	lat      []time.Duration
	pendings []int         // one sample per second
	rss      []float64     // MiB, one sample per second
	cpu      time.Duration // this process and its children (the plugins)
	// cpuPlugins is the children's share of cpu.
	cpuPlugins time.Duration
	rate       float64 // offered updates/s, for the keep-up slack
}

// run rewrites every zone's statuses at mult times the configured rate for
// d, sampling pending and RSS every second.
func (t *churnTracker) run(ctx context.Context, zs churnZones, c ChurnConfig, mult float64, d time.Duration, tick func(int)) (churnPhase, error) {
	p := churnPhase{d: d, rate: float64(c.Zones*c.PerZone) / c.Interval.Seconds() * mult}
	// The latencies' buffer is sized for the phase and touched before it
	// starts, so that the tracker's own memory is not counted as growth
	// of RSS during the phase.
	want := int(p.rate*d.Seconds()*1.25) + 1024
	t.mu.Lock()
	if cap(t.lat) < want {
		t.lat = nil
		t.lat = make([]time.Duration, want)
		for i := range t.lat {
			t.lat[i] = 1
		}
	}
	t.lat = t.lat[:0]
	t.mu.Unlock()
	if t.trace != nil {
		t.trace.reset()
	}
	var written atomic.Int64
	// The phase ends by cancellation, not by a deadline: a deadline
	// reaches gRPC calls inside the writes, which may time out on their own
	// timer before the context says it is done.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := time.AfterFunc(d, cancel)
	defer stop.Stop()
	cpu0 := sampleCPU()
	eg, ectx := errgroup.WithContext(ctx)
	// Each zone's writer spreads its statuses evenly over the interval.
	gap := time.Duration(float64(c.Interval) / mult / float64(c.PerZone))
	for i := range c.Zones {
		eg.Go(func() (err error) {
			pprof.Do(ectx, zoneLabels, func(ectx context.Context) { err = t.write(ectx, zs, i, c, gap, &written) })
			return err
		})
	}
	eg.Go(func() (err error) {
		pprof.Do(ectx, benchLabels, func(ectx context.Context) { err = t.sample(ectx, zs, &p, tick) })
		return err
	})
	if err := eg.Wait(); err != nil {
		return p, err
	}
	cpu := sampleCPU()
	p.cpu = cpu.since(cpu0)
	p.cpuPlugins = cpu.childrenSince(cpu0)
	p.written = written.Load()
	t.mu.Lock()
	p.lat = slices.Clone(t.lat)
	t.mu.Unlock()
	return p, nil
}

// write rewrites zone i's statuses one after the other, gap apart, until
// ctx ends, counting them in written.
func (t *churnTracker) write(ctx context.Context, zs churnZones, i int, c ChurnConfig, gap time.Duration, written *atomic.Int64) error {
	next := time.Now().Add(time.Duration(i) * gap / time.Duration(c.Zones))
	for j := 0; ; j = (j + 1) % c.PerZone {
		if wait := time.Until(next); wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		} else if ctx.Err() != nil {
			return nil
		}
		if err := zs.write(ctx, i, t.next(i, j, c.Size)); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("zone %d write: %w", i, err)
		}
		written.Add(1)
		next = next.Add(gap)
	}
}

// sample records pending and RSS into p every second until ctx ends, and
// fails when a zone can no longer sync.
func (t *churnTracker) sample(ctx context.Context, zs churnZones, p *churnPhase, tick func(int)) error {
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	for s := 1; ; s++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
			if err := zs.failed(); err != nil {
				return err
			}
			p.pendings = append(p.pendings, t.pending())
			p.rss = append(p.rss, mib(readRSS()))
			tick(s)
		}
	}
}

// offered: the writers wrote at least 90% of the rate asked of them.
func (p churnPhase) offered() bool { return p.writtenRate() >= 0.9*p.rate }

func (p churnPhase) writtenRate() float64 { return float64(p.written) / p.d.Seconds() }

func (p churnPhase) cpuPerUpdate() float64 { return p.perUpdate(p.cpu) }

// perUpdate is cpu in µs per update written.
func (p churnPhase) perUpdate(cpu time.Duration) float64 {
	if p.written == 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / float64(p.written)
}

// pendingMedian is the median pending sample between from and to.
func (p churnPhase) pendingMedian(from, to time.Duration) int {
	lo, hi := max(int(from.Seconds()), 0), min(int(to.Seconds()), len(p.pendings))
	if lo >= hi {
		return 0
	}
	s := slices.Clone(p.pendings[lo:hi])
	slices.Sort(s)
	return s[len(s)/2]
}

// churnMissed names the steady phase's targets that were missed: keeping
// up, the write→apply p99, the RSS growth after the first minute.
func churnMissed(keptUp bool, p99 time.Duration, rssGrowth float64) []string {
	var missed []string
	if !keptUp {
		missed = append(missed, "global did not keep up")
	}
	if p99 > churnP99 {
		missed = append(missed, fmt.Sprintf("write→apply p99 %.0f ms > %s", ms(p99), churnP99))
	}
	if rssGrowth > churnRSSGrow {
		missed = append(missed, fmt.Sprintf("RSS grew %.1f %% after the first minute > %.0f %%", 100*rssGrowth, 100*churnRSSGrow))
	}
	return missed
}

// keptUp: the last minute's (or last half's, for short phases) median
// pending is at most 1.5× the first one's plus half a second of updates,
// and at most one second of updates. The second bound matters because
// pending cannot grow past the number of statuses (a status rewritten before
// global applied it is pending once): a global far behind holds pending at
// that cap, flat, which the first bound alone would call keeping up.
func (p churnPhase) keptUp() bool {
	n := len(p.pendings)
	if n < 2 {
		return true
	}
	win := min(60, n/2)
	first := p.pendingMedian(0, time.Duration(win)*time.Second)
	last := p.pendingMedian(time.Duration(n-win)*time.Second, time.Duration(n)*time.Second)
	return float64(last) <= 1.5*float64(first)+p.rate/2 && float64(last) <= p.rate
}

// rssGrowth is the growth of RSS at the end over RSS at after, as a
// fraction (0 when there are too few samples).
func (p churnPhase) rssGrowth(after time.Duration) float64 {
	k := int(after.Seconds())
	if k >= len(p.rss) || p.rss[k] == 0 {
		return 0
	}
	return p.rss[len(p.rss)-1]/p.rss[k] - 1
}

func (p churnPhase) report(r *Report, name string, offered float64) {
	pend := "-"
	if len(p.pendings) > 0 {
		pend = fmt.Sprintf("%d/%d", p.pendingMedian(0, p.d), slices.Max(p.pendings))
	}
	rss := "-"
	if len(p.rss) > 0 {
		rss = fmt.Sprintf("%.0f→%.0f", p.rss[0], p.rss[len(p.rss)-1])
	}
	lat := slices.Clone(p.lat)
	r.row(name, offered, p.writtenRate(), len(lat), ms(percentile(lat, 0.5)), ms(percentile(lat, 0.99)), ms(percentile(lat, 1)), pend, rss, p.cpuPerUpdate(), p.perUpdate(p.cpuPlugins))
}
