package api_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/api"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// TestKumaDocumentForm: writes accept Kuma's universal form (fields at the
// top level of the document) and store them under spec.
func TestKumaDocumentForm(t *testing.T) {
	z := newFixture(t, api.RoleZone)
	status, raw := z.do("PUT", "/api/v1/resources/Dataplane/web-1?mesh=default",
		`{"type":"Dataplane","mesh":"default","name":"web-1","address":"10.0.0.1","networking":{"inbound":[]}}`)
	require.Equal(t, 201, status, string(raw))
	got := decode[resource.Resource](t, raw)
	assert.JSONEq(t, `{"address":"10.0.0.1","networking":{"inbound":[]}}`, string(got.Spec))

	g := newFixture(t, api.RoleGlobal)
	status, raw = g.do("POST", "/api/v1/apply",
		`{"resources":[{"type":"Mesh","name":"default","mtls":{"enabledBackend":"ca-1"}},{"type":"MeshTimeout","mesh":"default","name":"t","spec":{"connectTimeout":"1s"}}]}`)
	require.Equal(t, 200, status, string(raw))
	status, raw = g.do("GET", "/api/v1/resources/Mesh/default", nil)
	require.Equal(t, 200, status, string(raw))
	assert.JSONEq(t, `{"mtls":{"enabledBackend":"ca-1"}}`, string(decode[resource.Resource](t, raw).Spec))

	e := g.apiError("POST", "/api/v1/validate", `{"resources":[{"type":"Mesh","name":"m","spec":{},"mtls":{}}]}`, 400, api.CodeBadRequest)
	assert.Contains(t, e.Message, "mtls")
	assert.Contains(t, e.Message, "resources[0]")
}
