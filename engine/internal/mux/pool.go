package mux

import (
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// InboundPool is a byte budget that the inbound queues of many sessions
// share: what every session of a process has received and not yet handed
// to its sync layer. A receive loop that finds the pool exhausted waits
// for room (see the package documentation for why it waits instead of
// ending its session). Safe for concurrent use; create it with
// NewInboundPool and pass it to every session with WithInboundPool.
type InboundPool struct {
	limit  int64
	sem    *semaphore.Weighted
	queued atomic.Int64
	peak   atomic.Int64
	waits  atomic.Uint64
	// waiting is how many receive loops wait for room now.
	waiting atomic.Int64
	// longest is the longest wait for room, in nanoseconds.
	longest atomic.Int64
}

// NewInboundPool returns a pool of limit bytes; zero or negative means
// DefaultInboundPoolBytes.
func NewInboundPool(limit int64) *InboundPool {
	if limit <= 0 {
		limit = DefaultInboundPoolBytes
	}
	return &InboundPool{limit: limit, sem: semaphore.NewWeighted(limit)}
}

// Limit is the pool's size in bytes.
func (p *InboundPool) Limit() int64 { return p.limit }

// Queued is how many bytes the sessions' inbound queues hold now.
func (p *InboundPool) Queued() int64 { return p.queued.Load() }

// Peak is the most bytes the sessions' inbound queues held at once since
// the pool was created; never more than Limit.
func (p *InboundPool) Peak() int64 { return p.peak.Load() }

// Waits counts the times a receive loop found the pool exhausted and had
// to wait for room.
func (p *InboundPool) Waits() uint64 { return p.waits.Load() }

// Waiting is how many receive loops wait for room now.
func (p *InboundPool) Waiting() int64 { return p.waiting.Load() }

// Busy reports whether this side is behind on what its peers sent: a
// receive loop waits for room, or the queues hold more than half the
// pool (a peer's next message may be about to wait). A waiting loop alone
// counts, whatever the queues hold: a message counted at more than half
// the pool waits for room while they hold less.
func (p *InboundPool) Busy() bool {
	return p.waiting.Load() > 0 || p.queued.Load() > p.limit/2
}

// LongestWait is the longest a receive loop waited for room. While it
// waits, HTTP/2 flow control holds its peer's Send, which the peer's send
// timeout bounds.
func (p *InboundPool) LongestWait() time.Duration { return time.Duration(p.longest.Load()) }

// acquire takes n bytes (at most the whole pool, so that one message larger
// than the pool still fits once everything else is gone), waiting in
// arrival order until there is room or ctx ends. It returns what it took.
func (p *InboundPool) acquire(ctx context.Context, n int64) (int64, error) {
	n = min(n, p.limit)
	if !p.sem.TryAcquire(n) {
		p.waits.Add(1)
		p.waiting.Add(1)
		start := time.Now()
		err := p.sem.Acquire(ctx, n)
		p.waiting.Add(-1)
		raise(&p.longest, int(time.Since(start)))
		if err != nil {
			return 0, context.Cause(ctx)
		}
	}
	raise(&p.peak, int(p.queued.Add(n)))
	return n, nil
}

func (p *InboundPool) release(n int64) {
	p.queued.Add(-n)
	p.sem.Release(n)
}
