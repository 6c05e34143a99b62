package kdssync

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/mux"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// memStream is one end of an in-memory mux.Stream pair: what one end
// sends, the other receives, through the wire encoding.
type memStream struct {
	ctx  context.Context
	in   <-chan []byte
	out  chan<- []byte
	once *sync.Once
	done chan struct{}
}

func memStreams(ctx context.Context) (*memStream, *memStream) {
	ab, ba := make(chan []byte, 1024), make(chan []byte, 1024)
	done, once := make(chan struct{}), &sync.Once{}
	return &memStream{ctx: ctx, in: ba, out: ab, once: once, done: done},
		&memStream{ctx: ctx, in: ab, out: ba, once: once, done: done}
}

func (s *memStream) Context() context.Context { return s.ctx }

func (s *memStream) Send(m *kdsv1.Message) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	select {
	case s.out <- b:
		return nil
	case <-s.done:
		return io.EOF
	}
}

func (s *memStream) Recv() (*kdsv1.Message, error) {
	select {
	case b := <-s.in:
		var m kdsv1.Message
		if err := proto.Unmarshal(b, &m); err != nil {
			return nil, err
		}
		return &m, nil
	case <-s.done:
		return nil, io.EOF
	}
}

// close ends both ends.
func (s *memStream) close() { s.once.Do(func() { close(s.done) }) }

// recordingClient keeps a copy of every request a client sends.
type recordingClient struct {
	ClientStream
	mu   *sync.Mutex
	reqs *[]*discovery.DeltaDiscoveryRequest
}

func (r recordingClient) Send(req *discovery.DeltaDiscoveryRequest) error {
	r.mu.Lock()
	*r.reqs = append(*r.reqs, proto.Clone(req).(*discovery.DeltaDiscoveryRequest))
	r.mu.Unlock()
	return r.ClientStream.Send(req)
}

// countingSink counts the Versions calls.
type countingSink struct {
	*memSink
	n *atomic.Int32
}

func (s countingSink) Versions(ctx context.Context, typ string) (map[string]string, error) {
	defer s.n.Add(1)
	return s.memSink.Versions(ctx, typ)
}

// key is the key a client on zone-1 stores typ's default/name under.
func key(typ, name string) resource.Key {
	return resource.Key{Type: typ, Mesh: "default", Zone: "zone-1", Name: name}
}

// sessionPair runs two mux sessions for types types with the given max
// message size, as the engine configures them (the sync window, the
// default inbound budget), until the test ends.
func sessionPair(t *testing.T, types, maxMsg int) (serving, subscribing *mux.Session) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a, b := memStreams(ctx)
	opts := []mux.Option{mux.WithWindow(DefaultWindow), mux.WithMaxMessageSize(maxMsg), mux.WithAbort(a.close)}
	serving, subscribing = mux.NewSession(a, types, opts...), mux.NewSession(b, types, opts...)
	var wg sync.WaitGroup
	wg.Go(func() { _ = serving.Run(ctx) })
	wg.Go(func() { _ = subscribing.Run(ctx) })
	t.Cleanup(func() { cancel(); a.close(); wg.Wait() })
	return serving, subscribing
}

// Many types resuming in parts at once stay within the server's inbound
// budget, on real mux sessions: 30 types whose held versions each need
// three 64 KiB parts, against a server that starts reading only once the
// client has sent all it sends before an answer. Their first parts alone come
// to more than the 16 messages the server's inbound queue holds, which
// ended the session (ErrInboundFull) when every type sent its first part
// at once; paced, every type resumes in the one session and nothing
// unchanged is sent again.
func TestManyTypesResumeInPartsWithinTheInboundBudget(t *testing.T) {
	const ntypes, n, maxMsg = 30, 3000, 64 << 10
	types := make([]string, ntypes)
	for i := range types {
		types[i] = fmt.Sprintf("T%02d", i)
	}
	ix := NewIndex(types)
	sink := newMemSink()
	long := strings.Repeat("x", 24)
	for _, typ := range types {
		for i := range n {
			r := res(typ, "default", fmt.Sprintf("%s-%05d", long, i), "1", 1)
			require.NoError(t, ix.Put(r))
			c := r.Clone()
			c.Zone = "zone-1"
			sink.res[c.Key()] = c
		}
		// One change and one removal per type while the client was away.
		require.NoError(t, ix.Put(res(typ, "default", long+"-00007", "2", 1)))
		gone := res(typ, "default", "gone", "1", 1)
		gone.Zone = "zone-1"
		sink.res[gone.Key()] = gone
	}
	serving, subscribing := sessionPair(t, ntypes, maxMsg)
	budget := subscribing.Params().PeerInboundBudget
	require.Equal(t, mux.DefaultInboundBudgetMessages*maxMsg, budget)
	require.Equal(t, budget, serving.Params().InboundBudget, "the figure the serving side enforces")

	var mu sync.Mutex
	var reqs []*discovery.DeltaDiscoveryRequest
	var read atomic.Int32
	srvIns := insights.NewRegistry()
	srv := NewServer(ix, WithServerMaxMessageSize(maxMsg), WithServerInsights(srvIns))
	cli := NewClient(types, countingSink{sink, &read}, rejectValidator{}, "global", "zone-1",
		WithClientMaxMessageSize(maxMsg), WithResumeParts(true), WithPeerInboundBudget(budget))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Go(func() { _ = cli.Run(ctx, recordingClient{subscribing.Client(), &mu, &reqs}) })
	// The server is busy at first: everything the client sends once it
	// has read what it holds waits in the server's inbound queue.
	require.Eventually(t, func() bool {
		return read.Load() == ntypes || serving.Err() != nil
	}, 10*time.Second, time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	wg.Go(func() { _ = srv.Serve(ctx, serving.Server(), "zone-1") })

	require.Eventually(t, func() bool {
		if serving.Err() != nil || subscribing.Err() != nil {
			return true
		}
		sink.mu.Lock()
		defer sink.mu.Unlock()
		for _, typ := range types {
			if r := sink.res[key(typ, long+"-00007")]; r == nil || r.Version != "2" {
				return false
			}
			if sink.res[key(typ, "gone")] != nil {
				return false
			}
		}
		return true
	}, time.Minute, 10*time.Millisecond, "every type resumes")
	require.NoError(t, serving.Err(), "the session goes on")
	require.NoError(t, subscribing.Err(), "the session goes on")

	mu.Lock()
	defer mu.Unlock()
	parts := map[string]int{}
	for _, r := range reqs {
		if r.GetResponseNonce() == "" {
			parts[r.GetTypeUrl()]++
		}
	}
	for _, typ := range types {
		assert.GreaterOrEqual(t, parts[TypeURL(typ)], 3, "%s went in several parts", typ)
	}
	var puts int
	c, _ := srvIns.Get("zone-1")
	for _, typ := range types {
		puts += int(c.Types[typ].ResourcesSent)
	}
	assert.Equal(t, ntypes, puts, "only the changed resource of each type is sent")
	st := serving.Stats().Server
	t.Logf("server inbound queue high water: %d bytes in %d requests (budget %d)", st.InboundBytesHighWater, st.InboundHighWater, budget)
	assert.LessOrEqual(t, st.InboundBytesHighWater, int64(budget/2+budget/8),
		"the subscriptions in the server's queue stay within half its budget (and a few answers)")
}

// The versions refused in earlier sessions are spread across parts like
// the held ones: a thousand refusals of long names (over 100 KiB) no
// longer leave a 64 KiB message no room, and the server, told of every
// one of them, sends none of those versions again.
func TestResumeSpreadsRefusalsAcrossParts(t *testing.T) {
	const maxMsg = 64 << 10
	ix, sink := heldAndServed(t, 100)
	rej := NewRejections()
	var refused []*kdsv1.RejectedResource
	long := strings.Repeat("r", 100)
	for i := range MaxRememberedRejections {
		name := fmt.Sprintf("%s-%04d", long, i)
		require.NoError(t, ix.Put(res("T", "default", name, "bad", 10)))
		refused = append(refused, &kdsv1.RejectedResource{Name: "default/" + name, Version: "bad",
			Errors: []*kdsv1.FieldError{{Field: "spec.x", Message: "must not be bad"}}})
	}
	rej.update("T", refused, nil)
	var mu sync.Mutex
	var reqs []*discovery.DeltaDiscoveryRequest
	ctx, cancel := context.WithCancel(context.Background())
	p := newPipe(ctx)
	srvIns := insights.NewRegistry()
	srv := NewServer(ix, WithServerMaxMessageSize(maxMsg), WithServerInsights(srvIns))
	cli := NewClient([]string{"T"}, sink, rejectValidator{}, "global", "zone-1",
		WithClientMaxMessageSize(maxMsg), WithResumeParts(true), WithRejections(rej))
	done := make(chan error, 2)
	go func() { done <- srv.Serve(ctx, serverEnd{p}, "zone-1") }()
	go func() { done <- cli.Run(ctx, recordingClient{clientEnd{p}, &mu, &reqs}) }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	require.Eventually(t, func() bool {
		v := versions(sink)
		return len(v) == 101 && v["default/t-00010"] == "2" && v["default/new"] == "1"
	}, 10*time.Second, 5*time.Millisecond, "everything else converges")
	require.Eventually(t, func() bool {
		c, _ := srvIns.Get("zone-1")
		return c.Types["T"].RejectedCount == MaxRememberedRejections
	}, 10*time.Second, 5*time.Millisecond, "the server knows every refusal")
	select {
	case err := <-done:
		t.Fatalf("the session ended: %v", err)
	default:
	}
	for _, r := range p.responses() {
		for _, x := range r.GetResources() {
			assert.NotContains(t, x.GetName(), long, "a refused version is not sent again")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	var subs int
	for _, r := range reqs {
		if r.GetResponseNonce() != "" {
			continue
		}
		subs++
		assert.LessOrEqual(t, proto.Size(r), maxMsg)
	}
	assert.GreaterOrEqual(t, subs, 3, "the refusals take two parts at least")
}

// The pacing lets small subscriptions pass one that waits, starts a
// waiting one when an answer makes room, and refuses a response for a
// type it has not subscribed to yet (the server broke the protocol; the
// response is NACKed and changes nothing).
func TestSubscriptionsWaitForRoom(t *testing.T) {
	const maxMsg = 64 << 10
	sink := newMemSink()
	for _, typ := range []string{"Big0", "Big1"} {
		sink.holdNamed(typ, strings.Repeat("b", 24), 3000)
	}
	p := newPipe(t.Context())
	// Room for one subscription in parts at a time (each holds a max-size
	// message and a bit) and the small ones.
	ins := insights.NewRegistry()
	cli := NewClient([]string{"Big0", "Small0", "Big1", "Small1"}, sink, rejectValidator{}, "global", "zone-1",
		WithClientInsights(ins), WithClientMaxMessageSize(maxMsg), WithResumeParts(true), WithPeerInboundBudget(4*maxMsg))
	waiting := func(typ string) insights.TypeState { c, _ := ins.Get("global"); return c.Types[typ] }
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- cli.Run(ctx, clientEnd{p}) }()
	defer func() { cancel(); <-done }()

	next := func() *discovery.DeltaDiscoveryRequest { t.Helper(); return nextRequest(t, p, done) }
	quiet := func() {
		t.Helper()
		select {
		case r := <-p.reqs:
			t.Fatalf("unexpected request for %s", r.GetTypeUrl())
		case <-time.After(100 * time.Millisecond):
		}
	}
	nonce := 0
	respond := func(typ string) {
		nonce++
		p.resps <- &discovery.DeltaDiscoveryResponse{TypeUrl: TypeURL(typ), Nonce: fmt.Sprint(nonce)}
	}
	var urls []string
	for range 3 {
		urls = append(urls, next().GetTypeUrl())
	}
	assert.Equal(t, []string{TypeURL("Big0"), TypeURL("Small0"), TypeURL("Small1")}, urls, "Big1 waits, the small ones pass it")
	quiet()
	since := waiting("Big1").WaitingSince
	assert.NotZero(t, since, "insights show that Big1 waits")
	assert.Greater(t, waiting("Big1").WaitingBytes, int64(maxMsg/2))
	for _, typ := range []string{"Big0", "Small0", "Small1"} {
		assert.Zero(t, waiting(typ).WaitingSince, "%s is sent", typ)
	}

	// A response for Big1 before its subscription is refused.
	respond("Big1")
	nack := next()
	assert.Equal(t, TypeURL("Big1"), nack.GetTypeUrl())
	require.NotNil(t, nack.GetErrorDetail())
	assert.Contains(t, nack.GetErrorDetail().GetMessage(), "not subscribed to yet")
	quiet()

	// The small ones' answers do not make room for Big1; Big0's parts go
	// on one by one, and the answer to its last (the subscription) does.
	respond("Small0")
	require.NotEmpty(t, next().GetResponseNonce(), "ACK")
	for {
		respond("Big0")
		ack := next()
		require.NotEmpty(t, ack.GetResponseNonce())
		part := next()
		require.Equal(t, TypeURL("Big0"), part.GetTypeUrl())
		if slices.Contains(part.GetResourceNamesSubscribe(), "*") {
			break
		}
	}
	quiet()
	assert.Equal(t, since, waiting("Big1").WaitingSince, "Big1 waits since it was first left waiting")
	respond("Big0")
	require.NotEmpty(t, next().GetResponseNonce(), "ACK")
	first := next()
	assert.Zero(t, waiting("Big1").WaitingSince, "Big1 no longer waits")
	assert.Zero(t, waiting("Big1").WaitingBytes)
	assert.Equal(t, TypeURL("Big1"), first.GetTypeUrl(), "Big1 starts once Big0 is answered")
	assert.Empty(t, first.GetResourceNamesSubscribe(), "its first part")
}

// nextRequest waits for the client's next request on p; the test fails if
// the client ends (done) or none comes within 10 s. The client's error is
// put back on done (of room for one), so that the test's deferred wait for
// the client still returns: taking it made a client that ended hang the
// test until the test binary's timeout instead of failing it.
func nextRequest(t *testing.T, p *pipe, done chan error) *discovery.DeltaDiscoveryRequest {
	t.Helper()
	select {
	case r := <-p.reqs:
		return r
	case err := <-done:
		done <- err
		t.Fatalf("the client ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no request")
	}
	return nil
}
