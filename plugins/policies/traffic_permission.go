package main

import (
	"context"

	"github.com/kds-engine/kds-engine/sdk"
)

// MeshTrafficPermissionSpec allows or denies traffic to the proxies its
// TargetRef selects, following Kuma's MeshTrafficPermission (v1alpha1):
// by client identity in rules, or by client selector in the older from.
type MeshTrafficPermissionSpec struct {
	// TargetRef selects the proxies; left out, it means the whole mesh.
	TargetRef *TargetRef               `json:"targetRef,omitempty"`
	From      *[]TrafficPermissionFrom `json:"from,omitempty"`
	Rules     *[]TrafficPermissionRule `json:"rules,omitempty"`
}

// TrafficPermissionFrom is the action for the clients TargetRef selects.
type TrafficPermissionFrom struct {
	TargetRef TargetRef            `json:"targetRef,omitempty"`
	Default   TrafficPermissionAct `json:"default,omitempty"`
}

// TrafficPermissionAct holds the action.
type TrafficPermissionAct struct {
	Action *string `json:"action,omitempty" jsonschema:"enum=Allow,enum=Deny,enum=AllowWithShadowDeny"`
}

// TrafficPermissionRule lists the clients that are denied, allowed, or
// allowed while logging what a deny would do.
type TrafficPermissionRule struct {
	Default TrafficPermissionRuleConf `json:"default,omitempty"`
}

// TrafficPermissionRuleConf holds the client matches of each action.
type TrafficPermissionRuleConf struct {
	Deny                *[]Match `json:"deny,omitempty"`
	AllowWithShadowDeny *[]Match `json:"allowWithShadowDeny,omitempty"`
	Allow               *[]Match `json:"allow,omitempty"`
}

var meshTrafficPermissionType = sdk.Define(sdk.TypeSpec[MeshTrafficPermissionSpec]{
	Name:          "MeshTrafficPermission",
	Direction:     sdk.GlobalToZone,
	Scope:         sdk.ScopeMesh,
	Description:   "Allows or denies traffic between services (Kuma's MeshTrafficPermission).",
	SchemaVersion: 2,
	Validate:      validateMeshTrafficPermission,
})

func validateMeshTrafficPermission(_ context.Context, _ sdk.Meta, s *MeshTrafficPermissionSpec) sdk.ErrorList {
	var errs sdk.ErrorList
	spec := sdk.Field("spec")
	from, rules := deref(s.From), deref(s.Rules)
	if s.TargetRef != nil {
		validateTargetRef(&errs, spec.Child("targetRef"), *s.TargetRef, targetOpts{
			kinds:         []string{KindMesh, KindMeshSubset, KindMeshService, KindMeshServiceSubset, KindDataplane},
			inboundPolicy: len(from) > 0 || len(rules) > 0,
		})
	}
	if len(from) > 0 && len(rules) > 0 {
		errs.Add(spec, "from must be empty when rules is set")
	}
	if len(from) == 0 && len(rules) == 0 {
		errs.Add(spec, "set at least one of from or rules")
	}
	for i, r := range rules {
		p := spec.Child("rules").Index(i)
		d := r.Default
		if len(deref(d.Deny)) == 0 && len(deref(d.Allow)) == 0 && len(deref(d.AllowWithShadowDeny)) == 0 {
			errs.Add(p, "set at least one of allow, allowWithShadowDeny or deny")
		}
		for _, l := range []struct {
			name string
			ms   []Match
		}{{"allow", deref(d.Allow)}, {"allowWithShadowDeny", deref(d.AllowWithShadowDeny)}, {"deny", deref(d.Deny)}} {
			for j, m := range l.ms {
				checkMatch(&errs, p.Child(l.name).Index(j), m)
			}
		}
	}
	for i, f := range from {
		p := spec.Child("from").Index(i)
		validateTargetRef(&errs, p.Child("targetRef"), f.TargetRef, targetOpts{
			kinds: []string{KindMesh, KindMeshSubset, KindMeshService, KindMeshServiceSubset},
		})
		ap := p.Child("default").Child("action")
		switch a := deref(f.Default.Action); a {
		case "Allow", "Deny", "AllowWithShadowDeny":
		case "":
			errs.Add(ap, "must be set")
		default:
			errs.Invalid(ap, a, "want Allow, Deny or AllowWithShadowDeny")
		}
	}
	return errs
}
