package kdsbench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/kds-engine/kds-engine/engine"
	"github.com/kds-engine/kds-engine/engine/internal/kdsauth"
	"github.com/kds-engine/kds-engine/engine/internal/kdsgrpc"
	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
	"github.com/kds-engine/kds-engine/engine/internal/mux"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/tlsutil"
)

// ScaleConfig sizes the scale mode.
type ScaleConfig struct {
	Ns      []int // resource counts (default 10k, 100k, 1M)
	Zones   int   // light zones for the fan-out (default 100)
	Changes int   // measured policy changes per N (default 50)
	Size    int   // spec bytes (default 1 KiB)
	// Stall ends a wait (an initial sync) that made no progress for this
	// long (default 2 minutes).
	Stall time.Duration
	// ZoneCommand, if set, runs the measured engine zone in a child process
	// (as production runs a zone apart from global): it is called with the
	// zone's Config as JSON and returns the command to start (see
	// ZoneProcess). Empty runs that zone in this process, where it shares
	// global's heap and GC.
	ZoneCommand func(configJSON string) *exec.Cmd
	// LightResume makes the light zones resume instead of syncing: each
	// announces, as its held versions, global's current version of every
	// resource, so global sends them nothing but later changes. Their
	// sinks hand out clones of one map built once from global's store (the
	// clones share its strings).
	LightResume bool
	// LightGroup connects the light zones this many at a time, each group
	// once the ones before it hold all N (0: all at once). It bounds what
	// sessions starting together hold in transit (a resuming zone's
	// announced versions pass through several copies).
	LightGroup int
	// SyncCPUProfile, if set, is a file that receives a CPU profile of this
	// process covering only the measured zone's initial sync (of the last N).
	SyncCPUProfile string
}

// Targets of the scale mode, set at 1M resources and judged at the largest
// N measured.
const (
	scaleHeapTarget = 2048             // global heap bytes per resource
	scaleSyncTarget = 15 * time.Second // one zone's initial sync of all N (at 1M)
	scaleP99Target  = 200 * time.Millisecond
)

// scalePoint is what one N measured.
type scalePoint struct {
	n                    int
	heapPerRes           float64
	sync                 time.Duration
	p50, p99, max        time.Duration
	lightSync            time.Duration
	heapBefore, heapLoad uint64
	// heapZones is the heap after GC with every light zone connected and
	// holding all N; peakRSS is the process's high-water resident set
	// during this N (VmHWM, reset at its start where the kernel allows).
	heapZones, peakRSS uint64
	// zonePeakRSS is the measured zone's child process's VmHWM (0 when it
	// runs in this process and counts in peakRSS).
	zonePeakRSS uint64
	// syncCPU is the CPU time (user and system) this process spent during
	// the measured zone's sync, zoneCPU the child process's (0 in this
	// process): unlike the wall time, it does not grow with other load on
	// the machine.
	syncCPU, zoneCPU time.Duration
	// lightSent is how many resources global sent the light zones until
	// they held all N (Z × N for a sync, 0 for a resume).
	lightSent uint64
	// clonePerEntry is the heap one clone of the shared held map takes
	// per name (light resume only).
	clonePerEntry float64
}

// Scale measures how global behaves as the number of resources grows: for
// each N it loads N SyncPolicy resources of Size bytes straight into
// global's bbolt store (in batches, as the other modes do), then
//   - reads global's heap per resource (HeapAlloc after GC, loaded minus
//     empty, divided by N),
//   - times one real engine zone (memory store, kds-plugin-synctest; in
//     this process or, with ZoneCommand, a child) from its start until
//     global has its ACK for all N,
//   - connects Zones light zones (syncing all N, or with LightResume
//     resuming from global's versions), times Changes policy writes on
//     global from just before the write until the last light zone applied
//     it, then reads the heap per zone-held name after GC.
//
// A light zone runs the engine's own session code in this process: the
// kdsgrpc Dialer (TLS, zone token, session header, mux.Session) and the
// kdssync client and server, but its sink stores nothing: the client keeps
// name → version of what it holds (as the real zone's client does), the sink
// counts what it applied and reports arrivals. No plugin runs for it and it
// skips validation. So Z zones cost Z × N versions, not Z × N × Size.
func Scale(ctx context.Context, o Options, c ScaleConfig) (*Report, error) {
	o = o.withDefaults()
	if len(c.Ns) == 0 {
		c.Ns = []int{10000, 100000, 1000000}
	}
	if c.Zones <= 0 {
		c.Zones = 100
	}
	if c.Changes <= 0 {
		c.Changes = 50
	}
	if c.Size <= 0 {
		c.Size = 1024
	}
	if c.Stall <= 0 {
		c.Stall = 2 * time.Minute
	}
	light := "light sync s"
	if c.LightResume {
		light = "light resume s"
	}
	r := newReport("scale",
		fmt.Sprintf("at 1M × 1 KiB: global heap ≤ %d B/resource, one zone's initial sync ≤ %s, a policy change reaches all %d zones with p99 ≤ %s",
			scaleHeapTarget, scaleSyncTarget, c.Zones, scaleP99Target),
		"N", "heap B/res", "×first", "zone sync s", "×first", light, "p50 ms", "p99 ms", "×first", "max ms", "B/zone entry", "peak RSS GiB")
	v, err := newEnv(o.PluginsDir, o.Log)
	if err != nil {
		return nil, err
	}
	defer v.close()
	var pts []scalePoint
	for _, n := range c.Ns {
		p, err := scaleOne(ctx, o, v, c, n)
		if err != nil {
			return nil, fmt.Errorf("scale N=%d: %w", n, err)
		}
		pts = append(pts, p)
		first := pts[0]
		ratio := func(a, b float64) float64 {
			if b == 0 {
				return 0
			}
			return a / b
		}
		hr := ratio(p.heapPerRes, first.heapPerRes)
		sr := ratio(p.sync.Seconds(), first.sync.Seconds())
		pr := ratio(ms(p.p99), ms(first.p99))
		perEntry := perRes(p.heapZones, p.heapLoad, n*c.Zones)
		r.row(n, p.heapPerRes, hr, p.sync.Seconds(), sr, p.lightSync.Seconds(), ms(p.p50), ms(p.p99), pr, ms(p.max),
			perEntry, float64(p.peakRSS)/(1<<30))
		k := fmt.Sprintf("n%d_", n)
		r.Figures[k+"heap_per_resource_bytes"] = p.heapPerRes
		r.Figures[k+"heap_empty_bytes"] = float64(p.heapBefore)
		r.Figures[k+"heap_loaded_bytes"] = float64(p.heapLoad)
		r.Figures[k+"zone_sync_s"] = p.sync.Seconds()
		r.Figures[k+"zone_sync_cpu_s"] = p.syncCPU.Seconds()
		if c.LightResume {
			r.Figures[k+"light_zones_resume_s"] = p.lightSync.Seconds()
		} else {
			r.Figures[k+"light_zones_sync_s"] = p.lightSync.Seconds()
		}
		r.Figures[k+"heap_zones_bytes"] = float64(p.heapZones)
		r.Figures[k+"light_resources_sent"] = float64(p.lightSent)
		if c.LightResume {
			r.Figures[k+"light_clone_bytes_per_entry"] = p.clonePerEntry
			r.Figures[k+"global_bytes_per_zone_entry"] = perEntry - p.clonePerEntry
		}
		r.Figures[k+"heap_per_zone_entry_bytes"] = perEntry
		r.Figures[k+"peak_rss_bytes"] = float64(p.peakRSS)
		if c.ZoneCommand != nil {
			r.Figures[k+"zone_peak_rss_bytes"] = float64(p.zonePeakRSS)
			r.Figures[k+"zone_process_cpu_s"] = p.zoneCPU.Seconds()
		}
		r.Figures[k+"change_p50_ms"] = ms(p.p50)
		r.Figures[k+"change_p99_ms"] = ms(p.p99)
		r.Figures[k+"change_max_ms"] = ms(p.max)
		r.Figures[k+"heap_ratio"] = hr
		r.Figures[k+"zone_sync_ratio"] = sr
		r.Figures[k+"change_p99_ratio"] = pr
	}
	last := pts[len(pts)-1]
	r.Figures["zones"] = float64(c.Zones)
	r.Figures["changes"] = float64(min(c.Changes, c.Ns[0]))
	r.Figures["largest_n"] = float64(last.n)
	r.Figures["light_resume"] = b2f(c.LightResume)
	r.Figures["light_group"] = float64(c.LightGroup)
	r.Figures["zone_in_child"] = b2f(c.ZoneCommand != nil)
	// Every target is judged at the largest N: at small N the heap per
	// resource carries fixed costs spread over few resources.
	r.Pass = last.heapPerRes <= scaleHeapTarget && last.sync <= scaleSyncTarget && last.p99 <= scaleP99Target
	if last.n < 1000000 {
		r.note("the targets are set at N=1M; this run's largest N is %d, and the verdict judges that point", last.n)
	}
	r.note("×first is the figure divided by the first N's; heap is runtime.MemStats.HeapAlloc after GC (global loaded minus global empty; no zone connected)")
	where := "in this process (it shares global's heap, GC and cores)"
	if c.ZoneCommand != nil {
		where = "in a child process (its own heap and GC; the same 2 cores)"
	}
	r.note("zone sync: one engine zone (memory store, plugin validation on) %s, from its start to global holding its ACK of all N", where)
	if c.LightGroup > 0 && c.LightGroup < c.Zones {
		r.note("light zones connect %d at a time, each group once the ones before hold all N; the light time covers every group", c.LightGroup)
	}
	if c.LightResume {
		r.note("light resume: all %d light zones from connecting to global holding, for each, its announced versions of all N (global's own, so nothing is sent) and its ACK", c.Zones)
	} else {
		r.note("light sync: all %d light zones from connecting to each having applied all N", c.Zones)
	}
	r.note("light zones: %d in-process zones on the engine's session code (kdsgrpc dialer, TLS, token, mux, kdssync client and server); they keep name → version only, no specs, no plugin, no validation", c.Zones)
	r.note("zone sync CPU (JSON only): CPU seconds this process used during the zone's sync; with the zone in a child process, zone_process_cpu_s is the child's whole life (start to ACK)")
	r.note("B/zone entry: heap after GC with the light zones connected minus heap loaded, over zones × N (global's held versions per zone and the light zones' own maps, both in this process); peak RSS: this process's VmHWM during the N")
	if c.LightResume {
		r.note("light_clone_bytes_per_entry (JSON): the heap one light zone's clone of the shared versions takes per name; global_bytes_per_zone_entry is B/zone entry minus it")
	}
	return r, nil
}

func scaleOne(ctx context.Context, o Options, v *env, c ScaleConfig, n int) (scalePoint, error) {
	p := scalePoint{n: n}
	resetPeakRSS()
	name := fmt.Sprintf("global-scale-%d", n)
	g, err := v.startGlobal(name, nil)
	if err != nil {
		return p, err
	}
	defer g.discard()
	p.heapBefore, _ = heapAndRSS()
	const batch = 50000
	o.Progress.Start(fmt.Sprintf("scale %d: load global", n), n)
	for first := 0; first < n; first += batch {
		k := min(batch, n-first)
		rs := make([]*resource.Resource, k)
		for i := range rs {
			rs[i] = &resource.Resource{Type: policyType, Mesh: benchMesh, Name: fmt.Sprintf("p-%d", first+i), Spec: specOf("v0", c.Size)}
		}
		if err := g.e.BulkLoad(ctx, rs); err != nil {
			o.Progress.Finish()
			return p, fmt.Errorf("load global: %w", err)
		}
		o.Progress.Set(first + k)
	}
	o.Progress.Finish()
	p.heapLoad, _ = heapAndRSS()
	p.heapPerRes = perRes(p.heapLoad, p.heapBefore, n)

	if err = scaleZoneSync(ctx, o, v, g, c, &p); err != nil {
		return p, err
	}

	var held map[string]string
	if c.LightResume {
		if held, err = globalVersions(ctx, g); err != nil {
			return p, err
		}
		// What one light zone's clone costs, to tell the light zones'
		// share of B/zone entry from global's.
		h0, _ := heapAndRSS()
		probe := maps.Clone(held)
		h1, _ := heapAndRSS()
		runtime.KeepAlive(probe)
		p.clonePerEntry = perRes(h1, h0, n)
	}
	var a arrivals
	zones := make([]*lightZone, 0, c.Zones)
	defer func() {
		for _, z := range zones {
			z.stop()
		}
	}()
	what := "sync"
	if c.LightResume {
		what = "resume"
	}
	o.Progress.Start(fmt.Sprintf("scale %d: %d light zones %s", n, c.Zones, what), c.Zones*n)
	group := c.LightGroup
	if group <= 0 || group > c.Zones {
		group = c.Zones
	}
	start := time.Now()
	for first := 0; first < c.Zones; first += group {
		for i := first; i < min(first+group, c.Zones); i++ {
			z, err := startLightZone(v, g, fmt.Sprintf("light-%d-%d", n, i), i, &a, nil, held, o.Log)
			if err != nil {
				return p, err
			}
			zones = append(zones, z)
		}
		if err := waitLight(ctx, o.Progress, g, zones, n, c.LightResume, c.Stall); err != nil {
			return p, err
		}
	}
	p.lightSync = time.Since(start)
	o.Progress.Finish()
	for _, z := range zones {
		gc, _ := g.e.Insights().Get(z.name)
		p.lightSent += gc.Types[policyType].ResourcesSent
	}
	held = nil // the zones hold their own clones

	// The changes are timed before the heap is read with every zone
	// connected: that reading forces a GC and returns freed memory to the
	// OS, after which the first change paid for faulting pages back in
	// (on this kind of VM, dearly: 52 ms against ≤ 14 ms for the others
	// at 100k), which no running global does.
	ds, err := measure(ctx, o.Progress, fmt.Sprintf("scale %d: changes to %d zones", n, c.Zones), min(c.Changes, n), c.Zones, &a,
		func(i int) (string, []byte, error) {
			_, err := g.e.Write(ctx, policyUpdate(i, c.Size))
			return "", nil, err
		})
	if err != nil {
		return p, err
	}
	p.heapZones, _ = heapAndRSS()
	p.p50, p.p99, p.max = percentile(ds, 0.5), percentile(ds, 0.99), percentile(ds, 1)
	p.peakRSS = readStatus("self", "VmHWM:")
	return p, nil
}

// globalVersions returns wire name → version of every SyncPolicy on g: what
// a zone holding all of them announces when it resumes.
func globalVersions(ctx context.Context, g *node) (map[string]string, error) {
	kvs, err := g.e.Store().Versions(ctx, store.Filter{Type: policyType, LocalOnly: true})
	if err != nil {
		return nil, fmt.Errorf("global's versions: %w", err)
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kdssync.WireName(kv.Key.Mesh, kv.Key.Name)] = kv.Version
	}
	return m, nil
}

// scaleZoneSync starts one engine zone on the memory store (in a child
// process when c.ZoneCommand is set) and records in p the time from its
// start until global holds its ACK of all p.n resources, the CPU time spent
// meanwhile and the child's peak resident set. The zone is stopped before
// it returns.
func scaleZoneSync(ctx context.Context, o Options, v *env, g *node, c ScaleConfig, p *scalePoint) error {
	n := p.n
	zname := fmt.Sprintf("zone-scale-%d", n)
	zc, err := v.zoneConfig(g, zname, localAddr(g.e.KDSAddr()), "")
	if err != nil {
		return err
	}
	zc.Store = engine.StoreMemory
	stopProfile, err := StartCPUProfile(c.SyncCPUProfile)
	if err != nil {
		return fmt.Errorf("sync CPU profile: %w", err)
	}
	defer stopProfile()
	o.Progress.Start(fmt.Sprintf("scale %d: one zone's initial sync", n), n)
	defer o.Progress.Finish()
	start, cpu0 := time.Now(), cpuTime("self")
	var cmd *exec.Cmd
	if c.ZoneCommand != nil {
		zc.PluginsDir, zc.APIAddress = v.plugins, "127.0.0.1:0"
		b, err := json.Marshal(zc)
		if err != nil {
			return fmt.Errorf("zone config: %w", err)
		}
		cmd = c.ZoneCommand(string(b))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start zone process: %w", err)
		}
		defer func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		}()
	} else {
		z, err := v.start(zc)
		if err != nil {
			return err
		}
		defer z.discard()
	}
	last, lastAt := uint64(0), time.Now()
	for {
		gc, _ := g.e.Insights().Get(zname)
		ts := gc.Types[policyType]
		if gc.Online && ts.ResourcesSent >= uint64(n) && ts.ResponsesACKed == ts.ResponsesSent {
			p.sync, p.syncCPU = time.Since(start), cpuTime("self")-cpu0
			if cmd != nil {
				pid := strconv.Itoa(cmd.Process.Pid)
				p.zonePeakRSS, p.zoneCPU = readStatus(pid, "VmHWM:"), cpuTime(pid)
			}
			return nil
		}
		if ts.ResourcesSent != last {
			last, lastAt = ts.ResourcesSent, time.Now()
			o.Progress.Set(int(last))
		}
		if time.Since(lastAt) > c.Stall {
			return fmt.Errorf("zone %s: initial sync stalled at %d of %d resources sent for %s", zname, last, n, c.Stall)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// cpuTime returns the user and system CPU time process pid ("self" for
// this one) has used, from /proc/<pid>/stat; 0 if it cannot be read.
func cpuTime(pid string) time.Duration {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields count from after
	// its closing parenthesis, where field 3 is the state.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64) // field 14, utime
	st, err2 := strconv.ParseUint(f[12], 10, 64) // field 15, stime
	if err1 != nil || err2 != nil {
		return 0
	}
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / ticks
}

// waitLight waits until every light zone holds all n resources, failing
// when their total made no progress for stall. A syncing zone holds what its
// sink applied; a resuming zone (resumed) holds all n once global recorded
// its announced versions and it ACKed every response global sent it.
func waitLight(ctx context.Context, p Progress, g *node, zones []*lightZone, n int, resumed bool, stall time.Duration) error {
	last, lastAt := -1, time.Now()
	for {
		total, done := 0, true
		for _, z := range zones {
			k := int(z.applied.Load())
			if resumed {
				k = 0
				gc, _ := g.e.Insights().Get(z.name)
				ts := gc.Types[policyType]
				if gc.Online && ts.ResponsesSent > 0 && ts.ResponsesACKed == ts.ResponsesSent {
					k = ts.ResourcesHeld
				}
			}
			total += min(k, n)
			if k < n {
				done = false
			}
			if err := z.failed(); err != nil {
				return err
			}
		}
		p.Set(total)
		if done {
			return nil
		}
		if total != last {
			last, lastAt = total, time.Now()
		}
		if time.Since(lastAt) > stall {
			return fmt.Errorf("light zones: stalled at %d of %d resources held for %s", total, n*len(zones), stall)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// lightZone is a zone that runs the engine's session code (dialer, mux,
// kdssync client and server) against global but stores nothing: its
// kdssync client keeps name → version of what it holds, and its sink counts
// the resources it applied and reports each arrival.
type lightZone struct {
	name    string
	applied atomic.Int64
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	err     error // a failure that is not a session ending (reported once)
}

// startLightZone starts light zone name, receiver who of a, dialing g.
// Its kdssync server serves the zone→global statuses in serve (nil: none);
// the caller may Put into serve while the zone runs, as a zone engine's
// change feed does. Every goroutine of the zone runs under the pprof label
// side=zone, so that a CPU profile tells the zones' share from global's.
// held, if not nil, is what the zone announces it holds (each session
// clones it). stop ends it and joins its goroutines.
func startLightZone(v *env, g *node, name string, who int, a *arrivals, serve *kdssync.Index, held map[string]string, log hclog.Logger) (*lightZone, error) {
	if serve == nil {
		serve = kdssync.NewIndex([]string{statusType})
	}
	zc, err := v.zoneConfig(g, name, localAddr(g.e.KDSAddr()), "")
	if err != nil {
		return nil, err
	}
	creds, err := kdsauth.NewTokenFileCredentials(zc.TokenFile, kdsauth.WithCredentialsZone(name))
	if err != nil {
		return nil, fmt.Errorf("light zone %s: token: %w", name, err)
	}
	tc, err := tlsutil.ClientConfig(zc.CAFile, "", "", "localhost", log.Named("kds-tls"))
	if err != nil {
		return nil, fmt.Errorf("light zone %s: TLS: %w", name, err)
	}
	z := &lightZone{name: name, done: make(chan struct{})}
	sink := &countingSink{z: z, who: who, a: a, held: held}
	handler := func(ctx context.Context, s *mux.Session) error {
		eg, ctx := errgroup.WithContext(ctx)
		stop := context.AfterFunc(ctx, func() { s.Close(fmt.Errorf("light zone: %w", context.Cause(ctx))) })
		defer stop()
		maxMsg := kdssync.WithSessionMaxMessageSize(s.Params().MaxMessageSize)
		srv := kdssync.NewServer(serve)
		eg.Go(func() error { return srv.Serve(ctx, s.Server(), engine.GlobalPeer, maxMsg) })
		eg.Go(func() error {
			return kdssync.NewClient([]string{policyType}, sink, noValidation{}, engine.GlobalPeer, "",
				kdssync.WithClientMaxMessageSize(s.Params().MaxMessageSize),
				kdssync.WithResumeParts(kdsgrpc.PeerAcceptsResumeParts(ctx))).Run(ctx, s.Client())
		})
		return eg.Wait()
	}
	d := kdsgrpc.NewDialer([]string{zc.GlobalAddress}, name, 2, handler,
		kdsgrpc.WithLogger(log.Named(name)),
		kdsgrpc.WithBackoff(kdsgrpc.Backoff{Base: zc.ReconnectBackoffBase, Cap: zc.ReconnectBackoffMax}),
		kdsgrpc.WithDialOptions(grpc.WithPerRPCCredentials(creds)),
		kdsgrpc.WithTransportCredentialsFor(func(string) (credentials.TransportCredentials, error) {
			return credentials.NewTLS(tc), nil
		}),
		kdsgrpc.WithSessionHooks(nil, func(ev kdsgrpc.SessionEvent) {
			if ev.Err != nil {
				z.fail(fmt.Errorf("light zone %s: session ended: %w", name, ev.Err))
			}
		}))
	ctx, cancel := context.WithCancel(context.Background())
	z.cancel = cancel
	go func() {
		defer close(z.done)
		pprof.Do(ctx, zoneLabels, func(ctx context.Context) { _ = d.Run(ctx) })
	}()
	return z, nil
}

func (z *lightZone) fail(err error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.err == nil && !errors.Is(err, context.Canceled) {
		z.err = err
	}
}

// failed returns the first session failure, if any: a benchmark zone's
// session must not end while it runs.
func (z *lightZone) failed() error {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.err
}

func (z *lightZone) stop() {
	z.cancel()
	<-z.done
}

// countingSink is a light zone's kdssync.Sink: it holds nothing (the
// client keeps the versions) and counts what it applied. held, shared by
// every light zone and never modified, is what it announces at session
// start (nil: nothing).
type countingSink struct {
	z    *lightZone
	who  int
	a    *arrivals
	held map[string]string
}

// Versions returns a clone of held: the client updates the map it gets.
// The clone shares held's strings, so a zone costs a map entry per name.
func (s *countingSink) Versions(context.Context, string) (map[string]string, error) {
	if s.held == nil {
		return map[string]string{}, nil
	}
	return maps.Clone(s.held), nil
}

func (s *countingSink) Apply(_ context.Context, puts []*resource.Resource, deletes []resource.Key) error {
	now := time.Now()
	s.z.applied.Add(int64(len(puts) - len(deletes)))
	for _, r := range puts {
		s.a.saw(s.who, r.Name, r.Spec, now)
	}
	return nil
}

// zoneLabels marks the CPU profile samples of the benchmark's zone side
// (light zones and the writers feeding them): go tool pprof
// -tagfocus side=zone shows them, -tagignore side=zone the rest.
var zoneLabels = pprof.Labels("side", "zone")

// noValidation accepts everything: a light zone measures the transport and
// sync protocol, not the plugins.
type noValidation struct{}

func (noValidation) Validate(context.Context, []*resource.Resource) error { return nil }
