package kdsbench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

var pluginsDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kdsbench-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginsDir = filepath.Join(dir, "plugins")
	if err := buildPlugin(pluginsDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// A short torture run: large resources written on both sides while the
// zone restarts mid-transfer converge every round. Convergence only, never
// timing.
func TestTortureConverges(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, rounds, err := Torture(ctx, Options{PluginsDir: pluginsDir},
		TortureConfig{Rounds: 3, Resources: 150, Size: 16 << 10, Stall: 30 * time.Second})
	require.NoError(t, err)
	require.Len(t, rounds, 3)
	for _, rd := range rounds {
		assert.True(t, rd.Converged, "round %d: %d of %d resources agree", rd.Round, rd.Matching, rd.Target)
		assert.Equal(t, 300, rd.Target, "round %d compares both sides' resources", rd.Round)
	}
	assert.True(t, r.Pass)
	assert.Zero(t, r.Figures["stalls"])
}

// The same harness reports the stall when the naive peer carries the burst.
func TestTortureNaiveStalls(t *testing.T) {
	r, rounds, err := Torture(context.Background(), Options{}, TortureConfig{Rounds: 1, Naive: true, Size: 64 << 10, Resources: 100, Stall: 2 * time.Second})
	require.NoError(t, err)
	require.Len(t, rounds, 1)
	assert.False(t, rounds[0].Converged)
	assert.Less(t, rounds[0].Matching, rounds[0].Target)
	assert.Equal(t, float64(1), r.Figures["stalls"])
}

// A zone that reconnects with unchanged state is resent nothing, and the
// report carries every figure as JSON.
func TestResumeResendsNothing(t *testing.T) {
	r, err := Resume(context.Background(), Options{PluginsDir: pluginsDir}, ResumeConfig{N: 200, Size: 256, Quiet: 500 * time.Millisecond})
	require.NoError(t, err)
	assert.Equal(t, float64(200), r.Figures["full_policies_sent"])
	assert.Equal(t, float64(200), r.Figures["full_statuses_sent"])
	assert.Zero(t, r.Figures["resume_policies_sent"])
	assert.Zero(t, r.Figures["resume_statuses_sent"])
	assert.True(t, r.Pass)

	var buf bytes.Buffer
	require.NoError(t, r.WriteJSON(&buf))
	var got struct {
		Mode    string             `json:"mode"`
		Result  string             `json:"result"`
		Figures map[string]float64 `json:"figures"`
	}
	require.NoError(t, json.Unmarshal(buf.Bytes(), &got))
	assert.Equal(t, "resume", got.Mode)
	assert.Equal(t, "PASS", got.Result)
	assert.Equal(t, r.Figures, got.Figures)
}

// Sync, update and fanout run end to end at toy sizes and fill their
// figures (no timing is asserted).
func TestModesSmoke(t *testing.T) {
	ctx := context.Background()
	o := Options{PluginsDir: pluginsDir}
	s, err := Sync(ctx, o, SyncConfig{Ns: []int{300}, Size: 256})
	require.NoError(t, err)
	assert.Positive(t, s.Figures["g2z_300_rps"])
	assert.Positive(t, s.Figures["z2g_300_rps"])
	assert.Positive(t, s.Figures["baseline_300_rps"])
	assert.Positive(t, s.Figures["baseline_cold_300_seconds"], "the first (cold) client is reported too")
	assert.Positive(t, s.Figures["g2z_300_ratio_cold"])
	assert.Positive(t, s.Figures["g2z_300_largest_msg_bytes"], "the engine's largest response comes from insights")
	assert.Positive(t, s.Figures["z2g_300_largest_msg_bytes"])
	assert.Positive(t, s.Figures["g2z_300_cpu_seconds"], "CPU used while the clock ran")
	assert.Positive(t, s.Figures["z2g_300_cpu_seconds"])
	assert.Contains(t, s.Figures, "baseline_300_cpu_seconds")

	// More updates than resources: they cycle over them.
	u, err := Update(ctx, o, UpdateConfig{N: 20, Updates: 30, BaselineUpdates: 10, Size: 256, TraceLatency: true})
	require.NoError(t, err)
	assert.Positive(t, u.Figures["engine_p99_ms"])
	assert.Positive(t, u.Figures["baseline_p99_ms"])
	assert.Positive(t, u.Figures["engine_stage2_p50_ms"], "the traced global commit")
	assert.Positive(t, u.Figures["engine_stage8_p50_ms"], "the traced zone apply")
	assert.Positive(t, u.Figures["disk_floor_p50_ms"], "the disk floor is sampled beside the engine's updates")
	assert.Positive(t, u.Figures["engine_p99_over_disk_floor"])

	f, err := Fanout(ctx, o, FanoutConfig{Zones: []int{2}, Rounds: 2, Changes: 12, N: 10, Size: 256, TraceLatency: true})
	require.NoError(t, err)
	assert.Positive(t, f.Figures["engine_2z_p99_ms"])
	assert.Equal(t, float64(24), f.Figures["engine_2z_changes"], "2 rounds of 12, cycling over 10 resources")
	assert.Equal(t, float64(24), f.Figures["baseline_2z_changes"])
	assert.Contains(t, f.Figures, "engine_2z_stage5_p50_ms", "the traced wire stage")
	assert.False(t, f.Pass, "the target is for 50 zones: 2 zones do not show it")
}

// BulkLoad and Write keep the admin API's rules: types owned by the other
// side are refused; Write creates, then replaces with a new version.
func TestBulkLoadAndWriteRules(t *testing.T) {
	v, err := newEnv(pluginsDir, hclog.NewNullLogger())
	require.NoError(t, err)
	defer v.close()
	g, err := v.startGlobal("global", nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, g.stop()) }()
	ctx := context.Background()

	err = g.e.BulkLoad(ctx, makeResources(statusType, "s", 3, 64))
	require.ErrorIs(t, err, resource.ErrReadOnly, "SyncStatus is written on zones")

	require.NoError(t, g.e.BulkLoad(ctx, makeResources(policyType, "p", 7, 64)))
	rs, err := g.e.Store().List(ctx, store.Filter{Type: policyType})
	require.NoError(t, err)
	assert.Len(t, rs, 7)

	first, err := g.e.Write(ctx, policyUpdate(100, 64))
	require.NoError(t, err)
	second, err := g.e.Write(ctx, policyUpdate(100, 128))
	require.NoError(t, err)
	assert.NotEqual(t, first.Version, second.Version)
	_, err = g.e.Write(ctx, &resource.Resource{Type: statusType, Mesh: benchMesh, Name: "x", Spec: specOf("v", 64)})
	require.ErrorIs(t, err, resource.ErrReadOnly)
}

// The churn mode runs end to end at a toy size, with light zones (the
// default) and with full zone engines: every status written is committed on
// global, latencies and pending samples are collected (no timing is
// asserted), and the steady phase's profile is written.
func TestChurnSmoke(t *testing.T) {
	for _, full := range []bool{false, true} {
		t.Run(fmt.Sprintf("full=%v", full), func(t *testing.T) {
			prof := filepath.Join(t.TempDir(), "steady.prof")
			r, err := Churn(context.Background(), Options{PluginsDir: pluginsDir}, ChurnConfig{
				Zones: 2, PerZone: 20, Interval: 500 * time.Millisecond, Duration: 3 * time.Second, Size: 128,
				RampStep: 2 * time.Second, RampMax: 2, FullZones: full, SteadyProfile: prof,
			})
			require.NoError(t, err)
			assert.Positive(t, r.Figures["steady_updates_per_s"])
			assert.Positive(t, r.Figures["steady_p99_ms"])
			assert.Positive(t, r.Figures["baseline_p99_ms"])
			assert.Positive(t, r.Figures["steady_cpu_us_per_update"])
			assert.Equal(t, b2f(full), r.Figures["full_zones"])
			assert.Contains(t, r.Figures, "ramp_max_rate_kept_up")
			if full {
				assert.NotContains(t, r.Figures, "initial_sync_s", "measured with light zones only")
			} else {
				assert.Positive(t, r.Figures["initial_sync_s"], "the light zones' initial sync is timed")
				assert.Positive(t, r.Figures["initial_sync_peak_rss_mib"])
				assert.Positive(t, r.Figures["initial_sync_pool_peak_mib"], "global's shared inbound pool held their responses")
				assert.Contains(t, r.Figures, "initial_sync_pool_waits")
				assert.Contains(t, r.Figures, "initial_sync_zones_reconnected")
				assert.Positive(t, r.Figures["initial_sync_slots"], "global admits zones' initial syncs")
				assert.Contains(t, r.Figures, "initial_sync_slot_waits")
				assert.Zero(t, r.Figures["initial_sync_slots_expired"], "no honest zone held a slot to the hold limit")
				assert.Zero(t, r.Figures["initial_sync_slots_idled"], "no honest zone's slot went back idle")
				assert.Contains(t, r.Figures, "initial_sync_slots_idled")
				assert.Zero(t, r.Figures["initial_sync_zones_reconnected"], "each light zone syncs on its first session")
			}
			assert.False(t, r.Pass, "a 3 s steady phase cannot show the RSS and backlog verdicts")
			fi, err := os.Stat(prof)
			require.NoError(t, err)
			assert.Positive(t, fi.Size())
		})
	}
}

// The hostile mode runs end to end at a toy size: the hostile zone opens
// sessions and sends its mix, global's RSS is sampled in both phases, the
// honest zone keeps its one session and syncs after the attack.
func TestHostileSmoke(t *testing.T) {
	r, err := Hostile(context.Background(), Options{PluginsDir: pluginsDir}, HostileConfig{
		Duration: 2 * time.Second, Policies: 10, PolicySize: 256, Sessions: 2, Hold: 300 * time.Millisecond,
		BigSubscriptions: 2, HeldNames: 1000, UnknownTypes: 50, Resubscriptions: 5, Pushed: 5, PushSize: 4 << 10,
	})
	require.NoError(t, err)
	assert.Positive(t, r.Figures["rss_baseline_peak_bytes"])
	assert.Positive(t, r.Figures["rss_attack_peak_bytes"])
	assert.Contains(t, r.Figures, "rss_growth_bytes")
	assert.GreaterOrEqual(t, r.Figures["hostile_sessions"], float64(2), "the hostile zone opened sessions")
	assert.Positive(t, r.Figures["hostile_messages"])
	assert.Equal(t, float64(1), r.Figures["honest_sessions"], "the honest zone kept its session")
	assert.Equal(t, float64(1), r.Figures["honest_synced_after"])
	assert.Positive(t, r.Figures["honest_writes_attack"])
	assert.LessOrEqual(t, r.Figures["hostile_unknown_types_shown"], float64(16))
	assert.True(t, r.Pass, "%+v", r.Figures)
}

// --window-cpuprofile writes one profile per timed sync window.
func TestSyncWindowProfiles(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "w")
	o := Options{PluginsDir: pluginsDir, WindowProfile: prefix}
	_, err := Sync(context.Background(), o, SyncConfig{Ns: []int{200}, Size: 256})
	require.NoError(t, err)
	for _, zone := range []string{"sync-a-200-0", "sync-b-200-0"} {
		fi, err := os.Stat(prefix + "-" + zone + ".prof")
		require.NoError(t, err, "profile of %s", zone)
		assert.Positive(t, fi.Size())
	}
}
