package kdssync

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// serveRaw runs a server on a pipe whose client side the test drives by hand.
func serveRaw(t *testing.T, ix *Index, opts ...ServerOption) *pipe {
	t.Helper()
	return serveRawWith(t, NewServer(ix, opts...))
}

// serveRawWith runs srv on a pipe whose client side the test drives by
// hand, as peer "z".
func serveRawWith(t *testing.T, srv *Server) *pipe {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := newPipe(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, serverEnd{p}, "z") }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

// waitHandled waits until srv's session with peer "z" has handled answers
// ACKs of typ and nothing since: the ACKs are counted (insights in reg)
// when the session's loop handles them, and a Held query is answered by
// that loop only after it has finished handling the last one, including
// what it sent in answer.
func waitHandled(t *testing.T, srv *Server, reg *insights.Registry, typ string, answers uint64) {
	t.Helper()
	require.Eventually(t, func() bool {
		c, ok := reg.Get("z")
		return ok && c.Types[typ].ResponsesACKed >= answers
	}, 10*time.Second, time.Millisecond, "the server handles ACK %d", answers)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := srv.Held(ctx, typ, "-")
	require.NoError(t, err)
}

func nextResponse(t *testing.T, p *pipe) *discovery.DeltaDiscoveryResponse {
	t.Helper()
	select {
	case r := <-p.resps:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no response")
		return nil
	}
}

func noResponse(t *testing.T, p *pipe, msg string) {
	t.Helper()
	select {
	case r := <-p.resps:
		t.Fatalf("%s: got response %s with %d resources", msg, r.Nonce, len(r.Resources))
	case <-time.After(100 * time.Millisecond):
	}
}

// A server keeps up to its window of responses per type in flight, and
// sends the next one as each is answered.
func TestServerKeepsWindowOfResponsesInFlight(t *testing.T) {
	ix := NewIndex([]string{"Big"})
	for i := range 20 {
		require.NoError(t, ix.Put(res("Big", "", fmt.Sprintf("b-%02d", i), "1", 10<<10)))
	}
	// About 3 resources per response: 7 responses for the initial sync.
	p := serveRaw(t, ix, WithServerWindow(3), WithServerMaxMessageSize(responseOverhead+32<<10))
	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("Big"), ResourceNamesSubscribe: []string{"*"}}
	got := 0
	next := func() *discovery.DeltaDiscoveryResponse {
		r := nextResponse(t, p)
		got += len(r.Resources)
		return r
	}
	answer := func(r *discovery.DeltaDiscoveryResponse, nack bool) {
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("Big"), ResponseNonce: r.Nonce}
		if nack {
			req.ErrorDetail = &status.Status{Code: 3, Message: "refused"}
		}
		p.reqs <- req
	}
	var inflight []*discovery.DeltaDiscoveryResponse
	for range 3 {
		inflight = append(inflight, next())
	}
	noResponse(t, p, "a fourth response before any ACK")

	// ACK the oldest: exactly one more goes out.
	answer(inflight[0], false)
	inflight = append(inflight[1:], next())
	noResponse(t, p, "beyond the window after one ACK")

	// A NACK frees a slot too; answering in order finishes the sync.
	answer(inflight[0], true)
	inflight = inflight[1:]
	for got < 20 {
		inflight = append(inflight, next())
		assert.LessOrEqual(t, len(inflight), 3, "never more than the window in flight")
		answer(inflight[0], false)
		inflight = inflight[1:]
	}
	assert.Equal(t, 20, got, "every resource sent exactly once")
}

// Changes go at once while fewer than two responses are in flight (one
// the receiver stores, one it checks); changes that arrive after that wait
// for an answer and then go together in one response, instead of taking
// the window's last slot one by one. A burst bigger than one message
// still fills the window after that answer.
func TestServerHoldsChangesWhileTwoResponsesAreInFlight(t *testing.T) {
	ix := NewIndex([]string{"T"})
	reg := insights.NewRegistry()
	srv := NewServer(ix, WithServerWindow(3), WithServerMaxMessageSize(responseOverhead+32<<10), WithServerInsights(reg))
	p := serveRawWith(t, srv)
	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}}
	// An answer fills the window with whatever is pending, including
	// changes made while it is handled: each ACK is let finish before the
	// test changes anything, or a change could ride on it.
	var acked uint64
	ack := func(r *discovery.DeltaDiscoveryResponse) {
		p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResponseNonce: r.Nonce}
		acked++
		waitHandled(t, srv, reg, "T", acked)
	}
	ack(nextResponse(t, p)) // the initial answer: nothing held, nothing served

	// Fewer than two in flight: a change goes at once.
	require.NoError(t, ix.Put(res("T", "", "a", "1", 100)))
	r1 := nextResponse(t, p)
	require.Len(t, r1.Resources, 1)
	require.NoError(t, ix.Put(res("T", "", "b", "1", 100)))
	r2 := nextResponse(t, p)
	require.Len(t, r2.Resources, 1)

	// Two in flight: further changes wait for an answer.
	for _, n := range []string{"c", "d", "e"} {
		require.NoError(t, ix.Put(res("T", "", n, "1", 100)))
	}
	noResponse(t, p, "a change while two responses are in flight")
	ack(r1)
	r3 := nextResponse(t, p)
	assert.Len(t, r3.Resources, 3, "the changes held meanwhile go in one response")
	noResponse(t, p, "nothing left")

	// A burst of more than one message's worth while two are in flight:
	// held until an answer, which then fills the window.
	for i := range 20 {
		require.NoError(t, ix.Put(res("T", "", fmt.Sprintf("big-%02d", i), "1", 10<<10)))
	}
	noResponse(t, p, "a burst while two responses are in flight")
	ack(r2)
	for range 2 {
		assert.NotEmpty(t, nextResponse(t, p).Resources)
	}
	noResponse(t, p, "beyond the window")
}

// Responses carry names in the receiving store's key order (mesh, then
// name), so a large initial sync appends to the receiver's tree.
func TestInitialSyncSendsNamesInKeyOrder(t *testing.T) {
	ix := NewIndex([]string{"T"})
	var want []resource.Key
	for _, mesh := range []string{"a", "a-b", "b"} {
		for i := range 30 {
			name := fmt.Sprintf("n-%02d", i)
			require.NoError(t, ix.Put(res("T", mesh, name, "1", 2<<10)))
			want = append(want, resource.Key{Type: "T", Mesh: mesh, Name: name})
		}
	}
	p := serveRaw(t, ix, WithServerWindow(1), WithServerMaxMessageSize(responseOverhead+16<<10))
	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}}
	var got []resource.Key
	for len(got) < len(want) {
		r := nextResponse(t, p)
		for _, wr := range r.Resources {
			got = append(got, keyFor("T", "", wr.Name))
		}
		p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResponseNonce: r.Nonce}
	}
	// "a-b/…" sorts before "a/…" as a string; the store orders by mesh.
	assert.Equal(t, want, got)
	assert.True(t, slices.IsSortedFunc(got, func(x, y resource.Key) int {
		if x.Mesh != y.Mesh {
			return strings.Compare(x.Mesh, y.Mesh)
		}
		return strings.Compare(x.Name, y.Name)
	}))
}

// gatedSink blocks each Apply until released, and reports when one starts.
type gatedSink struct {
	*memSink
	started chan int // number of puts of the Apply that started
	release chan struct{}
}

func (g *gatedSink) Apply(ctx context.Context, puts []*resource.Resource, deletes []resource.Key) error {
	g.started <- len(puts)
	select {
	case <-g.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.memSink.Apply(ctx, puts, deletes)
}

// countingValidator reports each Validate call.
type countingValidator struct{ calls chan int }

func (v countingValidator) Validate(_ context.Context, rs []*resource.Resource) error {
	v.calls <- len(rs)
	return nil
}

// The client validates the next response while the previous one is being
// stored, and still applies and answers in arrival order.
func TestClientValidatesNextResponseWhileStoring(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPipe(ctx)
	sink := &gatedSink{memSink: newMemSink(), started: make(chan int, 8), release: make(chan struct{})}
	val := countingValidator{calls: make(chan int, 8)}
	cli := NewClient([]string{"T"}, sink, val, "global", "")
	done := make(chan error, 1)
	go func() { done <- cli.Run(ctx, clientEnd{p}) }()
	<-p.reqs // subscription

	send := func(nonce string, names ...string) {
		var rs []*discovery.Resource
		for _, n := range names {
			enc, err := Encode(res("T", "m", n, "1", 10))
			require.NoError(t, err)
			rs = append(rs, enc)
		}
		p.resps <- &discovery.DeltaDiscoveryResponse{TypeUrl: TypeURL("T"), Nonce: nonce, Resources: rs}
	}
	send("1", "a")
	require.Equal(t, 1, <-val.calls)
	require.Equal(t, 1, <-sink.started, "response 1 is being stored")
	// Sent only now: a response already waiting would be stored with 1.
	send("2", "b", "c")
	select {
	case n := <-val.calls:
		assert.Equal(t, 2, n, "response 2 validated while 1 is stored")
	case <-time.After(10 * time.Second):
		t.Fatal("response 2 was not validated while response 1 was being stored")
	}
	select {
	case ack := <-p.reqs:
		t.Fatalf("answer %q before response 1 was stored", ack.ResponseNonce)
	default:
	}
	sink.release <- struct{}{}
	assert.Equal(t, "1", (<-p.reqs).ResponseNonce, "ACKs in arrival order")
	require.Equal(t, 2, <-sink.started)
	sink.release <- struct{}{}
	assert.Equal(t, "2", (<-p.reqs).ResponseNonce)
	assert.Len(t, sink.snapshot(), 3)
	cancel()
	<-done
}

// The size a server records for a response (its window budget and the
// largest-response figure in insights) is the response's encoded size.
func TestServerRecordsEncodedResponseSize(t *testing.T) {
	for _, initial := range []map[string]string{
		nil,
		{"m/a": "0", "m/gone-1": "1", "m/gone-2": "7"}, // an update and removals
	} {
		ix := NewIndex([]string{"T"})
		for i, name := range []string{"a", "b", "c"} {
			r := res("T", "m", name, "1", 100*(i+1)<<(3*i))
			r.Labels = map[string]string{"k": name, "": ""}
			r.CreationTime = time.Unix(1700000000, int64(i))
			require.NoError(t, ix.Put(r))
		}
		reg := insights.NewRegistry()
		p := serveRaw(t, ix, WithServerInsights(reg))
		p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}, InitialResourceVersions: initial}
		resp := nextResponse(t, p)
		require.NotEmpty(t, resp.Resources)
		// The server records the response after handing it to the stream.
		var recorded int
		require.Eventually(t, func() bool {
			c, _ := reg.Get("z")
			recorded = c.Types["T"].LargestResponseBytes
			return recorded != 0
		}, 10*time.Second, time.Millisecond)
		assert.Equal(t, proto.Size(resp), recorded, "initial versions %v", initial)
		if initial != nil {
			assert.Len(t, resp.RemovedResources, 2)
		}
	}
}
