package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
	"github.com/kds-engine/kds-engine/engine/internal/mux"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/pgstore"
)

// ErrSessionReplaced ends a zone's session on global when a newer session
// of the same zone starts: global keeps exactly one live session per zone,
// across every replica on one PostgreSQL database.
var ErrSessionReplaced = errors.New("replaced by a newer session")

// ErrLeaseExpired ends a zone's session on a global replica whose lease of
// the session was ended by the leader replica because this replica did
// not renew it within the lease expiry (it was cut off from the
// database): other replicas show the zone offline, so the zone must
// connect again.
var ErrLeaseExpired = errors.New("session lease expired")

// leaseStore is a store several global replicas share (pgstore): a
// session's claim is also its lease, renewed by the store, and a lease
// lost to a newer claim on any replica (or expired) is reported.
type leaseStore interface {
	// ClaimLease claims zone's next session generation and makes it this
	// replica's lease, with the zone's address peer.
	ClaimLease(ctx context.Context, zone, peer string) (uint64, error)
	// EndLease marks zone's lease of generation ended.
	EndLease(ctx context.Context, zone string, generation uint64) error
	// OnLeaseLost sets the function told of a lease this replica lost.
	OnLeaseLost(func(pgstore.LeaseLoss))
	// Leases lists every zone's lease, as every replica sees it.
	Leases(ctx context.Context) ([]pgstore.Lease, error)
	// Replica is this replica's id.
	Replica() string
}

var _ leaseStore = (*pgstore.Store)(nil)

// leaseEndTimeout bounds marking a lease ended when its session ends.
const leaseEndTimeout = 2 * time.Second

// liveSessions is global's record of each zone's one live session. A newer
// session replaces the older, which is closed with ErrSessionReplaced; the
// store fence (a session generation claimed in the store, checked inside
// every commit of the zone's writes) makes sure nothing of the older one
// commits after the newer one claimed the zone, whatever the older one was
// doing when it was replaced.
//
// Safe for concurrent use.
type liveSessions struct {
	mu     sync.Mutex
	zones  map[string]*zoneSessions
	claims store.Store
	leases leaseStore // nil unless the store is shared by replicas
	log    hclog.Logger
}

type zoneSessions struct {
	live *mux.Session
	// gen is the generation live claimed (0 until it has); peer is its
	// remote address.
	gen  uint64
	peer string
	// lostUpTo is the highest generation of the zone this replica was
	// told it lost, so that a claim whose loss is reported before the
	// claim returns still ends its session; lastGen is the generation
	// claimed last here (kept when its session is replaced here, so that
	// a successor that ends before it claims still ends that lease).
	lostUpTo uint64
	lastGen  uint64
	// claim serialises the zone's claims, so that a session replaced
	// before it claimed never claims after its successor.
	claim sync.Mutex
	// rejections remembers what global refused of this zone, across its
	// sessions.
	rejections *kdssync.Rejections
}

// newLiveSessions keeps the live sessions whose generations claims hands
// out. When claims is a leaseStore, the claims are leases: a lease lost on
// the database ends its session here, and a session that ends marks its
// lease ended.
func newLiveSessions(claims store.Store, log hclog.Logger) *liveSessions {
	l := &liveSessions{zones: map[string]*zoneSessions{}, claims: claims, log: log}
	if ls, ok := claims.(leaseStore); ok {
		l.leases = ls
		ls.OnLeaseLost(l.lost)
	}
	return l
}

func (l *liveSessions) zone(name string) *zoneSessions {
	z, ok := l.zones[name]
	if !ok {
		z = &zoneSessions{rejections: kdssync.NewRejections()}
		l.zones[name] = z
	}
	return z
}

// start makes sess zone's live session and closes the one it replaces,
// with an error naming where the newer session comes from.
func (l *liveSessions) start(ctx context.Context, zone string, sess *mux.Session) {
	from := streamPeer(ctx)
	l.mu.Lock()
	z := l.zone(zone)
	old := z.live
	z.live, z.gen, z.peer = sess, 0, from
	l.mu.Unlock()
	if old != nil && old != sess {
		if from == "" {
			from = "an unknown address"
		}
		old.Close(fmt.Errorf("%w from %s", ErrSessionReplaced, from))
	}
}

// lost ends the session of zone that held loss.Generation, if it is live
// here: a newer session claimed the zone (on any replica), or its lease
// expired. Called by the lease store; never blocks.
func (l *liveSessions) lost(loss pgstore.LeaseLoss) {
	l.mu.Lock()
	z := l.zone(loss.Zone)
	z.lostUpTo = max(z.lostUpTo, loss.Generation)
	var victim *mux.Session
	if z.live != nil && z.gen == loss.Generation {
		victim = z.live
	}
	l.mu.Unlock()
	if victim != nil {
		victim.Close(lossError(loss))
	}
}

// lossError says why a session whose lease was lost ends.
func lossError(loss pgstore.LeaseLoss) error {
	if loss.Replaced() {
		return fmt.Errorf("%w on global replica %s (session generation %d replaced %d)", ErrSessionReplaced, loss.Replica, loss.By, loss.Generation)
	}
	return fmt.Errorf("%w: this replica did not renew it in time, and other replicas show the zone offline; the zone connects again", ErrLeaseExpired)
}

// end forgets sess and reports whether it was zone's live session (false:
// it had been replaced here, and the zone's state follows its successor).
// The lease of a live session is marked ended (a session whose lease was
// taken over keeps the row as its successor wrote it: the generation
// differs).
func (l *liveSessions) end(zone string, sess *mux.Session) bool {
	l.mu.Lock()
	z, ok := l.zones[zone]
	if !ok || z.live != sess {
		l.mu.Unlock()
		return false
	}
	gen := z.gen
	if gen == 0 {
		gen = z.lastGen // the predecessor's, when it was replaced here
	}
	z.live, z.gen = nil, 0
	l.mu.Unlock()
	if l.leases != nil && gen != 0 {
		// Outside l.mu: lease losses reported meanwhile must not wait.
		ctx, cancel := context.WithTimeout(context.Background(), leaseEndTimeout)
		defer cancel()
		if err := l.leases.EndLease(ctx, zone, gen); err != nil {
			l.log.Warn("cannot mark the session lease ended; it expires instead", "zone", zone, "generation", gen, "error", err)
		}
	}
	return true
}

// isLive reports whether sess is zone's live session.
func (l *liveSessions) isLive(zone string, sess *mux.Session) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	z, ok := l.zones[zone]
	return ok && z.live == sess
}

// claim claims a new session generation for zone in the store on behalf of
// sess, unless sess has been replaced already, and returns the fence its
// writes carry, with the zone's memory of refused resources.
func (l *liveSessions) claim(ctx context.Context, zone string, sess *mux.Session) (*store.Fence, *kdssync.Rejections, error) {
	l.mu.Lock()
	z := l.zone(zone)
	l.mu.Unlock()
	z.claim.Lock()
	defer z.claim.Unlock()
	l.mu.Lock()
	live, peer := z.live == sess, z.peer
	l.mu.Unlock()
	if !live {
		return nil, nil, ErrSessionReplaced
	}
	var (
		gen uint64
		err error
	)
	if l.leases != nil {
		gen, err = l.leases.ClaimLease(ctx, zone, peer)
	} else {
		gen, err = l.claims.ClaimSession(ctx, zone)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("claim zone %s: %w", zone, err)
	}
	l.mu.Lock()
	live = z.live == sess
	lost := z.lostUpTo >= gen
	if live && !lost {
		z.gen, z.lastGen = gen, gen
	}
	l.mu.Unlock()
	switch {
	case !live:
		// Replaced here while claiming: the successor claims next. The
		// lease just claimed is ended unless the successor's claim has
		// already taken the row (the generation differs then).
		if l.leases != nil {
			if err := l.leases.EndLease(ctx, zone, gen); err != nil {
				l.log.Warn("cannot mark the session lease ended; it expires instead", "zone", zone, "generation", gen, "error", err)
			}
		}
		return nil, nil, ErrSessionReplaced
	case lost:
		return nil, nil, fmt.Errorf("%w (session generation %d was taken over as it was claimed)", ErrSessionReplaced, gen)
	}
	return &store.Fence{Zone: zone, Generation: gen}, z.rejections, nil
}
