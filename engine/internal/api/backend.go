// Package api is the engine's admin HTTP API: resources (CRUD, list with
// filters, batch validate and apply), types, zone and sync state, plugins,
// health, readiness and Prometheus metrics. docs/api.md documents every
// route; the kds-engine CLI is a client of it.
//
// The handler holds no state of its own: everything it serves comes from a
// Backend the engine supplies. It maps the resource sentinels (ErrNotFound,
// ErrConflict, …) and *resource.ValidationError to HTTP status codes and
// stable JSON error codes.
package api

import (
	"context"

	"github.com/kds-engine/kds-engine/engine/apitypes"
	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// Role names as Backend.Role reports them.
const (
	RoleGlobal = apitypes.RoleGlobal
	RoleZone   = apitypes.RoleZone
)

// Backend is what the admin API needs from a running engine. All methods
// must be safe for concurrent use; the handler calls them from many request
// goroutines. Returned values are owned by the caller (the handler does not
// mutate them, but it may hold them after the call).
type Backend interface {
	// Role is RoleGlobal or RoleZone.
	Role() string
	// Types lists the types the loaded plugins supply.
	Types() []resource.TypeDescriptor
	// Get returns one resource, or an error wrapping resource.ErrNotFound.
	Get(ctx context.Context, key resource.Key) (*resource.Resource, error)
	// List returns the resources that match every non-empty field of f.
	List(ctx context.Context, f Filter) ([]*resource.Resource, error)
	// Create stores a new resource after the full validation pipeline and
	// returns it as stored (with version and times). A key that exists is
	// resource.ErrAlreadyExists; an invalid resource is a
	// *resource.ValidationError; a write on the receiving side is
	// resource.ErrReadOnly.
	Create(ctx context.Context, r *resource.Resource) (*resource.Resource, error)
	// Update replaces a resource. r.Version is the version the client read;
	// if it is not the stored one the error wraps resource.ErrConflict.
	Update(ctx context.Context, r *resource.Resource) (*resource.Resource, error)
	// Delete removes a resource. A non-empty version must be the stored
	// one (resource.ErrConflict otherwise); empty deletes unconditionally.
	Delete(ctx context.Context, key resource.Key, version string) error
	// Validate runs the full validation pipeline (envelope, JSON Schema,
	// plugin) on every resource without writing anything, and reports all
	// problems in one *resource.ValidationError.
	Validate(ctx context.Context, rs []*resource.Resource) error
	// (Create and Update may skip their own validation when
	// BatchValidated(ctx) is true: the handler already validated the whole
	// batch with Validate in the same request.)
	// Plugins describes the loaded plugins and the send-buffer capacity.
	Plugins() PluginsInfo
	// Insights is, on global, one entry per zone that ever connected; on a
	// zone, at most one entry named "global".
	Insights() []insights.Conn
	// Ready returns nil when the engine serves its role, else an error
	// saying why not (store not open, plugins not loaded, zone not
	// connected, …).
	Ready() error
}

// ReplicaNamer is implemented by a global Backend that names the replica
// it is (GET /api/v1/zones reports it as "replica").
type ReplicaNamer interface {
	Replica() string
}

// Filter selects resources in Backend.List. Empty fields match everything;
// Labels must all be present with equal values.
type Filter struct {
	Type   string
	Mesh   string
	Zone   string
	Labels map[string]string
}

// Matches reports whether r passes the filter.
func (f Filter) Matches(r *resource.Resource) bool {
	if f.Type != "" && r.Type != f.Type {
		return false
	}
	if f.Mesh != "" && r.Mesh != f.Mesh {
		return false
	}
	if f.Zone != "" && r.Zone != f.Zone {
		return false
	}
	for k, v := range f.Labels {
		if got, ok := r.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Plugin states as PluginInfo.State reports them (see apitypes).
const (
	PluginRunning    = apitypes.PluginRunning
	PluginRestarting = apitypes.PluginRestarting
	PluginFailed     = apitypes.PluginFailed
)

// batchValidatedKey marks a request context whose resources were all
// validated by Backend.Validate before any write.
type batchValidatedKey struct{}

// BatchValidated reports whether ctx belongs to a batch apply whose
// resources the handler has already passed through Backend.Validate, so a
// Backend need not validate each Create or Update of that batch again.
func BatchValidated(ctx context.Context) bool {
	v, _ := ctx.Value(batchValidatedKey{}).(bool)
	return v
}
