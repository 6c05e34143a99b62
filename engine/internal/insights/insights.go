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
