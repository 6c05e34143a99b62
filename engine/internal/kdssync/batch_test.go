package kdssync

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// recordingSink holds the first Apply until released, records every
// Apply's keys, and refuses a batch that names a key twice (as the stores
// do).
type recordingSink struct {
	*memSink
	started chan struct{}
	release chan struct{}
	calls   chan applyCall
	failAt  int // the Apply (1-based) that fails; 0: none
	n       int
}

type applyCall struct {
	puts    []string // mesh/name@version
	deletes []string // mesh/name
}

func (s *recordingSink) Apply(ctx context.Context, puts []*resource.Resource, deletes []resource.Key) error {
	s.n++
	if err := store.CheckBatch(store.Batch{Put: puts, Delete: deletes}); err != nil {
		return err
	}
	var call applyCall
	for _, p := range puts {
		call.puts = append(call.puts, WireName(p.Mesh, p.Name)+"@"+p.Version)
	}
	for _, k := range deletes {
		call.deletes = append(call.deletes, WireName(k.Mesh, k.Name))
	}
	slices.Sort(call.puts)
	slices.Sort(call.deletes)
	s.calls <- call
	if s.n == 1 {
		s.started <- struct{}{}
		select {
		case <-s.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.n == s.failAt {
		return errors.New("disk full")
	}
	return s.memSink.Apply(ctx, puts, deletes)
}

// recvSignal reports each RecvContext call: the checking stage calls it
// again only once it has queued the previous response for the applying
// stage.
type recvSignal struct {
	clientEnd
	recvs chan struct{}
}

func (r recvSignal) RecvContext(ctx context.Context) (*discovery.DeltaDiscoveryResponse, error) {
	r.recvs <- struct{}{}
	return r.clientEnd.RecvContext(ctx)
}

type batchRun struct {
	t     *testing.T
	p     *pipe
	sink  *recordingSink
	recvs chan struct{}
	done  chan error
}

// startBatchRun runs a client of type T whose sink already holds m/q@1.
func startBatchRun(t *testing.T, ctx context.Context, failAt int) *batchRun {
	t.Helper()
	mem := newMemSink()
	mem.res[keyFor("T", "", "m/q")] = res("T", "m", "q", "1", 10)
	r := &batchRun{t: t, p: newPipe(ctx), recvs: make(chan struct{}, 16), done: make(chan error, 1),
		sink: &recordingSink{memSink: mem, started: make(chan struct{}, 1), release: make(chan struct{}),
			calls: make(chan applyCall, 8), failAt: failAt}}
	cli := NewClient([]string{"T"}, r.sink, rejectValidator{}, "global", "")
	go func() { r.done <- cli.Run(ctx, recvSignal{clientEnd{r.p}, r.recvs}) }()
	<-r.p.reqs // subscription
	return r
}

// send sends a response: puts "name@version", removals "-name".
func (r *batchRun) send(nonce string, entries ...string) {
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: TypeURL("T"), Nonce: nonce}
	for _, e := range entries {
		if e[0] == '-' {
			resp.RemovedResources = append(resp.RemovedResources, "m/"+e[1:])
			continue
		}
		name, version, _ := strings.Cut(e, "@")
		enc, err := Encode(res("T", "m", name, version, 10))
		require.NoError(r.t, err)
		resp.Resources = append(resp.Resources, enc)
	}
	r.p.resps <- resp
}

func (r *batchRun) wait(ch <-chan struct{}, what string) {
	r.t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		r.t.Fatal(what)
	}
}

// The responses that are ready while one is being stored go to the sink in
// one Apply, netted as if applied one after another; each is then answered
// on its own, in arrival order, with its own NACK where it refused
// something.
func TestClientStoresReadyResponsesInOneApply(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := startBatchRun(t, ctx, 0)
	r.wait(r.recvs, "first receive")

	r.send("1", "a@1", "x@1")
	r.wait(r.sink.started, "response 1 is not being stored")
	// Put then delete (p), delete then put (q), put then put (b), and a
	// removal of what response 1 stored (a); response 3 also refuses one.
	r.send("2", "b@1", "p@1", "-a", "-q")
	r.send("3", "-p", "q@2", "b@2", "bad-1@1")
	for range 3 { // receives after responses 1, 2 and 3 were queued
		r.wait(r.recvs, "responses 2 and 3 were not queued")
	}
	select {
	case req := <-r.p.reqs:
		t.Fatalf("answer %q before response 1 was stored", req.ResponseNonce)
	default:
	}
	r.sink.release <- struct{}{}

	var answers []*discovery.DeltaDiscoveryRequest
	for range 3 {
		select {
		case req := <-r.p.reqs:
			answers = append(answers, req)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d answers", len(answers))
		}
	}
	cancel()
	<-r.done
	close(r.sink.calls)
	var calls []applyCall
	for c := range r.sink.calls {
		calls = append(calls, c)
	}
	require.Len(t, calls, 2, "responses 2 and 3 were ready while 1 was stored: one Apply for both")
	assert.Equal(t, applyCall{puts: []string{"m/a@1", "m/x@1"}}, calls[0])
	assert.Equal(t, applyCall{puts: []string{"m/b@2", "m/q@2"}, deletes: []string{"m/a", "m/p"}}, calls[1],
		"the last entry of each key wins")

	got := map[string]string{}
	for k, v := range r.sink.snapshot() {
		got[WireName(k.Mesh, k.Name)] = v.Version
	}
	assert.Equal(t, map[string]string{"m/x": "1", "m/b": "2", "m/q": "2"}, got)

	var nonces []string
	for _, a := range answers {
		nonces = append(nonces, a.ResponseNonce)
	}
	assert.Equal(t, []string{"1", "2", "3"}, nonces, "answers in arrival order")
	assert.Nil(t, answers[0].ErrorDetail)
	assert.Nil(t, answers[1].ErrorDetail)
	require.NotNil(t, answers[2].ErrorDetail, "response 3 refused bad-1")
	assert.Contains(t, answers[2].ErrorDetail.GetMessage(), "bad-1")
}

// A failed combined Apply answers none of its responses and ends the
// session.
func TestClientFailedCombinedApplyAnswersNone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := startBatchRun(t, ctx, 2)
	r.wait(r.recvs, "first receive")
	r.send("1", "a@1")
	r.wait(r.sink.started, "response 1 is not being stored")
	r.send("2", "b@1")
	r.send("3", "c@1")
	for range 3 {
		r.wait(r.recvs, "responses 2 and 3 were not queued")
	}
	r.sink.release <- struct{}{}
	select {
	case err := <-r.done:
		require.ErrorContains(t, err, "disk full")
		assert.ErrorContains(t, err, "apply 2 responses")
	case <-time.After(10 * time.Second):
		t.Fatal("session did not end")
	}
	var nonces []string
	for len(r.p.reqs) > 0 {
		nonces = append(nonces, (<-r.p.reqs).ResponseNonce)
	}
	assert.Equal(t, []string{"1"}, nonces, "only the response stored on its own is ACKed")
	assert.Len(t, r.sink.snapshot(), 2, "m/q and m/a")
}

func TestMergeAppliesKeepsTheLastEntryOfEachKey(t *testing.T) {
	k := func(n string) resource.Key { return keyFor("T", "", "m/"+n) }
	p := func(n, v string) *resource.Resource { return res("T", "m", n, v, 1) }
	batch := []*checked{
		{puts: []*resource.Resource{p("a", "1"), p("b", "1")}, deletes: []resource.Key{k("c")}},
		{whole: errors.New("refused"), typ: "T"},
		{puts: []*resource.Resource{p("c", "2")}, deletes: []resource.Key{k("a")}},
		{},
		{puts: []*resource.Resource{p("b", "3"), p("a", "3")}},
	}
	puts, deletes := mergeApplies(batch)
	var names []string
	for _, r := range puts {
		names = append(names, r.Name+"@"+r.Version)
	}
	assert.Equal(t, []string{"c@2", "b@3", "a@3"}, names)
	assert.Empty(t, deletes)

	one := []*checked{{}, {puts: []*resource.Resource{p("a", "1")}, deletes: []resource.Key{k("b")}}}
	puts, deletes = mergeApplies(one)
	assert.Len(t, puts, 1)
	assert.Equal(t, []resource.Key{k("b")}, deletes)
}

// Responses whose puts ascend across the batch (an initial sync's) are
// merged by concatenation: the result alone, no map of every key. A batch
// where a key repeats, or that has removals, is merged as before.
func TestMergeAppliesOfAscendingResponsesConcatenates(t *testing.T) {
	p := func(n, v string) *resource.Resource { return res("T", "m", n, v, 1) }
	var batch []*checked
	for r := range 3 {
		ch := &checked{}
		for i := range 1000 {
			ch.puts = append(ch.puts, p(fmt.Sprintf("p-%d-%04d", r, i), "1"))
		}
		batch = append(batch, ch)
	}
	// Bytes, not allocations: the race detector adds allocations of its
	// own. The result takes 24 KB; the map of every key took over 300 KB.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	puts, _ := mergeApplies(batch)
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 64<<10 {
		t.Fatalf("%d bytes allocated to merge 3 ascending responses of 1000, want at most %d", got, 64<<10)
	}
	if len(puts) != 3000 || puts[0] != batch[0].puts[0] || puts[2999] != batch[2].puts[999] {
		t.Fatalf("merged %d puts, not the responses' in order", len(puts))
	}
	// The last response names a key of the first again: the later entry wins.
	again := append(batch[:2:2], &checked{puts: []*resource.Resource{p("p-0-0000", "2")}})
	puts, _ = mergeApplies(again)
	if len(puts) != 2000 || puts[len(puts)-1].Version != "2" {
		t.Fatalf("merged %d puts, last %s@%s", len(puts), puts[len(puts)-1].Name, puts[len(puts)-1].Version)
	}
}

// BenchmarkMergeAppliesAscending: two 3,334-resource responses of an
// initial sync stored together, per resource.
func BenchmarkMergeAppliesAscending(b *testing.B) {
	var batch []*checked
	for r := range 2 {
		ch := &checked{}
		for i := range 3334 {
			ch.puts = append(ch.puts, res("T", "default", fmt.Sprintf("policy-%d-%06d", r, i), "1", 1))
		}
		batch = append(batch, ch)
	}
	b.ReportAllocs()
	for b.Loop() {
		mergeApplies(batch)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/6668, "ns/resource")
}
