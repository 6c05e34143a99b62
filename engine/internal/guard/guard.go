// Package guard enforces which side may write which resource types, below
// every API: it wraps a store.Store so that no path — admin API, CLI, sync —
// can write a type on the side that only receives it.
//
//   - On global, local writes (Create, Update, Delete) are allowed only for
//     GlobalToZone types; sync writes (Apply) only for ZoneToGlobal types and
//     only with a zone set (the connection's identity).
//   - On a zone, local writes only for ZoneToGlobal types; sync writes only
//     for GlobalToZone types, never with a zone set.
//
// Refusals wrap resource.ErrReadOnly (or resource.ErrUnknownType) and say
// where the resource must be written. Reads pass through unchanged.
package guard

import (
	"context"
	"fmt"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// Role is the side the guarded store runs on.
type Role int

const (
	// Global is the global control plane.
	Global Role = iota + 1
	// Zone is a zone control plane.
	Zone
)

// Types looks up type descriptors by name.
type Types interface {
	Type(name string) (resource.TypeDescriptor, bool)
}

// Store is a store.Store that refuses writes to the wrong side. It is safe
// for concurrent use when the wrapped store and Types are.
type Store struct {
	store.Store
	role  Role
	types Types
}

var _ store.Store = (*Store)(nil)

// New wraps s for role, looking types up in types.
func New(s store.Store, role Role, types Types) *Store {
	return &Store{Store: s, role: role, types: types}
}

// owned is the direction written locally on this side.
func (g *Store) owned() resource.Direction {
	if g.role == Global {
		return resource.GlobalToZone
	}
	return resource.ZoneToGlobal
}

// CheckLocalWrite returns nil if resources of typ may be written on this
// side through the admin API.
func (g *Store) CheckLocalWrite(typ string) error {
	td, ok := g.types.Type(typ)
	if !ok {
		return fmt.Errorf("%q: %w: no loaded plugin registers it", typ, resource.ErrUnknownType)
	}
	if td.Direction == g.owned() {
		return nil
	}
	if td.Direction == resource.GlobalToZone {
		return fmt.Errorf("%s is written on global and synced to zones; write it on global: %w", typ, resource.ErrReadOnly)
	}
	return fmt.Errorf("%s is written on a zone and synced to global; write it on its zone: %w", typ, resource.ErrReadOnly)
}

func (g *Store) checkSyncWrite(k resource.Key) error {
	td, ok := g.types.Type(k.Type)
	if !ok {
		return fmt.Errorf("%s: %w: no loaded plugin registers it", k, resource.ErrUnknownType)
	}
	if td.Direction == g.owned() {
		return fmt.Errorf("%s is written on this side and cannot be received from a peer: %w", k, resource.ErrReadOnly)
	}
	if g.role == Global && k.Zone == "" {
		return fmt.Errorf("%s: a resource received from a zone must carry that zone: %w", k, resource.ErrReadOnly)
	}
	if g.role == Zone && k.Zone != "" {
		return fmt.Errorf("%s: a zone holds no resources of other zones: %w", k, resource.ErrReadOnly)
	}
	return nil
}

// Create is store.Store.Create for types written on this side.
func (g *Store) Create(ctx context.Context, r *resource.Resource) (*resource.Resource, error) {
	if err := g.CheckLocalWrite(r.Type); err != nil {
		return nil, err
	}
	if r.Zone != "" {
		return nil, fmt.Errorf("%s: zone is set by the engine, not by writers: %w", r.Key(), resource.ErrReadOnly)
	}
	return g.Store.Create(ctx, r)
}

// Update is store.Store.Update for types written on this side.
func (g *Store) Update(ctx context.Context, r *resource.Resource) (*resource.Resource, error) {
	if err := g.CheckLocalWrite(r.Type); err != nil {
		return nil, err
	}
	if r.Zone != "" {
		return nil, fmt.Errorf("%s: zone is set by the engine, not by writers: %w", r.Key(), resource.ErrReadOnly)
	}
	return g.Store.Update(ctx, r)
}

// Delete is store.Store.Delete for types written on this side.
func (g *Store) Delete(ctx context.Context, k resource.Key, version string) error {
	if err := g.CheckLocalWrite(k.Type); err != nil {
		return err
	}
	if k.Zone != "" {
		return fmt.Errorf("%s: resources of a zone are deleted by that zone: %w", k, resource.ErrReadOnly)
	}
	return g.Store.Delete(ctx, k, version)
}

// Apply is store.Store.Apply for types received on this side.
func (g *Store) Apply(ctx context.Context, b store.Batch) (uint64, error) {
	for _, r := range b.Put {
		if err := g.checkSyncWrite(r.Key()); err != nil {
			return 0, err
		}
	}
	for _, k := range b.Delete {
		if err := g.checkSyncWrite(k); err != nil {
			return 0, err
		}
	}
	return g.Store.Apply(ctx, b)
}
