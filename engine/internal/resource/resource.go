// Package resource is the engine's model of a synced resource and of a type
// descriptor, shared by the store, the plugin host, the sync layer and the
// admin API. It converts to and from the wire envelope (kdsv1.Resource).
//
// Values of these types are plain data: not safe for concurrent mutation;
// callers that hand a *Resource to another component stop mutating it.
package resource

import (
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// Direction says which side writes a type and which receives it.
type Direction int

const (
	// GlobalToZone types are written on global and read-only on zones.
	GlobalToZone Direction = iota + 1
	// ZoneToGlobal types are written on a zone and read-only on global.
	ZoneToGlobal
)

func (d Direction) String() string {
	switch d {
	case GlobalToZone:
		return "GlobalToZone"
	case ZoneToGlobal:
		return "ZoneToGlobal"
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

// Scope says whether resources of a type belong to a mesh.
type Scope int

const (
	// ScopeGlobal resources have no mesh.
	ScopeGlobal Scope = iota + 1
	// ScopeMesh resources belong to exactly one mesh.
	ScopeMesh
)

func (s Scope) String() string {
	switch s {
	case ScopeGlobal:
		return "Global"
	case ScopeMesh:
		return "Mesh"
	}
	return fmt.Sprintf("Scope(%d)", int(s))
}

// TypeDescriptor describes one resource type, as reported by its plugin.
type TypeDescriptor struct {
	Name          string
	Direction     Direction
	Scope         Scope
	Schema        json.RawMessage // JSON Schema of the spec; nil means none
	Description   string
	SchemaVersion uint32
	Plugin        string // name of the plugin that supplies the type
}

// Key identifies a resource in a store. Zone is empty except for
// zone-provided resources held on global.
type Key struct {
	Type string
	Mesh string
	Zone string
	Name string
}

func (k Key) String() string {
	var b strings.Builder
	b.WriteString(k.Type)
	b.WriteString(" ")
	if k.Zone != "" {
		b.WriteString(k.Zone)
		b.WriteString("/")
	}
	if k.Mesh != "" {
		b.WriteString(k.Mesh)
		b.WriteString("/")
	}
	b.WriteString(k.Name)
	return b.String()
}

// Resource is an envelope plus a JSON spec the type's plugin understands.
type Resource struct {
	Type             string            `json:"type"`
	Mesh             string            `json:"mesh,omitempty"`
	Name             string            `json:"name"`
	Labels           map[string]string `json:"labels,omitempty"`
	Spec             json.RawMessage   `json:"spec,omitempty"`
	Version          string            `json:"version,omitempty"`
	CreationTime     time.Time         `json:"creationTime,omitzero"`
	ModificationTime time.Time         `json:"modificationTime,omitzero"`
	Zone             string            `json:"zone,omitempty"`
}

// Key returns the resource's identity.
func (r *Resource) Key() Key {
	return Key{Type: r.Type, Mesh: r.Mesh, Zone: r.Zone, Name: r.Name}
}

// Clone returns a deep copy.
func (r *Resource) Clone() *Resource {
	c := *r
	c.Labels = maps.Clone(r.Labels)
	if r.Spec != nil {
		c.Spec = append(json.RawMessage(nil), r.Spec...)
	}
	return &c
}

// ToProto converts r to its wire envelope.
func (r *Resource) ToProto() *kdsv1.Resource {
	p := &kdsv1.Resource{
		Type:    r.Type,
		Mesh:    r.Mesh,
		Name:    r.Name,
		Labels:  r.Labels,
		Spec:    r.Spec,
		Version: r.Version,
		Zone:    r.Zone,
	}
	if !r.CreationTime.IsZero() {
		p.CreationTime = timestamppb.New(r.CreationTime)
	}
	if !r.ModificationTime.IsZero() {
		p.ModificationTime = timestamppb.New(r.ModificationTime)
	}
	return p
}

// FromProto converts a wire envelope to a Resource.
func FromProto(p *kdsv1.Resource) *Resource {
	r := &Resource{
		Type:    p.GetType(),
		Mesh:    p.GetMesh(),
		Name:    p.GetName(),
		Labels:  p.GetLabels(),
		Spec:    p.GetSpec(),
		Version: p.GetVersion(),
		Zone:    p.GetZone(),
	}
	if p.GetCreationTime() != nil {
		r.CreationTime = p.GetCreationTime().AsTime()
	}
	if p.GetModificationTime() != nil {
		r.ModificationTime = p.GetModificationTime().AsTime()
	}
	return r
}
