package kdsauth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kds-engine/kds-engine/engine/internal/logsafe"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/fakeclock"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
	"github.com/kds-engine/kds-engine/engine/internal/token"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// echoKDS answers each session with one response whose SystemVersionInfo
// is the identity the stream context carries.
type echoKDS struct {
	kdsv1.UnimplementedKDSServer
	calls atomic.Int32
}

func (e *echoKDS) Session(stream grpc.BidiStreamingServer[kdsv1.Message, kdsv1.Message]) error {
	e.calls.Add(1)
	zone, ok := IdentityFromContext(stream.Context())
	if !ok {
		return status.Error(codes.Internal, "handler reached without identity")
	}
	return stream.Send(&kdsv1.Message{Kind: &kdsv1.Message_Response{
		Response: &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: zone},
	}})
}

type refusal struct{ zone, reason string }

type recorder struct {
	mu   sync.Mutex
	seen []refusal
}

func (r *recorder) record(zone, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, refusal{zone, reason})
}

func (r *recorder) all() []refusal {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]refusal(nil), r.seen...)
}

var now0 = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)

// testAudience is the cluster id of the global in these tests.
const testAudience = "test-cluster"

type env struct {
	issuer   *token.Issuer
	addr     string
	kds      *echoKDS
	refused  *recorder
	logs     *logbuf.Buffer
	clock    *fakeclock.Clock
	tokenDir string
}

func newIssuer(t *testing.T, at time.Time) *token.Issuer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	iss, err := token.NewIssuer(priv, testAudience, token.WithIssuerClock(func() time.Time { return at }))
	require.NoError(t, err)
	return iss
}

// startEnv runs a real gRPC server on loopback with the Authenticator's
// interceptor in front of echoKDS.
func startEnv(t *testing.T, opts ...Option) *env {
	t.Helper()
	e := &env{
		issuer:   newIssuer(t, now0),
		kds:      &echoKDS{},
		refused:  &recorder{},
		logs:     &logbuf.Buffer{},
		clock:    fakeclock.New(now0),
		tokenDir: t.TempDir(),
	}
	verifier, err := token.NewVerifier([]ed25519.PublicKey{e.issuer.PublicKey()}, testAudience, token.WithClock(e.clock.Now))
	require.NoError(t, err)
	logger := hclog.New(&hclog.LoggerOptions{Output: e.logs, Level: hclog.Debug})
	all := append([]Option{WithOnRefused(e.refused.record), WithClock(e.clock.Now)}, opts...)
	auth, err := NewAuthenticator(verifier, logger, all...)
	require.NoError(t, err)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer(grpc.StreamInterceptor(auth.StreamInterceptor()))
	kdsv1.RegisterKDSServer(srv, e.kds)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	e.addr = lis.Addr().String()
	return e
}

func (e *env) token(t *testing.T, zone string) string {
	t.Helper()
	tok, err := e.issuer.Generate(zone, time.Hour)
	require.NoError(t, err)
	return tok
}

func (e *env) tokenFile(t *testing.T, tok string) string {
	t.Helper()
	f, err := os.CreateTemp(e.tokenDir, "token-*")
	require.NoError(t, err)
	_, err = f.WriteString(tok + "\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return f.Name()
}

// session opens a KDS session claiming zone and returns the identity the
// server saw, or the RPC error. Extra metadata pairs are appended.
func (e *env) session(t *testing.T, zone string, dialOpts []grpc.DialOption, md ...string) (string, error) {
	t.Helper()
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dialOpts...)
	cc, err := grpc.NewClient(e.addr, opts...)
	if err != nil {
		return "", err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if zone != "" {
		md = append(md, MetadataZone, zone)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, md...)
	stream, err := kdsv1.NewKDSClient(cc).Session(ctx)
	if err != nil {
		return "", err
	}
	msg, err := stream.Recv()
	if err != nil {
		return "", err
	}
	return msg.GetResponse().GetSystemVersionInfo(), nil
}

func (e *env) sessionWithToken(t *testing.T, zone, tok string) (string, error) {
	t.Helper()
	return e.session(t, zone, nil, MetadataAuthorization, "Bearer "+tok)
}

func assertRefused(t *testing.T, err error, code codes.Code, fragments ...string) {
	t.Helper()
	require.Error(t, err)
	st, ok := status.FromError(err)
	require.True(t, ok, "not a status error: %v", err)
	assert.Equal(t, code, st.Code(), st.Message())
	for _, f := range fragments {
		assert.Contains(t, st.Message(), f)
	}
}

var refusedRE = regexp.MustCompile(`^zone authentication failed \(ref ([0-9a-f]{8})\); global's log has the reason$`)

// assertRefusedLogged checks that err is the refusal every unauthenticated
// client gets — Unauthenticated and nothing but a reference — and that
// global's log line with that reference has the reason and every fragment.
func assertRefusedLogged(t *testing.T, err error, logs *logbuf.Buffer, reason string, fragments ...string) {
	t.Helper()
	require.Error(t, err)
	st, ok := status.FromError(err)
	require.True(t, ok, "not a status error: %v", err)
	assert.Equal(t, codes.Unauthenticated, st.Code(), st.Message())
	m := refusedRE.FindStringSubmatch(st.Message())
	require.NotNil(t, m, "the refused client learns nothing but the reference: %q", st.Message())
	lines := logs.Lines(append([]string{"refused zone session", "ref=" + m[1], "reason=" + reason}, fragments...)...)
	assert.Len(t, lines, 1, "global's log has the reason under the reference:\n%s", logs.String())
}

func TestValidTokenFromFileYieldsIdentity(t *testing.T) {
	e := startEnv(t)
	creds, err := NewTokenFileCredentials(e.tokenFile(t, e.token(t, "zone-a")), WithInsecureTransport())
	require.NoError(t, err)

	zone, err := e.session(t, "zone-a", []grpc.DialOption{grpc.WithPerRPCCredentials(creds)})
	require.NoError(t, err)
	assert.Equal(t, "zone-a", zone)
	assert.Empty(t, e.refused.all())
	assert.EqualValues(t, 1, e.kds.calls.Load())
}

func TestTokenForAnotherZoneIsRefused(t *testing.T) {
	e := startEnv(t)
	_, err := e.sessionWithToken(t, "zone-b", e.token(t, "zone-a"))
	assertRefusedLogged(t, err, e.logs, ReasonZoneMismatch, `token is for zone zone-a, connection claims zone zone-b`)
	assert.Equal(t, []refusal{{"zone-b", ReasonZoneMismatch}}, e.refused.all())
	assert.Zero(t, e.kds.calls.Load(), "a refused stream must never reach the handler")
}

func TestExpiredTokenIsRefused(t *testing.T) {
	e := startEnv(t)
	tok := e.token(t, "zone-a")
	e.clock.Advance(2 * time.Hour)
	_, err := e.sessionWithToken(t, "zone-a", tok)
	assertRefusedLogged(t, err, e.logs, ReasonExpired, now0.Add(time.Hour).Format(time.RFC3339), "kds-engine token generate")
	assert.Equal(t, []refusal{{"zone-a", ReasonExpired}}, e.refused.all())
	assert.Zero(t, e.kds.calls.Load())
}

func TestTokenFromUnknownKeyIsRefused(t *testing.T) {
	e := startEnv(t)
	other := newIssuer(t, now0)
	tok, err := other.Generate("zone-a", time.Hour)
	require.NoError(t, err)
	_, err = e.sessionWithToken(t, "zone-a", tok)
	assertRefusedLogged(t, err, e.logs, ReasonUnknownKey, "global does not trust")
	assert.Equal(t, []refusal{{"zone-a", ReasonUnknownKey}}, e.refused.all())
}

func TestForgedTokenIsRefused(t *testing.T) {
	e := startEnv(t)
	parts := strings.Split(e.token(t, "zone-a"), ".")
	parts[2] = strings.Repeat("A", len(parts[2]))
	_, err := e.sessionWithToken(t, "zone-a", strings.Join(parts, "."))
	assertRefusedLogged(t, err, e.logs, ReasonBadSignature)
	assert.Equal(t, []refusal{{"zone-a", ReasonBadSignature}}, e.refused.all())
}

func TestNoTokenIsRefused(t *testing.T) {
	e := startEnv(t)
	_, err := e.session(t, "zone-a", nil)
	assertRefusedLogged(t, err, e.logs, ReasonMissingToken, "--token-file")
	assert.Equal(t, []refusal{{"zone-a", ReasonMissingToken}}, e.refused.all())
	assert.Zero(t, e.kds.calls.Load())
}

func TestBadMetadataIsRefused(t *testing.T) {
	e := startEnv(t)
	tok := e.token(t, "zone-a")

	_, err := e.session(t, "", nil, MetadataAuthorization, "Bearer "+tok)
	assertRefusedLogged(t, err, e.logs, ReasonMissingZone, MetadataZone)

	// Two claimed zones: ambiguous, refused even though one matches.
	_, err = e.session(t, "zone-a", nil, MetadataZone, "zone-b", MetadataAuthorization, "Bearer "+tok)
	assertRefusedLogged(t, err, e.logs, ReasonMissingZone, "got 2 values")

	_, err = e.session(t, "zone-a", nil, MetadataAuthorization, "Basic "+tok)
	assertRefusedLogged(t, err, e.logs, ReasonMalformed, "Bearer")

	_, err = e.session(t, "zone-a", nil, MetadataAuthorization, "Bearer "+tok, MetadataAuthorization, "Bearer "+tok)
	assertRefusedLogged(t, err, e.logs, ReasonMalformed, "exactly one")

	_, err = e.session(t, "zone-a", nil, MetadataAuthorization, "Bearer not-a-token")
	assertRefusedLogged(t, err, e.logs, ReasonMalformed)

	// The scheme is case-insensitive.
	zone, err := e.session(t, "zone-a", nil, MetadataAuthorization, "bearer "+tok)
	require.NoError(t, err)
	assert.Equal(t, "zone-a", zone)

	assert.Equal(t, []refusal{
		{"", ReasonMissingZone}, {"zone-b", ReasonMissingZone}, {"zone-a", ReasonMalformed},
		{"zone-a", ReasonMalformed}, {"zone-a", ReasonMalformed},
	}, e.refused.all())
	assert.EqualValues(t, 1, e.kds.calls.Load())
}

func TestRefusalsAreLoggedWithZonePeerAndReason(t *testing.T) {
	e := startEnv(t)
	_, err := e.sessionWithToken(t, "zone-b", e.token(t, "zone-a"))
	require.Error(t, err)
	logs := e.logs.String()
	assert.Contains(t, logs, "refused zone session")
	assert.Contains(t, logs, "zone=zone-b")
	assert.Contains(t, logs, "peer=127.0.0.1:")
	assert.Contains(t, logs, "reason="+ReasonZoneMismatch)
	assert.Contains(t, logs, "kdsauth")

	// A hostile claimed zone is bounded and quoted in logs and callbacks,
	// and refused as such before the token is looked at.
	hostile := "evil zone" + strings.Repeat("x", 500)
	_, err = e.sessionWithToken(t, hostile, e.token(t, "zone-a"))
	assertRefusedLogged(t, err, e.logs, ReasonInvalidZone)
	got := e.refused.all()
	require.Len(t, got, 2)
	assert.Less(t, len(got[1].zone), 100)
	assert.True(t, strings.HasPrefix(got[1].zone, `"evil zone`), got[1].zone)
}

func TestRateLimitPerZone(t *testing.T) {
	e := startEnv(t, WithSessionsPerMinute(3))

	tokA := e.token(t, "zone-a")
	for i := range 3 {
		_, err := e.sessionWithToken(t, "zone-a", tokA)
		require.NoError(t, err, "session %d is within the burst", i+1)
	}
	_, err := e.sessionWithToken(t, "zone-a", tokA)
	assertRefused(t, err, codes.ResourceExhausted, `zone "zone-a"`, "3 new sessions per minute")
	assert.Equal(t, []refusal{{"zone-a", ReasonRateLimited}}, e.refused.all())

	// Other zones have their own budget.
	_, err = e.sessionWithToken(t, "zone-b", e.token(t, "zone-b"))
	require.NoError(t, err)

	// Attempts without zone-a's token do not use up zone-a's budget...
	e.clock.Advance(20 * time.Second) // refills one session
	for range 5 {
		_, err = e.sessionWithToken(t, "zone-a", e.token(t, "zone-b"))
		assertRefusedLogged(t, err, e.logs, ReasonZoneMismatch)
	}
	// ...so the refilled session is still there for the real zone-a.
	_, err = e.sessionWithToken(t, "zone-a", tokA)
	require.NoError(t, err)
	_, err = e.sessionWithToken(t, "zone-a", tokA)
	assertRefused(t, err, codes.ResourceExhausted)

	assert.EqualValues(t, 5, e.kds.calls.Load())
}

func TestRateLimitDisabled(t *testing.T) {
	e := startEnv(t, WithSessionsPerMinute(0))
	tok := e.token(t, "zone-a")
	for range DefaultSessionsPerMinute + 5 {
		_, err := e.sessionWithToken(t, "zone-a", tok)
		require.NoError(t, err)
	}
}

func TestConcurrentSessions(t *testing.T) {
	e := startEnv(t, WithSessionsPerMinute(0))
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	tokens := map[string]string{"zone-a": e.token(t, "zone-a"), "zone-b": e.token(t, "zone-b")}
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			zone := []string{"zone-a", "zone-b"}[i%2]
			got, err := e.sessionWithToken(t, zone, tokens[zone])
			if err == nil && got != zone {
				err = status.Errorf(codes.Internal, "identity %q for zone %q", got, zone)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestUnaryInterceptor(t *testing.T) {
	iss := newIssuer(t, time.Now())
	v, err := token.NewVerifier([]ed25519.PublicKey{iss.PublicKey()}, testAudience)
	require.NoError(t, err)
	logs := &logbuf.Buffer{}
	auth, err := NewAuthenticator(v, hclog.New(&hclog.LoggerOptions{Output: logs}))
	require.NoError(t, err)
	tok, err := iss.Generate("zone-a", time.Hour)
	require.NoError(t, err)

	handler := func(ctx context.Context, _ any) (any, error) {
		zone, ok := IdentityFromContext(ctx)
		require.True(t, ok)
		return zone, nil
	}
	info := &grpc.UnaryServerInfo{FullMethod: "/test/Unary"}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(MetadataZone, "zone-a", MetadataAuthorization, "Bearer "+tok))
	got, err := auth.UnaryInterceptor()(ctx, nil, info, handler)
	require.NoError(t, err)
	assert.Equal(t, "zone-a", got)

	ctx = metadata.NewIncomingContext(context.Background(), metadata.Pairs(MetadataZone, "zone-b", MetadataAuthorization, "Bearer "+tok))
	_, err = auth.UnaryInterceptor()(ctx, nil, info, handler)
	assertRefusedLogged(t, err, logs, ReasonZoneMismatch)
}

type fixedVerifier struct {
	zone string
	err  error
}

func (f fixedVerifier) Verify(string, string) (string, error) { return f.zone, f.err }

func TestAuthenticatorFailsClosed(t *testing.T) {
	_, err := NewAuthenticator(nil, hclog.NewNullLogger())
	assert.Error(t, err)
	_, err = NewAuthenticator(fixedVerifier{}, nil)
	assert.Error(t, err)

	md := metadata.Pairs(MetadataZone, "zone-a", MetadataAuthorization, "Bearer x")
	ctx := metadata.NewIncomingContext(context.Background(), md)

	// A verifier that returns another zone than claimed is not trusted.
	logs := &logbuf.Buffer{}
	log := hclog.New(&hclog.LoggerOptions{Output: logs})
	auth, err := NewAuthenticator(fixedVerifier{zone: "zone-b"}, log)
	require.NoError(t, err)
	_, err = auth.Authenticate(ctx, "/m")
	assertRefusedLogged(t, err, logs, ReasonZoneMismatch)

	// An unclassified verifier error is still a refusal.
	auth, err = NewAuthenticator(fixedVerifier{err: assert.AnError}, log)
	require.NoError(t, err)
	_, err = auth.Authenticate(ctx, "/m")
	assertRefusedLogged(t, err, logs, ReasonInvalid)
}

func TestIdentityFromContext(t *testing.T) {
	_, ok := IdentityFromContext(context.Background())
	assert.False(t, ok)
	_, ok = IdentityFromContext(ContextWithIdentity(context.Background(), ""))
	assert.False(t, ok, "an empty identity is no identity")
	zone, ok := IdentityFromContext(ContextWithIdentity(context.Background(), "zone-a"))
	assert.True(t, ok)
	assert.Equal(t, "zone-a", zone)
}

func TestLimiterRefillAndPrune(t *testing.T) {
	clock := fakeclock.New(now0)
	l := &limiter{perMinute: 2, now: clock.Now, buckets: map[string]*bucket{}}
	assert.True(t, l.allow("a"))
	assert.True(t, l.allow("a"))
	assert.False(t, l.allow("a"))
	clock.Advance(29 * time.Second)
	assert.False(t, l.allow("a"), "less than half a minute refills less than one session")
	clock.Advance(2 * time.Second)
	assert.True(t, l.allow("a"))

	for i := range pruneAbove + 10 {
		l.allow(strings.Repeat("z", i%50) + string(rune('A'+i%26)) + time.Duration(i).String())
	}
	clock.Advance(time.Hour) // every bucket refills
	l.allow("trigger")
	assert.LessOrEqual(t, len(l.buckets), 1, "idle buckets are pruned")
}

func TestTokenFileCredentials(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), mode))
		require.NoError(t, os.Chmod(p, mode))
		return p
	}

	_, err := NewTokenFileCredentials(filepath.Join(dir, "absent"))
	assert.ErrorIs(t, err, os.ErrNotExist)

	open := write("open", "tok\n", 0o644)
	_, err = NewTokenFileCredentials(open)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "0644")
	assert.Contains(t, err.Error(), "chmod 600 "+open)

	_, err = NewTokenFileCredentials(write("empty", " \n", 0o600))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is empty")

	_, err = NewTokenFileCredentials(write("two", "a b\n", 0o600))
	require.Error(t, err)

	_, err = NewTokenFileCredentials(dir)
	require.Error(t, err)

	path := write("token", "first\n", 0o600)
	c, err := NewTokenFileCredentials(path, WithInsecureTransport())
	require.NoError(t, err)
	assert.False(t, c.RequireTransportSecurity())
	md, err := c.GetRequestMetadata(context.Background())
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"authorization": "Bearer first"}, md)

	// A replaced token is used by the next RPC.
	write("token", "second-token", 0o600)
	md, err = c.GetRequestMetadata(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "Bearer second-token", md["authorization"])

	// A changed file that cannot be used keeps the previous token.
	require.NoError(t, os.Chmod(path, 0o644))
	md, err = c.GetRequestMetadata(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "Bearer second-token", md["authorization"], "an unsafe file is not used")
	require.NoError(t, os.Chmod(path, 0o600))

	// Secure by default: no token over a connection without TLS.
	secure, err := NewTokenFileCredentials(path)
	require.NoError(t, err)
	assert.True(t, secure.RequireTransportSecurity())
	_, err = secure.GetRequestMetadata(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "insecure connection")
	_, err = grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(secure))
	assert.Error(t, err, "gRPC refuses to combine these credentials with a plaintext connection")
}

func TestRefusalLogsAreBounded(t *testing.T) {
	e := startEnv(t, WithRefusalLogsPerMinute(2))
	for range 5 {
		_, err := e.session(t, "zone-a", nil)
		require.Error(t, err)
	}
	assert.Len(t, e.refused.all(), 5, "the callback sees every refusal")
	assert.Equal(t, 2, strings.Count(e.logs.String(), "refused zone session"))

	e.clock.Advance(time.Minute)
	_, err := e.session(t, "zone-a", nil)
	require.Error(t, err)
	logs := e.logs.String()
	assert.Equal(t, 3, strings.Count(logs, "refused zone session"))
	assert.Contains(t, logs, "suppressed_since_last=3")
}

func TestEmptyClaimedZoneIsRefused(t *testing.T) {
	e := startEnv(t)
	_, err := e.session(t, "", nil, MetadataZone, "", MetadataAuthorization, "Bearer "+e.token(t, "zone-a"))
	assertRefusedLogged(t, err, e.logs, ReasonMissingZone, "empty value")
	assert.Zero(t, e.kds.calls.Load())
}

// An accepted session's context names the token it authenticated with; a
// revoked token is refused with reason "revoked".
func TestTokenIDAndRevokedReason(t *testing.T) {
	iss := newIssuer(t, now0)
	tok, err := iss.Generate("zone-a", time.Hour)
	require.NoError(t, err)
	info, err := token.Inspect(tok)
	require.NoError(t, err)
	id := info.ID
	ctx := metadata.NewIncomingContext(context.Background(),
		metadata.Pairs(MetadataZone, "zone-a", MetadataAuthorization, "Bearer "+tok))

	v, err := token.NewVerifier([]ed25519.PublicKey{iss.PublicKey()}, testAudience, token.WithClock(func() time.Time { return now0 }))
	require.NoError(t, err)
	auth, err := NewAuthenticator(v, hclog.NewNullLogger())
	require.NoError(t, err)
	got, err := auth.Authenticate(ctx, "/m")
	require.NoError(t, err)
	assert.Equal(t, id, TokenIDFromContext(got))
	assert.Equal(t, now0.Add(time.Hour), TokenExpiryFromContext(got))
	assert.Empty(t, TokenIDFromContext(context.Background()))
	assert.True(t, TokenExpiryFromContext(context.Background()).IsZero())

	// A verifier that only returns the zone leaves the id empty.
	auth, err = NewAuthenticator(fixedVerifier{zone: "zone-a"}, hclog.NewNullLogger())
	require.NoError(t, err)
	got, err = auth.Authenticate(ctx, "/m")
	require.NoError(t, err)
	assert.Empty(t, TokenIDFromContext(got))

	var r recorder
	logs := &logbuf.Buffer{}
	auth, err = NewAuthenticator(fixedVerifier{err: fmt.Errorf("%w: token %s", token.ErrRevoked, id)},
		hclog.New(&hclog.LoggerOptions{Output: logs}), WithOnRefused(r.record))
	require.NoError(t, err)
	_, err = auth.Authenticate(ctx, "/m")
	assertRefusedLogged(t, err, logs, ReasonRevoked, id)
	assert.Equal(t, []refusal{{"zone-a", ReasonRevoked}}, r.all())
}

// A refused client learns nothing: not the reason, not which keys global
// trusts (the unknown_key detail names them), not the token's id.
func TestRefusalRevealsNothingToTheClient(t *testing.T) {
	e := startEnv(t)
	other := newIssuer(t, now0)
	tok, err := other.Generate("zone-a", time.Hour)
	require.NoError(t, err)
	_, err = e.sessionWithToken(t, "zone-a", tok)
	assertRefusedLogged(t, err, e.logs, ReasonUnknownKey, token.KeyID(e.issuer.PublicKey()))
	msg := status.Convert(err).Message()
	assert.NotContains(t, msg, token.KeyID(e.issuer.PublicKey()), "trusted key ids stay in global's log")
	assert.NotContains(t, msg, ReasonUnknownKey)

	e.clock.Advance(2 * time.Hour)
	_, err = e.sessionWithToken(t, "zone-a", e.token(t, "zone-a"))
	require.Error(t, err)
	_, err2 := e.sessionWithToken(t, "zone-b", e.token(t, "zone-a"))
	require.Error(t, err2)
	strip := func(err error) string { return refusedRE.ReplaceAllString(status.Convert(err).Message(), "REF") }
	assert.Equal(t, strip(err), strip(err2), "every reason reads the same to the client")
}

// countingVerifier counts the tokens it is asked to verify.
type countingVerifier struct{ calls atomic.Int32 }

func (c *countingVerifier) Verify(string, string) (string, error) {
	c.calls.Add(1)
	return "", assert.AnError
}

// The claimed zone is checked for syntax and length before anything else:
// the token of a connection claiming a zone that is not a zone name is
// never looked at.
func TestInvalidZoneIsRefusedBeforeTheToken(t *testing.T) {
	v := &countingVerifier{}
	logs := &logbuf.Buffer{}
	var r recorder
	auth, err := NewAuthenticator(v, hclog.New(&hclog.LoggerOptions{Output: logs}), WithOnRefused(r.record))
	require.NoError(t, err)
	for _, zone := range []string{"Zone-A", "a.b", "zone a", "-x", strings.Repeat("z", token.MaxZoneNameLength+1), strings.Repeat("z", 60<<10), "zone\nforged=1"} {
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(MetadataZone, zone, MetadataAuthorization, "Bearer x"))
		_, err := auth.Authenticate(ctx, "/m")
		assertRefusedLogged(t, err, logs, ReasonInvalidZone)
	}
	assert.Zero(t, v.calls.Load(), "no token was verified")
	for _, got := range r.all() {
		assert.Equal(t, ReasonInvalidZone, got.reason)
		assert.LessOrEqual(t, len(got.zone), 2*logsafe.MaxPeerValue)
	}
}

// Whatever a client sends within gRPC's header limit, one refusal adds one
// log line of bounded size: the claimed zone, a token's key id and
// algorithm are cut down before they are logged.
func TestRefusalLogLinesAreBounded(t *testing.T) {
	e := startEnv(t)
	huge := strings.Repeat("k", 3000)
	longKid := encodeSegment(map[string]any{"alg": "EdDSA", "kid": huge}) + "." + encodeSegment(map[string]any{"sub": "zone-a"}) + ".c2ln"
	longAlg := encodeSegment(map[string]any{"alg": huge, "kid": "x"}) + "." + encodeSegment(map[string]any{"sub": "zone-a"}) + ".c2ln"
	for _, tc := range []struct{ zone, tok string }{
		{strings.Repeat("z", 32<<10), "x"},
		{"zone-a", longKid},
		{"zone-a", longAlg},
		{"zone-a", strings.Repeat("t", 32<<10)},
	} {
		before := len(e.logs.String())
		_, err := e.sessionWithToken(t, tc.zone, tc.tok)
		require.Error(t, err)
		added := e.logs.String()[before:]
		assert.Equal(t, 1, strings.Count(added, "refused zone session"))
		assert.Less(t, len(added), 1024, "one refusal, one short line: %s", added)
	}
}

func encodeSegment(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
