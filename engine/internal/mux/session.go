package mux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kds-engine/kds-engine/engine/internal/kdswire"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// Defaults for the session options.
const (
	// DefaultHeadroom is added to the number of registered types to size each
	// logical stream's buffers. See the package documentation.
	DefaultHeadroom = 16
	// DefaultSendTimeout bounds one gRPC Send.
	DefaultSendTimeout = time.Minute
	// DefaultMaxMessageSize is the largest message a session sends (and the
	// gRPC default for what it receives).
	DefaultMaxMessageSize = 4 << 20
	// DefaultInboundBudgetMessages sizes each logical stream's inbound byte
	// budget per session: this many messages of the session's max message
	// size. See the package documentation.
	DefaultInboundBudgetMessages = 16
	// DefaultInboundPoolBytes is the default size of an InboundPool, the
	// byte budget all sessions' inbound queues share.
	DefaultInboundPoolBytes = 256 << 20
	// MessageOverhead is charged against the inbound byte budgets for every
	// queued message on top of what it holds (kdswire.Measure): the
	// decoded message's own structures, so that many tiny messages cannot
	// hold more memory than the budgets say.
	MessageOverhead = 256
	// ResponseBudgetMultiple sizes the inbound budget of the stream a side
	// subscribes on (the peer's responses) against the other's: responses
	// are counted at what they hold decoded, 1.2-3.9 times their encoding
	// for what the sync layer sends (1 KiB policies, 200-byte statuses
	// 1.85, resources of an empty spec 3.94), so twice the budget keeps as
	// many max-size responses of statuses as the budget held counted at
	// their encoding. See the package documentation.
	ResponseBudgetMultiple = 2
)

// Sentinel errors. The error a session ends with wraps exactly one of them
// (or the error that came from the stream or the context), so callers branch
// with errors.Is.
var (
	// ErrBufferFull: a logical stream's send buffer was full when a message
	// was handed to it. The session ends.
	ErrBufferFull = errors.New("send buffer full")
	// ErrInboundFull: the peer sent more to a logical stream than its
	// inbound queue holds, in messages or in bytes, i.e. it ignored
	// application-level flow control. The session ends.
	ErrInboundFull = errors.New("inbound queue full")
	// ErrSendTimeout: a gRPC Send did not return within the send timeout.
	// The session ends.
	ErrSendTimeout = errors.New("send timeout")
	// ErrMessageTooLarge: a message handed to Send exceeds the max message
	// size. Send returns it; the session goes on.
	ErrMessageTooLarge = errors.New("message too large")
	// ErrSessionClosed: the session was closed, by the peer (the stream
	// ended) or locally by Close.
	ErrSessionClosed = errors.New("session closed")
	// ErrUnknownMessage: the peer sent a Message with neither a request nor
	// a response. The session ends.
	ErrUnknownMessage = errors.New("message with unknown kind")
	// ErrMalformedMessage: a request's resource lists, kept encoded while
	// it waited in the inbound queue (kdswire.DeferMin), did not decode
	// when it was taken off. The session ends.
	ErrMalformedMessage = errors.New("malformed message")
)

var errRunTwice = errors.New("mux: Run called twice")

// Stream is the bidirectional message stream a Session runs on. It is
// satisfied by both the gRPC client stream and the gRPC server stream of
// kdsv1.KDS/Session. The session calls Send from one goroutine and Recv from
// another, never concurrently with themselves.
type Stream interface {
	Send(*kdsv1.Message) error
	Recv() (*kdsv1.Message, error)
	Context() context.Context
}

// Option configures a Session.
type Option func(*options)

type options struct {
	headroom       int
	window         int
	sendTimeout    time.Duration
	maxMessageSize int
	peer           bool
	peerTypes      int
	peerMaxSize    int
	inboundBudget  int
	pool           *InboundPool
	log            hclog.Logger
	abort          func()
	observeSend    func(server bool, bytes int, d time.Duration)
	coalesce       bool
}

// WithCoalesce lets the send loop put several queued messages into one
// stream message (a kdsv1.Batch) when more than one is ready, up to the
// session's max message size and MaxBatchMessages. Only for a peer that
// announced it accepts batches (kdsgrpc: kds-coalesce); every session
// accepts batches it receives, whatever this option says.
func WithCoalesce(on bool) Option { return func(o *options) { o.coalesce = on } }

// MaxBatchMessages bounds the messages the send loop puts into one batch.
const MaxBatchMessages = 64

// WithHeadroom sets the headroom added to the number of types to size each
// logical stream's buffers (default DefaultHeadroom). Negative values are
// treated as 0.
func WithHeadroom(n int) Option {
	return func(o *options) { o.headroom = max(n, 0) }
}

// WithWindow sets how many messages per type the protocol above keeps in
// flight before an answer (default 1): a delta-xDS server's responses per
// type before the ACK/NACK. Each logical stream's buffers hold
// types × window + headroom messages. Values below 1 mean 1.
func WithWindow(n int) Option {
	return func(o *options) { o.window = max(n, 1) }
}

// WithSendTimeout sets how long one gRPC Send may take before the session
// ends with ErrSendTimeout (default DefaultSendTimeout). Zero or negative
// keeps the default.
func WithSendTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.sendTimeout = d
		}
	}
}

// WithLogger sets the logger; the session logs under the sub-logger "mux".
// Nil keeps the default, which discards.
func WithLogger(l hclog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithMaxMessageSize sets this side's max message size, in encoded bytes
// (default DefaultMaxMessageSize): the largest message it receives, and
// the largest Send accepts unless the peer announced a smaller one
// (WithPeer). Zero or negative keeps the default. Configure the gRPC
// transport with the same limit for what is received.
func WithMaxMessageSize(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxMessageSize = n
		}
	}
}

// WithPeer sets the figures the peer announced when the session started:
// its registered type count and its max message size. The logical stream
// this side serves is sized from the peer's type count, Send accepts at
// most the smaller of the two max message sizes (see the package
// documentation). A negative types or a size of zero or less stands for a
// figure the peer did not announce and is taken to be this side's. Without
// WithPeer, the peer is assumed to be like this side. The figures must have
// been validated by the caller (absurd values are not to be used to size
// anything).
func WithPeer(types, maxMessageSize int) Option {
	return func(o *options) {
		o.peer, o.peerTypes, o.peerMaxSize = true, types, maxMessageSize
	}
}

// WithInboundBudget sets how many bytes the inbound queue of the stream this
// side serves may hold (what its requests hold, their encoded size, plus
// MessageOverhead per message) before the session ends with
// ErrInboundFull (default DefaultInboundBudgetMessages × the session's max
// message size); the queue of the peer's responses, counted at what they
// hold decoded, may hold ResponseBudgetMultiple times that. Values below
// this side's max message size plus MessageOverhead are raised to it, so
// that any request gRPC accepted fits an empty queue. Zero or negative
// keeps the default.
func WithInboundBudget(bytes int) Option {
	return func(o *options) { o.inboundBudget = bytes }
}

// WithInboundPool makes the session's inbound queues draw on p, a byte
// budget shared with other sessions: when p is exhausted, the receive loop
// waits for room. Nil (the default) means no shared budget.
func WithInboundPool(p *InboundPool) Option {
	return func(o *options) { o.pool = p }
}

// WithSendObserver sets a function the sender goroutine calls after every
// successful gRPC Send, with which logical stream the message belonged to
// (server: the stream this side serves), its encoded size and how long Send
// took. It runs on the sender goroutine: it must be cheap and never block
// (a metrics histogram observation, not I/O).
func WithSendObserver(f func(server bool, bytes int, d time.Duration)) Option {
	return func(o *options) { o.observeSend = f }
}

// WithAbort sets a function the session calls once when it ends, before Run
// joins its goroutines. It must make a Send blocked in flow control and a
// blocked Recv return: for a gRPC client stream, cancel the stream's context;
// for a gRPC server stream, make the RPC handler return. Without it, Run
// relies on the stream ending by itself.
func WithAbort(f func()) Option {
	return func(o *options) { o.abort = f }
}

// Session multiplexes two logical delta-xDS streams on one Stream. Create it
// with NewSession, run it with Run, use Server and Client from any goroutine.
// All methods are safe for concurrent use.
type Session struct {
	stream  Stream
	log     hclog.Logger
	params  Params
	timeout time.Duration
	// maxSize is the largest message Send accepts: the smaller of the two
	// sides' max message sizes.
	maxSize int
	pool    *InboundPool
	abort   func()
	// observeSend, if set, is called after every successful Send, once
	// for each message it carried.
	observeSend func(server bool, bytes int, d time.Duration)
	// coalesce: the peer accepts batches (WithCoalesce).
	coalesce bool

	ctx    context.Context
	cancel context.CancelCauseFunc

	server *ServerStream
	client *ClientStream

	started atomic.Bool
	// inSendSince is the UnixNano time the current Stream.Send started, or 0
	// when the sender is not inside Send.
	inSendSince  atomic.Int64
	sendNanos    atomic.Int64
	sendTimeouts atomic.Uint64
	sendTimer    *time.Timer
}

// Params are a session's effective figures: this side's, the peer's as
// announced, and the sizes that follow from both.
type Params struct {
	// Types is the number of types registered on this side, PeerTypes the
	// number the peer announced (Types if it announced none).
	Types, PeerTypes int
	// PeerAnnounced is false when the peer announced nothing (WithPeer was
	// not given) and its figures are assumed to be this side's.
	PeerAnnounced bool
	// Window is the responses per type in flight before an answer,
	// Headroom the extra slots per queue.
	Window, Headroom int
	// ServerCapacity bounds, in messages, the send buffer and the inbound
	// queue of the logical stream this side serves: PeerTypes × Window +
	// Headroom. ClientCapacity bounds those of the stream it subscribes
	// on: Types × Window + Headroom. Each is at least 1.
	ServerCapacity, ClientCapacity int
	// LocalMaxMessageSize is this side's max message size (the largest it
	// receives), PeerMaxMessageSize the peer's as announced (this side's
	// if it announced none). MaxMessageSize, the smaller, is the largest
	// message the session sends.
	LocalMaxMessageSize, PeerMaxMessageSize, MaxMessageSize int
	// InboundBudget is the most bytes the inbound queue of the stream this
	// side serves (the peer's requests) holds before the session ends with
	// ErrInboundFull. ResponseBudget, ResponseBudgetMultiple times that, is
	// the same for the stream it subscribes on (the peer's responses).
	InboundBudget, ResponseBudget int
	// PeerInboundBudget is what the peer's inbound queue for each logical
	// stream holds at least, in bytes: DefaultInboundBudgetMessages ×
	// MaxMessageSize, the figure the peer derives from the same agreed
	// size (it raises its own only for a larger max message size of its
	// own). What this side sends on a logical stream and the peer has not
	// yet taken off that queue must stay below it, or the peer ends the
	// session with ErrInboundFull.
	PeerInboundBudget int
	// PoolLimit is the size of the shared InboundPool, 0 without one.
	PoolLimit int64
	// Coalesce: the send loop batches ready messages (WithCoalesce).
	Coalesce bool
}

// ServerFormula and ClientFormula spell out how the capacities follow from
// the figures, for logs and errors.
func (p Params) ServerFormula() string {
	return fmt.Sprintf("%d peer types × %d in flight + %d headroom = %d", p.PeerTypes, p.Window, p.Headroom, p.ServerCapacity)
}

// ClientFormula: see ServerFormula.
func (p Params) ClientFormula() string {
	return fmt.Sprintf("%d types × %d in flight + %d headroom = %d", p.Types, p.Window, p.Headroom, p.ClientCapacity)
}

// NewSession returns a session on stream for a side with types registered
// resource types. Nothing runs until Run. The session's context carries
// stream.Context()'s values; the session ends when the stream does (Recv
// fails) or when Run's context ends.
func NewSession(stream Stream, types int, opts ...Option) *Session {
	o := options{
		headroom:       DefaultHeadroom,
		window:         1,
		sendTimeout:    DefaultSendTimeout,
		maxMessageSize: DefaultMaxMessageSize,
		log:            hclog.NewNullLogger(),
	}
	for _, opt := range opts {
		opt(&o)
	}
	p := Params{
		Types: max(types, 0), PeerAnnounced: o.peer,
		Window: o.window, Headroom: o.headroom,
		LocalMaxMessageSize: o.maxMessageSize,
	}
	p.PeerTypes, p.PeerMaxMessageSize = p.Types, p.LocalMaxMessageSize
	if o.peer && o.peerTypes >= 0 {
		p.PeerTypes = o.peerTypes
	}
	if o.peer && o.peerMaxSize > 0 {
		p.PeerMaxMessageSize = o.peerMaxSize
	}
	p.ServerCapacity = max(p.PeerTypes*p.Window+p.Headroom, 1)
	p.ClientCapacity = max(p.Types*p.Window+p.Headroom, 1)
	p.MaxMessageSize = min(p.LocalMaxMessageSize, p.PeerMaxMessageSize)
	p.Coalesce = o.coalesce
	p.InboundBudget = o.inboundBudget
	if p.InboundBudget <= 0 {
		p.InboundBudget = DefaultInboundBudgetMessages * p.MaxMessageSize
	}
	p.InboundBudget = max(p.InboundBudget, p.LocalMaxMessageSize+MessageOverhead)
	p.ResponseBudget = ResponseBudgetMultiple * p.InboundBudget
	p.PeerInboundBudget = DefaultInboundBudgetMessages * p.MaxMessageSize
	if o.pool != nil {
		p.PoolLimit = o.pool.Limit()
	}
	s := &Session{
		stream:  stream,
		log:     o.log.Named("mux"),
		params:  p,
		timeout: o.sendTimeout,
		maxSize: p.MaxMessageSize,
		pool:    o.pool,
		abort:   o.abort,

		observeSend: o.observeSend,
		coalesce:    o.coalesce,
	}
	// Not cancelled with the stream's context: when the stream ends, Recv
	// reports why (a gRPC status), which is a better cause than "context
	// canceled". Values (metadata, peer) are kept.
	s.ctx, s.cancel = context.WithCancelCause(context.WithoutCancel(stream.Context()))
	srvFormula, cliFormula := p.ServerFormula(), p.ClientFormula()
	s.server = &ServerStream{s: s}
	s.server.out.init("server", p.ServerCapacity, srvFormula)
	s.server.in.init("server", "request", p.ServerCapacity, srvFormula, int64(p.InboundBudget))
	s.client = &ClientStream{s: s}
	s.client.out.init("client", p.ClientCapacity, cliFormula)
	s.client.in.init("client", "response", p.ClientCapacity, cliFormula, int64(p.ResponseBudget))
	return s
}

// Params returns the session's effective figures.
func (s *Session) Params() Params { return s.params }

// Capacity is the larger of the two logical streams' capacities
// (Params.ServerCapacity, Params.ClientCapacity), for a one-number summary.
func (s *Session) Capacity() int { return max(s.params.ServerCapacity, s.params.ClientCapacity) }

// Server is the logical stream this side serves: it receives the peer's
// requests and sends responses.
func (s *Session) Server() *ServerStream { return s.server }

// Client is the logical stream this side subscribes on: it sends requests and
// receives the peer's responses.
func (s *Session) Client() *ClientStream { return s.client }

// Context is the session's context; it is cancelled, with the session's
// error as cause, when the session ends.
func (s *Session) Context() context.Context { return s.ctx }

// Done is closed when the session ends.
func (s *Session) Done() <-chan struct{} { return s.ctx.Done() }

// Err returns nil while the session runs and the error it ended with after.
func (s *Session) Err() error {
	if s.ctx.Err() == nil {
		return nil
	}
	return context.Cause(s.ctx)
}

// Close ends the session with cause; a nil cause means ErrSessionClosed. Only
// the first cause is kept. Close does not wait: Run returns once everything is
// joined.
func (s *Session) Close(cause error) {
	if cause == nil {
		cause = fmt.Errorf("%w: closed locally", ErrSessionClosed)
	}
	s.cancel(cause)
}

// Run starts the sender and receiver goroutines, blocks until the session
// ends (a failure, Close, the peer closing the stream, or ctx ending), joins
// both and returns the session's error, which is never nil: a stream the peer
// closed yields an error wrapping ErrSessionClosed. Run may be called once;
// later calls return an error at once.
func (s *Session) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errRunTwice
	}
	stop := context.AfterFunc(ctx, func() {
		cause := context.Cause(ctx)
		s.Close(fmt.Errorf("%w: %w", ErrSessionClosed, cause))
	})
	defer stop()

	p := s.params
	s.log.Debug("session started", "server_capacity", p.ServerFormula(), "client_capacity", p.ClientFormula(),
		"send_timeout", s.timeout, "max_message_size", p.MaxMessageSize, "inbound_budget", p.InboundBudget,
		"response_budget", p.ResponseBudget, "peer_inbound_budget", p.PeerInboundBudget, "inbound_pool", p.PoolLimit)

	s.sendTimer = time.AfterFunc(time.Hour, s.checkSendTimeout)
	s.sendTimer.Stop()

	// The receive loop may wait for room in the shared pool; that wait
	// ends with the session, and also when the stream ends (nothing reads
	// it then to notice).
	rctx, rcancel := context.WithCancelCause(s.ctx)
	defer rcancel(nil)
	stopWatch := context.AfterFunc(s.stream.Context(), func() {
		rcancel(fmt.Errorf("%w: the stream ended while the receive loop waited for the shared inbound budget", ErrSessionClosed))
	})
	defer stopWatch()

	var wg sync.WaitGroup
	wg.Go(s.sendLoop)
	wg.Go(func() { s.recvLoop(rctx) })
	<-s.ctx.Done()
	if s.abort != nil {
		s.abort()
	}
	wg.Wait()
	s.sendTimer.Stop()
	if s.pool != nil {
		// Nothing is received any more; what is still queued gives its
		// bytes back (a late Recv that takes a message does so itself).
		s.server.in.drain(s.pool)
		s.client.in.drain(s.pool)
	}
	err := context.Cause(s.ctx)
	s.log.Debug("session ended", "error", err)
	return err
}

// recvLoop is the only caller of stream.Recv. It routes and enqueues without
// ever waiting for the send path; besides Recv itself it waits only for
// room in the shared inbound pool, until ctx ends.
func (s *Session) recvLoop(ctx context.Context) {
	for {
		m, err := s.stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				s.Close(fmt.Errorf("%w: peer closed the stream", ErrSessionClosed))
			} else {
				s.Close(fmt.Errorf("receive: %w", err))
			}
			return
		}
		if b, ok := m.GetKind().(*kdsv1.Message_Batch); ok {
			for _, inner := range b.Batch.GetMessages() {
				if err = s.route(ctx, inner); err != nil {
					break
				}
			}
		} else {
			err = s.route(ctx, m)
		}
		if err != nil {
			s.Close(err)
			return
		}
	}
}

// route enqueues one received request or response on its logical stream;
// anything else (a batch inside a batch included) is ErrUnknownMessage.
func (s *Session) route(ctx context.Context, m *kdsv1.Message) error {
	// The whole message (one of a batch counts alone): the size the sender
	// counted and checked against the max message size, and what it holds
	// decoded, which the budgets count (a response's entries cost far more
	// decoded than on the wire).
	size, held := kdswire.Measure(m)
	switch k := m.GetKind().(type) {
	case *kdsv1.Message_Request:
		return s.server.in.put(ctx, s.pool, k.Request, k.Request.GetTypeUrl(), size, held)
	case *kdsv1.Message_Response:
		return s.client.in.put(ctx, s.pool, k.Response, k.Response.GetTypeUrl(), size, held)
	default:
		return ErrUnknownMessage
	}
}

// sendLoop is the only caller of stream.Send.
func (s *Session) sendLoop() {
	srv, cli := &s.server.out, &s.client.out
	first := false
	for {
		if s.ctx.Err() != nil {
			return // do not pick queued messages after the end
		}
		// Take turns, so that neither logical stream starves the other.
		first = !first
		a, b := srv, cli
		if !first {
			a, b = cli, srv
		}
		q := a
		it, ok := a.q.pop()
		if !ok {
			q = b
			it, ok = b.q.pop()
		}
		if !ok {
			select {
			case <-s.ctx.Done():
				return
			case <-srv.q.ready:
			case <-cli.q.ready:
			}
			continue
		}
		q.queued.Add(-int64(it.size))
		sent := []sentItem{{it, q}}
		if s.coalesce {
			sent = s.fill(sent, a, b)
		}
		msg := it.msg
		if len(sent) > 1 {
			batch := &kdsv1.Batch{Messages: make([]*kdsv1.Message, len(sent))}
			for i, x := range sent {
				batch.Messages[i] = x.it.msg
			}
			msg = &kdsv1.Message{Kind: &kdsv1.Message_Batch{Batch: batch}}
		}
		start := time.Now()
		if err := s.send(msg); err != nil {
			if errors.Is(err, io.EOF) {
				// A gRPC client stream reports the real status on Recv;
				// give the receiver a moment to record it first.
				t := time.NewTimer(time.Second)
				select {
				case <-s.ctx.Done():
				case <-t.C:
				}
				t.Stop()
			}
			s.Close(fmt.Errorf("send on %s stream: %w", q.name, err))
			return
		}
		d := time.Since(start)
		for _, x := range sent {
			x.q.messages.Add(1)
			x.q.bytes.Add(uint64(x.it.size))
			if s.observeSend != nil {
				s.observeSend(x.q == srv, x.it.size, d)
			}
		}
	}
}

// sentItem is a message the send loop took from queue q.
type sentItem struct {
	it outItem
	q  *outQueue
}

// batchOverhead bounds what a message adds to a batch besides its own
// encoded size (field tag and length), and what the batch adds around them.
const batchOverhead = 6

// fill adds to sent (which holds the first message taken) what else is
// ready in the two queues, taking turns starting with a, while the batch
// stays within the session's max message size and MaxBatchMessages. It
// never waits: only messages already queued go.
func (s *Session) fill(sent []sentItem, a, b *outQueue) []sentItem {
	size := batchOverhead + sent[0].it.size + batchOverhead
	for len(sent) < MaxBatchMessages {
		fits := func(it outItem) bool { return size+it.size+batchOverhead <= s.maxSize }
		took := false
		for _, q := range []*outQueue{a, b} {
			if len(sent) >= MaxBatchMessages {
				break
			}
			if it, ok := q.q.popIf(fits); ok {
				q.queued.Add(-int64(it.size))
				sent = append(sent, sentItem{it, q})
				size += it.size + batchOverhead
				took = true
			}
		}
		if !took {
			break
		}
	}
	return sent
}

func (s *Session) send(m *kdsv1.Message) error {
	start := time.Now()
	s.inSendSince.Store(start.UnixNano())
	s.sendTimer.Reset(s.timeout)
	err := s.stream.Send(m)
	s.sendTimer.Stop()
	s.inSendSince.Store(0)
	s.sendNanos.Add(int64(time.Since(start)))
	return err
}

// checkSendTimeout runs when the send timer fires. A stale firing (the Send
// it was armed for has returned) is ignored.
func (s *Session) checkSendTimeout() {
	since := s.inSendSince.Load()
	if since == 0 || time.Since(time.Unix(0, since)) < s.timeout {
		return
	}
	s.sendTimeouts.Add(1)
	s.Close(fmt.Errorf("%w: gRPC Send did not return within %s", ErrSendTimeout, s.timeout))
}

// Stats is a snapshot of a session's counters.
type Stats struct {
	// Server is the logical stream this side serves (sends responses,
	// receives requests); Client the one it subscribes on.
	Server, Client StreamStats
	// SendTime is the cumulative time spent inside the gRPC Send.
	SendTime time.Duration
	// SendTimeouts counts Sends that exceeded the send timeout (0 or 1: the
	// first one ends the session).
	SendTimeouts uint64
	// Capacity is Session.Capacity(); each StreamStats has its stream's.
	Capacity int
}

// StreamStats are the counters of one logical stream.
type StreamStats struct {
	MessagesSent, BytesSent         uint64
	MessagesReceived, BytesReceived uint64
	// SendBufferLen is the number of messages waiting in the send buffer,
	// SendBufferHighWater the most it has held.
	SendBufferLen, SendBufferHighWater int
	// InboundLen is the number of received messages not yet read by Recv,
	// InboundHighWater the most the inbound queue has held.
	InboundLen, InboundHighWater int
	// InboundBytes is what those messages cost against the inbound byte
	// budget (what they hold, kdswire.Measure, plus MessageOverhead each), InboundBytesHighWater
	// the most the queue has held.
	InboundBytes, InboundBytesHighWater int64
	// Capacity bounds the stream's send buffer and inbound queue, in
	// messages.
	Capacity int
}

// Stats returns a snapshot of the session's counters. Safe to call at any
// time, also after the session ended.
func (s *Session) Stats() Stats {
	return Stats{
		Server:       streamStats(&s.server.out, inStats(&s.server.in)),
		Client:       streamStats(&s.client.out, inStats(&s.client.in)),
		SendTime:     time.Duration(s.sendNanos.Load()),
		SendTimeouts: s.sendTimeouts.Load(),
		Capacity:     s.Capacity(),
	}
}

func inStats[T any](in *inQueue[T]) StreamStats {
	return StreamStats{
		MessagesReceived:      in.messages.Load(),
		BytesReceived:         in.bytes.Load(),
		InboundLen:            in.q.len(),
		InboundHighWater:      int(in.highWater.Load()),
		InboundBytes:          in.queued.Load(),
		InboundBytesHighWater: in.bytesHighWater.Load(),
		Capacity:              in.capacity,
	}
}

func streamStats(out *outQueue, st StreamStats) StreamStats {
	st.MessagesSent = out.messages.Load()
	st.BytesSent = out.bytes.Load()
	st.SendBufferLen = out.q.len()
	st.SendBufferHighWater = int(out.highWater.Load())
	return st
}
