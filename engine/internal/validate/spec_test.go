package validate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// Specs that are not JSON are refused with what is wrong and where; the
// schema and the plugin never see them.
func TestSpecMustBeJSON(t *testing.T) {
	v, fp := newValidator(t)
	cases := map[string]struct{ spec, msg string }{
		"truncated":    {`{"port":`, "unexpected end of JSON input (at byte 8)"},
		"trailing":     {`{"port":1} x`, "invalid character 'x' after top-level value (at byte 12)"},
		"bad escape":   {`{"port":1,"items":[{"value":"\q"}]}`, `invalid character 'q' in string escape code`},
		"control char": {"{\"port\":1,\"items\":[{\"value\":\"a\x01b\"}]}", "invalid character '\\x01' in string literal"},
		"too deep":     {strings.Repeat("[", 400) + strings.Repeat("]", 400), "nest more than 300 levels deep"},
	}
	specs := map[string]string{}
	for name, c := range cases {
		specs[name] = c.spec
	}
	errs := validateSpecs(t, v, specs)
	for name, c := range cases {
		fes := errs[name]
		require.Len(t, fes, 1, name)
		assert.Equal(t, "spec", fes[0].Field, name)
		assert.True(t, strings.HasPrefix(fes[0].Message, "not valid JSON: "), fes[0].Message)
		assert.Contains(t, fes[0].Message, c.msg, name)
	}
	assert.Empty(t, fp.calls, "invalid JSON never reaches a plugin")

	// Empty and blank specs are {}; the schema then decides.
	errs = errorsOf(t, v.Validate(context.Background(), []*resource.Resource{r("alphaMeshy", "m", "blank", " \n")}))
	assert.Equal(t, []resource.FieldError{{Field: "spec.port", Message: "is required"}}, errs["blank"])
	require.NoError(t, v.Validate(context.Background(), []*resource.Resource{r("alphaGlobal", "", "empty", "")}))
}

// Schema checks see the same values encoding/json would produce: strings
// with escapes decoded, numbers exact.
func TestSchemaSeesDecodedValues(t *testing.T) {
	v, _ := newValidator(t)
	require.NoError(t, v.Validate(context.Background(), []*resource.Resource{
		r("alphaMeshy", "m", "escaped", `{"port":65535,"items":[{"value":"a\"b\u00e9\ud83d\ude00"}]}`),
		r("alphaMeshy", "m", "exponent", `{"port":6.5535e4}`),
	}))
	errs := errorsOf(t, v.Validate(context.Background(), []*resource.Resource{
		r("alphaMeshy", "m", "big", `{"port":65535.0000000000000001}`),
		r("alphaMeshy", "m", "type", `{"port":"80"}`),
	}))
	assert.Equal(t, "must be an integer, not JSON number", errs["big"][0].Message, "compared exactly, not as a float64 (which rounds to 65535)")
	assert.Equal(t, "spec.port", errs["type"][0].Field)
}

// A field name twice in one object, or bytes that are not UTF-8, are refused
// by the engine itself, at the field, before the schema or a plugin reads
// the spec: decoders disagree on which duplicate counts.
func TestSpecNamesAreUniqueAndUTF8(t *testing.T) {
	v, fp := newValidator(t)
	many := `{"port":1`
	for i := range 20 {
		many += fmt.Sprintf(`,"f%d":%d`, i, i)
	}
	many += `,"f7":0}`
	cases := map[string]struct{ spec, field, msg string }{
		"top":      {`{"port":80,"port":70000}`, "spec.port", "appears more than once"},
		"escaped":  {`{"port":80,"p\u006frt":81}`, "spec.port", "appears more than once"},
		"nested":   {`{"port":1,"items":[{"value":"a"},{"value":"b","value":"c"}]}`, "spec.items[1].value", "appears more than once"},
		"in array": {`{"port":1,"items":[[{"k":1,"k":2}]]}`, "spec.items[0][0].k", "appears more than once"},
		"many":     {many, "spec.f7", "appears more than once"},
		"utf8":     {"{\"port\":1,\"items\":[{\"value\":\"a\xffb\"}]}", "spec", "not valid UTF-8 (at byte 30)"},
	}
	specs := map[string]string{}
	for name, c := range cases {
		specs[name] = c.spec
	}
	errs := validateSpecs(t, v, specs)
	for name, c := range cases {
		fes := errs[name]
		require.Len(t, fes, 1, name)
		assert.Equal(t, c.field, fes[0].Field, name)
		assert.Equal(t, c.msg, fes[0].Message, name)
	}
	assert.Empty(t, fp.calls, "such specs never reach a plugin")
	require.NoError(t, v.Validate(context.Background(), []*resource.Resource{
		r("alphaMeshy", "m", "same-names-apart", `{"port":1,"items":[{"value":"a"},{"value":"b"}]}`),
		r("alphaMeshy", "m", "unicode", `{"port":1,"items":[{"value":"é😀"}]}`),
	}))
}

// gatedRegistry holds the envelope check of resource number holdAt (one
// type lookup per resource) until a plugin call has started, or gives up
// after a while and records that it had to.
type gatedRegistry struct {
	fakeRegistry
	holdAt  int64
	lookups atomic.Int64
	started chan struct{}
	gaveUp  atomic.Bool
}

func (g *gatedRegistry) Type(n string) (resource.TypeDescriptor, bool) {
	if g.lookups.Add(1) == g.holdAt {
		select {
		case <-g.started:
		case <-time.After(5 * time.Second):
			g.gaveUp.Store(true)
		}
	}
	return g.fakeRegistry.Type(n)
}

// startedPlugins signals its first call.
type startedPlugins struct {
	fakePlugins
	once    sync.Once
	started chan struct{}
}

func (s *startedPlugins) ValidateBatch(ctx context.Context, p string, rs []*resource.Resource) (map[int][]resource.FieldError, error) {
	s.once.Do(func() { close(s.started) })
	return s.fakePlugins.ValidateBatch(ctx, p, rs)
}

// A large batch is checked in chunks of the batch size, and a chunk's
// plugin call goes out while the next chunk is checked locally: the local
// check of the 2,001st resource waits for a plugin call, which only the
// pipelined order makes.
func TestPluginCallsOverlapLocalChecks(t *testing.T) {
	started := make(chan struct{})
	reg := &gatedRegistry{fakeRegistry: registry(t), holdAt: 2001, started: started}
	sp := &startedPlugins{started: started}
	v, err := New(reg, sp, WithBatchSize(1000))
	require.NoError(t, err)
	var rs []*resource.Resource
	for i := range 3000 {
		rs = append(rs, r("alphaMeshy", "m", fmt.Sprintf("r-%d", i), `{"port":8080}`))
	}
	reg.lookups.Store(0)
	require.NoError(t, v.Validate(context.Background(), rs))
	assert.False(t, reg.gaveUp.Load(), "no plugin call started before every local check was done")
	assert.Equal(t, []int{1000, 1000, 1000}, sp.calls["alpha"])
}

// A context that has ended never lets unchecked resources pass as valid.
func TestCancelledContextIsNotValid(t *testing.T) {
	v, fp := newValidator(t, WithBatchSize(10))
	var rs []*resource.Resource
	for i := range 100 {
		rs = append(rs, r("alphaMeshy", "m", fmt.Sprintf("r-%d", i), `{"port":8080}`))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := v.Validate(ctx, rs)
	require.ErrorIs(t, err, context.Canceled)
	var ve *resource.ValidationError
	assert.False(t, errors.As(err, &ve), "not a validation verdict")
	assert.Empty(t, fp.calls)
}

// validateSpecs validates one alphaMeshy resource per case name and spec,
// and returns the field errors by case name.
func validateSpecs(t *testing.T, v *Validator, specs map[string]string) map[string][]resource.FieldError {
	t.Helper()
	var rs []*resource.Resource
	names := map[string]string{}
	for name, spec := range specs {
		rname := strings.ReplaceAll(name, " ", "-")
		names[rname] = name
		rs = append(rs, r("alphaMeshy", "m", rname, spec))
	}
	out := map[string][]resource.FieldError{}
	for rname, fes := range errorsOf(t, v.Validate(context.Background(), rs)) {
		out[names[rname]] = fes
	}
	return out
}
