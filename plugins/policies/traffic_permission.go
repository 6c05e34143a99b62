package main

import (
	"context"

	"github.com/kds-engine/kds-engine/sdk"
)

// MeshTrafficPermissionSpec allows or denies traffic from clients to the
// proxies selected by TargetRef.
type MeshTrafficPermissionSpec struct {
	TargetRef TargetRef           `json:"targetRef"`
	From      []TrafficPermission `json:"from"`
}

// TrafficPermission is the action for clients selected by TargetRef.
type TrafficPermission struct {
	TargetRef TargetRef            `json:"targetRef"`
	Default   TrafficPermissionAct `json:"default"`
}

// TrafficPermissionAct holds the action.
type TrafficPermissionAct struct {
	Action string `json:"action" jsonschema:"enum=Allow,enum=Deny,enum=AllowWithShadowDeny"`
}

var meshTrafficPermissionType = sdk.Define(sdk.TypeSpec[MeshTrafficPermissionSpec]{
	Name:          "MeshTrafficPermission",
	Direction:     sdk.GlobalToZone,
	Scope:         sdk.ScopeMesh,
	Description:   "Allows or denies traffic between services.",
	SchemaVersion: 1,
	Validate:      validateMeshTrafficPermission,
})

func validateMeshTrafficPermission(_ context.Context, _ sdk.Meta, s *MeshTrafficPermissionSpec) sdk.ErrorList {
	var errs sdk.ErrorList
	spec := sdk.Field("spec")
	validateTargetRef(&errs, spec.Child("targetRef"), s.TargetRef, "Mesh", "MeshSubset", "MeshService", "MeshServiceSubset")
	if len(s.From) == 0 {
		errs.Add(spec.Child("from"), "needs at least one entry")
	}
	for i, f := range s.From {
		p := spec.Child("from").Index(i)
		validateTargetRef(&errs, p.Child("targetRef"), f.TargetRef, "Mesh", "MeshSubset", "MeshService", "MeshServiceSubset")
		switch f.Default.Action {
		case "Allow", "Deny", "AllowWithShadowDeny":
		case "":
			errs.Required(p.Child("default").Child("action"))
		default:
			errs.Invalid(p.Child("default").Child("action"), f.Default.Action, "want Allow, Deny or AllowWithShadowDeny")
		}
	}
	return errs
}
