// Package apitest serves the admin API over an in-memory fake backend, for
// tests of API clients (the kds-engine CLI, end-to-end tools) and of the API
// handler itself. The fake keeps resources in a map with the store's
// semantics (versions, optimistic concurrency, already-exists, not-found),
// refuses writes on the receiving side, validates with simple fixture rules,
// and serves configurable zone insights, plugins and readiness.
//
// It is test support: it is not a store and makes no durability promises.
package apitest

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kds-engine/kds-engine/engine/apitypes"
	"github.com/kds-engine/kds-engine/engine/internal/api"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// FixtureTypes are the types every fake backend serves:
//   - Mesh: GlobalToZone, global-scoped, plugin "policies";
//   - MeshTimeout: GlobalToZone, mesh-scoped, plugin "policies"; its
//     spec.connectTimeout, when set, must be a positive duration;
//   - Dataplane: ZoneToGlobal, mesh-scoped, plugin "dataplanes"; its
//     spec.address is required.
func FixtureTypes() []resource.TypeDescriptor {
	return []resource.TypeDescriptor{
		{Name: "Mesh", Direction: resource.GlobalToZone, Scope: resource.ScopeGlobal, Plugin: "policies", SchemaVersion: 1, Description: "A service mesh."},
		{Name: "MeshTimeout", Direction: resource.GlobalToZone, Scope: resource.ScopeMesh, Plugin: "policies", SchemaVersion: 1, Description: "Timeouts for traffic to a target.",
			Schema: json.RawMessage(`{"type":"object","properties":{"connectTimeout":{"type":"string"}}}`)},
		{Name: "Dataplane", Direction: resource.ZoneToGlobal, Scope: resource.ScopeMesh, Plugin: "dataplanes", SchemaVersion: 1, Description: "A proxy next to a workload."},
	}
}

// PluginDownError is what the fake returns for writes of a type whose plugin
// is marked down; it implements api.PluginDownError.
type PluginDownError struct{ Plugin, Type string }

func (e *PluginDownError) Error() string {
	return fmt.Sprintf("plugin %s (type %s) is down; writes of its types fail until it restarts", e.Plugin, e.Type)
}

// PluginDown returns the plugin's name.
func (e *PluginDownError) PluginDown() string { return e.Plugin }

var _ api.PluginDownError = (*PluginDownError)(nil)

// Backend is an in-memory api.Backend. All methods are safe for concurrent
// use.
type Backend struct {
	role  string
	types []resource.TypeDescriptor
	now   func() time.Time

	mu       sync.Mutex
	res      map[resource.Key]*resource.Resource
	version  int
	conns    []apitypes.Conn
	plugins  apitypes.PluginsInfo
	notReady error
	down     map[string]bool // plugin name → down
	warn     map[resource.Key][]resource.FieldError
}

// AddWarning makes Validate report a plugin warning at field of the
// resource typ mesh/name (valid or not), as the plugin host does.
func (b *Backend) AddWarning(typ, mesh, name, field, message string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.warn == nil {
		b.warn = map[resource.Key][]resource.FieldError{}
	}
	k := resource.Key{Type: typ, Mesh: mesh, Name: name}
	b.warn[k] = append(b.warn[k], resource.FieldError{Field: field, Message: message})
}

var _ api.Backend = (*Backend)(nil)

// NewBackend returns an empty fake for role ("global" or "zone") serving
// FixtureTypes, with a plugins list that matches them.
func NewBackend(role string) *Backend {
	b := &Backend{
		role:  role,
		types: FixtureTypes(),
		now:   func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) },
		res:   map[resource.Key]*resource.Resource{},
		down:  map[string]bool{},
	}
	b.plugins = apitypes.PluginsInfo{
		Plugins: []apitypes.PluginInfo{
			{Name: "dataplanes", Version: "0.1.0", State: apitypes.PluginRunning, Types: []string{"Dataplane"}, Path: "plugins/kds-plugin-dataplanes"},
			{Name: "policies", Version: "0.1.0", State: apitypes.PluginRunning, Types: []string{"Mesh", "MeshTimeout"}, Path: "plugins/kds-plugin-policies"},
		},
		Buffer: apitypes.BufferInfo{Capacity: 25, RegisteredTypes: 3, Window: 3, Headroom: 16, Formula: "3 types × 3 in flight + 16 headroom = 25"},
	}
	return b
}

// Role implements api.Backend.
func (b *Backend) Role() string { return b.role }

// Types implements api.Backend.
func (b *Backend) Types() []resource.TypeDescriptor { return slices.Clone(b.types) }

func (b *Backend) typ(name string) (resource.TypeDescriptor, bool) {
	for _, td := range b.types {
		if td.Name == name {
			return td, true
		}
	}
	return resource.TypeDescriptor{}, false
}

// Get implements api.Backend.
func (b *Backend) Get(_ context.Context, key resource.Key) (*resource.Resource, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.res[key]
	if !ok {
		return nil, fmt.Errorf("%s: %w", key, resource.ErrNotFound)
	}
	return r.Clone(), nil
}

// List implements api.Backend.
func (b *Backend) List(_ context.Context, f api.Filter) ([]*resource.Resource, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.typ(f.Type); !ok && f.Type != "" {
		return nil, fmt.Errorf("%s: %w", f.Type, resource.ErrUnknownType)
	}
	var out []*resource.Resource
	for _, r := range b.res {
		if f.Matches(r) {
			out = append(out, r.Clone())
		}
	}
	return out, nil
}

// writable checks the type exists, is written on this side and its plugin
// is up.
func (b *Backend) writable(typ string) error {
	td, ok := b.typ(typ)
	if !ok {
		return fmt.Errorf("%s: %w", typ, resource.ErrUnknownType)
	}
	if (b.role == api.RoleZone && td.Direction == resource.GlobalToZone) ||
		(b.role == api.RoleGlobal && td.Direction == resource.ZoneToGlobal) {
		return fmt.Errorf("%s: %w", typ, resource.ErrReadOnly)
	}
	if b.down[td.Plugin] {
		return &PluginDownError{Plugin: td.Plugin, Type: typ}
	}
	return nil
}

// Create implements api.Backend.
func (b *Backend) Create(_ context.Context, r *resource.Resource) (*resource.Resource, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.writable(r.Type); err != nil {
		return nil, err
	}
	if err := b.validate([]*resource.Resource{r}); err != nil {
		return nil, err
	}
	if _, ok := b.res[r.Key()]; ok {
		return nil, fmt.Errorf("%s: %w", r.Key(), resource.ErrAlreadyExists)
	}
	s := r.Clone()
	b.version++
	s.Version = strconv.Itoa(b.version)
	s.CreationTime, s.ModificationTime = b.now(), b.now()
	b.res[s.Key()] = s
	return s.Clone(), nil
}

// Update implements api.Backend.
func (b *Backend) Update(_ context.Context, r *resource.Resource) (*resource.Resource, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.writable(r.Type); err != nil {
		return nil, err
	}
	if err := b.validate([]*resource.Resource{r}); err != nil {
		return nil, err
	}
	cur, ok := b.res[r.Key()]
	if !ok {
		return nil, fmt.Errorf("%s: %w", r.Key(), resource.ErrNotFound)
	}
	if r.Version != cur.Version {
		return nil, &resource.VersionConflict{Key: r.Key(), Expected: r.Version, Stored: cur.Version}
	}
	s := r.Clone()
	b.version++
	s.Version = strconv.Itoa(b.version)
	s.CreationTime, s.ModificationTime = cur.CreationTime, b.now()
	b.res[s.Key()] = s
	return s.Clone(), nil
}

// Delete implements api.Backend.
func (b *Backend) Delete(_ context.Context, key resource.Key, version string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.writable(key.Type); err != nil {
		return err
	}
	cur, ok := b.res[key]
	if !ok {
		return fmt.Errorf("%s: %w", key, resource.ErrNotFound)
	}
	if version != "" && version != cur.Version {
		return &resource.VersionConflict{Key: key, Expected: version, Stored: cur.Version}
	}
	delete(b.res, key)
	return nil
}

// Validate implements api.Backend with the fixture rules.
func (b *Backend) Validate(ctx context.Context, rs []*resource.Resource) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range rs {
		if td, ok := b.typ(r.Type); ok && b.down[td.Plugin] {
			return &PluginDownError{Plugin: td.Plugin, Type: r.Type}
		}
	}
	for _, r := range rs {
		resource.AddWarnings(ctx, r.Key(), b.warn[r.Key()])
	}
	return b.validate(rs)
}

func (b *Backend) validate(rs []*resource.Resource) error {
	var ve resource.ValidationError
	for _, r := range rs {
		var errs []resource.FieldError
		td, ok := b.typ(r.Type)
		if !ok {
			return fmt.Errorf("%s: %w", r.Type, resource.ErrUnknownType)
		}
		switch {
		case td.Scope == resource.ScopeMesh && r.Mesh == "":
			errs = append(errs, resource.FieldError{Field: "mesh", Message: "required for mesh-scoped type " + td.Name})
		case td.Scope == resource.ScopeGlobal && r.Mesh != "":
			errs = append(errs, resource.FieldError{Field: "mesh", Message: "must be empty for global-scoped type " + td.Name})
		}
		spec := map[string]any{}
		if len(r.Spec) > 0 {
			if err := json.Unmarshal(r.Spec, &spec); err != nil {
				errs = append(errs, resource.FieldError{Field: "spec", Message: "must be a JSON object"})
			}
		}
		switch td.Name {
		case "MeshTimeout":
			if v, ok := spec["connectTimeout"]; ok {
				s, _ := v.(string)
				if d, err := time.ParseDuration(s); err != nil || d <= 0 {
					errs = append(errs, resource.FieldError{Field: "spec.connectTimeout", Message: "must be a positive duration"})
				}
			}
		case "Dataplane":
			if _, ok := spec["address"]; !ok {
				errs = append(errs, resource.FieldError{Field: "spec.address", Message: "required"})
			}
		}
		if len(errs) > 0 {
			ve.Invalid = append(ve.Invalid, resource.InvalidResource{Key: r.Key(), Errors: errs})
		}
	}
	if len(ve.Invalid) > 0 {
		return &ve
	}
	return nil
}

// Plugins implements api.Backend.
func (b *Backend) Plugins() apitypes.PluginsInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.plugins
	p.Plugins = slices.Clone(p.Plugins)
	return p
}

// Insights implements api.Backend.
func (b *Backend) Insights() []apitypes.Conn {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := slices.Clone(b.conns)
	for i := range out {
		out[i].Types = maps.Clone(out[i].Types)
	}
	return out
}

// Ready implements api.Backend.
func (b *Backend) Ready() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.notReady
}

// Put stores r as is (no checks, any side), assigning a version and times.
// For seeding, including zone-provided resources on global.
func (b *Backend) Put(r *resource.Resource) *resource.Resource {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := r.Clone()
	b.version++
	s.Version = strconv.Itoa(b.version)
	s.CreationTime, s.ModificationTime = b.now(), b.now()
	b.res[s.Key()] = s
	return s.Clone()
}

// SeedJSON stores each resource of a JSON array with Put.
func (b *Backend) SeedJSON(doc string) error {
	var rs []*resource.Resource
	if err := json.Unmarshal([]byte(doc), &rs); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	for _, r := range rs {
		b.Put(r)
	}
	return nil
}

// SetInsights replaces the connection entries Insights returns.
func (b *Backend) SetInsights(cs ...apitypes.Conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.conns = cs
}

// SetInsightsJSON replaces the connection entries from a JSON array of
// apitypes.Conn.
func (b *Backend) SetInsightsJSON(doc string) error {
	var cs []apitypes.Conn
	if err := json.Unmarshal([]byte(doc), &cs); err != nil {
		return fmt.Errorf("insights: %w", err)
	}
	b.SetInsights(cs...)
	return nil
}

// SetNotReady makes Ready return an error with reason; "" makes it ready.
func (b *Backend) SetNotReady(reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.notReady = nil
	if reason != "" {
		b.notReady = fmt.Errorf("%s", reason)
	}
}

// SetNotReadyError makes Ready return err (nil makes it ready), for
// readiness errors a handler option maps to a code (api.WithErrorCode).
func (b *Backend) SetNotReadyError(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.notReady = err
}

// SetPluginDown marks a plugin down (writes of its types fail with
// *PluginDownError) or back up.
func (b *Backend) SetPluginDown(plugin string, down bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.down[plugin] = down
	for i, p := range b.plugins.Plugins {
		if p.Name == plugin {
			b.plugins.Plugins[i].State = apitypes.PluginRunning
			if down {
				b.plugins.Plugins[i].State = apitypes.PluginRestarting
			}
		}
	}
}

// Count returns how many resources the fake holds.
func (b *Backend) Count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.res)
}

// Server is an httptest server running the admin API over a Backend.
type Server struct {
	*httptest.Server
	Backend *Backend
}

// NewServer starts the admin API for role over a fresh Backend. The caller
// closes it.
func NewServer(role string) *Server {
	return NewServerWithToken(role, "")
}

// NewServerWithToken is NewServer with the API requiring token (see
// api.WithToken); "" means no token.
func NewServerWithToken(role, token string) *Server {
	b := NewBackend(role)
	h := api.NewHandler(b, hclog.NewNullLogger(), api.WithToken(token))
	return &Server{Server: httptest.NewServer(h), Backend: b}
}
