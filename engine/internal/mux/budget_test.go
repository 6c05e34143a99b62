package mux

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// chanStream receives what the test puts on in; Send discards.
type chanStream struct {
	ctx context.Context
	in  chan *kdsv1.Message
}

func newChanStream(ctx context.Context) *chanStream {
	return &chanStream{ctx: ctx, in: make(chan *kdsv1.Message)}
}

func (c *chanStream) Context() context.Context  { return c.ctx }
func (c *chanStream) Send(*kdsv1.Message) error { return nil }
func (c *chanStream) Recv() (*kdsv1.Message, error) {
	select {
	case m := <-c.in:
		return m, nil
	case <-c.ctx.Done():
		return nil, c.ctx.Err()
	}
}

// deliver hands m to the session's receive loop; it fails the test if the
// loop does not take it, i.e. if it is not calling Recv.
func (c *chanStream) deliver(t *testing.T, m *kdsv1.Message) {
	t.Helper()
	select {
	case c.in <- m:
	case <-time.After(10 * time.Second):
		t.Fatal("the receive loop did not ask for the next message")
	}
}

func asRequest(r *discovery.DeltaDiscoveryRequest) *kdsv1.Message {
	return &kdsv1.Message{Kind: &kdsv1.Message_Request{Request: r}}
}

func asResponse(r *discovery.DeltaDiscoveryResponse) *kdsv1.Message {
	return &kdsv1.Message{Kind: &kdsv1.Message_Response{Response: r}}
}

// run starts s and returns a function that waits for Run's result.
func run(t *testing.T, s *Session) func() error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	t.Cleanup(func() { s.Close(nil) })
	return func() error {
		select {
		case err := <-done:
			done <- err // later calls see it too
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("the session did not end")
			return nil
		}
	}
}

func waitFor(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	require.Eventually(t, cond, 10*time.Second, time.Millisecond, msg)
}

// The stream a side serves is sized from the peer's announced type count,
// the one it subscribes on from its own: a peer with many more types may
// subscribe to all of them at once.
func TestPeerTypesSizeTheServedStream(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := newChanStream(ctx)
	s := NewSession(st, 3, WithWindow(3), WithPeer(100, -1), WithAbort(cancel))
	p := s.Params()
	assert.Equal(t, 100*3+DefaultHeadroom, p.ServerCapacity)
	assert.Equal(t, 3*3+DefaultHeadroom, p.ClientCapacity)
	assert.Equal(t, "100 peer types × 3 in flight + 16 headroom = 316", p.ServerFormula())
	assert.True(t, p.PeerAnnounced)
	assert.Equal(t, DefaultMaxMessageSize, p.MaxMessageSize, "a size the peer did not announce is this side's")
	wait := run(t, s)

	for i := range p.ServerCapacity {
		st.deliver(t, asRequest(&discovery.DeltaDiscoveryRequest{TypeUrl: fmt.Sprintf("T%d", i/3)}))
	}
	waitFor(t, func() bool { return s.Stats().Server.InboundLen == p.ServerCapacity }, "the first burst fits")
	assert.Nil(t, s.Err())
	st.deliver(t, asRequest(&discovery.DeltaDiscoveryRequest{TypeUrl: "one-too-many"}))
	err := wait()
	require.ErrorIs(t, err, ErrInboundFull)
	assert.Contains(t, err.Error(), `server stream: request for type "one-too-many" did not fit`)
	assert.Contains(t, err.Error(), "capacity is 316 (100 peer types × 3 in flight + 16 headroom = 316)")

	// Without an announcement the peer is taken to be like this side.
	q := NewSession(&idle{ctx: ctx}, 3, WithWindow(3)).Params()
	assert.False(t, q.PeerAnnounced)
	assert.Equal(t, 3, q.PeerTypes)
	assert.Equal(t, q.ClientCapacity, q.ServerCapacity)
}

type idle struct{ ctx context.Context }

func (i *idle) Context() context.Context  { return i.ctx }
func (i *idle) Send(*kdsv1.Message) error { return nil }
func (i *idle) Recv() (*kdsv1.Message, error) {
	<-i.ctx.Done()
	return nil, i.ctx.Err()
}

// Send is capped at the smaller of the two sides' max message sizes, so the
// peer's gRPC never refuses what this side sends.
func TestSendIsCappedAtTheSmallerMaxMessageSize(t *testing.T) {
	a, b, _ := pair(t, 1, WithMaxMessageSize(2000), WithPeer(-1, 500))
	assert.Equal(t, 500, a.Params().MaxMessageSize)
	assert.Equal(t, 2000, a.Params().LocalMaxMessageSize)
	assert.Equal(t, 500, a.Params().PeerMaxMessageSize)
	err := a.Server().Send(&discovery.DeltaDiscoveryResponse{TypeUrl: "big", Nonce: strings.Repeat("x", 700)})
	require.ErrorIs(t, err, ErrMessageTooLarge)
	assert.Contains(t, err.Error(), `response for type "big"`)
	assert.Contains(t, err.Error(), "the limit is 500")
	assert.Nil(t, a.Err(), "the session goes on")
	require.NoError(t, a.Server().Send(resp("small")))
	got, err := b.Client().Recv()
	require.NoError(t, err)
	assert.Equal(t, "small", got.GetNonce())
}

// A peer that queues more bytes on a logical stream than its per-session
// budget ends the session with an error naming the stream, the type, the
// bytes and the limit, although the queue has slots left.
func TestFaultInboundBytesOverSessionBudgetEndSession(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := newChanStream(ctx)
	const maxSize = 4 << 10
	s := NewSession(st, 10, WithMaxMessageSize(maxSize), WithInboundBudget(3*maxSize/ResponseBudgetMultiple), WithAbort(cancel))
	require.Equal(t, 3*maxSize, s.Params().ResponseBudget)
	wait := run(t, s)

	big := &discovery.DeltaDiscoveryResponse{TypeUrl: "type.example/Big", Nonce: strings.Repeat("r", 3<<10)}
	cost := proto.Size(asResponse(big)) + MessageOverhead
	n := 3 * maxSize / cost // what fits
	require.Less(t, n, s.Params().ClientCapacity, "the count bound is not what stops it")
	for range n {
		st.deliver(t, asResponse(big))
	}
	waitFor(t, func() bool { return s.Stats().Client.InboundLen == n }, "what fits is queued")
	assert.Equal(t, int64(n*cost), s.Stats().Client.InboundBytes)
	st.deliver(t, asResponse(big))
	err := wait()
	require.ErrorIs(t, err, ErrInboundFull)
	assert.Contains(t, err.Error(), "client stream")
	assert.Contains(t, err.Error(), `response for type "type.example/Big"`)
	assert.Contains(t, err.Error(), fmt.Sprintf("%d bytes queued in %d responses", n*cost, n))
	assert.Contains(t, err.Error(), fmt.Sprintf("the budget is %d bytes", 3*maxSize))

	// The budget is never below one message of this side's max size.
	q := NewSession(&idle{ctx: ctx}, 1, WithMaxMessageSize(maxSize), WithInboundBudget(10)).Params()
	assert.Equal(t, maxSize+MessageOverhead, q.InboundBudget)
	q = NewSession(&idle{ctx: ctx}, 1, WithMaxMessageSize(maxSize), WithPeer(-1, 1<<10)).Params()
	assert.Equal(t, DefaultInboundBudgetMessages*(1<<10), q.InboundBudget, "the default follows the agreed max message size")
}

// What a side takes its peer's inbound budget to be is never more than the
// peer enforces, whichever side has the larger max message size: a sender
// that stays under PeerInboundBudget never ends its own session.
func TestPeerInboundBudgetIsWhatThePeerEnforces(t *testing.T) {
	ctx := t.Context()
	for _, sizes := range [][2]int{{64 << 10, 64 << 10}, {64 << 10, 4 << 20}, {4 << 20, 64 << 10}, {4 << 20, 64 << 20}} {
		a := NewSession(&idle{ctx: ctx}, 3, WithMaxMessageSize(sizes[0]), WithPeer(5, sizes[1])).Params()
		b := NewSession(&idle{ctx: ctx}, 5, WithMaxMessageSize(sizes[1]), WithPeer(3, sizes[0])).Params()
		assert.Equal(t, DefaultInboundBudgetMessages*min(sizes[0], sizes[1]), a.PeerInboundBudget, "%v", sizes)
		assert.LessOrEqual(t, a.PeerInboundBudget, b.InboundBudget, "%v", sizes)
		assert.LessOrEqual(t, b.PeerInboundBudget, a.InboundBudget, "%v", sizes)
	}
}

// When the shared pool is exhausted, a session's receive loop waits for
// room instead of failing: it stops reading (back-pressure) and goes on
// once another session's queue has been read. The wait ends when the
// session ends, and when the stream does.
func TestFaultSharedPoolExhaustedWaitsForRoom(t *testing.T) {
	msg := func(typ string) *kdsv1.Message {
		return asRequest(&discovery.DeltaDiscoveryRequest{TypeUrl: typ, ResponseNonce: strings.Repeat("n", 1000)})
	}
	cost := int64(proto.Size(msg("A")) + MessageOverhead)
	pool := NewInboundPool(2 * cost)

	actx, acancel := context.WithCancel(context.Background())
	defer acancel()
	ast := newChanStream(actx)
	a := NewSession(ast, 1, WithInboundPool(pool), WithAbort(acancel))
	waitA := run(t, a)
	bctx, bcancel := context.WithCancel(context.Background())
	defer bcancel()
	bst := newChanStream(bctx)
	b := NewSession(bst, 1, WithInboundPool(pool), WithAbort(bcancel))
	waitB := run(t, b)

	// a fills the pool; nobody reads a's queue yet.
	ast.deliver(t, msg("A"))
	ast.deliver(t, msg("A"))
	waitFor(t, func() bool { return pool.Queued() == 2*cost }, "a's queue holds the whole pool")
	assert.Equal(t, 2*cost, pool.Peak(), "the peak is the whole pool")

	// b's next message does not fit: b waits, without ending.
	bst.deliver(t, msg("B"))
	waitFor(t, func() bool { return pool.Waits() == 1 }, "b waits for room")
	assert.Equal(t, int64(1), pool.Waiting(), "b is waiting now")
	assert.Zero(t, b.Stats().Server.InboundLen)
	assert.Nil(t, b.Err())
	select {
	case bst.in <- msg("B"):
		t.Fatal("b's receive loop read on while waiting for room")
	case <-time.After(50 * time.Millisecond):
	}

	// Reading one of a's messages makes room: b's message is queued and b
	// reads on.
	got, err := a.Server().Recv()
	require.NoError(t, err)
	assert.Equal(t, "A", got.GetTypeUrl())
	waitFor(t, func() bool { return b.Stats().Server.InboundLen == 1 }, "b's message queued once there is room")
	assert.Zero(t, pool.Waiting(), "nobody waits once b's message is in")
	assert.GreaterOrEqual(t, pool.LongestWait(), 50*time.Millisecond, "b waited at least while nobody read")
	got, err = b.Server().Recv()
	require.NoError(t, err)
	assert.Equal(t, "B", got.GetTypeUrl())

	// b waits again (a's second message and b's next fill the pool)...
	bst.deliver(t, msg("B"))
	waitFor(t, func() bool { return pool.Queued() == 2*cost }, "pool full again")
	bst.deliver(t, msg("B"))
	waitFor(t, func() bool { return pool.Waits() == 2 }, "b waits again")
	// ... and ending b ends its wait, and gives back what b's queue held.
	b.Close(errors.New("b is done"))
	require.EqualError(t, waitB(), "b is done")
	assert.Equal(t, cost, pool.Queued(), "only a's message is left")

	// A wait also ends when the stream ends, although nobody reads it then.
	cctx, ccancel := context.WithCancel(context.Background())
	defer ccancel()
	cst := newChanStream(cctx)
	c := NewSession(cst, 1, WithInboundPool(pool))
	waitC := run(t, c)
	cst.deliver(t, msg("C"))
	cst.deliver(t, msg("C"))
	waitFor(t, func() bool { return pool.Waits() == 3 }, "c waits")
	ccancel()
	err = waitC()
	require.ErrorIs(t, err, ErrSessionClosed)
	assert.Contains(t, err.Error(), "stream ended")

	a.Close(nil)
	require.ErrorIs(t, waitA(), ErrSessionClosed)
	assert.Zero(t, pool.Queued(), "every session gave its bytes back")
	assert.Equal(t, pool.Limit(), pool.Peak(), "the peak stays the most held at once, never over the limit")
}

// Overflow errors name the type of the message that did not fit, the count
// and the bytes.
func TestOverflowErrorsNameTypeCountAndBytes(t *testing.T) {
	t.Run("send buffer", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		stuck := &pipeEnd{ctx: ctx, in: make(chan *kdsv1.Message), out: make(chan *kdsv1.Message)}
		s := NewSession(stuck, 1, WithHeadroom(1), WithAbort(cancel))
		wait := run(t, s)
		r := &discovery.DeltaDiscoveryRequest{TypeUrl: "type.example/Sub"}
		size := proto.Size(asRequest(r))
		var err error
		for i := 0; i < 10 && err == nil; i++ {
			err = s.Client().Send(r)
		}
		require.ErrorIs(t, err, ErrBufferFull)
		// One message is inside the blocked Send, two wait in the buffer.
		assert.Contains(t, err.Error(), `client stream: request for type "type.example/Sub" did not fit`)
		assert.Contains(t, err.Error(), fmt.Sprintf("2 messages (%d bytes) queued, capacity is 2 (1 types × 1 in flight + 1 headroom = 2)", 2*size))
		require.ErrorIs(t, wait(), ErrBufferFull)
	})
	t.Run("inbound queue", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		f := &floodStream{ctx: ctx, n: 1000}
		s := NewSession(f, 3, WithHeadroom(2), WithAbort(cancel))
		err := run(t, s)()
		require.ErrorIs(t, err, ErrInboundFull)
		cost := proto.Size(asRequest(req("flood"))) + MessageOverhead
		assert.Contains(t, err.Error(), fmt.Sprintf(`server stream: request for type "T" did not fit: the peer has 6 requests in flight (%d bytes), capacity is 5`, 6*cost))
	})
}

// The pool is busy while a receive loop waits for room, even when the
// queues hold less than half of it (the waiting message is counted at more
// than half), and while the queues hold more than half.
func TestInboundPoolBusy(t *testing.T) {
	pool := NewInboundPool(100)
	assert.False(t, pool.Busy(), "empty")
	n, err := pool.acquire(t.Context(), 40)
	require.NoError(t, err)
	assert.False(t, pool.Busy(), "40 of 100 queued, nobody waits")

	// A message counted at 70 waits behind the 40 queued.
	waited := make(chan error, 1)
	go func() {
		m, err := pool.acquire(t.Context(), 70)
		if err == nil {
			pool.release(m)
		}
		waited <- err
	}()
	waitFor(t, func() bool { return pool.Waiting() == 1 }, "the second message waits")
	assert.True(t, pool.Busy(), "a receive loop waits for room with 40 of 100 queued")
	pool.release(n)
	require.NoError(t, <-waited)
	assert.False(t, pool.Busy(), "nothing queued, nobody waits")

	n, err = pool.acquire(t.Context(), 51)
	require.NoError(t, err)
	assert.True(t, pool.Busy(), "more than half queued")
	pool.release(n)
}
