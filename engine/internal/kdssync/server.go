package kdssync

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

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
}

// NewServer returns a server for ix.
func NewServer(ix *Index, opts ...ServerOption) *Server {
	s := &Server{ix: ix, log: hclog.NewNullLogger(), maxMsg: DefaultMaxMessageSize, window: DefaultWindow}
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
			err = ss.handle(req)
			if err == nil && ss.starved {
				err = ss.trySendAll()
			}
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
}

// serveState is the server's view of one type on one session.
type serveState struct {
	typ string
	url string
	sub *Subscription
	// held maps wire names to the version the peer applied: its
	// subscription's initial versions, then every answered response minus
	// what the peer rejected.
	held map[string]string
	// sent overlays held with the responses in flight: for each name they
	// carry, the latest state sent and the nonce of the response.
	sent map[string]sentState
	// rejected maps names to the version the peer refused ("" for a
	// refused removal); such a version is not sent again until it changes.
	rejected map[string]string
	// pending holds names to reconsider in the next response.
	pending map[string]struct{}
	// queue is a snapshot of pending in store-key order (mesh, then name),
	// consumed from the front by build. Responses then carry contiguous key
	// ranges, so the receiver's store appends to its tree instead of
	// rewriting pages all over it; names that are no longer pending are
	// skipped, names pending since the snapshot are sorted in when it is
	// used up.
	queue []string
	// inflight holds the responses sent and not yet ACKed or NACKed, oldest
	// first; at most the server's window.
	inflight []*flight
	// force makes the next trySend send even an empty response (the
	// answer to an initial request).
	force bool
}

// sentState is what a response in flight carries for one name.
type sentState struct {
	version string
	removed bool
	nonce   string
}

// flight is one response in flight.
type flight struct {
	nonce   string
	puts    []flightPut // in the response's order; each name once
	removed []string
	bytes   int64
	// stale: sent before the peer subscribed to the type again; its answer
	// still frees its slot in the window but changes nothing.
	stale bool
}

// flightPut is one resource a response in flight carries.
type flightPut struct {
	name, version string
}

// view returns what the peer holds of name once the responses in flight are
// applied.
func (st *serveState) view(name string) (version string, holds bool) {
	if s, ok := st.sent[name]; ok {
		return s.version, !s.removed
	}
	v, ok := st.held[name]
	return v, ok
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
		return ss.subscribe(st, typ, req, rej)
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
	// Sized for what the peer holds once in sync (every served name), so
	// that an initial sync does not grow the map step by step.
	ss.ix.mu.RLock()
	served := len(ss.ix.types[typ].entries)
	ss.ix.mu.RUnlock()
	st.held = make(map[string]string, max(len(req.GetInitialResourceVersions()), served))
	for n, v := range req.GetInitialResourceVersions() {
		st.held[n] = v
	}
	st.sent = map[string]sentState{}
	st.rejected = map[string]string{}
	for _, r := range rej.GetResources() {
		if r.GetRemoval() {
			st.rejected[r.GetName()] = ""
		} else if r.GetVersion() != "" {
			st.rejected[r.GetName()] = r.GetVersion()
		}
	}
	st.pending = make(map[string]struct{}, len(st.held))
	for n := range st.held {
		st.pending[n] = struct{}{}
	}
	ss.ix.mu.RLock()
	for n := range ss.ix.types[typ].entries {
		st.pending[n] = struct{}{}
	}
	ss.ix.mu.RUnlock()
	st.queue = nil
	st.force = true
	held, rejected := len(st.held), len(st.rejected)
	ss.record(typ, func(ts *insights.TypeState) {
		ts.ResourcesHeld = held
		ts.RejectedCount = rejected
		ts.Rejected = nil
	})
	return ss.trySend(st)
}

// forget drops a response the peer skipped: its names are reconsidered
// against what the peer is known to hold.
func (ss *serverSession) forget(st *serveState, f *flight) {
	ss.release(f)
	for _, p := range f.puts {
		ss.unsend(st, f, p.name)
	}
	for _, name := range f.removed {
		ss.unsend(st, f, name)
	}
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
	var rejected []apitypes.RejectedResource
	var accepted []string
	settle := func(name, version string, removal bool) {
		if s, ok := st.sent[name]; ok && s.nonce == f.nonce {
			delete(st.sent, name)
		}
		if f.stale {
			return
		}
		r, isRefused := refused[name]
		if whole || isRefused {
			st.rejected[name] = version
			rr := apitypes.RejectedResource{Name: name, Version: version, Removal: removal}
			if isRefused {
				rr.Errors = fieldErrors(r.GetErrors())
			} else {
				rr.Errors = []string{truncate(detail.GetMessage())}
			}
			rejected = append(rejected, rr)
			return
		}
		delete(st.rejected, name)
		accepted = append(accepted, name)
		if removal {
			delete(st.held, name)
		} else {
			st.held[name] = version
		}
	}
	for _, p := range f.puts {
		settle(p.name, p.version, false)
	}
	for _, name := range f.removed {
		settle(name, "", true)
	}
	held, nrej := len(st.held), len(st.rejected)
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
func (ss *serverSession) trySend(st *serveState) error {
	for len(st.inflight) < ss.window {
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
	st.sub.take(st.pending)
	if len(st.pending) == 0 && !st.force {
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
	st.force = false
	resp.Nonce = f.nonce
	size := responseSize(resp, f.bytes)
	f.bytes = int64(size)
	ss.budget.release(reserve - f.bytes)
	ss.inflightBytes += f.bytes
	if err := ss.stream.Send(resp); err != nil {
		return false, fmt.Errorf("send %s response: %w", st.typ, err)
	}
	st.inflight = append(st.inflight, f)
	ss.record(st.typ, func(ts *insights.TypeState) {
		ts.ResponsesSent++
		ts.LargestResponseBytes = max(ts.LargestResponseBytes, size)
		ts.ResourcesSent += uint64(len(resp.Resources))
		ts.LastVersionSent = resp.SystemVersionInfo
	})
	return true, nil
}

// build assembles one response from st.pending, at most maxMsg bytes; what
// does not fit stays pending for the next response. It records in f and
// st.sent what the response carries, and in f.bytes the encoded size of
// the response's resources field (see responseSize).
func (ss *serverSession) build(st *serveState, f *flight) *discovery.DeltaDiscoveryResponse {
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: st.url}
	limit := ss.maxMsg - responseOverhead
	size := 0
	ss.ix.mu.RLock()
	defer ss.ix.mu.RUnlock()
	ti := ss.ix.types[st.typ]
	resp.SystemVersionInfo = strconv.FormatUint(ti.revision, 10)
	for {
		if len(st.queue) == 0 {
			if len(st.pending) == 0 {
				break
			}
			st.queue = sortedNames(st.pending)
		}
		name := st.queue[0]
		if _, ok := st.pending[name]; !ok {
			st.queue = st.queue[1:]
			continue
		}
		e, ok := ti.entries[name]
		if !ok {
			rv, refused := st.rejected[name]
			_, holds := st.view(name)
			if holds && (!refused || rv != "") {
				n := len(name) + 8
				if size+n > limit && size > 0 {
					break
				}
				size += n
				resp.RemovedResources = append(resp.RemovedResources, name)
				f.removed = append(f.removed, name)
				st.sent[name] = sentState{removed: true, nonce: f.nonce}
			} else if !holds {
				delete(st.rejected, name) // gone on both sides
			}
			delete(st.pending, name)
			st.queue = st.queue[1:]
			continue
		}
		v := e.res.Version
		if held, holds := st.view(name); (holds && held == v) || (st.rejected[name] == v) {
			delete(st.pending, name)
			st.queue = st.queue[1:]
			continue
		}
		if size+e.size > limit && size > 0 {
			break
		}
		size += e.size + 8
		f.bytes += int64(protowire.SizeTag(responseResourcesField) + protowire.SizeBytes(e.size))
		resp.Resources = append(resp.Resources, e.res)
		f.puts = append(f.puts, flightPut{name, v})
		st.sent[name] = sentState{version: v, nonce: f.nonce}
		delete(st.pending, name)
		st.queue = st.queue[1:]
	}
	if len(st.queue) == 0 {
		st.queue = nil // release the snapshot's backing array
	}
	return resp
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
	slices.SortFunc(names, compareWireNames)
	return names
}

// compareWireNames orders wire names by mesh, then name. Neither a mesh
// nor a name contains '/', so comparing bytes with the separator below
// every other byte gives that order without splitting.
func compareWireNames(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
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
