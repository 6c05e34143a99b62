package mux

import (
	"context"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// gatedStream hands every message the session sends to the test (entered)
// and returns from Send only when the test releases it, so the test decides
// what is queued while a Send is under way. Recv blocks until the end.
type gatedStream struct {
	ctx     context.Context
	entered chan *kdsv1.Message
	release chan struct{}
}

func (g *gatedStream) Context() context.Context { return g.ctx }
func (g *gatedStream) Send(m *kdsv1.Message) error {
	select {
	case g.entered <- m:
	case <-g.ctx.Done():
		return g.ctx.Err()
	}
	select {
	case <-g.release:
		return nil
	case <-g.ctx.Done():
		return g.ctx.Err()
	}
}
func (g *gatedStream) Recv() (*kdsv1.Message, error) {
	<-g.ctx.Done()
	return nil, g.ctx.Err()
}

func gated(t *testing.T, opts ...Option) (*Session, *gatedStream) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	g := &gatedStream{ctx: ctx, entered: make(chan *kdsv1.Message), release: make(chan struct{})}
	s := NewSession(g, 4, append(opts, WithAbort(cancel))...)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(context.Background()) }()
	t.Cleanup(func() { s.Close(nil); cancel(); <-done })
	return s, g
}

// nonces lists what a sent stream message carries, in order: the nonce of
// each response and the response nonce of each request.
func nonces(m *kdsv1.Message) []string {
	ms := []*kdsv1.Message{m}
	if b := m.GetBatch(); b != nil {
		ms = b.GetMessages()
	}
	var out []string
	for _, x := range ms {
		switch {
		case x.GetResponse() != nil:
			out = append(out, x.GetResponse().GetNonce())
		case x.GetRequest() != nil:
			out = append(out, x.GetRequest().GetResponseNonce())
		}
	}
	return out
}

// With coalescing on, what queued while a Send was under way goes in the
// next Send as one batch, both logical streams' messages in it and each
// stream's in its order; without it, one message per Send.
func TestSenderCoalescesWhatIsReady(t *testing.T) {
	for _, on := range []bool{true, false} {
		s, g := gated(t, WithCoalesce(on))
		require.NoError(t, s.Server().Send(resp("r1")))
		first := <-g.entered
		assert.Nil(t, first.GetBatch(), "a message alone is sent as it is")
		require.NoError(t, s.Server().Send(resp("r2")))
		require.NoError(t, s.Server().Send(resp("r3")))
		require.NoError(t, s.Client().Send(req("q1")))
		g.release <- struct{}{}
		next := <-g.entered
		if !on {
			assert.Nil(t, next.GetBatch(), "a peer that did not announce batches gets none")
			assert.Len(t, nonces(next), 1)
			for range 2 { // the other two, one per Send
				g.release <- struct{}{}
				next = <-g.entered
				assert.Nil(t, next.GetBatch())
				assert.Len(t, nonces(next), 1)
			}
			g.release <- struct{}{}
			continue
		}
		require.NotNil(t, next.GetBatch(), "three messages were ready")
		got := nonces(next)
		assert.ElementsMatch(t, []string{"r2", "r3", "q1"}, got)
		assert.Less(t, strings.Index(strings.Join(got, ","), "r2"), strings.Index(strings.Join(got, ","), "r3"), "a stream's messages keep their order")
		g.release <- struct{}{}
		// Counted once Send returned: wait for it, then each message counts.
		require.Eventually(t, func() bool { st := s.Stats(); return st.Server.MessagesSent+st.Client.MessagesSent == 4 }, 10*time.Second, time.Millisecond)
		st := s.Stats()
		assert.Equal(t, uint64(3), st.Server.MessagesSent, "messages are counted one by one")
		assert.Equal(t, uint64(1), st.Client.MessagesSent)
	}
}

// A batch never exceeds the session's max message size: what does not fit
// goes in the next Send.
func TestBatchStaysWithinMaxMessageSize(t *testing.T) {
	const max = 64 << 10
	s, g := gated(t, WithCoalesce(true), WithMaxMessageSize(max))
	big := func(n string) *discovery.DeltaDiscoveryResponse {
		r := resp(n)
		r.SystemVersionInfo = strings.Repeat("x", 25<<10)
		return r
	}
	require.NoError(t, s.Server().Send(big("b0")))
	<-g.entered
	for _, n := range []string{"b1", "b2", "b3", "b4"} {
		require.NoError(t, s.Server().Send(big(n)))
	}
	g.release <- struct{}{}
	var seen []string
	for len(seen) < 4 {
		m := <-g.entered
		assert.LessOrEqual(t, proto.Size(m), max)
		got := nonces(m)
		assert.LessOrEqual(t, len(got), 2, "two 25 KiB responses fit in 64 KiB, three do not")
		seen = append(seen, got...)
		g.release <- struct{}{}
	}
	assert.Equal(t, []string{"b1", "b2", "b3", "b4"}, seen)
}

// A received batch is routed message by message, in order, as if each had
// come alone; a batch inside a batch ends the session like a message of
// unknown kind.
func TestReceivedBatchIsRouted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := make(chan *kdsv1.Message, 2)
	batch := &kdsv1.Message{Kind: &kdsv1.Message_Batch{Batch: &kdsv1.Batch{Messages: []*kdsv1.Message{
		{Kind: &kdsv1.Message_Response{Response: resp("r1")}},
		{Kind: &kdsv1.Message_Request{Request: req("q1")}},
		{Kind: &kdsv1.Message_Response{Response: resp("r2")}},
	}}}}
	in <- batch
	s := NewSession(&pipeEnd{ctx: ctx, in: in, out: make(chan *kdsv1.Message)}, 4, WithAbort(cancel))
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	r, err := s.Client().Recv()
	require.NoError(t, err)
	assert.Equal(t, "r1", r.GetNonce())
	r, err = s.Client().Recv()
	require.NoError(t, err)
	assert.Equal(t, "r2", r.GetNonce())
	q, err := s.Server().Recv()
	require.NoError(t, err)
	assert.Equal(t, "q1", q.GetResponseNonce())
	assert.Equal(t, uint64(2), s.Stats().Client.MessagesReceived)

	in <- &kdsv1.Message{Kind: &kdsv1.Message_Batch{Batch: &kdsv1.Batch{Messages: []*kdsv1.Message{batch}}}}
	assert.ErrorIs(t, <-done, ErrUnknownMessage)
}
