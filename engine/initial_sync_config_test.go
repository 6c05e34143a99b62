package engine

import (
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
	"github.com/kds-engine/kds-engine/engine/internal/mux"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
)

// The inbound pool and the initial-sync slots come from Config: at the
// defaults global has a 256 MiB pool and 5 slots held at most 5 minutes
// and 30 s idle, as before they were settings; a larger pool gives more
// slots; set slots, hold and idle are used as given; and the start log
// shows them all.
func TestInitialSyncLimitsComeFromConfig(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		cfg                   Config
		pool                  int64
		slots                 int // 0: no admission
		hold, idle            time.Duration
		logSlots, logHoldIdle string
	}{
		{"defaults", Config{}, mux.DefaultInboundPoolBytes, 5, kdssync.DefaultAdmissionHold, kdssync.DefaultAdmissionIdle,
			"slots=5", "hold=5m0s idle=30s"},
		{"a larger pool, more slots", Config{InboundPoolSize: 1 << 30}, 1 << 30, 21, 5 * time.Minute, 30 * time.Second,
			"slots=21", "hold=5m0s idle=30s"},
		{"set", Config{InboundPoolSize: 64 << 20, InitialSyncSlots: 3, InitialSyncHold: 2 * time.Minute, InitialSyncIdle: 10 * time.Second},
			64 << 20, 3, 2 * time.Minute, 10 * time.Second, "slots=3", "hold=2m0s idle=10s"},
		{"no limit", Config{InitialSyncSlots: -1}, mux.DefaultInboundPoolBytes, 0, 0, 0, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf logbuf.Buffer
			cfg := tc.cfg
			cfg.Role, cfg.PluginsDir = RoleGlobal, builtinDir
			g := startNodeLogging(t, cfg, hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Info, Output: &buf}))
			assert.Equal(t, tc.pool, g.e.inboundPool.Limit())
			lines := buf.Lines("zone→global initial syncs at once")
			if tc.slots == 0 {
				assert.Nil(t, g.e.admission)
				assert.Empty(t, lines)
				return
			}
			a := g.e.admission
			require.NotNil(t, a)
			assert.Equal(t, tc.slots, a.Slots())
			assert.Equal(t, tc.hold, a.Hold())
			assert.Equal(t, tc.idle, a.Idle())
			require.Len(t, lines, 1)
			assert.Contains(t, lines[0], tc.logSlots)
			assert.Contains(t, lines[0], tc.logHoldIdle)
		})
	}
}

// New refuses initial-sync limits that cannot work, saying which and why.
func TestNewRefusesBadInitialSyncLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"pool below 4 max-size messages", Config{InboundPoolSize: 8 << 20},
			"inbound pool size 8388608: must be at least 4 × the max message size (16777216)"},
		{"idle over hold", Config{InitialSyncHold: time.Minute, InitialSyncIdle: 2 * time.Minute},
			"initial sync idle 2m0s: must not be longer than the initial sync hold 1m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Role, cfg.DataDir, cfg.ReplicaID = RoleGlobal, t.TempDir(), "test"
			_, err := New(cfg, hclog.NewNullLogger())
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
