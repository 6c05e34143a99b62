package main

import (
	"context"
	"encoding/json"
	"net"
	"net/url"
	"regexp"

	"github.com/kds-engine/kds-engine/sdk"
)

// MeshSpec is a service mesh, following Kuma's Mesh (mesh.proto). Kuma's
// universal documents write these fields at the top level of the document
// (type: Mesh, name: default, mtls: ...); kds-engine keeps them in spec and
// converts between the two forms on apply and get --format kuma.
type MeshSpec struct {
	MTLS                        *MeshMTLS        `json:"mtls,omitempty"`
	Tracing                     *MeshTracing     `json:"tracing,omitempty"`
	Logging                     *MeshLogging     `json:"logging,omitempty"`
	Metrics                     *MeshMetrics     `json:"metrics,omitempty"`
	Networking                  *MeshNetworking  `json:"networking,omitempty"`
	Routing                     *MeshRouting     `json:"routing,omitempty"`
	Constraints                 *MeshConstraints `json:"constraints,omitempty"`
	SkipCreatingInitialPolicies []string         `json:"skipCreatingInitialPolicies,omitempty"`
	MeshServices                *MeshServices    `json:"meshServices,omitempty"`
}

// MeshMTLS lists certificate authority backends and which one is enabled.
type MeshMTLS struct {
	EnabledBackend string               `json:"enabledBackend,omitempty"`
	Backends       []CertificateBackend `json:"backends,omitempty"`
	SkipValidation bool                 `json:"skipValidation,omitempty"`
}

// CertificateBackend is one certificate authority.
type CertificateBackend struct {
	Name      string          `json:"name,omitempty"`
	Type      string          `json:"type,omitempty"`
	DpCert    *DpCert         `json:"dpCert,omitempty"`
	Conf      json.RawMessage `json:"conf,omitempty"`
	Mode      any             `json:"mode,omitempty"`
	RootChain *RootChain      `json:"rootChain,omitempty"`
}

// DpCert configures the certificates of dataplane proxies.
type DpCert struct {
	Rotation       *DpCertRotation `json:"rotation,omitempty"`
	RequestTimeout *string         `json:"requestTimeout,omitempty"`
}

// DpCertRotation sets how long a dataplane certificate lives.
type DpCertRotation struct {
	Expiration string `json:"expiration,omitempty"`
}

// RootChain configures fetching the CA chain.
type RootChain struct {
	RequestTimeout *string `json:"requestTimeout,omitempty"`
}

// MeshTracing lists tracing backends.
type MeshTracing struct {
	DefaultBackend string           `json:"defaultBackend,omitempty"`
	Backends       []TracingBackend `json:"backends,omitempty"`
}

// TracingBackend is one tracing backend (zipkin or datadog).
type TracingBackend struct {
	Name     string          `json:"name,omitempty"`
	Sampling *float64        `json:"sampling,omitempty"`
	Type     string          `json:"type,omitempty"`
	Conf     json.RawMessage `json:"conf,omitempty"`
}

// MeshLogging lists access log backends.
type MeshLogging struct {
	DefaultBackend string           `json:"defaultBackend,omitempty"`
	Backends       []LoggingBackend `json:"backends,omitempty"`
}

// LoggingBackend is one access log backend (file or tcp).
type LoggingBackend struct {
	Name   string          `json:"name,omitempty"`
	Format string          `json:"format,omitempty"`
	Type   string          `json:"type,omitempty"`
	Conf   json.RawMessage `json:"conf,omitempty"`
}

// MeshMetrics lists metrics backends. Port and Path are the fields
// kds-engine accepted before schema version 2.
type MeshMetrics struct {
	EnabledBackend string          `json:"enabledBackend,omitempty"`
	Backends       []MetricBackend `json:"backends,omitempty"`
	Port           *Renamed        `json:"port,omitempty"`
	Path           *Renamed        `json:"path,omitempty"`
}

// MetricBackend is one metrics backend (prometheus).
type MetricBackend struct {
	Name string          `json:"name,omitempty"`
	Type string          `json:"type,omitempty"`
	Conf json.RawMessage `json:"conf,omitempty"`
}

// MeshNetworking holds mesh-wide networking settings.
type MeshNetworking struct {
	Outbound *struct {
		Passthrough *bool `json:"passthrough,omitempty"`
	} `json:"outbound,omitempty"`
}

// MeshRouting holds mesh-wide routing settings.
type MeshRouting struct {
	LocalityAwareLoadBalancing             bool `json:"localityAwareLoadBalancing,omitempty"`
	ZoneEgress                             bool `json:"zoneEgress,omitempty"`
	DefaultForbidMeshExternalServiceAccess bool `json:"defaultForbidMeshExternalServiceAccess,omitempty"`
}

// MeshConstraints restricts which dataplanes may join.
type MeshConstraints struct {
	DataplaneProxy *struct {
		Requirements []TagRule `json:"requirements,omitempty"`
		Restrictions []TagRule `json:"restrictions,omitempty"`
	} `json:"dataplaneProxy,omitempty"`
}

// TagRule selects dataplanes by tags.
type TagRule struct {
	Tags map[string]string `json:"tags,omitempty"`
}

// MeshServices says how MeshService resources are generated.
type MeshServices struct {
	Mode any `json:"mode,omitempty"`
}

// Backend configurations that the validator reads from conf.
type (
	prometheusConf struct {
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
	zipkinConf struct {
		URL               string `json:"url,omitempty"`
		TraceID128bit     bool   `json:"traceId128bit,omitempty"`
		APIVersion        string `json:"apiVersion,omitempty"`
		SharedSpanContext *bool  `json:"sharedSpanContext,omitempty"`
	}
	datadogConf struct {
		Address      string `json:"address,omitempty"`
		Port         uint32 `json:"port,omitempty"`
		SplitService bool   `json:"splitService,omitempty"`
	}
	fileLogConf struct {
		Path string `json:"path,omitempty"`
	}
	tcpLogConf struct {
		Address string `json:"address,omitempty"`
	}
)

var meshType = sdk.Define(sdk.TypeSpec[MeshSpec]{
	Name:          "Mesh",
	Direction:     sdk.GlobalToZone,
	Scope:         sdk.ScopeGlobal,
	Description:   "A service mesh: a group of dataplanes sharing mTLS, observability and policies (Kuma's Mesh).",
	SchemaVersion: 2,
	Validate:      validateMesh,
})

var (
	meshNameRE   = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)
	certExpiryRE = regexp.MustCompile(`^(\d+)(y|w|d|h|m|s|ms)$`)
)

// decodeConf decodes a backend's conf into v, refusing unknown fields.
func decodeConf(errs *sdk.ErrorList, p sdk.Path, raw json.RawMessage, v any) bool {
	if len(raw) == 0 || string(raw) == "null" {
		return true
	}
	if err := strictJSON(raw, v); err != nil {
		errs.Add(p, "cannot read the backend configuration: %v", err)
		return false
	}
	return true
}

func strictJSON(raw []byte, v any) error {
	dec := json.NewDecoder(bytesReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func validateMesh(_ context.Context, meta sdk.Meta, s *MeshSpec) sdk.ErrorList {
	var errs sdk.ErrorList
	if n := meta.Name; len(n) > 63 || !meshNameRE.MatchString(n) {
		errs.Invalid(sdk.Field("name"), n, "a mesh name is at most 63 characters of lower case letters, digits and '-', starting with a letter and ending with a letter or digit")
	}
	spec := sdk.Field("spec")
	if m := s.MTLS; m != nil {
		p := spec.Child("mtls")
		if len(m.Backends) > 1 {
			errs.Add(p.Child("backends"), "at most 1 backend is allowed")
		}
		seen := map[string]bool{}
		for i, b := range m.Backends {
			if seen[b.Name] {
				errs.Add(p.Child("backends").Index(i).Child("name"), "%q is already the name of another backend", b.Name)
			}
			seen[b.Name] = true
			if b.DpCert != nil {
				exp := ""
				if b.DpCert.Rotation != nil {
					exp = b.DpCert.Rotation.Expiration
				}
				if exp != "0" && !certExpiryRE.MatchString(exp) {
					errs.Invalid(p.Child("dpcert").Child("rotation").Child("expiration"), exp, "want a number and a unit (ms, s, m, h, d, w or y), for example 1d")
				}
			}
		}
		if m.EnabledBackend != "" && !seen[m.EnabledBackend] {
			errs.Invalid(p.Child("enabledBackend"), m.EnabledBackend, "no backend has this name")
		}
	}
	if l := s.Logging; l != nil {
		p := spec.Child("logging")
		seen := map[string]bool{}
		for i, b := range l.Backends {
			bp := p.Child("backends").Index(i)
			if b.Name == "" {
				errs.Add(bp.Child("name"), "must not be empty")
			}
			cp := bp.Child("config")
			switch b.Type {
			case "file":
				var c fileLogConf
				if decodeConf(&errs, cp, b.Conf, &c) && c.Path == "" {
					errs.Add(cp.Child("path"), "must not be empty")
				}
			case "tcp":
				var c tcpLogConf
				if decodeConf(&errs, cp, b.Conf, &c) {
					if c.Address == "" {
						errs.Add(cp.Child("address"), "must not be empty")
					} else if h, port, err := net.SplitHostPort(c.Address); err != nil || h == "" || port == "" {
						errs.Invalid(cp.Child("address"), c.Address, "want HOST:PORT")
					}
				}
			default:
				errs.Invalid(bp.Child("type"), b.Type, `unknown backend type; use "tcp" or "file"`)
			}
			if seen[b.Name] {
				errs.Add(bp.Child("name"), "%q is already the name of another backend", b.Name)
			}
			seen[b.Name] = true
		}
		if l.DefaultBackend != "" && !seen[l.DefaultBackend] {
			errs.Invalid(p.Child("defaultBackend"), l.DefaultBackend, "no logging backend has this name")
		}
	}
	if t := s.Tracing; t != nil {
		p := spec.Child("tracing")
		seen := map[string]bool{}
		for i, b := range t.Backends {
			bp := p.Child("backends").Index(i)
			if b.Name == "" {
				errs.Add(bp.Child("name"), "must not be empty")
			}
			if b.Sampling != nil && (*b.Sampling < 0 || *b.Sampling > 100) {
				errs.Invalid(bp.Child("sampling"), *b.Sampling, "must be between 0.0 and 100.0")
			}
			cp := bp.Child("config")
			switch b.Type {
			case "zipkin":
				var c zipkinConf
				if decodeConf(&errs, cp, b.Conf, &c) {
					switch c.APIVersion {
					case "", "httpJsonV1", "httpJson", "httpProto":
					default:
						errs.Invalid(cp.Child("apiVersion"), c.APIVersion, "use httpJsonV1, httpJson or httpProto")
					}
					if c.URL == "" {
						errs.Add(cp.Child("url"), "must not be empty")
					} else if u, err := url.ParseRequestURI(c.URL); err != nil {
						errs.Invalid(cp.Child("url"), c.URL, "not a URL")
					} else if u.Port() == "" {
						errs.Invalid(cp.Child("url"), c.URL, "give the port explicitly")
					}
				}
			case "datadog":
				var c datadogConf
				if decodeConf(&errs, cp, b.Conf, &c) {
					if c.Address == "" {
						errs.Add(cp.Child("address"), "must not be empty")
					}
					checkPort(&errs, cp.Child("port"), c.Port)
				}
			default:
				errs.Invalid(bp.Child("type"), b.Type, `unknown backend type; use "zipkin" or "datadog"`)
			}
			if seen[b.Name] {
				errs.Add(bp.Child("name"), "%q is already the name of another backend", b.Name)
			}
			seen[b.Name] = true
		}
		if t.DefaultBackend != "" && !seen[t.DefaultBackend] {
			errs.Invalid(p.Child("defaultBackend"), t.DefaultBackend, "no tracing backend has this name")
		}
	}
	if m := s.Metrics; m != nil {
		p := spec.Child("metrics")
		renamed(&errs, p.Child("port"), m.Port, "metrics.backends[].conf.port (a backend of type prometheus)")
		renamed(&errs, p.Child("path"), m.Path, "metrics.backends[].conf.path (a backend of type prometheus)")
		seen := map[string]bool{}
		for i, b := range m.Backends {
			bp := p.Child("backends").Index(i)
			if seen[b.Name] {
				errs.Add(bp.Child("name"), "%q is already the name of another backend", b.Name)
			}
			if b.Type != "prometheus" {
				errs.Invalid(bp.Child("type"), b.Type, `unknown backend type; use "prometheus"`)
			} else {
				validatePrometheus(&errs, bp.Child("conf"), b.Conf)
			}
			seen[b.Name] = true
		}
		if m.EnabledBackend != "" && !seen[m.EnabledBackend] {
			errs.Invalid(p.Child("enabledBackend"), m.EnabledBackend, "no backend has this name")
		}
	}
	if c := s.Constraints; c != nil && c.DataplaneProxy != nil {
		p := spec.Child("constraints").Child("dataplaneProxy")
		for name, rules := range map[string][]TagRule{"requirements": c.DataplaneProxy.Requirements, "restrictions": c.DataplaneProxy.Restrictions} {
			for i, r := range rules {
				tp := p.Child(name).Index(i).Child("tags")
				if len(r.Tags) == 0 {
					errs.Add(tp, "must have at least one tag")
				}
				checkTags(&errs, tp, r.Tags, selectorRE, `letters, digits, '.', '-', '_', ':' and '/', or "*"`)
			}
		}
	}
	if r := s.Routing; r != nil && r.ZoneEgress && (s.MTLS == nil || s.MTLS.EnabledBackend == "") {
		errs.Add(spec.Child("mtls"), "must enable a backend when routing.zoneEgress is true")
	}
	return errs
}

// validatePrometheus checks a prometheus backend's conf at p.
func validatePrometheus(errs *sdk.ErrorList, p sdk.Path, raw json.RawMessage) {
	var c prometheusConf
	if !decodeConf(errs, p, raw, &c) {
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
