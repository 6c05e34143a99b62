package kdsgrpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/kds-engine/kds-engine/engine/internal/mux"
)

// ZoneMetadataKey is the request metadata key carrying the zone's name.
const ZoneMetadataKey = "kds-zone"

var zoneName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ErrInvalidZoneName: a zone name is not a DNS label (1-63 lowercase
// letters, digits and '-', starting and ending with a letter or digit).
var ErrInvalidZoneName = errors.New("invalid zone name")

// ErrHandlerReturned ends a session whose sync handler returned nil.
var ErrHandlerReturned = errors.New("sync handler returned")

// ErrCredentialsRevoked ends a session on global whose credentials were
// revoked while it ran (mux.Session.Close with an error wrapping it); the
// zone receives codes.Unauthenticated.
var ErrCredentialsRevoked = errors.New("session credentials revoked")

// ValidateZoneName returns an error wrapping ErrInvalidZoneName unless name
// is a DNS label.
func ValidateZoneName(name string) error {
	if !zoneName.MatchString(name) {
		return fmt.Errorf("%w: %q (want a DNS label: 1-63 of [a-z0-9-], starting and ending with [a-z0-9])",
			ErrInvalidZoneName, name)
	}
	return nil
}

// SessionEvent describes a session's start or end to a hook.
type SessionEvent struct {
	// Zone is the zone the session belongs to (on a zone: its own name).
	Zone    string
	Session *mux.Session
	Started time.Time
	// Stream is the context of the session's gRPC stream on global (it
	// carries the authenticated identity and the peer); nil on a zone.
	Stream context.Context
	// Address is, on a zone, the global address the session is on (the
	// dialed HOST:PORT); empty on global.
	Address string
	// Ended and Err are set only for the end hook.
	Ended time.Time
	Err   error
}

// Option configures a Global or a Dialer.
type Option func(*settings)

type settings struct {
	cfg       Config
	log       hclog.Logger
	onStart   func(SessionEvent)
	onEnd     func(SessionEvent)
	onRefused func(error)
	hint      func(error) string
	dialOpts  []grpc.DialOption
	backoff   Backoff
	// Dialer only: credentials per server name, the server name override,
	// the host name resolver, the session open timeout, and a hook called
	// before each attempt (tests).
	credsFor       func(serverName string) (credentials.TransportCredentials, error)
	serverName     string
	resolve        Resolver
	connectTimeout time.Duration
	onAttempt      func(addr string)
	muxOpts        func(zone string) []mux.Option
	header         func(zone string) metadata.MD
	// Global: the types it serves, which a zone's kds-receives is
	// compared with. Dialer: the types it receives, announced in
	// kds-receives when receivesSet.
	served      []string
	receives    []string
	receivesSet bool
}

func newSettings(opts []Option) settings {
	s := settings{log: hclog.NewNullLogger(), backoff: DefaultBackoff,
		resolve: net.DefaultResolver.LookupHost, connectTimeout: DefaultConnectTimeout}
	for _, o := range opts {
		o(&s)
	}
	return s
}

// WithConfig sets the transport settings (the session's send timeout,
// headroom and max message size; the Dialer also derives its keepalive and
// message-size dial options from it). A Global's grpc.Server takes the same
// Config through NewServer.
func WithConfig(c Config) Option { return func(s *settings) { s.cfg = c } }

// WithLogger sets the logger (default: discard). Nil keeps the default.
func WithLogger(l hclog.Logger) Option {
	return func(s *settings) {
		if l != nil {
			s.log = l
		}
	}
}

// WithSessionHooks sets functions called when a session starts (before the
// handler runs) and when it has ended (after everything it owns was joined).
// Either may be nil. They run on the session's goroutine and must not block.
func WithSessionHooks(onStart, onEnd func(SessionEvent)) Option {
	return func(s *settings) { s.onStart, s.onEnd = onStart, onEnd }
}

// WithRefusedHook sets a function a Dialer calls when an attempt ends
// before its session started: the stream could not be opened, global
// refused the zone, or global's session header was invalid. It gets the
// error the attempt failed with (the Dialer's State().LastError). It runs
// on the Dialer's goroutine and must not block. Ignored by Global.
func WithRefusedHook(f func(error)) Option {
	return func(s *settings) { s.onRefused = f }
}

// WithRefusalHint sets a function the Dialer asks about every attempt that
// did not become a session; what it returns (if not "") is added to the
// attempt's error, which the log, the connection state and so the zone's
// insights and /readyz show. A zone uses it to say what to check: what it
// can tell about its own token when global refuses it, or which setting a
// failed TLS handshake points at. Ignored by Global.
func WithRefusalHint(f func(error) string) Option {
	return func(s *settings) { s.hint = f }
}

// WithSessionOptions adds mux options to every session, computed per zone
// (on a zone: its own name), for example a send observer that feeds metrics.
func WithSessionOptions(f func(zone string) []mux.Option) Option {
	return func(s *settings) { s.muxOpts = f }
}

// WithSessionHeader sets the header metadata a Global sends a zone when its
// session starts (nil or empty: an empty header). A zone's session handler
// reads it with PeerHeader. Ignored by a Dialer.
func WithSessionHeader(f func(zone string) metadata.MD) Option {
	return func(s *settings) { s.header = f }
}

// WithServedTypes sets the types a Global serves: for each zone that
// announces kds-receives, the session's handler gets those of them the zone
// does not list (PeerDoesNotReceive). Ignored by a Dialer.
func WithServedTypes(types []string) Option {
	return func(s *settings) { s.served = slices.Clone(types) }
}

// WithReceives makes a Dialer announce, in kds-receives, the types it
// receives from global (its plugins' global→zone types; none is an empty
// list). Without it the Dialer sends no kds-receives. The names must be
// type names. Ignored by Global.
func WithReceives(types []string) Option {
	return func(s *settings) { s.receives, s.receivesSet = slices.Clone(types), true }
}

// announcement is what this side announces for a session sized for types.
func (s *settings) announcement(types int) Announcement {
	return Announcement{Types: max(types, 0), MaxMessageSize: s.cfg.withDefaults().MaxMessageSize}
}

type peerHeaderKey struct{}

// headerSource is the client stream, whose Header blocks until global's
// session header arrives or the stream ends.
type headerSource interface {
	Header() (metadata.MD, error)
}

// PeerHeader returns the header metadata global sent when the session
// started, given the context a Dialer passes its ZoneHandler. It waits for
// the header (global sends it first), and fails when the session ends
// first; without a Dialer's context it returns nil, nil. The metadata must
// not be modified.
func PeerHeader(ctx context.Context) (metadata.MD, error) {
	src, ok := ctx.Value(peerHeaderKey{}).(headerSource)
	if !ok {
		return nil, nil
	}
	md, err := src.Header()
	if err != nil {
		return nil, fmt.Errorf("read global's session header: %w", err)
	}
	if md == nil {
		// gRPC reports a stream that ended before any header this way.
		return nil, errors.New("read global's session header: the session ended first")
	}
	return md, nil
}

// sessionOptions returns the extra mux options for zone's session.
func (s *settings) sessionOptions(zone string) []mux.Option {
	if s.muxOpts == nil {
		return nil
	}
	return s.muxOpts(zone)
}

// WithDialOptions adds grpc.DialOptions (transport credentials, per-RPC
// credentials) to the Dialer's. Ignored by Global.
func WithDialOptions(o ...grpc.DialOption) Option {
	return func(s *settings) { s.dialOpts = append(s.dialOpts, o...) }
}

// WithTransportCredentialsFor makes the Dialer dial each global address with
// the transport credentials f returns for the name global's certificate must
// be valid for there: the override set with WithServerName, else the host of
// the configured entry (a host name, also for each address it resolves to,
// or an IP address). It replaces transport credentials given with
// WithDialOptions. Ignored by Global.
func WithTransportCredentialsFor(f func(serverName string) (credentials.TransportCredentials, error)) Option {
	return func(s *settings) { s.credsFor = f }
}

// WithServerName sets the name global's certificate must be valid for at
// every address (see WithTransportCredentialsFor); empty keeps each entry's
// host. Ignored by Global.
func WithServerName(name string) Option { return func(s *settings) { s.serverName = name } }

// WithResolver sets how the Dialer looks up the addresses of a host name
// (default net.DefaultResolver.LookupHost). Ignored by Global.
func WithResolver(r Resolver) Option {
	return func(s *settings) {
		if r != nil {
			s.resolve = r
		}
	}
}

// DefaultConnectTimeout bounds, by default, a zone's name lookup and the
// opening of a session: the connection, TLS, and global's session header.
const DefaultConnectTimeout = 10 * time.Second

// WithConnectTimeout sets how long the Dialer waits for one address's
// session to open (connection, TLS handshake, global's session header)
// before it gives up on that address (default DefaultConnectTimeout; zero
// or negative keeps it). Ignored by Global.
func WithConnectTimeout(d time.Duration) Option {
	return func(s *settings) {
		if d > 0 {
			s.connectTimeout = d
		}
	}
}

// WithBackoff sets the Dialer's reconnect backoff (default DefaultBackoff);
// zero fields keep their defaults. Ignored by Global.
func WithBackoff(b Backoff) Option { return func(s *settings) { s.backoff = b.withDefaults() } }

// runSession runs sess (on global address addr, on a zone) and handler together and joins both. The handler gets
// the session's context; when it returns, the session ends (with
// ErrHandlerReturned if it returned nil). Returns the session's error.
func runSession(ctx, stream context.Context, set *settings, zone, addr string, sess *mux.Session, handler func(context.Context) error) error {
	ev := SessionEvent{Zone: zone, Session: sess, Started: time.Now(), Stream: stream, Address: addr}
	if set.onStart != nil {
		set.onStart(ev)
	}
	var g errgroup.Group
	g.Go(func() error { return sess.Run(ctx) })
	g.Go(func() error {
		err := handler(sess.Context())
		if err == nil {
			err = ErrHandlerReturned
		} else {
			err = fmt.Errorf("sync handler: %w", err)
		}
		sess.Close(err)
		return nil
	})
	_ = g.Wait()
	ev.Ended, ev.Err = time.Now(), sess.Err()
	if set.onEnd != nil {
		set.onEnd(ev)
	}
	return ev.Err
}

func zoneFromContext(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(ZoneMetadataKey)
	if len(vals) != 1 {
		return "", fmt.Errorf("%w: metadata %q must hold exactly one zone name, got %d",
			ErrInvalidZoneName, ZoneMetadataKey, len(vals))
	}
	if err := ValidateZoneName(vals[0]); err != nil {
		return "", err
	}
	return vals[0], nil
}
