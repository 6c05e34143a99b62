package kdssync

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"golang.org/x/sync/semaphore"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
)

// Admission bounds how many sessions of a process receive their peer's
// initial state at once (decision 0041). It exists for global, the client
// of every zone's zone→global types: after a restart every zone reconnects
// and each sends what global lacks, up to its in-flight budget (three
// max-size responses) at once. What arrives waits in the shared inbound
// pool (mux.InboundPool) until it is applied; when the pool is full a
// receive loop waits for room and, through HTTP/2 flow control, holds its
// zone's Send for as long, which the zone's send timeout ends. A client
// with an Admission sends its first subscriptions only once it holds one
// of the slots, and gives the slot back when every type's initial state
// has arrived, so the zones sending bulk at once are about as many as the
// pool holds.
//
// A type's initial state has arrived at the first response to its "*"
// subscription that the server did not mark MorePending: when it was sent,
// the server had nothing more of the type to send. A slot is
// also given back after the hold limit whatever the state (a peer that
// keeps sending full responses, or none, does not keep it longer), and
// when the session ends. Safe for concurrent use.
type Admission struct {
	slots   int
	sem     *semaphore.Weighted
	maxHold time.Duration
	running atomic.Int64
	waiting atomic.Int64
	waits   atomic.Uint64
	expired atomic.Uint64
}

// DefaultAdmissionHold is how long a session keeps its slot at most.
const DefaultAdmissionHold = 5 * time.Minute

// admissionShare is the part of the pool the admitted sessions' bulk may
// take at most: 1/admissionShare of it, the rest left to the sessions past
// their initial sync.
const admissionShare = 2

// honestDecodedFactor bounds what an honest response counts in the
// inbound pool against its encoded size (decision 0040: 1.24× for 1 KiB
// policies, 1.85× for 200-byte statuses).
const honestDecodedFactor = 2

// AdmissionSlots is how many sessions may receive their initial state at
// once so that what they have in flight together, counted as the inbound
// pool counts it, takes at most half of a pool of poolBytes: each has at
// most DefaultSessionBudgetMessages responses of maxMsg bytes in flight
// (the peer's server's session budget), each counting at most twice its
// size decoded. At least one.
func AdmissionSlots(poolBytes int64, maxMsg int) int {
	perSession := int64(DefaultSessionBudgetMessages) * int64(max(maxMsg, 1)) * honestDecodedFactor
	return int(max(1, poolBytes/admissionShare/perSession))
}

// NewAdmission returns an Admission of slots slots (at least one) whose
// sessions keep a slot at most maxHold (DefaultAdmissionHold if zero or
// negative).
func NewAdmission(slots int, maxHold time.Duration) *Admission {
	slots = max(slots, 1)
	if maxHold <= 0 {
		maxHold = DefaultAdmissionHold
	}
	return &Admission{slots: slots, sem: semaphore.NewWeighted(int64(slots)), maxHold: maxHold}
}

// Slots is how many sessions may receive their initial state at once.
func (a *Admission) Slots() int { return a.slots }

// Running is how many sessions hold a slot now.
func (a *Admission) Running() int { return int(a.running.Load()) }

// Waiting is how many sessions wait for a slot now.
func (a *Admission) Waiting() int { return int(a.waiting.Load()) }

// Waits counts the sessions that found every slot taken and waited.
func (a *Admission) Waits() uint64 { return a.waits.Load() }

// Expired counts the slots given back at the hold limit, before the
// session's initial state had arrived.
func (a *Admission) Expired() uint64 { return a.expired.Load() }

// WithAdmission makes the client take a slot of a before it subscribes
// (see Admission). nil: the client subscribes at once.
func WithAdmission(a *Admission) ClientOption { return func(c *Client) { c.admission = a } }

// admitted is one session's slot: held from admit until release, which
// gives it back once, from the checking stage (every type's initial state
// arrived), the hold timer or Run's end (close).
type admitted struct {
	a     *Admission
	once  sync.Once
	timer *time.Timer
	// pending holds the types whose initial state has not arrived yet;
	// only the checking stage touches it.
	pending map[string]struct{}
}

// admit waits for a slot of c.admission, showing every type as waiting in
// insights meanwhile. It returns the slot (nil without an Admission, or
// without types to receive: nothing would give the slot back before the
// hold limit) or the cause of ctx's end or of the stream's failure.
func (c *Client) admit(ctx context.Context, stream ClientStream) (*admitted, error) {
	a := c.admission
	if a == nil || len(c.types) == 0 {
		return nil, nil
	}
	if !a.sem.TryAcquire(1) {
		a.waits.Add(1)
		a.waiting.Add(1)
		since := time.Now()
		for _, typ := range c.types {
			c.record(typ, func(ts *insights.TypeState) {
				ts.WaitingSince, ts.WaitingBytes, ts.WaitingFor = since, 0, insights.WaitingForSlot
			})
		}
		c.log.Debug("waiting for an initial sync slot", "slots", a.slots)
		err := c.waitForSlot(ctx, stream)
		a.waiting.Add(-1)
		for _, typ := range c.types {
			c.record(typ, clearWaiting(since))
		}
		if err != nil {
			return nil, err
		}
		c.log.Debug("initial sync slot taken", "waited", time.Since(since))
	}
	a.running.Add(1)
	ad := &admitted{a: a, pending: make(map[string]struct{}, len(c.types))}
	for _, typ := range c.types {
		ad.pending[typ] = struct{}{}
	}
	ad.timer = time.AfterFunc(a.maxHold, func() {
		if ad.release() {
			a.expired.Add(1)
			c.log.Info("initial sync still running at the hold limit: its slot goes to the next session", "limit", a.maxHold)
		}
	})
	return ad, nil
}

// unsubscribed refuses resp whole: nothing is subscribed while the session
// waits for a slot (check's refusal of a response to a type not
// subscribed to yet).
func (c *Client) unsubscribed(resp *discovery.DeltaDiscoveryResponse) *checked {
	typ, err := TypeFromURL(resp.GetTypeUrl())
	switch {
	case err != nil:
	case !slices.Contains(c.types, typ):
		err = fmt.Errorf("response for type %s, which this side never subscribed to", typ)
	default:
		err = fmt.Errorf("response for type %s, which this side has not subscribed to yet", typ)
	}
	c.log.Warn("rejecting response", "error", err)
	return &checked{resp: resp, typ: typ, whole: err}
}

// errAdmitted ends waitForSlot's receiving once the slot is taken.
var errAdmitted = errors.New("initial sync slot taken")

// waitForSlot takes one of c.admission's slots, waiting in arrival order.
// Meanwhile it receives what the peer sends and refuses it (a NACK: no
// type is subscribed yet, and this side has not read what it holds), as
// check does for any response to a type not subscribed to: a response left unread would hold its bytes of the
// shared inbound pool for as long as the session waits, and a few peers
// sending responses nobody asked for would fill it and stop every
// session's receive loop. It returns nil holding the slot, else without
// it and the cause of ctx's end or the stream's failure.
func (c *Client) waitForSlot(ctx context.Context, stream ClientStream) error {
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	got := make(chan error, 1)
	go func() {
		err := c.admission.sem.Acquire(wctx, 1)
		got <- err
		if err == nil {
			cancel(errAdmitted)
		}
	}()
	var failed error
	for failed == nil {
		resp, err := stream.RecvContext(wctx)
		if err != nil {
			if !errors.Is(context.Cause(wctx), errAdmitted) {
				failed = fmt.Errorf("receive response: %w", err)
			}
			break
		}
		failed = c.settle(stream, c.unsubscribed(resp))
	}
	cancel(failed)
	if err := <-got; err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return failed
	}
	if failed != nil {
		c.admission.sem.Release(1)
		return failed
	}
	return nil
}

// release gives the slot back if it was not already, and reports whether
// it did.
func (ad *admitted) release() bool {
	released := false
	ad.once.Do(func() {
		ad.a.running.Add(-1)
		ad.a.sem.Release(1)
		released = true
	})
	return released
}

// close gives the slot back when Run ends; nil-safe.
func (ad *admitted) close() {
	if ad == nil {
		return
	}
	ad.timer.Stop()
	ad.release()
}

// arrived is called by the checking stage for each response of typ, once
// its "*" subscription is sent, that carried everything pending: typ's
// initial state is in, and the last type's gives the slot back.
func (ad *admitted) arrived(typ string) {
	if _, ok := ad.pending[typ]; !ok {
		return
	}
	delete(ad.pending, typ)
	if len(ad.pending) == 0 {
		ad.release()
	}
}
