package main

import (
	"bytes"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/invopop/jsonschema"

	"github.com/kds-engine/kds-engine/sdk"
)

// Kinds a targetRef can name.
const (
	KindMesh                 = "Mesh"
	KindDataplane            = "Dataplane"
	KindMeshSubset           = "MeshSubset"
	KindMeshGateway          = "MeshGateway"
	KindMeshService          = "MeshService"
	KindMeshExternalService  = "MeshExternalService"
	KindMeshMultiZoneService = "MeshMultiZoneService"
	KindMeshServiceSubset    = "MeshServiceSubset"
	KindMeshHTTPRoute        = "MeshHTTPRoute"
)

// PolicyRoleLabel, when set, restricts the kinds a policy's top-level
// targetRef may name; unset means the policy is a system policy.
const PolicyRoleLabel = "kuma.io/policy-role"

// TargetRef selects the proxies (top level, from) or the destinations (to)
// a policy applies to.
type TargetRef struct {
	Kind        string             `json:"kind,omitempty"`
	Name        *string            `json:"name,omitempty"`
	Tags        *map[string]string `json:"tags,omitempty"`
	Mesh        *string            `json:"mesh,omitempty"`
	ProxyTypes  *[]string          `json:"proxyTypes,omitempty"`
	Namespace   *string            `json:"namespace,omitempty"`
	Labels      *map[string]string `json:"labels,omitempty"`
	SectionName *string            `json:"sectionName,omitempty"`
}

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

// Match selects traffic by the client's identity or the requested name
// (rules[].matches).
type Match struct {
	SpiffeID *SpiffeIDMatch `json:"spiffeID,omitempty"`
	SNI      *SNIMatch      `json:"sni,omitempty"`
}

// SpiffeIDMatch matches the client's SPIFFE ID exactly or by prefix.
type SpiffeIDMatch struct {
	Type  string `json:"type,omitempty"`
	Value string `json:"value,omitempty"`
}

// SNIMatch matches the server name the client asked for.
type SNIMatch struct {
	Type  string `json:"type,omitempty"`
	Value string `json:"value,omitempty"`
}

// HeaderMatch matches an HTTP header.
type HeaderMatch struct {
	Type  *string `json:"type,omitempty"`
	Name  string  `json:"name,omitempty"`
	Value string  `json:"value,omitempty"`
}

// targetOpts says which kinds a targetRef may name and how strictly.
type targetOpts struct {
	kinds         []string
	gatewayTags   bool // MeshGateway may carry listener tags
	inboundPolicy bool // the policy affects inbounds (from or rules), so sectionName is allowed on Dataplane
}

var (
	resourceNameRE = regexp.MustCompile(`^[0-9a-z.\-_]*$`)
	tagNameRE      = regexp.MustCompile(`^[a-zA-Z0-9.\-_:/]*$`)
	tagValueRE     = regexp.MustCompile(`^[a-zA-Z0-9.\-_:]*$`)
	selectorRE     = regexp.MustCompile(`^([a-zA-Z0-9.\-_:/]*|\*)$`)
	dns1123RE      = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// validateTargetRef checks ref at p against o, with the field paths Kuma
// uses: problems with one attribute at p.<attribute>, problems with the
// combination at p itself.
func validateTargetRef(errs *sdk.ErrorList, p sdk.Path, ref TargetRef, o targetOpts) {
	if ref.Kind == "" {
		errs.Add(p.Child("kind"), "must be set")
		return
	}
	if !slices.Contains(o.kinds, ref.Kind) {
		errs.Add(p.Child("kind"), "kind %s is not allowed here; use one of %s", ref.Kind, strings.Join(o.kinds, ", "))
		return
	}
	name, labels, tags := deref(ref.Name), deref(ref.Labels), deref(ref.Tags)
	forbid := func(field string, set bool) {
		if set {
			errs.Add(p.Child(field), "must not be set when kind is %s", ref.Kind)
		}
	}
	checkName := func() {
		if !resourceNameRE.MatchString(name) {
			errs.Add(p.Child("name"), "invalid name %q: use lower case letters, digits, '-', '.' and '_'", name)
		}
	}
	nameOrLabels := func(labelsMsg string) {
		if len(labels) == 0 && name == "" {
			errs.Add(p, "set name or labels when kind is %s", ref.Kind)
		}
		if len(labels) > 0 && (name != "" || deref(ref.Namespace) != "") {
			errs.Add(p.Child("labels"), "%s", labelsMsg)
		}
	}
	switch ref.Kind {
	case KindMesh:
		if name != "" {
			errs.Add(p.Child("name"), "must not be set when kind is Mesh (the policy's mesh is implied)")
		}
		forbid("mesh", deref(ref.Mesh) != "")
		forbid("tags", len(tags) > 0)
		forbid("labels", len(labels) > 0)
		forbid("namespace", deref(ref.Namespace) != "")
		forbid("sectionName", deref(ref.SectionName) != "")
		checkProxyTypes(errs, p.Child("proxyTypes"), ref.ProxyTypes)
	case KindDataplane:
		forbid("tags", len(tags) > 0)
		forbid("mesh", deref(ref.Mesh) != "")
		forbid("proxyTypes", len(deref(ref.ProxyTypes)) > 0)
		if len(labels) > 0 && (name != "" || deref(ref.Namespace) != "") {
			errs.Add(p.Child("labels"), "set either labels, or name (and namespace), not both")
		}
		if !o.inboundPolicy && deref(ref.SectionName) != "" {
			errs.Add(p.Child("sectionName"), "is only allowed in policies that configure inbound traffic (from or rules)")
		}
	case KindMeshSubset:
		forbid("name", name != "")
		forbid("mesh", deref(ref.Mesh) != "")
		checkTags(errs, p.Child("tags"), tags, tagValueRE, "letters, digits, '.', '-', '_' and ':'")
		forbid("labels", len(labels) > 0)
		forbid("namespace", deref(ref.Namespace) != "")
		forbid("sectionName", deref(ref.SectionName) != "")
		checkProxyTypes(errs, p.Child("proxyTypes"), ref.ProxyTypes)
	case KindMeshService:
		checkName()
		forbid("mesh", deref(ref.Mesh) != "")
		forbid("tags", len(tags) > 0)
		forbid("proxyTypes", len(deref(ref.ProxyTypes)) > 0)
		nameOrLabels("set either labels, or name (and namespace), not both")
	case KindMeshHTTPRoute:
		checkName()
		forbid("mesh", deref(ref.Mesh) != "")
		forbid("tags", len(tags) > 0)
		forbid("proxyTypes", len(deref(ref.ProxyTypes)) > 0)
		forbid("sectionName", deref(ref.SectionName) != "")
		nameOrLabels("set either labels, or name (and namespace), not both")
	case KindMeshServiceSubset, KindMeshGateway:
		if name == "" {
			errs.Add(p.Child("name"), "must be set when kind is %s", ref.Kind)
		}
		checkName()
		forbid("mesh", deref(ref.Mesh) != "")
		forbid("proxyTypes", len(deref(ref.ProxyTypes)) > 0)
		checkTags(errs, p.Child("tags"), tags, selectorRE, `letters, digits, '.', '-', '_', ':' and '/', or "*"`)
		if ref.Kind == KindMeshGateway && !o.gatewayTags {
			forbid("tags", len(tags) > 0)
		}
		forbid("labels", len(labels) > 0)
		forbid("namespace", deref(ref.Namespace) != "")
		forbid("sectionName", deref(ref.SectionName) != "")
	case KindMeshExternalService, KindMeshMultiZoneService:
		checkName()
		forbid("mesh", deref(ref.Mesh) != "")
		forbid("tags", len(tags) > 0)
		forbid("proxyTypes", len(deref(ref.ProxyTypes)) > 0)
		nameOrLabels("set either labels or name, not both")
		if ref.Kind == KindMeshExternalService {
			forbid("sectionName", deref(ref.SectionName) != "")
		}
	}
}

func checkProxyTypes(errs *sdk.ErrorList, p sdk.Path, pts *[]string) {
	if pts == nil {
		return
	}
	if len(*pts) == 0 {
		errs.Add(p, "leave it out or list at least one proxy type")
	}
	for i, t := range *pts {
		if t != "Sidecar" && t != "Gateway" {
			errs.Invalid(p.Index(i), t, "want Sidecar or Gateway")
		}
	}
}

// checkTags checks tag names and values; values must match valueRE.
func checkTags(errs *sdk.ErrorList, p sdk.Path, tags map[string]string, valueRE *regexp.Regexp, valueChars string) {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if k == "" {
			errs.Add(p, "tag names must not be empty")
		}
		if !tagNameRE.MatchString(k) {
			errs.Add(p.Key(k), "tag names are letters, digits, '.', '-', '_', ':' and '/'")
		}
		v := tags[k]
		if v == "" {
			errs.Add(p.Key(k), "tag values must not be empty")
		} else if !valueRE.MatchString(v) {
			errs.Add(p.Key(k), "tag values are %s", valueChars)
		}
	}
}

// includesGateways reports whether a top-level targetRef can select
// gateway proxies.
func includesGateways(ref TargetRef) bool {
	switch ref.Kind {
	case KindMeshGateway, KindMeshHTTPRoute:
		return true
	case KindMesh, KindMeshSubset:
		pts := deref(ref.ProxyTypes)
		return len(pts) == 0 || slices.Contains(pts, "Gateway")
	}
	return false
}

// topRef returns the top-level targetRef, Mesh when it is left out.
func topRef(ref *TargetRef) TargetRef {
	if ref == nil {
		return TargetRef{Kind: KindMesh}
	}
	return *ref
}

// systemRole reports whether meta describes a system policy (no
// kuma.io/policy-role label), which may target more kinds.
func systemRole(meta sdk.Meta) bool { return meta.Labels[PolicyRoleLabel] == "" }

// validateMatches checks rules[].matches at p and reports whether any
// match names a SPIFFE ID.
func validateMatches(errs *sdk.ErrorList, p sdk.Path, matches []Match) (spiffe bool) {
	for i, m := range matches {
		mp := p.Index(i)
		checkMatch(errs, mp, m)
		if m.SpiffeID == nil && m.SNI == nil {
			errs.Add(mp, "set spiffeID or sni")
			continue
		}
		if m.SpiffeID != nil {
			spiffe = true
			switch m.SpiffeID.Type {
			case "Exact", "Prefix":
			case "":
				errs.Add(mp.Child("spiffeID").Child("type"), "must be set")
			default:
				errs.Invalid(mp.Child("spiffeID").Child("type"), m.SpiffeID.Type, "want Exact or Prefix")
			}
		}
	}
	return spiffe
}

// checkMatch checks the values of one match (the shape is checked by the
// caller).
func checkMatch(errs *sdk.ErrorList, p sdk.Path, m Match) {
	if m.SpiffeID != nil {
		if err := checkSpiffeID(m.SpiffeID.Value); err != "" {
			errs.Add(p.Child("spiffeID"), "not a SPIFFE ID: %s", err)
		}
	}
	if m.SNI != nil {
		switch m.SNI.Type {
		case "Exact":
		case "":
			errs.Add(p.Child("sni.type"), "must be set")
		default:
			errs.Invalid(p.Child("sni.type"), m.SNI.Type, "want Exact")
		}
		switch {
		case m.SNI.Value == "":
			errs.Add(p.Child("sni.value"), "must be set")
		case len(m.SNI.Value) > 253 || !dns1123RE.MatchString(m.SNI.Value):
			errs.Invalid(p.Child("sni.value"), m.SNI.Value, "want a DNS name: lower case letters, digits, '-' and '.', at most 253 characters")
		}
	}
}

// checkSpiffeID returns why s is not a SPIFFE ID, or "".
func checkSpiffeID(s string) string {
	const scheme = "spiffe://"
	if !strings.HasPrefix(s, scheme) {
		return `must start with "spiffe://"`
	}
	rest := s[len(scheme):]
	td, path, _ := strings.Cut(rest, "/")
	if td == "" {
		return "trust domain is missing"
	}
	for _, c := range td {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return "trust domain may contain only lower case letters, digits, '.', '-' and '_'"
		}
	}
	if path == "" {
		if strings.HasSuffix(rest, "/") {
			return "path must not end with /"
		}
		return ""
	}
	for _, seg := range strings.Split(path, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "path segments must not be empty, . or .."
		}
		for _, c := range seg {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
				return "path may contain only letters, digits, '.', '-' and '_'"
			}
		}
	}
	return ""
}

// Duration is a duration such as "5s" or "1m30s" (Go syntax, as Kubernetes'
// metav1.Duration).
type Duration string

// parseDuration parses d at p; ok is false (and an error added) when d is
// not a duration.
func parseDuration(errs *sdk.ErrorList, p sdk.Path, d *Duration) (time.Duration, bool) {
	if d == nil {
		return 0, false
	}
	v, err := time.ParseDuration(string(*d))
	if err != nil {
		errs.Invalid(p, string(*d), `not a duration (want for example "5s" or "1m30s")`)
		return 0, false
	}
	return v, true
}

// positive requires d (when set) to be > 0.
func positive(errs *sdk.ErrorList, p sdk.Path, d *Duration) {
	if v, ok := parseDuration(errs, p, d); ok && v <= 0 {
		errs.Invalid(p, string(*d), "must be greater than zero")
	}
}

// notNegative requires d (when set) to be >= 0.
func notNegative(errs *sdk.ErrorList, p sdk.Path, d *Duration) {
	if v, ok := parseDuration(errs, p, d); ok && v < 0 {
		errs.Invalid(p, string(*d), "must not be negative")
	}
}

// Renamed is a field kds-engine used to accept under a name Kuma does not
// use. Any value in it is refused with a message naming the new field.
type Renamed struct{ set bool }

// UnmarshalJSON accepts any value; the validator reports the field.
func (r *Renamed) UnmarshalJSON([]byte) error { r.set = true; return nil }

// JSONSchema lets any value through the schema step so the plugin can
// name the replacement.
func (Renamed) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{Description: "Renamed; refused with a message naming the new field."}
}

func renamed(errs *sdk.ErrorList, p sdk.Path, r *Renamed, now string) {
	if r != nil {
		errs.Add(p, "this field was renamed: use %s (Kuma's name for it)", now)
	}
}

func checkPort(errs *sdk.ErrorList, p sdk.Path, port uint32) {
	if port < 1 || port > 65535 {
		errs.Invalid(p, port, "port must be between 1 and 65535")
	}
}

func validURLPath(s string) bool {
	_, err := url.ParseRequestURI(s)
	return err == nil
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
