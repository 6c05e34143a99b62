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
	e := &Engine{cfg: Config{Role: role}, validator: v, digests: schemaDigests(reg.Types()),
		pluginVersion: func(p string) (string, bool) { return "1.0.0", p == "p" }}
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
	v, trusted, _ := z.receiveValidator(withoutPlugins(md))
	assert.Equal(t, []string{"Policy"}, trusted)
	require.NoError(t, v.Validate(context.Background(), bad), "global enforced this very schema")
	assert.Equal(t, 1, plugins.seen, "the zone's plugin still validates")
	require.Error(t, z.validator.Validate(context.Background(), bad), "writes on the zone itself keep the schema step")
	envelope := []*resource.Resource{{Type: "Policy", Mesh: "m", Name: "Bad_Name", Spec: json.RawMessage(`{}`)}}
	require.Error(t, v.Validate(context.Background(), envelope), "the envelope is still checked")

	// A zone whose schema differs (another plugin version) checks it.
	z2, _ := schemaEngine(t, RoleZone, `{"type":"object","properties":{"port":{"type":"integer","maximum":100}}}`)
	v, trusted, _ = z2.receiveValidator(md)
	assert.Empty(t, trusted)
	require.NoError(t, v.Validate(context.Background(), bad), "99 is fine by this zone's own schema")
	bad[0].Spec = json.RawMessage(`{"port":999}`)
	require.Error(t, v.Validate(context.Background(), bad))

	// No header (or a forged entry for a type it does not receive): no trust.
	_, trusted, _ = z.receiveValidator(nil)
	assert.Empty(t, trusted)
	_, trusted, _ = z.receiveValidator(metadata.Pairs(schemaDigestKey, "Dataplane="+validate.SchemaDigest(resource.TypeDescriptor{Schema: json.RawMessage(portSchema)})))
	assert.Empty(t, trusted, "a zone only trusts global for types global sends it")
}

// withoutPlugins is md as a global that announces no plugin versions (an
// older build) sends it.
func withoutPlugins(md metadata.MD) metadata.MD {
	out := md.Copy()
	delete(out, typePluginKey)
	return out
}

// A zone skips its schema and plugin passes for a global→zone resource
// only when global announced the same plugin name, version and schema for
// its type; a different version, another plugin, another schema or no
// announcement gets the zone's full validation. Global checks what a zone
// sends in full, whatever the zone announces.
func TestZoneTrustsGlobalValidationOnlyForTheSamePlugin(t *testing.T) {
	ctx := context.Background()
	g, _ := schemaEngine(t, RoleGlobal, portSchema)
	md := g.schemaHeader("zone-1")
	assert.ElementsMatch(t, []string{"Plain=p/1.0.0", "Policy=p/1.0.0"}, md.Get(typePluginKey), "every served type, never a received one")

	// 99 is over the schema's maximum: only a validation that runs the
	// schema refuses it, and only one that runs the plugin counts it.
	bad := func() []*resource.Resource {
		return []*resource.Resource{
			{Type: "Policy", Mesh: "m", Name: "p1", Spec: json.RawMessage(`{"port":99}`)},
			{Type: "Plain", Mesh: "m", Name: "p2", Spec: json.RawMessage(`{}`)},
		}
	}

	t.Run("same plugin, version and schema: plugin not called", func(t *testing.T) {
		z, plugins := schemaEngine(t, RoleZone, portSchema)
		running := "1.0.0" // the version of the zone's plugin process; "" when down
		z.pluginVersion = func(string) (string, bool) { return running, running != "" }
		v, schemaTrusted, pluginTrusted := z.receiveValidator(md)
		assert.Equal(t, []string{"Policy"}, schemaTrusted)
		assert.Equal(t, []string{"Plain", "Policy"}, pluginTrusted, "a type without a schema on either side is trusted too")
		require.NoError(t, v.Validate(ctx, bad()))
		assert.Equal(t, 0, plugins.seen, "global's verdict is this plugin's: not asked again")
		envelope := []*resource.Resource{{Type: "Policy", Mesh: "m", Name: "Bad_Name", Spec: json.RawMessage(`{}`)}}
		require.Error(t, v.Validate(ctx, envelope), "the envelope is still checked")
		require.Error(t, z.validator.Validate(ctx, bad()), "writes on the zone itself are validated in full")
		assert.Equal(t, 2, plugins.seen)

		// The zone's plugin restarted as another build: called again.
		running = "1.0.1"
		plugins.seen = 0
		require.NoError(t, v.Validate(ctx, bad()), "the schema is the one global enforced (a restart keeps the types and schemas)")
		assert.Equal(t, 2, plugins.seen)
		running = ""
		plugins.seen = 0
		require.NoError(t, v.Validate(ctx, bad()))
		assert.Equal(t, 2, plugins.seen, "a plugin that is not running is asked (the host answers that it is down)")
	})

	t.Run("different plugin version: plugin called", func(t *testing.T) {
		z, plugins := schemaEngine(t, RoleZone, portSchema)
		z.pluginVersion = func(string) (string, bool) { return "1.1.0", true }
		v, schemaTrusted, pluginTrusted := z.receiveValidator(md)
		assert.Equal(t, []string{"Policy"}, schemaTrusted, "the schema shortcut of decision 0006 stays")
		assert.Empty(t, pluginTrusted)
		require.NoError(t, v.Validate(ctx, bad()))
		assert.Equal(t, 2, plugins.seen, "this zone's plugin judges both")
	})

	t.Run("another plugin name, another schema, nothing announced: plugin called", func(t *testing.T) {
		other := md.Copy()
		other.Set(typePluginKey, "Plain=q/1.0.0", "Policy=q/1.0.0")
		unversioned := md.Copy()
		unversioned.Set(typePluginKey, "Plain=p/", "Policy=p/")
		twice := md.Copy()
		twice.Append(typePluginKey, "Plain=p/1.0.0", "Policy=p/1.0.0")
		for name, c := range map[string]struct {
			schema string
			md     metadata.MD
		}{
			"other plugin":      {portSchema, other},
			"announced twice":   {portSchema, twice},
			"no version":        {portSchema, unversioned},
			"older global":      {portSchema, withoutPlugins(md)},
			"no header":         {portSchema, nil},
			"zone's own schema": {`{"type":"object"}`, md},
		} {
			z, plugins := schemaEngine(t, RoleZone, c.schema)
			v, _, pluginTrusted := z.receiveValidator(c.md)
			if name == "zone's own schema" {
				assert.Equal(t, []string{"Plain"}, pluginTrusted, "%s: only the type without a schema on either side", name)
			} else {
				assert.Empty(t, pluginTrusted, name)
			}
			_ = v.Validate(ctx, bad())
			assert.Equal(t, 2-len(pluginTrusted), plugins.seen, name)
		}
	})

	t.Run("zone→global always validated on global", func(t *testing.T) {
		z, _ := schemaEngine(t, RoleZone, portSchema)
		zmd := z.schemaHeader("")
		assert.Equal(t, []string{"Dataplane=p/1.0.0"}, zmd.Get(typePluginKey))
		g, plugins := schemaEngine(t, RoleGlobal, portSchema)
		_, schemaTrusted, pluginTrusted := g.receiveValidator(zmd)
		assert.Empty(t, schemaTrusted)
		assert.Empty(t, pluginTrusted)
		// What global runs on a zone's resources is its own validator, whatever a zone says.
		dp := []*resource.Resource{{Type: "Dataplane", Mesh: "m", Name: "d1", Spec: json.RawMessage(`{"port":99}`)}}
		require.Error(t, g.validator.Validate(ctx, dp))
		assert.Equal(t, 1, plugins.seen)
	})
}
