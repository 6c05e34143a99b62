// Package kdsauth authenticates zones on global's KDS port, at the gRPC
// edge, and carries the verified identity to the session handler.
//
// A zone presents two things on its session RPC: the zone it claims to be
// (metadata "kds-zone") and a zone token signed by global (metadata
// "authorization: Bearer <token>", sent by TokenFileCredentials). The
// Authenticator's interceptors verify the token against the claimed zone
// before the handler runs; a refused stream never reaches the handler. On
// success the handler's context carries the token's subject, read with
// IdentityFromContext: that, and never anything in the payload, is the zone
// that resources from the session are attributed to. (After a stream has
// passed the interceptor its "kds-zone" metadata holds exactly one value,
// equal to the identity, so a transport that reads the zone from metadata
// reads the verified zone; IdentityFromContext is still the one to use.)
//
// The Authenticator also limits how many sessions each (verified) zone may
// open per minute, so a zone in a reconnect loop cannot make global spend
// its time on session setup and resyncs.
package kdsauth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/kds-engine/kds-engine/engine/internal/token"
)

const (
	// MetadataZone is the metadata key holding the zone a connection claims.
	MetadataZone = "kds-zone"
	// MetadataAuthorization is the metadata key holding "Bearer <token>".
	MetadataAuthorization = "authorization"
	// DefaultSessionsPerMinute is the default number of new sessions a zone
	// may open per minute (also the burst).
	DefaultSessionsPerMinute = 20
	// DefaultRefusalLogsPerMinute is the default number of refused sessions
	// logged per minute (also the burst).
	DefaultRefusalLogsPerMinute = 120

	bearerPrefix = "Bearer "
	// maxLoggedZone bounds how much of an unverified claimed zone is logged
	// or passed to OnRefused.
	maxLoggedZone = 64
	// pruneAbove is the number of per-zone buckets above which idle (full)
	// buckets are dropped.
	pruneAbove = 1024
)

// Reasons a session is refused, passed to the OnRefused callback. The set is
// fixed, so a reason is safe to use as a metric label.
const (
	ReasonMissingZone  = "missing_zone"  // no (or several) "kds-zone" values
	ReasonMissingToken = "missing_token" // no token presented
	ReasonExpired      = "expired"       // token past its expiry
	ReasonNotYetValid  = "not_yet_valid" // token not valid yet (clock skew)
	ReasonUnknownKey   = "unknown_key"   // signed by a key global does not trust
	ReasonBadSignature = "bad_signature" // forged/altered token, or a non-EdDSA algorithm
	ReasonZoneMismatch = "zone_mismatch" // token issued for another zone
	ReasonMalformed    = "malformed"     // not a zone token
	ReasonRevoked      = "revoked"       // token listed in the revocation file
	ReasonRateLimited  = "rate_limited"  // too many new sessions for this zone
	ReasonInvalid      = "invalid"       // verifier error outside the token sentinels
)

// TokenVerifier checks a zone token against the zone a connection claims and
// returns the verified zone. *token.Verifier implements it; errors should
// wrap the token package's sentinels so refusals are classified.
type TokenVerifier interface {
	Verify(tok, claimedZone string) (zone string, err error)
}

// idVerifier is a TokenVerifier that also returns the token's id, which
// the Authenticator then puts in the session's context (TokenIDFromContext)
// without parsing the token again.
type idVerifier interface {
	VerifyID(tok, claimedZone string) (zone, id string, err error)
}

var (
	_ TokenVerifier = (*token.Verifier)(nil)
	_ idVerifier    = (*token.Verifier)(nil)
	_ idVerifier    = (*token.KeyFileVerifier)(nil)
)

// Authenticator holds global's zone-authentication policy and provides the
// gRPC interceptors that enforce it. It is safe for concurrent use.
type Authenticator struct {
	verifier  TokenVerifier
	logger    hclog.Logger
	onRefused func(zone, reason string)
	limiter   *limiter
	logLimit  *logLimiter
}

// Option configures an Authenticator.
type Option func(*Authenticator)

// WithOnRefused sets a callback run (synchronously, on the RPC's goroutine)
// for every refused session, e.g. to count refusals in a metric. zone is the
// zone the connection claimed — unverified, truncated to 64 bytes, possibly
// empty — and reason is one of the Reason… constants. Because anyone can
// claim any zone, do not use zone as a metric label unless you bound its
// values (e.g. to zones global knows); reason is safe as a label.
func WithOnRefused(fn func(zone, reason string)) Option {
	return func(a *Authenticator) { a.onRefused = fn }
}

// WithSessionsPerMinute sets how many new sessions one zone may open per
// minute (token bucket: the burst is the same number, refilled evenly over
// the minute). Zero or negative disables the limit. Default
// DefaultSessionsPerMinute. Only sessions that authenticated count: a
// client without the zone's token cannot use up that zone's budget.
func WithSessionsPerMinute(n int) Option {
	return func(a *Authenticator) { a.limiter.perMinute = max(n, 0) }
}

// WithRefusalLogsPerMinute bounds how many refused sessions are logged per
// minute (default DefaultRefusalLogsPerMinute; zero or negative: no bound).
// Refusals over the bound are not logged one by one; the next logged refusal
// carries how many were suppressed. OnRefused sees every refusal regardless.
func WithRefusalLogsPerMinute(n int) Option {
	return func(a *Authenticator) { a.logLimit.perMinute = max(n, 0) }
}

// WithClock sets the clock of the rate limiters (default time.Now); for tests.
func WithClock(now func() time.Time) Option {
	return func(a *Authenticator) { a.limiter.now, a.logLimit.now = now, now }
}

// NewAuthenticator returns an Authenticator verifying tokens with verifier
// and logging to logger (a sub-logger named "kdsauth" is used). Both are
// required.
func NewAuthenticator(verifier TokenVerifier, logger hclog.Logger, opts ...Option) (*Authenticator, error) {
	if verifier == nil {
		return nil, errors.New("new authenticator: nil verifier")
	}
	if logger == nil {
		return nil, errors.New("new authenticator: nil logger")
	}
	a := &Authenticator{
		verifier:  verifier,
		logger:    logger.Named("kdsauth"),
		onRefused: func(string, string) {},
		limiter:   &limiter{perMinute: DefaultSessionsPerMinute, now: time.Now, buckets: map[string]*bucket{}},
		logLimit:  &logLimiter{perMinute: DefaultRefusalLogsPerMinute, now: time.Now},
	}
	for _, o := range opts {
		o(a)
	}
	if a.onRefused == nil {
		a.onRefused = func(string, string) {}
	}
	return a, nil
}

// StreamInterceptor returns a grpc.StreamServerInterceptor that
// authenticates every stream before its handler runs. A refused stream ends
// with codes.Unauthenticated (codes.ResourceExhausted when rate limited) and
// a message saying why; an accepted one reaches the handler with a context
// carrying the zone (IdentityFromContext).
func (a *Authenticator) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := a.Authenticate(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &identityStream{ServerStream: ss, ctx: ctx})
	}
}

// UnaryInterceptor is the unary counterpart of StreamInterceptor, for a
// server that also serves unary RPCs to zones.
func (a *Authenticator) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := a.Authenticate(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// Authenticate checks the incoming metadata of ctx and returns a context
// carrying the verified zone, or a gRPC status error. method is used only
// for logging. Each call that succeeds counts as one new session of the
// zone for the rate limit.
func (a *Authenticator) Authenticate(ctx context.Context, method string) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	peerAddr := "unknown"
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		peerAddr = p.Addr.String()
	}

	zones := md.Get(MetadataZone)
	claimed := ""
	if len(zones) > 0 {
		claimed = zones[0]
	}
	if len(zones) != 1 || claimed == "" {
		got := fmt.Sprintf("got %d values", len(zones))
		if len(zones) == 1 {
			got = "got an empty value"
		}
		msg := fmt.Sprintf("zone authentication failed (%s): the connection must name its zone exactly once in metadata %q, %s",
			ReasonMissingZone, MetadataZone, got)
		return nil, a.refuse(codes.Unauthenticated, claimed, peerAddr, method, ReasonMissingZone, msg)
	}

	tok, reason, msg := bearerToken(md.Get(MetadataAuthorization))
	if reason != "" {
		return nil, a.refuse(codes.Unauthenticated, claimed, peerAddr, method, reason, "zone authentication failed ("+reason+"): "+msg)
	}
	var zone, id string
	var err error
	if iv, ok := a.verifier.(idVerifier); ok {
		zone, id, err = iv.VerifyID(tok, claimed)
	} else {
		zone, err = a.verifier.Verify(tok, claimed)
	}
	if err != nil {
		reason := reasonFor(err)
		return nil, a.refuse(codes.Unauthenticated, claimed, peerAddr, method, reason,
			fmt.Sprintf("zone authentication failed (%s): %v", reason, err))
	}
	if zone != claimed {
		// A verifier must not return another zone than the one claimed;
		// fail closed if one does.
		return nil, a.refuse(codes.Unauthenticated, claimed, peerAddr, method, ReasonZoneMismatch,
			fmt.Sprintf("zone authentication failed (%s): token is for zone %q, connection claims zone %q", ReasonZoneMismatch, zone, claimed))
	}
	if !a.limiter.allow(zone) {
		msg := fmt.Sprintf("zone %q exceeded its limit of %d new sessions per minute; retry later with backoff",
			zone, a.limiter.perMinute)
		return nil, a.refuse(codes.ResourceExhausted, zone, peerAddr, method, ReasonRateLimited, msg)
	}
	// The id names the session's token, so that revoking it can end the
	// session (empty from a verifier that does not report it).
	a.logger.Debug("zone authenticated", "zone", zone, "peer", peerAddr, "method", method, "token_id", id)
	return context.WithValue(ContextWithIdentity(ctx, zone), tokenIDKey{}, id), nil
}

func (a *Authenticator) refuse(code codes.Code, claimed, peerAddr, method, reason, msg string) error {
	zone := sanitizeZone(claimed)
	if log, suppressed := a.logLimit.take(); log {
		args := []any{"zone", zone, "peer", peerAddr, "method", method, "reason", reason, "error", msg}
		if suppressed > 0 {
			args = append(args, "suppressed_since_last", suppressed)
		}
		a.logger.Warn("refused zone session", args...)
	}
	a.onRefused(zone, reason)
	return status.Error(code, msg)
}

// logLimiter bounds how many refusals are logged per minute, so that
// anybody who can reach the port cannot flood global's log. Refusals over
// the limit are counted and the count is reported with the next logged one;
// the OnRefused callback still sees every refusal.
type logLimiter struct {
	mu         sync.Mutex
	perMinute  int
	now        func() time.Time
	b          bucket
	suppressed int
}

func (l *logLimiter) take() (log bool, suppressed int) {
	if l.perMinute <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.last.IsZero() {
		l.b = bucket{tokens: float64(l.perMinute), last: l.now()}
	}
	if l.b.refill(l.now(), float64(l.perMinute)) < 1 {
		l.suppressed++
		return false, 0
	}
	l.b.tokens--
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// bearerToken extracts the token from the authorization values. A missing
// header yields the empty token (the verifier reports it as missing).
func bearerToken(values []string) (tok, reason, msg string) {
	switch len(values) {
	case 0:
		return "", "", ""
	case 1:
	default:
		return "", ReasonMalformed, fmt.Sprintf("%d %q values; send exactly one", len(values), MetadataAuthorization)
	}
	v := values[0]
	if len(v) < len(bearerPrefix) || !strings.EqualFold(v[:len(bearerPrefix)], bearerPrefix) {
		return "", ReasonMalformed, fmt.Sprintf("%q metadata must be %q followed by the zone token", MetadataAuthorization, bearerPrefix)
	}
	return v[len(bearerPrefix):], "", ""
}

func reasonFor(err error) string {
	switch {
	case errors.Is(err, token.ErrMissing):
		return ReasonMissingToken
	case errors.Is(err, token.ErrExpired):
		return ReasonExpired
	case errors.Is(err, token.ErrNotYetValid):
		return ReasonNotYetValid
	case errors.Is(err, token.ErrUnknownKey):
		return ReasonUnknownKey
	case errors.Is(err, token.ErrBadSignature):
		return ReasonBadSignature
	case errors.Is(err, token.ErrZoneMismatch):
		return ReasonZoneMismatch
	case errors.Is(err, token.ErrMalformed):
		return ReasonMalformed
	case errors.Is(err, token.ErrRevoked):
		return ReasonRevoked
	default:
		return ReasonInvalid
	}
}

// sanitizeZone makes an unverified claimed zone safe to log and to hand to
// callbacks: bounded length, and quoted when it is not a plain name.
func sanitizeZone(z string) string {
	if len(z) > maxLoggedZone {
		z = z[:maxLoggedZone] + "..."
	}
	if token.ValidateZoneName(z) != nil && z != "" {
		return fmt.Sprintf("%q", z)
	}
	return z
}

type identityKey struct{}

// ContextWithIdentity returns ctx carrying zone as the authenticated
// identity. The interceptors call it after verification; other callers are
// in-process wiring and tests that stand in for them.
func ContextWithIdentity(ctx context.Context, zone string) context.Context {
	return context.WithValue(ctx, identityKey{}, zone)
}

// IdentityFromContext returns the zone the stream authenticated as. ok is
// false when the context did not pass through an Authenticator (then there
// is no identity and nothing may be attributed).
func IdentityFromContext(ctx context.Context) (zone string, ok bool) {
	zone, ok = ctx.Value(identityKey{}).(string)
	return zone, ok && zone != ""
}

type tokenIDKey struct{}

// TokenIDFromContext returns the id of the token the stream authenticated
// with, "" when ctx did not pass through an Authenticator.
func TokenIDFromContext(ctx context.Context) string {
	id, _ := ctx.Value(tokenIDKey{}).(string)
	return id
}

// identityStream is a grpc.ServerStream whose Context carries the identity.
type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }

// limiter is a token bucket per zone: perMinute tokens of capacity, refilled
// at perMinute per minute.
type limiter struct {
	mu        sync.Mutex
	perMinute int
	now       func() time.Time
	buckets   map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func (l *limiter) allow(zone string) bool {
	if l.perMinute <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	capacity := float64(l.perMinute)
	if len(l.buckets) > pruneAbove {
		for z, b := range l.buckets {
			if b.refill(now, capacity) >= capacity {
				delete(l.buckets, z)
			}
		}
	}
	b, ok := l.buckets[zone]
	if !ok {
		b = &bucket{tokens: capacity, last: now}
		l.buckets[zone] = b
	}
	if b.refill(now, capacity) < 1 {
		return false
	}
	b.tokens--
	return true
}

func (b *bucket) refill(now time.Time, capacity float64) float64 {
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = min(capacity, b.tokens+elapsed.Minutes()*capacity)
		b.last = now
	}
	return b.tokens
}
