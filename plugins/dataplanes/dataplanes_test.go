package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kds-engine/kds-engine/sdk/sdktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDescribe(t *testing.T) {
	d := sdktest.Start(t, plugin()).Describe()
	assert.Equal(t, "dataplanes", d.GetName())
	require.Len(t, d.GetTypes(), 2)
	for _, ty := range d.GetTypes() {
		assert.Equal(t, "DIRECTION_ZONE_TO_GLOBAL", ty.GetDirection().String())
		assert.Equal(t, "SCOPE_MESH", ty.GetScope().String())
	}
	assert.Equal(t, "Dataplane", d.GetTypes()[0].GetName())
	assert.Equal(t, "DataplaneInsight", d.GetTypes()[1].GetName())
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		typ    string
		spec   string
		fields []string
		msg    string
	}{
		// Dataplane: Kuma's dataplane.proto fields; Kuma's paths below spec.
		{"dp ok", "Dataplane", `{"networking":{"address":"10.0.0.1","inbound":[{"port":8080,"servicePort":80,"name":"http","tags":{"kuma.io/service":"web","version":"v1","kuma.io/protocol":"http"}},{"port":8081,"tags":{"kuma.io/service":"web-admin"}}],"outbound":[{"port":10001,"tags":{"kuma.io/service":"api"}},{"port":10002,"backendRef":{"kind":"MeshService","name":"db","port":5432}}],"admin":{"port":9901}}}`, nil, ""},
		{"dp hostname and ipv6", "Dataplane", `{"networking":{"address":"web-1.local","inbound":[{"port":1,"address":"fd00::1","tags":{"kuma.io/service":"a"}}]}}`, nil, ""},
		{"dp inbound without tags", "Dataplane", `{"networking":{"address":"10.0.0.1","inbound":[{"port":80,"name":"main"}]}}`, nil, ""},
		{"dp delegated gateway", "Dataplane", `{"networking":{"address":"10.0.0.2","gateway":{"tags":{"kuma.io/service":"edge"}}}}`, nil, ""},
		{"dp builtin gateway", "Dataplane", `{"networking":{"address":"10.0.0.2","gateway":{"type":"BUILTIN","tags":{"kuma.io/service":"edge"}}}}`, nil, ""},
		{"dp transparent proxy and probes", "Dataplane", `{"networking":{"address":"10.0.0.3","inbound":[{"port":80,"tags":{"kuma.io/service":"a"},"serviceProbe":{"interval":"5s","timeout":"1s","healthyThreshold":1}}],"transparentProxying":{"redirectPortInbound":15006,"redirectPortOutbound":15001,"reachableBackends":{"refs":[{"kind":"MeshService","name":"b"}]}}},"probes":{"port":9000,"endpoints":[{"inboundPort":80,"inboundPath":"/healthz","path":"/80/healthz"}]}}`, nil, ""},
		{"dp no networking", "Dataplane", `{}`, []string{"spec.networking"}, "must be set"},
		{"dp address missing", "Dataplane", `{"networking":{"inbound":[{"port":80,"tags":{"kuma.io/service":"web"}}]}}`, []string{"spec.networking.address"}, "must be set"},
		{"dp address unspecified", "Dataplane", `{"networking":{"address":"0.0.0.0","inbound":[{"port":80,"tags":{"kuma.io/service":"web"}}]}}`, []string{"spec.networking.address"}, "0.0.0.0"},
		{"dp address garbage", "Dataplane", `{"networking":{"address":"not an address","inbound":[{"port":80,"tags":{"kuma.io/service":"web"}}]}}`, []string{"spec.networking.address"}, "IP address or a domain name"},
		{"dp port zero", "Dataplane", `{"networking":{"address":"10.0.0.1","inbound":[{"port":80,"tags":{"kuma.io/service":"a"}},{"port":0,"tags":{"kuma.io/service":"b"}}]}}`, []string{"spec.networking.inbound[1].port"}, "between 1 and 65535"},
		{"dp port too big", "Dataplane", `{"networking":{"address":"10.0.0.1","inbound":[{"port":65536,"tags":{"kuma.io/service":"a"}}]}}`, []string{"spec.networking.inbound[0].port"}, "between 1 and 65535"},
		{"dp tags without service", "Dataplane", `{"networking":{"address":"10.0.0.1","inbound":[{"port":80,"tags":{"version":"v1"}}]}}`, []string{`spec.networking.inbound[0].tags["kuma.io/service"]`}, "required"},
		{"dp bad tag value", "Dataplane", `{"networking":{"address":"10.0.0.1","inbound":[{"port":80,"tags":{"kuma.io/service":"web","team":"a b"}}]}}`, []string{`spec.networking.inbound[0].tags["team"]`}, "tag values"},
		{"dp null tag value", "Dataplane", `{"networking":{"address":"10.0.0.1","inbound":[{"port":80,"tags":{"kuma.io/service":"web","version":null}}]}}`, []string{`spec.networking.inbound[0].tags["version"]`}, "must not be empty"},
		{"dp bad protocol", "Dataplane", `{"networking":{"address":"10.0.0.1","inbound":[{"port":80,"tags":{"kuma.io/service":"web","kuma.io/protocol":"smtp"}}]}}`, []string{`spec.networking.inbound[0].tags["kuma.io/protocol"]`}, "unknown protocol"},
		{"dp service address clash", "Dataplane", `{"networking":{"address":"10.0.0.1","inbound":[{"port":80,"serviceAddress":"10.0.0.1","tags":{"kuma.io/service":"web"}}]}}`, []string{"spec.networking.inbound[0].serviceAddress"}, "differ"},
		{"dp outbound without service", "Dataplane", `{"networking":{"address":"10.0.0.1","outbound":[{"port":10001}]}}`, []string{"spec.networking.outbound[0].tags"}, "kuma.io/service"},
		{"dp outbound backendRef kind", "Dataplane", `{"networking":{"address":"10.0.0.1","outbound":[{"port":10001,"backendRef":{"kind":"Service","name":"a","port":80}}]}}`, []string{"spec.networking.outbound[0].backendRef.kind"}, "MeshService"},
		{"dp delegated gateway with inbound", "Dataplane", `{"networking":{"address":"10.0.0.1","inbound":[{"port":80,"tags":{"kuma.io/service":"a"}}],"gateway":{"tags":{"kuma.io/service":"g"}}}}`, []string{"spec.networking.inbound"}, "delegated gateway"},
		{"dp builtin gateway with outbound", "Dataplane", `{"networking":{"address":"10.0.0.1","outbound":[{"port":10001,"tags":{"kuma.io/service":"a"}}],"gateway":{"type":"BUILTIN","tags":{"kuma.io/service":"g"}}}}`, []string{"spec.networking.outbound"}, "builtin gateway"},
		{"dp admin clashes", "Dataplane", `{"networking":{"address":"127.0.0.1","inbound":[{"port":9901,"tags":{"kuma.io/service":"a"}}],"admin":{"port":9901}}}`, []string{"spec.networking.admin.port"}, "inbound"},
		{"dp reachable backend kind", "Dataplane", `{"networking":{"address":"10.0.0.1","transparentProxying":{"reachableBackends":{"refs":[{"kind":"Pod","name":"a"}]}}}}`, []string{"spec.networking.transparentProxing.reachableBackends.refs[0].kind"}, "MeshService"},
		{"dp probe path", "Dataplane", `{"networking":{"address":"10.0.0.1"},"probes":{"port":9000,"endpoints":[{"inboundPort":80,"inboundPath":"healthz","path":"/p"}]}}`, []string{"spec.probes.endpoints[0].inboundPath"}, "URL path"},
		{"dp port as string", "Dataplane", `{"networking":{"address":"10.0.0.1","inbound":[{"port":"80","tags":{"kuma.io/service":"a"}}]}}`, []string{"spec.networking.inbound[0].port"}, "integer"},

		// DataplaneInsight: Kuma's dataplane_insight.proto fields.
		{"insight empty", "DataplaneInsight", `{}`, nil, ""},
		{"insight ok", "DataplaneInsight", `{"subscriptions":[{"id":"a","controlPlaneInstanceId":"cp-1","connectTime":"2026-01-01T10:00:00Z","disconnectTime":"2026-01-01T11:00:00Z","status":{"lastUpdateTime":"2026-01-01T10:59:00Z","total":{"responsesSent":"5","responsesAcknowledged":"4","responsesRejected":"1"}},"version":{"kumaDp":{"version":"2.14.3"}}}],"mTLS":{"certificateExpirationTime":"2026-02-01T00:00:00Z","issuedBackend":"ca-1","supportedBackends":["ca-1"]},"metadata":{"features":["feature-a"]}}`, nil, ""},
		{"insight missing fields", "DataplaneInsight", `{"subscriptions":[{"connectTime":"2026-01-01T10:00:00Z"}]}`, []string{"spec.subscriptions[0].id", "spec.subscriptions[0].controlPlaneInstanceId", "spec.subscriptions[0].status"}, "must be set"},
		{"insight bad time", "DataplaneInsight", `{"subscriptions":[{"id":"a","controlPlaneInstanceId":"cp","connectTime":"yesterday","status":{}}]}`, []string{"spec.subscriptions[0].connectTime"}, "RFC 3339"},
		{"insight disconnect before connect", "DataplaneInsight", `{"subscriptions":[{"id":"a","controlPlaneInstanceId":"cp","connectTime":"2026-01-01T10:00:00Z","disconnectTime":"2026-01-01T09:00:00Z","status":{}}]}`, []string{"spec.subscriptions[0].disconnectTime"}, "before connectTime"},
		{"insight old mtls", "DataplaneInsight", `{"mtls":{"issuedBackend":"ca-1"}}`, []string{"spec.mtls"}, "use mTLS"},
		{"insight old counters", "DataplaneInsight", `{"subscriptions":[{"id":"a","controlPlaneInstanceId":"cp","connectTime":"2026-01-01T10:00:00Z","status":{},"responsesSent":1}]}`, []string{"spec.subscriptions[0].responsesSent"}, "status.total.responsesSent"},
	}
	c := sdktest.Start(t, plugin())
	rs := make([]sdktest.Resource, len(cases))
	for i, k := range cases {
		rs[i] = sdktest.Resource{Type: k.typ, Mesh: "default", Name: "r", Spec: k.spec}
	}
	got := c.Validate(rs...)
	for i, k := range cases {
		t.Run(k.name, func(t *testing.T) {
			if k.fields == nil {
				assert.Empty(t, got[i])
				return
			}
			assert.Equal(t, k.fields, sdktest.Fields(got[i]), got[i].Error())
			require.NotEmpty(t, got[i])
			assert.Contains(t, got[i][0].Message, k.msg)
		})
	}
}
