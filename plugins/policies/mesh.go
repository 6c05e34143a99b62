package main

import (
	"context"

	"github.com/kds-engine/kds-engine/sdk"
)

// MeshSpec is the spec of a Mesh: mTLS and metrics settings.
type MeshSpec struct {
	MTLS    *MeshMTLS    `json:"mtls,omitempty"`
	Metrics *MeshMetrics `json:"metrics,omitempty"`
}

// MeshMTLS lists certificate authority backends and which one is enabled.
type MeshMTLS struct {
	EnabledBackend string        `json:"enabledBackend,omitempty"`
	Backends       []MeshBackend `json:"backends,omitempty"`
}

// MeshBackend is one certificate authority.
type MeshBackend struct {
	Name string `json:"name"`
	Type string `json:"type" jsonschema:"enum=builtin,enum=provided"`
}

// MeshMetrics exposes Prometheus metrics on every dataplane.
type MeshMetrics struct {
	Port int    `json:"port"`
	Path string `json:"path,omitempty"`
}

var meshType = sdk.Define(sdk.TypeSpec[MeshSpec]{
	Name:          "Mesh",
	Direction:     sdk.GlobalToZone,
	Scope:         sdk.ScopeGlobal,
	Description:   "A service mesh: a group of dataplanes sharing mTLS and policies.",
	SchemaVersion: 1,
	Validate:      validateMesh,
})

func validateMesh(_ context.Context, _ sdk.Meta, s *MeshSpec) sdk.ErrorList {
	var errs sdk.ErrorList
	spec := sdk.Field("spec")
	if m := s.MTLS; m != nil {
		p := spec.Child("mtls")
		seen := map[string]bool{}
		for i, b := range m.Backends {
			bp := p.Child("backends").Index(i)
			if b.Name == "" {
				errs.Required(bp.Child("name"))
			} else if seen[b.Name] {
				errs.Invalid(bp.Child("name"), b.Name, "duplicate backend name")
			}
			seen[b.Name] = true
			if b.Type != "builtin" && b.Type != "provided" {
				errs.Invalid(bp.Child("type"), b.Type, `want "builtin" or "provided"`)
			}
		}
		if m.EnabledBackend != "" && !seen[m.EnabledBackend] {
			errs.Invalid(p.Child("enabledBackend"), m.EnabledBackend, "no backend with this name")
		}
	}
	if m := s.Metrics; m != nil {
		checkPort(&errs, spec.Child("metrics").Child("port"), m.Port)
		if m.Path != "" && m.Path[0] != '/' {
			errs.Invalid(spec.Child("metrics").Child("path"), m.Path, "must start with /")
		}
	}
	return errs
}
