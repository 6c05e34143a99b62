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
	"github.com/hashicorp/go-hclog"
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
// the server had nothing more of the type to send. A slot is also given
// back when the session ends; after the hold limit whatever the state (a
// peer that keeps sending full responses does not keep it longer); and
// once the session has been idle for the idle limit in all: idle is the
// time this side has answered every response the peer sent that moves
// its initial state forward (see Client.progress) and waits for its next
// one, so a peer that sends nothing, a response now and then, or small
// responses that keep this side busy checking or storing them, keeps a
// slot for the idle limit rather than the hold limit, while a slow check
// or store of the responses that move it forward costs the peer nothing.
// Safe for concurrent use.
type Admission struct {
	slots   int
	sem     *semaphore.Weighted
	maxHold time.Duration
	maxIdle time.Duration
	busy    func() bool
	maxMsg  int
	running atomic.Int64
	waiting atomic.Int64
	waits   atomic.Uint64
	expired atomic.Uint64
	idled   atomic.Uint64
}

// DefaultAdmissionHold is how long a session keeps its slot at most.
const DefaultAdmissionHold = 5 * time.Minute

// DefaultAdmissionIdle is how long in all a session holding a slot may
// leave this side waiting for its peer's next response. An honest zone
// answers an ACK with its next response at once (a round trip and the
// time to read a response from its store), so its idle time grows by
// about a round trip per response this side checks and stores faster than
// the zone sends the next.
const DefaultAdmissionIdle = 30 * time.Second

// busySample is how often the idle clock of a session checks whether this
// side is busy (see AdmissionBusy) while it runs.
const busySample = 250 * time.Millisecond

// AdmissionOption configures an Admission.
type AdmissionOption func(*Admission)

// AdmissionHold sets how long a session keeps its slot at most
// (DefaultAdmissionHold if zero or negative).
func AdmissionHold(d time.Duration) AdmissionOption {
	return func(a *Admission) { a.maxHold = d }
}

// AdmissionIdle sets how long in all a session holding a slot may leave
// this side waiting for its peer's next response (DefaultAdmissionIdle if
// zero or negative).
func AdmissionIdle(d time.Duration) AdmissionOption {
	return func(a *Admission) { a.maxIdle = d }
}

// AdmissionBusy sets a check of this side's own load: while it reports
// true, an idle session keeps its slot, and the time is not counted as
// idle (the check is made every quarter of a second while a session's
// idle clock runs, and when a response arrives). A receive loop waiting
// for room in a full inbound pool has not handed the peer's response over
// yet, which would look like an idle peer; giving slots away then, or
// once the pool has drained, would let more bulk in where there was no
// room. nil: never busy.
func AdmissionBusy(busy func() bool) AdmissionOption {
	return func(a *Admission) { a.busy = busy }
}

// AdmissionMaxMessageSize sets this side's own max message size, which a
// marked response's bulk is measured against (see Client.progress), in
// place of the session's agreed one: a peer lowers the agreed size by
// announcing a smaller one of its own (down to 64 KiB), and with it what
// counts as bulk. Zero or negative: the session's.
func AdmissionMaxMessageSize(n int) AdmissionOption {
	return func(a *Admission) { a.maxMsg = n }
}

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

// NewAdmission returns an Admission of slots slots (at least one).
func NewAdmission(slots int, opts ...AdmissionOption) *Admission {
	slots = max(slots, 1)
	a := &Admission{slots: slots, sem: semaphore.NewWeighted(int64(slots))}
	for _, o := range opts {
		o(a)
	}
	if a.maxHold <= 0 {
		a.maxHold = DefaultAdmissionHold
	}
	if a.maxIdle <= 0 {
		a.maxIdle = DefaultAdmissionIdle
	}
	return a
}

// Slots is how many sessions may receive their initial state at once.
func (a *Admission) Slots() int { return a.slots }

// Hold is how long a session keeps its slot at most.
func (a *Admission) Hold() time.Duration { return a.maxHold }

// Idle is how long in all a session holding a slot may leave this side
// waiting for its peer's next response.
func (a *Admission) Idle() time.Duration { return a.maxIdle }

// Running is how many sessions hold a slot now.
func (a *Admission) Running() int { return int(a.running.Load()) }

// Waiting is how many sessions wait for a slot now.
func (a *Admission) Waiting() int { return int(a.waiting.Load()) }

// Waits counts the sessions that found every slot taken and waited.
func (a *Admission) Waits() uint64 { return a.waits.Load() }

// Expired counts the slots given back at the hold limit, before the
// session's initial state had arrived.
func (a *Admission) Expired() uint64 { return a.expired.Load() }

// Idled counts the slots given back at the idle limit, before the
// session's initial state had arrived.
func (a *Admission) Idled() uint64 { return a.idled.Load() }

// WithAdmission makes the client take a slot of a before it subscribes
// (see Admission). nil: the client subscribes at once.
func WithAdmission(a *Admission) ClientOption { return func(c *Client) { c.admission = a } }

// admitted is one session's slot: held from admit until release, which
// gives it back once, from the checking stage (every type's initial state
// arrived), the hold or idle timer or Run's end (close).
type admitted struct {
	a    *Admission
	log  hclog.Logger
	hold *time.Timer
	// shown clears the slot from the insights.
	shown func()
	// pending holds the types whose initial state has not arrived yet;
	// only the checking stage touches it.
	pending map[string]struct{}

	// The idle clock (see Admission), and everything release touches,
	// under mu: idle runs while idleFrom is set, from the first
	// subscriptions on whenever every response received that moves the
	// initial sync forward (progress) is answered;
	// idleLeft is what the session may still spend idle. done is set once
	// the slot is back.
	mu         sync.Mutex
	done       bool
	idle       *time.Timer
	idleFrom   time.Time
	idleLeft   time.Duration
	unanswered int
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
	since := time.Now()
	if c.ins != nil {
		c.ins.SetInitialSyncSlot(c.peer, since)
	}
	ad := &admitted{a: a, log: c.log, pending: make(map[string]struct{}, len(c.types)), idleLeft: a.maxIdle,
		shown: func() {
			if c.ins != nil {
				c.ins.ClearInitialSyncSlot(c.peer, since)
			}
		}}
	for _, typ := range c.types {
		ad.pending[typ] = struct{}{}
	}
	ad.mu.Lock()
	defer ad.mu.Unlock()
	ad.hold = time.AfterFunc(a.maxHold, func() {
		ad.mu.Lock()
		defer ad.mu.Unlock()
		if ad.release(&a.expired) {
			c.log.Info("initial sync still running at the hold limit: its slot goes to the next session", "limit", a.maxHold)
		}
	})
	return ad, nil
}

// subscribed starts the idle clock once the first subscriptions are sent:
// from then on the peer has something to answer. nil-safe.
func (ad *admitted) subscribed() {
	if ad == nil {
		return
	}
	ad.mu.Lock()
	defer ad.mu.Unlock()
	if ad.done {
		return
	}
	ad.idleFrom = time.Now()
	ad.idle = time.AfterFunc(ad.nextCheck(), ad.idleCheck)
}

// bulkShare: a response marked MorePending moves an initial sync forward
// if it carries at least 1/bulkShare of this side's max message size. An
// honest server fills such a response until the next resource does not
// fit.
const bulkShare = 4

// progress reports whether resp, as it arrives, moves the session's
// initial sync forward: it is of a type whose initial state is still
// pending and whose subscription is sent (else it is refused whole), and
// it is either the last of it (not marked MorePending: it completes the
// type, or answers a part of the held versions) or bulk (its resources
// take at least 1/bulkShare of this side's max message size,
// AdmissionMaxMessageSize, else the session's). Only those stop the idle clock,
// from their arrival until they are answered; the time this side spends
// on any other — checking it included — counts as idle. It is decided
// before the response is checked: a peer sending small responses that
// each take long to check (a busy plugin) would otherwise keep the clock
// stopped at little cost. Receiving stage only (it reads pending and
// c.waiting, which only that stage changes); false without a slot.
func (c *Client) progress(resp *discovery.DeltaDiscoveryResponse) bool {
	ad := c.adm
	if ad == nil {
		return false
	}
	typ, err := TypeFromURL(resp.GetTypeUrl())
	if err != nil {
		return false
	}
	if _, ok := ad.pending[typ]; !ok {
		return false
	}
	if c.notSubscribedYet(typ) {
		return false
	}
	maxMsg := c.maxMsg
	if ad.a.maxMsg > 0 {
		maxMsg = ad.a.maxMsg
	}
	return !morePending(resp) || resourceBytes(resp) >= maxMsg/bulkShare
}

// received stops the idle clock while a response of the peer that moves
// the initial sync forward (progress) is unanswered. Called by the
// receiving stage for each such response as it arrives; nil-safe.
func (ad *admitted) received() {
	if ad == nil {
		return
	}
	ad.mu.Lock()
	defer ad.mu.Unlock()
	ad.unanswered++
	if ad.unanswered == 1 && !ad.done && !ad.idleFrom.IsZero() {
		ad.tally(time.Now())
		ad.idleFrom = time.Time{}
		ad.idle.Stop()
	}
}

// answered runs the idle clock again once every response received
// (counted by received) is answered. Called once per such response,
// after its answer; nil-safe.
func (ad *admitted) answered() {
	if ad == nil {
		return
	}
	ad.mu.Lock()
	defer ad.mu.Unlock()
	ad.unanswered--
	if ad.unanswered == 0 && !ad.done && ad.idle != nil {
		ad.idleFrom = time.Now()
		ad.idle.Reset(ad.nextCheck())
	}
}

// busy reports whether this side is busy now (AdmissionBusy).
func (ad *admitted) busy() bool {
	busy := ad.a.busy
	return busy != nil && busy()
}

// tally counts the time from idleFrom to now as idle unless this side is
// busy now (a response may be waiting for room: the time is this side's),
// goes on counting from now, and reports whether it was busy. The idle
// timer samples the load every busySample while the clock runs, so at most
// that much of a stretch is taken for the wrong one. The caller holds
// ad.mu, with the idle clock running.
func (ad *admitted) tally(now time.Time) (busy bool) {
	busy = ad.busy()
	if !busy {
		ad.idleLeft -= now.Sub(ad.idleFrom)
	}
	ad.idleFrom = now
	return busy
}

// nextCheck is when the idle timer looks again: when the idle time left
// runs out, and every busySample if this side checks its load. The caller
// holds ad.mu.
func (ad *admitted) nextCheck() time.Duration {
	d := max(ad.idleLeft, 0)
	if ad.a.busy != nil {
		d = min(d, busySample)
	}
	return d
}

// idleCheck is the idle timer's: the slot goes back if the session is
// still idle and has used up its idle time, unless this side is busy.
func (ad *admitted) idleCheck() {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	if ad.done || ad.idleFrom.IsZero() {
		return // given back, or a response arrived meanwhile
	}
	busy := ad.tally(time.Now())
	if ad.idleLeft > 0 {
		ad.idle.Reset(ad.nextCheck())
		return
	}
	if busy {
		ad.idle.Reset(busySample)
		return
	}
	if ad.release(&ad.a.idled) {
		ad.log.Info("initial sync idle at the idle limit (every response answered, the peer sent no next one): its slot goes to the next session",
			"limit", ad.a.maxIdle)
	}
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

// release gives the slot back if it was not already, stops its timers,
// and reports whether it did, counting it in why (nil: not counted) before
// the next session can see the slot. The caller holds ad.mu.
func (ad *admitted) release(why *atomic.Uint64) bool {
	if ad.done {
		return false
	}
	ad.done = true
	if why != nil {
		why.Add(1)
	}
	ad.hold.Stop()
	if ad.idle != nil {
		ad.idle.Stop()
	}
	ad.shown()
	ad.a.running.Add(-1)
	ad.a.sem.Release(1)
	return true
}

// close gives the slot back when Run ends; nil-safe.
func (ad *admitted) close() {
	if ad == nil {
		return
	}
	ad.mu.Lock()
	defer ad.mu.Unlock()
	ad.release(nil)
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
		ad.mu.Lock()
		defer ad.mu.Unlock()
		ad.release(nil)
	}
}
