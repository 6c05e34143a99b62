package main

import (
	"context"

	"github.com/kds-engine/kds-engine/sdk"
)

// MeshRateLimitSpec limits the rate of requests or connections that the
// proxies selected by TargetRef accept from the clients its entries select.
type MeshRateLimitSpec struct {
	TargetRef TargetRef        `json:"targetRef"`
	From      []RateLimitEntry `json:"from"`
}

// RateLimitEntry applies Default to traffic from TargetRef.
type RateLimitEntry struct {
	TargetRef TargetRef     `json:"targetRef"`
	Default   RateLimitConf `json:"default"`
}

// RateLimitConf holds the local (per-proxy) limits.
type RateLimitConf struct {
	Local LocalRateLimit `json:"local"`
}

// LocalRateLimit has an HTTP and a TCP part; at least one is set.
type LocalRateLimit struct {
	HTTP *HTTPRateLimit `json:"http,omitempty"`
	TCP  *TCPRateLimit  `json:"tcp,omitempty"`
}

// HTTPRateLimit limits requests.
type HTTPRateLimit struct {
	Disabled    bool         `json:"disabled,omitempty"`
	RequestRate *Rate        `json:"requestRate,omitempty"`
	OnRateLimit *OnRateLimit `json:"onRateLimit,omitempty"`
}

// TCPRateLimit limits new connections.
type TCPRateLimit struct {
	Disabled       bool  `json:"disabled,omitempty"`
	ConnectionRate *Rate `json:"connectionRate,omitempty"`
}

// Rate is Num events per Interval.
type Rate struct {
	Num      int      `json:"num" jsonschema:"minimum=1"`
	Interval Duration `json:"interval"`
}

// OnRateLimit is the response sent to a limited request.
type OnRateLimit struct {
	Status int `json:"status,omitempty"`
}

var meshRateLimitType = sdk.Define(sdk.TypeSpec[MeshRateLimitSpec]{
	Name:          "MeshRateLimit",
	Direction:     sdk.GlobalToZone,
	Scope:         sdk.ScopeMesh,
	Description:   "Local rate limits on inbound requests and connections.",
	SchemaVersion: 1,
	Validate:      validateMeshRateLimit,
})

func validateMeshRateLimit(_ context.Context, _ sdk.Meta, s *MeshRateLimitSpec) sdk.ErrorList {
	var errs sdk.ErrorList
	spec := sdk.Field("spec")
	validateTargetRef(&errs, spec.Child("targetRef"), s.TargetRef, "Mesh", "MeshSubset", "MeshService", "MeshServiceSubset", "MeshGateway")
	if len(s.From) == 0 {
		errs.Add(spec.Child("from"), "needs at least one entry")
	}
	for i, e := range s.From {
		p := spec.Child("from").Index(i)
		validateTargetRef(&errs, p.Child("targetRef"), e.TargetRef, "Mesh")
		lp := p.Child("default").Child("local")
		l := e.Default.Local
		if l.HTTP == nil && l.TCP == nil {
			errs.Add(lp, "needs http or tcp")
		}
		if h := l.HTTP; h != nil {
			hp := lp.Child("http")
			switch {
			case h.Disabled && h.RequestRate != nil:
				errs.Add(hp.Child("requestRate"), "must not be set when disabled is true")
			case !h.Disabled && h.RequestRate == nil:
				errs.Add(hp.Child("requestRate"), "is required unless disabled is true")
			}
			if h.RequestRate != nil {
				checkRate(&errs, hp.Child("requestRate"), *h.RequestRate)
			}
			if o := h.OnRateLimit; o != nil && o.Status != 0 && (o.Status < 400 || o.Status > 599) {
				errs.Invalid(hp.Child("onRateLimit").Child("status"), o.Status, "must be an HTTP error status (400-599)")
			}
		}
		if t := l.TCP; t != nil {
			tp := lp.Child("tcp")
			switch {
			case t.Disabled && t.ConnectionRate != nil:
				errs.Add(tp.Child("connectionRate"), "must not be set when disabled is true")
			case !t.Disabled && t.ConnectionRate == nil:
				errs.Add(tp.Child("connectionRate"), "is required unless disabled is true")
			}
			if t.ConnectionRate != nil {
				checkRate(&errs, tp.Child("connectionRate"), *t.ConnectionRate)
			}
		}
	}
	return errs
}

func checkRate(errs *sdk.ErrorList, p sdk.Path, r Rate) {
	if r.Num < 1 {
		errs.Invalid(p.Child("num"), r.Num, "must be at least 1")
	}
	if r.Interval == "" {
		errs.Required(p.Child("interval"))
		return
	}
	parsePositive(errs, p.Child("interval"), r.Interval)
}
