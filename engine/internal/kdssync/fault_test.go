package kdssync

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/memory"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// session runs one session between srv and a new client over a fresh pipe
// until stop is called.
type session struct {
	pipe   *pipe
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func runSession(t *testing.T, srv *Server, sink Sink, types []string, cliIns *insights.Registry, cliOpts ...ClientOption) *session {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{pipe: newPipe(ctx), cancel: cancel}
	cli := NewClient(types, sink, rejectValidator{}, "global", "", append([]ClientOption{WithClientInsights(cliIns)}, cliOpts...)...)
	s.wg.Add(2)
	go func() { defer s.wg.Done(); _ = srv.Serve(ctx, serverEnd{s.pipe}, "zone-1") }()
	go func() { defer s.wg.Done(); _ = cli.Run(ctx, clientEnd{s.pipe}) }()
	t.Cleanup(s.stop)
	return s
}

func (s *session) stop() { s.cancel(); s.wg.Wait() }

// sentCount counts how often name went out in the session's responses.
func (s *session) sentCount(name string) int {
	n := 0
	for _, r := range s.pipe.responses() {
		for _, x := range r.Resources {
			if x.Name == name {
				n++
			}
		}
	}
	return n
}

func versions(m *memSink) map[string]string {
	out := map[string]string{}
	for k, r := range m.snapshot() {
		out[WireName(k.Mesh, k.Name)] = r.Version
	}
	return out
}

// One refused resource holds back only itself: the update and the removal
// that travel in the same response are applied, the server's view is what
// the zone applied, and the refused version is not sent again until it
// changes, in the same session and after a resume.
func TestFaultRejectedResourceHoldsBackOnlyItself(t *testing.T) {
	const typ = "MeshTimeout"
	sink := newMemSink()
	require.NoError(t, sink.Apply(t.Context(), []*resource.Resource{
		res(typ, "default", "deleted", "1", 10), res(typ, "default", "fine", "2", 10),
	}, nil))
	ix := NewIndex([]string{typ})
	require.NoError(t, ix.Put(res(typ, "default", "fine", "6", 10)))
	require.NoError(t, ix.Put(res(typ, "default", "bad-new", "1", 10)))
	srvIns, cliIns := insights.NewRegistry(), insights.NewRegistry()
	srv := NewServer(ix, WithServerInsights(srvIns))
	rejections := NewRejections()
	srvType := func() insights.TypeState { c, _ := srvIns.Get("zone-1"); return c.Types[typ] }
	cliType := func() insights.TypeState { c, _ := cliIns.Get("global"); return c.Types[typ] }

	s1 := runSession(t, srv, sink, []string{typ}, cliIns, WithRejections(rejections))
	require.Eventually(t, func() bool { return srvType().ResponsesNACKed == 1 }, 10*time.Second, 5*time.Millisecond)
	resps := s1.pipe.responses()
	require.Len(t, resps, 1, "the update, the removal and the bad create travel in one response")
	assert.Len(t, resps[0].Resources, 2)
	assert.Equal(t, []string{"default/deleted"}, resps[0].RemovedResources)
	assert.Equal(t, map[string]string{"default/fine": "6"}, versions(sink), "the update and the removal are applied, the bad create is not")

	st := srvType()
	assert.Equal(t, 1, st.ResourcesHeld, "the server's view is what the zone applied")
	assert.Equal(t, 1, st.RejectedCount)
	require.Len(t, st.Rejected, 1)
	assert.Equal(t, "default/bad-new", st.Rejected[0].Name)
	assert.Equal(t, "1", st.Rejected[0].Version)
	assert.Equal(t, []string{"spec.x: must not be bad"}, st.Rejected[0].Errors, "the NACK names the field")
	assert.Equal(t, 1, cliType().RejectedCount)

	// An unrelated change goes out; the refused version does not.
	require.NoError(t, ix.Put(res(typ, "default", "other", "1", 10)))
	require.Eventually(t, func() bool { return versions(sink)["default/other"] == "1" }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, 1, s1.sentCount("default/bad-new"), "not resent in the same session")
	s1.stop()

	// Resume: the zone tells the server what it refused; nothing is resent.
	s2 := runSession(t, srv, sink, []string{typ}, cliIns, WithRejections(rejections))
	require.Eventually(t, func() bool { return len(s2.pipe.responses()) == 1 && cliType().ResponsesACKed >= 2 }, 10*time.Second, 5*time.Millisecond)
	assert.Empty(t, s2.pipe.responses()[0].Resources, "a resume with unchanged state sends nothing, the refused version included")
	assert.Empty(t, s2.pipe.responses()[0].RemovedResources)
	assert.Equal(t, 1, srvType().RejectedCount, "the server knows the refusal from the subscription")

	// Once it changes, it is sent again (and refused again here).
	require.NoError(t, ix.Put(res(typ, "default", "bad-new", "2", 10)))
	require.Eventually(t, func() bool { return s2.sentCount("default/bad-new") == 1 }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { st := srvType(); return len(st.Rejected) == 1 && st.Rejected[0].Version == "2" }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, map[string]string{"default/fine": "6", "default/other": "1"}, versions(sink))
}

// Without the zone's memory of refusals (a restarted zone), a resumed
// session sends the refused version once more, it is refused again, and
// everything else still converges.
func TestFaultRejectedResourceAfterZoneRestart(t *testing.T) {
	const typ = "MeshTimeout"
	sink := newMemSink()
	ix := NewIndex([]string{typ})
	require.NoError(t, ix.Put(res(typ, "default", "bad-1", "1", 10)))
	require.NoError(t, ix.Put(res(typ, "default", "good", "1", 10)))
	srvIns := insights.NewRegistry()
	srv := NewServer(ix, WithServerInsights(srvIns))
	s1 := runSession(t, srv, sink, []string{typ}, insights.NewRegistry())
	require.Eventually(t, func() bool { return versions(sink)["default/good"] == "1" }, 10*time.Second, 5*time.Millisecond)
	s1.stop()
	require.NoError(t, ix.Put(res(typ, "default", "good", "2", 10)))
	s2 := runSession(t, srv, sink, []string{typ}, insights.NewRegistry())
	require.Eventually(t, func() bool { return versions(sink)["default/good"] == "2" }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { c, _ := srvIns.Get("zone-1"); return c.Types[typ].RejectedCount == 1 }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, 1, s2.sentCount("default/bad-1"))
	assert.Equal(t, map[string]string{"default/good": "2"}, versions(sink))
}

// The receiver answers in order, so a refusal in one response and an
// acceptance of a newer version of the same name in the next leave the
// server's view on the newer version; a refusal of both leaves it on what
// the zone held before either. (Three responses carrying x are in flight
// at once: the initial sync fills the window, and each later version goes
// out with the answer to one of the sync's first responses.)
func TestFaultRefusalsAcrossResponsesInFlight(t *testing.T) {
	const typ = "T"
	ix := NewIndex([]string{typ})
	for _, n := range []string{"f0", "f1", "f2"} {
		require.NoError(t, ix.Put(res(typ, "", n, "1", 10<<10)))
	}
	require.NoError(t, ix.Put(res(typ, "", "x", "5", 10)))
	srvIns := insights.NewRegistry()
	// One filler per response; the last carries f2 and x@5.
	p := serveRaw(t, ix, WithServerInsights(srvIns), WithServerMaxMessageSize(responseOverhead+12<<10))
	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL(typ), ResourceNamesSubscribe: []string{"*"},
		InitialResourceVersions: map[string]string{"x": "2"}}
	ra, rb := nextResponse(t, p), nextResponse(t, p)
	r1 := nextResponse(t, p)
	require.Len(t, r1.Resources, 2)
	require.Equal(t, "5", r1.Resources[1].Version)
	ack := func(r *discovery.DeltaDiscoveryResponse) {
		p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL(typ), ResponseNonce: r.Nonce}
	}
	require.NoError(t, ix.Put(res(typ, "", "x", "6", 10)))
	ack(ra)
	r2 := nextResponse(t, p)
	require.NoError(t, ix.Put(res(typ, "", "x", "7", 10)))
	ack(rb)
	r3 := nextResponse(t, p)
	require.Equal(t, "6", r2.Resources[0].Version)
	require.Equal(t, "7", r3.Resources[0].Version)
	nack := func(r *discovery.DeltaDiscoveryResponse, version string) {
		st, err := rejectionStatus(3, "refused", []*kdsv1.RejectedResource{rejectedEntry("x", version, false, nil)})
		require.NoError(t, err)
		p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL(typ), ResponseNonce: r.Nonce, ErrorDetail: st}
	}
	nack(r1, "5")
	ack(r2)
	nack(r3, "7")
	held := func() int { c, _ := srvIns.Get("z"); return c.Types[typ].ResourcesHeld }
	require.Eventually(t, func() bool { c, _ := srvIns.Get("z"); return c.Types[typ].ResponsesNACKed == 2 }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, 4, held(), "the three fillers and x")
	// Version 7 was refused: the server does not send it again; x@6 is
	// what the zone holds. A change to 8 goes out.
	noResponse(t, p, "refused version resent")
	require.NoError(t, ix.Put(res(typ, "", "x", "8", 10)))
	r4 := nextResponse(t, p)
	require.Len(t, r4.Resources, 1)
	assert.Equal(t, "8", r4.Resources[0].Version)
}

// A removal spelled two ways ("x" and "/x" name one store key) is refused
// for the non-canonical spelling and applied for the other, instead of
// ending the session on the store's duplicate-key check.
func TestFaultRemovalSpelledTwoWays(t *testing.T) {
	const typ = fuzzType
	ctx := t.Context()
	mem := memory.New()
	defer mem.Close()
	_, err := mem.Apply(ctx, store.Batch{Put: []*resource.Resource{{Type: typ, Zone: fuzzZone, Name: "default-x", Version: "1", Spec: []byte(`{}`)}}})
	require.NoError(t, err)
	c := NewClient([]string{typ}, storeSink{mem}, rejectValidator{}, fuzzZone, fuzzZone)
	c.held[typ] = newHeldRecord(map[string]string{"default-x": "1"})
	stream := &recordingStream{}
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: TypeURL(typ), Nonce: "1", RemovedResources: []string{"default-x", "/default-x"}}
	require.NoError(t, handle(ctx, c, stream, resp), "the session goes on")
	require.Len(t, stream.sent, 1)
	rej, err := RejectionOf(stream.sent[0].GetErrorDetail())
	require.NoError(t, err)
	require.Len(t, rej.GetResources(), 1)
	assert.Equal(t, "/default-x", rej.GetResources()[0].GetName())
	_, err = mem.Get(ctx, resource.Key{Type: typ, Zone: fuzzZone, Name: "default-x"})
	assert.ErrorIs(t, err, store.ErrNotFound, "the canonical removal is applied")
}

// Serve returns when its context ends even though the stream stays open
// (it does not depend on the caller closing the stream).
func TestFaultServeReturnsWhenContextEndsWithStreamOpen(t *testing.T) {
	p := newPipe(context.Background()) // never ends
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(NewIndex([]string{"T"})).Serve(ctx, serverEnd{p}, "z") }()
	cancel()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("Serve still running 10s after its context ended")
	}
}

// Re-subscribing does not reset the window: a peer that never answers gets
// at most the window of responses per type, however often it subscribes.
func TestFaultResubscriptionKeepsWindow(t *testing.T) {
	ix := NewIndex([]string{"Big"})
	for i := range 40 {
		require.NoError(t, ix.Put(res("Big", "", fmt.Sprintf("b-%02d", i), "1", 10<<10)))
	}
	p := serveRaw(t, ix, WithServerWindow(3), WithServerMaxMessageSize(responseOverhead+32<<10))
	for range 20 {
		p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("Big"), ResourceNamesSubscribe: []string{"*"}}
	}
	for range 3 {
		nextResponse(t, p)
	}
	noResponse(t, p, "a response beyond the window after re-subscriptions")
}

// Requests for types this side does not serve are all answered, but only a
// few distinct well-formed names are kept in insights, none that is not a
// type name, and they are dropped when the session ends.
func TestFaultUnknownTypesAreBounded(t *testing.T) {
	ins := insights.NewRegistry()
	ix := NewIndex([]string{"T"})
	ctx, cancel := context.WithCancel(context.Background())
	p := newPipe(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = NewServer(ix, WithServerInsights(ins)).Serve(ctx, serverEnd{p}, "z") }()
	const n = 200
	for i := range n {
		p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL(fmt.Sprintf("Unknown%d", i))}
	}
	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("not a type name")}
	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL(string(make([]byte, 1000)))}
	for range n + 2 {
		r := nextResponse(t, p)
		require.Len(t, r.ResourceErrors, 1, "every request is answered")
	}
	c, _ := ins.Get("z")
	assert.Len(t, c.Types, MaxUnknownTypes)
	cancel()
	<-done
	c, _ = ins.Get("z")
	assert.Empty(t, c.Types, "dropped when the session ends")
}

// A request with more names than allowed ends the session with an error
// that names the limit.
func TestFaultRequestWithTooManyNamesEndsSession(t *testing.T) {
	ix := NewIndex([]string{"T"})
	p := newPipe(context.Background())
	versions := make(map[string]string, MaxNamesPerRequest+1)
	for i := range MaxNamesPerRequest + 1 {
		versions[fmt.Sprintf("n-%d", i)] = "1"
	}
	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), InitialResourceVersions: versions}
	err := NewServer(ix).Serve(t.Context(), serverEnd{p}, "z")
	require.ErrorIs(t, err, ErrProtocol)
	assert.Contains(t, err.Error(), fmt.Sprint(MaxNamesPerRequest))
}

// Responses in flight are budgeted in bytes: a peer that never answers
// holds at most its session's budget, the process budget is shared, and a
// session's bytes return to it when the session ends.
func TestFaultInflightBytesAreBudgeted(t *testing.T) {
	const maxMsg = responseOverhead + 32<<10
	ix := NewIndex([]string{"A", "B", "C"})
	for _, typ := range []string{"A", "B", "C"} {
		for i := range 20 {
			require.NoError(t, ix.Put(res(typ, "", fmt.Sprintf("r-%02d", i), "1", 10<<10)))
		}
	}
	budget := NewBudget(4 * maxMsg)
	srv := NewServer(ix, WithServerMaxMessageSize(maxMsg), WithServerBudget(budget), WithSessionBudget(2*maxMsg))
	ctx, cancel := context.WithCancel(context.Background())
	p := newPipe(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, serverEnd{p}, "z") }()
	for _, typ := range []string{"A", "B", "C"} {
		p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL(typ), ResourceNamesSubscribe: []string{"*"}}
	}
	// Three types × window 3 would be nine responses; the session's budget
	// of two max-size messages allows two or three (the last reservation
	// is made while less than the budget is in flight).
	var got []*discovery.DeltaDiscoveryResponse
	for {
		select {
		case r := <-p.resps:
			got = append(got, r)
			continue
		case <-time.After(200 * time.Millisecond):
		}
		break
	}
	assert.LessOrEqual(t, len(got), 3)
	assert.GreaterOrEqual(t, len(got), 1)
	assert.LessOrEqual(t, budget.Used(), int64(2*maxMsg+maxMsg))

	// Answering frees the budget and the sync goes on.
	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: got[0].TypeUrl, ResponseNonce: got[0].Nonce}
	nextResponse(t, p)
	cancel()
	<-done
	assert.Zero(t, budget.Used(), "a session's bytes return when it ends")
}
