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
		{"dp ok", "Dataplane", `{"networking":{"address":"10.0.0.1","inbound":[{"port":8080,"servicePort":80,"tags":{"kuma.io/service":"web","version":"v1"}},{"port":8081,"tags":{"kuma.io/service":"web-admin"}}],"admin":{"port":9901}}}`, nil, ""},
		{"dp ipv6 ok", "Dataplane", `{"networking":{"address":"fd00::1","inbound":[{"port":1,"tags":{"kuma.io/service":"a"}}]}}`, nil, ""},
		{"dp gateway ok", "Dataplane", `{"networking":{"address":"10.0.0.2","gateway":{"tags":{"kuma.io/service":"edge"}}}}`, nil, ""},
		{"dp address not ip", "Dataplane", `{"networking":{"address":"web.local","inbound":[{"port":80,"tags":{"kuma.io/service":"web"}}]}}`, []string{"spec.networking.address"}, "not an IP"},
		{"dp address missing", "Dataplane", `{"networking":{"inbound":[{"port":80,"tags":{"kuma.io/service":"web"}}]}}`, []string{"spec.networking.address"}, "required"},
		{"dp port zero", "Dataplane", `{"networking":{"address":"10.0.0.1","inbound":[{"port":80,"tags":{"kuma.io/service":"a"}},{"port":0,"tags":{"kuma.io/service":"b"}}]}}`, []string{"spec.networking.inbound[1].port"}, "between 1 and 65535"},
		{"dp port too big", "Dataplane", `{"networking":{"address":"10.0.0.1","inbound":[{"port":65536,"tags":{"kuma.io/service":"a"}}]}}`, []string{"spec.networking.inbound[0].port"}, "between 1 and 65535"},
		{"dp duplicate port", "Dataplane", `{"networking":{"address":"10.0.0.1","inbound":[{"port":80,"tags":{"kuma.io/service":"a"}},{"port":80,"tags":{"kuma.io/service":"b"}}]}}`, []string{"spec.networking.inbound[1].port"}, "already used by inbound[0]"},
		{"dp no service tag", "Dataplane", `{"networking":{"address":"10.0.0.1","inbound":[{"port":80,"tags":{"version":"v1"}}]}}`, []string{`spec.networking.inbound[0].tags["kuma.io/service"]`}, "required"},
		{"dp bad tag value", "Dataplane", `{"networking":{"address":"10.0.0.1","inbound":[{"port":80,"tags":{"kuma.io/service":"web","team":"a b"}}]}}`, []string{`spec.networking.inbound[0].tags["team"]`}, "tag values"},
		{"dp nothing served", "Dataplane", `{"networking":{"address":"10.0.0.1"}}`, []string{"spec.networking"}, "inbound or a gateway"},
		{"dp gateway and inbound", "Dataplane", `{"networking":{"address":"10.0.0.1","inbound":[{"port":80,"tags":{"kuma.io/service":"a"}}],"gateway":{"tags":{"kuma.io/service":"g"}}}}`, []string{"spec.networking.gateway"}, "together"},
		{"dp admin clashes", "Dataplane", `{"networking":{"address":"10.0.0.1","inbound":[{"port":9901,"tags":{"kuma.io/service":"a"}}],"admin":{"port":9901}}}`, []string{"spec.networking.admin.port"}, "inbound[0]"},
		{"dp port as string", "Dataplane", `{"networking":{"address":"10.0.0.1","inbound":[{"port":"80","tags":{"kuma.io/service":"a"}}]}}`, []string{"spec.networking.inbound[0].port"}, "integer"},

		{"insight empty", "DataplaneInsight", `{}`, nil, ""},
		{"insight ok", "DataplaneInsight", `{"subscriptions":[{"id":"a","controlPlaneInstanceId":"cp-1","connectTime":"2026-01-01T10:00:00Z","disconnectTime":"2026-01-01T11:00:00Z","responsesSent":5,"responsesAcknowledged":4,"responsesRejected":1},{"id":"b","controlPlaneInstanceId":"cp-2","connectTime":"2026-01-01T11:00:01Z"}],"mtls":{"certificateExpirationTime":"2026-02-01T00:00:00Z","issuedBackend":"ca-1"}}`, nil, ""},
		{"insight bad time", "DataplaneInsight", `{"subscriptions":[{"id":"a","controlPlaneInstanceId":"cp","connectTime":"yesterday"}]}`, []string{"spec.subscriptions[0].connectTime"}, "RFC 3339"},
		{"insight disconnect before connect", "DataplaneInsight", `{"subscriptions":[{"id":"a","controlPlaneInstanceId":"cp","connectTime":"2026-01-01T10:00:00Z","disconnectTime":"2026-01-01T09:00:00Z"}]}`, []string{"spec.subscriptions[0].disconnectTime"}, "before connectTime"},
		{"insight two open", "DataplaneInsight", `{"subscriptions":[{"id":"a","controlPlaneInstanceId":"cp","connectTime":"2026-01-01T10:00:00Z"},{"id":"b","controlPlaneInstanceId":"cp","connectTime":"2026-01-01T10:00:00Z"}]}`, []string{"spec.subscriptions[1].disconnectTime"}, "only one"},
		{"insight duplicate id", "DataplaneInsight", `{"subscriptions":[{"id":"a","controlPlaneInstanceId":"cp","connectTime":"2026-01-01T10:00:00Z","disconnectTime":"2026-01-01T10:00:01Z"},{"id":"a","controlPlaneInstanceId":"cp","connectTime":"2026-01-01T10:00:00Z"}]}`, []string{"spec.subscriptions[1].id"}, "duplicates"},
		{"insight counters", "DataplaneInsight", `{"subscriptions":[{"id":"a","controlPlaneInstanceId":"cp","connectTime":"2026-01-01T10:00:00Z","responsesSent":1,"responsesAcknowledged":2}]}`, []string{"spec.subscriptions[0].responsesAcknowledged"}, "exceed sent"},
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
