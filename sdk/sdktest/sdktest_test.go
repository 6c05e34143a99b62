package sdktest_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kds-engine/kds-engine/sdk"
	"github.com/kds-engine/kds-engine/sdk/sdktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type widgetSpec struct {
	Size  int      `json:"size"`
	Color string   `json:"color,omitempty" jsonschema:"enum=red,enum=blue"`
	Parts []string `json:"parts,omitempty"`
}

func widgetPlugin() sdk.Plugin {
	return sdk.Plugin{Name: "widgets", Version: "0.1.0", Types: []sdk.Type{
		sdk.Define(sdk.TypeSpec[widgetSpec]{
			Name: "Widget", Direction: sdk.GlobalToZone, Scope: sdk.ScopeMesh, SchemaVersion: 2,
			Validate: func(_ context.Context, _ sdk.Meta, s *widgetSpec) sdk.ErrorList {
				var errs sdk.ErrorList
				if s.Size <= 0 {
					errs.Invalid(sdk.Field("spec").Child("size"), s.Size, "must be positive")
				}
				for i, p := range s.Parts {
					if p == "" {
						errs.Required(sdk.Field("spec").Child("parts").Index(i))
					}
				}
				return errs
			},
		}),
	}}
}

func TestStartDescribeAndValidateOverGRPC(t *testing.T) {
	c := sdktest.Start(t, widgetPlugin())
	d := c.Describe()
	assert.Equal(t, "widgets", d.GetName())
	assert.Equal(t, "0.1.0", d.GetVersion())
	require.Len(t, d.GetTypes(), 1)
	assert.Equal(t, "Widget", d.GetTypes()[0].GetName())
	assert.EqualValues(t, 2, d.GetTypes()[0].GetSchemaVersion())
	assert.Contains(t, string(d.GetTypes()[0].GetJsonSchema()), `"size"`)

	got := c.Validate(
		sdktest.Resource{Type: "Widget", Mesh: "default", Name: "ok", Spec: widgetSpec{Size: 3}},
		sdktest.Resource{Type: "Widget", Mesh: "default", Name: "bad", Spec: widgetSpec{Size: 0, Parts: []string{"a", ""}}},
		sdktest.Resource{Type: "Gadget", Mesh: "default", Name: "unknown", Spec: `{}`},
		sdktest.Resource{Type: "Widget", Mesh: "default", Name: "typo", Spec: `{"size": 1, "colour": "red"}`},
		sdktest.Resource{Type: "Widget", Mesh: "default", Name: "wrongtype", Spec: `{"size": "big"}`},
	)
	require.Len(t, got, 5)
	assert.Empty(t, got[0])
	assert.Equal(t, []string{"spec.size", "spec.parts[1]"}, sdktest.Fields(got[1]))
	assert.Contains(t, got[1][0].Message, "must be positive")
	assert.Equal(t, []string{"type"}, sdktest.Fields(got[2]))
	assert.Equal(t, []string{"spec.colour"}, sdktest.Fields(got[3]))
	assert.Equal(t, []string{"spec.size"}, sdktest.Fields(got[4]))
	assert.Contains(t, got[4][0].Message, "must be an integer")
}

func TestStartRejectsBadDeclaration(t *testing.T) {
	ft := &fakeT{TB: t}
	func() {
		defer func() { _ = recover() }()
		sdktest.Start(ft, sdk.Plugin{Name: "x", Types: []sdk.Type{sdk.Define(sdk.TypeSpec[widgetSpec]{Name: "lower", Direction: sdk.GlobalToZone, Scope: sdk.ScopeMesh})}})
	}()
	assert.Contains(t, ft.msg, "type name")
}

// fakeT records Fatalf instead of failing the real test.
type fakeT struct {
	testing.TB
	msg string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.msg = format
	if len(args) > 0 {
		f.msg = args[0].(error).Error()
	}
	panic("fatal")
}

func TestBuildAndStartBinaryLikeTheEngine(t *testing.T) {
	bin := sdktest.Build(t, "../../plugins/dataplanes", "dataplanes")
	c := sdktest.StartBinary(t, bin)
	assert.NotZero(t, c.Pid)
	d := c.Describe()
	assert.Equal(t, "dataplanes", d.GetName())
	got := c.Validate(
		sdktest.Resource{Type: "Dataplane", Mesh: "default", Name: "dp", Spec: map[string]any{
			"networking": map[string]any{"address": "10.0.0.1", "inbound": []any{map[string]any{"port": 0, "tags": map[string]string{"kuma.io/service": "web"}}}},
		}},
		sdktest.Resource{Type: "DataplaneInsight", Mesh: "default", Name: "dp", Spec: map[string]any{}},
	)
	assert.Equal(t, []string{"spec.networking.inbound[0].port"}, sdktest.Fields(got[0]))
	assert.Empty(t, got[1])
}

type rateSpec struct {
	Currency string `json:"currency" jsonschema:"pattern=^[A-Z]{3}$"`
	Tiers    int    `json:"tiers" jsonschema:"minimum=1,maximum=5"`
	Note     string `json:"note,omitempty" jsonschema:"maxLength=10"`
}

// The schema derived from the struct's tags is checked by Validate exactly
// as the engine checks it, together with the plugin's own errors.
func TestValidateChecksTheSchema(t *testing.T) {
	p := sdk.Plugin{Name: "rates", Types: []sdk.Type{sdk.Define(sdk.TypeSpec[rateSpec]{
		Name: "RateCard", Direction: sdk.GlobalToZone, Scope: sdk.ScopeMesh,
		Validate: func(_ context.Context, _ sdk.Meta, s *rateSpec) sdk.ErrorList {
			var errs sdk.ErrorList
			if s.Note == "free" {
				errs.Invalid(sdk.Field("spec").Child("note"), s.Note, "nothing is free")
			}
			if s.Tiers > 5 {
				errs.Add(sdk.Field("spec").Child("tiers"), "too many tiers (the schema said it first)")
			}
			return errs
		},
	})}}
	c := sdktest.Start(t, p)
	errs := c.ValidateOne(sdktest.Resource{Type: "RateCard", Mesh: "m", Name: "r", Spec: `{"currency":"eur","tiers":9,"note":"free"}`})
	assert.Equal(t, sdk.ErrorList{
		{Field: "spec.currency", Message: `must match the pattern ^[A-Z]{3}$, got "eur"`},
		{Field: "spec.tiers", Message: "must be at most 5, got 9"},
		{Field: "spec.note", Message: `invalid value "free": nothing is free`},
	}, sortedByField(errs, "spec.currency", "spec.tiers", "spec.note"))

	c.PluginOnly = true
	errs = c.ValidateOne(sdktest.Resource{Type: "RateCard", Mesh: "m", Name: "r", Spec: `{"currency":"eur","tiers":9}`})
	assert.Equal(t, []string{"spec.tiers"}, sdktest.Fields(errs), "without the schema only the plugin answers")
}

// sortedByField orders errs by the given field order.
func sortedByField(errs sdk.ErrorList, order ...string) sdk.ErrorList {
	var out sdk.ErrorList
	for _, f := range order {
		for _, e := range errs {
			if e.Field == f {
				out = append(out, e)
			}
		}
	}
	if len(out) != len(errs) {
		return errs
	}
	return out
}
