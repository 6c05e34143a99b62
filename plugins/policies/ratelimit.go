package main

import (
	"context"
	"time"

	"github.com/kds-engine/kds-engine/sdk"
)

// MeshRateLimitSpec limits the rate of requests or connections that the
// proxies its TargetRef selects accept, following Kuma's MeshRateLimit
// (v1alpha1): for inbound traffic in rules (or the older from), for
// gateways in to.
type MeshRateLimitSpec struct {
	// TargetRef selects the proxies; left out, it means the whole mesh.
	TargetRef *TargetRef       `json:"targetRef,omitempty"`
	From      *[]RateLimitTo   `json:"from,omitempty"`
	To        *[]RateLimitTo   `json:"to,omitempty"`
	Rules     *[]RateLimitRule `json:"rules,omitempty"`
}

// RateLimitTo applies Default to the traffic TargetRef selects.
type RateLimitTo struct {
	TargetRef TargetRef     `json:"targetRef,omitempty"`
	Default   RateLimitConf `json:"default,omitempty"`
}

// RateLimitRule applies Default to inbound traffic Matches selects.
type RateLimitRule struct {
	Matches *[]Match      `json:"matches,omitempty"`
	Default RateLimitConf `json:"default,omitempty"`
}

// RateLimitConf holds the local (per proxy) limits.
type RateLimitConf struct {
	Local *LocalRateLimit `json:"local,omitempty"`
}

// LocalRateLimit holds the HTTP and TCP limits; at least one must be set.
type LocalRateLimit struct {
	HTTP *LocalHTTP `json:"http,omitempty"`
	TCP  *LocalTCP  `json:"tcp,omitempty"`
}

// LocalHTTP limits HTTP requests.
type LocalHTTP struct {
	Disabled    *bool        `json:"disabled,omitempty"`
	RequestRate *Rate        `json:"requestRate,omitempty"`
	OnRateLimit *OnRateLimit `json:"onRateLimit,omitempty"`
}

// OnRateLimit is the response to a limited request.
type OnRateLimit struct {
	Status  *uint32         `json:"status,omitempty"`
	Headers *HeaderModifier `json:"headers,omitempty"`
}

// HeaderModifier sets or adds response headers.
type HeaderModifier struct {
	Set *[]HeaderKeyValue `json:"set,omitempty"`
	Add *[]HeaderKeyValue `json:"add,omitempty"`
}

// HeaderKeyValue is one header.
type HeaderKeyValue struct {
	Name  string `json:"name,omitempty"`
	Value string `json:"value,omitempty"`
}

// LocalTCP limits TCP connections.
type LocalTCP struct {
	Disabled       *bool `json:"disabled,omitempty"`
	ConnectionRate *Rate `json:"connectionRate,omitempty"`
}

// Rate is Num units per Interval.
type Rate struct {
	Num      uint32   `json:"num,omitempty"`
	Interval Duration `json:"interval,omitempty"`
}

var meshRateLimitType = sdk.Define(sdk.TypeSpec[MeshRateLimitSpec]{
	Name:          "MeshRateLimit",
	Direction:     sdk.GlobalToZone,
	Scope:         sdk.ScopeMesh,
	Description:   "Local rate limits on requests and connections (Kuma's MeshRateLimit).",
	SchemaVersion: 2,
	Validate:      validateMeshRateLimit,
})

func validateMeshRateLimit(_ context.Context, meta sdk.Meta, s *MeshRateLimitSpec) sdk.ErrorList {
	var errs sdk.ErrorList
	spec := sdk.Field("spec")
	to, from, rules := deref(s.To), deref(s.From), deref(s.Rules)
	if len(rules) > 0 && (len(to) > 0 || len(from) > 0) {
		errs.Add(spec, "to and from must be empty when rules is set")
	}
	if s.TargetRef != nil {
		o := targetOpts{kinds: []string{KindMesh, KindMeshSubset, KindMeshService, KindMeshServiceSubset, KindDataplane}, inboundPolicy: len(from) > 0 || len(rules) > 0}
		if systemRole(meta) {
			o.kinds = []string{KindMesh, KindMeshSubset, KindMeshGateway, KindMeshService, KindMeshServiceSubset, KindMeshHTTPRoute, KindDataplane}
			o.gatewayTags = true
		}
		validateTargetRef(&errs, spec.Child("targetRef"), *s.TargetRef, o)
	}
	top := topRef(s.TargetRef)
	gateways := includesGateways(top)
	switch {
	case len(rules) > 0 && (gateways || top.Kind == KindMeshHTTPRoute):
		errs.Add(spec.Child("rules"), "must not be set when the top-level targetRef can select gateways; use to for gateways")
	default:
		for i, r := range rules {
			p := spec.Child("rules").Index(i)
			if validateMatches(&errs, p.Child("matches"), deref(r.Matches)) && r.Default.Local != nil && r.Default.Local.TCP != nil {
				errs.Add(p.Child("default").Child("local").Child("tcp"), "cannot be set when matches name a spiffeID: it does not depend on the client's identity")
			}
			validateRateLimitConf(&errs, p.Child("default"), r.Default)
		}
	}
	switch {
	case len(from) > 0 && gateways:
		errs.Add(spec.Child("from"), "must not be set when the top-level targetRef can select gateways: select only proxyTypes [Sidecar], or select gateways and use to")
	case len(from) > 0 && top.Kind == KindMeshHTTPRoute:
		errs.Add(spec.Child("from"), "must not be set when the top-level targetRef is a MeshHTTPRoute")
	default:
		for i, f := range from {
			p := spec.Child("from").Index(i)
			validateTargetRef(&errs, p.Child("targetRef"), f.TargetRef, targetOpts{kinds: []string{KindMesh}})
			validateRateLimitConf(&errs, p.Child("default"), f.Default)
		}
	}
	if len(to) > 0 && !gateways {
		errs.Add(spec.Child("to"), "must not be set unless the top-level targetRef selects gateways")
	} else {
		for i, t := range to {
			p := spec.Child("to").Index(i)
			validateTargetRef(&errs, p.Child("targetRef"), t.TargetRef, targetOpts{kinds: []string{KindMesh}})
			validateRateLimitConf(&errs, p.Child("default"), t.Default)
		}
	}
	return errs
}

func validateRateLimitConf(errs *sdk.ErrorList, d sdk.Path, c RateLimitConf) {
	lp := d.Child("local")
	l := c.Local
	if l == nil {
		errs.Add(lp, "must be set")
		return
	}
	if l.HTTP == nil && l.TCP == nil {
		errs.Add(lp, "set at least one of tcp or http")
	}
	if h := l.HTTP; h != nil {
		hp := lp.Child("http")
		if h.Disabled == nil && h.RequestRate == nil && h.OnRateLimit == nil {
			errs.Add(hp, "set at least one of disabled, requestRate or onRateLimit")
		} else {
			validateRate(errs, hp.Child("requestRate"), h.RequestRate)
			if o := h.OnRateLimit; o != nil && o.Status != nil && *o.Status == 0 {
				errs.Add(hp.Child("onRateLimit").Child("status"), "must be greater than zero")
			}
		}
	}
	if t := l.TCP; t != nil {
		tp := lp.Child("tcp")
		if t.Disabled == nil && t.ConnectionRate == nil {
			errs.Add(tp, "set at least one of disabled or connectionRate")
		} else {
			validateRate(errs, tp.Child("connectionRate"), t.ConnectionRate)
		}
	}
}

func validateRate(errs *sdk.ErrorList, p sdk.Path, r *Rate) {
	if r == nil {
		return
	}
	if r.Num == 0 {
		errs.Add(p.Child("num"), "must be greater than zero")
	}
	iv := r.Interval
	if v, ok := parseDuration(errs, p.Child("interval"), &iv); ok && v <= 50*time.Millisecond {
		errs.Invalid(p.Child("interval"), string(iv), "must be longer than 50ms")
	}
}
