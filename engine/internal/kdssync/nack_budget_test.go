package kdssync

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/kdsgrpc"
	"github.com/kds-engine/kds-engine/engine/internal/mux"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// gatedServer passes the first pass requests to the server and holds the
// rest in the session's inbound queue until open is closed. Only the
// server's receiving goroutine calls RecvContext.
type gatedServer struct {
	ServerStream
	pass int
	open <-chan struct{}
}

func (g *gatedServer) RecvContext(ctx context.Context) (*discovery.DeltaDiscoveryRequest, error) {
	if g.pass == 0 {
		select {
		case <-g.open:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	} else {
		g.pass--
	}
	return g.ServerStream.RecvContext(ctx)
}

// Twenty types NACK at once, over real gRPC on loopback, while the serving
// side is slow to read: each response is small (sixty small resources) and
// every resource in it is refused with the longest reasons an entry
// carries, enough for a NACK of the max message size. Twenty such NACKs come
// to more than the 16 max-size messages the server's inbound queue holds,
// which ended the session (ErrInboundFull) while the reasons were cut only
// to fit the max message size. Kept within the size of its response plus a
// little, every NACK waits in the queue, and once the server reads them it
// knows every refused name and version of every type. Both directions: a
// zone refusing global's resources, and global refusing a zone's.
func TestManyTypesNACKWithinThePeersInboundBudget(t *testing.T) {
	t.Run("zone refuses", func(t *testing.T) { testManyTypesNACK(t, false) })
	t.Run("global refuses", func(t *testing.T) { testManyTypesNACK(t, true) })
}

// testManyTypesNACK runs the test above with global serving and the zone
// refusing, or the other way round (globalRefuses).
func testManyTypesNACK(t *testing.T, globalRefuses bool) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const ntypes, n, maxMsg = 20, 60, 256 << 10
	types := make([]string, ntypes)
	for i := range types {
		types[i] = fmt.Sprintf("T%02d", i)
	}
	ix := NewIndex(types)
	for _, typ := range types {
		for i := range n {
			require.NoError(t, ix.Put(res(typ, "default", fmt.Sprintf("r-%03d", i), "1", 10)))
		}
	}
	srvIns := insights.NewRegistry()
	srv := NewServer(ix, WithServerMaxMessageSize(maxMsg), WithServerInsights(srvIns))
	cfg := kdsgrpc.Config{MaxMessageSize: maxMsg, Window: DefaultWindow}

	open := make(chan struct{})
	sessions := make(chan *mux.Session, 1)
	// serve reads the subscriptions, answers them, and then reads nothing
	// until the test opens the gate.
	serve := func(ctx context.Context, s *mux.Session) error {
		select {
		case sessions <- s:
		default:
		}
		return srv.Serve(ctx, &gatedServer{ServerStream: s.Server(), pass: ntypes, open: open}, "peer",
			WithSessionMaxMessageSize(s.Params().MaxMessageSize))
	}
	refuse := func(ctx context.Context, s *mux.Session) error {
		cli := NewClient(types, newMemSink(), verboseRejecter{}, "peer", "",
			WithClientMaxMessageSize(s.Params().MaxMessageSize), WithPeerInboundBudget(s.Params().PeerInboundBudget))
		return cli.Run(ctx, s.Client())
	}
	onGlobal, onZone := serve, refuse
	if globalRefuses {
		onGlobal, onZone = refuse, serve
	}
	var endMu sync.Mutex
	var ended []error
	glob := kdsgrpc.NewGlobal(ntypes, func(ctx context.Context, _ string, s *mux.Session) error { return onGlobal(ctx, s) },
		kdsgrpc.WithConfig(cfg), kdsgrpc.WithSessionHooks(nil, func(ev kdsgrpc.SessionEvent) {
			endMu.Lock()
			defer endMu.Unlock()
			ended = append(ended, ev.Err)
		}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	gs := kdsgrpc.NewServer(cfg)
	kdsv1.RegisterKDSServer(gs, glob)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = gs.Serve(lis) })
	dialer := kdsgrpc.NewDialer([]string{lis.Addr().String()}, "zone-1", ntypes, onZone,
		kdsgrpc.WithConfig(cfg), kdsgrpc.WithDialOptions(grpc.WithTransportCredentials(insecure.NewCredentials())))
	wg.Go(func() { _ = dialer.Run(ctx) })
	defer func() {
		cancel()
		gs.Stop()
		wg.Wait()
		glob.Wait()
	}()

	var sess *mux.Session
	select {
	case sess = <-sessions:
	case <-time.After(20 * time.Second):
		t.Fatal("no session")
	}
	budget := sess.Params().InboundBudget
	require.Equal(t, mux.DefaultInboundBudgetMessages*maxMsg, budget)
	require.Eventually(t, func() bool {
		return sess.Err() != nil || sess.Stats().Server.InboundLen == ntypes
	}, 20*time.Second, 5*time.Millisecond, "every type's NACK reaches the server's inbound queue")
	require.NoError(t, sess.Err(), "the serving side's session goes on")
	st := sess.Stats().Server
	t.Logf("the server's inbound queue: %d NACKs in %d bytes (budget %d)", st.InboundLen, st.InboundBytes, budget)
	assert.Less(t, st.InboundBytes, int64(budget/4), "the NACKs take about what their responses took")

	close(open)
	srvType := func(typ string) insights.TypeState { c, _ := srvIns.Get("peer"); return c.Types[typ] }
	require.Eventually(t, func() bool {
		for _, typ := range types {
			if srvType(typ).RejectedCount != n {
				return false
			}
		}
		return true
	}, 20*time.Second, 5*time.Millisecond, "the server reads every NACK")
	require.NoError(t, sess.Err(), "the serving side's session goes on")
	for _, typ := range types {
		ts := srvType(typ)
		assert.Zero(t, ts.ResourcesHeld, typ)
		got := map[string]string{}
		for _, r := range ts.Rejected {
			got[r.Name] = r.Version
		}
		require.Len(t, got, n, "%s: every refused name reaches the server", typ)
		for i := range n {
			assert.Equal(t, "1", got[fmt.Sprintf("default/r-%03d", i)], "%s: every refused version", typ)
		}
	}
	endMu.Lock()
	assert.Empty(t, ended, "no session ended")
	endMu.Unlock()
}
