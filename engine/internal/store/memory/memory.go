// Package memory is an in-memory store.Store for tests and demos: maps
// guarded by one RWMutex. Nothing survives Close.
//
// Every New draws a new version epoch (store.NewVersioner), so a process
// restarted with a memory store never hands out a version it handed out
// before, although its counter starts over. Session generations
// (ClaimSession) live in memory too and start over with the store, which is
// harmless: the sessions they fenced ended with the process.
package memory

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

var _ store.Store = (*Store)(nil)

// Option configures a Store.
type Option func(*Store)

// WithClock sets the source of CreationTime and ModificationTime (default
// time.Now).
func WithClock(now func() time.Time) Option {
	return func(s *Store) { s.now = now }
}

// Store is an in-memory store.Store. Safe for concurrent use.
//
// Stored resources are never mutated in place (a write replaces the
// pointer), so events share them with the map without copying.
type Store struct {
	now       func() time.Time
	feed      *store.Feed
	versioner *store.Versioner

	mu     sync.RWMutex
	byType map[string]map[resource.Key]*resource.Resource
	// counts holds the number of resources per (type, zone), for
	// Batch.Limit without a scan.
	counts   map[typeZone]int
	sessions map[string]uint64 // zone → current session generation
	revision uint64
	version  uint64
	closed   bool
}

type typeZone struct{ typ, zone string }

// New returns an empty Store.
func New(opts ...Option) *Store {
	s := &Store{
		now:       time.Now,
		feed:      store.NewFeed(),
		versioner: store.NewVersioner(),
		byType:    make(map[string]map[resource.Key]*resource.Resource),
		counts:    make(map[typeZone]int),
		sessions:  make(map[string]uint64),
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func (s *Store) checkOpen(ctx context.Context) error {
	if s.closed {
		return store.ErrClosed
	}
	return context.Cause(ctx)
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key resource.Key) (*resource.Resource, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.checkOpen(ctx); err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	r, ok := s.byType[key.Type][key]
	if !ok {
		return nil, fmt.Errorf("get %s: %w", key, store.ErrNotFound)
	}
	return r.Clone(), nil
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, f store.Filter) ([]*resource.Resource, error) {
	out, _, err := s.Snapshot(ctx, f)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Snapshot implements store.Store.
func (s *Store) Snapshot(ctx context.Context, f store.Filter) ([]*resource.Resource, uint64, error) {
	if err := f.Validate(); err != nil {
		return nil, 0, fmt.Errorf("list: %w", err)
	}
	s.mu.RLock()
	if err := s.checkOpen(ctx); err != nil {
		s.mu.RUnlock()
		return nil, 0, fmt.Errorf("list: %w", err)
	}
	var matched []*resource.Resource
	collect := func(m map[resource.Key]*resource.Resource) {
		for _, r := range m {
			if f.Matches(r) {
				matched = append(matched, r)
			}
		}
	}
	if f.Type != "" {
		collect(s.byType[f.Type])
	} else {
		for _, m := range s.byType {
			collect(m)
		}
	}
	rev := s.revision
	s.mu.RUnlock()

	// Sort and copy outside the lock: the matched resources are immutable.
	slices.SortFunc(matched, func(a, b *resource.Resource) int {
		return store.CompareKeys(a.Key(), b.Key())
	})
	for i, r := range matched {
		matched[i] = r.Clone()
	}
	return matched, rev, nil
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
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(ctx); err != nil {
		return nil, fmt.Errorf("create %s: %w", key, err)
	}
	if _, ok := s.byType[key.Type][key]; ok {
		return nil, fmt.Errorf("create %s: %w", key, store.ErrAlreadyExists)
	}
	c := r.Clone()
	now := s.now().UTC().Round(0)
	c.CreationTime, c.ModificationTime = now, now
	s.version++
	c.Version = s.versioner.Version(s.version)
	s.put(c)
	s.commit([]store.Event{{Kind: store.EventPut, Origin: store.OriginLocal, Resource: c}})
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
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(ctx); err != nil {
		return nil, fmt.Errorf("update %s: %w", key, err)
	}
	old, ok := s.byType[key.Type][key]
	if !ok {
		return nil, fmt.Errorf("update %s: %w", key, store.ErrNotFound)
	}
	if r.Version != "" && r.Version != old.Version {
		return nil, fmt.Errorf("update: %w", store.ConflictError(key, r.Version, old.Version))
	}
	c := r.Clone()
	c.CreationTime = old.CreationTime
	c.ModificationTime = s.now().UTC().Round(0)
	s.version++
	c.Version = s.versioner.Version(s.version)
	s.put(c)
	s.commit([]store.Event{{Kind: store.EventPut, Origin: store.OriginLocal, Resource: c}})
	return c.Clone(), nil
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, key resource.Key, version string) error {
	if err := store.CheckKey(key); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(ctx); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	old, ok := s.byType[key.Type][key]
	if !ok {
		return fmt.Errorf("delete %s: %w", key, store.ErrNotFound)
	}
	if version != "" && version != old.Version {
		return fmt.Errorf("delete: %w", store.ConflictError(key, version, old.Version))
	}
	s.remove(key)
	s.commit([]store.Event{{Kind: store.EventDelete, Origin: store.OriginLocal, Resource: old}})
	return nil
}

// Apply implements store.Store.
func (s *Store) Apply(ctx context.Context, b store.Batch) (uint64, error) {
	if err := store.CheckBatch(b); err != nil {
		return 0, fmt.Errorf("apply: %w", err)
	}
	// Copy before taking the lock: nothing below can fail, so the batch is
	// all or nothing. An owned batch's resources are kept as they are (its
	// caller no longer modifies them), which saves a copy of every spec.
	puts := b.Put
	if !b.Owned {
		puts = make([]*resource.Resource, len(b.Put))
		for i, r := range b.Put {
			puts[i] = r.Clone()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(ctx); err != nil {
		return 0, fmt.Errorf("apply: %w", err)
	}
	if f := b.Fence; f != nil {
		if cur := s.sessions[f.Zone]; cur != f.Generation {
			return 0, fmt.Errorf("apply: %w", store.FencedError(f.Zone, f.Generation, cur))
		}
	}
	if b.Limit > 0 {
		if err := s.checkLimit(puts, b.Delete, b.Limit); err != nil {
			return 0, fmt.Errorf("apply: %w", err)
		}
	}
	events := make([]store.Event, 0, len(puts)+len(b.Delete))
	for _, r := range puts {
		if old, ok := s.byType[r.Type][r.Key()]; ok && same(old, r) {
			continue
		}
		s.put(r)
		events = append(events, store.Event{Kind: store.EventPut, Origin: store.OriginSync, Resource: r})
	}
	for _, k := range b.Delete {
		old, ok := s.byType[k.Type][k]
		if !ok {
			continue
		}
		s.remove(k)
		events = append(events, store.Event{Kind: store.EventDelete, Origin: store.OriginSync, Resource: old})
	}
	if len(events) == 0 {
		return s.revision, nil
	}
	s.commit(events)
	return s.revision, nil
}

// checkLimit fails with store.ErrLimitExceeded if applying puts and deletes
// would grow a (type, zone) of puts past limit resources; s.mu held.
func (s *Store) checkLimit(puts []*resource.Resource, deletes []resource.Key, limit int) error {
	after := make(map[typeZone]int)
	for _, r := range puts {
		tz := typeZone{r.Type, r.Zone}
		if _, ok := after[tz]; !ok {
			after[tz] = s.counts[tz]
		}
		if _, stored := s.byType[r.Type][r.Key()]; !stored {
			after[tz]++
		}
	}
	for _, k := range deletes {
		tz := typeZone{k.Type, k.Zone}
		if _, ok := after[tz]; !ok {
			continue // no put into this (type, zone)
		}
		if _, stored := s.byType[k.Type][k]; stored {
			after[tz]--
		}
	}
	for _, r := range puts {
		tz := typeZone{r.Type, r.Zone}
		if n := after[tz]; n > limit && n > s.counts[tz] {
			return store.LimitError(tz.typ, tz.zone, n, limit)
		}
	}
	return nil
}

// Versions implements store.Store.
// Count implements store.Counter.
func (s *Store) Count(ctx context.Context, typ string) (int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.checkOpen(ctx); err != nil {
		return 0, fmt.Errorf("count %s: %w", typ, err)
	}
	return len(s.byType[typ]), nil
}

func (s *Store) Versions(ctx context.Context, f store.Filter) ([]store.KeyVersion, error) {
	if err := store.CheckVersionsFilter(f); err != nil {
		return nil, fmt.Errorf("versions: %w", err)
	}
	s.mu.RLock()
	if err := s.checkOpen(ctx); err != nil {
		s.mu.RUnlock()
		return nil, fmt.Errorf("versions: %w", err)
	}
	var out []store.KeyVersion
	collect := func(m map[resource.Key]*resource.Resource) {
		for k, r := range m {
			if f.MatchesKey(k) {
				out = append(out, store.KeyVersion{Key: k, Version: r.Version})
			}
		}
	}
	if f.Type != "" {
		collect(s.byType[f.Type])
	} else {
		for _, m := range s.byType {
			collect(m)
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b store.KeyVersion) int { return store.CompareKeys(a.Key, b.Key) })
	return out, nil
}

// ClaimSession implements store.Store.
func (s *Store) ClaimSession(ctx context.Context, zone string) (uint64, error) {
	if err := store.CheckZone(zone); err != nil {
		return 0, fmt.Errorf("claim session: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(ctx); err != nil {
		return 0, fmt.Errorf("claim session of zone %s: %w", zone, err)
	}
	s.sessions[zone]++
	return s.sessions[zone], nil
}

// Watch implements store.Store.
func (s *Store) Watch(ctx context.Context) (*store.Watch, error) {
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return nil, fmt.Errorf("watch: %w", store.ErrClosed)
	}
	return s.feed.Watch(ctx)
}

// Revision implements store.Store.
func (s *Store) Revision() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.revision
}

// Close implements store.Store.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	s.byType, s.counts, s.sessions = nil, nil, nil
	s.mu.Unlock()
	s.feed.Close()
	return nil
}

// put and remove require s.mu held for writing.
func (s *Store) put(r *resource.Resource) {
	m := s.byType[r.Type]
	if m == nil {
		m = make(map[resource.Key]*resource.Resource)
		s.byType[r.Type] = m
	}
	k := r.Key()
	if _, ok := m[k]; !ok {
		s.counts[typeZone{k.Type, k.Zone}]++
	}
	m[k] = r
}

func (s *Store) remove(k resource.Key) {
	m := s.byType[k.Type]
	if _, ok := m[k]; !ok {
		return
	}
	delete(m, k)
	if len(m) == 0 {
		delete(s.byType, k.Type)
	}
	tz := typeZone{k.Type, k.Zone}
	if s.counts[tz]--; s.counts[tz] <= 0 {
		delete(s.counts, tz)
	}
}

// commit stamps events with the next revision and publishes them; s.mu held.
func (s *Store) commit(events []store.Event) {
	s.revision++
	for i := range events {
		events[i].Revision = s.revision
	}
	s.feed.Publish(events)
}

func same(a, b *resource.Resource) bool {
	return a.Version == b.Version &&
		a.CreationTime.Equal(b.CreationTime) &&
		a.ModificationTime.Equal(b.ModificationTime) &&
		maps.Equal(a.Labels, b.Labels) &&
		string(a.Spec) == string(b.Spec)
}
