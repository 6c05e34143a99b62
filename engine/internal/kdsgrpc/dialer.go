package kdsgrpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/kds-engine/kds-engine/engine/internal/mux"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

var _ mux.Stream = (kdsv1.KDS_SessionClient)(nil)

// ZoneHandler runs the sync for one session on a zone. ctx is the session's
// context; the handler must return once it is done. When the handler
// returns, the session ends (and the Dialer reconnects).
type ZoneHandler func(ctx context.Context, s *mux.Session) error

// ConnState is a zone's view of its connection to global.
type ConnState struct {
	// Connected is true while a session runs; ConnectedSince is when it
	// started (zero when not connected).
	Connected      bool
	ConnectedSince time.Time
	// Address is the global address (the dialed HOST:PORT) the live session
	// is on; while not connected, the address last tried (empty before the
	// first attempt). AddressEntry is the configured entry it came from (a
	// host name that resolved to Address, or Address itself).
	Address, AddressEntry string
	// LastError is the error the previous session ended with (or the
	// failure to open one); nil before the first one ended. It names the
	// address it happened at.
	LastError error
	// Sessions counts the sessions started so far.
	Sessions int
}

// Dialer keeps a zone's KDS session to global, which may run as several
// replicas: it dials one address, opens the stream, runs a mux.Session with
// the handler, and after any error moves on to the next address, with
// backoff between rounds, until its context ends.
//
// Failover policy (deterministic; docs/decisions/0018):
//   - The configured entries expand, at the start of every round, into
//     candidate addresses in order: an IP address is itself, a host name is
//     every address it resolves to (A and AAAA, in the resolver's order).
//   - A round tries each candidate at most once, starting after the address
//     last tried, so an address that just failed comes last. Attempts within
//     a round follow each other at once.
//   - Before a round the Dialer waits Backoff.Delay(k), k counting the
//     rounds waited for since the last reset, except when the previous round
//     was cut short by a session that lived at least ResetAfter and the new
//     round starts at another address: failover is then immediate. A
//     long-lived session resets k to 0.
//   - Each attempt gets a fresh gRPC connection to that one address, closed
//     when the attempt ends; the connection, TLS handshake and global's
//     session header must complete within the connect timeout.
//
// So one address sees at most one attempt per round, rounds are spaced by
// the backoff, and a live replica is reached within one round.
type Dialer struct {
	entries []string
	zone    string
	types   int
	handler ZoneHandler
	set     settings
	log     hclog.Logger

	mu    sync.Mutex
	state ConnState
}

// NewDialer returns a Dialer for zone that connects to global at addrs
// (HOST:PORT entries, see ParseAddresses; a host name counts as every
// address it resolves to) with sessions sized for types resource types.
// Pass transport credentials with WithTransportCredentialsFor or
// WithDialOptions.
func NewDialer(addrs []string, zone string, types int, handler ZoneHandler, opts ...Option) *Dialer {
	set := newSettings(opts)
	return &Dialer{
		entries: slices.Clone(addrs), zone: zone, types: types, handler: handler, set: set,
		log: set.log.Named("kds-zone").With("zone", zone),
	}
}

// State returns a snapshot of the connection state. Safe for concurrent use.
func (d *Dialer) State() ConnState {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state
}

// Run connects and keeps reconnecting until ctx is done; it then returns
// nil once the current session has been joined. It returns an error at once
// only for an invalid zone name or address list.
func (d *Dialer) Run(ctx context.Context) error {
	if err := ValidateZoneName(d.zone); err != nil {
		return err
	}
	if len(d.entries) == 0 {
		return badAddress("no global address given")
	}
	for _, e := range d.entries {
		if _, err := ParseAddresses(e); err != nil {
			return err
		}
	}
	k := 0        // rounds waited for since the last reset
	last := ""    // the address last tried
	early := true // the previous round was cut short by a long session (or there was none)
	for {
		order := d.round(ctx, last)
		if !early || len(order) == 0 || order[0].addr == last {
			delay := d.set.backoff.Delay(k)
			k++
			d.log.Debug("waiting before the next round of global addresses", "retry_in", delay.Round(time.Millisecond), "round", k)
			if !sleep(ctx, delay) {
				return nil
			}
			order = d.round(ctx, last) // names may resolve differently now
		}
		early = false
		var failed roundError // this round's failures, oldest first
		for i, c := range order {
			start := time.Now()
			started, err := d.attempt(ctx, c)
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				// The state names every address that failed this round,
				// not only the one tried last: a replica that is up but
				// refuses the session says more than a dead one.
				failed = append(failed, err)
				if len(failed) > 1 {
					all := slices.Clone(failed)
					d.setState(func(s *ConnState) { s.LastError = all })
				}
			}
			last = c.addr
			lived := time.Since(start)
			next := "next round"
			if i+1 < len(order) {
				next = order[i+1].label()
			}
			if started {
				d.log.Warn("session ended", "global", c.label(), "error", err, "lived", lived.Round(time.Millisecond), "next", next)
			} else {
				// No session: global unreachable, a refused token, a
				// failed TLS handshake. The error says which.
				d.log.Warn("no session with global", "global", c.label(), "error", err, "next", next)
			}
			if lived >= d.set.backoff.ResetAfter {
				k, early = 0, true
				break
			}
		}
	}
}

// roundError is the failures of one round of attempts, oldest first; each
// names its address. Its text lists them most recent first, on one line.
type roundError []error

func (r roundError) Error() string {
	parts := make([]string, len(r))
	for i, err := range r {
		parts[len(r)-1-i] = err.Error()
	}
	return strings.Join(parts, "; ")
}

func (r roundError) Unwrap() []error { return r }

// round returns the candidates of a new round, starting after last. A
// failed lookup is logged, and recorded as the last error when no address
// is left.
func (d *Dialer) round(ctx context.Context, last string) []candidate {
	rctx, cancel := context.WithTimeout(ctx, d.set.connectTimeout)
	defer cancel()
	cands, err := candidates(rctx, d.entries, d.set.resolve, d.set.serverName)
	if err != nil {
		d.log.Warn("global address lookup", "error", err)
		if len(cands) == 0 {
			d.setState(func(s *ConnState) { s.LastError = err })
		}
	}
	return rotateAfter(cands, last)
}

// sleep waits d or until ctx ends; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// attempt runs one session at c on a connection of its own; started
// reports whether a session started (global accepted it).
func (d *Dialer) attempt(ctx context.Context, c candidate) (bool, error) {
	d.setState(func(s *ConnState) { s.Address, s.AddressEntry = c.addr, c.entry })
	if d.set.onAttempt != nil {
		d.set.onAttempt(c.addr)
	}
	started, err := d.dialAndRun(ctx, c)
	if err != nil {
		err = fmt.Errorf("global at %s: %w", c.label(), err)
		if !started && ctx.Err() == nil && d.set.hint != nil {
			if h := d.set.hint(err); h != "" {
				err = fmt.Errorf("%w; %s", err, h)
			}
		}
	}
	d.setState(func(s *ConnState) {
		s.Connected, s.ConnectedSince, s.LastError = false, time.Time{}, err
	})
	if !started && err != nil && ctx.Err() == nil && d.set.onRefused != nil {
		d.set.onRefused(err)
	}
	return started, err
}

// dialAndRun dials c and runs one session there; started reports whether
// the session started (global accepted it).
func (d *Dialer) dialAndRun(ctx context.Context, c candidate) (started bool, err error) {
	opts := DialOptions(d.set.cfg, d.set.dialOpts...)
	if d.set.credsFor != nil {
		creds, err := d.set.credsFor(c.serverName)
		if err != nil {
			return false, fmt.Errorf("TLS for %s: %w", c.serverName, err)
		}
		opts = append(opts, transportDialOptions(creds)...)
	}
	// The address is dialed as is: no second name lookup inside gRPC.
	// With TLS, gRPC takes the authority from the credentials' server name.
	conn, err := grpc.NewClient("passthrough:///"+c.addr, opts...)
	if err != nil {
		return false, fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	return d.session(ctx, kdsv1.NewKDSClient(conn), c)
}

// ErrConnectTimeout: a session did not open (connection, TLS, global's
// session header) within the connect timeout.
var ErrConnectTimeout = errors.New("connect timeout")

// session opens one stream and runs one session on it; started reports
// whether the session started.
func (d *Dialer) session(ctx context.Context, client kdsv1.KDSClient, c candidate) (started bool, err error) {
	a := d.set.announcement(d.types)
	kv := []string{ZoneMetadataKey, d.zone,
		TypesMetadataKey, strconv.Itoa(a.Types), MaxMessageSizeMetadataKey, strconv.Itoa(a.MaxMessageSize),
		CoalesceMetadataKey, "1", ResumePartsMetadataKey, "1"}
	if d.set.receivesSet {
		kv = append(kv, ReceivesMetadataKey, strings.Join(d.set.receives, ","))
	}
	sctx, cancel := context.WithCancelCause(metadata.AppendToOutgoingContext(ctx, kv...))
	defer cancel(nil)
	timeout := d.set.connectTimeout
	timer := time.AfterFunc(timeout, func() {
		cancel(fmt.Errorf("%w: no session within %s", ErrConnectTimeout, timeout))
	})
	opened := func(err error) error {
		if !timer.Stop() && context.Cause(sctx) != nil && ctx.Err() == nil {
			return context.Cause(sctx)
		}
		return err
	}
	stream, err := client.Session(sctx)
	if err != nil {
		return false, opened(fmt.Errorf("open stream: %w", err))
	}
	// Global sends its session header before anything else once it has
	// accepted the zone; a refusal (authentication, a duplicate session)
	// ends the stream instead. Only then is the session connected: the
	// stream opening proves nothing, since gRPC opens it without waiting
	// for global.
	md, _ := stream.Header()
	if md == nil {
		// No header: the stream ended first. Its status says why.
		_, err := stream.Recv()
		if err == nil || errors.Is(err, io.EOF) {
			err = errors.New("global ended the stream without a session header")
		}
		return false, opened(fmt.Errorf("session refused: %w", err))
	}
	if err := opened(nil); err != nil {
		return false, err
	}
	// What global announced sizes the session; figures out of range
	// refuse it (this side ends the stream by returning).
	peerFig, err := parseAnnouncement(md)
	if err != nil {
		return false, fmt.Errorf("session refused: global's session header: %w", err)
	}
	log := d.log.With("global", c.label())
	abort := func() { cancel(nil) }
	opts := append(d.set.cfg.muxOptions(), mux.WithLogger(log), mux.WithAbort(abort))
	opts = append(opts, peerFig.muxOptions()...)
	opts = append(opts, d.set.sessionOptions(d.zone)...)
	sess := mux.NewSession(stream, d.types, opts...)
	d.setState(func(s *ConnState) {
		s.Connected, s.ConnectedSince = true, time.Now()
		s.Sessions++
	})
	log.Info("session started")
	logAgreement(log, sess.Params())
	return true, runSession(ctx, nil, &d.set, d.zone, c.addr, sess, func(ctx context.Context) error {
		return d.handler(withPeerFigures(context.WithValue(ctx, peerHeaderKey{}, headerSource(stream)), peerFig), sess)
	})
}

func (d *Dialer) setState(f func(*ConnState)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(&d.state)
}
