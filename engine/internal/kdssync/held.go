package kdssync

import (
	"context"
	"fmt"
	"maps"
	"sync"
)

// PeerHolding is what one peer holds of one resource, as the server sees
// it: the versions the peer applied and answered, and what is in flight.
type PeerHolding struct {
	// Subscribed is false when the peer has not subscribed to the type.
	Subscribed bool
	// Holds reports whether the peer applied the resource, at Version.
	Holds   bool
	Version string
	// Pending is set while a response carrying the resource is in flight;
	// PendingVersion is the version it carries ("" with PendingRemoval).
	Pending        bool
	PendingVersion string
	PendingRemoval bool
	// Rejected is set when the peer refused a version of the resource
	// (RejectedVersion; "" for a refused removal).
	Rejected        bool
	RejectedVersion string
}

// heldQuery asks a session's loop about one resource.
type heldQuery struct {
	typ, name string
	reply     chan PeerHolding
}

// sessions tracks the live serving sessions by peer, for Held. A newer
// session of a peer replaces the older one here.
type sessions struct {
	mu   sync.Mutex
	live map[string]*serverSession
}

func (r *sessions) add(ss *serverSession) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.live == nil {
		r.live = map[string]*serverSession{}
	}
	r.live[ss.peer] = ss
}

func (r *sessions) remove(ss *serverSession) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.live[ss.peer] == ss {
		delete(r.live, ss.peer)
	}
}

func (r *sessions) snapshot() map[string]*serverSession {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.live)
}

// Held reports, for every peer with a live session, what it holds of the
// resource of type typ with wire name name (see WireName). Each session's
// own loop answers, so the answer is consistent with what it sends; a
// session that ends meanwhile is left out. The cost is one message to each
// live session, independent of how many resources are served. Held returns
// ctx's error if ctx ends before every session answered.
func (s *Server) Held(ctx context.Context, typ, name string) (map[string]PeerHolding, error) {
	live := s.sessions.snapshot()
	out := make(map[string]PeerHolding, len(live))
	type answer struct {
		peer string
		h    PeerHolding
		ok   bool
	}
	answers := make(chan answer, len(live))
	for peer, ss := range live {
		go func() {
			h, ok := ss.held(ctx, typ, name)
			answers <- answer{peer, h, ok}
		}()
	}
	var err error
	for range live {
		a := <-answers
		if a.ok {
			out[a.peer] = a.h
		} else if ctx.Err() != nil {
			err = fmt.Errorf("held %s %s: %w", typ, name, context.Cause(ctx))
		}
	}
	return out, err
}

// held asks ss's loop; ok is false if the session ended or ctx ended first.
func (ss *serverSession) held(ctx context.Context, typ, name string) (PeerHolding, bool) {
	q := heldQuery{typ: typ, name: name, reply: make(chan PeerHolding, 1)}
	select {
	case ss.queries <- q:
	case <-ss.done:
		return PeerHolding{}, false
	case <-ctx.Done():
		return PeerHolding{}, false
	}
	select {
	case h := <-q.reply:
		return h, true
	case <-ctx.Done():
		return PeerHolding{}, false
	}
}

// answer runs on the session's loop.
func (ss *serverSession) answer(q heldQuery) {
	var h PeerHolding
	if st := ss.types[q.typ]; st != nil {
		h.Subscribed = true
		ss.ix.mu.RLock()
		ti := ss.ix.types[q.typ]
		ss.catchUpInChunks(st, ti)
		hs := st.holding(ti, q.name)
		ss.ix.mu.RUnlock()
		h.Version, h.Holds = hs.version, hs.holds
		if s, ok := st.inFlight(q.name); ok {
			h.Pending, h.PendingVersion, h.PendingRemoval = true, s.version, s.removed
		}
		h.RejectedVersion, h.Rejected = st.rejected[q.name]
	}
	q.reply <- h
}
