package cli

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

const kumaMesh = `type: Mesh
name: default
mtls:
  enabledBackend: ca-1
  backends:
  - name: ca-1
    type: builtin
`

// TestApplyAndGetKumaForm: apply takes Kuma's top-level form, and get
// --format kuma prints it back (creationTime and modificationTime aside).
func TestApplyAndGetKumaForm(t *testing.T) {
	h := newHarness(t, "global")
	h.files["mesh.yaml"] = kumaMesh
	code, out, errOut := h.run("apply", "-f", "mesh.yaml")
	require.Equal(t, ExitOK, code, errOut)
	assert.Contains(t, out, "Mesh default created")

	code, out, errOut = h.run("get", "Mesh", "default", "-o", "yaml", "--format", "kuma")
	require.Equal(t, ExitOK, code, errOut)
	var want, got map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(kumaMesh), &want))
	require.NoError(t, yaml.Unmarshal([]byte(out), &got), out)
	delete(got, "creationTime")
	delete(got, "modificationTime")
	assert.Equal(t, want, got, out)
	assert.NotContains(t, out, "version:")

	// The engine form still has spec.
	code, out, _ = h.run("get", "Mesh", "default", "-o", "yaml")
	require.Equal(t, ExitOK, code)
	assert.Contains(t, out, "spec:")

	code, out, _ = h.run("get", "Mesh", "-o", "json", "--format", "kuma")
	require.Equal(t, ExitOK, code)
	assert.Contains(t, out, `"mtls"`)
	assert.NotContains(t, out, `"spec"`)

	code, _, errOut = h.run("get", "Mesh", "--format", "proto")
	assert.Equal(t, ExitUsage, code)
	assert.Equal(t, "get: --format \"proto\": want engine or kuma\n", errOut)
}

func TestApplyMixedFormRefused(t *testing.T) {
	h := newHarness(t, "global")
	h.files["bad.yaml"] = "type: Mesh\nname: default\nspec: {}\nmtls: {}\n"
	code, _, errOut := h.run("apply", "-f", "bad.yaml")
	assert.NotEqual(t, ExitOK, code)
	assert.Contains(t, errOut, "bad.yaml document 1")
	assert.Contains(t, errOut, "mtls")
}
