package kdssync

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"github.com/kds-engine/kds-engine/engine/apitypes"
	"github.com/kds-engine/kds-engine/engine/internal/insights"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// ServerStream is the serving side of a session's logical stream. Send must
// only enqueue (never wait for the network).
type ServerStream interface {
	Send(*discovery.DeltaDiscoveryResponse) error
	// RecvContext blocks for the peer's next request; it returns early,
	// with ctx's cause, when ctx ends.
	RecvContext(ctx context.Context) (*discovery.DeltaDiscoveryRequest, error)
	Context() context.Context
}

// DefaultMaxMessageSize is the default limit on one response's encoded size.
const DefaultMaxMessageSize = 4 << 20

// MorePending ends a response's system_version_info (after the index
// revision it was built at) when the server had more of its type pending
// than the response holds: another response of the type follows as the
// window allows. A response without it carried everything pending when it
// was sent; the receiver knows its initial state of the type has arrived
// at the first such response to its subscription (Admission). Peers that
// do not mark responses look as if every response carried everything.
const MorePending = "+"

// responseOverhead is reserved in every response for the envelope fields
// (type URL, nonce, removed names are counted separately) and the mux frame.
const responseOverhead = 16 << 10

// Limits on what one peer can make a server hold or do.
const (
	// MaxNamesPerRequest bounds the names one request carries: initial
	// versions, subscribed and unsubscribed names and rejected entries
	// together. A request over it ends the session (ErrProtocol).
	MaxNamesPerRequest = 200_000
	// MaxUnknownTypes is how many distinct types this side does not serve
	// one session's requests are shown for in insights. Every such request
	// is answered; the entries are dropped when the session ends.
	MaxUnknownTypes = 16
	// DefaultSessionBudgetMessages sizes a session's budget for responses
	// in flight: this many max-size messages (one always fits).
	DefaultSessionBudgetMessages = 3
	// HeldBudgetMessages bounds, in max-size messages (at least
	// DefaultMaxMessageSize each), the bytes of the held names and
	// versions (and refused ones) a session's subscriptions carry that are
	// not the index's own strings, all types together (a name this side
	// serves costs nothing, a version other than the one served costs its
	// length). A subscription sent in parts would otherwise make the server
	// keep versions of any length, MaxNamesPerRequest of them per type;
	// more ends the session (ErrProtocol).
	HeldBudgetMessages = 16
	// DefaultProcessBudget bounds the bytes of responses in flight across
	// all sessions of a server (see Budget).
	DefaultProcessBudget = 128 << 20
)

// ErrProtocol is wrapped in the errors that end a session because the peer
// broke the sync protocol: a request over the limits above, or an answer
// whose rejection list cannot be read.
var ErrProtocol = errors.New("peer broke the sync protocol")

// ServerOption configures a Server.
type ServerOption func(*Server)

// WithServerLogger sets the logger (default: discard).
func WithServerLogger(l hclog.Logger) ServerOption { return func(s *Server) { s.log = l } }

// WithServerInsights records per-type state in reg.
func WithServerInsights(reg *insights.Registry) ServerOption {
	return func(s *Server) { s.ins = reg }
}

// DefaultWindow is how many responses per type a server sends before the
// oldest is ACKed or NACKed. More than one lets the subscriber validate and
// store one response while the next is built and on the wire; each response
// in flight holds a slot in the session's buffers on both sides, so the mux
// is sized types × window + headroom.
const DefaultWindow = 3

// changeSlots is how many responses per type a change notification may
// have in flight (see trySend): one the receiver stores while it checks
// the next.
const changeSlots = 2

// WithServerWindow sets how many responses per type may be in flight
// (default DefaultWindow; values below 1 mean 1). The session's buffers must
// be sized for it (mux.WithWindow).
func WithServerWindow(n int) ServerOption {
	return func(s *Server) { s.window = max(n, 1) }
}

// WithServerBudget shares b, the process-wide budget for responses in
// flight, among this server's sessions (default: a budget of
// DefaultProcessBudget of the server's own). A budget smaller than the
// max message size is raised to it.
func WithServerBudget(b *Budget) ServerOption { return func(s *Server) { s.budget = b } }

// WithSessionBudget bounds the bytes of one session's responses in flight
// (default DefaultSessionBudgetMessages × the session's max message size);
// one response is always allowed.
func WithSessionBudget(n int64) ServerOption { return func(s *Server) { s.sessionBudget = n } }

// WithServerMaxMessageSize bounds each response's encoded size (default
// DefaultMaxMessageSize).
func WithServerMaxMessageSize(n int) ServerOption {
	return func(s *Server) {
		if n > 0 {
			s.maxMsg = n
		}
	}
}

// Server serves the types of an Index to peers, one Serve call per session.
// A Server is safe for concurrent use by many sessions.
type Server struct {
	ix            *Index
	log           hclog.Logger
	ins           *insights.Registry
	maxMsg        int
	window        int
	budget        *Budget
	sessionBudget int64
	sessions      sessions
	// lockChunk is serveLockChunk; tests lower it, and set betweenChunks
	// to change the index while a session has released the lock between
	// chunks (nil otherwise).
	lockChunk     int
	betweenChunks func()
}

// NewServer returns a server for ix.
func NewServer(ix *Index, opts ...ServerOption) *Server {
	s := &Server{ix: ix, log: hclog.NewNullLogger(), maxMsg: DefaultMaxMessageSize, window: DefaultWindow, lockChunk: serveLockChunk}
	for _, o := range opts {
		o(s)
	}
	if s.budget == nil {
		s.budget = NewBudget(DefaultProcessBudget)
	}
	s.budget.atLeast(int64(s.maxMsg))
	return s
}

// SessionOption configures one Serve call.
type SessionOption func(*serverSession)

// WithSessionMaxMessageSize caps this session's responses at n bytes when n
// is smaller than the server's own limit: the peer announced that it
// receives at most n bytes per message. Values <= 0 are ignored.
func WithSessionMaxMessageSize(n int) SessionOption {
	return func(ss *serverSession) {
		if n > 0 && n < ss.maxMsg {
			ss.maxMsg = n
		}
	}
}

// Serve runs the serving side of one session for peer until ctx ends or the
// stream fails, and returns why it ended. It owns one goroutine reading
// stream.RecvContext and joins it before returning: Serve returns once ctx
// ends even if the stream stays open.
func (s *Server) Serve(ctx context.Context, stream ServerStream, peer string, opts ...SessionOption) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ss := &serverSession{
		Server:  s,
		maxMsg:  s.maxMsg,
		stream:  stream,
		peer:    peer,
		log:     s.log.With("peer", peer),
		types:   map[string]*serveState{},
		unknown: map[string]struct{}{},
		notify:  make(chan struct{}, 1),
		wake:    make(chan struct{}, 1),
		queries: make(chan heldQuery),
		done:    make(chan struct{}),

		resuming: map[string]*resumeState{},
	}
	for _, o := range opts {
		o(ss)
	}
	ss.sessionBudget = s.sessionBudget
	if ss.sessionBudget <= 0 {
		ss.sessionBudget = DefaultSessionBudgetMessages * int64(ss.maxMsg)
	}
	defer ss.close()
	s.sessions.add(ss)
	defer func() { s.sessions.remove(ss); close(ss.done) }()

	reqs := make(chan *discovery.DeltaDiscoveryRequest)
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			req, err := stream.RecvContext(ctx)
			if err != nil {
				cancel(fmt.Errorf("receive request: %w", err))
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() { <-recvDone }()

	for {
		var err error
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case req := <-reqs:
			ss.answering = true
			err = ss.handle(req)
			if err == nil && ss.starved {
				err = ss.trySendAll()
			}
			ss.answering = false
		case <-ss.notify:
			err = ss.trySendAll()
		case <-ss.wake:
			err = ss.trySendAll()
		case q := <-ss.queries:
			ss.answer(q)
		}
		if err != nil {
			cancel(err)
			return err
		}
	}
}

type serverSession struct {
	*Server
	// maxMsg shadows the server's limit: the smaller of it and the peer's.
	maxMsg int
	stream ServerStream
	peer   string
	log    hclog.Logger
	types  map[string]*serveState
	// unknown holds the types this side does not serve that the peer asked
	// for and that insights show (at most MaxUnknownTypes).
	unknown map[string]struct{}
	// notify is signalled by the index subscriptions, wake by the process
	// budget when bytes are released.
	notify chan struct{}
	wake   chan struct{}
	// queries carries Held's questions to the loop; done is closed when
	// Serve returns.
	queries chan heldQuery
	done    chan struct{}
	nonce   uint64
	// inflightBytes is the size of every response in flight, all types;
	// at most sessionBudget (one response always fits).
	inflightBytes int64
	sessionBudget int64
	// starved is set when a response could not be built for lack of budget;
	// the next answer retries every type.
	starved bool
	// answering is set while the loop handles a request (an answer to a
	// response, a subscription): trySend may then fill the window with
	// what is pending. Otherwise (a change notification, released budget)
	// it sends only for a type with fewer than changeSlots responses in
	// flight or whose last response was full (see trySend).
	answering bool
	// resuming collects, per type, the held versions a peer sends in parts
	// before the subscription that completes them (see resumePart).
	resuming map[string]*resumeState
	// heldBytes is what the subscriptions' held and refused names and
	// versions copied (not the index's strings) take, collected parts and
	// every type's latest subscription together; at most
	// HeldBudgetMessages × max(maxMsg, DefaultMaxMessageSize).
	heldBytes int64
}

// resumeState is what a peer has said it holds of one type so far, while it
// sends its held versions in parts: requests without the "*" subscription,
// each answered with a response that removes only the part's names this
// side does not serve, the next part only after that answer is ACKed, and
// the subscription ("*") last. Nothing is served and no other removal is
// decided until then.
type resumeState struct {
	held map[string]string
	// rejected keeps names, versions and removal flags only.
	rejected []*kdsv1.RejectedResource
	// bytes is what held, removing and rejected copied (counted in
	// heldBytes).
	bytes int64
	// removing maps the names the last part's answer removes to the
	// versions the peer said it holds, until the peer answers.
	removing map[string]string
	// ack is the nonce of the answer to the last part until the peer ACKs it.
	ack string
}

// serveState is the server's view of one type on one session.
//
// What the peer applied (its subscription's initial versions, then every
// answered response minus what it rejected) is kept sparse: a name the peer
// holds as the index held it at the last sub.take costs nothing, and only
// names whose state differs from that are in overrides. The index's state
// as of the last take is its current state while its lock is held and the
// take happened under that same lock (see catchUp): every reader of the
// peer's holding (build, resolve, the answer to Held, subscribe) works that
// way. A name the index changes is thereby recorded, at the next take, at
// the state the peer held, until the peer answers the response that
// carries the change; a peer in sync costs no entry per name.
type serveState struct {
	typ string
	url string
	sub *Subscription
	// overrides maps the wire names whose state on the peer differs from
	// the index's (as of the last take) to that state: held at another
	// version, held but not served (a removal to send), or not held.
	// Never an entry equal to the index's state.
	overrides map[string]heldState
	// overridesPeak is the most entries overrides held since it was
	// allocated: a Go map keeps its peak size, so a large one is
	// reallocated once it is mostly empty (see compact).
	overridesPeak int
	// heldDelta is how many names the peer holds minus how many the index
	// holds (as of the last take): ResourcesHeld without counting.
	heldDelta int
	// sent overlays held with the responses in flight: for each name they
	// carry, the latest state sent and the nonce of the response; a name
	// of a span has no entry unless a later response carries it again
	// (see inFlight).
	sent map[string]sentState
	// rejected maps names to the version the peer refused ("" for a
	// refused removal); such a version is not sent again until it changes.
	rejected map[string]string
	// pending holds names to reconsider in the next response.
	pending map[string]struct{}
	// pendingPeak is the most entries pending held since it was allocated
	// (see compact).
	pendingPeak int
	// queue is a snapshot of pending in store-key order (mesh, then name),
	// consumed from the front by build. Responses then carry contiguous key
	// ranges, so the receiver's store appends to its tree instead of
	// rewriting pages all over it; names that are no longer pending are
	// skipped, names pending since the snapshot are sorted in when it is
	// used up.
	queue []string
	// fresh is what is left to send of the names the index served when the
	// peer subscribed holding nothing, in store-key order: a list shared
	// read-only with the index and other sessions, consumed from the front
	// by build together with queue. While region is set, every name after
	// cursor (the fresh region) is not held by the peer, whatever the
	// index holds, unless overrides says otherwise, and the names in fresh
	// are still to send: a fresh peer costs no override and no pending
	// entry per name. Overrides stay relative to the index in the region
	// too: a name there that the index holds and that is not in fresh
	// (created since the subscription) has one, "not held" (see changed).
	// When build moves the cursor past a name the index holds it records
	// it as not held: in the response's fresh list if it sends the name
	// from fresh without an override (see spans), else as an override (see
	// passed), so that the peer's holding of every name outside the region
	// is as before; once fresh is used up every name after the cursor that
	// the index holds has an override or is in a span, and the region
	// ends.
	fresh  []string
	cursor string
	region bool
	// freshEntries, when not nil, holds the index's entry of each name in
	// fresh (same positions) as of the subscription's take: the entry of a
	// name not pending since, without a lookup.
	freshEntries []entry
	// spans are the responses (in flight, or being built) that carry
	// names from fresh without an override each, oldest first: until its
	// answer is applied, a name in a span's fresh list (past what the
	// answer settled so far) is not held by the peer unless overrides says
	// otherwise, as in the fresh region (see flight.fresh).
	spans []*flight
	// inflight holds the responses sent and not yet ACKed or NACKed, oldest
	// first; at most the server's window.
	inflight []*flight
	// full is set when the last response sent could not carry everything
	// pending (more than one message's worth was waiting).
	full bool
	// force makes the next trySend send even an empty response (the
	// answer to an initial request).
	force bool
	// heldBytes is the share of the session's heldBytes that the latest
	// subscription's held and refused strings take.
	heldBytes int64
}

// sentState is what a response in flight carries for one name.
type sentState struct {
	version string
	removed bool
	nonce   string
}

// flight is one response in flight.
type flight struct {
	nonce string
	// puts and fresh are what the response carries, each name once: fresh
	// the names build took from the fresh region that had no override and
	// were not pending (in key order), puts the rest. A name in fresh[settled:]
	// is "not held" by the peer without an override (see serveState.spans)
	// until the answer is applied: a fresh sync costs no override per name
	// in flight.
	puts    []flightPut
	fresh   []flightPut
	settled int
	removed []string
	bytes   int64
	// rev is the index's revision of the type while build looked up every
	// entry the response carries, if revOK (it did not change meanwhile):
	// while the revision is still rev, the index holds each of them at the
	// version sent, without a lookup.
	rev   uint64
	revOK bool
	// stale: sent before the peer subscribed to the type again; its answer
	// still frees its slot in the window but changes nothing.
	stale bool
}

// flightPut is one resource a response in flight carries.
type flightPut struct {
	name, version string
}

// catchUp takes the names the index changed since the last take into
// pending and records, for each one the peer held as the index held it,
// that state as an override. The caller holds the index's lock (read or
// write) and keeps it for every lookup of the peer's holding that follows:
// the index's current state is then its state as of this take.
func (st *serveState) catchUp(ti *typeIndex) {
	st.sub.take(func(name string, was heldState) { st.changed(ti, name, was) })
}

// catchUpInChunks is catchUp handling at most lockChunk names per hold of
// the index's read lock, which the caller holds and holds again on return:
// after a resync a take may hand over every served name. Each name handed
// over is brought to its state as of the take (recorded by the
// subscription if it changed while the lock was released, as startFrom
// compares); the names changed meanwhile are then caught up the same way,
// until a take hands over few enough for one hold. No lookup of the
// peer's holding runs before it returns. After catchUpRounds rounds the
// rest is caught up in one hold: writers that change more names per
// release than a round handles would otherwise keep the session catching
// up for as long as they write.
func (ss *serverSession) catchUpInChunks(st *serveState, ti *typeIndex) {
	batch := st.sub.takeOrHandOver(ss.lockChunk, func(name string, was heldState) { st.changed(ti, name, was) })
	ss.catchUpBatch(st, ti, batch)
}

// catchUpBatch is catchUpInChunks for batch, the names changed since the
// record was last brought up to date (each with its state then), taken
// from the subscription by the caller under the lock it holds.
func (ss *serverSession) catchUpBatch(st *serveState, ti *typeIndex, batch map[string]heldState) {
	for round := 1; len(batch) > 0; round++ {
		release := round < catchUpRounds
		// since maps the names changed after batch's take to their
		// state then.
		since := map[string]heldState{}
		collect := func(name string, was heldState) {
			if _, ok := since[name]; !ok {
				since[name] = was
			}
		}
		handled := 0
		for name, was := range batch {
			// Released between names, never before the first: a round
			// then always hands the next fewer names than it handled
			// unless more than one change per release comes in.
			if release && handled > 0 && handled%ss.lockChunk == 0 {
				ss.relock()
				st.sub.take(collect)
			}
			handled++
			now, ok := since[name]
			if !ok {
				now = ti.state(name)
			}
			st.changedTo(name, was, now)
		}
		batch = since
	}
}

// catchUpRounds bounds how many rounds catchUpInChunks releases the
// index's lock in before it catches the rest up in one hold.
const catchUpRounds = 4

// changed records that the index changed name from was to its current
// state since the record was last brought up to date: name is pending,
// and its override (if any) still says what the peer holds. The caller
// holds the index's lock.
func (st *serveState) changed(ti *typeIndex, name string, was heldState) {
	st.changedTo(name, was, ti.state(name))
}

// changedTo is changed with the index's state of name as of the take
// given (now).
func (st *serveState) changedTo(name string, was, now heldState) {
	st.pending[name] = struct{}{}
	// A name's share of heldDelta is its override's holds minus the
	// index's; an implicit name (no override) adds nothing before and,
	// with an override equal to was, nothing after. In the fresh region
	// (and in a span) an implicit name is not held: its share is minus
	// the index's before and after.
	st.heldDelta += b2i(was.holds) - b2i(now.holds)
	switch o, ok := st.overrides[name]; {
	case ok:
		if o == now {
			delete(st.overrides, name)
		}
	case st.notHeldImplicitly(name):
		if now.holds {
			st.setOverride(name, heldState{})
		}
	case was != now:
		st.setOverride(name, was)
	}
}

func (st *serveState) setOverride(name string, h heldState) {
	st.overrides[name] = h
	st.overridesPeak = max(st.overridesPeak, len(st.overrides))
}

// inRegion reports whether name is in the fresh region: after the cursor,
// while fresh is not used up.
func (st *serveState) inRegion(name string) bool {
	return st.region && compareWireNames(name, st.cursor) > 0
}

// notHeldImplicitly reports whether a name without an override is not
// held by the peer whatever the index holds: in the fresh region, or in a
// span.
func (st *serveState) notHeldImplicitly(name string) bool {
	return st.inRegion(name) || st.inSpan(name)
}

// inSpan reports whether name is in a span: among the names a response
// took from the fresh region without an override, and not yet settled by
// its answer.
func (st *serveState) inSpan(name string) bool {
	for _, f := range st.spans {
		if _, ok := f.spanPut(name); ok {
			return true
		}
	}
	return false
}

// spanPut returns name's entry in f's fresh list if name is in f's span
// (in the list, not settled yet).
func (f *flight) spanPut(name string) (flightPut, bool) {
	fresh := f.fresh[f.settled:]
	if len(fresh) == 0 || compareWireNames(name, fresh[0].name) < 0 || compareWireNames(name, fresh[len(fresh)-1].name) > 0 {
		return flightPut{}, false
	}
	i, ok := slices.BinarySearchFunc(fresh, name, func(p flightPut, n string) int { return compareWireNames(p.name, n) })
	if !ok {
		return flightPut{}, false
	}
	return fresh[i], true
}

// inFlight returns the latest state a response in flight carries for
// name: sent's entry, else the span's that holds name (a name of a span
// has no entry in sent unless a later response carries it again).
func (st *serveState) inFlight(name string) (sentState, bool) {
	if s, ok := st.sent[name]; ok {
		return s, true
	}
	for _, f := range st.spans {
		if p, ok := f.spanPut(name); ok {
			return sentState{version: p.version, nonce: f.nonce}, true
		}
	}
	return sentState{}, false
}

// dropSpan removes f from the spans.
func (st *serveState) dropSpan(f *flight) {
	if i := slices.Index(st.spans, f); i >= 0 {
		st.spans = slices.Delete(st.spans, i, i+1)
	}
}

// popFresh removes fresh's first name (and its entry).
func (st *serveState) popFresh() {
	st.fresh = st.fresh[1:]
	if st.freshEntries != nil {
		st.freshEntries = st.freshEntries[1:]
	}
}

// endRegion ends the fresh region once fresh is used up.
func (st *serveState) endRegion() {
	if len(st.fresh) == 0 {
		st.fresh, st.freshEntries, st.cursor, st.region = nil, nil, "", false
	}
}

// passed moves the cursor past name, which build has handled, recording
// the peer as not holding it where the index does and nothing else does
// (under the index's lock, caught up).
func (st *serveState) passed(ti *typeIndex, name string) {
	if !st.inRegion(name) {
		return
	}
	if _, ok := st.overrides[name]; !ok && ti.state(name).holds {
		st.setOverride(name, heldState{})
	}
	st.cursor = name
}

// holding returns what the peer applied of name. The caller holds the
// index's lock and caught up under it.
func (st *serveState) holding(ti *typeIndex, name string) heldState {
	if o, ok := st.overrides[name]; ok {
		return o
	}
	if st.notHeldImplicitly(name) {
		return heldState{}
	}
	return ti.state(name)
}

// setHolding records that the peer applied h for name (under the index's
// lock, caught up).
func (st *serveState) setHolding(ti *typeIndex, name string, h heldState) {
	st.heldDelta += b2i(h.holds) - b2i(st.holding(ti, name).holds)
	// In the fresh region no override means "not held" (build sends a
	// name only once the cursor passed it, so an answer does not land
	// there, but a held state there is kept explicit all the same).
	if h == ti.state(name) && (!h.holds || !st.notHeldImplicitly(name)) {
		delete(st.overrides, name)
		return
	}
	st.setOverride(name, h)
}

// heldCount is how many names the peer holds (under the index's lock,
// caught up).
func (st *serveState) heldCount(ti *typeIndex) int {
	return len(ti.entries) + st.heldDelta
}

// compact reallocates overrides and pending once they are mostly empty
// after having been large (an initial sync fills both with every name):
// a Go map does not give back what its deletes free.
//
// While a fresh peer's initial sync runs (the fresh region), overrides
// holds the names in flight and is refilled by every response: it is kept
// (reallocating it each time it empties cost the map's growth again for
// every response) and reallocated once the sync is done.
func (st *serveState) compact() {
	const small = 1024
	if n := len(st.overrides); st.overridesPeak > small && n < st.overridesPeak/4 && !st.region {
		st.overrides = resized(st.overrides)
		st.overridesPeak = n
	}
	if n := len(st.pending); st.pendingPeak > small && n < st.pendingPeak/4 {
		st.pending = resized(st.pending)
		st.pendingPeak = n
	}
}

// resized copies m into a map sized for what it holds (maps.Clone keeps
// the source's size).
func resized[V any](m map[string]V) map[string]V {
	out := make(map[string]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// view returns what the peer holds of name once the responses in flight are
// applied (under the index's lock, caught up).
func (st *serveState) view(ti *typeIndex, name string) (version string, holds bool) {
	if s, ok := st.inFlight(name); ok {
		return s.version, !s.removed
	}
	h := st.holding(ti, name)
	return h.version, h.holds
}

func (ss *serverSession) close() {
	for _, st := range ss.types {
		ss.ix.unsubscribe(st.sub)
	}
	ss.budget.forget(ss.wake)
	ss.budget.release(ss.inflightBytes)
	if ss.ins != nil && len(ss.unknown) > 0 {
		ss.ins.DropTypes(ss.peer, slices.Collect(maps.Keys(ss.unknown)))
	}
}

// requestNames counts the names a request carries.
func requestNames(req *discovery.DeltaDiscoveryRequest, rej *kdsv1.Rejection) int {
	return len(req.GetInitialResourceVersions()) + len(req.GetResourceNamesSubscribe()) +
		len(req.GetResourceNamesUnsubscribe()) + len(rej.GetResources())
}

func (ss *serverSession) handle(req *discovery.DeltaDiscoveryRequest) error {
	rej, rejErr := RejectionOf(req.GetErrorDetail())
	if n := requestNames(req, rej); n > MaxNamesPerRequest {
		return fmt.Errorf("%w: a request for %.100q carries %d names, the limit is %d", ErrProtocol, req.GetTypeUrl(), n, MaxNamesPerRequest)
	}
	typ, err := TypeFromURL(req.GetTypeUrl())
	if err == nil && !ss.ix.Serves(typ) {
		err = fmt.Errorf("type %s is not served here: no plugin on this side registers it", typ)
	} else if err != nil {
		typ = ""
	}
	if err != nil {
		return ss.refuse(req, typ, err)
	}
	if rejErr != nil {
		return fmt.Errorf("%w: %s request: %w", ErrProtocol, typ, rejErr)
	}
	st := ss.types[typ]
	if req.GetResponseNonce() == "" {
		if !slices.Contains(req.GetResourceNamesSubscribe(), "*") {
			return ss.resumePart(typ, req, rej)
		}
		return ss.subscribe(st, typ, req, rej)
	}
	if rs := ss.resuming[typ]; rs != nil && rs.ack == req.GetResponseNonce() {
		// The answer to a part's answer. A removal the peer refused is a
		// name it still holds: kept, and remembered as refused, as the
		// subscription would have it. Anything else refused changes
		// nothing (the answer carries no resources), and the next part
		// may follow.
		rs.ack = ""
		for _, r := range rej.GetResources() {
			if v, ok := rs.removing[r.GetName()]; ok && r.GetRemoval() {
				rs.held[r.GetName()] = v
				rs.rejected = append(rs.rejected, &kdsv1.RejectedResource{Name: r.GetName(), Removal: true})
				delete(rs.removing, r.GetName())
			}
		}
		var released int64
		for n, v := range rs.removing {
			released += int64(len(n) + len(v))
		}
		rs.bytes -= released
		ss.heldBytes -= released
		rs.removing = nil
		detail := req.GetErrorDetail()
		ss.record(typ, func(ts *insights.TypeState) {
			if detail != nil {
				ts.ResponsesNACKed++
				ts.LastNACK = time.Now()
				ts.LastNACKError = truncate(detail.GetMessage())
				return
			}
			ts.ResponsesACKed++
			ts.LastACK = time.Now()
		})
		return nil
	}
	i := -1
	if st != nil {
		i = slices.IndexFunc(st.inflight, func(f *flight) bool { return f.nonce == req.GetResponseNonce() })
	}
	if i < 0 {
		ss.log.Trace("ignoring stale ACK/NACK", "type", typ, "nonce", req.GetResponseNonce())
		return nil
	}
	// The peer answers in order: responses older than the one answered
	// were skipped, so what they carried is unknown to have arrived.
	for _, f := range st.inflight[:i] {
		ss.forget(st, f)
	}
	f := st.inflight[i]
	st.inflight = st.inflight[i+1:]
	ss.resolve(st, f, req.GetErrorDetail(), rej)
	return ss.trySend(st)
}

// subscribe starts (or restarts) serving typ from the versions the peer
// says it holds. A re-subscription keeps the responses in flight in the
// window: their answers free their slots but change nothing.
func (ss *serverSession) subscribe(st *serveState, typ string, req *discovery.DeltaDiscoveryRequest, rej *kdsv1.Rejection) error {
	if st == nil {
		st = &serveState{typ: typ, url: req.GetTypeUrl()}
		st.sub = ss.ix.subscribe(typ, ss.notify)
		ss.types[typ] = st
	}
	for _, f := range st.inflight {
		f.stale = true
	}
	// What the previous subscription held is replaced below.
	ss.heldBytes -= st.heldBytes
	st.heldBytes = 0
	rs, _, err := ss.collect(typ, req, rej, false)
	if err != nil {
		return err
	}
	delete(ss.resuming, typ)
	st.heldBytes = rs.bytes
	st.sent = map[string]sentState{}
	st.rejected = map[string]string{}
	for _, r := range rs.rejected {
		if r.GetRemoval() {
			st.rejected[r.GetName()] = ""
		} else if r.GetVersion() != "" {
			st.rejected[r.GetName()] = r.GetVersion()
		}
	}
	// Overrides and pending: every name whose state differs between the
	// peer and the index (a name held at the index's version costs
	// nothing, and a change after this point marks it through the
	// subscription). The full map of what the peer said goes. A peer that
	// holds nothing starts from the index's sorted names instead (see
	// serveState.fresh).
	st.queue = nil
	st.fresh, st.freshEntries, st.cursor, st.region = nil, nil, "", false
	st.spans = nil
	var held int
	if len(rs.held) == 0 {
		held = ss.startFresh(st)
	} else {
		held = ss.startFrom(st, rs.held)
		// Outside the lock: pending is the session's own.
		for n := range st.overrides {
			st.pending[n] = struct{}{}
		}
	}
	st.overridesPeak, st.pendingPeak = len(st.overrides), len(st.pending)
	st.force = true
	rejected := len(st.rejected)
	ss.record(typ, func(ts *insights.TypeState) {
		ts.ResourcesHeld = held
		ts.RejectedCount = rejected
		ts.Rejected = nil
	})
	return ss.trySend(st)
}

// startFresh starts the record of a peer that holds nothing of st's type:
// no override and no pending entry, and every name the index serves is in
// the fresh region. The names come sorted from the index, which keeps the
// list for the subscriptions that follow while no name is added or
// removed; otherwise they are copied serveLockChunk at a time under the
// index's read lock and sorted outside it. A name changed, added or
// removed during the copy is marked through the subscription, taken
// before, and caught up as any change (in chunks). It returns the held
// count.
func (ss *serverSession) startFresh(st *serveState) int {
	ix := ss.ix
	ix.mu.RLock()
	ti := ix.types[st.typ]
	st.sub.take(func(string, heldState) {})
	st.overrides = map[string]heldState{}
	st.pending = map[string]struct{}{}
	st.heldDelta = -len(ti.entries)
	names, ents := ti.cachedNames()
	if names == nil && len(ti.entries) > 0 {
		gen, rev := ti.namesGen, ti.revision
		names = make([]string, 0, len(ti.entries))
		ents = make([]entry, 0, len(ti.entries))
		for name, e := range ti.entries {
			names = append(names, name)
			ents = append(ents, e)
			if len(names)%ss.lockChunk == 0 {
				ss.relock()
			}
		}
		ix.mu.RUnlock()
		sortWireNamesWith(names, ents)
		// A name deleted and re-created while the lock was released may
		// come out of the iteration twice (an entry created during a
		// map's iteration may be produced); it is to send once (and is
		// pending: its entry is not used).
		names, ents = compactNames(names, ents)
		ix.mu.RLock()
		kept := ents
		if ti.revision != rev {
			kept = nil // not as of one revision: not for later subscribers
		}
		ti.keepNames(names, kept, gen)
	}
	// ents are the entries as of the take for every name not changed
	// since (every name that is not pending). What changed during the
	// copy (a resync may change every name) is caught up a chunk at a
	// time, as build does.
	st.fresh, st.freshEntries, st.region = names, ents, true
	ss.catchUpInChunks(st, ti)
	st.endRegion()
	held := st.heldCount(ti)
	ix.mu.RUnlock()
	return held
}

// startFrom starts the record of a peer that holds held (wire names to
// versions) of st's type: an override and a pending entry per name whose
// state differs from the index's. The comparison is made against the
// index as of one take of the subscription but releases the index's lock
// every serveLockChunk names: a name changed meanwhile is compared at its
// state as of that take (recorded by the subscription, collected at every
// re-lock), and the changes are then caught up in chunks, as a take
// would be. It returns the held count.
func (ss *serverSession) startFrom(st *serveState, held map[string]string) int {
	ix := ss.ix
	ix.mu.RLock()
	ti := ix.types[st.typ]
	st.sub.take(func(string, heldState) {})
	// Sized for the names not held, so that the map does not grow step by
	// step under the index's lock.
	overrides := make(map[string]heldState, max(len(ti.entries)-len(held), 0))
	st.overrides = overrides
	st.pending = map[string]struct{}{}
	st.heldDelta = len(held) - len(ti.entries)
	// since maps the names changed after the take to their state then.
	since := map[string]heldState{}
	collect := func(name string, was heldState) {
		if _, ok := since[name]; !ok {
			since[name] = was
		}
	}
	steps := 0
	step := func() {
		if steps++; steps%ss.lockChunk == 0 {
			ss.relock()
			st.sub.take(collect)
		}
	}
	for n, v := range held {
		step()
		s, ok := since[n]
		if !ok {
			s = ti.state(n)
		}
		if !s.holds || s.version != v {
			// Held at another version, or held and not served: a removal.
			overrides[n] = heldState{version: v, holds: true}
		}
	}
	for n := range ti.entries {
		step()
		if _, ok := held[n]; ok {
			continue
		}
		if _, ok := since[n]; !ok {
			overrides[n] = heldState{}
		}
	}
	for n, was := range since {
		if _, ok := held[n]; !ok && was.holds {
			overrides[n] = heldState{}
		}
	}
	// What changed during the comparison (a resync may change every
	// name) is caught up a chunk at a time; every later change by build
	// and the others as usual.
	st.sub.take(collect)
	ss.catchUpBatch(st, ti, since)
	h := st.heldCount(ti)
	ix.mu.RUnlock()
	return h
}

// resumePart takes one part of the versions a peer holds of typ (a request
// without the "*" subscription; the subscription that follows completes
// them) and answers it with a response that removes the part's names this
// side does not serve (and carries nothing else), which the peer ACKs before
// it sends the next part. A part sent before the previous answer was
// ACKed, or parts whose kept names (served ones and refusals) come to more
// than this side serves of the type plus MaxNamesPerRequest, end the
// session (ErrProtocol): what parts say is kept until the subscription, so
// it must stay bounded.
func (ss *serverSession) resumePart(typ string, req *discovery.DeltaDiscoveryRequest, rej *kdsv1.Rejection) error {
	rs, removed, err := ss.collect(typ, req, rej, true)
	if err != nil {
		return err
	}
	ss.resuming[typ] = rs
	ss.nonce++
	rs.ack = strconv.FormatUint(ss.nonce, 10)
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: req.GetTypeUrl(), Nonce: rs.ack, RemovedResources: removed}
	if err := ss.stream.Send(resp); err != nil {
		return fmt.Errorf("answer %s subscription part: %w", typ, err)
	}
	ss.record(typ, func(ts *insights.TypeState) { ts.ResponsesSent++ })
	return nil
}

// collect adds what req says the peer holds of typ (and refused earlier)
// to the parts collected so far, and returns the result. Names and
// versions the index holds are stored as the index's own strings, so that
// a peer holding what this side serves costs a map entry, not a copy; the
// strings it copies count against the session's HeldBudgetMessages.
func (ss *serverSession) collect(typ string, req *discovery.DeltaDiscoveryRequest, rej *kdsv1.Rejection, part bool) (*resumeState, []string, error) {
	rs := ss.resuming[typ]
	if rs == nil {
		// Parts are sized for what the peer holds once in sync (every
		// served name), so that they do not grow the map step by step.
		size := len(req.GetInitialResourceVersions())
		if part {
			size = max(size, ss.ix.Len(typ))
		}
		rs = &resumeState{held: make(map[string]string, size)}
	}
	if rs.ack != "" {
		if !part {
			return nil, nil, fmt.Errorf(`%w: the %s subscription arrived before the answer to the previous part of its held versions (a request without "*" and without a nonce, such as an unsubscription) was ACKed`, ErrProtocol, typ)
		}
		return nil, nil, fmt.Errorf("%w: a %s subscription part arrived before the answer to the previous part was ACKed", ErrProtocol, typ)
	}
	versions := req.GetInitialResourceVersions()
	var copied int64
	var removed []string
	// The index's lock is released every lockChunk names: each name is
	// looked up once, and what the subscription makes of them is compared
	// with the index again (see startFrom).
	ss.ix.mu.RLock()
	entries := ss.ix.types[typ].entries
	// over reports (and unlocks) when what is kept is more than the limit;
	// checked as the names are kept, so never more than one over.
	over := func() error {
		limit := len(entries) + MaxNamesPerRequest
		if len(rs.held)+len(rs.rejected)+len(rej.GetResources()) <= limit {
			return nil
		}
		served := len(entries)
		ss.ix.mu.RUnlock()
		return fmt.Errorf("%w: the %s subscription names more than %d held or refused resources (the %d this side serves plus %d)",
			ErrProtocol, typ, limit, served, MaxNamesPerRequest)
	}
	if err := over(); err != nil {
		return nil, nil, err
	}
	looked := 0
	for n, v := range versions {
		if looked++; looked%ss.lockChunk == 0 {
			ss.relock()
		}
		e, ok := entries[n]
		switch {
		case ok && e.res.Version == v:
			n, v = e.res.Name, e.res.Version
		case ok:
			// Held at another version (changed while the peer was away,
			// or every version after this side's store was restored):
			// only the version is a copy.
			n = e.res.Name
			copied += int64(len(v))
		case part:
			// A held name this side does not serve is removed by the
			// part's answer and not kept: however many the peer holds
			// that were deleted while it was away, they cost nothing
			// here.
			removed = append(removed, n)
			continue
		default:
			copied += int64(len(n) + len(v))
		}
		rs.held[n] = v
		if err := over(); err != nil {
			return nil, nil, err
		}
	}
	ss.ix.mu.RUnlock()
	if len(removed) > 0 {
		// Kept until the answer is ACKed, in case the peer refuses a
		// removal: it then still holds that name.
		rs.removing = make(map[string]string, len(removed))
		for _, n := range removed {
			rs.removing[n] = versions[n]
			copied += int64(len(n) + len(versions[n]))
		}
	}
	for _, r := range rej.GetResources() {
		rs.rejected = append(rs.rejected, slimRejected(r))
		copied += int64(len(r.GetName()) + len(r.GetVersion()))
	}
	if err := ss.chargeHeld(rs, typ, copied); err != nil {
		return nil, nil, err
	}
	return rs, removed, nil
}

// chargeHeld counts n more bytes of copied strings against the session's
// held budget (HeldBudgetMessages).
func (ss *serverSession) chargeHeld(rs *resumeState, typ string, n int64) error {
	rs.bytes += n
	ss.heldBytes += n
	msg := max(ss.maxMsg, DefaultMaxMessageSize)
	if limit := int64(HeldBudgetMessages) * int64(msg); ss.heldBytes > limit {
		return fmt.Errorf("%w: the %s subscription brings the held and refused names and versions this side does not serve to %d bytes, more than %d (%d messages of %d bytes; raise --max-message-size on both sides if a peer really holds that much this side no longer serves)",
			ErrProtocol, typ, ss.heldBytes, limit, HeldBudgetMessages, msg)
	}
	return nil
}

// forget drops a response the peer skipped: its names are reconsidered
// against what the peer is known to hold.
func (ss *serverSession) forget(st *serveState, f *flight) {
	ss.release(f)
	ss.unspan(st, f)
	for _, p := range f.fresh {
		ss.unsend(st, f, p.name)
	}
	for _, p := range f.puts {
		ss.unsend(st, f, p.name)
	}
	for _, name := range f.removed {
		ss.unsend(st, f, name)
	}
}

// unspan ends f's span without an answer: each name still in it that the
// index holds is recorded as not held explicitly (an override), under
// the index's read lock released every lockChunk names as resolve does.
func (ss *serverSession) unspan(st *serveState, f *flight) {
	if f.stale || f.settled == len(f.fresh) {
		st.dropSpan(f)
		return
	}
	ss.ix.mu.RLock()
	ti := ss.ix.types[st.typ]
	ss.catchUpInChunks(st, ti)
	for i, n := f.settled, 0; i < len(f.fresh); i, n = i+1, n+1 {
		if n > 0 && n%ss.lockChunk == 0 {
			ss.relock()
			ss.catchUpInChunks(st, ti)
		}
		name := f.fresh[i].name
		if _, ok := st.overrides[name]; !ok && ti.state(name).holds {
			st.setOverride(name, heldState{})
		}
		f.settled = i + 1
	}
	ss.ix.mu.RUnlock()
	st.dropSpan(f)
}

func (ss *serverSession) unsend(st *serveState, f *flight, name string) {
	if s, ok := st.sent[name]; ok && s.nonce == f.nonce {
		delete(st.sent, name)
	}
	if !f.stale {
		st.pending[name] = struct{}{}
	}
}

func (ss *serverSession) release(f *flight) {
	ss.inflightBytes -= f.bytes
	ss.budget.release(f.bytes)
}

// reasonNotSent is what insights show as the reason of a refusal that
// arrived without one, other than the first of its NACK.
const reasonNotSent = "the reason was not sent: the peer cut it to fit its NACK in the size of the response, and its own insights have it"

// resolve applies the peer's answer to f: everything f carried is now held
// by the peer, except what the answer rejects (all of it for an error
// without a Rejection).
func (ss *serverSession) resolve(st *serveState, f *flight, detail *status.Status, rej *kdsv1.Rejection) {
	ss.release(f)
	whole := detail != nil && rej == nil
	refused := map[string]*kdsv1.RejectedResource{}
	for _, r := range rej.GetResources() {
		refused[r.GetName()] = r
	}
	// reasons renders a refused entry's reasons for insights. One sent
	// without them (cut to fit the NACK in the size of its response,
	// rejectionLimit) shows the NACK's message if it is the first, whose
	// reason the message carries, else reasonNotSent.
	reasons := func(r *kdsv1.RejectedResource) []string {
		if errs := fieldErrors(r.GetErrors()); len(errs) > 0 {
			return errs
		}
		if r.GetName() == rej.GetResources()[0].GetName() {
			return []string{truncate(detail.GetMessage())}
		}
		return []string{reasonNotSent}
	}
	var rejected []apitypes.RejectedResource
	accepted := make([]string, 0, len(f.fresh)+len(f.puts)+len(f.removed))
	var ti *typeIndex
	settle := func(name, version string, removal bool) {
		if s, ok := st.sent[name]; ok && s.nonce == f.nonce {
			delete(st.sent, name)
		}
		if f.stale {
			return
		}
		r, isRefused := refused[name]
		if _, was := st.rejected[name]; was || whole || isRefused {
			// What is remembered as refused changes (a refusal replaces
			// or clears an earlier one): the name is reconsidered, since
			// a refusal forgotten no longer keeps what the index holds of
			// it now (re-created since, at the version refused) from
			// being sent.
			st.pending[name] = struct{}{}
		}
		if whole || isRefused {
			st.rejected[name] = version
			rr := apitypes.RejectedResource{Name: name, Version: version, Removal: removal}
			if isRefused {
				rr.Errors = reasons(r)
			} else {
				rr.Errors = []string{truncate(detail.GetMessage())}
			}
			rejected = append(rejected, rr)
			return
		}
		delete(st.rejected, name)
		accepted = append(accepted, name)
		st.setHolding(ti, name, heldState{version: version, holds: !removal})
	}
	// settleFresh is settle for a name of f's span: the peer's state
	// before is its override, if any, else not held; once settled the
	// name leaves the span and the index is its implicit state again.
	settleFresh := func(name, version string) {
		// No entry in sent (see inFlight); one there is a later response's.
		if f.stale {
			return
		}
		r, isRefused := refused[name]
		if _, was := st.rejected[name]; was || whole || isRefused {
			st.pending[name] = struct{}{}
		}
		o, hasOverride := st.overrides[name]
		before := hasOverride && o.holds
		var now heldState
		if f.revOK && ti.revision == f.rev {
			now = heldState{version: version, holds: true} // as sent
		} else {
			now = ti.state(name)
		}
		h := heldState{version: version, holds: true}
		if whole || isRefused {
			st.rejected[name] = version
			rr := apitypes.RejectedResource{Name: name, Version: version}
			if isRefused {
				rr.Errors = reasons(r)
			} else {
				rr.Errors = []string{truncate(detail.GetMessage())}
			}
			rejected = append(rejected, rr)
			h = heldState{}
		} else {
			delete(st.rejected, name)
			accepted = append(accepted, name)
		}
		st.heldDelta += b2i(h.holds) - b2i(before)
		switch {
		case h != now:
			if !hasOverride || o != h {
				st.setOverride(name, h)
			}
		case hasOverride:
			delete(st.overrides, name)
		}
	}
	// The index's lock is released every serveLockChunk names and the
	// record caught up when it is taken back: what the peer applied does
	// not depend on the index, only how it is recorded.
	ss.ix.mu.RLock()
	ti = ss.ix.types[st.typ]
	ss.catchUpInChunks(st, ti)
	settled := 0
	next := func() {
		if settled++; settled%ss.lockChunk == 0 {
			ss.relock()
			ss.catchUpInChunks(st, ti)
		}
	}
	for i, p := range f.fresh {
		next()
		settleFresh(p.name, p.version)
		f.settled = i + 1
	}
	st.dropSpan(f)
	for _, p := range f.puts {
		next()
		settle(p.name, p.version, false)
	}
	for _, name := range f.removed {
		next()
		settle(name, "", true)
	}
	held := st.heldCount(ti)
	ss.ix.mu.RUnlock()
	st.compact()
	nrej := len(st.rejected)
	if detail != nil {
		ss.log.Warn("peer rejected resources (NACK); they are resent only when they change",
			"type", st.typ, "nonce", f.nonce, "rejected", len(rejected), "error", truncate(detail.GetMessage()))
		ss.record(st.typ, func(ts *insights.TypeState) {
			ts.ResponsesNACKed++
			ts.LastNACK = time.Now()
			ts.LastNACKError = truncate(detail.GetMessage())
			ts.ResourcesHeld = held
			ts.RejectedCount = nrej
			ts.Rejected = insights.MergeRejected(ts.Rejected, rejected, accepted)
		})
		return
	}
	ss.record(st.typ, func(ts *insights.TypeState) {
		ts.ResponsesACKed++
		ts.LastACK = time.Now()
		ts.ResourcesHeld = held
		ts.RejectedCount = nrej
		ts.Rejected = insights.MergeRejected(ts.Rejected, nil, accepted)
	})
}

// refuse answers a request for a type this side does not serve with an
// empty response carrying a resource error; the stream stays up. typ is ""
// for a malformed type URL. At most MaxUnknownTypes well-formed unknown
// types per session are shown in insights; every one is answered.
func (ss *serverSession) refuse(req *discovery.DeltaDiscoveryRequest, typ string, cause error) error {
	if req.GetResponseNonce() != "" {
		return nil // the peer's ACK of our refusal
	}
	_, seen := ss.unknown[typ]
	if !seen {
		ss.log.Warn("peer requested a type this side does not serve; answering empty", "type_url", truncate(req.GetTypeUrl()), "reason", cause)
	}
	if typ != "" && !seen && len(ss.unknown) < MaxUnknownTypes {
		ss.unknown[typ] = struct{}{}
		ss.record(typ, func(ts *insights.TypeState) {
			ts.Unknown = true
			ts.Error = "requested by peer: " + cause.Error()
		})
	}
	ss.nonce++
	resp := &discovery.DeltaDiscoveryResponse{
		TypeUrl: req.GetTypeUrl(),
		Nonce:   strconv.FormatUint(ss.nonce, 10),
		ResourceErrors: []*discovery.ResourceError{{
			ResourceName: &discovery.ResourceName{Name: "*"},
			ErrorDetail:  &status.Status{Code: int32(codes.NotFound), Message: cause.Error()},
		}},
	}
	if err := ss.stream.Send(resp); err != nil {
		return fmt.Errorf("send refusal for %.100q: %w", req.GetTypeUrl(), err)
	}
	return nil
}

// trySendAll gives every type the chance to send.
func (ss *serverSession) trySendAll() error {
	ss.starved = false
	for _, st := range ss.types {
		if err := ss.trySend(st); err != nil {
			return err
		}
	}
	return nil
}

// trySend sends responses for st while fewer than the window are in flight
// and there is something to send (or an initial answer is owed).
//
// A change notification (or released budget) sends only while fewer than
// changeSlots responses of st are in flight, or when the last response
// was full (more was pending than one message holds); an answer or a
// subscription fills the window with what is pending. In a steady trickle
// of changes one response is then stored by the receiver while the next is
// checked, and everything that changes meanwhile waits for an answer and
// goes in one response, instead of single changes taking the window's last
// slot: the receiver answers only after the commit that stores a response,
// so a response there could only wait behind the two before it, and each
// costs the receiver a validation call, a store write and an answer. Bulk
// changes still use the whole window. A held change always has a response
// of its type in flight, whose answer sends it.
func (ss *serverSession) trySend(st *serveState) error {
	for len(st.inflight) < ss.window {
		if !ss.answering && len(st.inflight) >= changeSlots && !st.full {
			return nil
		}
		sent, err := ss.sendNext(st)
		if err != nil || !sent {
			return err
		}
	}
	return nil
}

// sendNext sends the next response for st, if there is anything to send
// and the budgets allow it, and reports whether it did.
func (ss *serverSession) sendNext(st *serveState) (bool, error) {
	// Nothing pending and nothing changed: done without the index's lock
	// (build catches up under it).
	if len(st.pending) == 0 && len(st.fresh) == 0 && !st.force && !st.sub.changed() {
		return false, nil
	}
	// Reserve a whole message, then give back what the response did not
	// use. One response always fits the session's budget.
	reserve := int64(ss.maxMsg)
	if ss.inflightBytes > 0 && ss.inflightBytes+reserve > ss.sessionBudget {
		ss.starved = true
		return false, nil
	}
	if !ss.budget.tryAcquire(reserve, ss.wake) {
		return false, nil
	}
	ss.nonce++
	f := &flight{nonce: strconv.FormatUint(ss.nonce, 10)}
	resp := ss.build(st, f)
	if len(resp.Resources) == 0 && len(resp.RemovedResources) == 0 && !st.force {
		ss.budget.release(reserve)
		return false, nil
	}
	st.full = len(st.pending) > 0 || len(st.fresh) > 0
	if st.full {
		resp.SystemVersionInfo += MorePending
	}
	st.force = false
	resp.Nonce = f.nonce
	size := responseSize(resp, f.bytes)
	f.bytes = int64(size)
	ss.budget.release(reserve - f.bytes)
	ss.inflightBytes += f.bytes
	if err := ss.stream.Send(resp); err != nil {
		return false, fmt.Errorf("send %s response: %w", st.typ, err)
	}
	trace(TraceSent, resp, ss.answering)
	st.inflight = append(st.inflight, f)
	ss.record(st.typ, func(ts *insights.TypeState) {
		ts.ResponsesSent++
		ts.LargestResponseBytes = max(ts.LargestResponseBytes, size)
		ts.ResourcesSent += uint64(len(resp.Resources))
		ts.LastVersionSent = strconv.FormatUint(f.rev, 10)
	})
	return true, nil
}

// build assembles one response from st.pending and st.fresh, at most
// maxMsg bytes; what does not fit stays to send in the next response. It
// records in f and st.sent what the response carries, and in f.bytes the
// encoded size of the response's resources field (see responseSize).
//
// The index's read lock is held for at most serveLockChunk names at a
// time: between chunks it is released (a Put waiting for it runs) and the
// record is caught up again when it is taken back. The resources already
// in the response stay as they were (entries are immutable); a name that
// changed meanwhile is pending again and goes in the next response.
func (ss *serverSession) build(st *serveState, f *flight) *discovery.DeltaDiscoveryResponse {
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: st.url}
	limit := ss.maxMsg - responseOverhead
	size := 0
	if len(st.queue) == 0 && len(st.pending) > 0 {
		// Sorted before taking the index's lock: a snapshot of a large
		// pending set (a resync) takes long, and a writer waiting for the
		// lock stops every other reader meanwhile. Names that become
		// pending under the lock are sorted in when it is used up.
		st.pendingPeak = max(st.pendingPeak, len(st.pending))
		st.queue = sortedNames(st.pending)
	}
	defer st.compact() // after the lock is released
	ss.ix.mu.RLock()
	defer ss.ix.mu.RUnlock()
	ti := ss.ix.types[st.typ]
	ss.catchUpInChunks(st, ti)
	resp.SystemVersionInfo = strconv.FormatUint(ti.revision, 10)
	f.rev = ti.revision
	if st.region {
		st.spans = append(st.spans, f)
	}
	handled := 0
names:
	for {
		if handled == ss.lockChunk {
			handled = 0
			ss.relock()
			ss.catchUpInChunks(st, ti)
		}
		for len(st.queue) > 0 {
			if _, ok := st.pending[st.queue[0]]; ok {
				break
			}
			st.queue = st.queue[1:]
		}
		if len(st.queue) == 0 && len(st.pending) > 0 {
			st.pendingPeak = max(st.pendingPeak, len(st.pending))
			if len(st.pending) <= ss.lockChunk {
				st.queue = sortedNames(st.pending)
			} else {
				// Many names became pending under the lock (a resync):
				// sorted outside it (pending is the session's own).
				ss.relockAfter(func() { st.queue = sortedNames(st.pending) })
				handled = 0
				ss.catchUpInChunks(st, ti)
			}
		}
		// The next name in key order: the queue's or fresh's first (or
		// both's).
		var name string
		var fromQueue, fromFresh bool
		switch {
		case len(st.queue) > 0 && len(st.fresh) > 0:
			c := compareWireNames(st.queue[0], st.fresh[0])
			fromQueue, fromFresh = c <= 0, c >= 0
			name = st.queue[0]
			if !fromQueue {
				name = st.fresh[0]
			}
		case len(st.queue) > 0:
			name, fromQueue = st.queue[0], true
		case len(st.fresh) > 0:
			name, fromFresh = st.fresh[0], true
		default:
			break names
		}
		if fromFresh && !fromQueue {
			// A name of the fresh region that has not changed since the
			// subscription (not pending) and has no override: the index
			// holds it, the peer does not, and no response carried it.
			// It is sent without recording anything per name but the
			// response's fresh list (a span: see serveState.spans).
			_, isPending := st.pending[name]
			_, hasOverride := st.overrides[name]
			var e entry
			var ok bool
			if !isPending && !hasOverride {
				if st.freshEntries != nil {
					e, ok = st.freshEntries[0], true
				} else {
					e, ok = ti.entries[name]
				}
			}
			if ok && st.rejected[name] != e.res.Version {
				if size+e.size > limit && size > 0 {
					break
				}
				size += e.size + 8
				handled++
				st.cursor = name
				st.popFresh()
				st.endRegion()
				v := e.res.Version
				f.bytes += int64(protowire.SizeTag(responseResourcesField) + protowire.SizeBytes(e.size))
				if f.fresh == nil {
					// Sized for a message of resources like this one
					// rather than grown step by step.
					n := min(len(st.fresh)+1, limit/(e.size+8)+1)
					f.fresh = make([]flightPut, 0, n)
					resp.Resources = slices.Grow(resp.Resources, n)
				}
				resp.Resources = append(resp.Resources, e.res)
				f.fresh = append(f.fresh, flightPut{name, v}) // in flight: see inFlight
				continue
			}
		}
		if s, ok := st.inFlight(name); ok && s.nonce == f.nonce {
			break // in this response already, changed since: the next one
		}
		handled++
		var put, removal bool
		e, ok := ti.entries[name]
		if !ok {
			rv, refused := st.rejected[name]
			_, holds := st.view(ti, name)
			if holds && (!refused || rv != "") {
				n := len(name) + 8
				if size+n > limit && size > 0 {
					break
				}
				size += n
				removal = true
			} else if !holds {
				delete(st.rejected, name) // gone on both sides
			}
		} else if held, holds := st.view(ti, name); !(holds && held == e.res.Version) && st.rejected[name] != e.res.Version {
			if size+e.size > limit && size > 0 {
				break
			}
			size += e.size + 8
			put = true
		}
		st.passed(ti, name)
		delete(st.pending, name)
		if fromQueue {
			st.queue = st.queue[1:]
		}
		if fromFresh {
			st.popFresh()
			st.endRegion()
		}
		switch {
		case put:
			v := e.res.Version
			f.bytes += int64(protowire.SizeTag(responseResourcesField) + protowire.SizeBytes(e.size))
			resp.Resources = append(resp.Resources, e.res)
			f.puts = append(f.puts, flightPut{name, v})
			st.sent[name] = sentState{version: v, nonce: f.nonce}
		case removal:
			resp.RemovedResources = append(resp.RemovedResources, name)
			f.removed = append(f.removed, name)
			st.sent[name] = sentState{removed: true, nonce: f.nonce}
		}
	}
	if len(st.queue) == 0 {
		st.queue = nil // release the snapshot's backing array
	}
	f.revOK = ti.revision == f.rev
	if len(f.fresh) == 0 {
		st.dropSpan(f)
	}
	return resp
}

// serveLockChunk is how many names a server handles under one hold of the
// index's read lock (building a response, applying an answer, comparing a
// subscription's held versions); it releases the lock between chunks so
// that a Put waiting for it, and every reader queued behind that Put, runs.
const serveLockChunk = 1024

// relock releases the index's read lock, which the caller holds, and takes
// it again: a writer waiting for it runs in between.
func (ss *serverSession) relock() { ss.relockAfter(nil) }

// relockAfter is relock running fn, if not nil, while the lock is released.
//
// It yields the processor before taking the lock back. A session catching
// a peer up runs without blocking for as long as there is work, holding the
// lock nearly all the time, so the scheduler's time-slice preemption would
// most often stop it while it holds the lock; with many sessions runnable
// on few cores it then waits behind all of them, and so does a writer
// waiting for the lock (and every reader behind the writer). Yielding here
// starts each chunk on a fresh time slice.
func (ss *serverSession) relockAfter(fn func()) {
	ss.ix.mu.RUnlock()
	if fn != nil {
		fn()
	}
	if ss.betweenChunks != nil {
		ss.betweenChunks()
	}
	runtime.Gosched()
	ss.ix.mu.RLock()
}

// responseResourcesField is the field number of DeltaDiscoveryResponse's
// resources.
const responseResourcesField = 2

// responseSize returns proto.Size(resp) for a response whose resources
// field encodes to resources bytes (build adds up the index's encoded size
// of each): only the other fields are sized here, instead of walking every
// resource again before the transport marshals them.
func responseSize(resp *discovery.DeltaDiscoveryResponse, resources int64) int {
	rest := &discovery.DeltaDiscoveryResponse{
		SystemVersionInfo:    resp.SystemVersionInfo,
		TypeUrl:              resp.TypeUrl,
		RemovedResources:     resp.RemovedResources,
		RemovedResourceNames: resp.RemovedResourceNames,
		Nonce:                resp.Nonce,
		ControlPlane:         resp.ControlPlane,
		ResourceErrors:       resp.ResourceErrors,
	}
	return proto.Size(rest) + int(resources)
}

func (ss *serverSession) record(typ string, fn func(*insights.TypeState)) {
	if ss.ins != nil {
		ss.ins.UpdateType(ss.peer, typ, fn)
	}
}

// sortedNames returns the wire names in set ordered by mesh, then name: the
// order of the receiving store's keys.
func sortedNames(set map[string]struct{}) []string {
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sortWireNames(names)
	return names
}

// sortWireNames sorts names by compareWireNames.
//
// Names of one type mostly share a prefix (their mesh, the start of their
// name) and differ in a few bytes after it. Each name is read once to pack
// the 7 bytes after the prefix all of them share into an integer whose
// order is compareWireNames' order of those bytes; the names are radix
// sorted by it (9 bits a pass, a pass skipped where every integer has the
// same digit), and only names whose integers are equal are compared in
// full. A sort of 100k names comparing the strings themselves spent most of
// its time on strings that lie all over the heap.
func sortWireNames(names []string) { sortWireNamesWith(names, nil) }

// sortWireNamesWith is sortWireNames moving ents[i] (if ents is not nil)
// with names[i].
func sortWireNamesWith(names []string, ents []entry) {
	n := len(names)
	if n < 256 && ents == nil {
		slices.SortFunc(names, compareWireNames)
		return
	}
	if n < 2 {
		return
	}
	// The prefix is taken from the first names and checked as each name
	// is keyed (one read of each string); a name without it means a
	// second pass with the prefix of all of them.
	prefix := names[0]
	for _, s := range names[1:min(n, 64)] {
		prefix = prefix[:commonPrefix(prefix, s)]
	}
	a, b := make([]keyedName, n), make([]keyedName, n)
	for i, s := range names {
		if !strings.HasPrefix(s, prefix) {
			for _, s := range names[i:] {
				prefix = prefix[:commonPrefix(prefix, s)]
			}
			for i, s := range names {
				a[i] = keyedName{key: wireNameKey(s[len(prefix):]), name: s, at: int32(i)}
			}
			break
		}
		a[i] = keyedName{key: wireNameKey(s[len(prefix):]), name: s, at: int32(i)}
	}
	var count [1 << 9]int
	for shift := 0; shift < 63; shift += 9 {
		clear(count[:])
		for _, x := range a {
			count[x.key>>shift&511]++
		}
		if count[a[0].key>>shift&511] == n {
			continue
		}
		sum := 0
		for d, c := range count {
			count[d] = sum
			sum += c
		}
		for _, x := range a {
			d := x.key >> shift & 511
			b[count[d]] = x
			count[d]++
		}
		a, b = b, a
	}
	for i := 0; i < n; {
		j := i + 1
		for j < n && a[j].key == a[i].key {
			j++
		}
		if j-i > 1 {
			slices.SortFunc(a[i:j], func(x, y keyedName) int { return compareWireNames(x.name, y.name) })
		}
		i = j
	}
	for i := range a {
		names[i] = a[i].name
	}
	if ents != nil {
		sorted := make([]entry, n)
		for i := range a {
			sorted[i] = ents[a[i].at]
		}
		copy(ents, sorted)
	}
}

// compactNames drops each name of sorted names equal to the one before it,
// and its entry (ents at the same positions).
func compactNames(names []string, ents []entry) ([]string, []entry) {
	k := 0
	for i := range names {
		if i > 0 && names[i] == names[k-1] {
			continue
		}
		names[k], ents[k] = names[i], ents[i]
		k++
	}
	return names[:k], ents[:k]
}

type keyedName struct {
	key  uint64
	name string
	at   int32 // the name's position before the sort
}

// commonPrefix returns the length of the longest common prefix of a and b.
func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	i := 0
	for ; i+8 <= n && load64(a, i) == load64(b, i); i += 8 {
	}
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

// wireNameKey packs the first 7 bytes of s into 9 bits each, most
// significant first: 0 past the end of s, 1 for '/', the byte plus 2
// otherwise. Keys compare as compareWireNames compares those bytes (a
// name that ends first is first, '/' is below every other byte).
func wireNameKey(s string) uint64 {
	var k uint64
	for i := range 7 {
		var d uint64
		if i < len(s) {
			d = uint64(s[i]) + 2
			if s[i] == '/' {
				d = 1
			}
		}
		k = k<<9 | d
	}
	return k
}

// compareWireNames orders wire names by mesh, then name. Neither a mesh
// nor a name contains '/', so comparing bytes with the separator below
// every other byte gives that order without splitting.
//
// The common prefix is skipped eight bytes at a time (names of one type
// mostly share their mesh and the start of their name); a sort of 100k
// names spent most of its time comparing them one byte at a time.
func compareWireNames(a, b string) int {
	n := min(len(a), len(b))
	i := 0
	for ; i+8 <= n; i += 8 {
		if load64(a, i) != load64(b, i) {
			break
		}
	}
	return compareWireNamesFrom(a, b, i)
}

// load64 is the 8 bytes of s at i (i+8 <= len(s)), in memory order.
func load64(s string, i int) uint64 {
	return binary.LittleEndian.Uint64(unsafe.Slice(unsafe.StringData(s[i:]), 8))
}

// compareWireNamesBytes is compareWireNames one byte at a time.
func compareWireNamesBytes(a, b string) int { return compareWireNamesFrom(a, b, 0) }

// compareWireNamesFrom is compareWireNames for a and b whose first i
// bytes are equal.
func compareWireNamesFrom(a, b string, i int) int {
	n := min(len(a), len(b))
	for ; i < n; i++ {
		if ca, cb := a[i], b[i]; ca != cb {
			switch {
			case ca == '/':
				return -1
			case cb == '/':
				return 1
			case ca < cb:
				return -1
			default:
				return 1
			}
		}
	}
	return len(a) - len(b)
}
