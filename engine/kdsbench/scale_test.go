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
		// Heap per resource and per zone entry are differences of two
		// GC'd heaps: at toy sizes their sign is noise, so only their
		// presence is checked, as for CPU time (counted in 10 ms ticks).
		for _, f := range []string{"heap_per_resource_bytes", "heap_ratio", "heap_per_zone_entry_bytes", "zone_sync_cpu_s"} {
			assert.Contains(t, r.Figures, k+f)
		}
		for _, f := range []string{"heap_loaded_bytes", "heap_zones_bytes", "peak_rss_bytes", "zone_sync_s", "light_zones_sync_s",
			"change_p50_ms", "change_p99_ms", "change_max_ms", "zone_sync_ratio", "change_p99_ratio"} {
			assert.Positive(t, r.Figures[k+f], "figure %s", k+f)
		}
		assert.NotContains(t, r.Figures, k+"light_zones_resume_s")
		assert.Equal(t, float64(3*n), r.Figures[k+"light_resources_sent"], "a sync sends every zone all N")
		assert.GreaterOrEqual(t, r.Figures[k+"change_p99_ms"], r.Figures[k+"change_p50_ms"])
	}
	assert.Equal(t, 1.0, r.Figures["n50_zone_sync_ratio"], "the first N is the ratios' base")
	assert.Equal(t, 3.0, r.Figures["zones"])
	assert.Equal(t, 200.0, r.Figures["largest_n"])
	assert.Equal(t, 0.0, r.Figures["light_resume"])
	assert.Equal(t, 0.0, r.Figures["zone_in_child"])
}

// With LightResume the light zones announce global's versions of all N and
// are served only the measured changes: the resume is reported instead of a
// sync, and the changes still reach every zone.
func TestScaleLightResume(t *testing.T) {
	r, err := Scale(context.Background(), Options{PluginsDir: pluginsDir},
		ScaleConfig{Ns: []int{200}, Zones: 3, Changes: 5, Size: 256, Stall: time.Minute, LightResume: true, LightGroup: 2})
	require.NoError(t, err)
	for _, f := range []string{"light_zones_resume_s", "change_p50_ms", "change_p99_ms", "heap_zones_bytes", "peak_rss_bytes"} {
		assert.Positive(t, r.Figures["n200_"+f], "figure %s", f)
	}
	assert.NotContains(t, r.Figures, "n200_light_zones_sync_s")
	assert.Contains(t, r.Figures, "n200_light_clone_bytes_per_entry")
	assert.Contains(t, r.Figures, "n200_global_bytes_per_zone_entry")
	assert.Zero(t, r.Figures["n200_light_resources_sent"], "zones resuming with global's versions are sent nothing")
	assert.Equal(t, 1.0, r.Figures["light_resume"])
	assert.Equal(t, 2.0, r.Figures["light_group"])
}
