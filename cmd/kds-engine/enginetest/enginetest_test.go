package enginetest_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kds-engine/kds-engine/cmd/kds-engine/enginetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The example plugin, built and loaded into a real engine, refuses a bad
// flag with every problem and stores a good one, as `kds-engine apply`
// does.
func TestApplyThroughARealEngine(t *testing.T) {
	e := enginetest.Start(t, filepath.Join("..", "..", "..", "examples", "featureflag"), "featureflag")

	r := e.CLI("plugins", "list")
	require.Equal(t, 0, r.Code, r.String())
	assert.Regexp(t, `featureflag\s+0\.1\.0\s+running`, r.Stdout)

	r = e.Apply(`type: FeatureFlag
mesh: default
name: checkout
spec:
  enabled: false
  rollout: {percentage: 101}
`)
	assert.Equal(t, 2, r.Code, r.String())
	assert.Contains(t, r.Stderr, "apply: stdin document 1: FeatureFlag default/checkout: spec.rollout.percentage: must be at most 100, got 101")
	assert.Contains(t, r.Stderr, "FeatureFlag default/checkout: spec.rollout:")

	r = e.Apply(`type: FeatureFlag
mesh: default
name: checkout
spec: {enabled: true, rollout: {percentage: 25}}
`)
	require.Equal(t, 0, r.Code, r.String())
	assert.Contains(t, r.Stdout, "FeatureFlag default/checkout created")
	r = e.CLI("get", "FeatureFlag", "checkout", "--mesh", "default", "-o", "json")
	require.Equal(t, 0, r.Code, r.String())
	assert.Contains(t, r.Stdout, `"percentage": 25`)
}
