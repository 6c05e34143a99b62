package kdssync

import (
	"fmt"
	"sync"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// Index is the served view of one side's resources: per served type, every
// resource pre-encoded as a delta-xDS Resource, plus the subscriptions of the
// connected peers. The engine feeds it from the store's change feed; servers
// read it. Encoding happens once per change, whatever the number of peers.
//
// Index is safe for concurrent use. Entries are immutable once stored.
type Index struct {
	mu    sync.RWMutex
	types map[string]*typeIndex
}

type typeIndex struct {
	entries map[string]entry
	// subs is guarded by subsMu alone, so that a session subscribing or
	// ending does not take the index's write lock (a writer waiting for it
	// stops every reader). Changes mark them with the write lock held
	// too.
	subsMu sync.Mutex
	subs   map[*Subscription]struct{}
	// revision counts changes to the type; it is the system version servers
	// report.
	revision uint64
	// namesGen counts names added and removed (not version changes): the
	// sorted list of names below is every name served while sortedGen
	// equals it.
	namesGen uint64
	// sorted is the served names in store-key order (compareWireNames) as
	// of sortedGen, shared read-only by the subscriptions that start from
	// it (see sortedNames). Written under the index's write lock, or under
	// its read lock together with sortedMu.
	sorted    []string
	sortedGen uint64
	sortedMu  sync.Mutex
	// sortedEntries, when not nil, is the entry of each name in sorted
	// (same positions) as of the current revision: any change drops it.
	// Guarded like sorted.
	sortedEntries []entry
}

type entry struct {
	res  *discovery.Resource
	size int // encoded size of res
}

// NewIndex returns an empty index serving the given type names. Puts and
// deletes of other types are ignored.
func NewIndex(types []string) *Index {
	ix := &Index{types: make(map[string]*typeIndex, len(types))}
	for _, t := range types {
		ix.types[t] = &typeIndex{entries: map[string]entry{}, subs: map[*Subscription]struct{}{}}
	}
	return ix
}

// Serves reports whether typ is a served type.
func (ix *Index) Serves(typ string) bool {
	_, ok := ix.types[typ]
	return ok
}

// Encode turns r into its wire form. The zone is never put on the wire.
func Encode(r *resource.Resource) (*discovery.Resource, error) {
	p := r.ToProto()
	p.Zone = ""
	b, err := proto.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", r.Key(), err)
	}
	return &discovery.Resource{
		Name:     WireName(r.Mesh, r.Name),
		Version:  r.Version,
		Resource: &anypb.Any{TypeUrl: resourceTypeURL, Value: b},
	}, nil
}

// Put adds or replaces r. It is ignored when r's type is not served.
func (ix *Index) Put(r *resource.Resource) error {
	ti, ok := ix.types[r.Type]
	if !ok {
		return nil
	}
	res, err := Encode(r)
	if err != nil {
		return err
	}
	e := entry{res: res, size: proto.Size(res)}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	was := ti.state(res.Name)
	ti.entries[res.Name] = e
	ti.revision++
	ti.sortedEntries = nil
	if !was.holds {
		ti.namesChanged()
	}
	ti.markAll(res.Name, was)
	return nil
}

// Delete removes the resource with key k, if present.
func (ix *Index) Delete(k resource.Key) {
	ti, ok := ix.types[k.Type]
	if !ok {
		return
	}
	name := WireName(k.Mesh, k.Name)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	was := ti.state(name)
	if !was.holds {
		return
	}
	delete(ti.entries, name)
	ti.revision++
	ti.namesChanged()
	ti.markAll(name, was)
}

// markAll marks name, whose state was was, in every subscription; the
// caller holds the index's write lock.
func (ti *typeIndex) markAll(name string, was heldState) {
	ti.subsMu.Lock()
	defer ti.subsMu.Unlock()
	for s := range ti.subs {
		s.mark(name, was)
	}
}

// namesChanged records that a name was added or removed; the caller holds
// the index's write lock.
func (ti *typeIndex) namesChanged() {
	ti.namesGen++
	ti.sorted, ti.sortedEntries = nil, nil // not kept alive once stale
}

// cachedNames returns the served names in store-key order if the list kept
// is current, else nil, and their entries if those are kept and current
// too, else nil. The caller holds the index's read lock; the slices are
// shared and must not be written.
func (ti *typeIndex) cachedNames() ([]string, []entry) {
	ti.sortedMu.Lock()
	defer ti.sortedMu.Unlock()
	if ti.sorted != nil && ti.sortedGen == ti.namesGen {
		return ti.sorted, ti.sortedEntries
	}
	return nil, nil
}

// keepNames keeps names, the served names in store-key order as of
// generation gen, and ents (nil, or the entry of each name as of the
// current revision) for the subscriptions that follow, unless the names
// changed since. The caller holds the index's read lock.
func (ti *typeIndex) keepNames(names []string, ents []entry, gen uint64) {
	ti.sortedMu.Lock()
	defer ti.sortedMu.Unlock()
	if gen == ti.namesGen {
		ti.sorted, ti.sortedGen, ti.sortedEntries = names, gen, ents
	}
}

// state returns name's state in the index. The caller holds ix.mu.
func (ti *typeIndex) state(name string) heldState {
	e, ok := ti.entries[name]
	if !ok {
		return heldState{}
	}
	return heldState{version: e.res.Version, holds: true}
}

// heldState is one name's state on one side: held at version, or not held
// (the zero value).
type heldState struct {
	version string
	holds   bool
}

// Len returns the number of resources of typ.
func (ix *Index) Len(typ string) int {
	ti, ok := ix.types[typ]
	if !ok {
		return 0
	}
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ti.entries)
}

// subscribe registers a subscription for typ that signals on notify when
// resources change. The caller must call unsubscribe.
func (ix *Index) subscribe(typ string, notify chan struct{}) *Subscription {
	s := &Subscription{typ: typ, dirty: map[string]heldState{}, notify: notify}
	ti := ix.types[typ]
	ti.subsMu.Lock()
	defer ti.subsMu.Unlock()
	ti.subs[s] = struct{}{}
	return s
}

func (ix *Index) unsubscribe(s *Subscription) {
	ti := ix.types[s.typ]
	ti.subsMu.Lock()
	defer ti.subsMu.Unlock()
	delete(ti.subs, s)
}

// Subscription collects the names of changed resources of one type for one
// serving stream, each with the state its index entry had before the first
// change since the owner last took them: for every name, the index's state
// as of that take is the recorded one if the name is dirty, else the
// index's current one (a server's sparse record of what its peer holds is
// relative to it, see serveState). Marking never blocks: names accumulate
// in a map and the owner is signalled through a coalescing channel.
type Subscription struct {
	typ string
	mu  sync.Mutex
	// dirty maps the names changed since the last take to their state
	// before the first of those changes.
	dirty  map[string]heldState
	notify chan struct{}
}

// mark records a change to name, whose index state was was; the caller
// holds the index's write lock, so that the state and the change are one
// step for every reader of the index.
func (s *Subscription) mark(name string, was heldState) {
	s.mu.Lock()
	if _, ok := s.dirty[name]; !ok {
		s.dirty[name] = was
	}
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// take hands every dirty name and its state before its changes to visit,
// and forgets them. Called with the index's lock held (read or write), the
// index's current state of every name is then its state as of this take.
func (s *Subscription) take(visit func(name string, was heldState)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for n, was := range s.dirty {
		visit(n, was)
	}
	if len(s.dirty) > dirtyKept {
		// A cleared map keeps its peak size: after a burst (a resync
		// marking every name) a fresh one gives that back.
		s.dirty = map[string]heldState{}
		return
	}
	clear(s.dirty)
}

// takeOrHandOver is take when at most n names are dirty; otherwise it
// visits nothing and hands the dirty map itself over (the caller's from
// then on), starting a new one. Called with the index's lock held, as
// take.
func (s *Subscription) takeOrHandOver(n int, visit func(name string, was heldState)) map[string]heldState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.dirty) > n {
		d := s.dirty
		s.dirty = map[string]heldState{}
		return d
	}
	for name, was := range s.dirty {
		visit(name, was)
	}
	clear(s.dirty)
	return nil
}

// changed reports whether any name was marked since the last take.
func (s *Subscription) changed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.dirty) > 0
}

// dirtyKept is the most dirty names a take clears in place; a larger map is
// replaced (see take).
const dirtyKept = 1024

// Replace makes the served resources exactly items (of served types;
// others are ignored): what items hold is put unless the index holds the
// same version already, and what the index holds beyond items is deleted.
// Subscribers see only what changed. The engine calls it to resync after
// its store's change feed lost commits.
func (ix *Index) Replace(items []*resource.Resource) error {
	keep := make(map[string]map[string]struct{}, len(ix.types))
	for t := range ix.types {
		keep[t] = map[string]struct{}{}
	}
	for _, r := range items {
		names, ok := keep[r.Type]
		if !ok {
			continue
		}
		name := WireName(r.Mesh, r.Name)
		names[name] = struct{}{}
		ix.mu.RLock()
		e, held := ix.types[r.Type].entries[name]
		ix.mu.RUnlock()
		if held && e.res.Version == r.Version {
			continue
		}
		if err := ix.Put(r); err != nil {
			return err
		}
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for t, ti := range ix.types {
		for name := range ti.entries {
			if _, ok := keep[t][name]; ok {
				continue
			}
			was := ti.state(name)
			delete(ti.entries, name)
			ti.revision++
			ti.namesChanged()
			ti.markAll(name, was)
		}
	}
	return nil
}
