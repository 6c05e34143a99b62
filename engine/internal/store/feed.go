package store

import (
	"context"
	"fmt"
	"sync"
)

// Feed fans committed events out to watchers. Store implementations own one
// and call Publish once per commit, in commit order (normally while still
// holding their write lock). Publish never blocks on a watcher: each watcher
// queues events without bound until it calls Next.
//
// All methods are safe for concurrent use.
type Feed struct {
	mu       sync.Mutex
	watchers map[*Watch]struct{}
	closed   bool
}

// NewFeed returns a Feed with no watchers.
func NewFeed() *Feed {
	return &Feed{watchers: make(map[*Watch]struct{})}
}

// Publish queues the events of one commit for every current watcher and
// signals them. The Feed takes ownership of events: neither the slice nor
// the resources in it may be modified afterwards. An empty slice is ignored.
func (f *Feed) Publish(events []Event) {
	if len(events) == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for w := range f.watchers {
		w.push(events)
	}
}

// Watch registers a watcher until ctx ends or the Feed closes. ErrClosed if
// the Feed is closed.
func (f *Feed) Watch(ctx context.Context) (*Watch, error) {
	if err := context.Cause(ctx); err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	w := &Watch{
		feed: f,
		c:    make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil, fmt.Errorf("watch: %w", ErrClosed)
	}
	f.watchers[w] = struct{}{}
	f.mu.Unlock()
	// AfterFunc starts no goroutine until ctx ends; the one it then starts
	// only unregisters the watcher and returns.
	stop := context.AfterFunc(ctx, func() { w.end(context.Cause(ctx)) })
	w.mu.Lock()
	w.stopCtx = stop
	ended := w.err != nil
	w.mu.Unlock()
	if ended { // the feed closed between registration and now
		stop()
	}
	return w, nil
}

// Close ends every watcher with ErrClosed; later Watch calls fail with
// ErrClosed. Idempotent.
func (f *Feed) Close() {
	f.mu.Lock()
	f.closed = true
	ws := make([]*Watch, 0, len(f.watchers))
	for w := range f.watchers {
		ws = append(ws, w)
	}
	f.mu.Unlock()
	for _, w := range ws {
		w.end(ErrClosed)
	}
}

// EndAll ends every current watcher with cause (which should wrap
// ErrWatchLost) and leaves the Feed open: later Watch calls succeed. A
// store calls it when it cannot deliver commits its watchers are owed.
func (f *Feed) EndAll(cause error) {
	f.mu.Lock()
	ws := make([]*Watch, 0, len(f.watchers))
	for w := range f.watchers {
		ws = append(ws, w)
	}
	f.mu.Unlock()
	for _, w := range ws {
		w.end(cause)
	}
}

// Watchers returns the number of registered watchers.
func (f *Feed) Watchers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.watchers)
}

func (f *Feed) remove(w *Watch) {
	f.mu.Lock()
	delete(f.watchers, w)
	f.mu.Unlock()
}

// Watch receives the events of every commit published after it was
// created, in commit order, without loss. Typical loop:
//
//	for {
//		select {
//		case <-w.C():
//			for _, ev := range w.Next() { ... }
//		case <-w.Done():
//			return w.Err()
//		}
//	}
//
// All methods are safe for concurrent use; one consumer is the intended use.
type Watch struct {
	feed *Feed
	c    chan struct{}
	done chan struct{}

	mu      sync.Mutex
	pending [][]Event // one slice per commit, shared with other watchers
	n       int
	err     error
	stopCtx func() bool
	// only, when not nil, holds the types of Only: commits with no event
	// of one of them are not queued.
	only map[string]struct{}
}

// Only restricts the watch to the commits that hold at least one event of
// one of types: any other commit is neither queued nor signalled, so a
// consumer that serves a few types does not wake up for commits of others.
// A commit that qualifies is queued whole, events of other types included
// (consumers still filter what they take). Commits published before Only
// returned may be of any type. No types: every commit again (the default).
func (w *Watch) Only(types ...string) {
	var only map[string]struct{}
	if len(types) > 0 {
		only = make(map[string]struct{}, len(types))
		for _, t := range types {
			only[t] = struct{}{}
		}
	}
	w.mu.Lock()
	w.only = only
	w.mu.Unlock()
}

// wants reports whether a commit of events qualifies under Only; w.mu held.
func (w *Watch) wants(events []Event) bool {
	if w.only == nil {
		return true
	}
	last := ""
	for _, ev := range events {
		if ev.Resource == nil {
			return true // nothing to judge by: deliver
		}
		if t := ev.Resource.Type; t != last {
			if _, ok := w.only[t]; ok {
				return true
			}
			last = t
		}
	}
	return false
}

// C is signalled (capacity 1, coalescing) when events are pending. One
// signal may stand for many commits; after a signal, Next returns them all.
func (w *Watch) C() <-chan struct{} { return w.c }

// Next returns all pending events in commit order (a commit is never split
// across calls) and clears them; nil if none. The slice belongs to the
// caller; the Resources in it are shared and read-only. Events queued before
// the watch ended are still returned.
func (w *Watch) Next() []Event {
	w.mu.Lock()
	pending, n := w.pending, w.n
	w.pending, w.n = nil, 0
	w.mu.Unlock()
	if n == 0 {
		return nil
	}
	out := make([]Event, 0, n)
	for _, p := range pending {
		out = append(out, p...)
	}
	return out
}

// Done is closed when the watch ends: its context ended or the store closed.
func (w *Watch) Done() <-chan struct{} { return w.done }

// Err returns nil while the watch runs; afterwards the context's cause or
// ErrClosed.
func (w *Watch) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *Watch) push(events []Event) {
	w.mu.Lock()
	if w.err != nil || !w.wants(events) {
		w.mu.Unlock()
		return
	}
	w.pending = append(w.pending, events)
	w.n += len(events)
	w.mu.Unlock()
	select {
	case w.c <- struct{}{}:
	default:
	}
}

func (w *Watch) end(cause error) {
	w.mu.Lock()
	if w.err != nil {
		w.mu.Unlock()
		return
	}
	w.err = cause
	stop := w.stopCtx
	w.mu.Unlock()
	w.feed.remove(w)
	if stop != nil {
		stop()
	}
	close(w.done)
}
