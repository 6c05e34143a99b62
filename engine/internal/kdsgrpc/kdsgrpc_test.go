package kdsgrpc

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kds-engine/kds-engine/engine/internal/mux"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve starts a server of cfg with impl on 127.0.0.1:0 and stops it at
// cleanup.
func serve(t *testing.T, impl kdsv1.KDSServer, cfg Config, extra ...grpc.ServerOption) string {
	t.Helper()
	return serveWith(t, NewServer(cfg, extra...), impl)
}

// serveWith starts srv with impl on 127.0.0.1:0 and stops it at cleanup.
func serveWith(t *testing.T, srv *grpc.Server, impl kdsv1.KDSServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	kdsv1.RegisterKDSServer(srv, impl)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
		if g, ok := impl.(*Global); ok {
			g.Wait()
		}
	})
	return lis.Addr().String()
}

// rawStream opens a KDS.Session stream without a mux, as a misbehaving zone.
func rawStream(t *testing.T, ctx context.Context, addr, zone string, opts ...grpc.DialOption) kdsv1.KDS_SessionClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	if zone != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, ZoneMetadataKey, zone)
	}
	s, err := kdsv1.NewKDSClient(conn).Session(ctx)
	require.NoError(t, err)
	return s
}

func insecureDial() Option {
	return WithDialOptions(grpc.WithTransportCredentials(insecure.NewCredentials()))
}

func eventually(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	require.Eventually(t, cond, 20*time.Second, 10*time.Millisecond, msg)
}

func TestGlobalRejectsMissingOrInvalidZone(t *testing.T) {
	called := atomic.Bool{}
	g := NewGlobal(1, func(context.Context, string, *mux.Session) error { called.Store(true); return nil })
	addr := serve(t, g, Config{})
	for _, zone := range []string{"", "Bad_Zone", strings.Repeat("a", 64), "-x"} {
		ctx, cancel := context.WithCancel(context.Background())
		s := rawStream(t, ctx, addr, zone)
		_, err := s.Recv()
		cancel()
		require.Error(t, err, zone)
		assert.Equal(t, codes.InvalidArgument, status.Code(err), "zone %q: %v", zone, err)
		assert.Contains(t, err.Error(), "zone")
	}
	assert.False(t, called.Load())
	assert.ErrorIs(t, ValidateZoneName("Zone"), ErrInvalidZoneName)
	assert.NoError(t, ValidateZoneName("zone-1"))
}

// Both sides sync over a real stream: the zone subscribes to global and
// serves it, global mirrors that; hooks and connection state follow.
func TestGlobalAndDialerExchange(t *testing.T) {
	type seen struct {
		zone  string
		nonce string
	}
	globalSeen := make(chan seen, 1)
	g := NewGlobal(2, func(ctx context.Context, zone string, s *mux.Session) error {
		// global serves the zone's request, and subscribes to the zone.
		r, err := s.Server().Recv()
		if err != nil {
			return err
		}
		if err := s.Server().Send(&discovery.DeltaDiscoveryResponse{Nonce: "from-global"}); err != nil {
			return err
		}
		if err := s.Client().Send(&discovery.DeltaDiscoveryRequest{ResponseNonce: "global-asks"}); err != nil {
			return err
		}
		resp, err := s.Client().Recv()
		if err != nil {
			return err
		}
		globalSeen <- seen{zone: zone, nonce: r.GetResponseNonce() + "/" + resp.GetNonce()}
		<-ctx.Done()
		return nil
	})
	addr := serve(t, g, Config{})

	zoneGot := make(chan string, 1)
	var starts, ends atomic.Int32
	var endErr atomic.Value
	d := NewDialer([]string{addr}, "zone-1", 2, func(ctx context.Context, s *mux.Session) error {
		if err := s.Client().Send(&discovery.DeltaDiscoveryRequest{ResponseNonce: "zone-asks"}); err != nil {
			return err
		}
		resp, err := s.Client().Recv()
		if err != nil {
			return err
		}
		r, err := s.Server().Recv()
		if err != nil {
			return err
		}
		if err := s.Server().Send(&discovery.DeltaDiscoveryResponse{Nonce: "from-zone"}); err != nil {
			return err
		}
		zoneGot <- resp.GetNonce() + "/" + r.GetResponseNonce()
		<-ctx.Done()
		return nil
	}, insecureDial(), WithSessionHooks(
		func(ev SessionEvent) { starts.Add(1); assert.Equal(t, "zone-1", ev.Zone) },
		func(ev SessionEvent) { ends.Add(1); endErr.Store(ev.Err) },
	))
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(ctx) }()

	select {
	case s := <-globalSeen:
		assert.Equal(t, seen{zone: "zone-1", nonce: "zone-asks/from-zone"}, s)
	case <-time.After(20 * time.Second):
		t.Fatal("global did not complete its exchange")
	}
	select {
	case s := <-zoneGot:
		assert.Equal(t, "from-global/global-asks", s)
	case <-time.After(20 * time.Second):
		t.Fatal("zone did not complete its exchange")
	}
	st := d.State()
	assert.True(t, st.Connected)
	assert.False(t, st.ConnectedSince.IsZero())
	assert.Equal(t, 1, st.Sessions)
	assert.Equal(t, int32(1), starts.Load())

	cancel()
	require.NoError(t, <-runDone)
	assert.Equal(t, int32(1), ends.Load())
	assert.Error(t, endErr.Load().(error), "a session always ends with an error")
	assert.False(t, d.State().Connected)
}

// stallingGlobal accepts sessions and never reads from them.
type stallingGlobal struct {
	kdsv1.UnimplementedKDSServer
	sessions atomic.Int32
}

func (s *stallingGlobal) Session(stream kdsv1.KDS_SessionServer) error {
	s.sessions.Add(1)
	// Like Global, it accepts the zone with its session header first.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

// refusingGlobal refuses every session, as global does a zone whose token
// it does not accept.
type refusingGlobal struct {
	kdsv1.UnimplementedKDSServer
	attempts atomic.Int32
}

func (s *refusingGlobal) Session(kdsv1.KDS_SessionServer) error {
	s.attempts.Add(1)
	return status.Error(codes.Unauthenticated, "token expired")
}

// A session global refuses never counts as connected on the zone: the
// stream opens at once (gRPC does not wait for global), so the Dialer waits
// for global's session header before it calls the session started. Its
// log says no session started (not that one ended), and the refusal hint
// follows the refusal's error.
func TestRefusedSessionIsNeverConnected(t *testing.T) {
	var logs logbuf.Buffer
	peer := &refusingGlobal{}
	addr := serve(t, peer, Config{})
	var started atomic.Int32
	d := NewDialer([]string{addr}, "zone-1", 1, func(ctx context.Context, s *mux.Session) error {
		<-ctx.Done()
		return nil
	}, insecureDial(),
		WithBackoff(Backoff{Base: 5 * time.Millisecond, Cap: 10 * time.Millisecond}),
		WithSessionHooks(func(SessionEvent) { started.Add(1) }, nil),
		WithLogger(hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Warn})),
		WithRefusalHint(func(err error) string {
			if status.Code(err) == codes.Unauthenticated {
				return "what the zone sees in its token"
			}
			return ""
		}),
	)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(ctx) }()
	var st ConnState
	require.Eventually(t, func() bool {
		st = d.State()
		return peer.attempts.Load() >= 5 && st.LastError != nil && strings.Contains(st.LastError.Error(), "token expired")
	}, 10*time.Second, time.Millisecond)
	assert.Contains(t, st.LastError.Error(), "session refused")
	assert.Contains(t, st.LastError.Error(), "token expired; what the zone sees in its token", "the hint follows the refusal")
	cancel()
	<-runDone
	assert.Zero(t, started.Load(), "no refused attempt started a session")
	assert.NotEmpty(t, logs.Lines("[WARN]", "no session with global", "what the zone sees in its token"), logs.String())
	assert.Empty(t, logs.Lines("session ended"), "no session started, so none ended")
	st = d.State()
	assert.False(t, st.Connected)
	assert.Zero(t, st.Sessions)
}

// A global that stops reading: the zone's Send blocks in flow control, the
// send timeout ends the session with an error naming the timeout, and the
// Dialer reconnects.
func TestSendTimeoutEndsSessionAndZoneReconnects(t *testing.T) {
	peer := &stallingGlobal{}
	// Static 64 KiB windows: a peer that does not read stops the sender
	// after 64 KiB.
	addr := serve(t, peer, Config{}, grpc.InitialWindowSize(64<<10), grpc.InitialConnWindowSize(64<<10))

	const timeout = 500 * time.Millisecond
	headroom := 0
	type end struct {
		lived time.Duration
		err   error
	}
	ends := make(chan end, 10)
	payload := make([]byte, 1<<20)
	d := NewDialer([]string{addr}, "zone-1", 3, func(ctx context.Context, s *mux.Session) error {
		for range 3 {
			r := &discovery.DeltaDiscoveryRequest{ResponseNonce: "x"}
			r.InitialResourceVersions = map[string]string{"big": string(payload)}
			if err := s.Client().Send(r); err != nil {
				return err
			}
		}
		<-ctx.Done()
		return nil
	}, insecureDial(),
		WithConfig(Config{SendTimeout: timeout, Headroom: &headroom}),
		WithBackoff(Backoff{Base: 10 * time.Millisecond, Cap: 20 * time.Millisecond}),
		WithSessionHooks(nil, func(ev SessionEvent) { ends <- end{lived: ev.Ended.Sub(ev.Started), err: ev.Err} }),
	)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(ctx) }()

	var first end
	select {
	case first = <-ends:
	case <-time.After(30 * time.Second):
		t.Fatal("the session did not end")
	}
	require.ErrorIs(t, first.err, mux.ErrSendTimeout)
	assert.Contains(t, first.err.Error(), "500ms")
	assert.GreaterOrEqual(t, first.lived, timeout)
	assert.Less(t, first.lived, timeout+5*time.Second)

	eventually(t, func() bool { return peer.sessions.Load() >= 2 && d.State().Sessions >= 2 }, "the zone did not reconnect")
	assert.ErrorIs(t, d.State().LastError, mux.ErrSendTimeout)
	cancel()
	require.NoError(t, <-runDone)
}

// A zone that ignores flow control and floods requests ends its session on
// global with the overflow error; global's receive loop never blocks on the
// handler, which here never reads.
func TestFloodingPeerEndsSessionWithInboundFull(t *testing.T) {
	ended := make(chan error, 1)
	g := NewGlobal(2, func(ctx context.Context, _ string, _ *mux.Session) error {
		<-ctx.Done()
		return nil
	}, WithSessionHooks(nil, func(ev SessionEvent) { ended <- ev.Err }))
	addr := serve(t, g, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := rawStream(t, ctx, addr, "zone-1")
	for i := range 2 + mux.DefaultHeadroom + 1 {
		if err := s.Send(&kdsv1.Message{Kind: &kdsv1.Message_Request{Request: &discovery.DeltaDiscoveryRequest{TypeUrl: "t"}}}); err != nil {
			t.Logf("send %d: %v", i, err)
			break
		}
	}
	select {
	case err := <-ended:
		require.ErrorIs(t, err, mux.ErrInboundFull)
		assert.Contains(t, err.Error(), "server stream")
	case <-time.After(20 * time.Second):
		t.Fatal("global's session did not end on a flood")
	}
	_, err := s.Recv()
	assert.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	assert.Contains(t, err.Error(), "inbound queue full")
}

// The max message size applies on the gRPC edge: a message over it is
// refused with an error naming both sizes, and the session ends.
func TestOversizedMessageIsRefused(t *testing.T) {
	ended := make(chan error, 1)
	g := NewGlobal(1, func(ctx context.Context, _ string, _ *mux.Session) error {
		<-ctx.Done()
		return nil
	}, WithConfig(Config{MaxMessageSize: 64 << 10}), WithSessionHooks(nil, func(ev SessionEvent) { ended <- ev.Err }))
	addr := serve(t, g, Config{MaxMessageSize: 64 << 10})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := rawStream(t, ctx, addr, "zone-1")
	big := &discovery.DeltaDiscoveryRequest{ResponseNonce: strings.Repeat("x", 100<<10)}
	require.NoError(t, s.Send(&kdsv1.Message{Kind: &kdsv1.Message_Request{Request: big}}))
	select {
	case err := <-ended:
		require.Error(t, err)
		assert.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
		assert.Contains(t, err.Error(), "larger than max")
		assert.Contains(t, err.Error(), "65536")
	case <-time.After(20 * time.Second):
		t.Fatal("the oversized message did not end the session")
	}

	// The zone's own session refuses to send it, naming size and limit.
	sess := mux.NewSession(&idleStream{ctx: ctx}, 1, Config{MaxMessageSize: 64 << 10}.muxOptions()...)
	err := sess.Client().Send(big)
	require.ErrorIs(t, err, mux.ErrMessageTooLarge)
	assert.Contains(t, err.Error(), "limit is 65536")
}

type idleStream struct{ ctx context.Context }

func (s *idleStream) Context() context.Context  { return s.ctx }
func (s *idleStream) Send(*kdsv1.Message) error { return nil }
func (s *idleStream) Recv() (*kdsv1.Message, error) {
	<-s.ctx.Done()
	return nil, s.ctx.Err()
}

// countingConn counts bytes read from the network.
type countingConn struct {
	net.Conn
	read *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// The server's keepalive setting is applied: on an idle session, global
// pings the zone at the configured interval (the default, 30s, would send
// nothing during the test).
func TestServerKeepaliveApplied(t *testing.T) {
	g := NewGlobal(1, func(ctx context.Context, _ string, _ *mux.Session) error {
		<-ctx.Done()
		return nil
	})
	addr := serve(t, g, Config{KeepaliveTime: time.Second, KeepaliveTimeout: 5 * time.Second})
	var read atomic.Int64
	dialer := func(ctx context.Context, a string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", a)
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: c, read: &read}, nil
	}
	started := make(chan struct{})
	var once sync.Once
	d := NewDialer([]string{addr}, "zone-1", 1, func(ctx context.Context, _ *mux.Session) error {
		once.Do(func() { close(started) })
		<-ctx.Done()
		return nil
	}, insecureDial(), WithDialOptions(grpc.WithContextDialer(dialer)))
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(ctx) }()
	<-started
	time.Sleep(300 * time.Millisecond) // let the handshake settle
	before := read.Load()
	time.Sleep(2500 * time.Millisecond)
	after := read.Load()
	cancel()
	require.NoError(t, <-runDone)
	// A PING frame is 17 bytes; at least one must have arrived.
	assert.GreaterOrEqual(t, after-before, int64(17), "no keepalive ping reached the idle zone")
}

func TestBackoffGrowsWithJitterUpToCap(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Cap: 1600 * time.Millisecond}
	for n := range 8 {
		want := min(100*time.Millisecond<<n, 1600*time.Millisecond)
		seen := map[time.Duration]bool{}
		for range 200 {
			d := b.Delay(n)
			require.GreaterOrEqual(t, d, want/2, "attempt %d", n)
			require.LessOrEqual(t, d, want, "attempt %d", n)
			seen[d] = true
		}
		assert.Greater(t, len(seen), 50, "attempt %d: no jitter", n)
	}
	// Huge attempt counts stay at the cap and do not overflow.
	assert.LessOrEqual(t, b.Delay(1000), 1600*time.Millisecond)
	assert.Equal(t, DefaultBackoff, Backoff{}.withDefaults())
}

// After a session that lived at least ResetAfter, the backoff starts over.
func TestDialerBackoffResetsAfterStableSession(t *testing.T) {
	var mu sync.Mutex
	var lives []time.Duration
	var starts []time.Time
	g := NewGlobal(1, func(ctx context.Context, _ string, _ *mux.Session) error {
		<-ctx.Done()
		return nil
	})
	addr := serve(t, g, Config{})
	// The zone ends its sessions at once, except the third, which it keeps
	// for longer than ResetAfter.
	var n atomic.Int32
	d := NewDialer([]string{addr}, "zone-1", 1, func(ctx context.Context, _ *mux.Session) error {
		if n.Add(1) == 3 {
			select {
			case <-time.After(1200 * time.Millisecond):
			case <-ctx.Done():
			}
		}
		return errors.New("session done")
	}, insecureDial(),
		WithBackoff(Backoff{Base: 400 * time.Millisecond, Cap: 10 * time.Second, ResetAfter: time.Second}),
		WithSessionHooks(func(ev SessionEvent) {
			mu.Lock()
			starts = append(starts, ev.Started)
			mu.Unlock()
		}, func(ev SessionEvent) {
			mu.Lock()
			lives = append(lives, ev.Ended.Sub(ev.Started))
			mu.Unlock()
		}))
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(ctx) }()
	eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(starts) >= 5 }, "five sessions")
	cancel()
	require.NoError(t, <-runDone)
	mu.Lock()
	defer mu.Unlock()
	gap := func(i int) time.Duration { return starts[i+1].Sub(starts[i]) - lives[i] }
	// Delays: attempt 0 in [200,400]ms, attempt 1 in [400,800]ms, attempt 2
	// in [800,1600]ms. The third session lived long, so the delay after it
	// is attempt 0 again (under attempt 2's minimum even on a busy
	// machine), then attempt 1.
	assert.GreaterOrEqual(t, gap(1), 400*time.Millisecond, "second retry grows")
	assert.Less(t, gap(2), 800*time.Millisecond, "reset after a stable session")
	assert.GreaterOrEqual(t, gap(3), 400*time.Millisecond)
}

// Global.Wait joins the session goroutines even when the sync handler is
// slow to return after its session ended.
func TestGlobalWaitJoinsSlowHandlers(t *testing.T) {
	before := goleak.IgnoreCurrent()
	started := make(chan struct{})
	var returned atomic.Bool
	g := NewGlobal(1, func(ctx context.Context, _ string, _ *mux.Session) error {
		close(started)
		<-ctx.Done()
		time.Sleep(time.Second)
		returned.Store(true)
		return nil
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := NewServer(Config{})
	kdsv1.RegisterKDSServer(srv, g)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	_, err = kdsv1.NewKDSClient(conn).Session(metadata.AppendToOutgoingContext(ctx, ZoneMetadataKey, "zone-1"))
	require.NoError(t, err)
	<-started
	cancel()
	require.NoError(t, conn.Close())
	srv.Stop()
	<-served
	g.Wait()
	assert.True(t, returned.Load(), "Wait returned before the handler did")
	goleak.VerifyNone(t, before)
}

// With global unreachable, the zone keeps retrying and reports why.
func TestDialerReportsUnreachableGlobal(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close()) // nothing listens there now
	d := NewDialer([]string{addr}, "zone-1", 1, func(ctx context.Context, _ *mux.Session) error {
		<-ctx.Done()
		return nil
	}, insecureDial(), WithBackoff(Backoff{Base: 10 * time.Millisecond, Cap: 50 * time.Millisecond}))
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(ctx) }()
	eventually(t, func() bool { return d.State().LastError != nil }, "no error reported")
	st := d.State()
	assert.False(t, st.Connected)
	assert.Zero(t, st.Sessions)
	assert.Contains(t, st.LastError.Error(), "open stream")
	cancel()
	require.NoError(t, <-runDone)

	assert.ErrorIs(t, NewDialer([]string{addr}, "Not A Zone", 1, nil).Run(context.Background()), ErrInvalidZoneName)
}

// bigSender is a global that ignores the zone's announcement: it sends a
// header and then one response of 100 KiB.
type bigSender struct{ kdsv1.UnimplementedKDSServer }

func (bigSender) Session(stream kdsv1.KDS_SessionServer) error {
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	big := &discovery.DeltaDiscoveryResponse{Nonce: strings.Repeat("x", 100<<10)}
	if err := stream.Send(&kdsv1.Message{Kind: &kdsv1.Message_Response{Response: big}}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

// The zone's max message size applies to what it receives, also from a
// peer that ignores the announced size.
func TestDialerMaxMessageSizeApplied(t *testing.T) {
	addr := serve(t, bigSender{}, Config{})
	ended := make(chan error, 1)
	d := NewDialer([]string{addr}, "zone-1", 1, func(ctx context.Context, _ *mux.Session) error {
		<-ctx.Done()
		return nil
	}, insecureDial(), WithConfig(Config{MaxMessageSize: 64 << 10}),
		WithSessionHooks(nil, func(ev SessionEvent) {
			select {
			case ended <- ev.Err:
			default:
			}
		}))
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(ctx) }()
	select {
	case err := <-ended:
		assert.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
		assert.Contains(t, err.Error(), "larger than max")
		assert.Contains(t, err.Error(), "65536")
	case <-time.After(20 * time.Second):
		t.Fatal("the oversized response did not end the zone's session")
	}
	cancel()
	require.NoError(t, <-runDone)
}

// Global sends a zone nothing larger than the size the zone announced:
// its Send refuses a larger response with mux.ErrMessageTooLarge, so the
// zone's gRPC never has to.
func TestGlobalSendsAtMostTheZonesSize(t *testing.T) {
	sendErr := make(chan error, 1)
	g := NewGlobal(1, func(ctx context.Context, _ string, s *mux.Session) error {
		big := &discovery.DeltaDiscoveryResponse{Nonce: strings.Repeat("x", 100<<10)}
		sendErr <- s.Server().Send(big)
		<-ctx.Done()
		return nil
	})
	addr := serve(t, g, Config{})
	var ended atomic.Int32
	d := NewDialer([]string{addr}, "zone-1", 1, func(ctx context.Context, _ *mux.Session) error {
		<-ctx.Done()
		return nil
	}, insecureDial(), WithConfig(Config{MaxMessageSize: 64 << 10}),
		WithSessionHooks(nil, func(SessionEvent) { ended.Add(1) }))
	runDialer(t, d)
	select {
	case err := <-sendErr:
		require.ErrorIs(t, err, mux.ErrMessageTooLarge)
		assert.Contains(t, err.Error(), "65536")
	case <-time.After(20 * time.Second):
		t.Fatal("no session")
	}
	assert.Zero(t, ended.Load(), "the session goes on")
}

// On global, a Send blocked by a zone that stopped reading ends the session
// with the send timeout; the RPC ends with codes.DeadlineExceeded and the
// session's goroutines are joined (goleak in TestMain).
func TestGlobalSendTimeoutOnZoneThatStopsReading(t *testing.T) {
	const timeout = 300 * time.Millisecond
	headroom := 0
	ended := make(chan SessionEvent, 1)
	payload := strings.Repeat("x", 1<<20)
	g := NewGlobal(3, func(ctx context.Context, _ string, s *mux.Session) error {
		for range 3 {
			if err := s.Server().Send(&discovery.DeltaDiscoveryResponse{Nonce: payload}); err != nil {
				return err
			}
		}
		<-ctx.Done()
		return nil
	}, WithConfig(Config{SendTimeout: timeout, Headroom: &headroom}),
		WithSessionHooks(nil, func(ev SessionEvent) { ended <- ev }))
	addr := serve(t, g, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A zone with small static windows that never reads.
	s := rawStream(t, ctx, addr, "zone-1",
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	require.NoError(t, s.Send(&kdsv1.Message{Kind: &kdsv1.Message_Request{Request: &discovery.DeltaDiscoveryRequest{}}}))
	select {
	case ev := <-ended:
		require.ErrorIs(t, ev.Err, mux.ErrSendTimeout)
		assert.Contains(t, ev.Err.Error(), "300ms")
		assert.Less(t, ev.Ended.Sub(ev.Started), timeout+5*time.Second)
		assert.Equal(t, uint64(1), ev.Session.Stats().SendTimeouts)
	case <-time.After(20 * time.Second):
		t.Fatal("global's session did not end")
	}
}

// Global's session header reaches the zone's handler, per zone.
func TestSessionHeaderReachesZone(t *testing.T) {
	g := NewGlobal(1, func(ctx context.Context, _ string, _ *mux.Session) error {
		<-ctx.Done()
		return nil
	}, WithSessionHeader(func(zone string) metadata.MD {
		return metadata.Pairs("x-greeting", "hello "+zone)
	}))
	addr := serve(t, g, Config{})
	got := make(chan []string, 1)
	d := NewDialer([]string{addr}, "zone-7", 1, func(ctx context.Context, _ *mux.Session) error {
		md, err := PeerHeader(ctx)
		if err != nil {
			return err
		}
		got <- md.Get("x-greeting")
		<-ctx.Done()
		return nil
	}, insecureDial())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	select {
	case v := <-got:
		assert.Equal(t, []string{"hello zone-7"}, v)
	case <-time.After(20 * time.Second):
		t.Fatal("no header")
	}
	cancel()
	require.NoError(t, <-done)

	md, err := PeerHeader(context.Background())
	assert.NoError(t, err)
	assert.Nil(t, md, "no Dialer context, no header")
}

// A fixed receive window (Config.InitialWindowSize, the http2-window
// setting) is what the peer may send ahead of this side's reads: a zone's
// Sends of 2 MiB to a global that reads nothing all complete with a 4 MiB
// window, and cannot complete with a 64 KiB one.
func TestFixedWindowBoundsWhatThePeerSendsAhead(t *testing.T) {
	sendAhead := func(window int32, wait time.Duration) bool {
		addr := serve(t, &stallingGlobal{}, Config{InitialWindowSize: window})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s := rawStream(t, ctx, addr, "zone-1")
		msg := &kdsv1.Message{Kind: &kdsv1.Message_Request{Request: &discovery.DeltaDiscoveryRequest{ResponseNonce: strings.Repeat("x", 256<<10)}}}
		done := make(chan bool, 1)
		go func() {
			for range 8 {
				if s.Send(msg) != nil {
					done <- false
					return
				}
			}
			done <- true
		}()
		select {
		case ok := <-done:
			return ok
		case <-time.After(wait):
			cancel() // the blocked Send returns with the stream's end
			<-done
			return false
		}
	}
	assert.True(t, sendAhead(4<<20, 20*time.Second), "2 MiB fit a 4 MiB window without a read")
	assert.False(t, sendAhead(64<<10, time.Second), "2 MiB cannot fit a 64 KiB window without a read")
}
