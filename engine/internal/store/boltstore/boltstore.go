// Package boltstore is the durable store.Store and the engine's default: one
// bbolt file, FileName, inside the data dir.
//
// # Layout
//
// The file holds three top-level buckets:
//
//   - "meta": "layout" (the layout version, currently "1"), "revision" and
//     "version" (8-byte big-endian counters: the revision of the latest
//     commit and the counter of the last version assigned by a local
//     write). Both counters are written in the same transaction as the
//     resources they account for, so after a restart they continue where
//     the last commit left them.
//   - "sessions": one 8-byte big-endian session generation per zone name,
//     the last one ClaimSession returned for it. Written by ClaimSession in
//     its own commit and read by fenced Applies inside theirs. (Files
//     written before this bucket existed get it, empty, at open; older
//     engines ignore it.)
//   - "types": one nested bucket per resource type, named by the type (a
//     bucket is dropped when its last resource is deleted). Inside it each
//     resource is stored under Zone NUL Mesh NUL Name (NUL never occurs in a
//     key part; store.CheckKey refuses it), so a cursor walks a type in
//     (Zone, Mesh, Name) order and one zone's resources are one key range:
//     List with a Type and a Zone (or LocalOnly) reads only that range.
//
// # Versions
//
// A local write's version is "<epoch>-<counter>" (store.Versioner): the
// counter is the persisted "version" counter, the epoch is drawn at every
// Open and never stored. A file restored from an older copy resumes the
// counter from the copy, but under a new epoch, so no version written after
// the restore equals one written after the copy was taken; a new file (a
// lost data dir) likewise.
//
// # Limits and fences
//
// Apply checks Batch.Fence against "sessions" and Batch.Limit against a
// count of resources per (type, zone) inside the commit. The counts are
// kept in memory under the commit mutex: a (type, zone) is counted with a
// cursor over its key range the first time a limited Apply needs it, and
// every commit after that (local writes and deletes included) keeps the
// count current, so a limited Apply costs O(its own size), not O(what the
// zone holds).
//
// A value is the resource's wire envelope, kds.v1.Resource, in protobuf
// wire format with labels sorted by key, written and read with protowire
// instead of proto reflection. Any protobuf tool can read it; encoding and
// decoding cost about half of going through the generated message and a
// quarter of JSON (BenchmarkCodec), and the JSON spec is carried as opaque
// bytes, never reparsed.
//
// New files use PageSize (16 KiB) pages, and the first
// DefaultInitialMmapSize bytes of address space are mapped at open, so that
// large commits do not remap. There is no in-memory copy of the data: List
// of 100k resources costs about what the in-memory store's List costs (both
// are dominated by building the caller's copies; see docs/benchmarks.md).
//
// # Writes and the change feed
//
// Writes are group-committed: a writer queues its change and waits for the
// commit mutex; whoever holds it commits every queued change in one bbolt
// read-write transaction and one fsync (unless WithNoSync), each change with
// its own revision, in queue order. A change that fails (a conflict, say)
// is answered with its error and the rest are committed without it, so
// every writer sees the outcome it would have seen alone. With 50 writers
// this multiplies commit throughput by about 9 (BenchmarkConcurrentApply);
// a lone writer pays nothing. Events are published after the commit and
// before the mutex is released, so watchers see commits in revision order,
// and a Snapshot (a read-only transaction that reads the revision from
// "meta" with the data) never misses a published commit. Reads run
// concurrently with each other and with a commit. Apply validates, copies,
// encodes and sorts its batch before queueing and writes it in key order.
// When no stored key of a type lies within the key range of the batch's
// puts of that type (a first sync appends; a zone's sync into a global that
// holds other zones fills the gap between their ranges), the puts are
// known to be creates without a lookup each, and the pages they make are
// packed 90% full instead of bbolt's half-full split: 100k resources
// written in front of stored keys took 1.7 times the bytes (2382 against
// 1399 per resource) and a third more CPU (BenchmarkSyncWrites).
//
// The file is locked while open: a second process (or a second Open in this
// process) waits for the lock timeout and then fails with an error wrapping
// ErrLocked that names the file.
package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// FileName is the name of the database file inside the data dir.
const FileName = "kds.db"

// ErrLocked: another process (or another open Store) holds the data dir.
var ErrLocked = errors.New("data dir is in use by another kds-engine")

const layoutVersion = "1"

var (
	bucketMeta     = []byte("meta")
	bucketTypes    = []byte("types")
	bucketSessions = []byte("sessions")
	keyLayout      = []byte("layout")
	keyRevision    = []byte("revision")
	keyVersion     = []byte("version")
)

var _ store.Store = (*Store)(nil)

// Option configures Open.
type Option func(*config)

type config struct {
	log         hclog.Logger
	lockTimeout time.Duration
	noSync      bool
	initialMmap int
	now         func() time.Time
}

// WithLogger sets the logger (default: discard). The store logs under the
// sub-logger "store".
func WithLogger(l hclog.Logger) Option {
	return func(c *config) { c.log = l }
}

// WithLockTimeout sets how long Open waits for the file lock before failing
// with ErrLocked (default 1s; must be positive).
func WithLockTimeout(d time.Duration) Option {
	return func(c *config) { c.lockTimeout = d }
}

// WithNoSync skips the fsync after each commit: faster, but a machine crash
// may lose or corrupt recent commits. For tests and benchmarks only.
func WithNoSync(noSync bool) Option {
	return func(c *config) { c.noSync = noSync }
}

// DefaultInitialMmapSize is the address space mapped at open (1 GiB). It
// costs no memory or disk; a database that outgrows it is remapped.
const DefaultInitialMmapSize = 1 << 30

// WithInitialMmapSize sets the address space mapped at open (default
// DefaultInitialMmapSize). Commits that grow the file past it remap, which
// costs a copy of every node the commit touched.
func WithInitialMmapSize(bytes int) Option {
	return func(c *config) { c.initialMmap = bytes }
}

// WithClock sets the source of CreationTime and ModificationTime (default
// time.Now).
func WithClock(now func() time.Time) Option {
	return func(c *config) { c.now = now }
}

// Store is the bbolt-backed store.Store. Safe for concurrent use.
type Store struct {
	db        *bolt.DB
	log       hclog.Logger
	now       func() time.Time
	feed      *store.Feed
	versioner *store.Versioner

	// life is held for reading by every operation and for writing by Close.
	life   sync.RWMutex
	closed bool

	// noGroupCommit commits each write alone (benchmarks compare).
	noGroupCommit bool
	// qmu guards queue, the writes waiting for the next group commit.
	qmu   sync.Mutex
	queue []*commitReq
	// wmu is held by the goroutine committing a group; version and counts
	// are guarded by it.
	wmu     sync.Mutex
	version uint64
	// counts holds, for the (type, zone) pairs counted so far, how many
	// resources the last commit left there (see "Limits and fences").
	counts   map[typeZone]int
	revision atomic.Uint64
}

type typeZone struct{ typ, zone string }

// Open opens (creating if needed) the store in dir, creating dir if missing.
// If the file is locked by another holder for longer than the lock timeout
// it fails with an error wrapping ErrLocked that names the file.
func Open(dir string, opts ...Option) (*Store, error) {
	cfg := config{log: hclog.NewNullLogger(), lockTimeout: time.Second, initialMmap: DefaultInitialMmapSize, now: time.Now}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.lockTimeout <= 0 {
		return nil, fmt.Errorf("open store: lock timeout must be positive, got %s", cfg.lockTimeout)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, boltOptions(cfg))
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open store: %w (lock held on %s)", ErrLocked, path)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{
		db:        db,
		log:       cfg.log.Named("store"),
		now:       cfg.now,
		feed:      store.NewFeed(),
		versioner: store.NewVersioner(),
		counts:    make(map[typeZone]int),
	}
	var rev uint64
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketTypes); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketSessions); err != nil {
			return err
		}
		switch l := meta.Get(keyLayout); {
		case l == nil:
			if err := meta.Put(keyLayout, []byte(layoutVersion)); err != nil {
				return err
			}
		case string(l) != layoutVersion:
			return fmt.Errorf("unsupported layout version %q (this engine reads %q)", l, layoutVersion)
		}
		rev = getUint(meta, keyRevision)
		s.version = getUint(meta, keyVersion)
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s.revision.Store(rev)
	s.log.Info("store opened", "path", path, "revision", rev, "version_counter", s.version, "version_epoch", s.versioner.Epoch(), "nosync", cfg.noSync)
	return s, nil
}

// PageSize is the page size of new database files. Measured with 1 KiB
// resources, 16 KiB pages make bulk commits about twice as fast as the 4 KiB
// default (fewer, fuller pages to split and write); an existing file keeps
// the page size it was created with.
const PageSize = 16 << 10

func boltOptions(cfg config) *bolt.Options {
	return &bolt.Options{
		Timeout: cfg.lockTimeout,
		NoSync:  cfg.noSync,
		// The freelist is rebuilt by a scan at open instead of being
		// written by every commit; the hashmap freelist stays fast when
		// the file is large and fragmented.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		PageSize:       PageSize,
		// Address space only: reserving it up front spares large commits
		// the remaps (each copying every dirty node) of a growing file, and
		// spares readers from being blocked by them.
		InitialMmapSize: cfg.initialMmap,
	}
}

// Path returns the database file's path.
func (s *Store) Path() string { return s.db.Path() }

func getUint(b *bolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putUint(b *bolt.Bucket, k []byte, n uint64) error {
	return b.Put(k, binary.BigEndian.AppendUint64(nil, n))
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

// txn is the state of one commit.
type txn struct {
	tx      *bolt.Tx
	s       *Store
	g       *groupState
	version uint64
	events  []store.Event
}

// groupState is what the commits of one group transaction share.
type groupState struct {
	// counts overlays s.counts with the counts as of the transaction so
	// far; merged into s.counts once the transaction committed.
	counts map[typeZone]int
}

func (t *txn) nextVersion() string {
	t.version++
	return t.s.versioner.Version(t.version)
}

// count returns how many resources of (type, zone) tz the transaction
// holds, counting them with a cursor if no commit has counted them yet.
func (t *txn) count(tz typeZone) int {
	if n, ok := t.g.counts[tz]; ok {
		return n
	}
	n, ok := t.s.counts[tz]
	if !ok {
		if b := t.tx.Bucket(bucketTypes).Bucket([]byte(tz.typ)); b != nil {
			prefix := zonePrefix(tz.zone)
			c := b.Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				n++
			}
		}
	}
	if t.g.counts == nil {
		t.g.counts = make(map[typeZone]int)
	}
	t.g.counts[tz] = n
	return n
}

// adjust records that the transaction added d resources to tz (removed,
// if negative). A (type, zone) not counted yet is left alone: when it is
// counted, the cursor sees the change.
func (t *txn) adjust(tz typeZone, d int) {
	if n, ok := t.g.counts[tz]; ok {
		t.g.counts[tz] = n + d
		return
	}
	if n, ok := t.s.counts[tz]; ok {
		if t.g.counts == nil {
			t.g.counts = make(map[typeZone]int)
		}
		t.g.counts[tz] = n + d
	}
}

// generation returns zone's current session generation (0: never claimed).
func (t *txn) generation(zone string) uint64 {
	return getUint(t.tx.Bucket(bucketSessions), []byte(zone))
}

func (t *txn) typeBucket(typ string, create bool) (*bolt.Bucket, error) {
	types := t.tx.Bucket(bucketTypes)
	if !create {
		return types.Bucket([]byte(typ)), nil
	}
	return types.CreateBucketIfNotExists([]byte(typ))
}

// commitReq is one write waiting to be committed. Its fields after fn are
// written by the goroutine that commits it, under s.wmu, and read by the
// writer after it took s.wmu itself.
type commitReq struct {
	fn   func(t *txn) error
	done bool
	rev  uint64
	err  error
	// queued is when the write was queued (only while SetCommitTrace is on).
	queued time.Time
}

// commit runs fn in a read-write transaction and returns the store's
// revision after it. If fn recorded events, they get the next revision, the
// revision and version counters are persisted in the same transaction and,
// once it committed, the events are published.
//
// Group commit: writers queue their fn; whoever holds s.wmu commits every
// queued fn in one transaction (one fsync), in queue order, each with its
// own revision. fn may therefore run more than once and must derive
// everything it writes from its txn and its captured inputs.
func (s *Store) commit(ctx context.Context, fn func(t *txn) error) (uint64, error) {
	leave, err := s.enter(ctx)
	if err != nil {
		return 0, err
	}
	defer leave()
	req := &commitReq{fn: fn}
	if commitTracer.Load() != nil {
		req.queued = time.Now()
	}
	if !s.noGroupCommit {
		s.qmu.Lock()
		s.queue = append(s.queue, req)
		s.qmu.Unlock()
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if !req.done && !s.noGroupCommit {
		s.qmu.Lock()
		group := s.queue
		s.queue = nil
		s.qmu.Unlock()
		for len(group) > 0 {
			group = s.commitGroup(group)
		}
	}
	// Not done yet only without group commit, or if the goroutine that had
	// taken req from the queue panicked (a bug) before answering it.
	for group := []*commitReq{req}; !req.done && len(group) > 0; {
		group = s.commitGroup(group)
	}
	return req.rev, req.err
}

// errAbandon rolls back a group transaction in which one fn failed.
var errAbandon = errors.New("abandon group")

// commitGroup commits group in one transaction; s.wmu held. If one fn
// fails, the transaction is rolled back, that request finishes with its
// error, and the others are returned to be committed again: rerunning the
// requests before it reproduces the state it failed on, so the outcome is
// the same as committing them one by one in queue order.
func (s *Store) commitGroup(group []*commitReq) (retry []*commitReq) {
	type outcome struct {
		req    *commitReq
		rev    uint64
		events []store.Event
	}
	var (
		outs     []outcome
		failed   = -1
		failErr  error
		rev      = s.revision.Load()
		version  = s.version
		firstRev = rev
		g        groupState
	)
	tf := commitTracer.Load()
	var began time.Time
	var write0 time.Duration
	if tf != nil {
		began = time.Now()
		st := s.db.Stats()
		write0 = st.TxStats.GetWriteTime()
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for i, req := range group {
			t := &txn{tx: tx, s: s, g: &g, version: version}
			if err := req.fn(t); err != nil {
				failed, failErr = i, err
				return errAbandon
			}
			version = t.version
			if len(t.events) > 0 {
				rev++
				for j := range t.events {
					t.events[j].Revision = rev
				}
			}
			outs = append(outs, outcome{req: req, rev: rev, events: t.events})
		}
		if rev == firstRev {
			return nil
		}
		meta := tx.Bucket(bucketMeta)
		if err := putUint(meta, keyRevision, rev); err != nil {
			return err
		}
		return putUint(meta, keyVersion, version)
	})
	if failed >= 0 {
		group[failed].done, group[failed].err = true, failErr
		return append(group[:failed:failed], group[failed+1:]...)
	}
	if err != nil {
		for _, req := range group {
			req.done, req.err = true, err
		}
		return nil
	}
	s.version = version
	for tz, n := range g.counts {
		if n > 0 {
			s.counts[tz] = n
		} else {
			delete(s.counts, tz)
		}
	}
	s.revision.Store(rev)
	for _, o := range outs {
		s.feed.Publish(o.events)
		o.req.done, o.req.rev = true, o.rev
	}
	if tf != nil {
		st := s.db.Stats()
		ct := CommitTrace{Began: began, Done: time.Now(), Group: len(group), Write: st.TxStats.GetWriteTime() - write0}
		for _, req := range group {
			ct.Queued = req.queued
			(*tf)(ct)
		}
	}
	return nil
}

// CommitTrace is how one write went through a group commit.
type CommitTrace struct {
	// Queued: the write was queued; Began: the transaction that holds it
	// began; Done: it committed (durably, unless WithNoSync) and its
	// events were published.
	Queued, Began, Done time.Time
	// Group is how many writes the transaction held.
	Group int
	// Write is bbolt's time writing the transaction's pages and meta page
	// to disk, each followed by its fdatasync.
	Write time.Duration
}

var commitTracer atomic.Pointer[func(CommitTrace)]

// SetCommitTrace makes every Store of this process report each committed
// write to f (nil stops it). It is instrumentation for kds-bench's latency
// breakdown.
func SetCommitTrace(f func(CommitTrace)) {
	if f == nil {
		commitTracer.Store(nil)
		return
	}
	commitTracer.Store(&f)
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key resource.Key) (*resource.Resource, error) {
	leave, err := s.enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	defer leave()
	var r *resource.Resource
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTypes).Bucket([]byte(key.Type))
		if b == nil {
			return store.ErrNotFound
		}
		v := b.Get(itemKey(key))
		if v == nil {
			return store.ErrNotFound
		}
		r, err = decode(v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return r, nil
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, f store.Filter) ([]*resource.Resource, error) {
	out, _, err := s.Snapshot(ctx, f)
	return out, err
}

// Snapshot implements store.Store.
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
	err = s.db.View(func(tx *bolt.Tx) error {
		rev = getUint(tx.Bucket(bucketMeta), keyRevision)
		types := tx.Bucket(bucketTypes)
		if f.Type != "" {
			b := types.Bucket([]byte(f.Type))
			if b == nil {
				return nil
			}
			out, err = scan(ctx, b, f, out)
			return err
		}
		return types.ForEachBucket(func(name []byte) error {
			out, err = scan(ctx, types.Bucket(name), f, out)
			return err
		})
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list: %w", err)
	}
	return out, rev, nil
}

// scan appends the resources of one type bucket that match f.
func scan(ctx context.Context, b *bolt.Bucket, f store.Filter, out []*resource.Resource) ([]*resource.Resource, error) {
	err := eachItem(ctx, b, f, func(_, v []byte) error {
		r, err := decode(v)
		if err != nil {
			return err
		}
		if len(f.Labels) == 0 || f.Matches(r) {
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// eachItem calls fn with the key and value of every item of one type
// bucket whose key f can match (labels are not looked at), in key order,
// checking ctx every 4096 items.
func eachItem(ctx context.Context, b *bolt.Bucket, f store.Filter, fn func(k, v []byte) error) error {
	prefix := filterPrefix(f)
	mesh := []byte(f.Mesh)
	c := b.Cursor()
	n := 0
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if n++; n%4096 == 0 {
			if err := context.Cause(ctx); err != nil {
				return err
			}
		}
		if f.Mesh != "" && !bytes.Equal(meshOf(k), mesh) {
			continue
		}
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

// filterPrefix is the item-key prefix of the resources f can match.
func filterPrefix(f store.Filter) []byte {
	switch {
	case f.Zone != "":
		return zonePrefix(f.Zone)
	case f.LocalOnly:
		return zonePrefix("")
	}
	return nil
}

// normTime drops the monotonic reading and the location so that what a
// write returns equals what a later read decodes.
func (s *Store) normTime() time.Time {
	return s.now().UTC().Round(0)
}

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
	_, err := s.commit(ctx, func(t *txn) error {
		b, err := t.typeBucket(key.Type, true)
		if err != nil {
			return err
		}
		k := itemKey(key)
		if b.Get(k) != nil {
			return store.ErrAlreadyExists
		}
		now := s.normTime()
		c.CreationTime, c.ModificationTime = now, now
		c.Version = t.nextVersion()
		if err := b.Put(k, encode(c)); err != nil {
			return err
		}
		t.adjust(typeZone{key.Type, key.Zone}, 1)
		t.events = append(t.events, store.Event{Kind: store.EventPut, Origin: store.OriginLocal, Resource: c})
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
	_, err := s.commit(ctx, func(t *txn) error {
		b, err := t.typeBucket(key.Type, false)
		if err != nil {
			return err
		}
		k := itemKey(key)
		var old []byte
		if b != nil {
			old = b.Get(k)
		}
		if old == nil {
			return store.ErrNotFound
		}
		prev, err := decode(old)
		if err != nil {
			return err
		}
		if expected != "" && expected != prev.Version {
			return store.ConflictError(key, expected, prev.Version)
		}
		c.CreationTime = prev.CreationTime
		c.ModificationTime = s.normTime()
		c.Version = t.nextVersion()
		if err := b.Put(k, encode(c)); err != nil {
			return err
		}
		t.events = append(t.events, store.Event{Kind: store.EventPut, Origin: store.OriginLocal, Resource: c})
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
	_, err := s.commit(ctx, func(t *txn) error {
		prev, err := t.delete(key)
		if err != nil {
			return err
		}
		if prev == nil {
			return store.ErrNotFound
		}
		if version != "" && version != prev.Version {
			return store.ConflictError(key, version, prev.Version)
		}
		t.events = append(t.events, store.Event{Kind: store.EventDelete, Origin: store.OriginLocal, Resource: prev})
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// delete removes key and returns what was stored (nil if nothing). A type
// bucket left empty is dropped. The caller may still fail the transaction.
func (t *txn) delete(key resource.Key) (*resource.Resource, error) {
	types := t.tx.Bucket(bucketTypes)
	b := types.Bucket([]byte(key.Type))
	if b == nil {
		return nil, nil
	}
	k := itemKey(key)
	old := b.Get(k)
	if old == nil {
		return nil, nil
	}
	prev, err := decode(old)
	if err != nil {
		return nil, err
	}
	if err := b.Delete(k); err != nil {
		return nil, err
	}
	t.adjust(typeZone{key.Type, key.Zone}, -1)
	if first, _ := b.Cursor().First(); first == nil {
		if err := types.DeleteBucket([]byte(key.Type)); err != nil {
			return nil, err
		}
	}
	return prev, nil
}

// encodedPut is one Apply put, encoded before the commit lock is taken.
type encodedPut struct {
	r   *resource.Resource
	key []byte
	val []byte
}

// Apply implements store.Store. Puts are encoded and sorted before the
// commit lock is taken, then written in key order in one transaction.
func (s *Store) Apply(ctx context.Context, b store.Batch) (uint64, error) {
	// A key put twice is found once the puts are sorted; a batch refused
	// gets CheckBatch's error, which names the first problem in the
	// batch's order.
	if err := store.CheckBatchPuts(b); err != nil {
		return 0, fmt.Errorf("apply: %w", store.CheckBatch(b))
	}
	if len(b.Put) == 0 && len(b.Delete) == 0 {
		leave, err := s.enter(ctx)
		if err != nil {
			return 0, fmt.Errorf("apply: %w", err)
		}
		defer leave()
		if f := b.Fence; f != nil {
			// Nothing to write, but a fenced-off session learns it now.
			err := s.db.View(func(tx *bolt.Tx) error {
				if cur := getUint(tx.Bucket(bucketSessions), []byte(f.Zone)); cur != f.Generation {
					return store.FencedError(f.Zone, f.Generation, cur)
				}
				return nil
			})
			if err != nil {
				return 0, fmt.Errorf("apply: %w", err)
			}
		}
		return s.revision.Load(), nil
	}
	// One arena holds every value (bbolt references them until the commit).
	// The events of an Owned batch are the caller's resources themselves
	// (the caller no longer modifies them, and event resources are
	// read-only), so nothing refers to the arena once the commit is done
	// and it is used again by later Applies: a sync's values (about 100 MB
	// per 100k resources of 1 KiB) are then copied into memory already in
	// use instead of freshly allocated memory, and not left to the garbage
	// collector. Otherwise the arena doubles as the events' copy of each
	// spec: neither bbolt nor the store writes to it.
	size := 0
	for _, r := range b.Put {
		size += encodedSize(r)
	}
	var arena []byte
	if b.Owned {
		arena = takeArena(size)
		defer giveArena(arena)
	} else {
		arena = make([]byte, 0, size)
	}
	puts := make([]encodedPut, len(b.Put))
	// The events' resources of a batch that is not Owned are allocated
	// together, and so are the item keys (bbolt copies a key it keeps):
	// two allocations per Apply instead of two per put. A watcher keeping
	// one event's resource keeps the others' structs too, as it keeps the
	// arena its spec is in.
	var evs []resource.Resource
	if !b.Owned {
		evs = make([]resource.Resource, len(b.Put))
	}
	keySize := 0
	for _, r := range b.Put {
		keySize += itemKeySize(r.Key())
	}
	keys := make([]byte, 0, keySize)
	for i, r := range b.Put {
		start := len(arena)
		var specAt int
		arena, specAt = appendEncodedSpec(arena, r)
		ev := r
		if !b.Owned {
			c := &evs[i]
			*c = *r
			c.Labels = maps.Clone(r.Labels)
			c.Spec = nil
			if specAt >= 0 {
				end := specAt + len(r.Spec)
				c.Spec = json.RawMessage(arena[specAt:end:end])
			}
			ev = c
		}
		k := len(keys)
		keys = appendItemKey(keys, ev.Key())
		puts[i] = encodedPut{r: ev, key: keys[k:len(keys):len(keys)], val: arena[start:len(arena):len(arena)]}
	}
	slices.SortFunc(puts, func(a, b encodedPut) int {
		if a.r.Type != b.r.Type {
			if a.r.Type < b.r.Type {
				return -1
			}
			return 1
		}
		return bytes.Compare(a.key, b.key)
	})
	for i := 1; i < len(puts); i++ {
		if puts[i].r.Type == puts[i-1].r.Type && bytes.Equal(puts[i].key, puts[i-1].key) {
			return 0, fmt.Errorf("apply: %w", store.CheckBatch(b))
		}
	}
	// typeEnd[i] is the index of the last put of puts[i]'s type (each
	// type's puts are contiguous and in key order).
	typeEnd := make([]int, len(puts))
	for i := len(puts) - 1; i >= 0; i-- {
		typeEnd[i] = i
		if i+1 < len(puts) && puts[i+1].r.Type == puts[i].r.Type {
			typeEnd[i] = typeEnd[i+1]
		}
	}
	// The (type, zone) pairs the puts go to, in put order (each pair's puts
	// are contiguous: item keys start with the zone).
	var limited []typeZone
	if b.Limit > 0 {
		for _, p := range puts {
			tz := typeZone{p.r.Type, p.r.Zone}
			if len(limited) == 0 || limited[len(limited)-1] != tz {
				limited = append(limited, tz)
			}
		}
	}
	rev, err := s.commit(ctx, func(t *txn) error {
		if f := b.Fence; f != nil {
			if cur := t.generation(f.Zone); cur != f.Generation {
				return store.FencedError(f.Zone, f.Generation, cur)
			}
		}
		before := make([]int, len(limited))
		for i, tz := range limited {
			before[i] = t.count(tz)
		}
		t.events = make([]store.Event, 0, len(puts)+len(b.Delete))
		var (
			bucket  *bolt.Bucket
			current string
			fresh   bool // no stored key of this type lies within the range of its puts
			run     typeZone
			added   int // new keys in run so far
		)
		for i, p := range puts {
			if tz := (typeZone{p.r.Type, p.r.Zone}); tz != run {
				if added > 0 {
					t.adjust(run, added)
				}
				run, added = tz, 0
			}
			if bucket == nil || p.r.Type != current {
				var err error
				if bucket, err = t.typeBucket(p.r.Type, true); err != nil {
					return err
				}
				current = p.r.Type
				// The first stored key at or after this type's first
				// put: if there is none, or it sorts after the type's
				// last put, every put of the type is new and they fill
				// one gap between stored keys (at the end, for a first
				// sync; before or between other zones' resources, for a
				// zone's sync into a global that holds others).
				next, _ := bucket.Cursor().Seek(p.key)
				fresh = next == nil || bytes.Compare(next, puts[typeEnd[i]].key) > 0
				if fresh {
					// The puts make new pages of their own: pack them
					// fuller than the default half-full split.
					bucket.FillPercent = 0.9
				}
			}
			isNew := fresh
			if !fresh {
				old := bucket.Get(p.key)
				if old != nil && bytes.Equal(old, p.val) {
					continue
				}
				isNew = old == nil
			}
			if err := bucket.Put(p.key, p.val); err != nil {
				return err
			}
			if isNew {
				added++
			}
			t.events = append(t.events, store.Event{Kind: store.EventPut, Origin: store.OriginSync, Resource: puts[i].r})
		}
		if added > 0 {
			t.adjust(run, added)
		}
		for _, k := range b.Delete {
			prev, err := t.delete(k)
			if err != nil {
				return err
			}
			if prev != nil {
				t.events = append(t.events, store.Event{Kind: store.EventDelete, Origin: store.OriginSync, Resource: prev})
			}
		}
		for i, tz := range limited {
			if n := t.count(tz); n > b.Limit && n > before[i] {
				return store.LimitError(tz.typ, tz.zone, n, b.Limit)
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("apply: %w", err)
	}
	return rev, nil
}

// arenas holds the arenas of Owned Applies between uses (*[]byte, empty).
var arenas sync.Pool

// maxPooledArena is the largest arena kept for reuse: a sync's batches
// are at most about 8 MiB of resources (kdssync merges ready responses up
// to that), and an exceptional batch does not stay allocated.
const maxPooledArena = 16 << 20

// takeArena returns an empty byte slice with room for n bytes, reused
// from an earlier Apply when one large enough is kept.
func takeArena(n int) []byte {
	if p, ok := arenas.Get().(*[]byte); ok && cap(*p) >= n {
		return (*p)[:0]
	}
	return make([]byte, 0, n)
}

// giveArena keeps b for a later Apply. The caller no longer refers to it,
// nor does anything it handed b's bytes to.
func giveArena(b []byte) {
	if cap(b) > maxPooledArena {
		return
	}
	b = b[:0]
	arenas.Put(&b)
}

// Count implements store.Counter: the type's bucket statistics, which
// add up the leaf pages' element counts without reading any value (the
// bucket holds items only).
func (s *Store) Count(ctx context.Context, typ string) (int, error) {
	leave, err := s.enter(ctx)
	if err != nil {
		return 0, fmt.Errorf("count %s: %w", typ, err)
	}
	defer leave()
	n := 0
	err = s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketTypes).Bucket([]byte(typ)); b != nil {
			n = b.Stats().KeyN
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("count %s: %w", typ, err)
	}
	return n, nil
}

// Versions implements store.Store. It decodes only the key and the version
// field of each stored value; the spec's bytes are skipped, not copied.
func (s *Store) Versions(ctx context.Context, f store.Filter) ([]store.KeyVersion, error) {
	if err := store.CheckVersionsFilter(f); err != nil {
		return nil, fmt.Errorf("versions: %w", err)
	}
	leave, err := s.enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("versions: %w", err)
	}
	defer leave()
	var out []store.KeyVersion
	err = s.db.View(func(tx *bolt.Tx) error {
		types := tx.Bucket(bucketTypes)
		if f.Type != "" {
			b := types.Bucket([]byte(f.Type))
			if b == nil {
				return nil
			}
			out, err = scanVersions(ctx, f.Type, b, f, out)
			return err
		}
		return types.ForEachBucket(func(name []byte) error {
			out, err = scanVersions(ctx, string(name), types.Bucket(name), f, out)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("versions: %w", err)
	}
	return out, nil
}

// scanVersions appends the keys and versions of one type bucket that match
// f (which has no labels).
func scanVersions(ctx context.Context, typ string, b *bolt.Bucket, f store.Filter, out []store.KeyVersion) ([]store.KeyVersion, error) {
	err := eachItem(ctx, b, f, func(k, v []byte) error {
		key, err := keyOf(typ, k)
		if err != nil {
			return err
		}
		version, err := decodeVersion(v)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		out = append(out, store.KeyVersion{Key: key, Version: version})
		return nil
	})
	return out, err
}

// ClaimSession implements store.Store. The generation is persisted in
// "sessions" in its own commit (no revision, no event), so it keeps growing
// across restarts. A file restored from an older copy goes back to the
// generations in the copy; that is harmless for this store, whose sessions
// all ended when the process holding it stopped.
func (s *Store) ClaimSession(ctx context.Context, zone string) (uint64, error) {
	if err := store.CheckZone(zone); err != nil {
		return 0, fmt.Errorf("claim session: %w", err)
	}
	var gen uint64
	_, err := s.commit(ctx, func(t *txn) error {
		b := t.tx.Bucket(bucketSessions)
		gen = getUint(b, []byte(zone)) + 1
		return putUint(b, []byte(zone), gen)
	})
	if err != nil {
		return 0, fmt.Errorf("claim session of zone %s: %w", zone, err)
	}
	return gen, nil
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

// Revision implements store.Store.
func (s *Store) Revision() uint64 { return s.revision.Load() }

// Close implements store.Store. It waits for running operations, ends every
// watch and closes the file.
func (s *Store) Close() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.feed.Close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	s.log.Info("store closed", "revision", s.revision.Load())
	return nil
}
