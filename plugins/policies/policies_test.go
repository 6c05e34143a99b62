package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kds-engine/kds-engine/sdk/sdktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDescribe(t *testing.T) {
	d := sdktest.Start(t, plugin()).Describe()
	assert.Equal(t, "policies", d.GetName())
	var names []string
	for _, ty := range d.GetTypes() {
		names = append(names, ty.GetName())
		assert.NotEmpty(t, ty.GetJsonSchema(), ty.GetName())
		assert.Equal(t, "DIRECTION_GLOBAL_TO_ZONE", ty.GetDirection().String(), ty.GetName())
		if ty.GetName() == "Mesh" {
			assert.Equal(t, "SCOPE_GLOBAL", ty.GetScope().String())
		} else {
			assert.Equal(t, "SCOPE_MESH", ty.GetScope().String())
		}
	}
	assert.Equal(t, []string{"Mesh", "MeshTrafficPermission", "MeshTimeout", "MeshRetry", "MeshRateLimit"}, names)
}

type tc struct {
	name   string
	typ    string
	spec   string
	fields []string // nil: valid
	msg    string   // substring of the first error's message
}

func TestValidate(t *testing.T) {
	const (
		mesh  = `{"kind":"Mesh"}`
		toAll = `"to":[{"targetRef":{"kind":"Mesh"},"default":{"connectionTimeout":"5s"}}]`
	)
	cases := []tc{
		// Mesh: Kuma's mesh.proto fields; paths below spec (Kuma's
		// top-level form has them at the top level).
		{"mesh empty", "Mesh", `{}`, nil, ""},
		{"mesh full", "Mesh", `{"mtls":{"enabledBackend":"ca-1","backends":[{"name":"ca-1","type":"builtin","dpCert":{"rotation":{"expiration":"1d"}},"mode":"PERMISSIVE"}]},` +
			`"logging":{"defaultBackend":"file","backends":[{"name":"file","type":"file","conf":{"path":"/tmp/log"}},{"name":"tcp","type":"tcp","conf":{"address":"logstash:5000"}}]},` +
			`"tracing":{"defaultBackend":"zipkin","backends":[{"name":"zipkin","type":"zipkin","sampling":50,"conf":{"url":"http://zipkin:9411/api/v2/spans"}}]},` +
			`"metrics":{"enabledBackend":"prom","backends":[{"name":"prom","type":"prometheus","conf":{"port":5670,"path":"/metrics"}}]},` +
			`"routing":{"zoneEgress":true,"localityAwareLoadBalancing":true},"constraints":{"dataplaneProxy":{"requirements":[{"tags":{"kuma.io/zone":"east"}}]}},"meshServices":{"mode":"Exclusive"}}`, nil, ""},
		{"mesh enabled backend missing", "Mesh", `{"mtls":{"enabledBackend":"ca-2","backends":[{"name":"ca-1","type":"builtin"}]}}`, []string{"spec.mtls.enabledBackend"}, "no backend"},
		{"mesh two ca backends", "Mesh", `{"mtls":{"backends":[{"name":"a","type":"builtin"},{"name":"a","type":"provided"}]}}`, []string{"spec.mtls.backends", "spec.mtls.backends[1].name"}, "at most 1"},
		{"mesh bad cert expiration", "Mesh", `{"mtls":{"backends":[{"name":"a","type":"builtin","dpCert":{"rotation":{"expiration":"soon"}}}]}}`, []string{"spec.mtls.dpcert.rotation.expiration"}, "unit"},
		{"mesh logging backend type", "Mesh", `{"logging":{"backends":[{"name":"l","type":"syslog"}]}}`, []string{"spec.logging.backends[0].type"}, "unknown backend type"},
		{"mesh tcp log address", "Mesh", `{"logging":{"backends":[{"name":"l","type":"tcp","conf":{"address":"no-port"}}]}}`, []string{"spec.logging.backends[0].config.address"}, "HOST:PORT"},
		{"mesh zipkin without port", "Mesh", `{"tracing":{"backends":[{"name":"z","type":"zipkin","conf":{"url":"http://zipkin/api"}}]}}`, []string{"spec.tracing.backends[0].config.url"}, "port"},
		{"mesh sampling range", "Mesh", `{"tracing":{"backends":[{"name":"z","type":"datadog","sampling":101,"conf":{"address":"dd","port":8126}}]}}`, []string{"spec.tracing.backends[0].sampling"}, "100"},
		{"mesh metrics type", "Mesh", `{"metrics":{"backends":[{"name":"m","type":"statsd"}]}}`, []string{"spec.metrics.backends[0].type"}, "prometheus"},
		{"mesh zone egress needs mtls", "Mesh", `{"routing":{"zoneEgress":true}}`, []string{"spec.mtls"}, "zoneEgress"},
		{"mesh old metrics port", "Mesh", `{"metrics":{"port":5670,"path":"/metrics"}}`, []string{"spec.metrics.port", "spec.metrics.path"}, "renamed: use metrics.backends[].conf.port"},
		{"mesh unknown field", "Mesh", `{"mtlss":{}}`, []string{"spec.mtlss"}, "unknown field"},

		// MeshTrafficPermission
		{"mtp from", "MeshTrafficPermission", `{"targetRef":{"kind":"MeshService","name":"web"},"from":[{"targetRef":{"kind":"Mesh"},"default":{"action":"Allow"}}]}`, nil, ""},
		{"mtp no targetRef means Mesh", "MeshTrafficPermission", `{"from":[{"targetRef":{"kind":"Mesh"},"default":{"action":"Deny"}}]}`, nil, ""},
		{"mtp rules", "MeshTrafficPermission", `{"targetRef":{"kind":"Dataplane","labels":{"app":"web"},"sectionName":"http"},"rules":[{"default":{"allow":[{"spiffeID":{"type":"Prefix","value":"spiffe://default/ns/a"}}],"deny":[{"sni":{"type":"Exact","value":"a.example.com"}}]}}]}`, nil, ""},
		{"mtp neither from nor rules", "MeshTrafficPermission", `{"targetRef":` + mesh + `}`, []string{"spec"}, "from or rules"},
		{"mtp from and rules", "MeshTrafficPermission", `{"from":[{"targetRef":{"kind":"Mesh"},"default":{"action":"Allow"}}],"rules":[{"default":{"allow":[{"sni":{"type":"Exact","value":"a"}}]}}]}`, []string{"spec"}, "rules"},
		{"mtp empty rule", "MeshTrafficPermission", `{"rules":[{"default":{}}]}`, []string{"spec.rules[0]"}, "allow"},
		{"mtp bad spiffe", "MeshTrafficPermission", `{"rules":[{"default":{"allow":[{"spiffeID":{"type":"Exact","value":"http://x"}}]}}]}`, []string{"spec.rules[0].allow[0].spiffeID"}, "SPIFFE"},
		{"mtp gateway kind", "MeshTrafficPermission", `{"targetRef":{"kind":"MeshGateway","name":"gw"},"from":[{"targetRef":{"kind":"Mesh"},"default":{"action":"Allow"}}]}`, []string{"spec.targetRef.kind"}, "not allowed"},
		{"mtp name on Mesh", "MeshTrafficPermission", `{"targetRef":{"kind":"Mesh","name":"x"},"from":[{"targetRef":{"kind":"Mesh"},"default":{"action":"Allow"}}]}`, []string{"spec.targetRef.name"}, "must not be set"},
		{"mtp service without name", "MeshTrafficPermission", `{"from":[{"targetRef":{"kind":"MeshService"},"default":{"action":"Allow"}}]}`, []string{"spec.from[0].targetRef"}, "name or labels"},
		{"mtp missing action", "MeshTrafficPermission", `{"from":[{"targetRef":{"kind":"Mesh"},"default":{}}]}`, []string{"spec.from[0].default.action"}, "must be set"},
		{"mtp bad action", "MeshTrafficPermission", `{"from":[{"targetRef":{"kind":"Mesh"},"default":{"action":"Maybe"}}]}`, []string{"spec.from[0].default.action"}, "Allow"},

		// MeshTimeout
		{"timeout to", "MeshTimeout", `{"targetRef":{"kind":"MeshService","name":"web"},"to":[{"targetRef":{"kind":"MeshService","name":"api"},"default":{"connectionTimeout":"5s","idleTimeout":"1h","http":{"requestTimeout":"15s","maxStreamDuration":"1m","maxConnectionDuration":"1h","requestHeadersTimeout":"2s"}}}]}`, nil, ""},
		{"timeout no targetRef", "MeshTimeout", `{` + toAll + `}`, nil, ""},
		{"timeout rules", "MeshTimeout", `{"targetRef":{"kind":"Dataplane","labels":{"app":"web"}},"rules":[{"default":{"idleTimeout":"20s","http":{"requestTimeout":"2s"}}}]}`, nil, ""},
		{"timeout external service", "MeshTimeout", `{"to":[{"targetRef":{"kind":"MeshExternalService","name":"httpbin"},"default":{"http":{"requestTimeout":"1s"}}},{"targetRef":{"kind":"MeshMultiZoneService","labels":{"kuma.io/display-name":"api"}},"default":{"http":{"requestTimeout":"1s"}}}]}`, nil, ""},
		{"timeout proxyTypes", "MeshTimeout", `{"targetRef":{"kind":"Mesh","proxyTypes":["Sidecar"]},` + toAll + `}`, nil, ""},
		{"timeout nothing", "MeshTimeout", `{"targetRef":` + mesh + `}`, []string{"spec"}, "to, from or rules"},
		{"timeout rules with to", "MeshTimeout", `{` + toAll + `,"rules":[{"default":{"idleTimeout":"1s"}}]}`, []string{"spec"}, "rules"},
		{"timeout zero connection", "MeshTimeout", `{"to":[{"targetRef":{"kind":"Mesh"},"default":{"connectionTimeout":"0s"}}]}`, []string{"spec.to[0].default.connectionTimeout"}, "greater than zero"},
		{"timeout negative idle", "MeshTimeout", `{"from":[{"targetRef":{"kind":"Mesh"},"default":{"idleTimeout":"-1s"}}]}`, []string{"spec.from[0].default.idleTimeout"}, "negative"},
		{"timeout bad duration", "MeshTimeout", `{"to":[{"targetRef":{"kind":"Mesh"},"default":{"connectionTimeout":"5 seconds"}}]}`, []string{"spec.to[0].default.connectionTimeout"}, "not a duration"},
		{"timeout empty default", "MeshTimeout", `{"to":[{"targetRef":{"kind":"Mesh"}}]}`, []string{"spec.to[0].default"}, "at least one timeout"},
		{"timeout empty http", "MeshTimeout", `{"to":[{"targetRef":{"kind":"Mesh"},"default":{"http":{}}}]}`, []string{"spec.to[0].default.http"}, "in http"},
		{"timeout subset in to", "MeshTimeout", `{"to":[{"targetRef":{"kind":"MeshServiceSubset","name":"a","tags":{"v":"1"}},"default":{"idleTimeout":"1s"}}]}`, []string{"spec.to[0].targetRef.kind"}, "not allowed"},
		{"timeout from under gateway", "MeshTimeout", `{"targetRef":{"kind":"MeshGateway","name":"gw"},"from":[{"targetRef":{"kind":"Mesh"},"default":{"idleTimeout":"1s"}}]}`, []string{"spec.from"}, "MeshGateway"},
		{"timeout sectionName outbound", "MeshTimeout", `{"targetRef":{"kind":"Dataplane","sectionName":"http"},` + toAll + `}`, []string{"spec.targetRef.sectionName"}, "inbound"},
		{"timeout route connection", "MeshTimeout", `{"targetRef":{"kind":"MeshHTTPRoute","name":"r"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"connectionTimeout":"1s"}}]}`, []string{"spec.to[0].default.connectionTimeout"}, "MeshHTTPRoute"},
		{"timeout gateway as system policy", "MeshTimeout", `{"targetRef":{"kind":"MeshGateway","name":"gw"},` + toAll + `}`, nil, ""},
		{"timeout spiffe rule", "MeshTimeout", `{"rules":[{"matches":[{"spiffeID":{"type":"Exact","value":"spiffe://a/b"}}],"default":{"idleTimeout":"1s"}}]}`, []string{"spec.rules[0].default.idleTimeout"}, "spiffeID"},
		{"timeout old connectTimeout", "MeshTimeout", `{"to":[{"targetRef":{"kind":"Mesh"},"default":{"connectTimeout":"5s"}}]}`, []string{"spec.to[0].default.connectTimeout"}, "use connectionTimeout"},

		// MeshRetry (Kuma reports default's problems at default.conf)
		{"retry http", "MeshRetry", `{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"MeshService","name":"api"},"default":{"http":{"numRetries":3,"perTryTimeout":"2s","backOff":{"baseInterval":"25ms","maxInterval":"250ms"},"retryOn":["5xx","Reset","503",429],"retriableRequestHeaders":[{"type":"Prefix","name":"x-a","value":"b"}],"hostSelection":[{"predicate":"OmitPreviousHosts"}],"rateLimitedBackOff":{"resetHeaders":[{"name":"retry-after","format":"Seconds"}]}},"tcp":{"maxConnectAttempt":2},"grpc":{"numRetries":1,"retryOn":["Unavailable"]}}}]}`, nil, ""},
		{"retry no targetRef", "MeshRetry", `{"to":[{"targetRef":{"kind":"Mesh"},"default":{"tcp":{"maxConnectAttempt":1}}}]}`, nil, ""},
		{"retry nothing", "MeshRetry", `{"to":[{"targetRef":{"kind":"Mesh"},"default":{}}]}`, []string{"spec.to[0].default.conf"}, "tcp, http or grpc"},
		{"retry empty backoff", "MeshRetry", `{"to":[{"targetRef":{"kind":"Mesh"},"default":{"http":{"backOff":{}}}}]}`, []string{"spec.to[0].default.conf.http.backOff"}, "must not be empty"},
		{"retry tcp zero attempts", "MeshRetry", `{"to":[{"targetRef":{"kind":"Mesh"},"default":{"tcp":{"maxConnectAttempt":0}}}]}`, []string{"spec.to[0].default.conf.tcp.maxConnectAttempt"}, "greater than zero"},
		{"retry tcp empty", "MeshRetry", `{"to":[{"targetRef":{"kind":"Mesh"},"default":{"tcp":{}}}]}`, []string{"spec.to[0].default.conf.tcp"}, "must not be empty"},
		{"retry unknown condition", "MeshRetry", `{"to":[{"targetRef":{"kind":"Mesh"},"default":{"http":{"retryOn":["5xx","sometimes","999"]}}}]}`, []string{"spec.to[0].default.conf.http.retryOn[1]", "spec.to[0].default.conf.http.retryOn[2]"}, "unknown condition"},
		{"retry old spelling", "MeshRetry", `{"to":[{"targetRef":{"kind":"Mesh"},"default":{"http":{"retryOn":["connect-failure"]}}}]}`, []string{"spec.to[0].default.conf.http.retryOn[0]"}, "use ConnectFailure"},
		{"retry grpc condition", "MeshRetry", `{"to":[{"targetRef":{"kind":"Mesh"},"default":{"grpc":{"retryOn":["5xx"]}}}]}`, []string{"spec.to[0].default.conf.grpc.retryOn[0]"}, "unknown condition"},
		{"retry reset headers", "MeshRetry", `{"to":[{"targetRef":{"kind":"Mesh"},"default":{"http":{"rateLimitedBackOff":{"maxInterval":"1s"}}}}]}`, []string{"spec.to[0].default.conf.http.rateLimitedBackOff.resetHeaders"}, "must be set"},
		{"retry host selection", "MeshRetry", `{"to":[{"targetRef":{"kind":"Mesh"},"default":{"http":{"hostSelection":[{"predicate":"OmitHostsWithTags"},{"predicate":"OmitPreviousPriorities"}]}}}]}`, []string{"spec.to[0].default.conf.http.hostSelection[0].tags", "spec.to[0].default.conf.http.hostSelection[1].updateFrequency"}, "OmitHostsWithTags"},
		{"retry service under gateway", "MeshRetry", `{"targetRef":{"kind":"MeshGateway","name":"gw"},"to":[{"targetRef":{"kind":"MeshService","name":"api"},"default":{"tcp":{"maxConnectAttempt":1}}}]}`, []string{"spec.to[0].targetRef.kind"}, "not allowed"},
		{"retry subset as destination", "MeshRetry", `{"to":[{"targetRef":{"kind":"MeshSubset","tags":{"a":"b"}},"default":{"tcp":{"maxConnectAttempt":1}}}]}`, []string{"spec.to[0].targetRef.kind"}, "not allowed"},

		// MeshRateLimit
		{"ratelimit rules", "MeshRateLimit", `{"targetRef":{"kind":"Dataplane","labels":{"app":"web"}},"rules":[{"default":{"local":{"http":{"requestRate":{"num":100,"interval":"1s"},"onRateLimit":{"status":429,"headers":{"set":[{"name":"x-limited","value":"true"}]}}},"tcp":{"disabled":true}}}}]}`, nil, ""},
		{"ratelimit from sidecars", "MeshRateLimit", `{"targetRef":{"kind":"Mesh","proxyTypes":["Sidecar"]},"from":[{"targetRef":{"kind":"Mesh"},"default":{"local":{"tcp":{"connectionRate":{"num":5,"interval":"10s"}}}}}]}`, nil, ""},
		{"ratelimit gateway to", "MeshRateLimit", `{"targetRef":{"kind":"MeshGateway","name":"edge"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"local":{"http":{"requestRate":{"num":10,"interval":"1s"}}}}}]}`, nil, ""},
		{"ratelimit from under mesh", "MeshRateLimit", `{"targetRef":{"kind":"Mesh"},"from":[{"targetRef":{"kind":"Mesh"},"default":{"local":{"tcp":{"disabled":true}}}}]}`, []string{"spec.from"}, "gateways"},
		{"ratelimit to for sidecars", "MeshRateLimit", `{"targetRef":{"kind":"MeshService","name":"web"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"local":{"tcp":{"disabled":true}}}}]}`, []string{"spec.to"}, "gateways"},
		{"ratelimit no local", "MeshRateLimit", `{"rules":[{"default":{}}],"targetRef":{"kind":"MeshService","name":"web"}}`, []string{"spec.rules[0].default.local"}, "must be set"},
		{"ratelimit empty http", "MeshRateLimit", `{"targetRef":{"kind":"MeshService","name":"web"},"rules":[{"default":{"local":{"http":{}}}}]}`, []string{"spec.rules[0].default.local.http"}, "requestRate"},
		{"ratelimit short interval", "MeshRateLimit", `{"targetRef":{"kind":"MeshService","name":"web"},"rules":[{"default":{"local":{"http":{"requestRate":{"num":5,"interval":"10ms"}}}}}]}`, []string{"spec.rules[0].default.local.http.requestRate.interval"}, "50ms"},
		{"ratelimit num zero", "MeshRateLimit", `{"targetRef":{"kind":"MeshService","name":"web"},"rules":[{"default":{"local":{"tcp":{"connectionRate":{"num":0,"interval":"1s"}}}}}]}`, []string{"spec.rules[0].default.local.tcp.connectionRate.num"}, "greater than zero"},
		{"ratelimit status zero", "MeshRateLimit", `{"targetRef":{"kind":"MeshService","name":"web"},"rules":[{"default":{"local":{"http":{"onRateLimit":{"status":0}}}}}]}`, []string{"spec.rules[0].default.local.http.onRateLimit.status"}, "greater than zero"},
	}
	runCases(t, cases)
}

// TestPolicyRole: a kuma.io/policy-role label makes a policy a user
// policy, which may not target gateways or routes.
func TestPolicyRole(t *testing.T) {
	c := sdktest.Start(t, plugin())
	spec := `{"targetRef":{"kind":"MeshGateway","name":"gw"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"idleTimeout":"1s"}}]}`
	assert.Empty(t, c.ValidateOne(sdktest.Resource{Type: "MeshTimeout", Mesh: "default", Name: "sys", Spec: spec}))
	got := c.ValidateOne(sdktest.Resource{Type: "MeshTimeout", Mesh: "default", Name: "user", Labels: map[string]string{"kuma.io/policy-role": "producer"}, Spec: spec})
	assert.Equal(t, []string{"spec.targetRef.kind"}, sdktest.Fields(got), got.Error())
}

// TestMeshName: Kuma's mesh names are DNS labels.
func TestMeshName(t *testing.T) {
	c := sdktest.Start(t, plugin())
	for name, ok := range map[string]bool{"default": true, "team-a": true, "a.b": false, "1mesh": false, strings.Repeat("a", 64): false} {
		got := c.ValidateOne(sdktest.Resource{Type: "Mesh", Name: name, Spec: `{}`})
		if ok {
			assert.Empty(t, got, name)
		} else {
			assert.Equal(t, []string{"name"}, sdktest.Fields(got), name)
		}
	}
}

func runCases(t *testing.T, cases []tc) {
	c := sdktest.Start(t, plugin())
	rs := make([]sdktest.Resource, len(cases))
	for i, k := range cases {
		mesh := "default"
		if k.typ == "Mesh" {
			mesh = ""
		}
		rs[i] = sdktest.Resource{Type: k.typ, Mesh: mesh, Name: "r", Spec: k.spec}
	}
	// One batch for every case, as the engine sends them.
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
