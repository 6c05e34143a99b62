package engine

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/kds-engine/kds-engine/engine/apitypes"
	"github.com/kds-engine/kds-engine/engine/internal/api"
	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
	"github.com/kds-engine/kds-engine/engine/internal/plugin"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/validate"
)

// backend adapts a running engine to the admin API. Every write goes through
// the validation pipeline and the guarded store, so the API cannot bypass
// the read-only rules.
type backend struct{ e *Engine }

var _ api.Backend = backend{}

func (e *Engine) apiHandler() http.Handler {
	return api.NewHandler(backend{e}, e.log.Named("api"),
		api.WithGatherer(e.promReg),
		api.WithMaxBodyBytes(e.cfg.APIMaxBodySize),
		api.WithErrorCode(plugin.ErrPluginDown, http.StatusServiceUnavailable, "plugin_down"),
		api.WithErrorCode(store.ErrUnavailable, http.StatusServiceUnavailable, api.CodeStoreUnavailable),
		api.WithErrorCode(ErrMeshNotFound, http.StatusBadRequest, apitypes.CodeMeshNotFound),
		api.WithErrorCode(store.ErrNotFound, http.StatusNotFound, "not_found"),
		api.WithErrorCode(store.ErrAlreadyExists, http.StatusConflict, "already_exists"),
		api.WithErrorCode(store.ErrConflict, http.StatusConflict, "conflict"),
		api.WithErrorCode(store.ErrInvalid, http.StatusBadRequest, "bad_request"))
}

func (b backend) Role() string { return string(b.e.cfg.Role) }

func (b backend) Types() []resource.TypeDescriptor { return b.e.host.Registry().Types() }

func (b backend) Get(ctx context.Context, k resource.Key) (*resource.Resource, error) {
	return b.e.store.Get(ctx, k)
}

func (b backend) List(ctx context.Context, f api.Filter) ([]*resource.Resource, error) {
	return b.e.store.List(ctx, store.Filter{Type: f.Type, Mesh: f.Mesh, Zone: f.Zone, Labels: f.Labels})
}

func (b backend) Create(ctx context.Context, r *resource.Resource) (*resource.Resource, error) {
	if err := b.checkWrite(ctx, r); err != nil {
		return nil, err
	}
	return b.e.store.Create(ctx, r)
}

func (b backend) Update(ctx context.Context, r *resource.Resource) (*resource.Resource, error) {
	if err := b.checkWrite(ctx, r); err != nil {
		return nil, err
	}
	return b.e.store.Update(ctx, r)
}

// checkWrite refuses writes to the receiving side before validating, so a
// user learns where to write before learning what is wrong with the spec.
// Resources of a batch apply were validated together already.
func (b backend) checkWrite(ctx context.Context, r *resource.Resource) error {
	if err := b.e.store.CheckLocalWrite(r.Type); err != nil {
		return err
	}
	if err := b.checkMesh(ctx, r); err != nil {
		return err
	}
	if api.BatchValidated(ctx) {
		return nil
	}
	if err := b.e.validator.Validate(ctx, []*resource.Resource{r}); err != nil {
		return err
	}
	return nil
}

// MeshType is the type whose resources are meshes: when a plugin registers
// a global-scoped type of this name, a mesh-scoped resource can only be
// written into a mesh that exists.
const MeshType = "Mesh"

// ErrMeshNotFound refuses a write of a mesh-scoped resource into a mesh
// that has no Mesh resource on this side.
var ErrMeshNotFound = errors.New("mesh does not exist")

// checkMesh refuses r when it is mesh-scoped, a Mesh type is registered and
// r's mesh has no Mesh resource here. Only the admin API's writes are
// checked: the sync stores what the owning side accepted, in whatever order
// it arrives (a zone may receive a policy before its Mesh).
func (b backend) checkMesh(ctx context.Context, r *resource.Resource) error {
	reg := b.e.host.Registry()
	td, ok := reg.Type(r.Type)
	if !ok || td.Scope != resource.ScopeMesh || r.Mesh == "" || validate.NameProblem(r.Mesh) != "" {
		return nil // the validation that follows names what is wrong
	}
	if mt, ok := reg.Type(MeshType); !ok || mt.Scope != resource.ScopeGlobal {
		return nil
	}
	_, err := b.e.store.Get(ctx, resource.Key{Type: MeshType, Name: r.Mesh})
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if b.e.cfg.Role == RoleZone {
		return fmt.Errorf("%s %s/%s: %w: mesh %q is not on this zone; meshes are written on global and reach zones by sync: create it on global (type: Mesh, name: %s) and write this again once it has synced",
			r.Type, r.Mesh, r.Name, ErrMeshNotFound, r.Mesh, r.Mesh)
	}
	return fmt.Errorf("%s %s/%s: %w: mesh %q: create it first (type: Mesh, name: %s), then write this again",
		r.Type, r.Mesh, r.Name, ErrMeshNotFound, r.Mesh, r.Mesh)
}

func (b backend) Delete(ctx context.Context, k resource.Key, version string) error {
	return b.e.store.Delete(ctx, k, version)
}

func (b backend) Validate(ctx context.Context, rs []*resource.Resource) error {
	return b.e.validator.Validate(ctx, rs)
}

func (b backend) Plugins() apitypes.PluginsInfo {
	capa := b.e.host.Capacity()
	out := apitypes.PluginsInfo{Buffer: apitypes.BufferInfo{
		Capacity: capa.Total, RegisteredTypes: capa.Types, Window: capa.Window, Headroom: capa.Headroom, Formula: capa.Formula,
	}}
	for _, p := range b.e.host.Plugins() {
		state := apitypes.PluginRunning
		switch p.State {
		case plugin.StateDown:
			state = apitypes.PluginRestarting
		case plugin.StateFailed:
			state = apitypes.PluginFailed
		}
		out.Plugins = append(out.Plugins, apitypes.PluginInfo{
			Name: p.Name, Version: p.Version, Path: p.Path, State: state,
			Required: slices.Contains(b.e.cfg.RequiredPlugins, p.Name),
			Types:    p.Types, Restarts: uint64(p.Restarts), LastError: p.LastError,
		})
	}
	return out
}

// Insights lists the connections' sync state. On a zone, the entry for
// global carries the address the session is on (or was last tried) and the
// dialer's last error, which names that address; the entry exists once the
// zone has tried to connect.
//
// On global, whether a zone is online, and on which replica, comes from the
// session leases when the store is shared by replicas (see zoneStatus).
func (b backend) Insights() []apitypes.Conn {
	cs := b.e.ins.List()
	if b.e.cfg.Role != RoleZone {
		return b.e.zoneStatus(cs)
	}
	st := b.e.globalConn()
	if st.Address == "" {
		return cs
	}
	i := slices.IndexFunc(cs, func(c apitypes.Conn) bool { return c.Name == GlobalPeer })
	if i < 0 {
		cs = append(cs, apitypes.Conn{Name: GlobalPeer, Types: map[string]apitypes.TypeState{}})
		i = len(cs) - 1
	}
	cs[i].Address = st.Address
	if st.LastError != nil {
		cs[i].LastError = st.LastError.Error()
	}
	return cs
}

func (b backend) Ready() error {
	if b.e.cfg.Role == RoleZone {
		b.e.mu.Lock()
		ok := b.e.connected
		b.e.mu.Unlock()
		if !ok {
			// The dialer's error names the address it happened at:
			// "global at ADDR: …".
			st := b.e.globalConn()
			if st.LastError != nil {
				return fmt.Errorf("not connected to %w", st.LastError)
			}
			// A refused attempt never became a session: the refusal is
			// recorded in the insights by the refused-attempt hook.
			if c, _ := b.e.ins.Get(GlobalPeer); c.LastError != "" {
				addr := st.Address
				if addr == "" {
					addr = b.e.cfg.GlobalAddress
				}
				return fmt.Errorf("not connected to global at %s: %s", addr, c.LastError)
			}
			return fmt.Errorf("not connected to global at %s yet", b.e.cfg.GlobalAddress)
		}
	}
	if b.e.host.Registry().Len() == 0 {
		return errors.New("no resource types: no plugin loaded from " + b.e.cfg.PluginsDir)
	}
	if h, ok := b.e.raw.(healthChecker); ok {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := h.Health(ctx); err != nil {
			return fmt.Errorf("store: %w", err)
		}
	}
	return nil
}

// Replica is this global replica's id ("" on a zone).
func (b backend) Replica() string { return b.e.cfg.ReplicaID }

var (
	_ api.ReplicaNamer   = backend{}
	_ api.HoldersBackend = backend{}
	_ api.KeyLister      = backend{}
	_ api.Revisioner     = backend{}
)

// ListKeys reads keys and versions only: no spec is decoded.
func (b backend) ListKeys(ctx context.Context, f api.Filter) ([]resource.Key, error) {
	kvs, err := b.e.store.Versions(ctx, store.Filter{Type: f.Type, Mesh: f.Mesh, Zone: f.Zone})
	if err != nil {
		return nil, err
	}
	keys := make([]resource.Key, len(kvs))
	for i, kv := range kvs {
		keys[i] = kv.Key
	}
	return keys, nil
}

// Revision is the store's latest commit revision.
func (b backend) Revision() uint64 { return b.e.store.Revision() }

// Holders reports, for every zone that ever connected, what it holds of the
// resource key global serves: asked of each live session's server (one
// message each, whatever the number of resources), with the reasons of a
// refused version from the insights.
func (b backend) Holders(ctx context.Context, key resource.Key) (string, []apitypes.Holding, error) {
	cur, err := b.e.store.Get(ctx, key)
	if err != nil {
		return "", nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, holdersTimeout)
	defer cancel()
	name := kdssync.WireName(key.Mesh, key.Name)
	held, err := b.e.server.Held(ctx, key.Type, name)
	if err != nil {
		return "", nil, err
	}
	var out []apitypes.Holding
	for _, c := range b.e.ins.List() {
		h := apitypes.Holding{Zone: c.Name}
		if ph, ok := held[c.Name]; ok && c.Online {
			h.Online = true
			h.Holds, h.Version = ph.Holds, ph.Version
			if ph.Pending {
				h.Pending, h.PendingVersion = true, ph.PendingVersion
			}
			if ph.Rejected {
				h.RejectedVersion = ph.RejectedVersion
				for _, r := range c.Types[key.Type].Rejected {
					if r.Name == name {
						h.RejectedErrors = r.Errors
					}
				}
			}
		}
		out = append(out, h)
	}
	return cur.Version, out, nil
}

// holdersTimeout bounds how long Holders waits for the live sessions.
const holdersTimeout = 5 * time.Second

// healthChecker is implemented by stores backed by a server that may be
// unreachable (pgstore): Health returns nil or why the store cannot serve.
type healthChecker interface {
	Health(ctx context.Context) error
}
