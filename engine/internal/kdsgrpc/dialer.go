package kdsgrpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
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
	// LastError is the error the previous session ended with (or the
	// failure to open one); nil before the first one ended.
	LastError error
	// Sessions counts the sessions started so far.
	Sessions int
}

// Dialer keeps a zone's KDS session to global: it dials, opens the stream,
// runs a mux.Session with the handler, and reconnects with backoff after any
// error until its context ends.
type Dialer struct {
	target, zone string
	types        int
	handler      ZoneHandler
	set          settings
	log          hclog.Logger

	mu    sync.Mutex
	state ConnState
}

// NewDialer returns a Dialer for zone that connects to target (a gRPC target
// such as "dns:///global.example:5685") with sessions sized for types
// resource types. Pass transport credentials with WithDialOptions.
func NewDialer(target, zone string, types int, handler ZoneHandler, opts ...Option) *Dialer {
	set := newSettings(opts)
	return &Dialer{
		target: target, zone: zone, types: types, handler: handler, set: set,
		log: set.log.Named("kds-zone").With("zone", zone, "global", target),
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
// only for an invalid zone name or target/dial options that gRPC rejects.
func (d *Dialer) Run(ctx context.Context) error {
	if err := ValidateZoneName(d.zone); err != nil {
		return err
	}
	opts := DialOptions(d.set.cfg, d.set.dialOpts...)
	conn, err := grpc.NewClient(d.target, opts...)
	if err != nil {
		return fmt.Errorf("dial %s: %w", d.target, err)
	}
	defer conn.Close()
	client := kdsv1.NewKDSClient(conn)

	attempt := 0
	for {
		start := time.Now()
		err := d.session(ctx, client)
		if ctx.Err() != nil {
			return nil
		}
		lived := time.Since(start)
		if lived >= d.set.backoff.ResetAfter {
			attempt = 0
		}
		delay := d.set.backoff.Delay(attempt)
		attempt++
		d.log.Warn("session ended, reconnecting", "error", err, "lived", lived.Round(time.Millisecond), "retry_in", delay.Round(time.Millisecond))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// session opens one stream and runs one session on it.
func (d *Dialer) session(ctx context.Context, client kdsv1.KDSClient) error {
	a := d.set.announcement(d.types)
	sctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, ZoneMetadataKey, d.zone,
		TypesMetadataKey, strconv.Itoa(a.Types), MaxMessageSizeMetadataKey, strconv.Itoa(a.MaxMessageSize)))
	defer cancel()
	stream, err := client.Session(sctx)
	if err != nil {
		err = fmt.Errorf("open stream: %w", err)
		d.refused(err)
		return err
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
		err = fmt.Errorf("session refused: %w", err)
		d.refused(err)
		return err
	}
	// What global announced sizes the session; figures out of range
	// refuse it (this side ends the stream by returning).
	peerFig, err := parseAnnouncement(md)
	if err != nil {
		err = fmt.Errorf("session refused: global's session header: %w", err)
		d.refused(err)
		return err
	}
	opts := append(d.set.cfg.muxOptions(), mux.WithLogger(d.log), mux.WithAbort(cancel))
	opts = append(opts, peerFig.muxOptions()...)
	opts = append(opts, d.set.sessionOptions(d.zone)...)
	sess := mux.NewSession(stream, d.types, opts...)
	d.setState(func(s *ConnState) {
		s.Connected, s.ConnectedSince = true, time.Now()
		s.Sessions++
	})
	d.log.Info("session started")
	logAgreement(d.log, sess.Params())
	err = runSession(ctx, nil, &d.set, d.zone, sess, func(ctx context.Context) error {
		return d.handler(context.WithValue(ctx, peerHeaderKey{}, headerSource(stream)), sess)
	})
	d.setState(func(s *ConnState) {
		s.Connected, s.ConnectedSince, s.LastError = false, time.Time{}, err
	})
	return err
}

// refused records err as the failure of an attempt that never started a
// session.
func (d *Dialer) refused(err error) {
	d.setState(func(s *ConnState) { s.LastError = err })
	if d.set.onRefused != nil {
		d.set.onRefused(err)
	}
}

func (d *Dialer) setState(f func(*ConnState)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(&d.state)
}
