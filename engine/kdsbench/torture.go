package kdsbench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/bench"
)

// TortureConfig sizes the torture mode.
type TortureConfig struct {
	Rounds    int           // zone restarts (default 20)
	Resources int           // resources created on each side (default 2000)
	Size      int           // spec bytes (default 64 KiB)
	Window    int32         // static HTTP/2 windows, bytes (default 64 KiB)
	Stall     time.Duration // no progress for this long = stalled (default 30 s)
	// Naive runs the transport-level burst with the naive peer instead of
	// the engine (see Torture).
	Naive bool
	// Seed fixes the restart delays (default 1).
	Seed uint64
}

func (c TortureConfig) withDefaults() TortureConfig {
	if c.Rounds <= 0 {
		c.Rounds = 20
	}
	if c.Resources <= 0 {
		c.Resources = 2000
	}
	if c.Size <= 0 {
		c.Size = 64 << 10
	}
	if c.Window <= 0 {
		c.Window = 64 << 10
	}
	if c.Stall <= 0 {
		c.Stall = 30 * time.Second
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	return c
}

// TortureRound is the outcome of one round.
type TortureRound struct {
	Round     int
	Converged bool
	// Elapsed is from the zone's restart until both sides hold the other's
	// resources at the same versions (or until the stall was declared).
	Elapsed time.Duration
	// Matching counts resources that agree on both sides (of 2×Resources).
	Matching, Target int
}

// Torture is the scenario of the original deadlock report, on real
// engines: global and one zone (bbolt both, TLS, static small HTTP/2
// windows) write Resources large resources each at once — global
// SyncPolicy, the zone SyncStatus — and the zone is restarted in the middle
// of the transfer every round. Round 1 creates everything; every later round
// rewrites a quarter of each side's resources. A round converges when each
// side holds the other's resources at the versions the writer stored; it
// stalls when nothing changed for Stall. Target: no stalled round.
//
// With Naive set it runs no engine: each round is one transport-level burst
// (bench.Burst with bench.Naive: two naive peers on one loopback stream,
// static 64 KiB windows, each sending min(Resources, 100) requests of Size
// bytes at once and answering each with a response of Size bytes), which
// shows the stall the engine's session avoids.
func Torture(ctx context.Context, o Options, c TortureConfig) (*Report, []TortureRound, error) {
	o = o.withDefaults()
	c = c.withDefaults()
	if c.Naive {
		return tortureNaive(ctx, o, c)
	}
	r := newReport("torture", "every round converges (0 stalls) with large resources written on both sides while the zone restarts",
		"round", "result", "converge s", "matching")
	v, err := newEnv(o.PluginsDir, o.Log)
	if err != nil {
		return nil, nil, err
	}
	defer v.close()
	g, err := v.startGlobal("global", func(cfg *engineConfig) { cfg.InitialWindowSize = c.Window })
	if err != nil {
		return nil, nil, err
	}
	defer g.stop()
	zc, err := v.zoneConfig(g, "zone-1", localAddr(g.e.KDSAddr()), "")
	if err != nil {
		return nil, nil, err
	}
	zc.InitialWindowSize = c.Window
	zc.SendTimeout = 2 * c.Stall

	rng := rand.New(rand.NewPCG(c.Seed, 0))
	fctx, fcancel := context.WithCancel(ctx)
	defer fcancel()
	gPolicies, gjoin, err := follow(fctx, g.e.Store(), store.Filter{Type: policyType}, 0, nil)
	if err != nil {
		return nil, nil, err
	}
	defer gjoin()
	defer fcancel()
	gStatuses, gjoin2, err := follow(fctx, g.e.Store(), store.Filter{Type: statusType, Zone: "zone-1"}, 0, nil)
	if err != nil {
		return nil, nil, err
	}
	defer gjoin2()
	defer fcancel()

	var rounds []TortureRound
	stalls := 0
	o.Progress.Start("torture", c.Rounds)
	defer o.Progress.Finish()
	for round := 1; round <= c.Rounds; round++ {
		z, err := v.start(zc)
		if err != nil {
			return nil, nil, fmt.Errorf("round %d: start zone: %w", round, err)
		}
		// Both sides write at once.
		n := c.Resources
		first := 0
		if round > 1 {
			n = max(c.Resources/4, 1)
			first = rng.IntN(c.Resources - n + 1)
		}
		gw := make(chan error, 1)
		go func() {
			gw <- g.e.BulkLoad(ctx, tortureBatch(policyType, "p", first, n, round, c.Size))
		}()
		zerr := z.e.BulkLoad(ctx, tortureBatch(statusType, "s", first, n, round, c.Size))
		// Restart the zone in the middle of the transfer.
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		serr := z.stop()
		if err := errors.Join(zerr, serr); err != nil {
			<-gw
			return nil, nil, fmt.Errorf("round %d: zone: %w", round, err)
		}
		z, err = v.start(zc)
		if err != nil {
			<-gw
			return nil, nil, fmt.Errorf("round %d: restart zone: %w", round, err)
		}
		start := time.Now()
		if err := <-gw; err != nil {
			z.stop()
			return nil, nil, fmt.Errorf("round %d: global write: %w", round, err)
		}
		res, err := converge(ctx, z, gPolicies, gStatuses, c.Stall)
		res.Round, res.Elapsed = round, time.Since(start)
		if err != nil && !errors.Is(err, errStalled) {
			z.stop()
			return nil, nil, fmt.Errorf("round %d: %w", round, err)
		}
		if !res.Converged {
			stalls++
		}
		if err := z.stop(); err != nil {
			return nil, nil, fmt.Errorf("round %d: stop zone: %w", round, err)
		}
		rounds = append(rounds, res)
		result := "converged"
		if !res.Converged {
			result = "STALLED"
		}
		r.row(round, result, res.Elapsed.Seconds(), fmt.Sprintf("%d/%d", res.Matching, res.Target))
		r.Figures[fmt.Sprintf("round_%d_seconds", round)] = res.Elapsed.Seconds()
		o.Progress.Set(round)
	}
	r.Figures["rounds"] = float64(c.Rounds)
	r.Figures["stalls"] = float64(stalls)
	r.Figures["resources_per_side"] = float64(c.Resources)
	r.Figures["size_bytes"] = float64(c.Size)
	r.Figures["window_bytes"] = float64(c.Window)
	r.Pass = stalls == 0
	r.note("global and zone on bbolt, TLS, static %d KiB HTTP/2 windows; %d × %d KiB resources per side, a quarter rewritten each later round; stall = no change for %s",
		c.Window>>10, c.Resources, c.Size>>10, c.Stall)
	return r, rounds, nil
}

// tortureBatch returns resources first..first+n-1 of typ for round.
func tortureBatch(typ, prefix string, first, n, round, size int) []*resource.Resource {
	rs := make([]*resource.Resource, n)
	for i := range rs {
		rs[i] = &resource.Resource{Type: typ, Mesh: benchMesh, Name: fmt.Sprintf("%s-%d", prefix, first+i),
			Spec: specOf(fmt.Sprintf("r%d", round), size)}
	}
	return rs
}

// converge waits until the zone holds global's policies and global holds
// the zone's statuses, at the writers' versions.
func converge(ctx context.Context, z *node, gPolicies, gStatuses *counter, stall time.Duration) (TortureRound, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	zPolicies, j1, err := follow(ctx, z.e.Store(), store.Filter{Type: policyType}, 0, nil)
	if err != nil {
		return TortureRound{}, err
	}
	defer j1()
	zStatuses, j2, err := follow(ctx, z.e.Store(), store.Filter{Type: statusType}, 0, nil)
	if err != nil {
		return TortureRound{}, err
	}
	defer j2()
	defer cancel()
	var res TortureRound
	check := func() bool {
		a, b := matching(gPolicies, zPolicies, ""), matching(zStatuses, gStatuses, "zone-1")
		res.Matching = a.match + b.match
		res.Target = a.total + b.total
		return a.match == a.total && b.match == b.total
	}
	last, since := -1, time.Now()
	for {
		if check() {
			res.Converged = true
			return res, nil
		}
		if res.Matching != last {
			last, since = res.Matching, time.Now()
		} else if time.Since(since) > stall {
			return res, errStalled
		}
		select {
		case <-ctx.Done():
			return res, context.Cause(ctx)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

type agreement struct{ match, total int }

// matching counts the writer's resources the receiver holds at the same
// version; zone is the zone the receiver files them under.
func matching(writer, receiver *counter, zone string) agreement {
	writer.mu.Lock()
	w := make(map[resource.Key]string, len(writer.versions))
	for k, v := range writer.versions {
		k.Zone = zone
		w[k] = v
	}
	writer.mu.Unlock()
	receiver.mu.Lock()
	defer receiver.mu.Unlock()
	a := agreement{total: len(w)}
	for k, v := range w {
		if receiver.versions[k] == v {
			a.match++
		}
	}
	return a
}

func tortureNaive(ctx context.Context, o Options, c TortureConfig) (*Report, []TortureRound, error) {
	k := min(c.Resources, 100)
	r := newReport("torture --naive", "(demonstration) the naive transport stalls; the engine's default run must not",
		"round", "result", "seconds", "messages moved")
	stall := min(c.Stall, 3*time.Second)
	var rounds []TortureRound
	stalls := 0
	o.Progress.Start("torture --naive", c.Rounds)
	defer o.Progress.Finish()
	for round := 1; round <= c.Rounds; round++ {
		b, err := bench.Burst(ctx, bench.Naive, c.Size, k, stall)
		if err != nil {
			return nil, nil, fmt.Errorf("round %d: %w", round, err)
		}
		res := TortureRound{Round: round, Converged: b.Completed, Elapsed: b.Elapsed, Matching: int(b.Progress), Target: int(b.Target)}
		rounds = append(rounds, res)
		result := "completed"
		if !b.Completed {
			result = "STALLED"
			stalls++
		}
		r.row(round, result, b.Elapsed.Seconds(), fmt.Sprintf("%d/%d", b.Progress, b.Target))
		o.Progress.Set(round)
	}
	r.Figures["rounds"] = float64(c.Rounds)
	r.Figures["stalls"] = float64(stalls)
	r.Pass = stalls > 0
	r.note("--naive runs no engine: per round, two naive peers on one loopback gRPC stream with static %d KiB windows each send %d requests of %d KiB at once and answer each with a %d KiB response (bench.Burst); stall = nothing moved for %s. PASS here means the stall was reproduced",
		bench.BurstWindow>>10, k, c.Size>>10, c.Size>>10, stall)
	return r, rounds, nil
}
