package main

import (
	"slices"
	"strings"
	"time"

	"github.com/kds-engine/kds-engine/sdk"
)

// TargetRef selects the proxies or destinations a policy applies to.
type TargetRef struct {
	Kind string            `json:"kind" jsonschema:"enum=Mesh,enum=MeshSubset,enum=MeshService,enum=MeshServiceSubset,enum=MeshGateway,enum=MeshHTTPRoute"`
	Name string            `json:"name,omitempty"`
	Tags map[string]string `json:"tags,omitempty"`
}

// Kinds of targetRef, and which need a name or tags.
var targetKinds = map[string]struct{ name, tags bool }{
	"Mesh":              {},
	"MeshSubset":        {tags: true},
	"MeshService":       {name: true},
	"MeshServiceSubset": {name: true, tags: true},
	"MeshGateway":       {name: true},
	"MeshHTTPRoute":     {name: true},
}

// validateTargetRef checks ref at p; allowed limits the kinds (nil: any).
func validateTargetRef(errs *sdk.ErrorList, p sdk.Path, ref TargetRef, allowed ...string) {
	rule, known := targetKinds[ref.Kind]
	switch {
	case ref.Kind == "":
		errs.Required(p.Child("kind"))
		return
	case !known:
		errs.Invalid(p.Child("kind"), ref.Kind, "unknown kind, want one of "+strings.Join(sortedKinds(), ", "))
		return
	case len(allowed) > 0 && !slices.Contains(allowed, ref.Kind):
		errs.Invalid(p.Child("kind"), ref.Kind, "not allowed here, want one of "+strings.Join(allowed, ", "))
		return
	}
	if rule.name && ref.Name == "" {
		errs.Add(p.Child("name"), "is required for kind %s", ref.Kind)
	}
	if !rule.name && ref.Name != "" {
		errs.Add(p.Child("name"), "must not be set for kind %s", ref.Kind)
	}
	if rule.tags && len(ref.Tags) == 0 {
		errs.Add(p.Child("tags"), "is required for kind %s", ref.Kind)
	}
	if !rule.tags && len(ref.Tags) > 0 {
		errs.Add(p.Child("tags"), "must not be set for kind %s", ref.Kind)
	}
	for k := range ref.Tags {
		if k == "" {
			errs.Add(p.Child("tags"), "tag names must not be empty")
		}
	}
}

func sortedKinds() []string {
	ks := make([]string, 0, len(targetKinds))
	for k := range targetKinds {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// Duration is a Go duration string such as "5s" or "1m30s".
type Duration string

// parsePositive parses d at p, requiring it to be > 0. Empty means unset and
// returns 0 without error.
func parsePositive(errs *sdk.ErrorList, p sdk.Path, d Duration) time.Duration {
	if d == "" {
		return 0
	}
	v, err := time.ParseDuration(string(d))
	if err != nil {
		errs.Invalid(p, string(d), "not a duration (want for example \"5s\" or \"1m30s\")")
		return 0
	}
	if v <= 0 {
		errs.Invalid(p, string(d), "must be positive")
		return 0
	}
	return v
}

func checkPort(errs *sdk.ErrorList, p sdk.Path, port int) {
	if port < 1 || port > 65535 {
		errs.Invalid(p, port, "port must be between 1 and 65535")
	}
}
