package main

import (
	"context"
	"time"

	"github.com/invopop/jsonschema"

	"github.com/kds-engine/kds-engine/sdk"
)

// DataplaneInsightSpec is the status of a dataplane's connections to its
// control plane, following Kuma's DataplaneInsight
// (dataplane_insight.proto). Like Dataplane, Kuma's universal documents
// write these fields at the top level.
type DataplaneInsightSpec struct {
	Subscriptions []Subscription `json:"subscriptions,omitempty"`
	MTLS          *InsightMTLS   `json:"mTLS,omitempty"`
	Metadata      map[string]any `json:"metadata,omitempty"`
	OpenTelemetry map[string]any `json:"openTelemetry,omitempty"`
	// OldMTLS is the name kds-engine used before schema version 2.
	OldMTLS *Renamed `json:"mtls,omitempty"`
}

// Subscription is one connection of the proxy to a control plane.
type Subscription struct {
	ID                     string              `json:"id,omitempty"`
	ControlPlaneInstanceID string              `json:"controlPlaneInstanceId,omitempty"`
	ConnectTime            string              `json:"connectTime,omitempty"`
	DisconnectTime         string              `json:"disconnectTime,omitempty"`
	Status                 *SubscriptionStatus `json:"status,omitempty"`
	Version                map[string]any      `json:"version,omitempty"`
	Generation             uint32              `json:"generation,omitempty"`
	// Fields kds-engine kept on the subscription before schema version 2.
	ResponsesSent         *Renamed `json:"responsesSent,omitempty"`
	ResponsesAcknowledged *Renamed `json:"responsesAcknowledged,omitempty"`
	ResponsesRejected     *Renamed `json:"responsesRejected,omitempty"`
}

// SubscriptionStatus counts the xDS responses of a subscription.
type SubscriptionStatus struct {
	LastUpdateTime string        `json:"lastUpdateTime,omitempty"`
	Total          *ServiceStats `json:"total,omitempty"`
	CDS            *ServiceStats `json:"cds,omitempty"`
	EDS            *ServiceStats `json:"eds,omitempty"`
	LDS            *ServiceStats `json:"lds,omitempty"`
	RDS            *ServiceStats `json:"rds,omitempty"`
}

// ServiceStats counts responses of one discovery service. The counters are
// 64-bit, so protobuf JSON may write them as strings.
type ServiceStats struct {
	ResponsesSent         any `json:"responsesSent,omitempty"`
	ResponsesAcknowledged any `json:"responsesAcknowledged,omitempty"`
	ResponsesRejected     any `json:"responsesRejected,omitempty"`
}

// InsightMTLS is the state of the proxy's certificate.
type InsightMTLS struct {
	CertificateExpirationTime   string   `json:"certificateExpirationTime,omitempty"`
	LastCertificateRegeneration string   `json:"lastCertificateRegeneration,omitempty"`
	CertificateRegenerations    uint32   `json:"certificateRegenerations,omitempty"`
	IssuedBackend               string   `json:"issuedBackend,omitempty"`
	SupportedBackends           []string `json:"supportedBackends,omitempty"`
}

// Renamed is a field kds-engine used to accept under a name Kuma does not
// use; any value in it is refused with a message naming the new field.
type Renamed struct{ set bool }

// UnmarshalJSON accepts any value; the validator reports the field.
func (r *Renamed) UnmarshalJSON([]byte) error { r.set = true; return nil }

// JSONSchema lets any value through the schema step so the plugin can
// name the replacement.
func (Renamed) JSONSchema() *jsonschema.Schema {
	return &jsonschema.Schema{Description: "Renamed; refused with a message naming the new field."}
}

var dataplaneInsightType = sdk.Define(sdk.TypeSpec[DataplaneInsightSpec]{
	Name:          "DataplaneInsight",
	Direction:     sdk.ZoneToGlobal,
	Scope:         sdk.ScopeMesh,
	Description:   "Connection and certificate status of a dataplane (Kuma's DataplaneInsight).",
	SchemaVersion: 2,
	Validate:      validateDataplaneInsight,
})

func renamed(errs *sdk.ErrorList, p sdk.Path, r *Renamed, now string) {
	if r != nil {
		errs.Add(p, "this field was renamed: use %s (Kuma's name for it)", now)
	}
}

func validateDataplaneInsight(_ context.Context, _ sdk.Meta, s *DataplaneInsightSpec) sdk.ErrorList {
	var errs sdk.ErrorList
	spec := sdk.Field("spec")
	renamed(&errs, spec.Child("mtls"), s.OldMTLS, "mTLS")
	for i, sub := range s.Subscriptions {
		p := spec.Child("subscriptions").Index(i)
		renamed(&errs, p.Child("responsesSent"), sub.ResponsesSent, "status.total.responsesSent")
		renamed(&errs, p.Child("responsesAcknowledged"), sub.ResponsesAcknowledged, "status.total.responsesAcknowledged")
		renamed(&errs, p.Child("responsesRejected"), sub.ResponsesRejected, "status.total.responsesRejected")
		if sub.ID == "" {
			errs.Add(p.Child("id"), "must be set")
		}
		if sub.ControlPlaneInstanceID == "" {
			errs.Add(p.Child("controlPlaneInstanceId"), "must be set")
		}
		connect := parseTime(&errs, p.Child("connectTime"), sub.ConnectTime, true)
		if disconnect := parseTime(&errs, p.Child("disconnectTime"), sub.DisconnectTime, false); !connect.IsZero() && !disconnect.IsZero() && disconnect.Before(connect) {
			errs.Add(p.Child("disconnectTime"), "is before connectTime")
		}
		if sub.Status == nil {
			errs.Add(p.Child("status"), "must be set")
		} else {
			parseTime(&errs, p.Child("status").Child("lastUpdateTime"), sub.Status.LastUpdateTime, false)
		}
	}
	if m := s.MTLS; m != nil {
		mp := spec.Child("mTLS")
		parseTime(&errs, mp.Child("certificateExpirationTime"), m.CertificateExpirationTime, false)
		parseTime(&errs, mp.Child("lastCertificateRegeneration"), m.LastCertificateRegeneration, false)
	}
	return errs
}

func parseTime(errs *sdk.ErrorList, p sdk.Path, s string, required bool) time.Time {
	if s == "" {
		if required {
			errs.Add(p, "must be set")
		}
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		errs.Invalid(p, s, "not an RFC 3339 time")
	}
	return t
}
