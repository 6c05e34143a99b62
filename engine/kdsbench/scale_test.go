package kdsbench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The scale mode runs end to end at toy sizes with three light zones and
// reports every figure for every N (no timing is asserted).
func TestScaleSmoke(t *testing.T) {
	ns := []int{50, 200}
	r, err := Scale(context.Background(), Options{PluginsDir: pluginsDir},
		ScaleConfig{Ns: ns, Zones: 3, Changes: 5, Size: 256, Stall: time.Minute})
	require.NoError(t, err)
	assert.Equal(t, "scale", r.Mode)
	require.Len(t, r.Rows, len(ns), "one table row per N")
	for _, n := range ns {
		k := fmt.Sprintf("n%d_", n)
		// Heap per resource is a difference of two GC'd heaps: at toy
		// sizes its sign is noise, so only its presence is checked.
		assert.Contains(t, r.Figures, k+"heap_per_resource_bytes")
		assert.Contains(t, r.Figures, k+"heap_ratio")
		for _, f := range []string{"heap_loaded_bytes", "zone_sync_s", "light_zones_sync_s",
			"change_p50_ms", "change_p99_ms", "change_max_ms", "zone_sync_ratio", "change_p99_ratio"} {
			assert.Positive(t, r.Figures[k+f], "figure %s", k+f)
		}
		assert.GreaterOrEqual(t, r.Figures[k+"change_p99_ms"], r.Figures[k+"change_p50_ms"])
	}
	assert.Equal(t, 1.0, r.Figures["n50_zone_sync_ratio"], "the first N is the ratios' base")
	assert.Equal(t, 3.0, r.Figures["zones"])
	assert.Equal(t, 200.0, r.Figures["largest_n"])
}
