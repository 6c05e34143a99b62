package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kds-engine/kds-engine/sdk/sdktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		spec   string
		fields []string // nil: valid
	}{
		{"off", `{"enabled":false}`, nil},
		{"full", `{"description":"new checkout","enabled":true,"rollout":{"percentage":25,"stickiness":"user"},"variants":[{"name":"a","weight":50},{"name":"b","weight":50}],"expires":"2027-01-31T00:00:00Z"}`, nil},
		{"rollout too big", `{"enabled":true,"rollout":{"percentage":101}}`, []string{"spec.rollout.percentage"}},
		{"rollout while disabled", `{"enabled":false,"rollout":{"percentage":10}}`, []string{"spec.rollout"}},
		{"weights", `{"enabled":true,"variants":[{"name":"a","weight":60},{"name":"b","weight":60}]}`, []string{"spec.variants"}},
		{"duplicate variant", `{"enabled":true,"variants":[{"name":"a","weight":50},{"name":"a","weight":50}]}`, []string{"spec.variants[1].name"}},
		{"bad expiry", `{"enabled":true,"expires":"next week"}`, []string{"spec.expires"}},
		{"unknown field", `{"enabled":true,"colour":"red"}`, []string{"spec.colour"}},
	}
	c := sdktest.Start(t, plugin())
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			errs := c.ValidateOne(sdktest.Resource{Type: "FeatureFlag", Mesh: "default", Name: "checkout", Spec: tc.spec})
			if tc.fields == nil {
				assert.Empty(t, errs)
				return
			}
			assert.Equal(t, tc.fields, sdktest.Fields(errs), errs.Error())
		})
	}
}

// TestBinary builds the plugin and starts it the way the engine does.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	c := sdktest.StartBinary(t, sdktest.Build(t, ".", "featureflag"))
	d := c.Describe()
	assert.Equal(t, "featureflag", d.GetName())
	require.Len(t, d.GetTypes(), 1)
	assert.Equal(t, "FeatureFlag", d.GetTypes()[0].GetName())
	assert.Equal(t, "SCOPE_MESH", d.GetTypes()[0].GetScope().String())
	errs := c.ValidateOne(sdktest.Resource{Type: "FeatureFlag", Mesh: "default", Name: "x", Spec: `{"enabled":true,"rollout":{"percentage":-1}}`})
	assert.Equal(t, []string{"spec.rollout.percentage"}, sdktest.Fields(errs))
}

// Every problem of a flag is reported at once, the schema's (derived from
// the struct tags, worded as apply words them) and validate's together.
func TestEveryProblemAtOnce(t *testing.T) {
	c := sdktest.Start(t, plugin())
	errs := c.ValidateOne(sdktest.Resource{Type: "FeatureFlag", Mesh: "default", Name: "checkout",
		Spec: `{"enabled":false,"rollout":{"percentage":101,"stickiness":"weekly"}}`})
	assert.ElementsMatch(t, []string{"spec.rollout.percentage", "spec.rollout.stickiness", "spec.rollout"}, sdktest.Fields(errs), errs.Error())
	assert.Contains(t, errs.Error(), "spec.rollout.percentage: must be at most 100, got 101")
	assert.Contains(t, errs.Error(), `spec.rollout.stickiness: must be one of "user", "session", "random", got "weekly"`)
}
