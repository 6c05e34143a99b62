package kdsgrpc

import (
	"context"
	"errors"
	"sync"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/kds-engine/kds-engine/engine/internal/mux"
	"github.com/kds-engine/kds-engine/engine/internal/tlsutil"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// Handler runs the sync for one session on global. ctx is the session's
// context; the handler must return once it is done. When the handler
// returns, the session ends.
type Handler func(ctx context.Context, zone string, s *mux.Session) error

// Global accepts KDS sessions from zones. It implements kdsv1.KDSServer;
// register it on a grpc.Server built with NewServer. Safe for concurrent use.
type Global struct {
	kdsv1.UnimplementedKDSServer

	types   int
	handler Handler
	set     settings
	log     hclog.Logger

	mu      sync.Mutex
	closing bool
	wg      sync.WaitGroup
}

var (
	_ kdsv1.KDSServer = (*Global)(nil)
	_ mux.Stream      = (kdsv1.KDS_SessionServer)(nil)
)

// NewGlobal returns a Global whose sessions are sized for types resource
// types and run handler.
func NewGlobal(types int, handler Handler, opts ...Option) *Global {
	set := newSettings(opts)
	return &Global{types: types, handler: handler, set: set, log: set.log.Named("kds-global")}
}

// Session is the KDS.Session RPC. It reads the zone's name from the
// metadata (codes.InvalidArgument if it is missing or invalid), runs a
// mux.Session with the handler, and returns once the session has ended.
//
// A Send blocked in flow control only returns when the RPC ends, so the RPC
// returns as soon as the session has ended; the goroutine that runs the
// session and the handler then joins them. Wait waits for those goroutines.
func (g *Global) Session(stream kdsv1.KDS_SessionServer) error {
	zone, err := zoneFromContext(stream.Context())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	md, _ := metadata.FromIncomingContext(stream.Context())
	peerFig, err := parseAnnouncement(md)
	if err != nil {
		// Authenticated zones only reach this point, within their
		// session rate limit; the value is cut and escaped.
		g.log.Warn("session refused", "zone", zone, "error", err)
		return status.Errorf(codes.InvalidArgument, "zone %s: %v", zone, err)
	}
	// Only global's own names of the types it serves are kept, never the
	// zone's list.
	peerFig.notReceived, peerFig.receivesAnnounced, err = ParseReceives(md, g.set.served)
	if err != nil {
		g.log.Warn("session refused", "zone", zone, "error", err)
		return status.Errorf(codes.InvalidArgument, "zone %s: %v", zone, err)
	}
	g.mu.Lock()
	if g.closing {
		g.mu.Unlock()
		return status.Error(codes.Unavailable, "global is shutting down")
	}
	g.wg.Add(1)
	g.mu.Unlock()
	defer g.wg.Done()

	log := g.log.With("zone", zone)
	// The header goes out before anything else, always: a zone waits for
	// it before its session starts. It carries this side's announcement
	// and what the header function adds.
	hdr := g.set.announcement(g.types).metadata()
	if g.set.header != nil {
		hdr = metadata.Join(g.set.header(zone), hdr)
	}
	if err := stream.SendHeader(hdr); err != nil {
		return status.Errorf(codes.Unavailable, "send session header: %v", err)
	}
	release := make(chan struct{})
	opts := append(g.set.cfg.muxOptions(),
		mux.WithLogger(log),
		mux.WithAbort(func() { close(release) })) // mux calls abort once
	opts = append(opts, peerFig.muxOptions()...)
	opts = append(opts, g.set.sessionOptions(zone)...)
	sess := mux.NewSession(stream, g.types, opts...)
	log.Info("session started", append([]any{"capacity", sess.Capacity()}, peerFields(stream.Context())...)...)
	logAgreement(log, sess.Params())

	done := make(chan error, 1)
	g.wg.Add(1) // joined by Wait, which the RPC does not wait for
	go func() {
		defer g.wg.Done()
		done <- runSession(context.Background(), stream.Context(), &g.set, zone, "", sess, func(ctx context.Context) error {
			return g.handler(withPeerFigures(ctx, peerFig), zone, sess)
		})
	}()
	select {
	case err = <-done:
	case <-release:
		err = sess.Err()
	}
	log.Info("session ended", "error", err)
	return toStatus(err)
}

// peerFields returns the log fields that say who is on the other end of
// ctx's stream: the address, and for a client certificate (mTLS) its
// subject, serial number and expiry, so that a rotation on the zone can be
// checked in global's log. Nothing is returned for what ctx does not carry.
func peerFields(ctx context.Context) []any {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	var f []any
	if p.Addr != nil {
		f = append(f, "peer", p.Addr.String())
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
		f = append(f, tlsutil.CertificateFields("client_cert_", ti.State.PeerCertificates[0])...)
	}
	return f
}

// Wait refuses new sessions (codes.Unavailable) and blocks until every
// session goroutine has returned. Call it after stopping the grpc.Server
// (which ends every session's stream).
func (g *Global) Wait() {
	g.mu.Lock()
	g.closing = true
	g.mu.Unlock()
	g.wg.Wait()
}

// toStatus maps a session's error to the status the RPC ends with.
func toStatus(err error) error {
	switch {
	case err == nil, errors.Is(err, ErrHandlerReturned):
		return nil
	case errors.Is(err, ErrCredentialsRevoked):
		return status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, mux.ErrSendTimeout):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, mux.ErrBufferFull), errors.Is(err, mux.ErrInboundFull), errors.Is(err, mux.ErrMessageTooLarge):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	default:
		return status.Error(codes.Aborted, err.Error())
	}
}
