package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/spf13/cobra"

	"github.com/kds-engine/kds-engine/engine/kdsbench"
)

func syncCmd(g *globals) *cobra.Command {
	var c kdsbench.SyncConfig
	cmd := &cobra.Command{
		Use:   "sync",
		Short: "Initial sync of N resources both ways vs go-control-plane's delta server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, g, func(ctx context.Context, o kdsbench.Options) (*kdsbench.Report, error) {
				return kdsbench.Sync(ctx, o, c)
			})
		},
	}
	cmd.Flags().IntSliceVar(&c.Ns, "n", []int{10000, 100000}, "resource counts")
	cmd.Flags().IntVar(&c.Size, "size", 1024, "spec size in bytes")
	cmd.Flags().IntVar(&c.Repeat, "repeat", 5, "runs per N, each with its own baseline; the verdict uses each path's median (one run is too noisy to judge)")
	return cmd
}

func wanCmd(g *globals) *cobra.Command {
	var c kdsbench.WANConfig
	var mbit float64
	cmd := &cobra.Command{
		Use:   "wan",
		Short: "Initial sync global→zone over added round trips and limited bandwidth vs loopback and go-control-plane",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if mbit <= 0 {
				return fmt.Errorf("--bandwidth-mbit must be positive, got %g", mbit)
			}
			c.Bandwidth = int64(mbit * 1e6 / 8)
			return run(cmd, g, func(ctx context.Context, o kdsbench.Options) (*kdsbench.Report, error) {
				return kdsbench.WAN(ctx, o, c)
			})
		},
	}
	cmd.Flags().IntVar(&c.N, "n", 100000, "resources")
	cmd.Flags().IntVar(&c.Size, "size", 1024, "spec size in bytes")
	cmd.Flags().DurationSliceVar(&c.RTTs, "rtt", []time.Duration{50 * time.Millisecond, 150 * time.Millisecond}, "round trips to add (loopback always runs first)")
	cmd.Flags().Float64Var(&mbit, "bandwidth-mbit", 1000, "link rate in Mbit/s")
	cmd.Flags().IntVar(&c.Repeat, "repeat", 3, "runs per link; figures are medians")
	cmd.Flags().Int32Var(&c.Window, "window", 0, "fix the engines' HTTP/2 stream and connection windows at this many bytes (0: gRPC's dynamic windows)")
	cmd.Flags().IntVar(&c.MaxMessageSize, "max-message-size", 0, "the engines' max message size in bytes (0: the engine's default, 4 MiB)")
	return cmd
}

func churnCmd(g *globals) *cobra.Command {
	var c kdsbench.ChurnConfig
	cmd := &cobra.Command{
		Use:   "churn",
		Short: "Zones rewriting their statuses all the time: global keeps up, write→apply latency, RSS, CPU per update",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, g, func(ctx context.Context, o kdsbench.Options) (*kdsbench.Report, error) {
				return kdsbench.Churn(ctx, o, c)
			})
		},
	}
	cmd.Flags().IntVar(&c.Zones, "zones", 100, "zones (in this process)")
	cmd.Flags().IntVar(&c.PerZone, "per-zone", 1000, "statuses each zone rewrites every --interval")
	cmd.Flags().DurationVar(&c.Interval, "interval", 10*time.Second, "how often each status changes")
	cmd.Flags().DurationVar(&c.Duration, "duration", 5*time.Minute, "steady phase")
	cmd.Flags().IntVar(&c.Size, "size", 512, "spec size in bytes")
	cmd.Flags().DurationVar(&c.RampStep, "ramp-step", 20*time.Second, "after the steady phase, raise the rate ×1.5 every step until global stops keeping up (0: no ramp)")
	cmd.Flags().Float64Var(&c.RampMax, "ramp-max", 16, "highest rate multiplier the ramp tries")
	cmd.Flags().StringVar(&c.SteadyProfile, "steady-cpuprofile", "", "write a CPU profile of the steady phase alone to this file (zone-side samples carry the label side=zone, the tracker's side=bench)")
	cmd.Flags().BoolVar(&c.TraceLatency, "trace-latency", false, "follow every update through its stages (zone sent, global received, checked, applying, applied, visible) and the store's group commits, and report where the write→apply latency goes")
	cmd.Flags().BoolVar(&c.FullZones, "full-zones", false, "run every zone as a full engine with its own plugin process validating each write (default: light zones serving their statuses from memory; global is the full engine either way)")
	return cmd
}

func transportCmd(g *globals) *cobra.Command {
	var c kdsbench.TransportConfig
	cmd := &cobra.Command{
		Use:   "transport",
		Short: "Engine session vs raw gRPC bidi stream, both directions, 1 KiB and 64 KiB",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, g, func(ctx context.Context, o kdsbench.Options) (*kdsbench.Report, error) {
				return kdsbench.Transport(ctx, o, c)
			})
		},
	}
	cmd.Flags().IntVar(&c.Rounds, "rounds", 3, "alternating raw/engine rounds per size")
	cmd.Flags().IntVar(&c.Small, "small-messages", 20480, "1 KiB messages per direction")
	cmd.Flags().IntVar(&c.Large, "large-messages", 2048, "64 KiB messages per direction")
	cmd.Flags().IntVar(&c.AckEvery, "ack-every", 0, "responses per engine ACK (0: 32, batched credit; 1: one ACK per response, as the sync client does)")
	cmd.Flags().BoolVar(&c.NoCoalesce, "no-coalesce", false, "one engine message per gRPC message (as with a peer that does not announce kds-coalesce)")
	return cmd
}

func updateCmd(g *globals) *cobra.Command {
	var c kdsbench.UpdateConfig
	cmd := &cobra.Command{
		Use:   "update",
		Short: "Single-resource update latency global→zone at N synced resources vs LinearCache",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, g, func(ctx context.Context, o kdsbench.Options) (*kdsbench.Report, error) {
				return kdsbench.Update(ctx, o, c)
			})
		},
	}
	cmd.Flags().IntVar(&c.N, "n", 100000, "synced resources")
	cmd.Flags().IntVar(&c.Updates, "updates", 1000, "measured engine updates (they cycle over the N resources)")
	cmd.Flags().IntVar(&c.BaselineUpdates, "baseline-updates", 200, "measured baseline updates (LinearCache takes tens of ms each at 100k)")
	cmd.Flags().IntVar(&c.Size, "size", 1024, "spec size in bytes")
	cmd.Flags().BoolVar(&c.ZoneMemory, "zone-memory", false, "zone on the memory store instead of bbolt")
	cmd.Flags().BoolVar(&c.TraceLatency, "trace-latency", false, "follow every engine update through its stages (validation, global's commit, notify, wire, zone check, queue, apply, watcher) and report where the time goes")
	cmd.Flags().StringVar(&c.ExecTrace, "exec-trace", "", "write a runtime/trace of the measured engine updates to this file (go tool trace)")
	return cmd
}

func fanoutCmd(g *globals) *cobra.Command {
	var c kdsbench.FanoutConfig
	cmd := &cobra.Command{
		Use:   "fanout",
		Short: "One policy change reaching Z zones vs LinearCache with Z clients",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, g, func(ctx context.Context, o kdsbench.Options) (*kdsbench.Report, error) {
				return kdsbench.Fanout(ctx, o, c)
			})
		},
	}
	cmd.Flags().IntSliceVar(&c.Zones, "zones", []int{10, 50}, "zone counts")
	cmd.Flags().IntVar(&c.Changes, "changes", 750, "measured changes per zone count, round and path (they cycle over the N resources; the paths take turns change by change)")
	cmd.Flags().IntVar(&c.Rounds, "rounds", 2, "rounds per zone count, each with a fresh baseline server and engines; p99s are over all rounds' changes")
	cmd.Flags().IntVar(&c.N, "n", 100, "resources synced before measuring")
	cmd.Flags().BoolVar(&c.TraceLatency, "trace-latency", false, "follow every engine change through its stages (the last zone's) and report where the time goes")
	cmd.Flags().StringVar(&c.ExecTrace, "exec-trace", "", "write a runtime/trace of the last round's engine changes at the largest zone count to this file (go tool trace)")
	cmd.Flags().IntVar(&c.Size, "size", 1024, "spec size in bytes")
	return cmd
}

func resumeCmd(g *globals) *cobra.Command {
	var c kdsbench.ResumeConfig
	cmd := &cobra.Command{
		Use:   "resume",
		Short: "Resources and bytes resent when a zone reconnects with unchanged state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, g, func(ctx context.Context, o kdsbench.Options) (*kdsbench.Report, error) {
				return kdsbench.Resume(ctx, o, c)
			})
		},
	}
	cmd.Flags().IntVar(&c.N, "n", 10000, "resources each way")
	cmd.Flags().IntVar(&c.Size, "size", 1024, "spec size in bytes")
	cmd.Flags().DurationVar(&c.Quiet, "quiet", 2*time.Second, "how long the resumed session must be silent to count as settled")
	return cmd
}

func memoryCmd(g *globals) *cobra.Command {
	var c kdsbench.MemoryConfig
	var inProcess bool
	cmd := &cobra.Command{
		Use:   "memory",
		Short: "Global heap and RSS per synced resource",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !inProcess {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				c.ZoneCommand = func(cfg string) *exec.Cmd { return exec.Command(exe, "zone-proc", "--config-json", cfg) }
			}
			return run(cmd, g, func(ctx context.Context, o kdsbench.Options) (*kdsbench.Report, error) {
				return kdsbench.Memory(ctx, o, c)
			})
		},
	}
	cmd.Flags().IntVar(&c.N, "n", 100000, "resources")
	cmd.Flags().IntVar(&c.Size, "size", 1024, "spec size in bytes")
	cmd.Flags().BoolVar(&inProcess, "zone-in-process", false, "run the zone in this process (its heap then counts)")
	return cmd
}

func scaleCmd(g *globals) *cobra.Command {
	var c kdsbench.ScaleConfig
	var zoneChild bool
	var zoneProfile string
	cmd := &cobra.Command{
		Use:   "scale",
		Short: "Global heap per resource, one zone's initial sync and a change's fan-out to Z light zones as N grows",
		Long: `scale loads N resources of --size bytes straight into global's bbolt store
for each N in --n, then measures global's heap per resource (after GC), one
engine zone's initial sync of all N (memory store; in this process, or in a
child process with --zone-process), and --changes policy changes reaching all
--zones light zones (p50/p99). Light zones run the engine's session code in
this process (dialer, TLS, token, mux, kdssync client and server) but keep
only name → version, never specs; with --light-resume they resume holding
global's current versions instead of syncing. Each figure is also shown as a
ratio to the first N's. Run small Ns first: 1M needs several GiB and minutes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if zoneChild {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				c.ZoneCommand = func(cfg string) *exec.Cmd {
					args := []string{"zone-proc", "--config-json", cfg}
					if zoneProfile != "" {
						args = append(args, "--cpuprofile", zoneProfile)
					}
					return exec.Command(exe, args...)
				}
			}
			if c.SyncCPUProfile != "" && g.cpuProfile != "" {
				return errors.New("--sync-cpuprofile and --cpuprofile are exclusive")
			}
			return run(cmd, g, func(ctx context.Context, o kdsbench.Options) (*kdsbench.Report, error) {
				return kdsbench.Scale(ctx, o, c)
			})
		},
	}
	cmd.Flags().IntSliceVar(&c.Ns, "n", []int{10000, 100000, 1000000}, "resource counts")
	cmd.Flags().IntVar(&c.Zones, "zones", 100, "light zones for the fan-out (in this process)")
	cmd.Flags().IntVar(&c.Changes, "changes", 50, "measured policy changes per N")
	cmd.Flags().IntVar(&c.Size, "size", 1024, "spec size in bytes")
	cmd.Flags().DurationVar(&c.Stall, "stall", 2*time.Minute, "give up on an initial sync that made no progress for this long")
	cmd.Flags().BoolVar(&zoneChild, "zone-process", false, "run the measured engine zone in a child process (as in production) instead of in global's process")
	cmd.Flags().BoolVar(&c.LightResume, "light-resume", false, "light zones resume holding global's current versions instead of syncing all N")
	cmd.Flags().IntVar(&c.LightGroup, "light-group", 0, "connect the light zones this many at a time, each group once the ones before hold all N (0: all at once)")
	cmd.Flags().StringVar(&zoneProfile, "zone-cpuprofile", "", "with --zone-process: write a CPU profile of the zone process (its whole life; the last N's) to this file")
	cmd.Flags().StringVar(&c.SyncCPUProfile, "sync-cpuprofile", "", "write a CPU profile of this process during the measured zone's initial sync (the last N's) to this file")
	return cmd
}

func tortureCmd(g *globals) *cobra.Command {
	var c kdsbench.TortureConfig
	cmd := &cobra.Command{
		Use:   "torture",
		Short: "Large resources written on both sides while the zone restarts; converged or stalled per round",
		Long: `torture runs global and one zone (bbolt, TLS, static small HTTP/2 windows).
Both sides write --resources resources of --size bytes at once and the zone is
restarted in the middle of the transfer every round; a round converges when
each side holds the other's resources at the writer's versions, and stalls
when nothing changed for --stall. The target is zero stalls.

--naive runs no engine: each round is one transport-level burst between two
naive peers (static 64 KiB windows, min(--resources, 100) requests of --size
bytes from each end at once, each answered with a response of --size bytes),
which shows the stall the engine's session avoids.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, g, func(ctx context.Context, o kdsbench.Options) (*kdsbench.Report, error) {
				r, _, err := kdsbench.Torture(ctx, o, c)
				return r, err
			})
		},
	}
	cmd.Flags().IntVar(&c.Rounds, "rounds", 20, "rounds (zone restarts)")
	cmd.Flags().IntVar(&c.Resources, "resources", 2000, "resources written on each side")
	cmd.Flags().IntVar(&c.Size, "size", 64<<10, "spec size in bytes")
	cmd.Flags().Int32Var(&c.Window, "window", 64<<10, "static HTTP/2 stream and connection window, bytes")
	cmd.Flags().DurationVar(&c.Stall, "stall", 30*time.Second, "no progress for this long = stalled")
	cmd.Flags().BoolVar(&c.Naive, "naive", false, "run the transport-level burst with the naive peer instead of the engine")
	return cmd
}

func hostileCmd(g *globals) *cobra.Command {
	var c kdsbench.HostileConfig
	var inProcess bool
	cmd := &cobra.Command{
		Use:   "hostile",
		Short: "Global's RSS growth under one hostile zone's mix, against a baseline without it; the honest zone keeps syncing",
		Long: `hostile runs global and one well-behaved zone in this process, both writing
all the time. The baseline phase runs them alone for --duration; the attack
phase adds a hostile zone (a child process by default) that keeps --sessions
sessions open, each replacing the older: every session announces 100000
types and a 64 MiB max message size, pushes --pushed resources of
--push-size bytes, sends --big-subscriptions subscriptions claiming
--held-names names each, asks for --unknown-types unknown types,
re-subscribes --resubscriptions times, reads nothing for --hold and then
sends a message over global's max message size. Global's RSS (VmRSS of this
process) is sampled every 100ms; the growth is the attack phase's peak minus
the baseline phase's peak. Target: at most 256 MiB, with the honest zone in
its first session and in sync after the attack.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !inProcess {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				c.AttackCommand = func(a string) *exec.Cmd { return exec.Command(exe, "hostile-zone-proc", "--attack-json", a) }
			}
			return run(cmd, g, func(ctx context.Context, o kdsbench.Options) (*kdsbench.Report, error) {
				return kdsbench.Hostile(ctx, o, c)
			})
		},
	}
	cmd.Flags().DurationVar(&c.Duration, "duration", 25*time.Second, "length of each phase (baseline, attack)")
	cmd.Flags().IntVar(&c.Policies, "policies", 200, "policies global holds")
	cmd.Flags().IntVar(&c.Sessions, "sessions", 1, "hostile sessions at once (more than 1: each new one replaces the older)")
	cmd.Flags().DurationVar(&c.Hold, "hold", 3*time.Second, "how long each hostile session reads nothing before its oversized message")
	cmd.Flags().IntVar(&c.BigSubscriptions, "big-subscriptions", 40, "subscriptions per session claiming --held-names names")
	cmd.Flags().IntVar(&c.HeldNames, "held-names", 0, "names each big subscription claims to hold (0: as many as fit in one message)")
	cmd.Flags().IntVar(&c.MaxMessageSize, "max-message-size", 4<<20, "global's and the honest zone's max message size, bytes")
	cmd.Flags().IntVar(&c.UnknownTypes, "unknown-types", 3000, "requests for distinct unknown types per session")
	cmd.Flags().IntVar(&c.Resubscriptions, "resubscriptions", 20, "re-subscriptions per session")
	cmd.Flags().IntVar(&c.Pushed, "pushed", 100, "resources the hostile zone pushes per session")
	cmd.Flags().IntVar(&c.PushSize, "push-size", 256<<10, "bytes per pushed resource")
	cmd.Flags().BoolVar(&inProcess, "attack-in-process", false, "run the hostile zone in this process (what it allocates then counts against global's RSS)")
	return cmd
}

// hostileZoneProcCmd is the hidden child process of the hostile mode.
func hostileZoneProcCmd() *cobra.Command {
	var attack string
	cmd := &cobra.Command{
		Use:    "hostile-zone-proc",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return kdsbench.HostileZoneProcess(cmd.Context(), attack)
		},
	}
	cmd.Flags().StringVar(&attack, "attack-json", "", "the attack as JSON")
	return cmd
}

// zoneProcCmd is the hidden child process of the memory and scale modes.
func zoneProcCmd() *cobra.Command {
	var cfg, profile string
	cmd := &cobra.Command{
		Use:    "zone-proc",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			stop, err := kdsbench.StartCPUProfile(profile)
			if err != nil {
				return fmt.Errorf("cpu profile: %w", err)
			}
			defer stop()
			return kdsbench.ZoneProcess(cmd.Context(), cfg, nil)
		},
	}
	cmd.Flags().StringVar(&cfg, "config-json", "", "zone engine.Config as JSON")
	cmd.Flags().StringVar(&profile, "cpuprofile", "", "write a CPU profile of the zone's whole life to this file")
	return cmd
}

func haCmd(g *globals) *cobra.Command {
	var c kdsbench.HAConfig
	cmd := &cobra.Command{
		Use:   "ha",
		Short: "Global replicas on PostgreSQL: write→zone latency across replicas, initial sync vs bolt, admin API writes on 1 and 3 replicas",
		Long: `ha runs globals with --store postgres on databases it creates on the server at
--postgres-url (and drops at the end), next to bolt-backed globals as the
baseline, all in this process:

  latency  replicas A and B of one database holding --n resources, a zone on B;
           p50/p99 from a write on A until the zone applied it, next to writes on
           B and to a single bolt global
  sync     initial sync of --sync-n resources to a fresh zone from a PostgreSQL-
           backed global as a ratio to a bolt-backed one, alternating, --repeat runs
  writes   admin API creates (HTTP PUT) by --writers clients on a bolt global, one
           replica, and three replicas with the clients spread over them

Target: cross-replica p99 ≤ 50 ms and a sync ratio ≥ 0.7.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, g, func(ctx context.Context, o kdsbench.Options) (*kdsbench.Report, error) {
				return kdsbench.HA(ctx, o, c)
			})
		},
	}
	cmd.Flags().StringVar(&c.PostgresURL, "postgres-url", kdsbench.DefaultPostgresURL, "PostgreSQL server (postgres:// URL) whose user may create databases; each part creates one and drops it")
	cmd.Flags().IntVar(&c.N, "n", 10000, "resources synced while latency is measured")
	cmd.Flags().IntVar(&c.Updates, "updates", 200, "measured updates per latency path")
	cmd.Flags().IntVar(&c.Size, "size", 1024, "spec size in bytes")
	cmd.Flags().IntVar(&c.SyncN, "sync-n", 100000, "resources of the initial sync")
	cmd.Flags().IntVar(&c.Repeat, "repeat", 3, "initial syncs per store; figures are medians")
	cmd.Flags().IntVar(&c.Writes, "writes", 2000, "admin API writes per throughput run")
	cmd.Flags().IntVar(&c.Writers, "writers", 16, "concurrent admin API clients")
	cmd.Flags().StringSliceVar(&c.Parts, "parts", []string{kdsbench.HALatency, kdsbench.HASync, kdsbench.HAWrites}, "parts to run (latency, sync, writes); the verdict needs latency and sync")
	return cmd
}
