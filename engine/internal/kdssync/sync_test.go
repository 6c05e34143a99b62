package kdssync

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pipe is an in-memory pair of logical streams: Send enqueues (like the
// mux), Recv blocks until a message or the context ends.
type pipe struct {
	ctx   context.Context
	reqs  chan *discovery.DeltaDiscoveryRequest
	resps chan *discovery.DeltaDiscoveryResponse
	mu    sync.Mutex
	sent  []*discovery.DeltaDiscoveryResponse
}

func newPipe(ctx context.Context) *pipe {
	return &pipe{ctx: ctx, reqs: make(chan *discovery.DeltaDiscoveryRequest, 1024), resps: make(chan *discovery.DeltaDiscoveryResponse, 1024)}
}

type serverEnd struct{ *pipe }
type clientEnd struct{ *pipe }

func (s serverEnd) Send(r *discovery.DeltaDiscoveryResponse) error {
	// Round-trip through the wire encoding like the real transport.
	b, _ := proto.Marshal(r)
	var c discovery.DeltaDiscoveryResponse
	if err := proto.Unmarshal(b, &c); err != nil {
		return err
	}
	s.mu.Lock()
	s.sent = append(s.sent, &c)
	s.mu.Unlock()
	s.resps <- &c
	return nil
}
func (s serverEnd) RecvContext(ctx context.Context) (*discovery.DeltaDiscoveryRequest, error) {
	select {
	case r := <-s.reqs:
		return r, nil
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}
func (s serverEnd) Context() context.Context { return s.ctx }
func (c clientEnd) Send(r *discovery.DeltaDiscoveryRequest) error {
	c.reqs <- proto.Clone(r).(*discovery.DeltaDiscoveryRequest)
	return nil
}
func (c clientEnd) RecvContext(ctx context.Context) (*discovery.DeltaDiscoveryResponse, error) {
	select {
	case r := <-c.resps:
		return r, nil
	case <-c.ctx.Done():
		return nil, c.ctx.Err()
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}
func (c clientEnd) Context() context.Context { return c.ctx }

func (p *pipe) responses() []*discovery.DeltaDiscoveryResponse {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*discovery.DeltaDiscoveryResponse(nil), p.sent...)
}

// memSink is a map-backed Sink.
type memSink struct {
	mu      sync.Mutex
	res     map[resource.Key]*resource.Resource
	applies int
	fail    error
	// delay, if set before use, is how long each Apply takes (a slow
	// store).
	delay time.Duration
}

func newMemSink() *memSink { return &memSink{res: map[resource.Key]*resource.Resource{}} }

func (m *memSink) Versions(_ context.Context, typ string) (map[string]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]string{}
	for k, r := range m.res {
		if k.Type == typ {
			out[WireName(k.Mesh, k.Name)] = r.Version
		}
	}
	return out, nil
}

func (m *memSink) Apply(_ context.Context, puts []*resource.Resource, deletes []resource.Key) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	time.Sleep(m.delay)
	m.applies++
	for _, r := range puts {
		m.res[r.Key()] = r.Clone()
	}
	for _, k := range deletes {
		delete(m.res, k)
	}
	return nil
}

// holdNamed puts n resources of typ in m as zone-1's, named prefix-00000
// and on (version "1", a one-byte spec): what a client holds and resumes
// from.
func (m *memSink) holdNamed(typ, prefix string, n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range n {
		r := res(typ, "default", fmt.Sprintf("%s-%05d", prefix, i), "1", 1)
		r.Zone = "zone-1"
		m.res[r.Key()] = r
	}
}

func (m *memSink) snapshot() map[resource.Key]*resource.Resource {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.res)
}

// rejectValidator rejects resources whose name starts with "bad".
type rejectValidator struct{}

func (rejectValidator) Validate(_ context.Context, rs []*resource.Resource) error {
	var inv []resource.InvalidResource
	for _, r := range rs {
		if strings.HasPrefix(r.Name, "bad") {
			inv = append(inv, resource.InvalidResource{Key: r.Key(), Errors: []resource.FieldError{{Field: "spec.x", Message: "must not be bad"}}})
		}
	}
	if inv != nil {
		return &resource.ValidationError{Invalid: inv}
	}
	return nil
}

func res(typ, mesh, name, version string, size int) *resource.Resource {
	return &resource.Resource{Type: typ, Mesh: mesh, Name: name, Version: version,
		Spec: []byte(fmt.Sprintf(`{"pad":%q}`, strings.Repeat("x", size)))}
}

type harness struct {
	t      *testing.T
	ix     *Index
	srvIns *insights.Registry
	cliIns *insights.Registry
	sink   *memSink
	pipe   *pipe
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func start(t *testing.T, ix *Index, sink *memSink, types []string, srvOpts []ServerOption, cliOpts ...ClientOption) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, ix: ix, sink: sink, cancel: cancel, pipe: newPipe(ctx),
		srvIns: insights.NewRegistry(), cliIns: insights.NewRegistry()}
	srv := NewServer(ix, append([]ServerOption{WithServerInsights(h.srvIns)}, srvOpts...)...)
	cli := NewClient(types, sink, rejectValidator{}, "global", "zone-1", append([]ClientOption{WithClientInsights(h.cliIns)}, cliOpts...)...)
	h.wg.Add(2)
	go func() { defer h.wg.Done(); _ = srv.Serve(ctx, serverEnd{h.pipe}, "zone-1") }()
	go func() { defer h.wg.Done(); _ = cli.Run(ctx, clientEnd{h.pipe}) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() { h.cancel(); h.wg.Wait() }

func (h *harness) waitFor(cond func() bool, msg string) {
	h.t.Helper()
	require.Eventually(h.t, cond, 10*time.Second, 5*time.Millisecond, msg)
}

func (h *harness) cliType(typ string) insights.TypeState {
	c, _ := h.cliIns.Get("global")
	return c.Types[typ]
}

func (h *harness) srvType(typ string) insights.TypeState {
	c, _ := h.srvIns.Get("zone-1")
	return c.Types[typ]
}

func TestInitialSyncUpdatesAndDeletes(t *testing.T) {
	ix := NewIndex([]string{"MeshTimeout", "Mesh"})
	for i := range 50 {
		require.NoError(t, ix.Put(res("MeshTimeout", "default", fmt.Sprintf("t-%d", i), "1", 100)))
	}
	require.NoError(t, ix.Put(res("Mesh", "", "default", "7", 10)))
	sink := newMemSink()
	h := start(t, ix, sink, []string{"MeshTimeout", "Mesh"}, nil)
	h.waitFor(func() bool { return len(sink.snapshot()) == 51 }, "initial sync")

	got := sink.snapshot()[resource.Key{Type: "MeshTimeout", Mesh: "default", Zone: "zone-1", Name: "t-3"}]
	require.NotNil(t, got, "stored with the connection's zone")
	assert.Equal(t, "1", got.Version)

	require.NoError(t, ix.Put(res("MeshTimeout", "default", "t-3", "2", 100)))
	ix.Delete(resource.Key{Type: "MeshTimeout", Mesh: "default", Name: "t-4"})
	h.waitFor(func() bool {
		s := sink.snapshot()
		r := s[resource.Key{Type: "MeshTimeout", Mesh: "default", Zone: "zone-1", Name: "t-3"}]
		_, stillThere := s[resource.Key{Type: "MeshTimeout", Mesh: "default", Zone: "zone-1", Name: "t-4"}]
		return r != nil && r.Version == "2" && !stillThere
	}, "update and delete propagate")
	h.waitFor(func() bool { return h.srvType("MeshTimeout").ResponsesACKed >= 2 }, "ACKs recorded")
	assert.Equal(t, uint64(51), h.cliType("MeshTimeout").ResourcesReceived)
}

func TestLargeUpdateIsSplitAcrossResponses(t *testing.T) {
	ix := NewIndex([]string{"Big"})
	for i := range 40 {
		require.NoError(t, ix.Put(res("Big", "", fmt.Sprintf("b-%d", i), "1", 10<<10)))
	}
	sink := newMemSink()
	const maxMsg = 64 << 10
	h := start(t, ix, sink, []string{"Big"}, []ServerOption{WithServerMaxMessageSize(responseOverhead + maxMsg)})
	h.waitFor(func() bool { return len(sink.snapshot()) == 40 }, "all arrive")
	resps := h.pipe.responses()
	assert.Greater(t, len(resps), 5, "400 KiB in 64 KiB responses needs several")
	for _, r := range resps {
		assert.LessOrEqual(t, proto.Size(r), responseOverhead+maxMsg)
	}
}

func TestResumeWithUnchangedStateResendsNothing(t *testing.T) {
	ix := NewIndex([]string{"MeshTimeout"})
	sink := newMemSink()
	for i := range 20 {
		r := res("MeshTimeout", "default", fmt.Sprintf("t-%d", i), "1", 100)
		require.NoError(t, ix.Put(r))
		if i < 20 {
			r.Zone = "zone-1"
			sink.res[r.Key()] = r
		}
	}
	// A stale resource the server no longer has must be removed on resume.
	stale := res("MeshTimeout", "default", "gone", "1", 10)
	stale.Zone = "zone-1"
	sink.res[stale.Key()] = stale

	h := start(t, ix, sink, []string{"MeshTimeout"}, nil)
	h.waitFor(func() bool { return h.cliType("MeshTimeout").ResponsesACKed == 1 }, "initial answer applied")
	assert.Equal(t, uint64(0), h.cliType("MeshTimeout").ResourcesReceived, "nothing resent")
	assert.Len(t, sink.snapshot(), 20, "stale resource removed")
	resps := h.pipe.responses()
	require.Len(t, resps, 1)
	assert.Empty(t, resps[0].Resources)
	assert.Equal(t, []string{"default/gone"}, resps[0].RemovedResources)
}

func TestEmptyInitialStateStillAnswered(t *testing.T) {
	ix := NewIndex([]string{"MeshTimeout"})
	sink := newMemSink()
	h := start(t, ix, sink, []string{"MeshTimeout"}, nil)
	h.waitFor(func() bool { return h.cliType("MeshTimeout").ResponsesACKed == 1 }, "empty answer ACKed")
}

func TestNACKIsRecordedAndNotResentUntilChanged(t *testing.T) {
	ix := NewIndex([]string{"MeshTimeout", "Mesh"})
	require.NoError(t, ix.Put(res("MeshTimeout", "default", "bad-1", "1", 10)))
	require.NoError(t, ix.Put(res("Mesh", "", "default", "1", 10)))
	sink := newMemSink()
	h := start(t, ix, sink, []string{"MeshTimeout", "Mesh"}, nil)
	h.waitFor(func() bool { return h.srvType("MeshTimeout").ResponsesNACKed == 1 }, "NACK recorded on the server")
	st := h.srvType("MeshTimeout")
	assert.Contains(t, st.LastNACKError, "bad-1")
	assert.Contains(t, st.LastNACKError, "spec.x")
	h.waitFor(func() bool { return len(sink.snapshot()) == 1 }, "other type unaffected")

	// Unrelated change to the same type: sent, and the NACKed one is not resent.
	require.NoError(t, ix.Put(res("MeshTimeout", "default", "good", "2", 10)))
	h.waitFor(func() bool { return len(sink.snapshot()) == 2 }, "later change arrives")
	time.Sleep(50 * time.Millisecond)
	var nacked int
	for _, r := range h.pipe.responses() {
		for _, x := range r.Resources {
			if x.Name == "default/bad-1" {
				nacked++
			}
		}
	}
	assert.Equal(t, 1, nacked, "a NACKed version is never resent")
	assert.Equal(t, uint64(1), h.srvType("MeshTimeout").ResponsesNACKed)

	// When its content changes, it is sent again (and this time accepted).
	require.NoError(t, ix.Put(res("MeshTimeout", "default", "bad-1", "3", 10)))
	h.waitFor(func() bool { return h.srvType("MeshTimeout").ResponsesNACKed == 2 }, "changed content resent")
}

func TestUnknownTypeKeepsStreamUp(t *testing.T) {
	ix := NewIndex([]string{"Mesh"})
	require.NoError(t, ix.Put(res("Mesh", "", "default", "1", 10)))
	sink := newMemSink()
	h := start(t, ix, sink, []string{"FromTheFuture", "Mesh"}, nil)
	h.waitFor(func() bool { return h.cliType("FromTheFuture").Unknown }, "client told the type is unknown")
	assert.Contains(t, h.cliType("FromTheFuture").Error, "not served")
	assert.True(t, h.srvType("FromTheFuture").Unknown, "server insight says the peer asked for it")
	h.waitFor(func() bool { return len(sink.snapshot()) == 1 }, "known type still syncs")
	require.NoError(t, ix.Put(res("Mesh", "", "other", "1", 10)))
	h.waitFor(func() bool { return len(sink.snapshot()) == 2 }, "stream still up")
}

func TestPayloadCannotChooseZoneOrType(t *testing.T) {
	ix := NewIndex([]string{"Dataplane"})
	r := res("Dataplane", "default", "web-1", "1", 10)
	r.Zone = "someone-else"
	require.NoError(t, ix.Put(r))
	sink := newMemSink()
	start(t, ix, sink, []string{"Dataplane"}, nil).
		waitFor(func() bool { return len(sink.snapshot()) == 1 }, "arrives")
	for k := range sink.snapshot() {
		assert.Equal(t, "zone-1", k.Zone)
	}
}

func TestResourceLimitRefusesOnlyTheCreatesOverIt(t *testing.T) {
	ix := NewIndex([]string{"Dataplane"})
	for i := range 5 {
		require.NoError(t, ix.Put(res("Dataplane", "default", fmt.Sprintf("d-%d", i), "1", 10)))
	}
	sink := newMemSink()
	h := start(t, ix, sink, []string{"Dataplane"}, nil, WithMaxResourcesPerType(3))
	h.waitFor(func() bool { return h.srvType("Dataplane").ResponsesNACKed == 1 }, "NACK")
	st := h.srvType("Dataplane")
	assert.Contains(t, st.LastNACKError, "more than 3")
	assert.Len(t, sink.snapshot(), 3, "the creates within the limit are applied")
	assert.Equal(t, 3, st.ResourcesHeld)
	assert.Equal(t, 2, st.RejectedCount)
	assert.Equal(t, 2, h.cliType("Dataplane").RejectedCount)
}

func TestStoreFailureEndsSession(t *testing.T) {
	ix := NewIndex([]string{"Mesh"})
	require.NoError(t, ix.Put(res("Mesh", "", "default", "1", 10)))
	sink := newMemSink()
	sink.fail = fmt.Errorf("disk full")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPipe(ctx)
	srv := NewServer(ix)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, serverEnd{p}, "z") }()
	err := NewClient([]string{"Mesh"}, sink, rejectValidator{}, "global", "z").Run(ctx, clientEnd{p})
	require.ErrorContains(t, err, "disk full")
	cancel()
	<-done
}

func TestResponseForUnsubscribedTypeIsNACKed(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPipe(ctx)
	sink := newMemSink()
	ins := insights.NewRegistry()
	cli := NewClient([]string{"Mesh"}, sink, rejectValidator{}, "global", "z", WithClientInsights(ins))
	done := make(chan struct{})
	go func() { defer close(done); _ = cli.Run(ctx, clientEnd{p}) }()
	<-p.reqs // the subscription
	enc, err := Encode(res("Secret", "", "x", "1", 1))
	require.NoError(t, err)
	p.resps <- &discovery.DeltaDiscoveryResponse{TypeUrl: TypeURL("Secret"), Nonce: "n1", Resources: []*discovery.Resource{enc}}
	nack := <-p.reqs
	assert.Equal(t, "n1", nack.ResponseNonce)
	require.NotNil(t, nack.ErrorDetail)
	assert.Contains(t, nack.ErrorDetail.Message, "never subscribed")
	assert.Empty(t, sink.snapshot())
	cancel()
	<-done
}

// sharingEnd is clientEnd without the copy on Send: like the mux, which
// queues the request and marshals it later, it keeps what it was given.
type sharingEnd struct{ clientEnd }

func (c sharingEnd) Send(r *discovery.DeltaDiscoveryRequest) error {
	c.reqs <- r
	return nil
}

// A sent request may still be marshalled after Send returns, so the client
// must not change it afterwards: the versions it subscribed with are not
// the map it keeps updating as responses arrive.
func TestSentSubscriptionIsNotChangedLater(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPipe(ctx)
	sink := newMemSink()
	held := res("Mesh", "", "default", "1", 1)
	sink.res[held.Key()] = held
	cli := NewClient([]string{"Mesh"}, sink, rejectValidator{}, "global", "z")
	done := make(chan struct{})
	go func() { defer close(done); _ = cli.Run(ctx, sharingEnd{clientEnd{p}}) }()
	sub := <-p.reqs
	sent := maps.Clone(sub.InitialResourceVersions)
	require.Equal(t, map[string]string{"default": "1"}, sent)

	enc, err := Encode(res("Mesh", "", "other", "1", 1))
	require.NoError(t, err)
	p.resps <- &discovery.DeltaDiscoveryResponse{TypeUrl: TypeURL("Mesh"), Nonce: "n1", Resources: []*discovery.Resource{enc},
		RemovedResources: []string{"default"}}
	ack := <-p.reqs
	require.Equal(t, "n1", ack.ResponseNonce)
	require.Nil(t, ack.ErrorDetail)
	assert.Equal(t, sent, sub.InitialResourceVersions, "the subscription as it was sent")
	cancel()
	<-done
}
