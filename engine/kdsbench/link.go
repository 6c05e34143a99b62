package kdsbench

import (
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Link describes the network a shaped proxy imitates, per direction: a
// bottleneck of Bandwidth bytes per second followed by a one-way delay of
// RTT/2. The zero Link is loopback (no shaping).
type Link struct {
	// RTT is the round-trip time the proxy adds (half each way).
	RTT time.Duration
	// Bandwidth is the bottleneck rate in bytes per second; zero or
	// negative means unlimited.
	Bandwidth int64
	// Buffer bounds the bytes queued in one direction (on the wire plus in
	// the bottleneck's queue), as the kernel's socket buffers and the
	// path's queues do; a sender that fills it blocks, so TCP's and
	// HTTP/2's flow control see the link's real capacity. Zero means two
	// bandwidth-delay products plus 4 MiB.
	Buffer int64
}

func (l Link) shaped() bool { return l.RTT > 0 || l.Bandwidth > 0 }

func (l Link) buffer() int64 {
	if l.Buffer > 0 {
		return l.Buffer
	}
	bdp := int64(0)
	if l.Bandwidth > 0 {
		bdp = l.Bandwidth * int64(l.RTT) / int64(time.Second)
	}
	return 2*bdp + 4<<20
}

// chunk is one read's bytes and the time they leave the far end of the
// link.
type chunk struct {
	b  []byte
	at time.Time
}

// shapedRelay copies src to dst through a Link: each chunk read from src
// is serialised at the link's bandwidth behind the chunks before it, and
// delivered RTT/2 after its last byte left the bottleneck. At most
// l.buffer() bytes are queued; the reader waits for room. n counts the
// bytes delivered. It returns when src or dst fails; the caller closes
// both.
func shapedRelay(dst io.Writer, src io.Reader, l Link, n *atomic.Int64) {
	q := &linkQueue{limit: l.buffer()}
	q.cond = newCond(q)
	done := make(chan struct{})
	go func() { // the far end: delivers chunks when they are due
		defer close(done)
		for {
			c, ok := q.pop()
			if !ok {
				return
			}
			if d := time.Until(c.at); d > 0 {
				time.Sleep(d)
			}
			// Counted before the write, so that a reader that has the
			// bytes sees them counted.
			n.Add(int64(len(c.b)))
			if _, err := dst.Write(c.b); err != nil {
				q.fail()
				return
			}
			q.release(len(c.b))
		}
	}()
	oneWay := l.RTT / 2
	var txEnd time.Time // when the bottleneck finishes the last queued byte
	for {
		buf := make([]byte, 64<<10)
		k, err := src.Read(buf)
		if k > 0 {
			now := time.Now()
			if txEnd.Before(now) {
				txEnd = now
			}
			if l.Bandwidth > 0 {
				txEnd = txEnd.Add(time.Duration(int64(k) * int64(time.Second) / l.Bandwidth))
			}
			if !q.push(chunk{b: buf[:k], at: txEnd.Add(oneWay)}) {
				break
			}
		}
		if err != nil {
			break
		}
	}
	q.close()
	<-done
}

// linkQueue is one direction's bytes in flight, bounded in bytes.
type linkQueue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	items  []chunk
	bytes  int64
	limit  int64
	closed bool // no more pushes; pop drains what is queued
	failed bool // the far end is gone; push and pop stop
}

func newCond(q *linkQueue) *sync.Cond { return sync.NewCond(&q.mu) }

// push queues c, waiting while the queue is full; false once the far end
// failed.
func (q *linkQueue) push(c chunk) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for !q.failed && q.bytes > 0 && q.bytes+int64(len(c.b)) > q.limit {
		q.cond.Wait()
	}
	if q.failed {
		return false
	}
	q.items = append(q.items, c)
	q.bytes += int64(len(c.b))
	q.cond.Broadcast()
	return true
}

// pop returns the oldest chunk, waiting for one; false once the queue is
// closed and drained, or failed.
func (q *linkQueue) pop() (chunk, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == 0 && !q.closed && !q.failed {
		q.cond.Wait()
	}
	if q.failed || len(q.items) == 0 {
		return chunk{}, false
	}
	c := q.items[0]
	q.items[0] = chunk{}
	q.items = q.items[1:]
	return c, true
}

// release frees room for k delivered bytes.
func (q *linkQueue) release(k int) {
	q.mu.Lock()
	q.bytes -= int64(k)
	q.cond.Broadcast()
	q.mu.Unlock()
}

func (q *linkQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}

func (q *linkQueue) fail() {
	q.mu.Lock()
	q.failed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}
