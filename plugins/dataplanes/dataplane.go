package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/invopop/jsonschema"

	"github.com/kds-engine/kds-engine/sdk"
)

// Tags with a meaning of their own.
const (
	ServiceTag  = "kuma.io/service"
	ProtocolTag = "kuma.io/protocol"
)

// DataplaneSpec is a proxy next to a workload, following Kuma's Dataplane
// (dataplane.proto). Kuma's universal documents write these fields at the
// top level of the document (type: Dataplane, mesh, name, networking: ...);
// kds-engine keeps them in spec and converts between the two forms.
type DataplaneSpec struct {
	Networking *Networking     `json:"networking,omitempty"`
	Metrics    *MetricsBackend `json:"metrics,omitempty"`
	Probes     *Probes         `json:"probes,omitempty"`
}

// Networking holds the addresses and listeners of a dataplane.
type Networking struct {
	Address             string               `json:"address,omitempty"`
	AdvertisedAddress   string               `json:"advertisedAddress,omitempty"`
	Inbound             []Inbound            `json:"inbound,omitempty"`
	Outbound            []Outbound           `json:"outbound,omitempty"`
	Gateway             *Gateway             `json:"gateway,omitempty"`
	TransparentProxying *TransparentProxying `json:"transparentProxying,omitempty"`
	Admin               *AdminPort           `json:"admin,omitempty"`
	Listeners           []Listener           `json:"listeners,omitempty"`
}

// Tags are a proxy's tags. A null value reads as empty, as in Kuma, so the
// validator reports it at the tag ("tag values must not be empty").
type Tags map[string]string

// UnmarshalJSON reads an object of strings, null values as "".
func (t *Tags) UnmarshalJSON(b []byte) error {
	var m map[string]*string
	if err := json.Unmarshal(b, &m); err != nil {
		return errors.New("must be an object of strings")
	}
	*t = make(Tags, len(m))
	for k, v := range m {
		if v != nil {
			(*t)[k] = *v
		} else {
			(*t)[k] = ""
		}
	}
	return nil
}

// JSONSchema allows string or null values.
func (Tags) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{Type: "object", AdditionalProperties: &jsonschema.Schema{Type: "", OneOf: []*jsonschema.Schema{{Type: "string"}, {Type: "null"}}}}
}

// Inbound is one port the dataplane serves for its workload.
type Inbound struct {
	Port           uint32 `json:"port,omitempty"`
	ServicePort    uint32 `json:"servicePort,omitempty"`
	ServiceAddress string `json:"serviceAddress,omitempty"`
	Address        string `json:"address,omitempty"`
	Tags           Tags   `json:"tags,omitempty"`
	Health         *struct {
		Ready bool `json:"ready,omitempty"`
	} `json:"health,omitempty"`
	ServiceProbe *ServiceProbe `json:"serviceProbe,omitempty"`
	State        any           `json:"state,omitempty"`
	Name         string        `json:"name,omitempty"`
	Protocol     string        `json:"protocol,omitempty"`
}

// ServiceProbe is the active health check of an inbound.
type ServiceProbe struct {
	Interval           *string   `json:"interval,omitempty"`
	Timeout            *string   `json:"timeout,omitempty"`
	UnhealthyThreshold *uint32   `json:"unhealthyThreshold,omitempty"`
	HealthyThreshold   *uint32   `json:"healthyThreshold,omitempty"`
	TCP                *struct{} `json:"tcp,omitempty"`
}

// Outbound is one destination the dataplane's workload reaches.
type Outbound struct {
	Address    string      `json:"address,omitempty"`
	Port       uint32      `json:"port,omitempty"`
	Tags       Tags        `json:"tags,omitempty"`
	BackendRef *BackendRef `json:"backendRef,omitempty"`
}

// BackendRef names the service an outbound reaches.
type BackendRef struct {
	Kind   string            `json:"kind,omitempty"`
	Name   string            `json:"name,omitempty"`
	Port   uint32            `json:"port,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Gateway marks the dataplane as a gateway; Type is DELEGATED (the
// default) or BUILTIN.
type Gateway struct {
	Tags Tags `json:"tags,omitempty"`
	Type any  `json:"type,omitempty"`
}

// TransparentProxying configures traffic redirection.
type TransparentProxying struct {
	RedirectPortInbound  uint32             `json:"redirectPortInbound,omitempty"`
	RedirectPortOutbound uint32             `json:"redirectPortOutbound,omitempty"`
	DirectAccessServices []string           `json:"directAccessServices,omitempty"`
	ReachableServices    []string           `json:"reachableServices,omitempty"`
	IPFamilyMode         any                `json:"ipFamilyMode,omitempty"`
	ReachableBackends    *ReachableBackends `json:"reachableBackends,omitempty"`
}

// ReachableBackends lists the services the workload may reach.
type ReachableBackends struct {
	Refs []ReachableBackendRef `json:"refs,omitempty"`
}

// ReachableBackendRef is one reachable service.
type ReachableBackendRef struct {
	Kind      string            `json:"kind,omitempty"`
	Name      string            `json:"name,omitempty"`
	Namespace string            `json:"namespace,omitempty"`
	Port      *uint32           `json:"port,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// AdminPort is the proxy's admin listener.
type AdminPort struct {
	Port uint32 `json:"port,omitempty"`
}

// Listener is a zone ingress or egress listener.
type Listener struct {
	Type    any    `json:"type,omitempty"`
	Address string `json:"address,omitempty"`
	Port    uint32 `json:"port,omitempty"`
	Name    string `json:"name,omitempty"`
	State   any    `json:"state,omitempty"`
}

// MetricsBackend overrides the mesh's metrics backend for this dataplane.
type MetricsBackend struct {
	Name string          `json:"name,omitempty"`
	Type string          `json:"type,omitempty"`
	Conf json.RawMessage `json:"conf,omitempty"`
}

// Probes exposes the workload's HTTP probes through the proxy.
type Probes struct {
	Port      uint32          `json:"port,omitempty"`
	Endpoints []ProbeEndpoint `json:"endpoints,omitempty"`
}

// ProbeEndpoint maps one probe path.
type ProbeEndpoint struct {
	InboundPort uint32 `json:"inboundPort,omitempty"`
	InboundPath string `json:"inboundPath,omitempty"`
	Path        string `json:"path,omitempty"`
}

var dataplaneType = sdk.Define(sdk.TypeSpec[DataplaneSpec]{
	Name:          "Dataplane",
	Direction:     sdk.ZoneToGlobal,
	Scope:         sdk.ScopeMesh,
	Description:   "A proxy next to a workload: its addresses, inbounds and outbounds (Kuma's Dataplane).",
	SchemaVersion: 2,
	Validate:      validateDataplane,
})

var (
	tagNameRE   = regexp.MustCompile(`^[a-zA-Z0-9.\-_:/]*$`)
	tagValueRE  = regexp.MustCompile(`^[a-zA-Z0-9.\-_:]*$`)
	dnsNameRE   = regexp.MustCompile(`^([a-zA-Z0-9_][a-zA-Z0-9_-]{0,62})(\.[a-zA-Z0-9_][a-zA-Z0-9_-]{0,62})*[._]?$`)
	rfc1123RE   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	protocols   = []string{"grpc", "http", "http2", "kafka", "tcp"}
	backendKind = []string{"MeshExternalService", "MeshMultiZoneService", "MeshService"}
)

func knownProtocol(p string) bool {
	switch strings.ToLower(p) {
	case "http", "http2", "tcp", "tls", "grpc", "kafka", "mysql":
		return true
	}
	return false
}

// gatewayType returns "BUILTIN" or "DELEGATED" (the default).
func gatewayType(g *Gateway) string {
	switch t := g.Type.(type) {
	case string:
		if t == "BUILTIN" {
			return "BUILTIN"
		}
	case float64:
		if t == 1 {
			return "BUILTIN"
		}
	}
	return "DELEGATED"
}

func validateDataplane(_ context.Context, _ sdk.Meta, s *DataplaneSpec) sdk.ErrorList {
	var errs sdk.ErrorList
	spec := sdk.Field("spec")
	n := spec.Child("networking")
	nw := s.Networking
	if nw == nil {
		errs.Add(n, "must be set")
		return errs
	}
	if a := nw.Admin; a != nil && a.Port != 0 {
		if usesInbound(nw, "127.0.0.1", a.Port) {
			errs.Add(n.Child("admin").Child("port"), "port %d is also used by an inbound; pick another", a.Port)
		}
		if usesOutbound(nw, "127.0.0.1", a.Port) {
			errs.Add(n.Child("admin").Child("port"), "port %d is also used by an outbound; pick another", a.Port)
		}
	}
	switch {
	case nw.Gateway != nil && gatewayType(nw.Gateway) == "DELEGATED":
		if len(nw.Inbound) > 0 {
			errs.Add(n.Child("inbound"), "must be empty for a delegated gateway")
		}
		if len(nw.Listeners) > 0 {
			errs.Add(n.Child("listeners"), "must be empty for a delegated gateway")
		}
		validateGateway(&errs, n.Child("gateway"), nw.Gateway)
		validateNetworking(&errs, n, nw)
		validateProbes(&errs, spec.Child("probes"), s.Probes)
	case nw.Gateway != nil:
		if len(nw.Inbound) > 0 {
			errs.Add(n.Child("inbound"), "must be empty for a builtin gateway")
		}
		if len(nw.Outbound) > 0 {
			errs.Add(n.Child("outbound"), "must be empty for a builtin gateway")
		}
		if len(nw.Listeners) > 0 {
			errs.Add(n.Child("listeners"), "must be empty for a builtin gateway")
		}
		if s.Probes != nil {
			errs.Add(n.Child("probes"), "must not be set for a builtin gateway")
		}
		validateGateway(&errs, n.Child("gateway"), nw.Gateway)
		validateNetworking(&errs, n, nw)
	default:
		validateNetworking(&errs, n, nw)
		validateProbes(&errs, spec.Child("probes"), s.Probes)
		if m := s.Metrics; m != nil {
			if m.Type != "prometheus" {
				errs.Invalid(spec.Child("metrics").Child("type"), m.Type, `unknown backend type; use "prometheus"`)
			} else {
				validatePrometheus(&errs, spec.Child("metrics").Child("conf"), m.Conf)
			}
		}
		validateListeners(&errs, n.Child("listeners"), nw)
	}
	return errs
}

func overlap(a, b string) bool {
	ia, ib := net.ParseIP(a), net.ParseIP(b)
	if ia.IsUnspecified() || ib.IsUnspecified() {
		return true
	}
	return ia.Equal(ib)
}

func usesInbound(nw *Networking, addr string, port uint32) bool {
	for _, in := range nw.Inbound {
		dpIP := cmp(in.Address, nw.Address)
		if port == in.Port && overlap(addr, dpIP) {
			return true
		}
		if port == cmpPort(in.ServicePort, in.Port) && overlap(addr, cmp(in.ServiceAddress, dpIP)) {
			return true
		}
	}
	return false
}

func usesOutbound(nw *Networking, addr string, port uint32) bool {
	for _, out := range nw.Outbound {
		if port == out.Port && overlap(addr, cmp(out.Address, "127.0.0.1")) {
			return true
		}
	}
	return false
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func cmpPort(a, b uint32) uint32 {
	if a != 0 {
		return a
	}
	return b
}

func validateNetworking(errs *sdk.ErrorList, n sdk.Path, nw *Networking) {
	validateAddress(errs, n.Child("address"), nw.Address)
	for i, in := range nw.Inbound {
		p := n.Child("inbound").Index(i)
		validateInbound(errs, p, in, nw.Address)
		if len(in.Tags) > 0 {
			if _, ok := in.Tags[ServiceTag]; !ok {
				errs.Add(p.Child("tags").Key(ServiceTag), "is required when an inbound has tags")
			}
		}
	}
	for i, out := range nw.Outbound {
		validateOutbound(errs, n.Child("outbound").Index(i), out)
	}
	if tp := nw.TransparentProxying; tp != nil && tp.ReachableBackends != nil {
		// Kuma spells this path "transparentProxing"; kds-engine reports
		// the same path so tools matching Kuma's paths keep working.
		rp := n.Child("transparentProxing").Child("reachableBackends.refs")
		for i, r := range tp.ReachableBackends.Refs {
			ip := rp.Index(i)
			if !slices.Contains(backendKind, r.Kind) {
				errs.Invalid(ip.Child("kind"), r.Kind, "use one of "+strings.Join(backendKind, ", "))
			}
			if r.Name != "" && (len(r.Name) > 253 || !rfc1123RE.MatchString(r.Name)) {
				errs.Invalid(ip.Child("name"), r.Name, "want lower case letters, digits, '-' and '.', starting and ending with a letter or digit")
			}
			if r.Name == "" && r.Namespace == "" && len(r.Labels) == 0 {
				errs.Add(ip.Child("name"), "set name or labels")
			}
			if r.Name == "" && r.Namespace != "" {
				errs.Add(ip.Child("name"), "is required when namespace is set")
			}
			if (r.Name != "" || r.Namespace != "") && len(r.Labels) > 0 {
				errs.Add(ip.Child("labels"), "must not be set together with name")
			}
		}
	}
}

func validateAddress(errs *sdk.ErrorList, p sdk.Path, addr string) {
	if addr == "" {
		errs.Add(p, "must be set")
		return
	}
	if addr == "0.0.0.0" || addr == "::" {
		errs.Invalid(p, addr, "must not be 0.0.0.0 or ::")
	}
	if net.ParseIP(addr) == nil && (len(addr) > 255 || !dnsNameRE.MatchString(addr)) {
		errs.Invalid(p, addr, "want an IP address or a domain name")
	}
}

func validateInbound(errs *sdk.ErrorList, p sdk.Path, in Inbound, dpAddress string) {
	checkPort(errs, p.Child("port"), in.Port)
	if in.ServicePort != 0 {
		checkPort(errs, p.Child("servicePort"), in.ServicePort)
	}
	sameListener := in.ServicePort == 0 || in.ServicePort == in.Port
	if in.ServiceAddress != "" {
		if net.ParseIP(in.ServiceAddress) == nil {
			errs.Invalid(p.Child("serviceAddress"), in.ServiceAddress, "not an IP address")
		}
		if in.ServiceAddress == dpAddress && sameListener {
			errs.Add(p.Child("serviceAddress"), "serviceAddress:servicePort must differ from the inbound's address:port")
		}
	}
	if in.Address != "" {
		if net.ParseIP(in.Address) == nil {
			errs.Invalid(p.Child("address"), in.Address, "not an IP address")
		}
		if in.Address == in.ServiceAddress && sameListener {
			errs.Add(p.Child("serviceAddress"), "serviceAddress:servicePort must differ from the inbound's address:port")
		}
	}
	tp := p.Child("tags")
	checkTags(errs, tp, in.Tags)
	if v, ok := in.Tags[ProtocolTag]; ok && !knownProtocol(v) {
		errs.Invalid(tp.Key(ProtocolTag), v, "unknown protocol; use one of "+strings.Join(protocols, ", "))
	}
	if in.Protocol != "" && !knownProtocol(in.Protocol) {
		errs.Invalid(p.Child("protocol"), in.Protocol, "unknown protocol; use one of "+strings.Join(protocols, ", "))
	}
	if sp := in.ServiceProbe; sp != nil {
		pp := p.Child("serviceProbe")
		checkProtoDuration(errs, pp.Child("interval"), sp.Interval)
		checkProtoDuration(errs, pp.Child("timeout"), sp.Timeout)
		if sp.UnhealthyThreshold != nil && *sp.UnhealthyThreshold == 0 {
			errs.Add(pp.Child("unhealthyThreshold"), "must be greater than zero")
		}
		if sp.HealthyThreshold != nil && *sp.HealthyThreshold == 0 {
			errs.Add(pp.Child("healthyThreshold"), "must be greater than zero")
		}
	}
}

// checkProtoDuration checks a protobuf JSON duration ("5s", "0.5s"): set,
// well formed and positive.
func checkProtoDuration(errs *sdk.ErrorList, p sdk.Path, d *string) {
	if d == nil {
		return
	}
	v, err := time.ParseDuration(*d)
	if err != nil || !strings.HasSuffix(*d, "s") {
		errs.Invalid(p, *d, `want a duration in seconds such as "5s" or "0.5s"`)
		return
	}
	if v <= 0 {
		errs.Invalid(p, *d, "must be greater than zero")
	}
}

func validateOutbound(errs *sdk.ErrorList, p sdk.Path, out Outbound) {
	checkPort(errs, p.Child("port"), out.Port)
	if out.Address != "" && net.ParseIP(out.Address) == nil {
		errs.Invalid(p.Child("address"), out.Address, "not an IP address")
	}
	switch {
	case out.BackendRef != nil:
		b := out.BackendRef
		if !slices.Contains(backendKind, b.Kind) {
			errs.Invalid(p.Child("backendRef").Child("kind"), b.Kind, "use one of "+strings.Join(backendKind, ", "))
		}
		if b.Name == "" && len(b.Labels) == 0 {
			errs.Add(p.Child("backendRef"), "set name or labels")
		}
		if b.Kind != "MeshExternalService" {
			checkPort(errs, p.Child("backendRef").Child("port"), b.Port)
		}
		if len(out.Tags) != 0 {
			errs.Add(p.Child("backendRef"), "set backendRef or tags, not both")
		}
	case len(out.Tags) == 0:
		errs.Add(p.Child("tags"), "the %q tag is required", ServiceTag)
	default:
		checkTags(errs, p.Child("tags"), out.Tags)
		if _, ok := out.Tags[ServiceTag]; !ok {
			errs.Add(p.Child("tags"), "the %q tag is required", ServiceTag)
		}
	}
}

func validateGateway(errs *sdk.ErrorList, p sdk.Path, g *Gateway) {
	tp := p.Child("tags")
	checkTags(errs, tp, g.Tags)
	if len(g.Tags) > 0 {
		if _, ok := g.Tags[ServiceTag]; !ok {
			errs.Add(tp, "the %q tag is required", ServiceTag)
		}
	}
	if v, ok := g.Tags[ProtocolTag]; ok && strings.ToLower(v) != "tcp" {
		errs.Invalid(tp.Key(ProtocolTag), v, "a gateway's protocol tag may only be tcp")
	}
	switch t := g.Type.(type) {
	case nil:
	case string:
		if t != "BUILTIN" && t != "DELEGATED" {
			errs.Invalid(p.Child("type"), t, "use DELEGATED or BUILTIN")
		}
	case float64:
		if t != 0 && t != 1 {
			errs.Invalid(p.Child("type"), t, "use DELEGATED or BUILTIN")
		}
	default:
		errs.Add(p.Child("type"), "use DELEGATED or BUILTIN")
	}
}

func validateProbes(errs *sdk.ErrorList, p sdk.Path, pr *Probes) {
	if pr == nil {
		return
	}
	checkPort(errs, p.Child("port"), pr.Port)
	for i, e := range pr.Endpoints {
		ep := p.Child("endpoints").Index(i)
		checkPort(errs, ep.Child("inboundPort"), e.InboundPort)
		if _, err := url.ParseRequestURI(e.InboundPath); err != nil {
			errs.Invalid(ep.Child("inboundPath"), e.InboundPath, "want a URL path")
		}
		if _, err := url.ParseRequestURI(e.Path); err != nil {
			errs.Invalid(ep.Child("path"), e.Path, "want a URL path")
		}
	}
}

func validateListeners(errs *sdk.ErrorList, p sdk.Path, nw *Networking) {
	names := map[string]bool{}
	for _, in := range nw.Inbound {
		if in.Name != "" {
			names[in.Name] = true
		}
	}
	used := map[string]string{}
	for i, l := range nw.Listeners {
		lp := p.Index(i)
		typ := fmt.Sprint(l.Type)
		switch typ {
		case "ZoneIngress", "ZoneEgress", "1", "2":
		default:
			errs.Add(lp.Child("type"), "use ZoneIngress or ZoneEgress")
		}
		validateAddress(errs, lp.Child("address"), l.Address)
		checkPort(errs, lp.Child("port"), l.Port)
		if l.Name != "" {
			if names[l.Name] {
				errs.Add(lp.Child("name"), "name %q is already used by an inbound or listener", l.Name)
			}
			names[l.Name] = true
		}
		key := fmt.Sprintf("%s:%d", l.Address, l.Port)
		if prev, ok := used[key]; ok {
			if prev == typ {
				errs.Add(lp, "%s is already used by another listener", key)
			} else {
				errs.Add(lp, "%s is used by listeners of different types", key)
			}
		} else {
			used[key] = typ
		}
		for _, in := range nw.Inbound {
			if fmt.Sprintf("%s:%d", cmp(in.Address, nw.Address), in.Port) == key {
				errs.Add(lp, "%s is also an inbound's address and port", key)
				break
			}
		}
	}
}

func checkPort(errs *sdk.ErrorList, p sdk.Path, port uint32) {
	if port < 1 || port > 65535 {
		errs.Invalid(p, port, "port must be between 1 and 65535")
	}
}

func checkTags(errs *sdk.ErrorList, p sdk.Path, tags map[string]string) {
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
		} else if !tagValueRE.MatchString(v) {
			errs.Add(p.Key(k), "tag values are letters, digits, '.', '-', '_' and ':'")
		}
	}
}

// prometheusConf is the conf of a prometheus metrics backend.
type prometheusConf struct {
	Port      uint32            `json:"port,omitempty"`
	Path      string            `json:"path,omitempty"`
	Tags      map[string]string `json:"tags,omitempty"`
	SkipMTLS  *bool             `json:"skipMTLS,omitempty"`
	Aggregate []struct {
		Name    string `json:"name,omitempty"`
		Port    uint32 `json:"port,omitempty"`
		Path    string `json:"path,omitempty"`
		Enabled *bool  `json:"enabled,omitempty"`
		Address string `json:"address,omitempty"`
	} `json:"aggregate,omitempty"`
	Envoy *struct {
		FilterRegex string `json:"filterRegex,omitempty"`
		UsedOnly    *bool  `json:"usedOnly,omitempty"`
	} `json:"envoy,omitempty"`
	TLS *struct {
		Mode string `json:"mode,omitempty"`
	} `json:"tls,omitempty"`
}

// validatePrometheus checks a prometheus backend's conf at p.
func validatePrometheus(errs *sdk.ErrorList, p sdk.Path, raw json.RawMessage) {
	if len(raw) == 0 || string(raw) == "null" {
		return
	}
	var c prometheusConf
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		errs.Add(p, "cannot read the backend configuration: %v", err)
		return
	}
	if c.SkipMTLS != nil && c.TLS != nil {
		consistent := (!*c.SkipMTLS && (c.TLS.Mode == "" || c.TLS.Mode == "activeMTLSBackend")) ||
			(*c.SkipMTLS && c.TLS.Mode == "disabled")
		if !consistent {
			errs.Add(p, "set skipMTLS or tls, not both")
			return
		}
	}
	if c.Envoy != nil {
		if _, err := regexp.Compile(c.Envoy.FilterRegex); err != nil {
			errs.Invalid(p.Child("envoy").Child("filterRegex"), c.Envoy.FilterRegex, "not a regular expression: "+err.Error())
			return
		}
	}
	seen := map[string]bool{}
	for i, a := range c.Aggregate {
		if seen[a.Name] {
			errs.Add(p.Child("aggregate").Index(i).Child("name"), "%q appears more than once; names must be unique", a.Name)
			continue
		}
		seen[a.Name] = true
	}
}
