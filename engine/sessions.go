package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc/peer"

	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
	"github.com/kds-engine/kds-engine/engine/internal/mux"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// ErrSessionReplaced ends a zone's session on global when a newer session
// of the same zone starts: global keeps exactly one live session per zone.
var ErrSessionReplaced = errors.New("replaced by a newer session")

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
}

type zoneSessions struct {
	live *mux.Session
	// claim serialises the zone's claims, so that a session replaced
	// before it claimed never claims after its successor.
	claim sync.Mutex
	// rejections remembers what global refused of this zone, across its
	// sessions.
	rejections *kdssync.Rejections
}

func newLiveSessions(claims store.Store) *liveSessions {
	return &liveSessions{zones: map[string]*zoneSessions{}, claims: claims}
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
	l.mu.Lock()
	z := l.zone(zone)
	old := z.live
	z.live = sess
	l.mu.Unlock()
	if old != nil && old != sess {
		from := "an unknown address"
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			from = p.Addr.String()
		}
		old.Close(fmt.Errorf("%w from %s", ErrSessionReplaced, from))
	}
}

// end forgets sess and reports whether it was zone's live session (false:
// it had been replaced, and the zone's state follows its successor).
func (l *liveSessions) end(zone string, sess *mux.Session) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	z, ok := l.zones[zone]
	if !ok || z.live != sess {
		return false
	}
	z.live = nil
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
	if !l.isLive(zone, sess) {
		return nil, nil, ErrSessionReplaced
	}
	gen, err := l.claims.ClaimSession(ctx, zone)
	if err != nil {
		return nil, nil, fmt.Errorf("claim zone %s: %w", zone, err)
	}
	return &store.Fence{Zone: zone, Generation: gen}, z.rejections, nil
}
