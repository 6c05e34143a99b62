package engine

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kds-engine/kds-engine/engine/internal/kdsauth"
	"github.com/kds-engine/kds-engine/engine/internal/kdsgrpc"
	"github.com/kds-engine/kds-engine/engine/internal/mux"
	"github.com/kds-engine/kds-engine/engine/internal/token"
)

// revocations ends global's running zone sessions whose token is revoked:
// it keeps each running session with the id of the token it authenticated
// with, and when the revocation file changes (seen by a session starting,
// or by poll at least once a second) it closes those whose token is now
// listed. A session that registers after a change checks the list itself,
// so none slips between the two. Safe for concurrent use; a nil
// *revocations (a zone) does nothing.
type revocations struct {
	list *token.RevocationList // set once by load
	log  hclog.Logger

	mu   sync.Mutex
	live map[*mux.Session]liveSession
}

type liveSession struct{ zone, tokenID string }

func newRevocations(log hclog.Logger) *revocations {
	return &revocations{log: log, live: map[*mux.Session]liveSession{}}
}

// load reads the revocation file (see token.NewRevocationList).
func (r *revocations) load(file string) (*token.RevocationList, error) {
	l, err := token.NewRevocationList(file, r.log, token.WithOnRevocationChange(r.endRevoked))
	if err != nil {
		return nil, err
	}
	r.list = l
	return l, nil
}

// started registers a session that started (the kdsgrpc start hook) and
// ends it at once if its token is revoked by now.
func (r *revocations) started(ev kdsgrpc.SessionEvent) {
	if r == nil || r.list == nil || ev.Stream == nil {
		return
	}
	ls := liveSession{zone: ev.Zone, tokenID: kdsauth.TokenIDFromContext(ev.Stream)}
	r.mu.Lock()
	r.live[ev.Session] = ls
	r.mu.Unlock()
	// Outside r.mu: Revoked may reload the list, which calls endRevoked.
	if r.list.Revoked(ls.tokenID) {
		r.end(ev.Session, ls)
	}
}

// ended forgets a session (the kdsgrpc end hook).
func (r *revocations) ended(ev kdsgrpc.SessionEvent) {
	if r == nil {
		return
	}
	r.mu.Lock()
	delete(r.live, ev.Session)
	r.mu.Unlock()
}

// endRevoked ends every running session whose token id is in ids, the
// revocation list just reloaded.
func (r *revocations) endRevoked(ids []string) {
	revoked := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		revoked[id] = struct{}{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for s, ls := range r.live {
		if _, ok := revoked[ls.tokenID]; ok {
			r.end(s, ls)
		}
	}
}

func (r *revocations) end(s *mux.Session, ls liveSession) {
	r.log.Warn("ending the session of a revoked zone token", "zone", ls.zone, "token_id", ls.tokenID, "file", r.list.File())
	s.Close(fmt.Errorf("%w: zone %q's token %s is listed in the revocation file; give the zone a new token (kds-engine token generate --zone %s)",
		kdsgrpc.ErrCredentialsRevoked, ls.zone, ls.tokenID, ls.zone))
}

// poll looks at the revocation file every interval until ctx ends, so that
// a revocation ends running sessions even while no session starts.
func (r *revocations) poll(ctx context.Context, interval time.Duration) {
	if r == nil || r.list == nil {
		return
	}
	every(ctx, interval, r.list.Refresh)
}
