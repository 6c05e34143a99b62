package engine

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/kdsgrpc"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/token"
	"github.com/kds-engine/kds-engine/engine/internal/validate"
)

// The name rules table of docs/api.md, checked against the code that
// enforces each row. Zone names are checked in three places (the zone's
// --name, the token signer, global's session check): all three agree.
func TestNameRulesAsDocumented(t *testing.T) {
	t.Run("zone names", func(t *testing.T) {
		for name, ok := range map[string]bool{
			"a": true, "zone-1": true, "1zone": true, strings.Repeat("a", 63): true,
			"": false, strings.Repeat("a", 64): false, "-zone": false, "zone-": false,
			"Zone": false, "zone_1": false, "zone.1": false,
		} {
			assert.Equal(t, ok, kdsgrpc.ValidateZoneName(name) == nil, "--name %q", name)
			assert.Equal(t, ok, token.ValidateZoneName(name) == nil, "token zone %q", name)
			_, err := New(Config{Role: RoleZone, ZoneName: name, GlobalAddress: "127.0.0.1:5685", DataDir: t.TempDir(),
				PluginsDir: builtinDir, Insecure: true, TokenFile: "t"}, hclog.NewNullLogger())
			if ok {
				assert.NoError(t, err, "config --name %q", name)
			} else if assert.Error(t, err, "config --name %q", name) {
				assert.Contains(t, err.Error(), "name", "the error names the setting")
			}
		}
	})

	t.Run("resource and mesh names, labels", func(t *testing.T) {
		g := startGlobal(t, builtinDir)
		create(t, g, meshResource("default"))
		write := func(name, mesh string, labels map[string]string) error {
			r := meshTimeout(name, "1s")
			r.Mesh, r.Labels = mesh, labels
			_, err := g.b().Create(context.Background(), r)
			return err
		}
		for name, ok := range map[string]bool{
			"a": true, "web.timeouts-1": true, strings.Repeat("a", 253): true,
			strings.Repeat("a", 254): false, ".": false, "..": false, "-a": false, "a.": false,
			"Web": false, "a_b": false, "a/b": false,
		} {
			err := write(name, "default", nil)
			if ok {
				assert.NoError(t, err, "name %q", name)
				continue
			}
			var ve *resource.ValidationError
			if assert.ErrorAs(t, err, &ve, "name %q", name) {
				assert.Contains(t, ve.Error(), "name", "name %q", name)
			}
		}
		// The envelope gives mesh the rule of names; the built-in Mesh
		// type narrows a Mesh's name to Kuma's rule (a letter first, no
		// '.', at most 63), and a mesh-scoped write needs its Mesh.
		var ve *resource.ValidationError
		require.ErrorAs(t, write("m", "Default", nil), &ve, "the envelope refuses the mesh name")
		assert.Equal(t, "mesh", ve.Invalid[0].Errors[0].Field)
		for name, ok := range map[string]bool{
			"m": true, "mesh-1": true, strings.Repeat("m", 63): true,
			strings.Repeat("m", 64): false, "1mesh": false, "mesh.1": false, "mesh-": false,
		} {
			_, err := g.b().Create(context.Background(), meshResource(name))
			assert.Equal(t, ok, err == nil, "Mesh %q: %v", name, err)
		}
		assert.NoError(t, write("in-long-mesh", strings.Repeat("m", 63), nil))
		assert.ErrorIs(t, write("in-missing-mesh", "mesh.1", nil), ErrMeshNotFound, "a valid name, but no such Mesh can exist")

		for _, l := range []struct {
			labels map[string]string
			ok     bool
		}{
			{map[string]string{"Team_A.x": ""}, true},
			{map[string]string{strings.Repeat("p", 253) + "/" + strings.Repeat("n", 63): strings.Repeat("v", 63)}, true},
			{map[string]string{"example.com/team": "web"}, true},
			{map[string]string{strings.Repeat("n", 64): "x"}, false},
			{map[string]string{"team": strings.Repeat("v", 64)}, false},
			{map[string]string{strings.Repeat("p", 254) + "/n": "x"}, false},
			{map[string]string{"Example.com/team": "x"}, false},
			{map[string]string{"team": "-web"}, false},
			{map[string]string{validate.ReservedLabelPrefix + "x": "y"}, false},
		} {
			err := write("labelled", "default", l.labels)
			if l.ok {
				assert.NoError(t, err, "%v", l.labels)
				require.NoError(t, g.b().Delete(context.Background(), resource.Key{Type: "MeshTimeout", Mesh: "default", Name: "labelled"}, ""))
			} else {
				assert.Error(t, err, "%v", l.labels)
			}
		}
	})
}
