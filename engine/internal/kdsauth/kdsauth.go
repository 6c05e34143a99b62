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
// The checks run in this order, each before anything that depends on it: the
// claimed zone is one value and a zone name (a DNS label, so at most 63
// bytes) before anything else reads it; then the token; then, with
// WithClientCertZone, that the verified client certificate names the
// token's zone; then the zone's session budget.
//
// A refused client learns nothing but that it was refused: the status
// message is the same for every reason (Unauthenticated, "zone
// authentication failed", with a reference), and the reason, the detail
// and the same reference go to global's log. Every value the peer chose is
// bounded with logsafe.Peer before it is logged, and refusals are logged at
// a bounded rate.
//
// The Authenticator also limits how many sessions each (verified) zone may
// open per minute, so a zone in a reconnect loop cannot make global spend
// its time on session setup and resyncs.
package kdsauth

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/kds-engine/kds-engine/engine/internal/logsafe"
	"github.com/kds-engine/kds-engine/engine/internal/tlsutil"
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
	// RefusedMessage starts the status message of every refused session;
	// a reference to global's log line follows.
	RefusedMessage = "zone authentication failed"
	// pruneAbove is the number of per-zone buckets above which idle (full)
	// buckets are dropped.
	pruneAbove = 1024
)

// Reasons a session is refused, passed to the OnRefused callback. The set is
// fixed, so a reason is safe to use as a metric label.
const (
	ReasonMissingZone         = "missing_zone"         // no (or several) "kds-zone" values
	ReasonInvalidZone         = "invalid_zone"         // the "kds-zone" value is not a zone name
	ReasonMissingToken        = "missing_token"        // no token presented
	ReasonExpired             = "expired"              // token past its expiry
	ReasonNotYetValid         = "not_yet_valid"        // token not valid yet (clock skew)
	ReasonUnknownKey          = "unknown_key"          // signed by a key global does not trust
	ReasonBadSignature        = "bad_signature"        // forged/altered token, or a non-EdDSA algorithm
	ReasonZoneMismatch        = "zone_mismatch"        // token issued for another zone
	ReasonWrongAudience       = "wrong_audience"       // token issued for another global (or none)
	ReasonCertificateMismatch = "certificate_mismatch" // client certificate does not name the token's zone
	ReasonMalformed           = "malformed"            // not a zone token
	ReasonRevoked             = "revoked"              // token listed in the revocation file
	ReasonRateLimited         = "rate_limited"         // too many new sessions for this zone
	ReasonInvalid             = "invalid"              // verifier error outside the token sentinels
)

// Reasons lists every Reason… constant.
var Reasons = []string{
	ReasonMissingZone, ReasonInvalidZone, ReasonMissingToken, ReasonExpired, ReasonNotYetValid, ReasonUnknownKey,
	ReasonBadSignature, ReasonZoneMismatch, ReasonWrongAudience, ReasonCertificateMismatch, ReasonMalformed,
	ReasonRevoked, ReasonRateLimited, ReasonInvalid,
}

// TokenVerifier checks a zone token against the zone a connection claims and
// returns the verified zone. *token.Verifier implements it; errors should
// wrap the token package's sentinels so refusals are classified.
type TokenVerifier interface {
	Verify(tok, claimedZone string) (zone string, err error)
}

// detailVerifier is a TokenVerifier that also returns the token's id and
// expiry, which the Authenticator then puts in the session's context
// (TokenIDFromContext, TokenExpiryFromContext) without parsing the token
// again.
type detailVerifier interface {
	VerifyToken(tok, claimedZone string) (token.Verified, error)
}

var (
	_ TokenVerifier  = (*token.Verifier)(nil)
	_ detailVerifier = (*token.Verifier)(nil)
	_ detailVerifier = (*token.KeyFileVerifier)(nil)
)

// Authenticator holds global's zone-authentication policy and provides the
// gRPC interceptors that enforce it. It is safe for concurrent use.
type Authenticator struct {
	verifier  TokenVerifier
	logger    hclog.Logger
	onRefused func(zone, reason string)
	limiter   *limiter
	logLimit  *logLimiter
	certZone  bool
}

// Option configures an Authenticator.
type Option func(*Authenticator)

// WithOnRefused sets a callback run (synchronously, on the RPC's goroutine)
// for every refused session, e.g. to count refusals in a metric. zone is the
// zone the connection claimed — unverified, bounded by logsafe.Peer — and
// reason is one of the Reason… constants. Because anyone can
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

// WithClientCertZone requires that the client certificate a zone's TLS
// connection verified with names the zone its token is for, as the URI SAN
// kds-zone://NAME (tlsutil.CertificateZones); otherwise the session is
// refused (ReasonCertificateMismatch). Use it when global requires client
// certificates (mTLS): then a zone's certificate alone cannot open a
// session for another zone, even with that zone's token. A connection
// without a verified client certificate is refused under this option.
func WithClientCertZone() Option {
	return func(a *Authenticator) { a.certZone = true }
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
// with codes.Unauthenticated and a message that says nothing but that (and
// a reference to global's log line, which has the reason), or, for an
// authenticated zone over its session budget, codes.ResourceExhausted
// with the limit; an accepted one reaches the handler with a context
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
		return nil, a.refuse(claimed, peerAddr, method, ReasonMissingZone,
			fmt.Sprintf("the connection must name its zone exactly once in metadata %q, %s", MetadataZone, got))
	}
	// Nothing reads the claimed zone before it is known to be a short
	// name: not the token check, not a message.
	if err := token.ValidateZoneName(claimed); err != nil {
		return nil, a.refuse(claimed, peerAddr, method, ReasonInvalidZone, fmt.Sprintf("metadata %q: %v", MetadataZone, err))
	}

	tok, reason, msg := bearerToken(md.Get(MetadataAuthorization))
	if reason != "" {
		return nil, a.refuse(claimed, peerAddr, method, reason, msg)
	}
	var got token.Verified
	var err error
	if dv, ok := a.verifier.(detailVerifier); ok {
		got, err = dv.VerifyToken(tok, claimed)
	} else {
		got.Zone, err = a.verifier.Verify(tok, claimed)
	}
	if err != nil {
		return nil, a.refuse(claimed, peerAddr, method, reasonFor(err), err.Error())
	}
	zone := got.Zone
	if zone != claimed {
		// A verifier must not return another zone than the one claimed;
		// fail closed if one does.
		return nil, a.refuse(claimed, peerAddr, method, ReasonZoneMismatch,
			fmt.Sprintf("token is for zone %s, connection claims zone %s", logsafe.Peer(zone), claimed))
	}
	if a.certZone {
		if msg := certificateProblem(ctx, zone); msg != "" {
			return nil, a.refuse(claimed, peerAddr, method, ReasonCertificateMismatch, msg)
		}
	}
	if !a.limiter.allow(zone) {
		// The zone has authenticated: it may know its limit.
		msg := fmt.Sprintf("zone %q exceeded its limit of %d new sessions per minute; retry later with backoff",
			zone, a.limiter.perMinute)
		a.logRefusal(zone, peerAddr, method, ReasonRateLimited, msg, "")
		a.onRefused(zone, ReasonRateLimited)
		return nil, status.Error(codes.ResourceExhausted, msg)
	}
	// The id names the session's token, so that revoking it can end the
	// session (empty from a verifier that does not report it).
	a.logger.Debug("zone authenticated", "zone", zone, "peer", peerAddr, "method", method, "token_id", got.ID)
	ctx = context.WithValue(ContextWithIdentity(ctx, zone), tokenIDKey{}, got.ID)
	return context.WithValue(ctx, tokenExpiryKey{}, got.ExpiresAt), nil
}

// certificateProblem says why the verified client certificate of ctx's
// connection does not name zone, or "" when it does.
func certificateProblem(ctx context.Context, zone string) string {
	cert := verifiedClientCertificate(ctx)
	if cert == nil {
		return "the connection has no verified client certificate, and global requires one that names the zone (mTLS with --client-ca-file)"
	}
	zones := tlsutil.CertificateZones(cert)
	if slices.Contains(zones, zone) {
		return ""
	}
	named := "no zone"
	if len(zones) > 0 {
		bounded := make([]string, 0, min(len(zones), 4))
		for _, z := range zones[:min(len(zones), 4)] {
			bounded = append(bounded, logsafe.Peer(z))
		}
		named = "zones " + strings.Join(bounded, ", ")
	}
	return fmt.Sprintf("the client certificate (subject %s, serial %x) names %s, the token is for zone %s; "+
		"issue the zone a certificate with the URI SAN %s, or start global with --client-cert-must-name-zone=false",
		logsafe.Peer(cert.Subject.String()), cert.SerialNumber, named, zone, tlsutil.ZoneURI(zone))
}

// verifiedClientCertificate is the leaf of the chain the TLS handshake
// verified the client's certificate with, or nil.
func verifiedClientCertificate(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return ti.State.VerifiedChains[0][0]
}

// refuse logs a refused session with its reason and detail under a fresh
// reference, tells the callback, and returns the status for the peer: the
// same for every reason, naming only the reference.
func (a *Authenticator) refuse(claimed, peerAddr, method, reason, detail string) error {
	ref := fmt.Sprintf("%08x", rand.Uint32())
	zone := logsafe.Peer(claimed)
	a.logRefusal(zone, peerAddr, method, reason, detail, ref)
	a.onRefused(zone, reason)
	return status.Error(codes.Unauthenticated, fmt.Sprintf("%s (ref %s); global's log has the reason", RefusedMessage, ref))
}

// logRefusal writes one bounded log line per refusal, at a bounded rate.
func (a *Authenticator) logRefusal(zone, peerAddr, method, reason, detail, ref string) {
	if log, suppressed := a.logLimit.take(); log {
		args := []any{"zone", zone, "peer", peerAddr, "method", method, "reason", reason, "error", detail}
		if ref != "" {
			args = append(args, "ref", ref)
		}
		if suppressed > 0 {
			args = append(args, "suppressed_since_last", suppressed)
		}
		a.logger.Warn("refused zone session", args...)
	}
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
	if len(v)-len(bearerPrefix) > token.MaxTokenSize+64 {
		// Verify bounds the token too; this keeps a huge value from even
		// being trimmed.
		return "", ReasonMalformed, fmt.Sprintf("%q metadata is %d bytes, a zone token is at most %d", MetadataAuthorization, len(v), token.MaxTokenSize)
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
	case errors.Is(err, token.ErrWrongAudience):
		return ReasonWrongAudience
	default:
		return ReasonInvalid
	}
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

type tokenExpiryKey struct{}

// TokenExpiryFromContext returns when the token the stream authenticated
// with expires; the zero time when ctx did not pass through an
// Authenticator or its verifier does not report expiry.
func TokenExpiryFromContext(ctx context.Context) time.Time {
	t, _ := ctx.Value(tokenExpiryKey{}).(time.Time)
	return t
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
