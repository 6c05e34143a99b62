package main

import (
	"context"

	"github.com/kds-engine/kds-engine/sdk"
)

// MeshTimeoutSpec sets connection and request timeouts for traffic to (or
// from) the services its entries select.
type MeshTimeoutSpec struct {
	TargetRef TargetRef      `json:"targetRef"`
	To        []TimeoutEntry `json:"to,omitempty"`
	From      []TimeoutEntry `json:"from,omitempty"`
}

// TimeoutEntry applies Default to the traffic selected by TargetRef.
type TimeoutEntry struct {
	TargetRef TargetRef   `json:"targetRef"`
	Default   TimeoutConf `json:"default"`
}

// TimeoutConf holds the timeouts; at least one must be set.
type TimeoutConf struct {
	ConnectTimeout Duration     `json:"connectTimeout,omitempty"`
	IdleTimeout    Duration     `json:"idleTimeout,omitempty"`
	HTTP           *HTTPTimeout `json:"http,omitempty"`
}

// HTTPTimeout holds HTTP-level timeouts.
type HTTPTimeout struct {
	RequestTimeout    Duration `json:"requestTimeout,omitempty"`
	StreamIdleTimeout Duration `json:"streamIdleTimeout,omitempty"`
	MaxStreamDuration Duration `json:"maxStreamDuration,omitempty"`
}

var meshTimeoutType = sdk.Define(sdk.TypeSpec[MeshTimeoutSpec]{
	Name:          "MeshTimeout",
	Direction:     sdk.GlobalToZone,
	Scope:         sdk.ScopeMesh,
	Description:   "Connection and request timeouts.",
	SchemaVersion: 1,
	Validate:      validateMeshTimeout,
})

func validateMeshTimeout(_ context.Context, _ sdk.Meta, s *MeshTimeoutSpec) sdk.ErrorList {
	var errs sdk.ErrorList
	spec := sdk.Field("spec")
	validateTargetRef(&errs, spec.Child("targetRef"), s.TargetRef)
	if len(s.To) == 0 && len(s.From) == 0 {
		errs.Add(spec, "needs at least one of to or from")
	}
	check := func(list string, entries []TimeoutEntry) {
		for i, e := range entries {
			p := spec.Child(list).Index(i)
			validateTargetRef(&errs, p.Child("targetRef"), e.TargetRef)
			d := p.Child("default")
			c := e.Default
			set := 0
			for _, f := range []struct {
				name string
				v    Duration
			}{{"connectTimeout", c.ConnectTimeout}, {"idleTimeout", c.IdleTimeout}} {
				if f.v != "" {
					set++
					parsePositive(&errs, d.Child(f.name), f.v)
				}
			}
			if h := c.HTTP; h != nil {
				hp := d.Child("http")
				req := parsePositive(&errs, hp.Child("requestTimeout"), h.RequestTimeout)
				parsePositive(&errs, hp.Child("streamIdleTimeout"), h.StreamIdleTimeout)
				maxStream := parsePositive(&errs, hp.Child("maxStreamDuration"), h.MaxStreamDuration)
				if h.RequestTimeout != "" || h.StreamIdleTimeout != "" || h.MaxStreamDuration != "" {
					set++
				}
				if req > 0 && maxStream > 0 && req > maxStream {
					errs.Add(hp.Child("requestTimeout"), "%s is longer than maxStreamDuration %s, so it can never fire", h.RequestTimeout, h.MaxStreamDuration)
				}
			}
			if set == 0 {
				errs.Add(d, "sets no timeout")
			}
		}
	}
	check("to", s.To)
	check("from", s.From)
	return errs
}
