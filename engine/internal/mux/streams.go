package mux

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/kds-engine/kds-engine/engine/internal/kdswire"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// fifo is a bounded first-in-first-out queue, safe for concurrent use. It
// allocates as it fills, so a large bound costs nothing until messages are
// queued. A token on ready means items may be waiting; every push leaves
// one, and so does a pop that leaves items behind, so any number of
// consumers can wait on it.
type fifo[T any] struct {
	mu    sync.Mutex
	items []T
	head  int
	limit int
	ready chan struct{}
}

func (f *fifo[T]) init(limit int) {
	f.limit = limit
	f.ready = make(chan struct{}, 1)
}

// push appends v unless the queue already holds limit items. It returns
// the number of items queued afterwards and whether v was added.
func (f *fifo[T]) push(v T) (int, bool) {
	f.mu.Lock()
	n := len(f.items) - f.head
	if n >= f.limit {
		f.mu.Unlock()
		return n, false
	}
	f.items = append(f.items, v)
	f.mu.Unlock()
	f.signal()
	return n + 1, true
}

// pop removes the oldest item, if any.
func (f *fifo[T]) pop() (T, bool) {
	var zero T
	f.mu.Lock()
	if f.head == len(f.items) {
		f.mu.Unlock()
		return zero, false
	}
	v := f.items[f.head]
	f.items[f.head] = zero
	f.head++
	left := len(f.items) - f.head
	switch {
	case left == 0:
		// Empty: start over, and let a burst's backing array go.
		if cap(f.items) > 64 {
			f.items = nil
		} else {
			f.items = f.items[:0]
		}
		f.head = 0
	case f.head >= 64 && f.head >= left:
		// Mostly consumed: move the rest to the front.
		n := copy(f.items, f.items[f.head:])
		clear(f.items[n:])
		f.items = f.items[:n]
		f.head = 0
	}
	f.mu.Unlock()
	if left > 0 {
		f.signal()
	}
	return v, true
}

// popIf removes the oldest item if there is one and ok accepts it.
func (f *fifo[T]) popIf(ok func(T) bool) (T, bool) {
	var zero T
	f.mu.Lock()
	if f.head == len(f.items) || !ok(f.items[f.head]) {
		f.mu.Unlock()
		return zero, false
	}
	f.mu.Unlock()
	// Only the one consumer pops (the send loop), so the head is still
	// the item ok accepted.
	return f.pop()
}

func (f *fifo[T]) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.items) - f.head
}

func (f *fifo[T]) signal() {
	select {
	case f.ready <- struct{}{}:
	default:
	}
}

type outItem struct {
	msg  *kdsv1.Message
	size int
}

// outQueue is one logical stream's send buffer.
type outQueue struct {
	name     string
	formula  string
	capacity int
	q        fifo[outItem]
	// queued is the encoded size of the messages in q.
	queued    atomic.Int64
	highWater atomic.Int64
	messages  atomic.Uint64
	bytes     atomic.Uint64
}

func (q *outQueue) init(name string, capacity int, formula string) {
	q.name, q.capacity, q.formula = name, capacity, formula
	q.q.init(capacity)
}

// inItem is a received message with what it holds of the budgets: cost
// against its session's stream budget, pooled against the shared pool.
type inItem[T any] struct {
	msg    T
	cost   int64
	pooled int64
}

// inQueue is one logical stream's inbound queue, bounded in messages and in
// bytes. T is the delta-xDS message type it carries.
type inQueue[T any] struct {
	name     string // logical stream
	kind     string // "request" or "response"
	formula  string
	capacity int
	budget   int64
	q        fifo[inItem[T]]
	// queued is the cost of the messages in q.
	queued         atomic.Int64
	highWater      atomic.Int64
	bytesHighWater atomic.Int64
	messages       atomic.Uint64
	bytes          atomic.Uint64
}

func (q *inQueue[T]) init(name, kind string, capacity int, formula string, budget int64) {
	q.name, q.kind, q.capacity, q.formula, q.budget = name, kind, capacity, formula, budget
	q.q.init(capacity)
}

// put enqueues m, received in a session message of encoded size size (the
// whole kdsv1.Message, as the sender counts it) that holds held bytes
// decoded (kdswire.Measure), for typeURL. m costs held plus
// MessageOverhead against the budgets. It is
// called by the receive loop only. A message that does not fit the count
// or the session's byte budget is the peer's protocol violation and an
// error wrapping ErrInboundFull; with a shared pool it waits for room there
// until ctx ends (back-pressure: the receive loop stops reading, and HTTP/2
// flow control stops the peer). It never waits for the send path.
func (q *inQueue[T]) put(ctx context.Context, pool *InboundPool, m T, typeURL string, size, held int) error {
	cost := int64(held) + MessageOverhead
	if n := q.q.len(); n >= q.capacity {
		return fmt.Errorf("%w: %s stream: %s for type %q did not fit: the peer has %d %ss in flight (%d bytes), capacity is %d (%s)",
			ErrInboundFull, q.name, q.kind, typeURL, n+1, q.kind, q.queued.Load()+cost, q.capacity, q.formula)
	}
	if queued := q.queued.Load(); queued+cost > q.budget {
		return fmt.Errorf("%w: %s stream: %s for type %q (%d bytes, %d counted with what it holds decoded) did not fit: %d bytes queued in %d %ss, the budget is %d bytes per logical stream",
			ErrInboundFull, q.name, q.kind, typeURL, size, cost, queued, q.q.len(), q.kind, q.budget)
	}
	it := inItem[T]{msg: m, cost: cost}
	if pool != nil {
		n, err := pool.acquire(ctx, cost)
		if err != nil {
			return err
		}
		it.pooled = n
	}
	// Counted before the message becomes visible, so a reader that has
	// received it also sees it counted.
	q.messages.Add(1)
	q.bytes.Add(uint64(size))
	raise(&q.bytesHighWater, int(q.queued.Add(cost)))
	n, ok := q.q.push(it)
	if !ok {
		// Unreachable: only the receive loop adds, and it checked the count.
		q.release(pool, it)
		return fmt.Errorf("%w: %s stream: %d %ss queued", ErrInboundFull, q.name, n, q.kind)
	}
	raise(&q.highWater, n)
	return nil
}

func (q *inQueue[T]) release(pool *InboundPool, it inItem[T]) {
	q.queued.Add(-it.cost)
	if it.pooled > 0 {
		pool.release(it.pooled)
	}
}

// get blocks for the next message, the session's end or ctx's end (nil:
// never).
func (q *inQueue[T]) get(ctx context.Context, s *Session) (T, error) {
	var zero T
	var done <-chan struct{}
	if ctx != nil {
		done = ctx.Done()
	}
	for {
		if s.ctx.Err() != nil {
			return zero, context.Cause(s.ctx)
		}
		if it, ok := q.q.pop(); ok {
			q.release(s.pool, it)
			return it.msg, nil
		}
		select {
		case <-q.q.ready:
		case <-s.ctx.Done():
			return zero, context.Cause(s.ctx)
		case <-done:
			return zero, context.Cause(ctx)
		}
	}
}

// drain empties q after the session ended, giving what its messages held
// back to the pool.
func (q *inQueue[T]) drain(pool *InboundPool) {
	for {
		it, ok := q.q.pop()
		if !ok {
			return
		}
		q.release(pool, it)
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

// enqueue hands m, a kind for typeURL, to q without blocking. A message
// over the max size is refused (the session goes on); a full buffer ends
// the session.
func (s *Session) enqueue(q *outQueue, m *kdsv1.Message, kind, typeURL string) error {
	if s.ctx.Err() != nil {
		return context.Cause(s.ctx)
	}
	size := kdswire.Size(m)
	if size > s.maxSize {
		return fmt.Errorf("%w: %s stream: %s for type %q is %d bytes, the limit is %d", ErrMessageTooLarge, q.name, kind, typeURL, size, s.maxSize)
	}
	queued := q.queued.Add(int64(size))
	n, ok := q.q.push(outItem{msg: m, size: size})
	if !ok {
		q.queued.Add(-int64(size))
		err := fmt.Errorf("%w: %s stream: %s for type %q did not fit: %d messages (%d bytes) queued, capacity is %d (%s)",
			ErrBufferFull, q.name, kind, typeURL, n, queued-int64(size), q.capacity, q.formula)
		s.Close(err)
		return err
	}
	// The message held a slot even if the sender has taken it already.
	raise(&q.highWater, max(n, 1))
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
// with ErrMessageTooLarge for a message over the session's max size, and
// with ErrBufferFull (ending the session) when the send buffer is full. r
// must not be modified after Send, nor the bytes its resources' values
// hold: the transport reads large values in place, after Send returned
// (package kdswire).
func (ss *ServerStream) Send(r *discovery.DeltaDiscoveryResponse) error {
	return ss.s.enqueue(&ss.out, &kdsv1.Message{Kind: &kdsv1.Message_Response{Response: r}}, "response", r.GetTypeUrl())
}

// Recv blocks for the peer's next request and returns the session's error
// once the session ended.
func (ss *ServerStream) Recv() (*discovery.DeltaDiscoveryRequest, error) {
	return ss.expand(ss.in.get(nil, ss.s))
}

// expand decodes the lists a large request kept encoded while it waited
// in the queue (kdswire.Expand): counted at its encoded size there, it
// takes its decoded size only now, one request at a time. Lists that do
// not decode are the peer's protocol violation: the session ends.
func (ss *ServerStream) expand(r *discovery.DeltaDiscoveryRequest, err error) (*discovery.DeltaDiscoveryRequest, error) {
	if err != nil {
		return nil, err
	}
	if err := kdswire.Expand(r); err != nil {
		err = fmt.Errorf("%w: %s stream: %w", ErrMalformedMessage, ss.in.name, err)
		ss.s.Close(err)
		return nil, err
	}
	return r, nil
}

// RecvContext is Recv that also returns, with ctx's cause, when ctx ends;
// the session goes on.
func (ss *ServerStream) RecvContext(ctx context.Context) (*discovery.DeltaDiscoveryRequest, error) {
	return ss.expand(ss.in.get(ctx, ss.s))
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
// Send (its resources' values included, as for ServerStream.Send).
func (cs *ClientStream) Send(r *discovery.DeltaDiscoveryRequest) error {
	return cs.s.enqueue(&cs.out, &kdsv1.Message{Kind: &kdsv1.Message_Request{Request: r}}, "request", r.GetTypeUrl())
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
