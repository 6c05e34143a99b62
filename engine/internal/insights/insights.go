// Package insights keeps the in-memory sync state the admin API shows: on
// global one entry per zone, on a zone one entry for its connection to
// global. The sync layer records events; readers take snapshots.
//
// All methods of Registry are safe for concurrent use. Snapshots are copies
// the caller owns.
package insights

import (
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/kds-engine/kds-engine/engine/apitypes"
)

// TypeState is the sync state of one resource type on one connection. It is
// part of the admin API's JSON (package apitypes).
type TypeState = apitypes.TypeState

// What a waiting subscription waits for (TypeState.WaitingFor).
const (
	// WaitingForPeerBudget: room in the peer's inbound budget.
	WaitingForPeerBudget = apitypes.WaitingForPeerBudget
	// WaitingForSlot: a slot among the initial syncs global runs at once.
	WaitingForSlot = apitypes.WaitingForSlot
)

// Conn is the state of one zone<->global connection. It is part of the admin
// API's JSON (package apitypes).
type Conn = apitypes.Conn

// Registry holds the Conn entries by name.
type Registry struct {
	mu    sync.Mutex
	conns map[string]*Conn
	now   func() time.Time
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{conns: map[string]*Conn{}, now: time.Now}
}

func (r *Registry) conn(name string) *Conn {
	c, ok := r.conns[name]
	if !ok {
		c = &Conn{Name: name, Types: map[string]TypeState{}}
		r.conns[name] = c
	}
	return c
}

// Connected records the start of a session for name.
func (r *Registry) Connected(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.conn(name)
	c.Online = true
	c.ConnectedSince = r.now()
	c.Sessions++
	c.Streams = nil
}

// Disconnected records the end of a session for name and why it ended.
func (r *Registry) Disconnected(name string, cause error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.conn(name)
	c.Online = false
	c.DisconnectedAt = r.now()
	if cause != nil {
		c.LastError = cause.Error()
	}
}

// Refused records an attempt to open a session for name that never became
// one (the peer unreachable, or the attempt refused) and why. The
// connection is offline; DisconnectedAt stays when it went offline (the end
// of its last session, or the first attempt that failed), so that a
// connection retrying for an hour shows offline for an hour, not since its
// latest attempt.
func (r *Registry) Refused(name string, cause error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.conn(name)
	if c.Online || c.DisconnectedAt.IsZero() {
		c.DisconnectedAt = r.now()
	}
	c.Online = false
	if cause != nil {
		c.LastError = cause.Error()
	}
}

// UpdateType applies fn to the state of typ on connection name.
func (r *Registry) UpdateType(name, typ string, fn func(*TypeState)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.conn(name)
	ts := c.Types[typ]
	ts.Type = typ
	fn(&ts)
	c.Types[typ] = ts
}

// DropTypes removes the state of types on connection name (for example the
// unknown types a session asked for, when it ends).
func (r *Registry) DropTypes(name string, types []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.conns[name]
	if !ok {
		return
	}
	for _, t := range types {
		delete(c.Types, t)
	}
}

// MergeRejected returns list with the entries of add put in (replacing one
// of the same name) and the names in accepted taken out, keeping at most
// apitypes.MaxRejectedShown entries. It returns a new slice: snapshots
// taken earlier keep theirs.
func MergeRejected(list, add []apitypes.RejectedResource, accepted []string) []apitypes.RejectedResource {
	if len(add) == 0 && len(list) == 0 {
		return list
	}
	drop := make(map[string]struct{}, len(add)+len(accepted))
	for _, n := range accepted {
		drop[n] = struct{}{}
	}
	for _, a := range add {
		drop[a.Name] = struct{}{}
	}
	out := make([]apitypes.RejectedResource, 0, min(len(list)+len(add), apitypes.MaxRejectedShown))
	for _, e := range list {
		if _, ok := drop[e.Name]; !ok && len(out) < apitypes.MaxRejectedShown {
			out = append(out, e)
		}
	}
	for _, a := range add {
		if len(out) == apitypes.MaxRejectedShown {
			break
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// Get returns a copy of the entry for name.
func (r *Registry) Get(name string) (Conn, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.conns[name]
	if !ok {
		return Conn{}, false
	}
	cp := *c
	cp.Types = maps.Clone(c.Types)
	return cp, true
}

// List returns copies of all entries sorted by name.
func (r *Registry) List() []Conn {
	r.mu.Lock()
	names := slices.Sorted(maps.Keys(r.conns))
	r.mu.Unlock()
	out := make([]Conn, 0, len(names))
	for _, n := range names {
		if c, ok := r.Get(n); ok {
			out = append(out, c)
		}
	}
	return out
}

// StreamState is the send buffer of one logical stream (package apitypes).
type StreamState = apitypes.StreamState

// SetSession records who the live session for name is: the peer's address
// and the id of the token it authenticated with (either may be empty).
func (r *Registry) SetSession(name, peer, tokenID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.conn(name)
	c.Peer, c.TokenID = peer, tokenID
}

// SetInitialSyncSlot records that name's session holds an initial-sync
// slot since since.
func (r *Registry) SetInitialSyncSlot(name string, since time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conn(name).InitialSyncSlotSince = since
}

// ClearInitialSyncSlot clears name's initial-sync slot if it is the one
// taken at since: a newer session of name may hold one of its own.
func (r *Registry) ClearInitialSyncSlot(name string, since time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.conns[name]; ok && c.InitialSyncSlotSince.Equal(since) {
		c.InitialSyncSlotSince = time.Time{}
	}
}

// SetStreams replaces the send-buffer state of name's logical streams.
func (r *Registry) SetStreams(name string, streams []StreamState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conn(name).Streams = slices.Clone(streams)
}
