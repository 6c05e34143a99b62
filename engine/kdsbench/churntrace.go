package kdsbench

import (
	"bytes"
	"fmt"
	"math"
	"runtime/metrics"
	"slices"
	"strconv"
	"sync"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
	"github.com/kds-engine/kds-engine/engine/internal/store/boltstore"
)

// stageTracer follows churn's updates through the stages of their way
// (ChurnConfig.TraceLatency): it hooks kdssync's servers and clients and
// boltstore's group commit in this process, keyed by the stamp each write
// puts into its spec ("<sequence>-<unix nanos>", unique per write).
type stageTracer struct {
	mu sync.Mutex
	// at holds, per stamp, when the update passed each stage so far.
	at map[string]*stageTimes
	// carried maps a response a client received to the stamps it carries,
	// until the client applied it.
	carried map[*discovery.DeltaDiscoveryResponse][]string

	// Per phase (reset by reset).
	sentAfterAnswer, sentOnNotify, resourcesSent int
	commits                                      []boltstore.CommitTrace
	done                                         []updateStages
	// sched is the Go scheduler's latency histogram at the phase's start.
	sched *metrics.Float64Histogram
}

const schedLatencies = "/sched/latencies:seconds"

func readSched() *metrics.Float64Histogram {
	s := []metrics.Sample{{Name: schedLatencies}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return nil
	}
	return s[0].Value.Float64Histogram()
}

// reportSched adds to r the Go scheduling latency of this process since
// from (readSched) as a note and its p99 as figure prefix_sched_p99_ms.
func reportSched(r *Report, phase, prefix string, from *metrics.Float64Histogram) {
	to := readSched()
	r.note("%s Go scheduling latency (runnable → running, this process): p50 %.2f / p90 %.2f / p99 %.2f ms", phase,
		ms(schedQuantile(from, to, 0.5)), ms(schedQuantile(from, to, 0.9)), ms(schedQuantile(from, to, 0.99)))
	r.Figures[prefix+"_sched_p99_ms"] = ms(schedQuantile(from, to, 0.99))
}

// schedQuantile is the q quantile of the scheduling latencies (how long
// goroutines were runnable before they ran) between from and to.
func schedQuantile(from, to *metrics.Float64Histogram, q float64) time.Duration {
	if from == nil || to == nil || len(from.Counts) != len(to.Counts) {
		return 0
	}
	var total uint64
	for i := range to.Counts {
		total += to.Counts[i] - from.Counts[i]
	}
	if total == 0 {
		return 0
	}
	want := uint64(math.Ceil(q * float64(total)))
	var n uint64
	for i := range to.Counts {
		n += to.Counts[i] - from.Counts[i]
		if n >= want {
			hi := to.Buckets[i+1]
			if math.IsInf(hi, 1) {
				hi = to.Buckets[i]
			}
			return time.Duration(hi * float64(time.Second))
		}
	}
	return 0
}

// stageTimes is when one update passed each traced stage.
type stageTimes struct {
	sent time.Time
	zoneStamps
	afterAnswer bool
}

// zoneStamps is when a client received, checked, began to apply and
// applied one response.
type zoneStamps struct {
	received, checked, applying, applied time.Time
}

// mark records the client's stage s at now (other stages change nothing).
func (z *zoneStamps) mark(s kdssync.TraceStage, now time.Time) {
	switch s {
	case kdssync.TraceReceived:
		z.received = now
	case kdssync.TraceChecked:
		z.checked = now
	case kdssync.TraceApplying:
		z.applying = now
	case kdssync.TraceApplied:
		z.applied = now
	}
}

// updateStages is one committed update's time in each stage.
type updateStages struct {
	total time.Duration
	// zone: write → its response sent (the zone noticing, and waiting
	// for a window slot when afterAnswer); wire: sent → global received;
	// check: decode and validation (plugin batch); queue: checked →
	// taken by the applying stage; apply: Sink.Apply (group commit wait,
	// commit with fsync); visible: Apply returned → the store's watcher
	// saw it (negative: the watcher saw it first).
	zone, wire, check, queue, apply, visible time.Duration
	afterAnswer                              bool
}

var stageNames = []string{"zone (write→sent)", "wire (sent→received)", "check (validate)", "queue (checked→applying)", "apply (Sink.Apply)", "visible (applied→watcher)"}

func (u updateStages) stages() []time.Duration {
	return []time.Duration{u.zone, u.wire, u.check, u.queue, u.apply, u.visible}
}

func newStageTracer() *stageTracer {
	return &stageTracer{at: map[string]*stageTimes{}, carried: map[*discovery.DeltaDiscoveryResponse][]string{}}
}

// start hooks kdssync and boltstore; the returned function unhooks them.
func (st *stageTracer) start() func() {
	kdssync.SetTrace(st.stage)
	boltstore.SetCommitTrace(st.commit)
	return func() {
		kdssync.SetTrace(nil)
		boltstore.SetCommitTrace(nil)
	}
}

// stampOf returns the stamp in a wire resource's encoded envelope or a
// spec ("" if none).
func stampOf(b []byte) string {
	k := bytes.Index(b, churnValue)
	if k < 0 {
		return ""
	}
	rest := b[k+len(churnValue):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return ""
	}
	return string(rest[:end])
}

func (st *stageTracer) stage(s kdssync.TraceStage, resp *discovery.DeltaDiscoveryResponse, afterAnswer bool) {
	now := time.Now()
	switch s {
	case kdssync.TraceSent, kdssync.TraceReceived:
		stamps := make([]string, 0, len(resp.GetResources()))
		for _, r := range resp.GetResources() {
			if stamp := stampOf(r.GetResource().GetValue()); stamp != "" {
				stamps = append(stamps, stamp)
			}
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		if s == kdssync.TraceSent {
			if afterAnswer {
				st.sentAfterAnswer++
			} else {
				st.sentOnNotify++
			}
			st.resourcesSent += len(stamps)
			for _, stamp := range stamps {
				st.at[stamp] = &stageTimes{sent: now, afterAnswer: afterAnswer}
			}
			return
		}
		st.carried[resp] = stamps
		for _, stamp := range stamps {
			if t := st.at[stamp]; t != nil {
				t.received = now
			}
		}
	default:
		st.mu.Lock()
		defer st.mu.Unlock()
		stamps := st.carried[resp]
		if s == kdssync.TraceApplied {
			delete(st.carried, resp)
		}
		for _, stamp := range stamps {
			if t := st.at[stamp]; t != nil {
				t.mark(s, now)
			}
		}
	}
}

func (st *stageTracer) commit(c boltstore.CommitTrace) {
	st.mu.Lock()
	st.commits = append(st.commits, c)
	st.mu.Unlock()
}

// seen records the commit of the update with stamp, written at written,
// which the store's watcher saw at now.
func (st *stageTracer) seen(stamp string, written, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	t := st.at[stamp]
	if t == nil {
		return
	}
	delete(st.at, stamp)
	if t.applied.IsZero() {
		// The watcher saw the commit before Sink.Apply returned: the
		// applying stage is still inside it. Counted as applied now.
		t.applied = now
	}
	if t.received.IsZero() || t.checked.IsZero() || t.applying.IsZero() {
		return
	}
	st.done = append(st.done, updateStages{
		total: now.Sub(written), zone: t.sent.Sub(written), wire: t.received.Sub(t.sent),
		check: t.checked.Sub(t.received), queue: t.applying.Sub(t.checked), apply: t.applied.Sub(t.applying),
		visible: now.Sub(t.applied), afterAnswer: t.afterAnswer,
	})
}

// reset starts a phase.
func (st *stageTracer) reset() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.sentAfterAnswer, st.sentOnNotify, st.resourcesSent = 0, 0, 0
	st.commits = nil
	st.done = nil
	st.sched = readSched()
}

// report adds the phase's breakdown to r as notes and figures (prefix
// names the phase in the figures).
func (st *stageTracer) report(r *Report, phase, prefix string) {
	st.mu.Lock()
	done := slices.Clone(st.done)
	commits := slices.Clone(st.commits)
	after, notify, res := st.sentAfterAnswer, st.sentOnNotify, st.resourcesSent
	sched0 := st.sched
	st.mu.Unlock()
	reportSched(r, phase, prefix, sched0)
	if len(done) == 0 {
		return
	}
	slices.SortFunc(done, func(a, b updateStages) int { return int(a.total - b.total) })
	p99 := done[len(done)*99/100:]
	mid := done[len(done)*45/100 : max(len(done)*55/100, len(done)*45/100+1)]
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s stages (%d updates traced): p50 / p99 of each stage; mean of each stage among the updates near the median total (45–55th percentile, total %.1f ms) and among the slowest 1%% (total ≥ %.1f ms):",
		phase, len(done), ms(mean(mid, func(u updateStages) time.Duration { return u.total })), ms(p99[0].total))
	for i, name := range stageNames {
		d := make([]time.Duration, len(done))
		for j, u := range done {
			d[j] = u.stages()[i]
		}
		at := func(u updateStages) time.Duration { return u.stages()[i] }
		p50s, p99s := percentile(d, 0.5), percentile(d, 0.99)
		fmt.Fprintf(&b, " %s %.1f / %.1f ms, median %.1f, tail %.1f;", name, ms(p50s), ms(p99s), ms(mean(mid, at)), ms(mean(p99, at)))
		key := prefix + "_stage" + strconv.Itoa(i)
		r.Figures[key+"_p50_ms"] = ms(p50s)
		r.Figures[key+"_p99_ms"] = ms(p99s)
		r.Figures[key+"_tail_mean_ms"] = ms(mean(p99, at))
	}
	nAfter := 0
	for _, u := range p99 {
		if u.afterAnswer {
			nAfter++
		}
	}
	fmt.Fprintf(&b, " responses sent %d after an answer opened a window slot, %d on a change notification, %.1f resources each; of the slowest 1%%, %.0f%% went out after an answer",
		after, notify, float64(res)/float64(max(after+notify, 1)), 100*float64(nAfter)/float64(len(p99)))
	r.note("%s", b.String())
	if len(commits) > 0 {
		wait := make([]time.Duration, len(commits))
		dur := make([]time.Duration, len(commits))
		write := make([]time.Duration, len(commits))
		group := make([]time.Duration, len(commits))
		for i, c := range commits {
			wait[i] = c.Began.Sub(c.Queued)
			dur[i] = c.Done.Sub(c.Began)
			write[i] = c.Write
			group[i] = time.Duration(c.Group)
		}
		r.note("%s store writes (%d): waiting for the transaction that takes them p50 %.1f / p99 %.1f ms; their transaction p50 %.1f / p99 %.1f / max %.1f ms, of it bbolt's disk writes with fdatasync p50 %.1f / p99 %.1f / max %.1f ms; writes per transaction p50 %d / p99 %d",
			phase, len(commits), ms(percentile(wait, 0.5)), ms(percentile(wait, 0.99)), ms(percentile(dur, 0.5)), ms(percentile(dur, 0.99)), ms(percentile(dur, 1)),
			ms(percentile(write, 0.5)), ms(percentile(write, 0.99)), ms(percentile(write, 1)), percentile(group, 0.5), percentile(group, 0.99))
		r.Figures[prefix+"_commit_p50_ms"] = ms(percentile(dur, 0.5))
		r.Figures[prefix+"_commit_p99_ms"] = ms(percentile(dur, 0.99))
		r.Figures[prefix+"_commit_write_p99_ms"] = ms(percentile(write, 0.99))
	}
}

func mean(us []updateStages, f func(updateStages) time.Duration) time.Duration {
	if len(us) == 0 {
		return 0
	}
	var sum time.Duration
	for _, u := range us {
		sum += f(u)
	}
	return sum / time.Duration(len(us))
}
