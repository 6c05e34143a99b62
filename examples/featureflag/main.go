// Command kds-plugin-featureflag is an example third-party kds-engine
// plugin. It supplies one type, FeatureFlag: mesh-scoped, written on global
// and synced to every zone. It imports only the kds-engine sdk package.
package main

import (
	"context"
	"time"

	"github.com/kds-engine/kds-engine/sdk"
)

// FeatureFlagSpec is the spec of a FeatureFlag.
type FeatureFlagSpec struct {
	// Description says what the flag switches, for people.
	Description string `json:"description,omitempty" jsonschema:"maxLength=1024"`
	// Enabled turns the flag on.
	Enabled bool `json:"enabled"`
	// Rollout limits an enabled flag to a share of users.
	Rollout *Rollout `json:"rollout,omitempty"`
	// Variants split the users who see the flag; weights add up to 100.
	Variants []Variant `json:"variants,omitempty"`
	// Expires is when the flag should be removed (RFC 3339).
	Expires string `json:"expires,omitempty"`
}

// Rollout is a percentage of users, chosen by Stickiness.
type Rollout struct {
	Percentage int    `json:"percentage" jsonschema:"minimum=0,maximum=100"`
	Stickiness string `json:"stickiness,omitempty" jsonschema:"enum=user,enum=session,enum=random"`
}

// Variant is one arm of an experiment.
type Variant struct {
	Name   string `json:"name"`
	Weight int    `json:"weight"`
}

var featureFlag = sdk.Define(sdk.TypeSpec[FeatureFlagSpec]{
	Name:          "FeatureFlag",
	Direction:     sdk.GlobalToZone,
	Scope:         sdk.ScopeMesh,
	Description:   "A feature flag that every zone's services read.",
	SchemaVersion: 1,
	Validate:      validate,
})

func validate(_ context.Context, _ sdk.Meta, s *FeatureFlagSpec) sdk.ErrorList {
	var errs sdk.ErrorList
	spec := sdk.Field("spec")
	if r := s.Rollout; r != nil {
		if r.Percentage < 0 || r.Percentage > 100 {
			errs.Invalid(spec.Child("rollout").Child("percentage"), r.Percentage, "must be between 0 and 100")
		}
		if !s.Enabled {
			errs.Add(spec.Child("rollout"), "is set but the flag is not enabled")
		}
	}
	if len(s.Variants) > 0 {
		names := map[string]bool{}
		sum := 0
		for i, v := range s.Variants {
			p := spec.Child("variants").Index(i)
			switch {
			case v.Name == "":
				errs.Required(p.Child("name"))
			case names[v.Name]:
				errs.Invalid(p.Child("name"), v.Name, "duplicate variant name")
			}
			names[v.Name] = true
			if v.Weight < 0 {
				errs.Invalid(p.Child("weight"), v.Weight, "must not be negative")
			}
			sum += v.Weight
		}
		if sum != 100 {
			errs.Add(spec.Child("variants"), "weights add up to %d, not 100", sum)
		}
	}
	if s.Expires != "" {
		if _, err := time.Parse(time.RFC3339, s.Expires); err != nil {
			errs.Invalid(spec.Child("expires"), s.Expires, "not an RFC 3339 time such as 2027-01-31T00:00:00Z")
		}
	}
	return errs
}

func plugin() sdk.Plugin {
	return sdk.Plugin{Name: "featureflag", Version: "0.1.0", Types: []sdk.Type{featureFlag}}
}

func main() { sdk.Serve(plugin()) }
