package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"

	"github.com/invopop/jsonschema"

	"github.com/kds-engine/kds-engine/sdk"
)

// MeshRetrySpec retries failed requests and connection attempts to the
// destinations in To, following Kuma's MeshRetry (v1alpha1).
type MeshRetrySpec struct {
	// TargetRef selects the proxies; left out, it means the whole mesh.
	TargetRef *TargetRef `json:"targetRef,omitempty"`
	To        *[]RetryTo `json:"to,omitempty"`
}

// RetryTo applies Default to the destinations TargetRef selects.
type RetryTo struct {
	TargetRef TargetRef `json:"targetRef,omitempty"`
	Default   RetryConf `json:"default,omitempty"`
}

// RetryConf holds the retry policy per protocol; at least one must be set.
type RetryConf struct {
	TCP  *TCPRetry  `json:"tcp,omitempty"`
	HTTP *HTTPRetry `json:"http,omitempty"`
	GRPC *GRPCRetry `json:"grpc,omitempty"`
}

// TCPRetry retries TCP connection attempts.
type TCPRetry struct {
	MaxConnectAttempt *uint32 `json:"maxConnectAttempt,omitempty"`
}

// HTTPRetry retries HTTP requests.
type HTTPRetry struct {
	NumRetries               *uint32             `json:"numRetries,omitempty"`
	PerTryTimeout            *Duration           `json:"perTryTimeout,omitempty"`
	BackOff                  *BackOff            `json:"backOff,omitempty"`
	RateLimitedBackOff       *RateLimitedBackOff `json:"rateLimitedBackOff,omitempty"`
	RetryOn                  *[]RetryCondition   `json:"retryOn,omitempty"`
	RetriableResponseHeaders *[]HeaderMatch      `json:"retriableResponseHeaders,omitempty"`
	RetriableRequestHeaders  *[]HeaderMatch      `json:"retriableRequestHeaders,omitempty"`
	HostSelection            *[]Predicate        `json:"hostSelection,omitempty"`
	HostSelectionMaxAttempts *int64              `json:"hostSelectionMaxAttempts,omitempty"`
}

// GRPCRetry retries gRPC calls.
type GRPCRetry struct {
	NumRetries         *uint32             `json:"numRetries,omitempty"`
	PerTryTimeout      *Duration           `json:"perTryTimeout,omitempty"`
	BackOff            *BackOff            `json:"backOff,omitempty"`
	RateLimitedBackOff *RateLimitedBackOff `json:"rateLimitedBackOff,omitempty"`
	RetryOn            *[]RetryCondition   `json:"retryOn,omitempty"`
}

// RetryCondition is one retryOn entry: a condition name or, for HTTP, a
// status code, written as a string or a number.
type RetryCondition string

// UnmarshalJSON accepts a string or a number.
func (c *RetryCondition) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*c = RetryCondition(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return errors.New("must be a string or a number")
	}
	*c = RetryCondition(n.String())
	return nil
}

// JSONSchema allows a string or an integer.
func (RetryCondition) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{OneOf: []*jsonschema.Schema{{Type: "string"}, {Type: "integer"}}}
}

// BackOff is the exponential wait between retries.
type BackOff struct {
	BaseInterval *Duration `json:"baseInterval,omitempty"`
	MaxInterval  *Duration `json:"maxInterval,omitempty"`
}

// RateLimitedBackOff waits as long as the upstream's rate-limit reset
// headers say.
type RateLimitedBackOff struct {
	ResetHeaders *[]ResetHeader `json:"resetHeaders,omitempty"`
	MaxInterval  *Duration      `json:"maxInterval,omitempty"`
}

// ResetHeader names a header that says when to retry.
type ResetHeader struct {
	Name   string `json:"name,omitempty"`
	Format string `json:"format,omitempty" jsonschema:"enum=Seconds,enum=UnixTimestamp"`
}

// Predicate excludes hosts from retries.
type Predicate struct {
	Predicate       string             `json:"predicate,omitempty"`
	Tags            *map[string]string `json:"tags,omitempty"`
	UpdateFrequency int32              `json:"updateFrequency,omitempty"`
}

// retryOnHTTP are the named HTTP retry conditions; a numeric HTTP status
// code is also a condition.
var retryOnHTTP = []string{
	"5xx", "GatewayError", "Reset", "Retriable4xx", "ConnectFailure", "EnvoyRatelimited",
	"RefusedStream", "Http3PostConnectFailure",
	"HttpMethodConnect", "HttpMethodDelete", "HttpMethodGet", "HttpMethodHead", "HttpMethodOptions",
	"HttpMethodPatch", "HttpMethodPost", "HttpMethodPut", "HttpMethodTrace",
}

// oldRetryOn maps the spellings kds-engine accepted before schema version
// 2 (Envoy's) to Kuma's.
var oldRetryOn = map[string]string{
	"gateway-error": "GatewayError", "reset": "Reset", "connect-failure": "ConnectFailure",
	"retriable-4xx": "Retriable4xx", "refused-stream": "RefusedStream",
	"http3-post-connect-failure": "Http3PostConnectFailure", "envoy-ratelimited": "EnvoyRatelimited",
	"retriable-status-codes": "a numeric status code such as \"503\"",
}

var retryOnGRPC = []string{"Canceled", "DeadlineExceeded", "Internal", "ResourceExhausted", "Unavailable"}

var meshRetryType = sdk.Define(sdk.TypeSpec[MeshRetrySpec]{
	Name:          "MeshRetry",
	Direction:     sdk.GlobalToZone,
	Scope:         sdk.ScopeMesh,
	Description:   "Retries of failed requests and connection attempts (Kuma's MeshRetry).",
	SchemaVersion: 2,
	Validate:      validateMeshRetry,
})

func validateMeshRetry(_ context.Context, meta sdk.Meta, s *MeshRetrySpec) sdk.ErrorList {
	var errs sdk.ErrorList
	spec := sdk.Field("spec")
	if s.TargetRef != nil {
		o := targetOpts{kinds: []string{KindMesh, KindMeshSubset, KindMeshService, KindMeshServiceSubset, KindDataplane}}
		if systemRole(meta) {
			o.kinds = []string{KindMesh, KindMeshSubset, KindMeshGateway, KindMeshService, KindMeshServiceSubset, KindMeshHTTPRoute, KindDataplane}
			o.gatewayTags = true
		}
		validateTargetRef(&errs, spec.Child("targetRef"), *s.TargetRef, o)
	}
	top := topRef(s.TargetRef).Kind
	kinds := []string{KindMesh, KindMeshService, KindMeshExternalService, KindMeshMultiZoneService, KindMeshHTTPRoute}
	if top == KindMeshGateway || top == KindMeshHTTPRoute {
		kinds = []string{KindMesh, KindMeshExternalService}
	}
	for i, t := range deref(s.To) {
		p := spec.Child("to").Index(i)
		validateTargetRef(&errs, p.Child("targetRef"), t.TargetRef, targetOpts{kinds: kinds})
		// Kuma reports the problems of default one level further down, at
		// default.conf; kds-engine reports the same paths.
		c := p.Child("default").Child("conf")
		d := t.Default
		if d.TCP == nil && d.HTTP == nil && d.GRPC == nil {
			errs.Add(c, "set at least one of tcp, http or grpc")
		}
		if d.TCP != nil {
			tp := c.Child("tcp")
			if d.TCP.MaxConnectAttempt == nil {
				errs.Add(tp, "must not be empty: set maxConnectAttempt")
			} else if *d.TCP.MaxConnectAttempt == 0 {
				errs.Add(tp.Child("maxConnectAttempt"), "must be greater than zero")
			}
		}
		if h := d.HTTP; h != nil {
			hp := c.Child("http")
			if h.NumRetries == nil && h.PerTryTimeout == nil && h.BackOff == nil && h.RetryOn == nil &&
				h.RetriableRequestHeaders == nil && h.RetriableResponseHeaders == nil &&
				h.RateLimitedBackOff == nil && h.HostSelection == nil {
				errs.Add(hp, "must not be empty")
			}
			parseDuration(&errs, hp.Child("perTryTimeout"), h.PerTryTimeout)
			validateBackOff(&errs, hp.Child("backOff"), h.BackOff)
			validateRateLimitedBackOff(&errs, hp.Child("rateLimitedBackOff"), h.RateLimitedBackOff)
			for j, c := range deref(h.RetryOn) {
				ro := string(c)
				if slices.Contains(retryOnHTTP, ro) {
					continue
				}
				if n, err := strconv.Atoi(ro); err == nil && http.StatusText(n) != "" {
					continue
				}
				if now, ok := oldRetryOn[ro]; ok {
					errs.Invalid(hp.Child("retryOn").Index(j), ro, "this spelling was renamed: use "+now)
					continue
				}
				errs.Invalid(hp.Child("retryOn").Index(j), ro, "unknown condition; use one of 5xx, GatewayError, Reset, Retriable4xx, ConnectFailure, EnvoyRatelimited, RefusedStream, Http3PostConnectFailure, HttpMethod<Method> or an HTTP status code")
			}
			validateHostSelection(&errs, hp.Child("hostSelection"), h.HostSelection)
		}
		if g := d.GRPC; g != nil {
			gp := c.Child("grpc")
			if g.NumRetries == nil && g.PerTryTimeout == nil && g.BackOff == nil && g.RetryOn == nil && g.RateLimitedBackOff == nil {
				errs.Add(gp, "must not be empty")
			}
			parseDuration(&errs, gp.Child("perTryTimeout"), g.PerTryTimeout)
			validateBackOff(&errs, gp.Child("backOff"), g.BackOff)
			validateRateLimitedBackOff(&errs, gp.Child("rateLimitedBackOff"), g.RateLimitedBackOff)
			for j, c := range deref(g.RetryOn) {
				if ro := string(c); !slices.Contains(retryOnGRPC, ro) {
					errs.Invalid(gp.Child("retryOn").Index(j), ro, "unknown condition; use one of Canceled, DeadlineExceeded, Internal, ResourceExhausted, Unavailable")
				}
			}
		}
	}
	return errs
}

func validateBackOff(errs *sdk.ErrorList, p sdk.Path, b *BackOff) {
	if b == nil {
		return
	}
	if b.BaseInterval == nil && b.MaxInterval == nil {
		errs.Add(p, "must not be empty: set baseInterval or maxInterval")
	}
	parseDuration(errs, p.Child("baseInterval"), b.BaseInterval)
	parseDuration(errs, p.Child("maxInterval"), b.MaxInterval)
}

func validateRateLimitedBackOff(errs *sdk.ErrorList, p sdk.Path, r *RateLimitedBackOff) {
	if r == nil {
		return
	}
	positive(errs, p.Child("maxInterval"), r.MaxInterval)
	if r.ResetHeaders == nil {
		errs.Add(p.Child("resetHeaders"), "must be set")
		return
	}
	for i, h := range *r.ResetHeaders {
		if h.Name == "" {
			errs.Add(p.Child("resetHeaders").Index(i).Child("name"), "must not be empty")
		}
	}
}

func validateHostSelection(errs *sdk.ErrorList, p sdk.Path, ps *[]Predicate) {
	priorities := false
	for i, pr := range deref(ps) {
		ip := p.Index(i)
		switch pr.Predicate {
		case "OmitHostsWithTags":
			if pr.Tags == nil {
				errs.Add(ip.Child("tags"), "must be set for OmitHostsWithTags")
			}
		case "OmitPreviousPriorities":
			if priorities {
				errs.Add(ip.Child("predicate"), "OmitPreviousPriorities may appear only once")
			}
			if pr.UpdateFrequency <= 0 {
				errs.Add(ip.Child("updateFrequency"), "must be set and greater than zero")
			}
			priorities = true
		case "OmitPreviousHosts":
		default:
			errs.Invalid(ip.Child("predicate"), pr.Predicate, "unknown predicate; use OmitPreviousHosts, OmitHostsWithTags or OmitPreviousPriorities")
		}
	}
}
