package engine

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/metadata"

	"github.com/kds-engine/kds-engine/engine/internal/plugin"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/validate"
)

// acceptAll is a plugin side that accepts everything and counts what it saw.
type acceptAll struct{ seen int }

func (a *acceptAll) ValidateBatch(_ context.Context, _ string, rs []*resource.Resource) (map[int][]resource.FieldError, error) {
	a.seen += len(rs)
	return nil, nil
}

func schemaEngine(t *testing.T, role Role, policySchema string) (*Engine, *acceptAll) {
	t.Helper()
	strict := json.RawMessage(`{"type":"object","properties":{"port":{"type":"integer","maximum":10}},"additionalProperties":false}`)
	reg, err := plugin.NewRegistry(map[string][]resource.TypeDescriptor{"p": {
		{Name: "Policy", Scope: resource.ScopeMesh, Direction: resource.GlobalToZone, Plugin: "p", Schema: json.RawMessage(policySchema)},
		{Name: "Plain", Scope: resource.ScopeMesh, Direction: resource.GlobalToZone, Plugin: "p"},
		{Name: "Dataplane", Scope: resource.ScopeMesh, Direction: resource.ZoneToGlobal, Plugin: "p", Schema: strict},
	}})
	require.NoError(t, err)
	plugins := &acceptAll{}
	v, err := validate.New(reg, plugins)
	require.NoError(t, err)
	e := &Engine{cfg: Config{Role: role}, validator: v, digests: schemaDigests(reg.Types())}
	if role == RoleGlobal {
		e.served, e.received = []string{"Plain", "Policy"}, []string{"Dataplane"}
	} else {
		e.served, e.received = []string{"Dataplane"}, []string{"Plain", "Policy"}
	}
	return e, plugins
}

const portSchema = `{"type":"object","properties":{"port":{"type":"integer","maximum":10}},"additionalProperties":false}`

// A zone skips the schema step only for types whose schema global
// announced with the same digest; envelope and plugin checks still run.
func TestZoneTrustsOnlyIdenticalSchemas(t *testing.T) {
	g, _ := schemaEngine(t, RoleGlobal, portSchema)
	md := g.schemaHeader("zone-1")
	require.Len(t, md.Get(schemaDigestKey), 1, "served types with a schema; never a received type")
	assert.Contains(t, md.Get(schemaDigestKey)[0], "Policy=")

	bad := []*resource.Resource{{Type: "Policy", Mesh: "m", Name: "p1", Spec: json.RawMessage(`{"port":99}`)}}

	z, plugins := schemaEngine(t, RoleZone, portSchema)
	v, trusted := z.receiveValidator(md)
	assert.Equal(t, []string{"Policy"}, trusted)
	require.NoError(t, v.Validate(context.Background(), bad), "global enforced this very schema")
	assert.Equal(t, 1, plugins.seen, "the zone's plugin still validates")
	require.Error(t, z.validator.Validate(context.Background(), bad), "writes on the zone itself keep the schema step")
	envelope := []*resource.Resource{{Type: "Policy", Mesh: "m", Name: "Bad_Name", Spec: json.RawMessage(`{}`)}}
	require.Error(t, v.Validate(context.Background(), envelope), "the envelope is still checked")

	// A zone whose schema differs (another plugin version) checks it.
	z2, _ := schemaEngine(t, RoleZone, `{"type":"object","properties":{"port":{"type":"integer","maximum":100}}}`)
	v, trusted = z2.receiveValidator(md)
	assert.Empty(t, trusted)
	require.NoError(t, v.Validate(context.Background(), bad), "99 is fine by this zone's own schema")
	bad[0].Spec = json.RawMessage(`{"port":999}`)
	require.Error(t, v.Validate(context.Background(), bad))

	// No header (or a forged entry for a type it does not receive): no trust.
	_, trusted = z.receiveValidator(nil)
	assert.Empty(t, trusted)
	_, trusted = z.receiveValidator(metadata.Pairs(schemaDigestKey, "Dataplane="+validate.SchemaDigest(resource.TypeDescriptor{Schema: json.RawMessage(portSchema)})))
	assert.Empty(t, trusted, "a zone only trusts global for types global sends it")
}
