package plugin

import (
	"fmt"
	"slices"
	"strings"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	pluginv1 "github.com/kds-engine/kds-engine/sdk/proto/plugin/v1"
)

// Registry maps type names to their descriptors. It is immutable once built
// and safe for concurrent use. The zero value is an empty registry.
type Registry struct {
	byName map[string]resource.TypeDescriptor
	sorted []resource.TypeDescriptor
}

// Type returns the descriptor of the named type.
func (r *Registry) Type(name string) (resource.TypeDescriptor, bool) {
	if r == nil {
		return resource.TypeDescriptor{}, false
	}
	d, ok := r.byName[name]
	return d, ok
}

// Types returns every descriptor sorted by name. The caller owns the slice.
func (r *Registry) Types() []resource.TypeDescriptor {
	if r == nil {
		return nil
	}
	return slices.Clone(r.sorted)
}

// Len is the number of registered types.
func (r *Registry) Len() int {
	if r == nil {
		return 0
	}
	return len(r.sorted)
}

// NewRegistry builds a registry from each plugin's types (plugin name →
// descriptors): the host builds one from Describe; tests and tools may build
// one directly. Two plugins that claim one type make it fail with both
// names in the error.
func NewRegistry(byPlugin map[string][]resource.TypeDescriptor) (*Registry, error) {
	r := &Registry{byName: map[string]resource.TypeDescriptor{}}
	names := make([]string, 0, len(byPlugin))
	for n := range byPlugin {
		names = append(names, n)
	}
	slices.Sort(names)
	var dups []string
	for _, p := range names {
		for _, d := range byPlugin[p] {
			if prev, ok := r.byName[d.Name]; ok {
				dups = append(dups, fmt.Sprintf("type %s is claimed by plugins %q and %q", d.Name, prev.Plugin, p))
				continue
			}
			r.byName[d.Name] = d
			r.sorted = append(r.sorted, d)
		}
	}
	if len(dups) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrDuplicateType, strings.Join(dups, "; "))
	}
	slices.SortFunc(r.sorted, func(a, b resource.TypeDescriptor) int { return strings.Compare(a.Name, b.Name) })
	return r, nil
}

// descriptorFromProto converts and checks one reported type.
func descriptorFromProto(plugin string, p *pluginv1.TypeDescriptor) (resource.TypeDescriptor, error) {
	d := resource.TypeDescriptor{
		Name:          p.GetName(),
		Description:   p.GetDescription(),
		SchemaVersion: p.GetSchemaVersion(),
		Plugin:        plugin,
	}
	if d.Name == "" {
		return d, fmt.Errorf("a type has no name")
	}
	switch p.GetDirection() {
	case pluginv1.Direction_DIRECTION_GLOBAL_TO_ZONE:
		d.Direction = resource.GlobalToZone
	case pluginv1.Direction_DIRECTION_ZONE_TO_GLOBAL:
		d.Direction = resource.ZoneToGlobal
	default:
		return d, fmt.Errorf("type %s: direction %s", d.Name, p.GetDirection())
	}
	switch p.GetScope() {
	case pluginv1.Scope_SCOPE_GLOBAL:
		d.Scope = resource.ScopeGlobal
	case pluginv1.Scope_SCOPE_MESH:
		d.Scope = resource.ScopeMesh
	default:
		return d, fmt.Errorf("type %s: scope %s", d.Name, p.GetScope())
	}
	if len(p.GetJsonSchema()) > 0 {
		d.Schema = slices.Clone(p.GetJsonSchema())
	}
	return d, nil
}

// Capacity is the per-logical-stream send-buffer size: window messages per
// registered type (a server keeps at most window responses per type in
// flight before their ACKs) plus headroom for requests about types only the
// peer knows.
type Capacity struct {
	Types    int
	Window   int
	Headroom int
	Total    int
	Formula  string // for example "5 types × 3 in flight + 16 headroom = 31"
}

func newCapacity(types, window, headroom int) Capacity {
	total := types*window + headroom
	return Capacity{
		Types:    types,
		Window:   window,
		Headroom: headroom,
		Total:    total,
		Formula:  fmt.Sprintf("%d types × %d in flight + %d headroom = %d", types, window, headroom, total),
	}
}

// String returns the formula.
func (c Capacity) String() string { return c.Formula }
