package kdssync

import (
	"sync"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// MaxRememberedRejections bounds how many refused resources of one type a
// Rejections keeps. Past it, further refusals are still answered in the
// NACK but not remembered: the server may send them again next session,
// and they are refused again.
const MaxRememberedRejections = 1000

// Rejections remembers, per type, the versions a subscriber refused from
// one peer, across that peer's sessions: a new session tells the server
// (in its subscription), which then does not send them again until they
// change. It is kept in memory only: after a restart of this side (for
// example with a newer plugin that accepts them) they are sent once more.
// Safe for concurrent use.
type Rejections struct {
	mu    sync.Mutex
	types map[string]map[string]*kdsv1.RejectedResource
}

// NewRejections returns an empty memory.
func NewRejections() *Rejections {
	return &Rejections{types: map[string]map[string]*kdsv1.RejectedResource{}}
}

// list returns the remembered entries of typ.
func (r *Rejections) list(typ string) []*kdsv1.RejectedResource {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*kdsv1.RejectedResource, 0, len(r.types[typ]))
	for _, e := range r.types[typ] {
		out = append(out, e)
	}
	return out
}

// count returns how many entries of typ are remembered.
func (r *Rejections) count(typ string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.types[typ])
}

// update remembers rejected and forgets the names in accepted.
func (r *Rejections) update(typ string, rejected []*kdsv1.RejectedResource, accepted []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.types[typ]
	if m == nil {
		if len(rejected) == 0 {
			return
		}
		m = map[string]*kdsv1.RejectedResource{}
		r.types[typ] = m
	}
	for _, n := range accepted {
		delete(m, n)
	}
	for _, e := range rejected {
		if _, ok := m[e.GetName()]; ok || len(m) < MaxRememberedRejections {
			m[e.GetName()] = e
		}
	}
}
