package mux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pipeEnd is one end of an in-memory Stream pair. Send blocks until the other
// end's Recv takes the message (like a stream whose window is exhausted).
type pipeEnd struct {
	ctx context.Context
	in  <-chan *kdsv1.Message
	out chan<- *kdsv1.Message
}

func (p *pipeEnd) Context() context.Context { return p.ctx }

func (p *pipeEnd) Send(m *kdsv1.Message) error {
	select {
	case p.out <- m:
		return nil
	case <-p.ctx.Done():
		return p.ctx.Err()
	}
}

func (p *pipeEnd) Recv() (*kdsv1.Message, error) {
	select {
	case m, ok := <-p.in:
		if !ok {
			return nil, io.EOF
		}
		return m, nil
	case <-p.ctx.Done():
		return nil, p.ctx.Err()
	}
}

// pair starts two sessions connected by an in-memory pipe and returns them
// with a wait function that returns both Run results.
func pair(t *testing.T, types int, opts ...Option) (a, b *Session, wait func() (error, error)) {
	t.Helper()
	ab, ba := make(chan *kdsv1.Message), make(chan *kdsv1.Message)
	// One context for both ends: aborting either end tears the "connection"
	// down, as cancelling a gRPC stream does for its peer.
	ctx, cancel := context.WithCancel(context.Background())
	a = NewSession(&pipeEnd{ctx: ctx, in: ba, out: ab}, types, append(opts, WithAbort(cancel))...)
	b = NewSession(&pipeEnd{ctx: ctx, in: ab, out: ba}, types, append(opts, WithAbort(cancel))...)
	aerr, berr := make(chan error, 1), make(chan error, 1)
	go func() { aerr <- a.Run(context.Background()) }()
	go func() { berr <- b.Run(context.Background()) }()
	done := false
	wait = func() (error, error) {
		done = true
		return <-aerr, <-berr
	}
	t.Cleanup(func() {
		a.Close(nil)
		b.Close(nil)
		if !done {
			wait()
		}
		cancel()
	})
	return a, b, wait
}

func req(nonce string) *discovery.DeltaDiscoveryRequest {
	return &discovery.DeltaDiscoveryRequest{TypeUrl: "T", ResponseNonce: nonce}
}

func resp(nonce string) *discovery.DeltaDiscoveryResponse {
	return &discovery.DeltaDiscoveryResponse{TypeUrl: "T", Nonce: nonce}
}

func TestRoutingBothDirections(t *testing.T) {
	a, b, _ := pair(t, 2)

	// a subscribes to what b serves.
	require.NoError(t, a.Client().Send(req("a1")))
	got, err := b.Server().Recv()
	require.NoError(t, err)
	assert.Equal(t, "a1", got.GetResponseNonce())
	require.NoError(t, b.Server().Send(resp("b1")))
	gotResp, err := a.Client().Recv()
	require.NoError(t, err)
	assert.Equal(t, "b1", gotResp.GetNonce())

	// b subscribes to what a serves.
	require.NoError(t, b.Client().Send(req("b2")))
	got, err = a.Server().Recv()
	require.NoError(t, err)
	assert.Equal(t, "b2", got.GetResponseNonce())
	require.NoError(t, a.Server().Send(resp("a2")))
	gotResp, err = b.Client().Recv()
	require.NoError(t, err)
	assert.Equal(t, "a2", gotResp.GetNonce())

	// RecvMsg/SendMsg, as go-control-plane's server uses them.
	require.NoError(t, a.Client().Send(req("a3")))
	var into discovery.DeltaDiscoveryRequest
	require.NoError(t, b.Server().RecvMsg(&into))
	assert.Equal(t, "a3", into.GetResponseNonce())
	require.NoError(t, b.Server().SendMsg(resp("b3")))
	gotResp, err = a.Client().Recv()
	require.NoError(t, err)
	assert.Equal(t, "b3", gotResp.GetNonce())
	assert.Error(t, b.Server().SendMsg(req("wrong kind")))
}

func TestStatsCountMessagesAndBytes(t *testing.T) {
	a, b, _ := pair(t, 4)
	const n = 3
	r := req("x")
	for range n {
		require.NoError(t, a.Client().Send(r))
	}
	for range n {
		_, err := b.Server().Recv()
		require.NoError(t, err)
	}
	require.NoError(t, b.Server().Send(resp("y")))
	_, err := a.Client().Recv()
	require.NoError(t, err)

	// Sent counters move once Send has returned, just after the peer got
	// the message.
	require.Eventually(t, func() bool {
		return a.Stats().Client.MessagesSent == n && b.Stats().Server.MessagesSent == 1
	}, 10*time.Second, time.Millisecond)
	sa, sb := a.Stats(), b.Stats()
	size := uint64(proto.Size(&kdsv1.Message{Kind: &kdsv1.Message_Request{Request: r}}))
	assert.Equal(t, uint64(n), sa.Client.MessagesSent)
	assert.Equal(t, n*size, sa.Client.BytesSent)
	assert.GreaterOrEqual(t, sa.Client.SendBufferHighWater, 1)
	assert.LessOrEqual(t, sa.Client.SendBufferHighWater, n)
	assert.Equal(t, uint64(n), sb.Server.MessagesReceived)
	assert.Equal(t, n*size, sb.Server.BytesReceived, "the receiver counts the whole message, as the sender does")
	assert.Equal(t, uint64(1), sb.Server.MessagesSent)
	assert.Equal(t, uint64(1), sa.Client.MessagesReceived)
	assert.Zero(t, sa.Server.MessagesSent)
	assert.Zero(t, sa.Client.SendBufferLen)
	assert.Positive(t, sa.SendTime)
	assert.Zero(t, sa.SendTimeouts)
	assert.Equal(t, 4+DefaultHeadroom, sa.Capacity)
	assert.Equal(t, 4+DefaultHeadroom, a.Capacity())
}

// A caller that hands more messages than the buffer holds ends the session:
// the sender is stuck (its Send never completes) so nothing drains.
func TestFullSendBufferEndsSession(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The peer never reads: the first Send blocks in the pipe.
	stuck := &pipeEnd{ctx: ctx, in: make(chan *kdsv1.Message), out: make(chan *kdsv1.Message)}
	s := NewSession(stuck, 2, WithHeadroom(1), WithAbort(cancel))
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(context.Background()) }()

	var err error
	for i := 0; i < 10 && err == nil; i++ {
		err = s.Server().Send(resp("r"))
	}
	require.ErrorIs(t, err, ErrBufferFull)
	assert.Contains(t, err.Error(), "server stream")
	assert.Contains(t, err.Error(), "capacity is 3")
	select {
	case err := <-runErr:
		require.ErrorIs(t, err, ErrBufferFull)
	case <-time.After(10 * time.Second):
		t.Fatal("session did not end on a full buffer")
	}
	_, err = s.Server().Recv()
	assert.ErrorIs(t, err, ErrBufferFull, "Recv returns the cause after the end")
	assert.ErrorIs(t, s.Client().Send(req("late")), ErrBufferFull)
}

// floodStream delivers n requests as fast as Recv is called, then blocks.
type floodStream struct {
	ctx  context.Context
	n    int
	sent int
}

func (f *floodStream) Context() context.Context  { return f.ctx }
func (f *floodStream) Send(*kdsv1.Message) error { return nil }
func (f *floodStream) Recv() (*kdsv1.Message, error) {
	if f.sent < f.n {
		f.sent++
		return &kdsv1.Message{Kind: &kdsv1.Message_Request{Request: req("flood")}}, nil
	}
	<-f.ctx.Done()
	return nil, f.ctx.Err()
}

func TestPeerFloodEndsSessionWithInboundFull(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &floodStream{ctx: ctx, n: 1000}
	s := NewSession(f, 3, WithHeadroom(2), WithAbort(cancel))
	// Nobody reads Server(): the receive loop must not block but end the
	// session once the peer exceeds the inbound capacity.
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrInboundFull)
		assert.Contains(t, err.Error(), "server stream")
		assert.Contains(t, err.Error(), "capacity is 5")
		assert.Equal(t, 6, f.sent, "the session read exactly one message past capacity")
	case <-time.After(10 * time.Second):
		t.Fatal("receive loop blocked on a full inbound queue")
	}
}

// blockingSend never returns from Send until its context ends.
type blockingSend struct{ ctx context.Context }

func (b *blockingSend) Context() context.Context { return b.ctx }
func (b *blockingSend) Send(*kdsv1.Message) error {
	<-b.ctx.Done()
	return b.ctx.Err()
}
func (b *blockingSend) Recv() (*kdsv1.Message, error) {
	<-b.ctx.Done()
	return nil, b.ctx.Err()
}

func TestSendTimeoutEndsSession(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const timeout = 300 * time.Millisecond
	s := NewSession(&blockingSend{ctx: ctx}, 1, WithSendTimeout(timeout), WithAbort(cancel))
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- s.Run(context.Background()) }()
	require.NoError(t, s.Client().Send(req("x")))
	select {
	case err := <-done:
		elapsed := time.Since(start)
		require.ErrorIs(t, err, ErrSendTimeout)
		assert.Contains(t, err.Error(), "300ms")
		assert.GreaterOrEqual(t, elapsed, timeout)
		assert.Less(t, elapsed, timeout+5*time.Second)
		assert.Equal(t, uint64(1), s.Stats().SendTimeouts)
	case <-time.After(20 * time.Second):
		t.Fatal("send timeout did not end the session")
	}
}

func TestPeerCloseIsAnError(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := make(chan *kdsv1.Message)
	close(in)
	s := NewSession(&pipeEnd{ctx: ctx, in: in, out: make(chan *kdsv1.Message)}, 1, WithAbort(cancel))
	err := s.Run(context.Background())
	require.ErrorIs(t, err, ErrSessionClosed)
	assert.Contains(t, err.Error(), "peer closed")
	_, err = s.Client().Recv()
	assert.ErrorIs(t, err, ErrSessionClosed)
}

func TestRunContextAndClose(t *testing.T) {
	t.Run("close", func(t *testing.T) {
		a, _, wait := pair(t, 1)
		a.Close(errors.New("boom"))
		aerr, berr := wait()
		assert.EqualError(t, aerr, "boom")
		// b sees its peer go away.
		assert.Error(t, berr)
	})
	t.Run("run ctx", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		sctx, scancel := context.WithCancel(context.Background())
		s := NewSession(&blockingSend{ctx: sctx}, 1, WithAbort(scancel))
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		cancel()
		err := <-done
		require.ErrorIs(t, err, ErrSessionClosed)
		require.ErrorIs(t, err, context.Canceled)
		assert.ErrorIs(t, s.Run(ctx), errRunTwice)
	})
}

func TestMessageTooLargeIsRefusedSessionGoesOn(t *testing.T) {
	a, b, _ := pair(t, 1, WithMaxMessageSize(200))
	err := a.Client().Send(req(strings.Repeat("x", 300)))
	require.ErrorIs(t, err, ErrMessageTooLarge)
	assert.Contains(t, err.Error(), "limit is 200")
	assert.Nil(t, a.Err())
	require.NoError(t, a.Client().Send(req("small")))
	got, err := b.Server().Recv()
	require.NoError(t, err)
	assert.Equal(t, "small", got.GetResponseNonce())
}

func TestUnknownMessageEndsSession(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := make(chan *kdsv1.Message, 1)
	in <- &kdsv1.Message{}
	s := NewSession(&pipeEnd{ctx: ctx, in: in, out: make(chan *kdsv1.Message)}, 1, WithAbort(cancel))
	assert.ErrorIs(t, s.Run(context.Background()), ErrUnknownMessage)
}

// slowStream takes a while to give up its Recv after its context ends, as
// a transport tearing a connection down may.
type slowStream struct {
	ctx      context.Context
	returned atomic.Bool
}

func (s *slowStream) Context() context.Context  { return s.ctx }
func (s *slowStream) Send(*kdsv1.Message) error { return nil }
func (s *slowStream) Recv() (*kdsv1.Message, error) {
	<-s.ctx.Done()
	time.Sleep(time.Second)
	s.returned.Store(true)
	return nil, s.ctx.Err()
}

// Run returns only after its sender and receiver have returned: nothing the
// session started is left once Run returns, even after an error.
func TestRunJoinsItsGoroutines(t *testing.T) {
	before := goleak.IgnoreCurrent()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := &slowStream{ctx: ctx}
	s := NewSession(st, 1, WithAbort(cancel))
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	s.Close(errors.New("boom"))
	require.EqualError(t, <-done, "boom")
	assert.True(t, st.returned.Load(), "Run returned before the receiver did")
	goleak.VerifyNone(t, before)
}

func TestWindowSizesBuffers(t *testing.T) {
	a, b, _ := pair(t, 2, WithWindow(3), WithHeadroom(1))
	assert.Equal(t, 7, a.Capacity(), "2 types × 3 in flight + 1 headroom")
	// A peer may have all 7 responses in flight before a is read at all.
	for i := range 7 {
		require.NoError(t, b.Server().Send(resp(fmt.Sprint(i))))
	}
	for i := range 7 {
		got, err := a.Client().Recv()
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprint(i), got.GetNonce())
	}
}

func TestRecvContextReturnsWhenContextEnds(t *testing.T) {
	a, b, _ := pair(t, 1)
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() { _, err := a.Client().RecvContext(ctx); done <- err }()
	cause := errors.New("stage failed")
	cancel(cause)
	select {
	case err := <-done:
		assert.ErrorIs(t, err, cause)
	case <-time.After(10 * time.Second):
		t.Fatal("RecvContext still blocked after its context ended")
	}
	// The session goes on.
	require.NoError(t, b.Server().Send(resp("later")))
	got, err := a.Client().RecvContext(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "later", got.GetNonce())
}
