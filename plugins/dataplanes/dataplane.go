package main

import (
	"context"
	"net/netip"
	"regexp"
	"time"

	"github.com/kds-engine/kds-engine/sdk"
)

// ServiceTag names the service a dataplane inbound belongs to.
const ServiceTag = "kuma.io/service"

// DataplaneSpec is a proxy: its address and the ports it serves.
type DataplaneSpec struct {
	Networking Networking `json:"networking"`
}

// Networking holds the address and listeners of a dataplane.
type Networking struct {
	Address string     `json:"address"`
	Inbound []Inbound  `json:"inbound,omitempty"`
	Gateway *Gateway   `json:"gateway,omitempty"`
	Admin   *AdminPort `json:"admin,omitempty"`
}

// Inbound is one port the dataplane serves for a service.
type Inbound struct {
	Port        int               `json:"port"`
	ServicePort int               `json:"servicePort,omitempty"`
	Address     string            `json:"address,omitempty"`
	Tags        map[string]string `json:"tags"`
}

// Gateway marks the dataplane as a gateway for a service.
type Gateway struct {
	Tags map[string]string `json:"tags"`
}

// AdminPort is the proxy's admin listener.
type AdminPort struct {
	Port int `json:"port"`
}

var tagValueRE = regexp.MustCompile(`^[A-Za-z0-9_.:/-]{1,253}$`)

var dataplaneType = sdk.Define(sdk.TypeSpec[DataplaneSpec]{
	Name:          "Dataplane",
	Direction:     sdk.ZoneToGlobal,
	Scope:         sdk.ScopeMesh,
	Description:   "A proxy next to a service instance: its address and inbound ports.",
	SchemaVersion: 1,
	Validate:      validateDataplane,
})

func validateDataplane(_ context.Context, _ sdk.Meta, s *DataplaneSpec) sdk.ErrorList {
	var errs sdk.ErrorList
	n := sdk.Field("spec").Child("networking")
	checkIP(&errs, n.Child("address"), s.Networking.Address, true)
	if len(s.Networking.Inbound) == 0 && s.Networking.Gateway == nil {
		errs.Add(n, "needs at least one inbound or a gateway")
	}
	if len(s.Networking.Inbound) > 0 && s.Networking.Gateway != nil {
		errs.Add(n.Child("gateway"), "must not be set together with inbound")
	}
	type listener struct {
		addr string
		port int
	}
	seen := map[listener]int{}
	for i, in := range s.Networking.Inbound {
		p := n.Child("inbound").Index(i)
		if checkPort(&errs, p.Child("port"), in.Port) {
			l := listener{in.Address, in.Port}
			if first, dup := seen[l]; dup {
				errs.Add(p.Child("port"), "port %d is already used by inbound[%d]", in.Port, first)
			} else {
				seen[l] = i
			}
		}
		if in.ServicePort != 0 {
			checkPort(&errs, p.Child("servicePort"), in.ServicePort)
		}
		if in.Address != "" {
			checkIP(&errs, p.Child("address"), in.Address, false)
		}
		checkTags(&errs, p.Child("tags"), in.Tags)
	}
	if g := s.Networking.Gateway; g != nil {
		checkTags(&errs, n.Child("gateway").Child("tags"), g.Tags)
	}
	if a := s.Networking.Admin; a != nil {
		if checkPort(&errs, n.Child("admin").Child("port"), a.Port) {
			for i, in := range s.Networking.Inbound {
				if in.Port == a.Port && in.Address == "" {
					errs.Add(n.Child("admin").Child("port"), "port %d is also inbound[%d]'s port", a.Port, i)
				}
			}
		}
	}
	return errs
}

func checkIP(errs *sdk.ErrorList, p sdk.Path, s string, required bool) {
	if s == "" {
		if required {
			errs.Required(p)
		}
		return
	}
	if _, err := netip.ParseAddr(s); err != nil {
		errs.Invalid(p, s, "not an IP address")
	}
}

func checkPort(errs *sdk.ErrorList, p sdk.Path, port int) bool {
	if port < 1 || port > 65535 {
		errs.Invalid(p, port, "port must be between 1 and 65535")
		return false
	}
	return true
}

func checkTags(errs *sdk.ErrorList, p sdk.Path, tags map[string]string) {
	svc, ok := tags[ServiceTag]
	if !ok || svc == "" {
		errs.Add(p.Key(ServiceTag), "is required: every inbound belongs to a service")
	}
	for k, v := range tags {
		if k == "" {
			errs.Add(p, "tag names must not be empty")
			continue
		}
		if !tagValueRE.MatchString(v) {
			errs.Invalid(p.Key(k), v, "tag values are 1-253 characters of letters, digits and _.:/-")
		}
	}
}

// DataplaneInsightSpec is the connection status of a dataplane.
type DataplaneInsightSpec struct {
	Subscriptions []Subscription `json:"subscriptions,omitempty"`
	MTLS          *InsightMTLS   `json:"mtls,omitempty"`
}

// Subscription is one connection of the proxy to its control plane.
type Subscription struct {
	ID                     string `json:"id"`
	ControlPlaneInstanceID string `json:"controlPlaneInstanceId"`
	ConnectTime            string `json:"connectTime"`
	DisconnectTime         string `json:"disconnectTime,omitempty"`
	ResponsesSent          uint64 `json:"responsesSent,omitempty"`
	ResponsesAcknowledged  uint64 `json:"responsesAcknowledged,omitempty"`
	ResponsesRejected      uint64 `json:"responsesRejected,omitempty"`
}

// InsightMTLS is the state of the proxy's certificate.
type InsightMTLS struct {
	CertificateExpirationTime string `json:"certificateExpirationTime,omitempty"`
	IssuedBackend             string `json:"issuedBackend,omitempty"`
}

var dataplaneInsightType = sdk.Define(sdk.TypeSpec[DataplaneInsightSpec]{
	Name:          "DataplaneInsight",
	Direction:     sdk.ZoneToGlobal,
	Scope:         sdk.ScopeMesh,
	Description:   "Connection and certificate status of a dataplane.",
	SchemaVersion: 1,
	Validate:      validateDataplaneInsight,
})

func validateDataplaneInsight(_ context.Context, _ sdk.Meta, s *DataplaneInsightSpec) sdk.ErrorList {
	var errs sdk.ErrorList
	spec := sdk.Field("spec")
	ids := map[string]int{}
	open := -1
	for i, sub := range s.Subscriptions {
		p := spec.Child("subscriptions").Index(i)
		if sub.ID == "" {
			errs.Required(p.Child("id"))
		} else if first, dup := ids[sub.ID]; dup {
			errs.Add(p.Child("id"), "duplicates subscriptions[%d]", first)
		} else {
			ids[sub.ID] = i
		}
		if sub.ControlPlaneInstanceID == "" {
			errs.Required(p.Child("controlPlaneInstanceId"))
		}
		connect := parseTime(&errs, p.Child("connectTime"), sub.ConnectTime, true)
		if sub.DisconnectTime == "" {
			if open >= 0 {
				errs.Add(p.Child("disconnectTime"), "subscriptions[%d] is still connected; only one subscription may be open", open)
			}
			open = i
		} else if disconnect := parseTime(&errs, p.Child("disconnectTime"), sub.DisconnectTime, false); !connect.IsZero() && !disconnect.IsZero() && disconnect.Before(connect) {
			errs.Add(p.Child("disconnectTime"), "is before connectTime")
		}
		if sub.ResponsesAcknowledged+sub.ResponsesRejected > sub.ResponsesSent {
			errs.Add(p.Child("responsesAcknowledged"), "acknowledged (%d) + rejected (%d) exceed sent (%d)", sub.ResponsesAcknowledged, sub.ResponsesRejected, sub.ResponsesSent)
		}
	}
	if m := s.MTLS; m != nil && m.CertificateExpirationTime != "" {
		parseTime(&errs, spec.Child("mtls").Child("certificateExpirationTime"), m.CertificateExpirationTime, false)
	}
	return errs
}

func parseTime(errs *sdk.ErrorList, p sdk.Path, s string, required bool) time.Time {
	if s == "" {
		if required {
			errs.Required(p)
		}
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		errs.Invalid(p, s, "not an RFC 3339 time")
	}
	return t
}
