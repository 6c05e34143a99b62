package validate

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/plugin"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/sdk"
)

// The plugin host provides both halves of what the Validator needs.
var (
	_ Registry = (*plugin.Registry)(nil)
	_ Plugins  = (*plugin.Host)(nil)
)

type portSpec struct {
	Port  int    `json:"port" jsonschema:"minimum=1,maximum=65535"`
	Items []item `json:"items,omitempty"`
}

type item struct {
	Value string `json:"value"`
}

// fakeRegistry is a fixed registry.
type fakeRegistry map[string]resource.TypeDescriptor

func (f fakeRegistry) Type(n string) (resource.TypeDescriptor, bool) { d, ok := f[n]; return d, ok }
func (f fakeRegistry) Types() []resource.TypeDescriptor {
	var out []resource.TypeDescriptor
	for _, d := range f {
		out = append(out, d)
	}
	return out
}

// fakePlugins records calls and rejects specs containing "reject".
type fakePlugins struct {
	mu      sync.Mutex
	calls   map[string][]int // plugin -> batch sizes
	failing map[string]error
}

func (f *fakePlugins) ValidateBatch(_ context.Context, p string, rs []*resource.Resource) (map[int][]resource.FieldError, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = map[string][]int{}
	}
	f.calls[p] = append(f.calls[p], len(rs))
	if err := f.failing[p]; err != nil {
		return nil, err
	}
	out := map[int][]resource.FieldError{}
	for i, r := range rs {
		if !strings.HasPrefix(r.Type, p) {
			return nil, fmt.Errorf("type %s sent to plugin %s", r.Type, p)
		}
		if strings.Contains(string(r.Spec), "reject") {
			out[i] = []resource.FieldError{{Field: "spec.items[0].value", Message: "rejected by " + p}}
		}
	}
	return out, nil
}

func registry(t testing.TB) fakeRegistry {
	schema, err := sdk.SchemaFor[portSpec]()
	require.NoError(t, err)
	return fakeRegistry{
		"alphaMeshy":  {Name: "alphaMeshy", Scope: resource.ScopeMesh, Plugin: "alpha", Schema: schema},
		"alphaGlobal": {Name: "alphaGlobal", Scope: resource.ScopeGlobal, Plugin: "alpha"},
		"betaMeshy":   {Name: "betaMeshy", Scope: resource.ScopeMesh, Plugin: "beta", Schema: schema},
	}
}

func newValidator(t *testing.T, opts ...Option) (*Validator, *fakePlugins) {
	fp := &fakePlugins{}
	v, err := New(registry(t), fp, opts...)
	require.NoError(t, err)
	return v, fp
}

func r(typ, mesh, name, spec string) *resource.Resource {
	return &resource.Resource{Type: typ, Mesh: mesh, Name: name, Spec: json.RawMessage(spec)}
}

func errorsOf(t *testing.T, err error) map[string][]resource.FieldError {
	t.Helper()
	var ve *resource.ValidationError
	require.ErrorAs(t, err, &ve, "%v", err)
	out := map[string][]resource.FieldError{}
	for _, inv := range ve.Invalid {
		out[inv.Key.Name] = inv.Errors
	}
	return out
}

func TestEnvelope(t *testing.T) {
	v, fp := newValidator(t, WithMaxResourceSize(2048))
	long := strings.Repeat("a", 254)
	cases := []struct {
		res   *resource.Resource
		field string
		msg   string
	}{
		{r("alphaMeshy", "default", "web-1.v2", `{"port":80}`), "", ""},
		{r("alphaGlobal", "", strings.Repeat("a", 253), `{}`), "", ""},
		{r("alphaMeshy", "default", "Web", `{"port":80}`), "name", "lower case"},
		{r("alphaMeshy", "default", "-web", `{"port":80}`), "name", "start and end"},
		{r("alphaMeshy", "default", "web.", `{"port":80}`), "name", "start and end"},
		{r("alphaMeshy", "default", "we_b", `{"port":80}`), "name", "only lower case"},
		{r("alphaGlobal", "", long, `{}`), "name", "254 characters, longer than 253"},
		{r("alphaMeshy", "default", "", `{"port":80}`), "name", "is required"},
		{r("alphaMeshy", "", "nomesh", `{"port":80}`), "mesh", "is required: alphaMeshy is mesh-scoped"},
		{r("alphaGlobal", "default", "hasmesh", `{}`), "mesh", "must be empty: alphaGlobal is global-scoped"},
		{r("alphaMeshy", "Bad_Mesh", "badmesh", `{"port":80}`), "mesh", "only lower case"},
		{r("gammaThing", "default", "unknown", `{}`), "type", `unknown type "gammaThing"`},
		{r("", "default", "notype", `{}`), "type", "is required"},
		{r("alphaGlobal", "", "big", `{"pad":"`+strings.Repeat("x", 3000)+`"}`), "", "over the limit of 2048 bytes"},
		{r("alphaGlobal", "", "notjson", `{"port":`), "spec", "not valid JSON"},
		{&resource.Resource{Type: "alphaGlobal", Name: "label", Labels: map[string]string{"": "x"}}, "labels", `label "": the name is empty`},
		{&resource.Resource{Type: "alphaGlobal", Name: "badlabel", Labels: map[string]string{"kuma.io/Not Valid!": "x"}}, "labels", `label "kuma.io/Not Valid!": the name may hold only`},
		{&resource.Resource{Type: "alphaGlobal", Name: "reserved", Labels: map[string]string{"kds-engine.io/zone": "z"}}, "labels", `label "kds-engine.io/zone": the prefix kds-engine.io/ is reserved`},
	}
	rs := make([]*resource.Resource, len(cases))
	for i, c := range cases {
		rs[i] = c.res
	}
	got := errorsOf(t, v.Validate(context.Background(), rs))
	for _, c := range cases {
		t.Run(c.res.Name+"/"+c.field, func(t *testing.T) {
			fes := got[c.res.Name]
			if c.msg == "" {
				assert.Empty(t, fes)
				return
			}
			require.NotEmpty(t, fes)
			assert.Equal(t, c.field, fes[0].Field)
			assert.Contains(t, fes[0].Message, c.msg)
		})
	}
	assert.Contains(t, got["big"][0].Message, "resource is 30")
	// Only the valid ones reached the plugin.
	assert.Equal(t, map[string][]int{"alpha": {2}}, fp.calls)
}

func TestSchemaErrorsHaveSpecPaths(t *testing.T) {
	v, fp := newValidator(t)
	got := errorsOf(t, v.Validate(context.Background(), []*resource.Resource{
		r("alphaMeshy", "m", "missing", `{}`),
		r("alphaMeshy", "m", "wrongtype", `{"port":"80"}`),
		r("alphaMeshy", "m", "range", `{"port":70000}`),
		r("alphaMeshy", "m", "extra", `{"port":80,"colour":"red"}`),
		r("alphaMeshy", "m", "nested", `{"port":80,"items":[{"value":"a"},{}]}`),
		r("alphaMeshy", "m", "empty", ``),
		r("alphaMeshy", "m", "fine", `{"port":80,"items":[{"value":"a"}]}`),
	}))
	assert.Equal(t, []resource.FieldError{{Field: "spec.port", Message: "is required"}}, got["missing"])
	assert.Equal(t, "spec.port", got["wrongtype"][0].Field)
	assert.Equal(t, "must be an integer, not JSON string", got["wrongtype"][0].Message)
	assert.Equal(t, "spec.port", got["range"][0].Field)
	assert.Equal(t, "must be at most 65535, got 70000", got["range"][0].Message)
	assert.Equal(t, []resource.FieldError{{Field: "spec.colour", Message: "unknown field"}}, got["extra"])
	assert.Equal(t, []resource.FieldError{{Field: "spec.items[1].value", Message: "is required"}}, got["nested"])
	assert.Equal(t, []resource.FieldError{{Field: "spec.port", Message: "is required"}}, got["empty"], "an absent spec is {}")
	assert.NotContains(t, got, "fine")
	assert.Equal(t, map[string][]int{"alpha": {7}}, fp.calls, "schema failures still reach the plugin, so every problem is reported at once")
}

// A resource that fails its schema is still validated by its plugin: the
// answer has both, except plugin errors at a field the schema reported.
func TestSchemaAndPluginErrorsTogether(t *testing.T) {
	v, _ := newValidator(t)
	got := errorsOf(t, v.Validate(context.Background(), []*resource.Resource{
		r("alphaMeshy", "m", "both", `{"port":70000,"items":[{"value":"reject"}]}`),
		r("alphaMeshy", "m", "same", `{"port":80,"items":[{"value":"reject","x":1}]}`),
	}))
	assert.Equal(t, []resource.FieldError{
		{Field: "spec.port", Message: "must be at most 65535, got 70000"},
		{Field: "spec.items[0].value", Message: "rejected by alpha"},
	}, got["both"])
	assert.Equal(t, []resource.FieldError{{Field: "spec.items[0].x", Message: "unknown field"}, {Field: "spec.items[0].value", Message: "rejected by alpha"}}, got["same"])
	got = errorsOf(t, v.Validate(context.Background(), []*resource.Resource{
		r("alphaMeshy", "m", "covered", `{"port":80,"items":[{"value":7,"reject":1}]}`),
	}))
	for _, fe := range got["covered"] {
		assert.NotEqual(t, "rejected by alpha", fe.Message, "the plugin's error at spec.items[0].value is covered by the schema's: %v", got)
	}
}

func TestPluginErrorsInInputOrder(t *testing.T) {
	v, _ := newValidator(t)
	rs := []*resource.Resource{
		r("betaMeshy", "m", "b-bad", `{"port":1,"items":[{"value":"reject"}]}`),
		r("alphaMeshy", "m", "a-env", `{"port":0}`),
		r("alphaMeshy", "m", "a-bad", `{"port":1,"items":[{"value":"reject"}]}`),
		r("alphaMeshy", "m", "a-ok", `{"port":1}`),
	}
	err := v.Validate(context.Background(), rs)
	var ve *resource.ValidationError
	require.ErrorAs(t, err, &ve)
	var names []string
	for _, inv := range ve.Invalid {
		names = append(names, inv.Key.Name)
	}
	assert.Equal(t, []string{"b-bad", "a-env", "a-bad"}, names)
	assert.Equal(t, resource.FieldError{Field: "spec.items[0].value", Message: "rejected by beta"}, ve.Invalid[0].Errors[0])
	assert.Contains(t, err.Error(), "betaMeshy m/b-bad invalid: spec.items[0].value: rejected by beta")
	require.NoError(t, v.Validate(context.Background(), rs[3:]))
	require.NoError(t, v.Validate(context.Background(), nil))
}

func TestBatchingGroupsByPlugin(t *testing.T) {
	v, fp := newValidator(t, WithBatchSize(1000))
	var rs []*resource.Resource
	for i := range 10_000 {
		typ := "alphaMeshy"
		if i%2 == 1 {
			typ = "betaMeshy"
		}
		rs = append(rs, r(typ, "m", fmt.Sprintf("r%d", i), `{"port":8080}`))
	}
	require.NoError(t, v.Validate(context.Background(), rs))
	assert.Equal(t, map[string][]int{"alpha": {1000, 1000, 1000, 1000, 1000}, "beta": {1000, 1000, 1000, 1000, 1000}}, fp.calls)

	// Large resources are batched by bytes as well.
	v, fp = newValidator(t, WithBatchSize(1000), WithMaxResourceSize(2<<20))
	big := `{"port":1,"items":[{"value":"` + strings.Repeat("x", 1<<20) + `"}]}`
	rs = []*resource.Resource{r("alphaMeshy", "m", "a", big), r("alphaMeshy", "m", "b", big), r("alphaMeshy", "m", "c", big), r("alphaMeshy", "m", "d", big), r("alphaMeshy", "m", "e", big)}
	require.NoError(t, v.Validate(context.Background(), rs))
	// Batches go out concurrently: their order is not fixed.
	require.Len(t, fp.calls, 1)
	assert.ElementsMatch(t, []int{3, 2}, fp.calls["alpha"])
}

// goroutineID returns the calling goroutine's id (from its stack header).
func goroutineID() string {
	b := make([]byte, 64)
	b = b[:runtime.Stack(b, false)]
	f := strings.Fields(string(b))
	return f[1] // "goroutine N [running]:"
}

// sameGoroutinePlugins records whether each call ran on the goroutine that
// called Validate.
type sameGoroutinePlugins struct {
	fakePlugins
	caller string
	calls  []bool
}

func (f *sameGoroutinePlugins) ValidateBatch(ctx context.Context, p string, rs []*resource.Resource) (map[int][]resource.FieldError, error) {
	same := goroutineID() == f.caller
	res, err := f.fakePlugins.ValidateBatch(ctx, p, rs)
	f.mu.Lock()
	f.calls = append(f.calls, same)
	f.mu.Unlock()
	return res, err
}

// A Validate that needs one plugin call makes it on the caller's goroutine
// (no hand-off to a goroutine and back on the sync path's critical path);
// several calls still go out concurrently.
func TestSinglePluginCallRunsInline(t *testing.T) {
	fp := &sameGoroutinePlugins{caller: goroutineID()}
	v, err := New(registry(t), fp, WithBatchSize(2))
	require.NoError(t, err)
	require.NoError(t, v.Validate(context.Background(), []*resource.Resource{r("alphaMeshy", "m", "a", `{"port":1}`), r("alphaMeshy", "m", "b", `{"port":2}`)}))
	assert.Equal(t, []bool{true}, fp.calls, "one call, on the caller's goroutine")

	fp.calls = nil
	err = v.Validate(context.Background(), []*resource.Resource{r("alphaMeshy", "m", "a", `{"port":1}`), r("betaMeshy", "m", "b", `{"reject":1}`)})
	assert.Len(t, errorsOf(t, err), 1, "the other plugin's verdict is kept")
	assert.Equal(t, []bool{false, false}, fp.calls, "two plugins: concurrent calls")
}

func TestPluginFailurePassesThrough(t *testing.T) {
	v, fp := newValidator(t)
	down := fmt.Errorf("validate: plugin %q (down): %w", "beta", plugin.ErrPluginDown)
	fp.failing = map[string]error{"beta": down}
	err := v.Validate(context.Background(), []*resource.Resource{r("betaMeshy", "m", "x", `{"port":1}`)})
	require.ErrorIs(t, err, plugin.ErrPluginDown)
	assert.Contains(t, err.Error(), `"beta"`)
}

func TestNewRejectsBadSchema(t *testing.T) {
	reg := registry(t)
	reg["broken"] = resource.TypeDescriptor{Name: "broken", Plugin: "gamma", Schema: json.RawMessage(`{"type": 12}`)}
	_, err := New(reg, &fakePlugins{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "schema of type broken (plugin gamma)")

	v, _ := newValidator(t)
	d, ok := v.Type("alphaMeshy")
	assert.True(t, ok)
	assert.Equal(t, "alpha", d.Plugin)
	assert.Len(t, v.Types(), 3)
}

// Label keys and values follow Kubernetes' syntax, and the kds-engine.io/
// prefix belongs to the engine.
func TestLabelSyntax(t *testing.T) {
	for _, ok := range [][2]string{
		{"team", "web"}, {"team", ""}, {"app.kubernetes.io/name", "web-1"}, {"kuma.io/service", "web_v1.2"},
		{"a", "B"}, {strings.Repeat("a", 63), strings.Repeat("v", 63)}, {strings.Repeat("p", 253) + "/n", "x"},
		{"example.com/Mixed_Case.name-1", "Z"}, {"kds-engine.io.example/x", "y"},
	} {
		assert.Empty(t, LabelProblem(ok[0], ok[1]), "%q=%q", ok[0], ok[1])
	}
	for _, bad := range []struct{ key, value, msg string }{
		{"kuma.io/Not Valid!", "", "the name may hold only"},
		{"Not Valid", "", "the name may hold only"},
		{"-lead", "", "start and end"},
		{"trail.", "", "start and end"},
		{"", "x", "the name is empty"},
		{"example.com/", "x", "the name is empty"},
		{"/name", "x", "the prefix before '/' is empty"},
		{"Example.com/name", "x", "DNS subdomain"},
		{"a/b/c", "x", "the name may hold only"},
		{"exa_mple.com/name", "x", "DNS subdomain"},
		{strings.Repeat("a", 64), "x", "the name is 64 characters, at most 63"},
		{strings.Repeat("p", 254) + "/n", "x", "the prefix is 254 characters, at most 253"},
		{"team", strings.Repeat("v", 64), "the value is 64 characters, at most 63"},
		{"team", "has space", "the value"},
		{"team", "-x", "the value"},
		{"team", "line\nbreak", `the value "line\nbreak"`},
		{"kds-engine.io/owner", "me", "reserved for labels the engine sets"},
		{"kds-engine.io/", "", "reserved"},
	} {
		msg := LabelProblem(bad.key, bad.value)
		assert.Contains(t, msg, bad.msg, "%q=%q", bad.key, bad.value)
		assert.Less(t, len(msg), 400, "bounded: %s", msg)
	}
}
