package mux

import (
	"context"
	"fmt"
	"sync/atomic"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

type outItem struct {
	msg  *kdsv1.Message
	size int
}

// outQueue is one logical stream's send buffer.
type outQueue struct {
	name      string
	ch        chan outItem
	highWater atomic.Int64
	messages  atomic.Uint64
	bytes     atomic.Uint64
}

func (q *outQueue) init(name string, capacity int) {
	q.name = name
	q.ch = make(chan outItem, capacity)
}

// inQueue is one logical stream's inbound queue. T is the delta-xDS message
// type it carries.
type inQueue[T any] struct {
	name      string
	ch        chan T
	highWater atomic.Int64
	messages  atomic.Uint64
	bytes     atomic.Uint64
}

func (q *inQueue[T]) init(name string, capacity int) {
	q.name = name
	q.ch = make(chan T, capacity)
}

// put enqueues without blocking; a full queue is the peer's protocol
// violation.
func (q *inQueue[T]) put(m T, size int) error {
	// Counted before the message becomes visible, so a reader that has
	// received it also sees it counted.
	q.messages.Add(1)
	q.bytes.Add(uint64(size))
	select {
	case q.ch <- m:
	default:
		q.messages.Add(^uint64(0))
		q.bytes.Add(^uint64(size - 1))
		return fmt.Errorf("%w: %s stream: the peer has %d messages in flight, capacity is %d (types × window + headroom)",
			ErrInboundFull, q.name, cap(q.ch)+1, cap(q.ch))
	}
	raise(&q.highWater, len(q.ch))
	return nil
}

// get blocks for the next message, the session's end or ctx's end (nil:
// never).
func (q *inQueue[T]) get(ctx context.Context, s *Session) (T, error) {
	var zero T
	if s.ctx.Err() != nil {
		return zero, context.Cause(s.ctx)
	}
	var done <-chan struct{}
	if ctx != nil {
		done = ctx.Done()
	}
	select {
	case m := <-q.ch:
		return m, nil
	case <-s.ctx.Done():
		return zero, context.Cause(s.ctx)
	case <-done:
		return zero, context.Cause(ctx)
	}
}

func raise(hw *atomic.Int64, n int) {
	for {
		cur := hw.Load()
		if int64(n) <= cur || hw.CompareAndSwap(cur, int64(n)) {
			return
		}
	}
}

// enqueue hands m to q without blocking. A message over the max size is
// refused (the session goes on); a full buffer ends the session.
func (s *Session) enqueue(q *outQueue, m *kdsv1.Message) error {
	if s.ctx.Err() != nil {
		return context.Cause(s.ctx)
	}
	size := proto.Size(m)
	if size > s.maxSize {
		return fmt.Errorf("%w: %s stream: %d bytes, the limit is %d", ErrMessageTooLarge, q.name, size, s.maxSize)
	}
	select {
	case q.ch <- outItem{msg: m, size: size}:
	default:
		err := fmt.Errorf("%w: %s stream: %d messages queued, capacity is %d (types × window + headroom)",
			ErrBufferFull, q.name, cap(q.ch), cap(q.ch))
		s.Close(err)
		return err
	}
	// The message held a slot even if the sender has taken it already.
	raise(&q.highWater, max(len(q.ch), 1))
	return nil
}

// ServerStream is the logical stream a side serves: it receives the peer's
// DeltaDiscoveryRequests and sends DeltaDiscoveryResponses. It implements
// go-control-plane's stream.DeltaStream so a delta xDS server can run on it.
// Safe for concurrent use. Header and trailer calls are accepted and ignored:
// a logical stream has no metadata of its own.
type ServerStream struct {
	s   *Session
	out outQueue
	in  inQueue[*discovery.DeltaDiscoveryRequest]
}

var _ stream.DeltaStream = (*ServerStream)(nil)

// Send enqueues r for the sender goroutine and returns without waiting for
// the network. It fails with the session's error once the session ended,
// with ErrMessageTooLarge for a message over the max size, and with
// ErrBufferFull (ending the session) when the send buffer is full. r must not
// be modified after Send.
func (ss *ServerStream) Send(r *discovery.DeltaDiscoveryResponse) error {
	return ss.s.enqueue(&ss.out, &kdsv1.Message{Kind: &kdsv1.Message_Response{Response: r}})
}

// Recv blocks for the peer's next request and returns the session's error
// once the session ended.
func (ss *ServerStream) Recv() (*discovery.DeltaDiscoveryRequest, error) {
	return ss.in.get(nil, ss.s)
}

// RecvContext is Recv that also returns, with ctx's cause, when ctx ends;
// the session goes on.
func (ss *ServerStream) RecvContext(ctx context.Context) (*discovery.DeltaDiscoveryRequest, error) {
	return ss.in.get(ctx, ss.s)
}

// Context is the session's context.
func (ss *ServerStream) Context() context.Context { return ss.s.ctx }

// SetHeader is a no-op.
func (ss *ServerStream) SetHeader(metadata.MD) error { return nil }

// SendHeader is a no-op.
func (ss *ServerStream) SendHeader(metadata.MD) error { return nil }

// SetTrailer is a no-op.
func (ss *ServerStream) SetTrailer(metadata.MD) {}

// SendMsg is Send for a *discovery.DeltaDiscoveryResponse.
func (ss *ServerStream) SendMsg(m any) error {
	r, ok := m.(*discovery.DeltaDiscoveryResponse)
	if !ok {
		return fmt.Errorf("mux: server stream sends *DeltaDiscoveryResponse, got %T", m)
	}
	return ss.Send(r)
}

// RecvMsg is Recv into a *discovery.DeltaDiscoveryRequest.
func (ss *ServerStream) RecvMsg(m any) error {
	dst, ok := m.(*discovery.DeltaDiscoveryRequest)
	if !ok {
		return fmt.Errorf("mux: server stream receives *DeltaDiscoveryRequest, got %T", m)
	}
	r, err := ss.Recv()
	if err != nil {
		return err
	}
	proto.Reset(dst)
	proto.Merge(dst, r)
	return nil
}

var _ grpc.ServerStream = (*ServerStream)(nil)

// ClientStream is the logical stream a side subscribes on: it sends
// DeltaDiscoveryRequests and receives the peer's DeltaDiscoveryResponses.
// Safe for concurrent use.
type ClientStream struct {
	s   *Session
	out outQueue
	in  inQueue[*discovery.DeltaDiscoveryResponse]
}

// Send enqueues r for the sender goroutine and returns without waiting for
// the network; errors as for ServerStream.Send. r must not be modified after
// Send.
func (cs *ClientStream) Send(r *discovery.DeltaDiscoveryRequest) error {
	return cs.s.enqueue(&cs.out, &kdsv1.Message{Kind: &kdsv1.Message_Request{Request: r}})
}

// Recv blocks for the peer's next response and returns the session's error
// once the session ended.
func (cs *ClientStream) Recv() (*discovery.DeltaDiscoveryResponse, error) {
	return cs.in.get(nil, cs.s)
}

// RecvContext is Recv that also returns, with ctx's cause, when ctx ends;
// the session goes on.
func (cs *ClientStream) RecvContext(ctx context.Context) (*discovery.DeltaDiscoveryResponse, error) {
	return cs.in.get(ctx, cs.s)
}

// Context is the session's context.
func (cs *ClientStream) Context() context.Context { return cs.s.ctx }
