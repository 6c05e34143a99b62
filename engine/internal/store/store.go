package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// Errors callers branch on. Implementations wrap them with %w and add the
// key (and versions, for ErrConflict) to the message; test with errors.Is.
var (
	// ErrNotFound: the resource does not exist.
	ErrNotFound = resource.ErrNotFound
	// ErrAlreadyExists: Create of a key that is already stored.
	ErrAlreadyExists = resource.ErrAlreadyExists
	// ErrConflict: the version the caller read is no longer the stored one.
	ErrConflict = resource.ErrConflict
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("store closed")
	// ErrInvalid: a resource, key, filter or batch the store cannot hold
	// (empty type or name, a NUL byte in an identity field, an Apply put
	// without a version, a key twice in one batch). The write changes nothing.
	ErrInvalid = errors.New("invalid store request")
	// ErrFenced: an Apply carried a Fence whose session generation is not
	// the zone's current one (a newer session claimed the zone). The write
	// changes nothing; the message names the current generation.
	ErrFenced = errors.New("session fenced off by a newer session")
	// ErrLimitExceeded: an Apply with a Limit would grow a (Type, Zone) to
	// more resources than the limit (a batch that does not grow one already
	// over it, after the limit was lowered, passes). The write changes nothing; the message
	// names the type, the zone, the count and the limit.
	ErrLimitExceeded = errors.New("resource limit exceeded")
	// ErrUnavailable: the store's backing service (the database server of
	// a networked store) cannot be reached or refused the operation for a
	// reason that goes away on its own. Nothing was changed, or the write's
	// outcome could not be confirmed; retrying later is the remedy. The
	// message names the service and the cause.
	ErrUnavailable = errors.New("store unavailable")
	// ErrWatchLost: a Watch ended because commits it should have received
	// are no longer available (its store's change log was pruned past them,
	// or the database went back to an older state). A watcher that gets it
	// takes a new Snapshot and watches again.
	ErrWatchLost = errors.New("change feed lost commits; snapshot and watch again")
)

// Store holds resources and publishes every committed change to watchers.
//
// All methods are safe for concurrent use. Resources passed in are not
// retained (the store copies them); resources returned by Get, List, Create,
// Update and Snapshot are fresh copies the caller owns. Resources inside
// Events are shared between watchers and must be treated as read-only.
//
// Local writes (Create, Update, Delete) assign versions and times; the sync
// write (Apply) stores what the sender sent. The store does not know which
// side (global or zone) it runs on: the admin API and the sync layer decide
// which types each side may write, and the Origin of each Event tells
// watchers which kind of write produced it.
//
// Every method checks ctx before it starts (an ended ctx yields its cause);
// a write that has started is committed or fails on its own, never half
// done. Writes with an empty Type or Name fail with ErrInvalid. After Close
// every method returns an error wrapping ErrClosed (Revision returns the
// last revision).
type Store interface {
	// Get returns the resource stored under key, or ErrNotFound.
	Get(ctx context.Context, key resource.Key) (*resource.Resource, error)

	// List returns the resources matching f, ordered by (Type, Zone, Mesh,
	// Name). An empty result is an empty (possibly nil) slice, not an error.
	List(ctx context.Context, f Filter) ([]*resource.Resource, error)

	// Create stores r as a new resource. The store assigns Version,
	// CreationTime and ModificationTime (values in r are ignored) and returns
	// the stored copy. ErrAlreadyExists if the key is taken.
	Create(ctx context.Context, r *resource.Resource) (*resource.Resource, error)

	// Update replaces the resource with r's key. r.Version is the version
	// the caller read: if it differs from the stored version Update fails
	// with ErrConflict; an empty r.Version skips the check (last writer
	// wins). The store assigns a new Version and ModificationTime, keeps
	// CreationTime, and returns the stored copy. ErrNotFound if absent.
	Update(ctx context.Context, r *resource.Resource) (*resource.Resource, error)

	// Delete removes the resource under key. A non-empty version must equal
	// the stored one (else ErrConflict); empty deletes whatever is stored.
	// ErrNotFound if absent.
	Delete(ctx context.Context, key resource.Key, version string) error

	// Apply commits b atomically: every put is stored verbatim (the sender's
	// Version and times are kept) and every delete is removed, or, on any
	// error, nothing changes. A delete of a key that is not stored, and a
	// put identical to the stored resource, are no-ops that emit no Event.
	// It returns the revision of the commit (the current revision if the
	// batch changed nothing).
	//
	// b.Fence and b.Limit are checked inside the commit, against the state
	// the batch is applied to: a batch fenced with a generation that is not
	// its zone's current one fails with ErrFenced, and one that would grow
	// a (Type, Zone) of its puts past b.Limit fails with ErrLimitExceeded.
	// Either way nothing changes and no Event is published.
	Apply(ctx context.Context, b Batch) (revision uint64, err error)

	// Snapshot is List plus the revision the result reflects: the result
	// contains exactly the commits with Revision <= revision. See the
	// package documentation for the gap-free list-then-watch recipe.
	Snapshot(ctx context.Context, f Filter) ([]*resource.Resource, uint64, error)

	// Watch registers a watcher that receives every commit published after
	// Watch returns, in commit order, until ctx ends or the store closes.
	Watch(ctx context.Context) (*Watch, error)

	// Versions returns the key and version of every resource matching f,
	// in List's order, without reading labels, specs or times: what the
	// sync sends as the versions it holds when a session starts, at a cost
	// that does not grow with the size of the resources. f.Labels must be
	// empty (labels are not read): a filter with labels fails with
	// ErrInvalid rather than match what it was not meant to.
	Versions(ctx context.Context, f Filter) ([]KeyVersion, error)

	// ClaimSession makes a new session generation current for zone and
	// returns it: atomically, and strictly greater than every generation
	// this store returned for zone before (durable stores keep this across
	// a restart; see each implementation for what a restore from an older
	// copy does). Applies fenced with an older generation fail with
	// ErrFenced from then on. An empty zone or a NUL byte in it is
	// ErrInvalid.
	ClaimSession(ctx context.Context, zone string) (generation uint64, err error)

	// Revision returns the revision of the latest commit (0 for a new store).
	Revision() uint64

	// Close releases the store and ends every Watch with ErrClosed. It is
	// idempotent.
	Close() error
}

// Filter selects resources. Empty fields match anything; every set field
// must match.
type Filter struct {
	Type string
	Mesh string
	// Zone selects resources a zone provided (held on global). Empty means
	// any zone, including none, unless LocalOnly is set.
	Zone string
	// LocalOnly selects only resources with an empty Zone: those written on
	// this side rather than received from a zone. It cannot be combined with
	// Zone.
	LocalOnly bool
	// Labels must all be present on the resource with equal values.
	Labels map[string]string
}

// Validate reports an error wrapping ErrInvalid for a contradictory filter.
func (f Filter) Validate() error {
	if f.LocalOnly && f.Zone != "" {
		return fmt.Errorf("filter: Zone %q and LocalOnly are exclusive: %w", f.Zone, ErrInvalid)
	}
	return nil
}

// Matches reports whether r passes the filter. Watchers use it to select
// events the same way List selects resources.
func (f Filter) Matches(r *resource.Resource) bool {
	return f.MatchesKey(r.Key()) && f.matchesLabels(r.Labels)
}

// MatchesKey reports whether a resource with key k could pass the filter
// (every criterion except Labels).
func (f Filter) MatchesKey(k resource.Key) bool {
	if f.Type != "" && k.Type != f.Type {
		return false
	}
	if f.Mesh != "" && k.Mesh != f.Mesh {
		return false
	}
	if f.Zone != "" && k.Zone != f.Zone {
		return false
	}
	if f.LocalOnly && k.Zone != "" {
		return false
	}
	return true
}

func (f Filter) matchesLabels(labels map[string]string) bool {
	for k, v := range f.Labels {
		got, ok := labels[k]
		if !ok || got != v {
			return false
		}
	}
	return true
}

// Batch is one atomic sync write: the content of one received sync
// response. A key may appear at most once across Put and Delete.
type Batch struct {
	// Put holds resources stored verbatim, Version included (required).
	Put []*resource.Resource
	// Delete holds keys to remove; keys not stored are ignored.
	Delete []resource.Key
	// Fence, when set, makes the batch conditional on its session still
	// being the zone's current one (see Store.ClaimSession): checked in the
	// same transaction as the write, so nothing from a replaced session
	// commits after its successor claimed the zone.
	Fence *Fence
	// Limit, when positive, is the most resources any (Type, Zone) that
	// the batch puts into may hold after the commit, counting what is
	// already stored, what the batch adds and what it deletes. A batch that
	// leaves a (Type, Zone) already over the limit (the limit was lowered)
	// no larger than it was passes: updates and deletes go on. Zero or
	// negative: no limit.
	Limit int
	// Owned hands Put's resources to the store: the caller does not modify
	// them (nor the slices and maps they hold) once it passed them to
	// Apply, so a store that keeps resources in memory may keep these as
	// they are instead of copying them. Stores that copy anyway ignore it.
	Owned bool
}

// Fence names the session a batch belongs to: the zone it was claimed for
// and the generation ClaimSession returned.
type Fence struct {
	Zone       string
	Generation uint64
}

// Counter is implemented by a store that counts the resources of a type
// without reading them, far cheaper than len(Versions) on a large store
// (the engine's metrics sampler counts every received type every few
// seconds; on a global holding 100k zone statuses a Versions scan cost
// about 120 ms of CPU and 100k allocations each time).
type Counter interface {
	// Count returns the number of resources of typ held, every zone's and
	// local ones: len(Versions(Filter{Type: typ})) at one point in time.
	Count(ctx context.Context, typ string) (int, error)
}

// KeyVersion is one entry of Store.Versions.
type KeyVersion struct {
	Key     resource.Key
	Version string
}

// EventKind says what a commit did to one resource.
type EventKind int

const (
	// EventPut: the resource was created or replaced.
	EventPut EventKind = iota + 1
	// EventDelete: the resource was removed.
	EventDelete
)

func (k EventKind) String() string {
	switch k {
	case EventPut:
		return "Put"
	case EventDelete:
		return "Delete"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Origin says which kind of write produced an event.
type Origin int

const (
	// OriginLocal: Create, Update or Delete (the admin API side).
	OriginLocal Origin = iota + 1
	// OriginSync: Apply (the sync layer).
	OriginSync
)

func (o Origin) String() string {
	switch o {
	case OriginLocal:
		return "Local"
	case OriginSync:
		return "Sync"
	}
	return fmt.Sprintf("Origin(%d)", int(o))
}

// Event is one change of one resource.
type Event struct {
	Kind   EventKind
	Origin Origin
	// Resource is the stored resource after a put, and the last stored
	// resource (Key and Version included) for a delete. It is shared with
	// other watchers: read-only.
	Resource *resource.Resource
	// Revision of the commit. All events of one commit (one Apply) share it;
	// revisions grow strictly from commit to commit.
	Revision uint64
}

// CheckKey returns an error wrapping ErrInvalid if k cannot identify a
// stored resource: empty Type or Name, or a NUL byte in any field.
func CheckKey(k resource.Key) error {
	if k.Type == "" {
		return fmt.Errorf("key %s: empty type: %w", k, ErrInvalid)
	}
	if k.Name == "" {
		return fmt.Errorf("key %s: empty name: %w", k, ErrInvalid)
	}
	for _, s := range [...]string{k.Type, k.Mesh, k.Zone, k.Name} {
		if strings.IndexByte(s, 0) >= 0 {
			return fmt.Errorf("key %q: NUL byte: %w", k.String(), ErrInvalid)
		}
	}
	return nil
}

// CheckZone returns an error wrapping ErrInvalid if zone cannot name a
// session's zone: empty, or with a NUL byte.
func CheckZone(zone string) error {
	if zone == "" {
		return fmt.Errorf("empty zone: %w", ErrInvalid)
	}
	if strings.IndexByte(zone, 0) >= 0 {
		return fmt.Errorf("zone %q: NUL byte: %w", zone, ErrInvalid)
	}
	return nil
}

// CheckVersionsFilter validates a filter for Store.Versions: Validate, and
// no Labels (Versions does not read them).
func CheckVersionsFilter(f Filter) error {
	if err := f.Validate(); err != nil {
		return err
	}
	if len(f.Labels) > 0 {
		return fmt.Errorf("filter: versions cannot select by labels (they are not read): %w", ErrInvalid)
	}
	return nil
}

// CheckBatch validates b as a whole before anything is written: no nil
// resource, valid keys, a Version on every put, no key twice, and a Fence,
// if any, with a zone and a generation (generations start at 1).
func CheckBatch(b Batch) error { return checkBatch(b, true) }

// CheckBatchPuts is CheckBatch for a batch without deletes, except that
// it does not look for a key put twice: a store that sorts the puts by
// key finds those as neighbours instead of in a set of every key. A store
// that finds a problem either way returns CheckBatch's error, which names
// the first problem in the batch's order.
func CheckBatchPuts(b Batch) error {
	if len(b.Delete) > 0 {
		return CheckBatch(b)
	}
	return checkBatch(b, false)
}

func checkBatch(b Batch, twice bool) error {
	if f := b.Fence; f != nil {
		if err := CheckZone(f.Zone); err != nil {
			return fmt.Errorf("batch fence: %w", err)
		}
		if f.Generation == 0 {
			return fmt.Errorf("batch fence: zone %s: generation 0 is never claimed: %w", f.Zone, ErrInvalid)
		}
	}
	var seen map[resource.Key]struct{}
	if twice {
		seen = make(map[resource.Key]struct{}, len(b.Put)+len(b.Delete))
	}
	for i, r := range b.Put {
		if r == nil {
			return fmt.Errorf("batch put %d: nil resource: %w", i, ErrInvalid)
		}
		k := r.Key()
		if err := CheckKey(k); err != nil {
			return fmt.Errorf("batch put %d: %w", i, err)
		}
		if r.Version == "" {
			return fmt.Errorf("batch put %s: empty version: %w", k, ErrInvalid)
		}
		if !twice {
			continue
		}
		if _, dup := seen[k]; dup {
			return fmt.Errorf("batch put %s: key appears twice: %w", k, ErrInvalid)
		}
		seen[k] = struct{}{}
	}
	for i, k := range b.Delete {
		if err := CheckKey(k); err != nil {
			return fmt.Errorf("batch delete %d: %w", i, err)
		}
		if _, dup := seen[k]; dup {
			return fmt.Errorf("batch delete %s: key appears twice: %w", k, ErrInvalid)
		}
		seen[k] = struct{}{}
	}
	return nil
}

// ConflictError builds the ErrConflict error for key with the version the
// caller expected and the version stored.
func ConflictError(key resource.Key, expected, stored string) error {
	return &resource.VersionConflict{Key: key, Expected: expected, Stored: stored}
}

// FencedError builds the ErrFenced error for a batch of zone fenced with
// generation when current is the zone's current generation.
func FencedError(zone string, generation, current uint64) error {
	if current > generation {
		return fmt.Errorf("zone %s: session generation %d was replaced by %d: %w", zone, generation, current, ErrFenced)
	}
	return fmt.Errorf("zone %s: session generation %d was never claimed (current %d): %w", zone, generation, current, ErrFenced)
}

// LimitError builds the ErrLimitExceeded error for a batch that would leave
// count resources of typ in zone ("" for resources written on this side)
// when limit is the most allowed.
func LimitError(typ, zone string, count, limit int) error {
	where := "zone " + zone
	if zone == "" {
		where = "no zone (written on this side)"
	}
	return fmt.Errorf("%s in %s: the batch would make %d resources, over the limit of %d: %w", typ, where, count, limit, ErrLimitExceeded)
}

// CompareKeys orders keys by (Type, Zone, Mesh, Name), the order List uses.
func CompareKeys(a, b resource.Key) int {
	if c := strings.Compare(a.Type, b.Type); c != 0 {
		return c
	}
	if c := strings.Compare(a.Zone, b.Zone); c != 0 {
		return c
	}
	if c := strings.Compare(a.Mesh, b.Mesh); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}
