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
	cases := []tc{
		// Mesh
		{"mesh empty", "Mesh", `{}`, nil, ""},
		{"mesh mtls ok", "Mesh", `{"mtls":{"enabledBackend":"ca-1","backends":[{"name":"ca-1","type":"builtin"}]},"metrics":{"port":5670,"path":"/metrics"}}`, nil, ""},
		{"mesh enabled backend missing", "Mesh", `{"mtls":{"enabledBackend":"ca-2","backends":[{"name":"ca-1","type":"builtin"}]}}`, []string{"spec.mtls.enabledBackend"}, "no backend"},
		{"mesh duplicate backend", "Mesh", `{"mtls":{"backends":[{"name":"a","type":"builtin"},{"name":"a","type":"provided"}]}}`, []string{"spec.mtls.backends[1].name"}, "duplicate"},
		{"mesh bad backend type", "Mesh", `{"mtls":{"backends":[{"name":"a","type":"vault"}]}}`, []string{"spec.mtls.backends[0].type"}, "builtin"},
		{"mesh port out of range", "Mesh", `{"metrics":{"port":70000}}`, []string{"spec.metrics.port"}, "65535"},
		{"mesh path relative", "Mesh", `{"metrics":{"port":80,"path":"metrics"}}`, []string{"spec.metrics.path"}, "start with /"},
		{"mesh unknown field", "Mesh", `{"mtlss":{}}`, []string{"spec.mtlss"}, "unknown field"},

		// MeshTrafficPermission
		{"mtp ok", "MeshTrafficPermission", `{"targetRef":{"kind":"MeshService","name":"web"},"from":[{"targetRef":{"kind":"Mesh"},"default":{"action":"Allow"}}]}`, nil, ""},
		{"mtp subset ok", "MeshTrafficPermission", `{"targetRef":{"kind":"MeshSubset","tags":{"version":"v2"}},"from":[{"targetRef":{"kind":"MeshServiceSubset","name":"api","tags":{"env":"prod"}},"default":{"action":"Deny"}}]}`, nil, ""},
		{"mtp no from", "MeshTrafficPermission", `{"targetRef":{"kind":"Mesh"},"from":[]}`, []string{"spec.from"}, "at least one"},
		{"mtp unknown kind", "MeshTrafficPermission", `{"targetRef":{"kind":"Service","name":"x"},"from":[{"targetRef":{"kind":"Mesh"},"default":{"action":"Allow"}}]}`, []string{"spec.targetRef.kind"}, "unknown kind"},
		{"mtp kind not allowed", "MeshTrafficPermission", `{"targetRef":{"kind":"MeshGateway","name":"gw"},"from":[{"targetRef":{"kind":"Mesh"},"default":{"action":"Allow"}}]}`, []string{"spec.targetRef.kind"}, "not allowed"},
		{"mtp name missing", "MeshTrafficPermission", `{"targetRef":{"kind":"Mesh"},"from":[{"targetRef":{"kind":"MeshService"},"default":{"action":"Allow"}}]}`, []string{"spec.from[0].targetRef.name"}, "required"},
		{"mtp name on Mesh", "MeshTrafficPermission", `{"targetRef":{"kind":"Mesh","name":"x"},"from":[{"targetRef":{"kind":"Mesh"},"default":{"action":"Allow"}}]}`, []string{"spec.targetRef.name"}, "must not be set"},
		{"mtp bad action", "MeshTrafficPermission", `{"targetRef":{"kind":"Mesh"},"from":[{"targetRef":{"kind":"Mesh"},"default":{"action":"Maybe"}}]}`, []string{"spec.from[0].default.action"}, "Allow"},

		// MeshTimeout
		{"timeout ok", "MeshTimeout", `{"targetRef":{"kind":"MeshService","name":"web"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"connectTimeout":"5s","http":{"requestTimeout":"15s","maxStreamDuration":"1m"}}}]}`, nil, ""},
		{"timeout no to or from", "MeshTimeout", `{"targetRef":{"kind":"Mesh"}}`, []string{"spec"}, "to or from"},
		{"timeout bad duration", "MeshTimeout", `{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"connectTimeout":"5 seconds"}}]}`, []string{"spec.to[0].default.connectTimeout"}, "not a duration"},
		{"timeout negative", "MeshTimeout", `{"targetRef":{"kind":"Mesh"},"from":[{"targetRef":{"kind":"Mesh"},"default":{"idleTimeout":"-1s"}}]}`, []string{"spec.from[0].default.idleTimeout"}, "positive"},
		{"timeout zero", "MeshTimeout", `{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"http":{"requestTimeout":"0s"}}}]}`, []string{"spec.to[0].default.http.requestTimeout"}, "positive"},
		{"timeout empty default", "MeshTimeout", `{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"Mesh"},"default":{}}]}`, []string{"spec.to[0].default"}, "no timeout"},
		{"timeout request beyond stream", "MeshTimeout", `{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"http":{"requestTimeout":"2m","maxStreamDuration":"1m"}}}]}`, []string{"spec.to[0].default.http.requestTimeout"}, "never fire"},

		// MeshRetry
		{"retry ok", "MeshRetry", `{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"MeshService","name":"api"},"default":{"http":{"numRetries":3,"perTryTimeout":"2s","backOff":{"baseInterval":"25ms","maxInterval":"250ms"},"retryOn":["5xx","reset"]},"tcp":{"maxConnectAttempt":2}}}]}`, nil, ""},
		{"retry base above max", "MeshRetry", `{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"http":{"backOff":{"baseInterval":"1s","maxInterval":"100ms"}}}}]}`, []string{"spec.to[0].default.http.backOff.baseInterval"}, "greater than maxInterval"},
		{"retry zero with backoff", "MeshRetry", `{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"http":{"numRetries":0,"perTryTimeout":"1s"}}}]}`, []string{"spec.to[0].default.http.numRetries"}, "disables retries"},
		{"retry unknown condition", "MeshRetry", `{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"http":{"retryOn":["5xx","sometimes"]}}}]}`, []string{"spec.to[0].default.http.retryOn[1]"}, "unknown condition"},
		{"retry nothing", "MeshRetry", `{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"Mesh"},"default":{}}]}`, []string{"spec.to[0].default"}, "http or tcp"},
		{"retry tcp zero attempts", "MeshRetry", `{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"tcp":{"maxConnectAttempt":0}}}]}`, []string{"spec.to[0].default.tcp.maxConnectAttempt"}, "at least 1"},
		{"retry subset as destination", "MeshRetry", `{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"MeshSubset","tags":{"a":"b"}},"default":{"tcp":{"maxConnectAttempt":1}}}]}`, []string{"spec.to[0].targetRef.kind"}, "not allowed"},

		// MeshRateLimit
		{"ratelimit ok", "MeshRateLimit", `{"targetRef":{"kind":"MeshService","name":"web"},"from":[{"targetRef":{"kind":"Mesh"},"default":{"local":{"http":{"requestRate":{"num":100,"interval":"1s"},"onRateLimit":{"status":429}},"tcp":{"disabled":true}}}}]}`, nil, ""},
		{"ratelimit disabled with rate", "MeshRateLimit", `{"targetRef":{"kind":"Mesh"},"from":[{"targetRef":{"kind":"Mesh"},"default":{"local":{"http":{"disabled":true,"requestRate":{"num":1,"interval":"1s"}}}}}]}`, []string{"spec.from[0].default.local.http.requestRate"}, "disabled"},
		{"ratelimit missing rate", "MeshRateLimit", `{"targetRef":{"kind":"Mesh"},"from":[{"targetRef":{"kind":"Mesh"},"default":{"local":{"tcp":{}}}}]}`, []string{"spec.from[0].default.local.tcp.connectionRate"}, "required"},
		{"ratelimit bad interval", "MeshRateLimit", `{"targetRef":{"kind":"Mesh"},"from":[{"targetRef":{"kind":"Mesh"},"default":{"local":{"http":{"requestRate":{"num":5,"interval":"soon"}}}}}]}`, []string{"spec.from[0].default.local.http.requestRate.interval"}, "not a duration"},
		{"ratelimit bad status", "MeshRateLimit", `{"targetRef":{"kind":"Mesh"},"from":[{"targetRef":{"kind":"Mesh"},"default":{"local":{"http":{"requestRate":{"num":5,"interval":"1s"},"onRateLimit":{"status":200}}}}}]}`, []string{"spec.from[0].default.local.http.onRateLimit.status"}, "400-599"},
		{"ratelimit num zero", "MeshRateLimit", `{"targetRef":{"kind":"Mesh"},"from":[{"targetRef":{"kind":"Mesh"},"default":{"local":{"tcp":{"connectionRate":{"num":0,"interval":"1s"}}}}}]}`, []string{"spec.from[0].default.local.tcp.connectionRate.num"}, "at least 1"},
	}
	runCases(t, cases)
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
