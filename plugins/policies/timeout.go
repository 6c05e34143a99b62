package main

import (
	"context"

	"github.com/kds-engine/kds-engine/sdk"
)

// MeshTimeoutSpec sets connection and request timeouts, following Kuma's
// MeshTimeout (v1alpha1): for outbound traffic in to, for inbound traffic
// in rules (or the older from).
type MeshTimeoutSpec struct {
	// TargetRef selects the proxies; left out, it means the whole mesh.
	TargetRef *TargetRef     `json:"targetRef,omitempty"`
	To        *[]TimeoutTo   `json:"to,omitempty"`
	From      *[]TimeoutTo   `json:"from,omitempty"`
	Rules     *[]TimeoutRule `json:"rules,omitempty"`
}

// TimeoutTo applies Default to the traffic its TargetRef selects.
type TimeoutTo struct {
	TargetRef TargetRef   `json:"targetRef,omitempty"`
	Default   TimeoutConf `json:"default,omitempty"`
}

// TimeoutRule applies Default to inbound traffic that Matches selects (all
// of it when Matches is empty).
type TimeoutRule struct {
	Matches *[]Match    `json:"matches,omitempty"`
	Default TimeoutConf `json:"default,omitempty"`
}

// TimeoutConf holds the timeouts; at least one must be set.
type TimeoutConf struct {
	ConnectionTimeout *Duration    `json:"connectionTimeout,omitempty"`
	IdleTimeout       *Duration    `json:"idleTimeout,omitempty"`
	HTTP              *HTTPTimeout `json:"http,omitempty"`
	// ConnectTimeout is the name kds-engine used before schema version 2.
	ConnectTimeout *Renamed `json:"connectTimeout,omitempty"`
}

// HTTPTimeout holds HTTP-level timeouts.
type HTTPTimeout struct {
	RequestTimeout        *Duration `json:"requestTimeout,omitempty"`
	StreamIdleTimeout     *Duration `json:"streamIdleTimeout,omitempty"`
	MaxStreamDuration     *Duration `json:"maxStreamDuration,omitempty"`
	MaxConnectionDuration *Duration `json:"maxConnectionDuration,omitempty"`
	RequestHeadersTimeout *Duration `json:"requestHeadersTimeout,omitempty"`
}

var meshTimeoutType = sdk.Define(sdk.TypeSpec[MeshTimeoutSpec]{
	Name:          "MeshTimeout",
	Direction:     sdk.GlobalToZone,
	Scope:         sdk.ScopeMesh,
	Description:   "Connection and request timeouts (Kuma's MeshTimeout).",
	SchemaVersion: 2,
	Validate:      validateMeshTimeout,
})

func validateMeshTimeout(_ context.Context, meta sdk.Meta, s *MeshTimeoutSpec) sdk.ErrorList {
	var errs sdk.ErrorList
	spec := sdk.Field("spec")
	to, from, rules := deref(s.To), deref(s.From), deref(s.Rules)
	inbound := len(from) > 0 || len(rules) > 0
	if s.TargetRef != nil {
		o := targetOpts{kinds: []string{KindMesh, KindDataplane, KindMeshSubset, KindMeshService, KindMeshServiceSubset}, inboundPolicy: inbound}
		if systemRole(meta) {
			o.kinds = []string{KindMesh, KindMeshSubset, KindDataplane, KindMeshGateway, KindMeshService, KindMeshServiceSubset, KindMeshHTTPRoute}
			o.gatewayTags = true
		}
		validateTargetRef(&errs, spec.Child("targetRef"), *s.TargetRef, o)
	}
	if len(rules) > 0 && (len(to) > 0 || len(from) > 0) {
		errs.Add(spec, "to and from must be empty when rules is set")
	}
	if len(rules) == 0 && len(to) == 0 && len(from) == 0 {
		errs.Add(spec, "set at least one of to, from or rules")
	}
	top := topRef(s.TargetRef).Kind
	gatewayOrRoute := top == KindMeshHTTPRoute || top == KindMeshGateway
	if gatewayOrRoute && len(from) > 0 {
		errs.Add(spec.Child("from"), "must not be set when the top-level targetRef is a %s", top)
	} else {
		for i, f := range from {
			p := spec.Child("from").Index(i)
			validateTargetRef(&errs, p.Child("targetRef"), f.TargetRef, targetOpts{kinds: []string{KindMesh}})
			validateTimeoutConf(&errs, p.Child("default"), f.Default, top)
		}
	}
	toKinds := []string{KindMesh, KindMeshService, KindMeshExternalService, KindMeshMultiZoneService, KindMeshHTTPRoute}
	if gatewayOrRoute {
		toKinds = []string{KindMesh, KindMeshExternalService}
	}
	for i, t := range to {
		p := spec.Child("to").Index(i)
		validateTargetRef(&errs, p.Child("targetRef"), t.TargetRef, targetOpts{kinds: toKinds})
		validateTimeoutConf(&errs, p.Child("default"), t.Default, top)
	}
	for i, r := range rules {
		p := spec.Child("rules").Index(i)
		if validateMatches(&errs, p.Child("matches"), deref(r.Matches)) {
			const why = "cannot be set when matches name a spiffeID: it does not depend on the client's identity"
			d := p.Child("default")
			notWith(&errs, d.Child("connectionTimeout"), r.Default.ConnectionTimeout != nil, why)
			notWith(&errs, d.Child("idleTimeout"), r.Default.IdleTimeout != nil, why)
			if h := r.Default.HTTP; h != nil {
				hp := d.Child("http")
				notWith(&errs, hp.Child("requestHeadersTimeout"), h.RequestHeadersTimeout != nil, why)
				notWith(&errs, hp.Child("maxStreamDuration"), h.MaxStreamDuration != nil, why)
				notWith(&errs, hp.Child("maxConnectionDuration"), h.MaxConnectionDuration != nil, why)
			}
		}
		validateTimeoutConf(&errs, p.Child("default"), r.Default, top)
	}
	return errs
}

func notWith(errs *sdk.ErrorList, p sdk.Path, set bool, why string) {
	if set {
		errs.Add(p, "%s", why)
	}
}

func validateTimeoutConf(errs *sdk.ErrorList, d sdk.Path, c TimeoutConf, top string) {
	renamed(errs, d.Child("connectTimeout"), c.ConnectTimeout, "connectionTimeout")
	if c.ConnectionTimeout == nil && c.IdleTimeout == nil && c.HTTP == nil {
		if c.ConnectTimeout == nil {
			errs.Add(d, "set at least one timeout")
		}
		return
	}
	if top == KindMeshHTTPRoute {
		const why = "cannot be set when the top-level targetRef is a MeshHTTPRoute"
		notWith(errs, d.Child("connectionTimeout"), c.ConnectionTimeout != nil, why)
		notWith(errs, d.Child("idleTimeout"), c.IdleTimeout != nil, why)
		if h := c.HTTP; h != nil {
			notWith(errs, d.Child("http").Child("maxStreamDuration"), h.MaxStreamDuration != nil, why)
			notWith(errs, d.Child("http").Child("maxConnectionDuration"), h.MaxConnectionDuration != nil, why)
		}
	}
	positive(errs, d.Child("connectionTimeout"), c.ConnectionTimeout)
	notNegative(errs, d.Child("idleTimeout"), c.IdleTimeout)
	if h := c.HTTP; h != nil {
		hp := d.Child("http")
		if h.RequestTimeout == nil && h.StreamIdleTimeout == nil && h.MaxStreamDuration == nil && h.MaxConnectionDuration == nil {
			errs.Add(hp, "set at least one timeout in http")
		}
		notNegative(errs, hp.Child("requestTimeout"), h.RequestTimeout)
		notNegative(errs, hp.Child("streamIdleTimeout"), h.StreamIdleTimeout)
		notNegative(errs, hp.Child("maxStreamDuration"), h.MaxStreamDuration)
		notNegative(errs, hp.Child("maxConnectionDuration"), h.MaxConnectionDuration)
		notNegative(errs, hp.Child("requestHeadersTimeout"), h.RequestHeadersTimeout)
	}
}
