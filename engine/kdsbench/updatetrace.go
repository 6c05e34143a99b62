package kdsbench

import (
	"bytes"
	"fmt"
	"os"
	"runtime/metrics"
	"runtime/trace"
	"slices"
	"sync"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
	"github.com/kds-engine/kds-engine/engine/internal/store/boltstore"
)

// changeTracer follows one change at a time from global's write to the
// zones' stores (update and fanout with --trace-latency): it hooks kdssync's
// servers and clients and boltstore's commits in this process. Changes are
// measured one after another, so everything it sees between arm and
// finish belongs to the armed change: the response that carries the
// change's marker, and the store commits queued meanwhile (global's,
// queued before Write returned, then the zones').
type changeTracer struct {
	mu     sync.Mutex
	marker []byte
	start  time.Time
	// written: global's Write returned.
	written time.Time
	// carried: the responses that carry the change, by the stage each
	// passed last (one per zone).
	carried map[*discovery.DeltaDiscoveryResponse]*zoneStamps
	sent    []time.Time
	commits []boltstore.CommitTrace
	done    []changeStages
	sched   *metrics.Float64Histogram
}

// changeStages is one change's time in each stage, for the slowest zone
// where a stage is per zone (the zone that saw it last decides the
// change's latency).
type changeStages struct {
	total time.Duration
	// validate: start → global's commit queued (the existence check,
	// the mesh check, the schema and the plugin's Validate); commitWait:
	// → the group transaction began; commit: → committed durably and
	// published (bbolt's writes and fdatasyncs in commitWrite);
	// notify: → global's serving session sent the response (feed,
	// watcher, session goroutine, building the response; the last zone's);
	// wire: sent → the zone's client took it (mux sender, gRPC, TLS, the
	// zone's receiver); check: → checked; queue: → the applying stage
	// took it; apply: Sink.Apply (the zone's commit); visible: → the
	// store's watcher saw it.
	validate, commitWait, commit, commitWrite, notify, wire, check, queue, apply, visible time.Duration
}

var changeStageNames = []string{"validate (write→global commit queued)", "global commit wait", "global commit (tx+fdatasync)", "of it bbolt writes+fdatasync",
	"notify (committed→sent)", "wire (sent→zone received)", "zone check", "zone queue (checked→applying)", "zone apply (Sink.Apply)", "visible (applied→watcher)"}

func (c changeStages) stages() []time.Duration {
	return []time.Duration{c.validate, c.commitWait, c.commit, c.commitWrite, c.notify, c.wire, c.check, c.queue, c.apply, c.visible}
}

func newChangeTracer() *changeTracer {
	return &changeTracer{carried: map[*discovery.DeltaDiscoveryResponse]*zoneStamps{}}
}

// hook starts reporting kdssync's and boltstore's stages to t; the returned
// function stops it.
func (t *changeTracer) hook() func() {
	t.mu.Lock()
	t.sched = readSched()
	t.mu.Unlock()
	kdssync.SetTrace(t.stage)
	boltstore.SetCommitTrace(t.commit)
	return func() {
		kdssync.SetTrace(nil)
		boltstore.SetCommitTrace(nil)
	}
}

// arm starts following the change whose spec carries marker, started at
// start.
func (t *changeTracer) arm(marker []byte, start time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.marker, t.start, t.written = marker, start, time.Time{}
	clear(t.carried)
	t.sent, t.commits = t.sent[:0], t.commits[:0]
}

// wrote records that global's Write returned.
func (t *changeTracer) wrote(at time.Time) {
	t.mu.Lock()
	t.written = at
	t.mu.Unlock()
}

func (t *changeTracer) carries(resp *discovery.DeltaDiscoveryResponse) bool {
	for _, r := range resp.GetResources() {
		if bytes.Contains(r.GetResource().GetValue(), t.marker) {
			return true
		}
	}
	return false
}

func (t *changeTracer) stage(s kdssync.TraceStage, resp *discovery.DeltaDiscoveryResponse, _ bool) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.marker == nil {
		return
	}
	switch s {
	case kdssync.TraceSent:
		if t.carries(resp) {
			t.sent = append(t.sent, now)
		}
	case kdssync.TraceReceived:
		if t.carries(resp) {
			t.carried[resp] = &zoneStamps{received: now}
		}
	default:
		rt := t.carried[resp]
		if rt == nil {
			return
		}
		rt.mark(s, now)
	}
}

func (t *changeTracer) commit(c boltstore.CommitTrace) {
	t.mu.Lock()
	if t.marker != nil {
		t.commits = append(t.commits, c)
	}
	t.mu.Unlock()
}

// finish closes the armed change, which the last receiver saw at last, and
// records its stages if every one was seen; nothing is recorded until the
// next arm.
func (t *changeTracer) finish(last time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	defer func() {
		t.marker = nil
		clear(t.carried)
		t.sent, t.commits = t.sent[:0], t.commits[:0]
	}()
	var g *boltstore.CommitTrace
	for i := range t.commits {
		if c := &t.commits[i]; !c.Queued.Before(t.start) && !t.written.IsZero() && c.Queued.Before(t.written) {
			g = c
			break
		}
	}
	if g == nil || len(t.sent) == 0 {
		return
	}
	var lastResp *zoneStamps
	for _, rt := range t.carried {
		if rt.applied.IsZero() || rt.applying.IsZero() || rt.checked.IsZero() {
			continue
		}
		if lastResp == nil || rt.applied.After(lastResp.applied) {
			lastResp = rt
		}
	}
	if lastResp == nil {
		return
	}
	sent := slices.MaxFunc(t.sent, func(a, b time.Time) int { return a.Compare(b) })
	visible := last.Sub(lastResp.applied)
	t.done = append(t.done, changeStages{
		total: last.Sub(t.start), validate: g.Queued.Sub(t.start), commitWait: g.Began.Sub(g.Queued), commit: g.Done.Sub(g.Began),
		commitWrite: g.Write, notify: sent.Sub(g.Done), wire: lastResp.received.Sub(sent), check: lastResp.checked.Sub(lastResp.received),
		queue: lastResp.applying.Sub(lastResp.checked), apply: lastResp.applied.Sub(lastResp.applying), visible: visible,
	})
}

// report adds the breakdown to r as a note and figures under prefix.
func (t *changeTracer) report(r *Report, phase, prefix string) {
	t.mu.Lock()
	done := slices.Clone(t.done)
	sched0 := t.sched
	t.mu.Unlock()
	reportSched(r, phase, prefix, sched0)
	if len(done) == 0 {
		return
	}
	slices.SortFunc(done, func(a, b changeStages) int { return int(a.total - b.total) })
	tail := done[min(len(done)*99/100, len(done)-1):]
	avg := func(cs []changeStages, i int) time.Duration {
		var sum time.Duration
		for _, c := range cs {
			sum += c.stages()[i]
		}
		return sum / time.Duration(len(cs))
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s stages (%d changes traced; per-zone stages are the last zone's): p50 / p99 of each stage, mean among the slowest 1%% (total ≥ %.2f ms):", phase, len(done), ms(tail[0].total))
	for i, name := range changeStageNames {
		d := make([]time.Duration, len(done))
		for j, c := range done {
			d[j] = c.stages()[i]
		}
		fmt.Fprintf(&b, " %s %.2f / %.2f, tail %.2f;", name, ms(percentile(d, 0.5)), ms(percentile(d, 0.99)), ms(avg(tail, i)))
		key := fmt.Sprintf("%s_stage%d", prefix, i)
		r.Figures[key+"_p50_ms"] = ms(percentile(d, 0.5))
		r.Figures[key+"_p99_ms"] = ms(percentile(d, 0.99))
		r.Figures[key+"_tail_mean_ms"] = ms(avg(tail, i))
	}
	r.note("%s", b.String())
}

// startExecTrace starts a runtime/trace of this process into path; the
// returned function stops it and closes the file.
func startExecTrace(path string) (func() error, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("execution trace: %w", err)
	}
	if err := trace.Start(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("execution trace: %w", err)
	}
	return func() error {
		trace.Stop()
		return f.Close()
	}, nil
}
