package main

import (
	"context"
	"slices"

	"github.com/kds-engine/kds-engine/sdk"
)

// MeshRetrySpec retries failed requests to the services its entries select.
type MeshRetrySpec struct {
	TargetRef TargetRef    `json:"targetRef"`
	To        []RetryEntry `json:"to"`
}

// RetryEntry applies Default to requests to TargetRef.
type RetryEntry struct {
	TargetRef TargetRef `json:"targetRef"`
	Default   RetryConf `json:"default"`
}

// RetryConf holds the HTTP and TCP retry settings; at least one is set.
type RetryConf struct {
	HTTP *HTTPRetry `json:"http,omitempty"`
	TCP  *TCPRetry  `json:"tcp,omitempty"`
}

// HTTPRetry retries HTTP requests.
type HTTPRetry struct {
	NumRetries    *int     `json:"numRetries,omitempty" jsonschema:"minimum=0,maximum=100"`
	PerTryTimeout Duration `json:"perTryTimeout,omitempty"`
	BackOff       *BackOff `json:"backOff,omitempty"`
	RetryOn       []string `json:"retryOn,omitempty"`
}

// BackOff is exponential back-off between retries.
type BackOff struct {
	BaseInterval Duration `json:"baseInterval,omitempty"`
	MaxInterval  Duration `json:"maxInterval,omitempty"`
}

// TCPRetry retries TCP connection attempts.
type TCPRetry struct {
	MaxConnectAttempt int `json:"maxConnectAttempt" jsonschema:"minimum=1"`
}

var retryOnConditions = []string{
	"5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx",
	"refused-stream", "retriable-status-codes", "http3-post-connect-failure",
}

var meshRetryType = sdk.Define(sdk.TypeSpec[MeshRetrySpec]{
	Name:          "MeshRetry",
	Direction:     sdk.GlobalToZone,
	Scope:         sdk.ScopeMesh,
	Description:   "Retries of failed requests and connection attempts.",
	SchemaVersion: 1,
	Validate:      validateMeshRetry,
})

func validateMeshRetry(_ context.Context, _ sdk.Meta, s *MeshRetrySpec) sdk.ErrorList {
	var errs sdk.ErrorList
	spec := sdk.Field("spec")
	validateTargetRef(&errs, spec.Child("targetRef"), s.TargetRef, "Mesh", "MeshSubset", "MeshService", "MeshServiceSubset", "MeshGateway")
	if len(s.To) == 0 {
		errs.Add(spec.Child("to"), "needs at least one entry")
	}
	for i, e := range s.To {
		p := spec.Child("to").Index(i)
		validateTargetRef(&errs, p.Child("targetRef"), e.TargetRef, "Mesh", "MeshService")
		d := p.Child("default")
		if e.Default.HTTP == nil && e.Default.TCP == nil {
			errs.Add(d, "needs http or tcp")
		}
		if h := e.Default.HTTP; h != nil {
			hp := d.Child("http")
			if h.NumRetries != nil && (*h.NumRetries < 0 || *h.NumRetries > 100) {
				errs.Invalid(hp.Child("numRetries"), *h.NumRetries, "must be between 0 and 100")
			}
			perTry := parsePositive(&errs, hp.Child("perTryTimeout"), h.PerTryTimeout)
			if b := h.BackOff; b != nil {
				bp := hp.Child("backOff")
				base := parsePositive(&errs, bp.Child("baseInterval"), b.BaseInterval)
				maxI := parsePositive(&errs, bp.Child("maxInterval"), b.MaxInterval)
				if base > 0 && maxI > 0 && base > maxI {
					errs.Add(bp.Child("baseInterval"), "%s is greater than maxInterval %s", b.BaseInterval, b.MaxInterval)
				}
			}
			if h.NumRetries != nil && *h.NumRetries == 0 && (perTry > 0 || h.BackOff != nil) {
				errs.Add(hp.Child("numRetries"), "is 0, which disables retries, but perTryTimeout or backOff is set")
			}
			for j, c := range h.RetryOn {
				if !slices.Contains(retryOnConditions, c) {
					errs.Invalid(hp.Child("retryOn").Index(j), c, "unknown condition")
				}
			}
		}
		if t := e.Default.TCP; t != nil && t.MaxConnectAttempt < 1 {
			errs.Invalid(d.Child("tcp").Child("maxConnectAttempt"), t.MaxConnectAttempt, "must be at least 1")
		}
	}
	return errs
}
