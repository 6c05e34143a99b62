package kdssync

import (
	"sync"
)

// Budget bounds the bytes of responses in flight (sent and not yet ACKed or
// NACKed) across every session that shares it: a process-wide ceiling on
// what peers that read slowly, or never answer, can make this side hold.
// A session that finds the budget spent waits (sends nothing more) until
// another session's response is answered or ends; it never blocks the
// goroutine that receives requests.
//
// A Budget is safe for concurrent use. The zero value is not usable; create
// one with NewBudget.
type Budget struct {
	limit int64

	mu      sync.Mutex
	used    int64
	waiters map[chan struct{}]struct{}
}

// NewBudget returns a budget of limit bytes (at least one max-size message
// must fit, or no session could ever send: callers size it accordingly).
func NewBudget(limit int64) *Budget {
	return &Budget{limit: limit, waiters: map[chan struct{}]struct{}{}}
}

// Limit is the budget's size in bytes.
func (b *Budget) Limit() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.limit
}

// atLeast raises the limit to n if it is smaller.
func (b *Budget) atLeast(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.limit = max(b.limit, n)
}

// Used is how many bytes are held now.
func (b *Budget) Used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// tryAcquire takes n bytes if they fit. If they do not, wake is registered
// and signalled (without blocking) at the next release.
func (b *Budget) tryAcquire(n int64, wake chan struct{}) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit {
		b.waiters[wake] = struct{}{}
		return false
	}
	b.used += n
	return true
}

// release returns n bytes and wakes every waiter.
func (b *Budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	waiters := b.waiters
	b.waiters = make(map[chan struct{}]struct{}, len(waiters))
	b.mu.Unlock()
	for w := range waiters {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// forget drops wake from the waiters (its session ended).
func (b *Budget) forget(wake chan struct{}) {
	b.mu.Lock()
	delete(b.waiters, wake)
	b.mu.Unlock()
}
