package kdssync

import (
	"context"
	"fmt"
	"google.golang.org/protobuf/proto"
	"slices"
	"strconv"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
)

// ServerStream is the serving side of a session's logical stream. Send must
// only enqueue (never wait for the network).
type ServerStream interface {
	Send(*discovery.DeltaDiscoveryResponse) error
	Recv() (*discovery.DeltaDiscoveryRequest, error)
	Context() context.Context
}

// DefaultMaxMessageSize is the default limit on one response's encoded size.
const DefaultMaxMessageSize = 4 << 20

// responseOverhead is reserved in every response for the envelope fields
// (type URL, nonce, removed names are counted separately) and the mux frame.
const responseOverhead = 16 << 10

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
	ix     *Index
	log    hclog.Logger
	ins    *insights.Registry
	maxMsg int
	window int
}

// NewServer returns a server for ix.
func NewServer(ix *Index, opts ...ServerOption) *Server {
	s := &Server{ix: ix, log: hclog.NewNullLogger(), maxMsg: DefaultMaxMessageSize, window: DefaultWindow}
	for _, o := range opts {
		o(s)
	}
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
// stream.Recv and joins it before returning.
func (s *Server) Serve(ctx context.Context, stream ServerStream, peer string, opts ...SessionOption) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	ss := &serverSession{
		Server: s,
		maxMsg: s.maxMsg,
		stream: stream,
		peer:   peer,
		log:    s.log.With("peer", peer),
		types:  map[string]*serveState{},
		notify: make(chan struct{}, 1),
	}
	for _, o := range opts {
		o(ss)
	}
	defer ss.close()

	reqs := make(chan *discovery.DeltaDiscoveryRequest)
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			req, err := stream.Recv()
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
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case req := <-reqs:
			if err := ss.handle(req); err != nil {
				cancel(err)
				return err
			}
		case <-ss.notify:
			for _, st := range ss.types {
				if err := ss.trySend(st); err != nil {
					cancel(err)
					return err
				}
			}
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
	notify chan struct{}
	nonce  uint64
}

// serveState is the server's view of one type on one session.
type serveState struct {
	typ string
	url string
	sub *Subscription
	// known maps wire names to the version the peer holds or was last sent
	// (a NACKed version stays here, so it is not resent until it changes).
	known map[string]string
	// pending holds names to reconsider in the next response.
	pending map[string]struct{}
	// queue is a snapshot of pending in store-key order (mesh, then name),
	// consumed from the front by build. Responses then carry contiguous key
	// ranges, so the receiver's store appends to its tree instead of
	// rewriting pages all over it; names that are no longer pending are
	// skipped, names pending since the snapshot are sorted in when it is
	// used up.
	queue []string
	// inflight holds the nonces of responses sent and not yet ACKed or
	// NACKed, oldest first; at most the server's window.
	inflight []string
	// force makes the next trySend send even an empty response (the
	// answer to an initial request).
	force bool
}

func (ss *serverSession) close() {
	for _, st := range ss.types {
		ss.ix.unsubscribe(st.sub)
	}
}

func (ss *serverSession) handle(req *discovery.DeltaDiscoveryRequest) error {
	typ, err := TypeFromURL(req.GetTypeUrl())
	if err == nil && !ss.ix.Serves(typ) {
		err = fmt.Errorf("type %s is not served here: no plugin on this side registers it", typ)
	}
	if err != nil {
		return ss.refuse(req, typ, err)
	}
	st := ss.types[typ]
	if req.GetResponseNonce() == "" {
		// (Re)subscription: start from the versions the peer holds.
		if st == nil {
			st = &serveState{typ: typ, url: req.GetTypeUrl()}
			st.sub = ss.ix.subscribe(typ, ss.notify)
			ss.types[typ] = st
		}
		st.known = make(map[string]string, len(req.GetInitialResourceVersions()))
		for n, v := range req.GetInitialResourceVersions() {
			st.known[n] = v
		}
		st.pending = make(map[string]struct{}, len(st.known))
		for n := range st.known {
			st.pending[n] = struct{}{}
		}
		ss.ix.mu.RLock()
		for n := range ss.ix.types[typ].entries {
			st.pending[n] = struct{}{}
		}
		ss.ix.mu.RUnlock()
		st.queue = nil
		st.inflight = nil
		st.force = true
		return ss.trySend(st)
	}
	i := -1
	if st != nil {
		i = slices.Index(st.inflight, req.GetResponseNonce())
	}
	if i < 0 {
		ss.log.Trace("ignoring stale ACK/NACK", "type", typ, "nonce", req.GetResponseNonce())
		return nil
	}
	// The peer answers in order, so nothing older can still be owed.
	st.inflight = st.inflight[i+1:]
	if d := req.GetErrorDetail(); d != nil {
		ss.log.Warn("peer rejected a response (NACK); it is resent only when the resources change",
			"type", typ, "nonce", req.GetResponseNonce(), "error", d.GetMessage())
		ss.record(typ, func(ts *insights.TypeState) {
			ts.ResponsesNACKed++
			ts.LastNACK = time.Now()
			ts.LastNACKError = d.GetMessage()
		})
	} else {
		ss.record(typ, func(ts *insights.TypeState) {
			ts.ResponsesACKed++
			ts.LastACK = time.Now()
		})
	}
	return ss.trySend(st)
}

// refuse answers a request for a type this side does not serve with an
// empty response carrying a resource error; the stream stays up.
func (ss *serverSession) refuse(req *discovery.DeltaDiscoveryRequest, typ string, cause error) error {
	if req.GetResponseNonce() != "" {
		return nil // the peer's ACK of our refusal
	}
	ss.log.Warn("peer requested a type this side does not serve; answering empty", "type_url", req.GetTypeUrl(), "reason", cause)
	if typ != "" {
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
		return fmt.Errorf("send refusal for %s: %w", req.GetTypeUrl(), err)
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

// sendNext sends the next response for st, if there is anything to send,
// and reports whether it did.
func (ss *serverSession) sendNext(st *serveState) (bool, error) {
	st.sub.take(st.pending)
	if len(st.pending) == 0 && !st.force {
		return false, nil
	}
	resp, sent := ss.build(st)
	if len(resp.Resources) == 0 && len(resp.RemovedResources) == 0 && !st.force {
		return false, nil
	}
	st.force = false
	ss.nonce++
	resp.Nonce = strconv.FormatUint(ss.nonce, 10)
	if err := ss.stream.Send(resp); err != nil {
		return false, fmt.Errorf("send %s response: %w", st.typ, err)
	}
	st.inflight = append(st.inflight, resp.Nonce)
	held := len(st.known)
	size := proto.Size(resp)
	ss.record(st.typ, func(ts *insights.TypeState) {
		ts.ResponsesSent++
		ts.LargestResponseBytes = max(ts.LargestResponseBytes, size)
		ts.ResourcesSent += uint64(sent)
		ts.LastVersionSent = resp.SystemVersionInfo
		ts.ResourcesHeld = held
	})
	return true, nil
}

// build assembles one response from st.pending, at most maxMsg bytes; what
// does not fit stays pending for the next response.
func (ss *serverSession) build(st *serveState) (*discovery.DeltaDiscoveryResponse, int) {
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
			if _, held := st.known[name]; held {
				n := len(name) + 8
				if size+n > limit && size > 0 {
					break
				}
				size += n
				resp.RemovedResources = append(resp.RemovedResources, name)
				delete(st.known, name)
			}
			delete(st.pending, name)
			st.queue = st.queue[1:]
			continue
		}
		if st.known[name] == e.res.Version {
			delete(st.pending, name)
			st.queue = st.queue[1:]
			continue
		}
		if size+e.size > limit && size > 0 {
			break
		}
		size += e.size + 8
		resp.Resources = append(resp.Resources, e.res)
		st.known[name] = e.res.Version
		delete(st.pending, name)
		st.queue = st.queue[1:]
	}
	if len(st.queue) == 0 {
		st.queue = nil // release the snapshot's backing array
	}
	return resp, len(resp.Resources)
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
