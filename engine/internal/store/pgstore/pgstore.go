// Package pgstore is the store.Store on PostgreSQL: several engine
// processes (global replicas) open one database and share its resources,
// session generations and change feed.
//
// # Schema
//
// The schema is embedded (migrations/NNNN_name.sql) and applied by Open
// under a PostgreSQL advisory lock, each migration in its own transaction
// with its row in kds_schema_migrations, so replicas starting together
// migrate once. A database migrated by a newer engine is refused.
//
//   - kds_counter: one row holding the revision of the latest commit and
//     the counter of the last version a local write assigned.
//   - kds_resources: one row per resource, keyed by (type, zone, mesh,
//     name) in the "C" collation, so ORDER BY is the bytewise order every
//     store lists in.
//   - kds_counts: how many resources each (type, zone) holds.
//   - kds_sessions: the last session generation ClaimSession handed out per
//     zone, and the lease of that session (schema version 2): the replica
//     holding it, the zone's address, start, heartbeat and end times.
//   - kds_changes: the change log, one row per changed resource per commit.
//
// # Commits and revisions
//
// Every write transaction first locks the counter row (SELECT … FOR
// UPDATE), does its reads, checks and writes, logs what it changed into
// kds_changes under the next revision, writes the counter and sends
// NOTIFY on Channel, then commits. Commits are therefore serialised across
// every process on the database, and revision order is commit order: a
// commit that holds revision r+1 took the lock after r's commit became
// visible, so a reader that sees r+1 sees r. (A sequence would hand out
// numbers in the order transactions asked for them, not the order they
// commit, and a reader catching up by "revision > last" could skip a lower
// revision that commits late.) A transaction that rolls back leaves the
// counter as it was, so revisions have no holes.
//
// Within one Store, writes are group-committed: concurrent writers queue,
// and one of them commits every queued write in one such transaction (one
// lock round and one WAL flush), each with its own revision and its own
// savepoint, so a write that fails is answered alone and the others
// commit.
//
// A fenced Apply reads its zone's generation FOR SHARE, so a ClaimSession
// for that zone waits for the Apply's commit: nothing of a replaced
// session commits after its successor claimed the zone. Every commit that
// adds or removes resources keeps kds_counts (resources per type and zone)
// current, so a limited Apply reads its counts instead of counting; the
// counter lock makes them exact.
//
// # Change feed
//
// Each Store runs four goroutines: the heartbeat and the leader (below),
// one that holds a dedicated connection that LISTENs on Channel and
// SessionsChannel and wakes the reader on every change notification (and
// once after every reconnect), and the reader, which catches up from kds_changes by
// revision whenever it is woken and at least every poll interval, and
// publishes each commit to the Store's watchers, in revision order,
// exactly once. A lost notification or a connection that dropped costs
// latency, never a change. A write made through this Store publishes its
// own commit before it returns when every earlier commit is published (it
// catches up first if needed), so a watcher of the writing process sees
// its writes at once. Writers never wait for watchers.
//
// The leader replica (below) prunes kds_changes (revisions older than the
// retention in both count and age). A Store whose reader fell behind the pruned horizon
// (disconnected for longer than the retention), or that finds the
// database at an older revision than it published (a restore, a failover
// to a standby that lost commits), ends every Watch with
// store.ErrWatchLost: watchers take a new snapshot.
//
// # Leases and leadership
//
// Every Store has a replica id (WithReplica). ClaimLease claims a zone's
// next session generation and, in the same statement, makes it this
// replica's lease, notifying SessionsChannel; the Store renews the leases
// it holds every heartbeat (WithLeaseTimings) and reports through
// OnLeaseLost a lease that a newer claim took (from the notification, or
// at the latest when its heartbeat finds the row's generation changed) or
// that the leader ended after it expired. EndLease marks a lease ended;
// rows are never deleted. Leases lists every zone's lease with whether it
// is live (not ended and renewed within the expiry, by the database's
// clock), the same answer on every replica.
//
// One Store per database leads at a time: it holds a session-level
// pg_try_advisory_lock on a dedicated connection (a lost connection
// releases it; the others try again every heartbeat) and meanwhile marks
// expired leases ended and prunes the change log. Both jobs are
// idempotent, so a leader that lost its connection mid-job does no harm.
// See docs/decisions/0021-replica-leases.md.
//
// # Versions
//
// A local write's version is "<epoch>-<counter>" (store.Versioner): the
// counter is the database's (kds_counter.version, incremented in the
// write's transaction, so no two replicas assign the same counter), the
// epoch is drawn at Open. If a write finds the database's counter below
// one this Store already assigned (the database went back: a restore, or a
// failover that lost commits), the Store draws a new epoch before it
// assigns anything, so it never renders a version twice; other processes
// have epochs of their own. See docs/decisions/0017-postgresql-store.md.
//
// # Errors
//
// Errors from a database that cannot be reached (connection refused or
// lost, server shutting down, too many connections) wrap
// store.ErrUnavailable and name the server; the URL's password never
// appears in them (see RedactURL).
package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// Channel is the LISTEN/NOTIFY channel every commit notifies, with its
// revision as the payload.
const Channel = "kds_changes"

var _ store.Store = (*Store)(nil)

// Option configures Open.
type Option func(*config)

type config struct {
	log           hclog.Logger
	now           func() time.Time
	poll          time.Duration
	pruneEvery    time.Duration
	keepRevisions uint64
	keepFor       time.Duration
	maxConns      int32
	replica       string
	heartbeat     time.Duration
	expiry        time.Duration
	leaderHook    func(bool)
}

// WithLogger sets the logger (default: discard). The store logs under the
// sub-logger "store".
func WithLogger(l hclog.Logger) Option { return func(c *config) { c.log = l } }

// WithClock sets the source of CreationTime and ModificationTime (default
// time.Now).
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// WithPollInterval sets how often the reader catches up even without a
// notification (default 1s): the safety net under LISTEN/NOTIFY.
func WithPollInterval(d time.Duration) Option { return func(c *config) { c.poll = d } }

// WithRetention sets what the change log keeps: a revision is pruned once
// it is more than revisions behind the latest and older than age (defaults
// 10000 and 10 minutes), checked every pruneEvery (default 30s). A replica
// cut off from the database for longer resyncs its watchers
// (store.ErrWatchLost) when it comes back.
func WithRetention(revisions uint64, age, pruneEvery time.Duration) Option {
	return func(c *config) { c.keepRevisions, c.keepFor, c.pruneEvery = revisions, age, pruneEvery }
}

// WithMaxConns sets the size of the connection pool (default: pgxpool's,
// the larger of 4 and the number of CPUs; a pool_max_conns in the URL wins
// over both). The LISTEN connection is extra.
func WithMaxConns(n int32) Option { return func(c *config) { c.maxConns = n } }

// Store is the PostgreSQL-backed store.Store. Safe for concurrent use.
type Store struct {
	pool    *pgxpool.Pool
	listen  *pgx.ConnConfig
	target  string // "host:port database db", for messages
	log     hclog.Logger
	now     func() time.Time
	feed    *store.Feed
	cfg     config
	stop    context.CancelCauseFunc
	workers sync.WaitGroup
	wake    chan struct{}

	// life is held for reading by every operation and for writing by Close.
	life   sync.RWMutex
	closed bool

	// qmu guards queue, the writes waiting for the next group commit; wmu
	// is held by the goroutine committing a group.
	qmu   sync.Mutex
	queue []*commitReq
	wmu   sync.Mutex

	// vmu guards versioner and assigned: the epoch in use and the highest
	// version counter this Store may have committed under it.
	vmu       sync.Mutex
	versioner *store.Versioner
	assigned  uint64

	// pmu serialises publishing; published is the revision of the last
	// commit published to the feed (written under pmu).
	pmu       sync.Mutex
	published atomic.Uint64

	resets atomic.Uint64 // how many times lost() reset the feed

	listenPID atomic.Uint32
	lastErr   atomic.Pointer[errBox] // the reader's last failure, nil once it succeeds

	// lmu guards held (the generation of each lease this Store renews),
	// latest (the highest generation notified per zone) and onLost.
	lmu         sync.Mutex
	held        map[string]uint64
	latest      map[string]uint64
	onLost      func(LeaseLoss)
	beat        chan struct{}
	beatFailing atomic.Bool
	leader      atomic.Bool

	// opened is the database's clock when this Store opened. Under lmu:
	// claimed is the highest generation this Store claimed per zone;
	// foreign and warned are the leases under this Store's replica id
	// that it did not claim, seen at the last heartbeat and warned about
	// (see checkReplicaID).
	opened  time.Time
	renewed time.Time // when the heartbeat last renewed the leases (its goroutine only)
	claimed map[string]uint64
	foreign map[string]uint64
	warned  map[string]uint64
}

type errBox struct{ err error }

// Open connects to the PostgreSQL database at url (a postgres:// URL or a
// key=value string, as libpq takes), applies the embedded schema
// migrations, and starts following the change log. If the server cannot
// be reached it fails with an error wrapping store.ErrUnavailable that
// names the host, port and database; the password is never shown.
func Open(ctx context.Context, url string, opts ...Option) (*Store, error) {
	cfg := config{
		log:           hclog.NewNullLogger(),
		now:           time.Now,
		poll:          time.Second,
		pruneEvery:    30 * time.Second,
		keepRevisions: 10000,
		keepFor:       10 * time.Minute,
		heartbeat:     DefaultLeaseHeartbeat,
		expiry:        DefaultLeaseExpiry,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.poll <= 0 || cfg.pruneEvery <= 0 {
		return nil, fmt.Errorf("open postgres store: poll and prune intervals must be positive")
	}
	if cfg.heartbeat <= 0 || cfg.expiry < 2*cfg.heartbeat {
		return nil, fmt.Errorf("open postgres store: lease heartbeat %s must be positive and the lease expiry %s at least twice as long", cfg.heartbeat, cfg.expiry)
	}
	if cfg.replica == "" {
		host, _ := os.Hostname()
		cfg.replica = NewReplicaID(host)
	}
	if err := CheckReplicaID(cfg.replica); err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's parse errors redact the password themselves; say which
		// setting to fix.
		return nil, fmt.Errorf("open postgres store: bad PostgreSQL URL %s: %w (check --postgres-url / KDS_ENGINE_POSTGRES_URL)", RedactURL(url), err)
	}
	if pcfg.ConnConfig.ConnectTimeout == 0 {
		pcfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	if cfg.maxConns > 0 {
		pcfg.MaxConns = cfg.maxConns
	}
	s := &Store{
		listen:    pcfg.ConnConfig.Copy(),
		target:    describe(pcfg.ConnConfig),
		log:       cfg.log.Named("store"),
		now:       cfg.now,
		feed:      store.NewFeed(),
		cfg:       cfg,
		wake:      make(chan struct{}, 1),
		versioner: store.NewVersioner(),
		held:      map[string]uint64{},
		latest:    map[string]uint64{},
		claimed:   map[string]uint64{},
		foreign:   map[string]uint64{},
		warned:    map[string]uint64{},
		beat:      make(chan struct{}, 1),
	}
	s.pool, err = pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres store at %s: %w", s.target, err)
	}
	if err := s.pool.Ping(ctx); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("open postgres store: cannot reach PostgreSQL at %s: %w; check that the server runs and accepts connections from this host, and --postgres-url / KDS_ENGINE_POSTGRES_URL", s.target, s.unavailable(err))
	}
	if err := migrate(ctx, s.pool, s.log); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("open postgres store at %s: schema: %w", s.target, s.classify(err))
	}
	var rev, version uint64
	if err := s.pool.QueryRow(ctx, "SELECT revision, version, now() FROM kds_counter WHERE id = 1").Scan(&rev, &version, &s.opened); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("open postgres store at %s: read counter: %w", s.target, s.classify(err))
	}
	s.published.Store(rev)
	// The first try for leadership is made here, so that of replicas
	// opened one after the other the first leads at once.
	lconn, err := pgx.ConnectConfig(ctx, s.listen.Copy())
	if err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("open postgres store: leader connection: %w", s.unavailable(err))
	}
	lead, err := tryLead(ctx, lconn)
	if err != nil {
		closeConn(lconn)
		s.pool.Close()
		return nil, fmt.Errorf("open postgres store at %s: leader lock: %w", s.target, s.classify(err))
	}
	wctx, stop := context.WithCancelCause(context.Background())
	s.stop = stop
	s.workers.Add(4)
	go func() { defer s.workers.Done(); s.listenLoop(wctx) }()
	go func() { defer s.workers.Done(); s.readLoop(wctx) }()
	go func() { defer s.workers.Done(); s.heartbeatLoop(wctx) }()
	go func() { defer s.workers.Done(); s.leaderLoop(wctx, lconn, lead) }()
	s.log.Info("store opened", "postgres", s.target, "replica", cfg.replica, "schema_version", SchemaVersion(), "revision", rev,
		"version_counter", version, "version_epoch", s.versioner.Epoch(), "lease_heartbeat", cfg.heartbeat, "lease_expiry", cfg.expiry)
	return s, nil
}

// describe names the server and database of c, never the password.
func describe(c *pgx.ConnConfig) string {
	return fmt.Sprintf("%s:%d database %s", c.Host, c.Port, c.Database)
}

// Target names the server and database the store uses ("host:port
// database name"), without credentials.
func (s *Store) Target() string { return s.target }

// ListenPID returns the server process id of the LISTEN connection (0
// while it is not connected). Tests terminate it to prove catch-up.
func (s *Store) ListenPID() uint32 { return s.listenPID.Load() }

// Health reports whether the database answers: nil, or an error wrapping
// store.ErrUnavailable that names the server and the cause. It waits at
// most 2s.
func (s *Store) Health(ctx context.Context) error {
	leave, err := s.enter(ctx)
	if err != nil {
		return err
	}
	defer leave()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := s.pool.Ping(ctx); err != nil {
		return s.unavailable(err)
	}
	return nil
}

// unavailable wraps err, a failure to reach the database, with
// store.ErrUnavailable and the server's name.
func (s *Store) unavailable(err error) error {
	return fmt.Errorf("PostgreSQL at %s unavailable: %w: %w", s.target, oneLine{err}, store.ErrUnavailable)
}

// oneLine is err with its text on one line: the driver's connect errors
// put each address it tried on a line of its own, and these errors go
// into /readyz, log lines and the CLI's table cells.
type oneLine struct{ err error }

func (o oneLine) Error() string {
	lines := strings.Split(o.err.Error(), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	if len(lines) == 1 {
		return lines[0]
	}
	return lines[0] + " " + strings.Join(lines[1:], "; ")
}

func (o oneLine) Unwrap() error { return o.err }

// classify wraps err with store.ErrUnavailable when it means the database
// could not be reached or refused service for a passing reason; other
// errors (the store's own sentinels, SQL errors, context ends) pass as
// they are.
func (s *Store) classify(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	for _, sentinel := range []error{store.ErrNotFound, store.ErrAlreadyExists, store.ErrConflict, store.ErrInvalid, store.ErrFenced, store.ErrLimitExceeded, store.ErrClosed, store.ErrUnavailable} {
		if errors.Is(err, sentinel) {
			return err
		}
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case len(pgErr.Code) == 5 && pgErr.Code[:2] == "08", // connection exception
			pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03", // shutdown, crash, cannot connect now
			pgErr.Code == "53300", // too many connections
			pgErr.Code == "25006": // read-only transaction (a standby)
			return s.unavailable(err)
		}
		return err
	}
	// Not an answer from the server: the connection failed, was lost or
	// timed out.
	return s.unavailable(err)
}

// enter starts an operation: it holds s.life for reading until the returned
// func is called. It fails if the store is closed or ctx has ended.
func (s *Store) enter(ctx context.Context) (func(), error) {
	s.life.RLock()
	if s.closed {
		s.life.RUnlock()
		return nil, store.ErrClosed
	}
	if err := context.Cause(ctx); err != nil {
		s.life.RUnlock()
		return nil, err
	}
	return s.life.RUnlock, nil
}

// normTime drops the monotonic reading and the location so that what a
// write returns equals what a later read decodes.
func (s *Store) normTime() time.Time { return s.now().UTC().Round(0) }

// wtx is one write transaction holding the counter lock.
type wtx struct {
	tx       pgx.Tx
	s        *Store
	rev      uint64 // the revision before this commit; the commit gets rev+1
	version  uint64 // the version counter, advanced by nextVersion
	versions *store.Versioner
	events   []store.Event
	// logged: the statements that recorded events also logged them in
	// kds_changes (sync applies); otherwise write logs them.
	logged bool
}

func (w *wtx) nextVersion() string {
	w.version++
	return w.versions.Version(w.version)
}

// commitReq is one write waiting for a group commit. Its result fields
// are written by the goroutine that commits it, under s.wmu, and read by
// the writer after it took s.wmu itself.
type commitReq struct {
	fn     func(ctx context.Context, w *wtx) error
	done   bool
	rev    uint64
	events []store.Event
	err    error
}

// write commits fn and returns the revision after it. If fn recorded
// events, its commit takes the next revision: the events are logged in
// kds_changes (unless fn's statements did), and once committed they are
// published, before write returns.
//
// Group commit: writers queue their fn; whoever holds s.wmu commits every
// queued fn in one transaction holding the counter lock (one round of
// locking and one WAL flush for all of them), each with its own revision,
// in queue order. A fn that fails is rolled back to a savepoint and
// answered with its error; the others commit without it, so every writer
// sees the outcome it would have seen alone. fn must derive everything it
// writes from its wtx and its captured inputs.
func (s *Store) write(ctx context.Context, fn func(ctx context.Context, w *wtx) error) (uint64, error) {
	leave, err := s.enter(ctx)
	if err != nil {
		return 0, err
	}
	defer leave()
	req := &commitReq{fn: fn}
	s.qmu.Lock()
	s.queue = append(s.queue, req)
	s.qmu.Unlock()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if !req.done {
		s.qmu.Lock()
		group := s.queue
		s.queue = nil
		s.qmu.Unlock()
		s.commitGroup(ctx, group)
	}
	return req.rev, req.err
}

// commitGroup commits group (s.wmu held) and publishes each commit, in
// order. It answers every request.
func (s *Store) commitGroup(ctx context.Context, group []*commitReq) {
	// The transaction serves every writer of the group: it is not ended
	// by the leader's context.
	gctx := context.WithoutCancel(ctx)
	var (
		wentBack  bool
		resets    uint64
		attempted uint64 // the version counter the transaction tried to commit
		fnFailed  bool   // a lone fn failed: nothing was attempted
	)
	err := pgx.BeginFunc(gctx, s.pool, func(tx pgx.Tx) error {
		var rev, version uint64
		if err := tx.QueryRow(gctx, "SELECT revision, version FROM kds_counter WHERE id = 1 FOR UPDATE").Scan(&rev, &version); err != nil {
			return err
		}
		resets = s.resets.Load()
		wentBack = rev < s.published.Load()
		s.vmu.Lock()
		if assigned := s.assigned; version < assigned {
			old := s.versioner.Epoch()
			s.versioner = store.NewVersioner()
			s.assigned = version // the new epoch has assigned nothing
			s.log.Warn("the database's version counter is behind what this store assigned (restored or failed over to an older copy?): drawing a new version epoch",
				"counter", version, "assigned", assigned, "old_epoch", old, "epoch", s.versioner.Epoch())
		}
		versions := s.versioner
		s.vmu.Unlock()
		cur := rev
		for _, req := range group {
			if len(group) > 1 {
				if _, err := tx.Exec(gctx, "SAVEPOINT kds_write"); err != nil {
					return err
				}
			}
			w := &wtx{tx: tx, s: s, rev: cur, version: version, versions: versions}
			if err := req.fn(gctx, w); err != nil {
				if len(group) == 1 {
					fnFailed = true
					return err
				}
				if _, rerr := tx.Exec(gctx, "ROLLBACK TO SAVEPOINT kds_write"); rerr != nil {
					return rerr
				}
				req.done, req.err = true, s.classify(err)
				continue
			}
			req.rev = cur
			if len(w.events) == 0 {
				continue
			}
			cur++
			if !w.logged {
				if err := logEvents(gctx, tx, cur, w.events); err != nil {
					return err
				}
			}
			version = w.version
			req.rev, req.events = cur, w.events
		}
		attempted = version
		if cur == rev {
			return nil
		}
		_, err := tx.Exec(gctx, "WITH c AS (UPDATE kds_counter SET revision = $1, version = $2 WHERE id = 1) SELECT pg_notify($3, $4)",
			cur, version, Channel, strconv.FormatUint(cur, 10))
		return err
	})
	if !fnFailed {
		// Versions up to attempted may have been committed (also when the
		// commit's outcome is unknown): never render them again.
		s.vmu.Lock()
		s.assigned = max(s.assigned, attempted)
		s.vmu.Unlock()
	}
	if err != nil {
		err = s.classify(err)
		for _, req := range group {
			if !req.done {
				req.done, req.err, req.events = true, err, nil
			}
		}
		return
	}
	for _, req := range group {
		if req.done {
			continue
		}
		for i := range req.events {
			req.events[i].Revision = req.rev
		}
		s.publishOwn(ctx, req.rev, req.events, wentBack, resets)
		req.done = true
	}
}

// row is the column values of one resource (kds_resources or
// kds_changes).
type row struct {
	labels pgtype.Text
	spec   []byte
	ctime  pgtype.Int8
	mtime  pgtype.Int8
}

func encodeRow(r *resource.Resource) row {
	var out row
	if len(r.Labels) > 0 {
		b, _ := json.Marshal(r.Labels) // map[string]string always marshals
		out.labels = pgtype.Text{String: string(b), Valid: true}
	}
	out.spec = r.Spec
	out.ctime = encodeTime(r.CreationTime)
	out.mtime = encodeTime(r.ModificationTime)
	return out
}

func encodeTime(t time.Time) pgtype.Int8 {
	if t.IsZero() {
		return pgtype.Int8{}
	}
	return pgtype.Int8{Int64: t.UnixNano(), Valid: true}
}

func decodeTime(v pgtype.Int8) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.Unix(0, v.Int64).UTC()
}

// resourceColumns is what every read selects, in scanResource's order.
const resourceColumns = "type, zone, mesh, name, version, labels::text, spec, creation_time, modification_time"

// scanResource reads the resourceColumns of one row.
func scanResource(rows pgx.Rows) (*resource.Resource, error) {
	var (
		r  resource.Resource
		rw row
	)
	if err := rows.Scan(&r.Type, &r.Zone, &r.Mesh, &r.Name, &r.Version, &rw.labels, &rw.spec, &rw.ctime, &rw.mtime); err != nil {
		return nil, err
	}
	return decodeRow(&r, rw)
}

func decodeRow(r *resource.Resource, rw row) (*resource.Resource, error) {
	if rw.labels.Valid {
		if err := json.Unmarshal([]byte(rw.labels.String), &r.Labels); err != nil {
			return nil, fmt.Errorf("%s: labels: %w", r.Key(), err)
		}
	}
	if rw.spec != nil {
		r.Spec = json.RawMessage(rw.spec)
	}
	r.CreationTime = decodeTime(rw.ctime)
	r.ModificationTime = decodeTime(rw.mtime)
	return r, nil
}

// logEvents inserts one kds_changes row per event of the commit rev.
func logEvents(ctx context.Context, tx pgx.Tx, rev uint64, events []store.Event) error {
	n := len(events)
	var (
		kinds, origins                        = make([]int16, n), make([]int16, n)
		types, zones, meshes, names, versions = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		labels                                = make([]pgtype.Text, n)
		specs                                 = make([][]byte, n)
		ctimes, mtimes                        = make([]pgtype.Int8, n), make([]pgtype.Int8, n)
	)
	for i, ev := range events {
		r := ev.Resource
		rw := encodeRow(r)
		kinds[i], origins[i] = int16(ev.Kind), int16(ev.Origin)
		types[i], zones[i], meshes[i], names[i], versions[i] = r.Type, r.Zone, r.Mesh, r.Name, r.Version
		labels[i], specs[i], ctimes[i], mtimes[i] = rw.labels, rw.spec, rw.ctime, rw.mtime
	}
	_, err := tx.Exec(ctx, `INSERT INTO kds_changes (revision, kind, origin, type, zone, mesh, name, version, labels, spec, creation_time, modification_time)
		SELECT $1, k, o, t, z, m, n, v, l::jsonb, s, c, mt
		FROM unnest($2::int2[], $3::int2[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bytea[], $11::int8[], $12::int8[])
			AS e(k, o, t, z, m, n, v, l, s, c, mt)`,
		rev, kinds, origins, types, zones, meshes, names, versions, labels, specs, ctimes, mtimes)
	return err
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key resource.Key) (*resource.Resource, error) {
	leave, err := s.enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	defer leave()
	rows, err := s.pool.Query(ctx, "SELECT "+resourceColumns+" FROM kds_resources WHERE type = $1 AND zone = $2 AND mesh = $3 AND name = $4",
		key.Type, key.Zone, key.Mesh, key.Name)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, s.classify(err))
	}
	list, err := collect(rows)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, s.classify(err))
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("get %s: %w", key, store.ErrNotFound)
	}
	return list[0], nil
}

func collect(rows pgx.Rows) ([]*resource.Resource, error) {
	defer rows.Close()
	var out []*resource.Resource
	for rows.Next() {
		r, err := scanResource(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// where renders f (except its labels, unless withLabels) as a WHERE clause
// with its arguments.
func where(f store.Filter, withLabels bool) (string, []any) {
	var (
		conds []string
		args  []any
	)
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, fmt.Sprintf(cond, len(args)))
	}
	if f.Type != "" {
		add("type = $%d", f.Type)
	}
	switch {
	case f.Zone != "":
		add("zone = $%d", f.Zone)
	case f.LocalOnly:
		add("zone = $%d", "")
	}
	if f.Mesh != "" {
		add("mesh = $%d", f.Mesh)
	}
	if withLabels && len(f.Labels) > 0 {
		b, _ := json.Marshal(f.Labels)
		add("labels @> $%d::jsonb", string(b))
	}
	if len(conds) == 0 {
		return "", nil
	}
	clause := " WHERE " + conds[0]
	for _, c := range conds[1:] {
		clause += " AND " + c
	}
	return clause, args
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, f store.Filter) ([]*resource.Resource, error) {
	out, _, err := s.Snapshot(ctx, f)
	return out, err
}

// Snapshot implements store.Store: the revision and the resources are read
// in one REPEATABLE READ transaction, so the result holds exactly the
// commits up to the revision.
func (s *Store) Snapshot(ctx context.Context, f store.Filter) ([]*resource.Resource, uint64, error) {
	if err := f.Validate(); err != nil {
		return nil, 0, fmt.Errorf("list: %w", err)
	}
	leave, err := s.enter(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("list: %w", err)
	}
	defer leave()
	var (
		out []*resource.Resource
		rev uint64
	)
	err = pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "SELECT revision FROM kds_counter WHERE id = 1").Scan(&rev); err != nil {
			return err
		}
		clause, args := where(f, true)
		rows, err := tx.Query(ctx, "SELECT "+resourceColumns+" FROM kds_resources"+clause+" ORDER BY type, zone, mesh, name", args...)
		if err != nil {
			return err
		}
		out, err = collect(rows)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list: %w", s.classify(err))
	}
	return out, rev, nil
}

// Versions implements store.Store.
func (s *Store) Versions(ctx context.Context, f store.Filter) ([]store.KeyVersion, error) {
	if err := store.CheckVersionsFilter(f); err != nil {
		return nil, fmt.Errorf("versions: %w", err)
	}
	leave, err := s.enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("versions: %w", err)
	}
	defer leave()
	clause, args := where(f, false)
	rows, err := s.pool.Query(ctx, "SELECT type, zone, mesh, name, version FROM kds_resources"+clause+" ORDER BY type, zone, mesh, name", args...)
	if err != nil {
		return nil, fmt.Errorf("versions: %w", s.classify(err))
	}
	defer rows.Close()
	var out []store.KeyVersion
	for rows.Next() {
		var kv store.KeyVersion
		if err := rows.Scan(&kv.Key.Type, &kv.Key.Zone, &kv.Key.Mesh, &kv.Key.Name, &kv.Version); err != nil {
			return nil, fmt.Errorf("versions: %w", err)
		}
		out = append(out, kv)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("versions: %w", s.classify(err))
	}
	return out, nil
}

const upsertColumns = "type, zone, mesh, name, version, labels, spec, creation_time, modification_time, revision"

// Create implements store.Store.
func (s *Store) Create(ctx context.Context, r *resource.Resource) (*resource.Resource, error) {
	if r == nil {
		return nil, fmt.Errorf("create: nil resource: %w", store.ErrInvalid)
	}
	key := r.Key()
	if err := store.CheckKey(key); err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	c := r.Clone()
	_, err := s.write(ctx, func(ctx context.Context, w *wtx) error {
		now := s.normTime()
		c.CreationTime, c.ModificationTime = now, now
		c.Version = w.nextVersion()
		rw := encodeRow(c)
		var created int
		err := w.tx.QueryRow(ctx, `WITH ins AS (
				INSERT INTO kds_resources (`+upsertColumns+`) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10)
				ON CONFLICT DO NOTHING RETURNING type, zone
			), counted AS (
				INSERT INTO kds_counts (type, zone, n) SELECT type, zone, 1 FROM ins
				ON CONFLICT (type, zone) DO UPDATE SET n = kds_counts.n + 1
			)
			SELECT count(*) FROM ins`,
			c.Type, c.Zone, c.Mesh, c.Name, c.Version, rw.labels, rw.spec, rw.ctime, rw.mtime, w.rev+1).Scan(&created)
		if err != nil {
			return err
		}
		if created == 0 {
			return store.ErrAlreadyExists
		}
		w.events = append(w.events, store.Event{Kind: store.EventPut, Origin: store.OriginLocal, Resource: c})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", key, err)
	}
	return c.Clone(), nil
}

// Update implements store.Store.
func (s *Store) Update(ctx context.Context, r *resource.Resource) (*resource.Resource, error) {
	if r == nil {
		return nil, fmt.Errorf("update: nil resource: %w", store.ErrInvalid)
	}
	key := r.Key()
	if err := store.CheckKey(key); err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	c := r.Clone()
	expected := r.Version
	_, err := s.write(ctx, func(ctx context.Context, w *wtx) error {
		var (
			stored string
			ctime  pgtype.Int8
		)
		err := w.tx.QueryRow(ctx, "SELECT version, creation_time FROM kds_resources WHERE type = $1 AND zone = $2 AND mesh = $3 AND name = $4",
			key.Type, key.Zone, key.Mesh, key.Name).Scan(&stored, &ctime)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if expected != "" && expected != stored {
			return store.ConflictError(key, expected, stored)
		}
		c.CreationTime = decodeTime(ctime)
		c.ModificationTime = s.normTime()
		c.Version = w.nextVersion()
		rw := encodeRow(c)
		if _, err := w.tx.Exec(ctx, "UPDATE kds_resources SET version = $5, labels = $6::jsonb, spec = $7, modification_time = $8, revision = $9 WHERE type = $1 AND zone = $2 AND mesh = $3 AND name = $4",
			key.Type, key.Zone, key.Mesh, key.Name, c.Version, rw.labels, rw.spec, rw.mtime, w.rev+1); err != nil {
			return err
		}
		w.events = append(w.events, store.Event{Kind: store.EventPut, Origin: store.OriginLocal, Resource: c})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("update %s: %w", key, err)
	}
	return c.Clone(), nil
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, key resource.Key, version string) error {
	if err := store.CheckKey(key); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	_, err := s.write(ctx, func(ctx context.Context, w *wtx) error {
		rows, err := w.tx.Query(ctx, `WITH del AS (
				DELETE FROM kds_resources WHERE type = $1 AND zone = $2 AND mesh = $3 AND name = $4 RETURNING *
			), counted AS (
				UPDATE kds_counts c SET n = c.n - 1 FROM del WHERE c.type = del.type AND c.zone = del.zone
			)
			SELECT `+resourceColumns+` FROM del`,
			key.Type, key.Zone, key.Mesh, key.Name)
		if err != nil {
			return err
		}
		prev, err := collect(rows)
		if err != nil {
			return err
		}
		if len(prev) == 0 {
			return store.ErrNotFound
		}
		if version != "" && version != prev[0].Version {
			return store.ConflictError(key, version, prev[0].Version) // rolls the delete back
		}
		w.events = append(w.events, store.Event{Kind: store.EventDelete, Origin: store.OriginLocal, Resource: prev[0]})
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// Apply implements store.Store. The puts are one INSERT … ON CONFLICT DO
// UPDATE over arrays that skips rows identical to the stored ones, the
// deletes one DELETE over arrays; both return what they changed.
func (s *Store) Apply(ctx context.Context, b store.Batch) (uint64, error) {
	if err := store.CheckBatch(b); err != nil {
		return 0, fmt.Errorf("apply: %w", err)
	}
	puts := make([]*resource.Resource, len(b.Put))
	for i, r := range b.Put {
		c := *r
		c.Labels = maps.Clone(r.Labels)
		if r.Spec != nil {
			c.Spec = append(json.RawMessage(nil), r.Spec...)
		}
		puts[i] = &c
	}
	slices.SortFunc(puts, func(a, b *resource.Resource) int { return store.CompareKeys(a.Key(), b.Key()) })
	dels := slices.Clone(b.Delete)
	slices.SortFunc(dels, store.CompareKeys)

	if len(puts) == 0 && len(dels) == 0 {
		leave, err := s.enter(ctx)
		if err != nil {
			return 0, fmt.Errorf("apply: %w", err)
		}
		defer leave()
		var rev, gen uint64
		err = s.pool.QueryRow(ctx, "SELECT revision, coalesce((SELECT generation FROM kds_sessions WHERE zone = $1), 0) FROM kds_counter WHERE id = 1",
			fenceZone(b.Fence)).Scan(&rev, &gen)
		if err != nil {
			return 0, fmt.Errorf("apply: %w", s.classify(err))
		}
		if f := b.Fence; f != nil && gen != f.Generation {
			// Nothing to write, but a fenced-off session learns it now.
			return 0, fmt.Errorf("apply: %w", store.FencedError(f.Zone, f.Generation, gen))
		}
		s.catchUp(ctx, rev)
		return max(rev, s.published.Load()), nil
	}

	rev, err := s.write(ctx, func(ctx context.Context, w *wtx) error {
		if f := b.Fence; f != nil {
			var gen uint64
			err := w.tx.QueryRow(ctx, "SELECT generation FROM kds_sessions WHERE zone = $1 FOR SHARE", f.Zone).Scan(&gen)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			if gen != f.Generation {
				return store.FencedError(f.Zone, f.Generation, gen)
			}
		}
		var before map[typeZone]int
		if b.Limit > 0 {
			var err error
			if before, err = countZones(ctx, w.tx, puts); err != nil {
				return err
			}
		}
		added, err := w.upsert(ctx, puts)
		if err != nil {
			return err
		}
		removed, err := w.deleteKeys(ctx, dels)
		if err != nil {
			return err
		}
		w.logged = true
		for _, tz := range slices.SortedFunc(maps.Keys(before), typeZone.Compare) {
			if n := before[tz] + added[tz] - removed[tz]; n > b.Limit && n > before[tz] {
				return store.LimitError(tz.typ, tz.zone, n, b.Limit)
			}
		}
		return adjustCounts(ctx, w.tx, added, removed)
	})
	if err != nil {
		return 0, fmt.Errorf("apply: %w", err)
	}
	return rev, nil
}

func fenceZone(f *store.Fence) string {
	if f == nil {
		return ""
	}
	return f.Zone
}

type typeZone struct{ typ, zone string }

func (a typeZone) Compare(b typeZone) int {
	if a.typ != b.typ {
		if a.typ < b.typ {
			return -1
		}
		return 1
	}
	switch {
	case a.zone < b.zone:
		return -1
	case a.zone > b.zone:
		return 1
	}
	return 0
}

// adjustCounts adds added and subtracts removed from kds_counts.
func adjustCounts(ctx context.Context, tx pgx.Tx, added, removed map[typeZone]int) error {
	delta := maps.Clone(added)
	for tz, n := range removed {
		delta[tz] -= n
	}
	var (
		types, zones []string
		ns           []int64
	)
	for tz, n := range delta {
		if n != 0 {
			types, zones, ns = append(types, tz.typ), append(zones, tz.zone), append(ns, int64(n))
		}
	}
	if len(ns) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `INSERT INTO kds_counts AS c (type, zone, n)
		SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])
		ON CONFLICT (type, zone) DO UPDATE SET n = c.n + EXCLUDED.n`, types, zones, ns)
	return err
}

// countZones reads how many resources every (type, zone) of puts holds.
func countZones(ctx context.Context, tx pgx.Tx, puts []*resource.Resource) (map[typeZone]int, error) {
	out := map[typeZone]int{}
	var types, zones []string
	for _, r := range puts {
		tz := typeZone{r.Type, r.Zone}
		if _, ok := out[tz]; !ok {
			out[tz] = 0
			types, zones = append(types, r.Type), append(zones, r.Zone)
		}
	}
	rows, err := tx.Query(ctx, `SELECT c.type, c.zone, c.n FROM kds_counts c
		JOIN unnest($1::text[], $2::text[]) AS k(type, zone) ON c.type = k.type AND c.zone = k.zone`, types, zones)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			tz typeZone
			n  int
		)
		if err := rows.Scan(&tz.typ, &tz.zone, &n); err != nil {
			return nil, err
		}
		out[tz] = n
	}
	return out, rows.Err()
}

// upsert writes the puts that differ from what is stored and records their
// events (puts sorted by key). It returns how many new keys each (type,
// zone) got.
func (w *wtx) upsert(ctx context.Context, puts []*resource.Resource) (map[typeZone]int, error) {
	added := map[typeZone]int{}
	if len(puts) == 0 {
		return added, nil
	}
	n := len(puts)
	var (
		types, zones, meshes, names, versions = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		labels                                = make([]pgtype.Text, n)
		specs                                 = make([][]byte, n)
		ctimes, mtimes                        = make([]pgtype.Int8, n), make([]pgtype.Int8, n)
	)
	for i, r := range puts {
		rw := encodeRow(r)
		types[i], zones[i], meshes[i], names[i], versions[i] = r.Type, r.Zone, r.Mesh, r.Name, r.Version
		labels[i], specs[i], ctimes[i], mtimes[i] = rw.labels, rw.spec, rw.ctime, rw.mtime
	}
	// One statement writes the changed puts and logs them.
	rows, err := w.tx.Query(ctx, `WITH up AS (
		INSERT INTO kds_resources AS r (`+upsertColumns+`)
		SELECT t, z, m, n, v, l::jsonb, s, c, mt, $10
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::int8[], $9::int8[])
			AS p(t, z, m, n, v, l, s, c, mt)
		ON CONFLICT (type, zone, mesh, name) DO UPDATE SET
			version = EXCLUDED.version, labels = EXCLUDED.labels, spec = EXCLUDED.spec,
			creation_time = EXCLUDED.creation_time, modification_time = EXCLUDED.modification_time,
			revision = EXCLUDED.revision
		WHERE (r.version, r.labels, r.spec, r.creation_time, r.modification_time)
			IS DISTINCT FROM (EXCLUDED.version, EXCLUDED.labels, EXCLUDED.spec, EXCLUDED.creation_time, EXCLUDED.modification_time)
		RETURNING r.type, r.zone, r.mesh, r.name, r.version, r.labels, r.spec, r.creation_time, r.modification_time, (r.xmax = 0) AS inserted
	), logged AS (
		INSERT INTO kds_changes (revision, kind, origin, type, zone, mesh, name, version, labels, spec, creation_time, modification_time)
		SELECT $10, 1, 2, type, zone, mesh, name, version, labels, spec, creation_time, modification_time FROM up
	)
	SELECT type, zone, mesh, name, inserted FROM up`,
		types, zones, meshes, names, versions, labels, specs, ctimes, mtimes, w.rev+1)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	changed := map[resource.Key]bool{}
	for rows.Next() {
		var (
			k        resource.Key
			inserted bool
		)
		if err := rows.Scan(&k.Type, &k.Zone, &k.Mesh, &k.Name, &inserted); err != nil {
			return nil, err
		}
		changed[k] = true
		if inserted {
			added[typeZone{k.Type, k.Zone}]++
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, r := range puts {
		if changed[r.Key()] {
			w.events = append(w.events, store.Event{Kind: store.EventPut, Origin: store.OriginSync, Resource: r})
		}
	}
	return added, nil
}

// deleteKeys removes the stored keys of dels (sorted) and records their
// events. It returns how many keys each (type, zone) lost.
func (w *wtx) deleteKeys(ctx context.Context, dels []resource.Key) (map[typeZone]int, error) {
	removed := map[typeZone]int{}
	if len(dels) == 0 {
		return removed, nil
	}
	n := len(dels)
	types, zones, meshes, names := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, k := range dels {
		types[i], zones[i], meshes[i], names[i] = k.Type, k.Zone, k.Mesh, k.Name
	}
	// One statement deletes and logs.
	rows, err := w.tx.Query(ctx, `WITH del AS (
		DELETE FROM kds_resources r
		USING unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS k(t, z, m, n)
		WHERE r.type = k.t AND r.zone = k.z AND r.mesh = k.m AND r.name = k.n
		RETURNING r.type, r.zone, r.mesh, r.name, r.version, r.labels, r.spec, r.creation_time, r.modification_time
	), logged AS (
		INSERT INTO kds_changes (revision, kind, origin, type, zone, mesh, name, version, labels, spec, creation_time, modification_time)
		SELECT $5, 2, 2, type, zone, mesh, name, version, labels, spec, creation_time, modification_time FROM del
	)
	SELECT type, zone, mesh, name, version, labels::text, spec, creation_time, modification_time FROM del`,
		types, zones, meshes, names, w.rev+1)
	if err != nil {
		return nil, err
	}
	prev, err := collect(rows)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(prev, func(a, b *resource.Resource) int { return store.CompareKeys(a.Key(), b.Key()) })
	for _, r := range prev {
		removed[typeZone{r.Type, r.Zone}]++
		w.events = append(w.events, store.Event{Kind: store.EventDelete, Origin: store.OriginSync, Resource: r})
	}
	return removed, nil
}

// ClaimSession implements store.Store. The generation lives in
// kds_sessions and is incremented by one statement; a fenced Apply holds
// the row FOR SHARE, so a claim waits for a running Apply of the zone to
// commit. It shares the database's durability: a database restored from an
// older backup goes back to the generations in the backup, while the
// sessions of the replicas that were running are still live; see
// docs/decisions/0017-postgresql-store.md.
func (s *Store) ClaimSession(ctx context.Context, zone string) (uint64, error) {
	return s.ClaimLease(ctx, zone, "")
}

// Watch implements store.Store.
func (s *Store) Watch(ctx context.Context) (*store.Watch, error) {
	s.life.RLock()
	closed := s.closed
	s.life.RUnlock()
	if closed {
		return nil, fmt.Errorf("watch: %w", store.ErrClosed)
	}
	return s.feed.Watch(ctx)
}

// Revision implements store.Store: the revision of the latest commit this
// Store has published to its watchers (its own writes, and other
// processes' commits as the reader catches up).
func (s *Store) Revision() uint64 { return s.published.Load() }

// Close implements store.Store. It waits for running operations, stops the
// reader and the LISTEN connection, ends every watch and closes the pool.
func (s *Store) Close() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.stop(store.ErrClosed)
	s.workers.Wait()
	s.feed.Close()
	s.pool.Close()
	s.log.Info("store closed", "revision", s.published.Load())
	return nil
}
