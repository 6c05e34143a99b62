package validate

import (
	"context"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/plugin"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/pluginbuild"
)

var binDir string

func TestMain(m *testing.M) {
	os.Exit(pluginbuild.Main(m, func(dir string) error {
		binDir = dir
		return pluginbuild.Build(dir, map[string]string{
			"kds-plugin-policies": "./plugins/policies",
			"kds-plugin-alpha":    "./engine/internal/plugin/testplugins/testplugin",
		})
	}))
}

func startHost(t *testing.T, opts ...plugin.Option) (*plugin.Host, *Validator) {
	t.Helper()
	log := hclog.New(&hclog.LoggerOptions{Output: io.Discard})
	h := plugin.NewHost(binDir, log, opts...)
	t.Cleanup(func() { require.NoError(t, h.Close()) })
	require.NoError(t, h.Start(context.Background()))
	v, err := New(h.Registry(), h, WithBatchSize(1000))
	require.NoError(t, err)
	return h, v
}

func calls(h *plugin.Host, name string) int64 {
	for _, p := range h.Plugins() {
		if p.Name == name {
			return p.Calls
		}
	}
	return -1
}

func TestPipelineWithRealPlugins(t *testing.T) {
	h, v := startHost(t)
	rs := []*resource.Resource{
		r("MeshTimeout", "default", "ok", `{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"connectionTimeout":"5s"}}]}`),
		r("MeshTimeout", "default", "semantic", `{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"connectionTimeout":"-5s"}}]}`),
		r("MeshTimeout", "default", "schema", `{"targetRef":{"kind":7},"to":[]}`),
		r("Mesh", "default", "envelope", `{}`),
		r("AlphaOne", "default", "alpha-bad", `{"bad":true}`),
	}
	got := errorsOf(t, v.Validate(context.Background(), rs))
	assert.NotContains(t, got, "ok")
	assert.Equal(t, "spec.to[0].default.connectionTimeout", got["semantic"][0].Field)
	assert.Contains(t, got["semantic"][0].Message, "must be greater than zero")
	assert.Equal(t, "spec.targetRef.kind", got["schema"][0].Field, "the schema derived by the SDK is enforced by the engine")
	assert.Equal(t, "mesh", got["envelope"][0].Field)
	assert.Equal(t, []resource.FieldError{{Field: "spec.bad", Message: "invalid value true: bad is set"}}, got["alpha-bad"])
	assert.EqualValues(t, 1, calls(h, "policies"))
	assert.EqualValues(t, 1, calls(h, "alpha"))
}

func TestTenThousandResourcesCostAHandfulOfRPCs(t *testing.T) {
	h, v := startHost(t)
	rs := make([]*resource.Resource, 10_000)
	for i := range rs {
		spec := `{"value":"v"}`
		if i == 9_999 {
			spec = `{"bad":true}`
		}
		rs[i] = r("AlphaOne", "default", fmt.Sprintf("r-%d", i), spec)
	}
	got := errorsOf(t, v.Validate(context.Background(), rs))
	assert.Len(t, got, 1)
	assert.Equal(t, "spec.bad", got["r-9999"][0].Field)
	assert.LessOrEqual(t, calls(h, "alpha"), int64(10))
}

func TestPipelineReportsDownPlugin(t *testing.T) {
	h, v := startHost(t, plugin.WithRestartBackoff(time.Hour, time.Hour))
	var pid int
	for _, p := range h.Plugins() {
		if p.Name == "alpha" {
			pid = p.PID
		}
	}
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	require.Eventually(t, func() bool {
		err := v.Validate(context.Background(), []*resource.Resource{r("AlphaOne", "default", "a", `{}`)})
		return err != nil && assert.ErrorIs(t, err, plugin.ErrPluginDown) && assert.Contains(t, err.Error(), `plugin "alpha"`)
	}, 20*time.Second, 10*time.Millisecond)
	require.NoError(t, v.Validate(context.Background(), []*resource.Resource{
		r("Mesh", "", "default", `{}`),
	}), "types of other plugins still validate")
}
