package kdsbench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kds-engine/kds-engine/engine"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// DefaultPostgresURL is the server the ha mode uses unless told otherwise:
// the local one, as a user that may create databases.
const DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/postgres"

// HA parts, in the order they run.
const (
	HALatency = "latency"
	HASync    = "sync"
	HAWrites  = "writes"
)

// HAConfig sizes the ha mode.
type HAConfig struct {
	// PostgresURL names the server (a postgres:// URL whose user may create
	// databases); each part creates a database of its own on it and drops
	// it at the end. Default DefaultPostgresURL.
	PostgresURL string
	// N is the resources synced while latency is measured (default 10k).
	N int
	// Updates is the measured updates per path (default 200).
	Updates int
	// Size is the spec size in bytes (default 1 KiB).
	Size int
	// SyncN is the resources of the initial sync (default 100k).
	SyncN int
	// Repeat is the initial syncs per store (default 3); figures are
	// medians.
	Repeat int
	// Writes is the admin API writes per throughput run (default 2000).
	Writes int
	// Writers is the concurrent admin API clients (default 16).
	Writers int
	// Parts lists the parts to run (default all: latency, sync, writes).
	// The verdict needs latency and sync.
	Parts []string
}

// HA measures global on PostgreSQL run as several replicas:
//
//   - latency: p50/p99 from a write on replica A to its application on a
//     zone attached to replica B, with N resources synced; shown next to a
//     write on B itself and to a single bolt-backed global (the baseline);
//   - sync: the initial sync of SyncN resources from a PostgreSQL-backed
//     global, as a ratio to a bolt-backed one, alternating;
//   - writes: admin API write throughput (HTTP PUT, creates) on one bolt
//     global (baseline), one PostgreSQL replica, and three replicas of one
//     database with the writers spread over them.
//
// Target: cross-replica p99 ≤ 50 ms and sync ratio ≥ 0.7.
func HA(ctx context.Context, o Options, c HAConfig) (*Report, error) {
	o = o.withDefaults()
	if c.PostgresURL == "" {
		c.PostgresURL = DefaultPostgresURL
	}
	if c.N <= 0 {
		c.N = 10000
	}
	if c.Updates <= 0 {
		c.Updates = 200
	}
	if c.Size <= 0 {
		c.Size = 1024
	}
	if c.SyncN <= 0 {
		c.SyncN = 100000
	}
	c.Repeat = max(c.Repeat, 1)
	if c.Writes <= 0 {
		c.Writes = 2000
	}
	if c.Writers <= 0 {
		c.Writers = 16
	}
	if len(c.Parts) == 0 {
		c.Parts = []string{HALatency, HASync, HAWrites}
	}
	for _, p := range c.Parts {
		if p != HALatency && p != HASync && p != HAWrites {
			return nil, fmt.Errorf("part %q: want %s, %s or %s", p, HALatency, HASync, HAWrites)
		}
	}
	if 3*c.Updates > c.N {
		return nil, fmt.Errorf("updates %d: at most N/3 (%d), each path changes resources of its own", c.Updates, c.N/3)
	}
	r := newReport("ha", "p99 ≤ 50 ms from a write on replica A until a zone on replica B applied it (N=10k), and the initial sync of 100k from a PostgreSQL-backed global ≥ 0.7× the bolt-backed one's resources/s",
		"part", "path", "count", "p50 ms", "p99 ms", "max ms", "per second", "ratio vs baseline")
	v, err := newEnv(o.PluginsDir, o.Log)
	if err != nil {
		return nil, err
	}
	defer v.close()
	pg := &pgServer{url: c.PostgresURL}
	defer pg.dropAll()
	if slices.Contains(c.Parts, HALatency) {
		if err := haLatency(ctx, o, v, pg, c, r); err != nil {
			return nil, fmt.Errorf("latency: %w", err)
		}
	} else {
		r.Pass = false
		r.note("latency was not measured (MISS means not shown to pass)")
	}
	if slices.Contains(c.Parts, HASync) {
		if err := haSync(ctx, o, v, pg, c, r); err != nil {
			return nil, fmt.Errorf("sync: %w", err)
		}
	} else {
		r.Pass = false
		r.note("sync was not measured (MISS means not shown to pass)")
	}
	if slices.Contains(c.Parts, HAWrites) {
		if err := haWrites(ctx, o, v, pg, c, r); err != nil {
			return nil, fmt.Errorf("writes: %w", err)
		}
	}
	r.note("PostgreSQL at %s, one database per part, created and dropped by the run; each replica's pool holds max(4, CPUs) connections plus one LISTEN connection", pg.redacted())
	return r, nil
}

// haLatency measures write→zone latency on a bolt global, on the zone's own
// PostgreSQL replica and across replicas.
func haLatency(ctx context.Context, o Options, v *env, pg *pgServer, c HAConfig, r *Report) error {
	type path struct {
		name string
		ds   []time.Duration
	}
	var paths []path

	// Baseline: one bolt-backed global, the zone on it.
	{
		g, err := v.startLoadedGlobal(ctx, o, "ha-bolt-latency", "ha latency: load bolt global", c.N, c.Size)
		if err != nil {
			return err
		}
		ds, err := zoneLatency(ctx, o, v, g, g, "ha-zone-bolt", c, 0, "ha latency: bolt global")
		if derr := g.discard(); err == nil {
			err = derr
		}
		if err != nil {
			return fmt.Errorf("bolt: %w", err)
		}
		paths = append(paths, path{"baseline: bolt global, write on the zone's global", ds})
	}

	db, err := pg.create(ctx)
	if err != nil {
		return err
	}
	a, err := v.startGlobal("ha-replica-a", pgStore(db, nil))
	if err != nil {
		return fmt.Errorf("replica A: %w", err)
	}
	defer a.discard()
	o.Progress.Start("ha latency: load replica A", c.N)
	err = a.e.BulkLoad(ctx, makeResources(policyType, "p", c.N, c.Size))
	o.Progress.Finish()
	if err != nil {
		return fmt.Errorf("load replica A: %w", err)
	}
	b, err := v.startGlobal("ha-replica-b", pgStore(db, a))
	if err != nil {
		return fmt.Errorf("replica B: %w", err)
	}
	defer b.discard()
	// The zone is on B (its token signed with the cluster's key, which B
	// reads from A's data dir); the same zone measures writes on B (offset
	// Updates) and on A (offset 2×Updates).
	zc, err := v.zoneConfig(a, "ha-zone-pg", localAddr(b.e.KDSAddr()), "")
	if err != nil {
		return err
	}
	z, err := v.start(zc)
	if err != nil {
		return err
	}
	defer z.discard()
	var ea arrivals
	cnt, stop, err := watchZone(ctx, z, 0, &ea)
	if err != nil {
		return err
	}
	defer stop()
	o.Progress.Start("ha latency: initial sync from replica B", c.N)
	err = cnt.waitFor(ctx, 2*time.Minute, func(m map[resourceKey]string) bool { o.Progress.Set(len(m)); return len(m) >= c.N })
	o.Progress.Finish()
	if err != nil {
		return fmt.Errorf("initial sync from replica B: %w", err)
	}
	same, err := updates(ctx, o.Progress, "ha latency: write on B, zone on B", c.Updates, c.Updates, c.Size, &ea, b)
	if err != nil {
		return err
	}
	cross, err := updates(ctx, o.Progress, "ha latency: write on A, zone on B", 2*c.Updates, c.Updates, c.Size, &ea, a)
	if err != nil {
		return err
	}
	paths = append(paths, path{"postgres: write on the zone's replica B", same}, path{"postgres: write on replica A, zone on B", cross})

	keys := []string{"latency_bolt", "latency_same_replica", "latency_cross_replica"}
	baseP99 := percentile(paths[0].ds, 0.99)
	for i, p := range paths {
		p50, p99, mx := percentile(p.ds, 0.5), percentile(p.ds, 0.99), percentile(p.ds, 1)
		r.row(fmt.Sprintf("latency N=%d", c.N), p.name, len(p.ds), ms(p50), ms(p99), ms(mx), "-", ms(p99)/ms(baseP99))
		r.Figures[keys[i]+"_p50_ms"] = ms(p50)
		r.Figures[keys[i]+"_p99_ms"] = ms(p99)
		r.Figures[keys[i]+"_max_ms"] = ms(mx)
	}
	r.Figures["latency_n"] = float64(c.N)
	r.Figures["latency_cross_p99_ratio"] = r.Figures["latency_cross_replica_p99_ms"] / r.Figures["latency_bolt_p99_ms"]
	if r.Figures["latency_cross_replica_p99_ms"] > 50 {
		r.Pass = false
	}
	r.note("latency: from just before the admin-path write (engine.Write: plugin validation, store commit) until the zone's bbolt store committed it (fsync) and a watcher saw it; ratio column: p99 over the bolt baseline's p99")
	r.note("latency across replicas: A commits and NOTIFYs; B's LISTEN connection wakes its reader, which reads the change log and feeds B's index, which sends the delta to the zone")
	return nil
}

// zoneLatency starts a zone on g, waits for its initial sync and measures
// Updates writes made through w.
func zoneLatency(ctx context.Context, o Options, v *env, g, w *node, zone string, c HAConfig, from int, label string) ([]time.Duration, error) {
	zc, err := v.zoneConfig(g, zone, localAddr(g.e.KDSAddr()), "")
	if err != nil {
		return nil, err
	}
	z, err := v.start(zc)
	if err != nil {
		return nil, err
	}
	defer z.discard()
	var ea arrivals
	cnt, stop, err := watchZone(ctx, z, 0, &ea)
	if err != nil {
		return nil, err
	}
	defer stop()
	o.Progress.Start(label+": initial sync", c.N)
	err = cnt.waitFor(ctx, 2*time.Minute, func(m map[resourceKey]string) bool { o.Progress.Set(len(m)); return len(m) >= c.N })
	o.Progress.Finish()
	if err != nil {
		return nil, fmt.Errorf("initial sync: %w", err)
	}
	return updates(ctx, o.Progress, label, from, c.Updates, c.Size, &ea, w)
}

// updates changes resources from..from+count-1 one at a time through w's
// admin write path and returns, for each, the time until the zone watched
// by a had it.
func updates(ctx context.Context, p Progress, label string, from, count, size int, a *arrivals, w *node) ([]time.Duration, error) {
	p.Start(label, count)
	defer p.Finish()
	out := make([]time.Duration, 0, count)
	for i := from; i < from+count; i++ {
		name, marker := nameMarker(i)
		done := a.expect(name, marker, 1)
		start := time.Now()
		if _, err := w.e.Write(ctx, policyUpdate(i, size)); err != nil {
			return nil, fmt.Errorf("write %s: %w", name, err)
		}
		select {
		case <-done:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-time.After(30 * time.Second):
			return nil, fmt.Errorf("%s: change of %s not on the zone within 30s", label, name)
		}
		out = append(out, a.lastAt().Sub(start))
		p.Set(i - from + 1)
	}
	return out, nil
}

// haSync times the initial sync of SyncN resources to fresh zones from a
// bolt-backed and a PostgreSQL-backed global, both loaded first, the
// stores alternating run by run.
func haSync(ctx context.Context, o Options, v *env, pg *pgServer, c HAConfig, r *Report) error {
	n := c.SyncN
	bolt, err := v.startLoadedGlobal(ctx, o, "ha-bolt-sync", "ha sync: load bolt global", n, c.Size)
	if err != nil {
		return err
	}
	defer bolt.discard()
	db, err := pg.create(ctx)
	if err != nil {
		return err
	}
	pgg, err := v.startGlobal("ha-pg-sync", pgStore(db, nil))
	if err != nil {
		return err
	}
	defer pgg.discard()
	o.Progress.Start("ha sync: load postgres global", n)
	loadStart := time.Now()
	err = pgg.e.BulkLoad(ctx, makeResources(policyType, "p", n, c.Size))
	load := time.Since(loadStart)
	o.Progress.Finish()
	if err != nil {
		return fmt.Errorf("load postgres global: %w", err)
	}
	r.Figures["sync_pg_bulk_load_seconds"] = load.Seconds()

	watchZoneStore := func(z *node) (store.Store, store.Filter) { return z.e.Store(), store.Filter{Type: policyType} }
	var bruns, pruns []syncRun
	for i := range c.Repeat {
		b, err := syncOnce(ctx, o, v, bolt, fmt.Sprintf("ha-sync-bolt-%d", i), n, Link{}, watchZoneStore, nil)
		if err != nil {
			return fmt.Errorf("bolt run %d: %w", i+1, err)
		}
		p, err := syncOnce(ctx, o, v, pgg, fmt.Sprintf("ha-sync-pg-%d", i), n, Link{}, watchZoneStore, nil)
		if err != nil {
			return fmt.Errorf("postgres run %d: %w", i+1, err)
		}
		bruns, pruns = append(bruns, b), append(pruns, p)
		r.row(fmt.Sprintf("sync N=%d", n), fmt.Sprintf("baseline: bolt global (run %d)", i+1), n, "-", "-", "-", b.rps(n), "1")
		r.row(fmt.Sprintf("sync N=%d", n), fmt.Sprintf("postgres global (run %d)", i+1), n, "-", "-", "-", p.rps(n), p.rps(n)/b.rps(n))
	}
	bm, pm := medianRun(bruns), medianRun(pruns)
	ratio := pm.rps(n) / bm.rps(n)
	r.row(fmt.Sprintf("sync N=%d", n), fmt.Sprintf("postgres vs bolt (medians of %d)", c.Repeat), n, "-", "-", "-", pm.rps(n), ratio)
	r.Figures["sync_n"] = float64(n)
	r.Figures["sync_bolt_seconds"] = bm.elapsed.Seconds()
	r.Figures["sync_bolt_rps"] = bm.rps(n)
	r.Figures["sync_pg_seconds"] = pm.elapsed.Seconds()
	r.Figures["sync_pg_rps"] = pm.rps(n)
	r.Figures["sync_ratio"] = ratio
	if ratio < 0.7 {
		r.Pass = false
	}
	r.note("sync: each run is a fresh zone (bbolt) syncing %d × %d B from an already loaded global, clock from letting its connection through until its store holds all; the postgres global serves from its in-memory index like the bolt one", n, c.Size)
	r.note("sync: loading the postgres global (BulkLoad, batches of 5000, each resource also written to the change log) took %.1f s", load.Seconds())
	return nil
}

// haWrites measures admin API write throughput: Writes creates by Writers
// concurrent HTTP clients on a bolt global, on one PostgreSQL replica and
// on three replicas of one database.
func haWrites(ctx context.Context, o Options, v *env, pg *pgServer, c HAConfig, r *Report) error {
	type setup struct {
		key, name string
		replicas  int
		postgres  bool
	}
	var base float64
	for _, s := range []setup{
		{"writes_bolt", "baseline: bolt global", 1, false},
		{"writes_pg_1", "postgres, 1 replica", 1, true},
		{"writes_pg_3", "postgres, 3 replicas (writers spread)", 3, true},
	} {
		var nodes []*node
		var mut func(*engineConfig)
		if s.postgres {
			db, err := pg.create(ctx)
			if err != nil {
				return err
			}
			mut = pgStore(db, nil)
		}
		for i := range s.replicas {
			m := mut
			if i > 0 {
				m = pgStore(nodesDB(nodes[0]), nodes[0])
			}
			g, err := v.startGlobal(fmt.Sprintf("ha-%s-%d", s.key, i), m)
			if err != nil {
				return fmt.Errorf("%s replica %d: %w", s.name, i+1, err)
			}
			defer g.discard()
			nodes = append(nodes, g)
		}
		res, err := apiWrites(ctx, o.Progress, "ha writes: "+s.name, nodes, c.Writes, c.Writers, c.Size)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		if base == 0 {
			base = res.perSecond
		}
		p50, p99, mx := percentile(res.ds, 0.5), percentile(res.ds, 0.99), percentile(res.ds, 1)
		r.row(fmt.Sprintf("admin API writes, %d clients", c.Writers), s.name, c.Writes, ms(p50), ms(p99), ms(mx), res.perSecond, res.perSecond/base)
		r.Figures[s.key+"_per_second"] = res.perSecond
		r.Figures[s.key+"_p50_ms"] = ms(p50)
		r.Figures[s.key+"_p99_ms"] = ms(p99)
		for _, g := range nodes {
			if err := g.discard(); err != nil {
				return err
			}
		}
	}
	r.Figures["writes_pg_3_vs_1"] = r.Figures["writes_pg_3_per_second"] / r.Figures["writes_pg_1_per_second"]
	r.note("writes: HTTP PUT creates of %d B SyncPolicy resources to the admin API (validation by the plugin, one store commit each; PostgreSQL commits take turns on the counter row across replicas, decision 0017), shown, not judged", c.Size)
	return nil
}

type writeResult struct {
	ds        []time.Duration
	perSecond float64
}

// apiWrites creates total resources through the admin APIs of nodes,
// writer w using nodes[w % len(nodes)], and returns each write's latency
// and the rate over the whole run.
func apiWrites(ctx context.Context, p Progress, label string, nodes []*node, total, writers, size int) (writeResult, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: writers, MaxConnsPerHost: writers}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	p.Start(label, total)
	defer p.Finish()
	var (
		mu      sync.Mutex
		ds      = make([]time.Duration, 0, total)
		next    int
		firstEr error
		wg      sync.WaitGroup
	)
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if next >= total || firstEr != nil {
			return 0, false
		}
		next++
		return next - 1, true
	}
	start := time.Now()
	for w := range writers {
		api := "http://" + nodes[w%len(nodes)].e.APIAddr().String()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i, ok := take()
				if !ok {
					return
				}
				t0 := time.Now()
				err := putPolicy(ctx, hc, api, fmt.Sprintf("w-%d", i), specOf(fmt.Sprintf("w%d", i), size))
				d := time.Since(t0)
				mu.Lock()
				if err != nil && firstEr == nil {
					firstEr = err
				}
				ds = append(ds, d)
				p.Set(len(ds))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if firstEr != nil {
		return writeResult{}, firstEr
	}
	return writeResult{ds: ds, perSecond: float64(total) / el.Seconds()}, nil
}

// putPolicy creates a SyncPolicy through the admin API.
func putPolicy(ctx context.Context, hc *http.Client, api, name string, spec []byte) error {
	body := append(append([]byte(`{"spec":`), spec...), '}')
	req, err := http.NewRequestWithContext(ctx, http.MethodPut,
		api+"/api/v1/resources/"+policyType+"/"+name+"?mesh="+benchMesh, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("PUT %s: %w", name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("PUT %s: %d %s", name, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}

// pgStore returns a config change putting a global on the database at db.
// With peer set, the global is another replica of peer's cluster: it
// signs and verifies zone tokens with peer's key and cluster id.
func pgStore(db string, peer *node) func(*engineConfig) {
	return func(cfg *engineConfig) {
		cfg.Store = engine.StorePostgres
		cfg.PostgresURL = db
		if peer != nil {
			cfg.TokenSigningKeyFile = engine.SigningKeyFile(peer.cfg.DataDir, peer.cfg.TokenSigningKeyFile)
			id, _, err := engine.ClusterID(peer.cfg.DataDir, peer.cfg.ClusterID)
			if err == nil {
				cfg.ClusterID = id
			}
		}
	}
}

func nodesDB(n *node) string { return n.cfg.PostgresURL }

// pgServer creates databases on one PostgreSQL server and drops them.
type pgServer struct {
	url     string
	mu      sync.Mutex
	created []string
}

// create makes a new database with a random name and returns its URL.
func (s *pgServer) create(ctx context.Context) (string, error) {
	u, err := url.Parse(s.url)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("postgres URL %s: want postgres://USER@HOST:PORT/DATABASE", s.redacted())
	}
	conn, err := pgx.Connect(ctx, s.url)
	if err != nil {
		return "", fmt.Errorf("connect to PostgreSQL at %s (set --postgres-url to a server whose user may create databases): %w", s.redacted(), err)
	}
	defer conn.Close(context.Background())
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "kds_bench_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database %s on %s: %w", name, s.redacted(), err)
	}
	s.mu.Lock()
	s.created = append(s.created, name)
	s.mu.Unlock()
	u.Path = "/" + name
	return u.String(), nil
}

// dropAll drops every database create made (closing their connections).
func (s *pgServer) dropAll() {
	s.mu.Lock()
	names := s.created
	s.created = nil
	s.mu.Unlock()
	if len(names) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.url)
	if err != nil {
		return
	}
	defer conn.Close(context.Background())
	for _, n := range names {
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+n+" WITH (FORCE)")
	}
}

// redacted is the server URL without its password.
func (s *pgServer) redacted() string {
	u, err := url.Parse(s.url)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
