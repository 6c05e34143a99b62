package kdsbench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	delta "github.com/envoyproxy/go-control-plane/pkg/server/delta/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The baseline: go-control-plane's delta xDS server over a LinearCache on a
// plain gRPC stream, to a minimal delta client (no mux, no store, no
// validation). Resources are BytesValues holding the same JSON specs the
// engine carries.
const xdsType = "type.googleapis.com/google.protobuf.BytesValue"

type xdsServer struct {
	cache  *cache.LinearCache
	gs     *grpc.Server
	lis    net.Listener
	proxy  *proxy
	cancel context.CancelFunc
	done   chan struct{}
}

func xdsResources(prefix string, n, size int) map[string]types.Resource {
	m := make(map[string]types.Resource, n)
	for i := range n {
		m[fmt.Sprintf("%s-%d", prefix, i)] = wrapperspb.Bytes(specOf("v0", size))
	}
	return m
}

// startXDS starts the baseline server behind a proxy imitating link.
func startXDS(initial map[string]types.Resource, link Link) (*xdsServer, error) {
	c := cache.NewLinearCache(xdsType, cache.WithInitialResources(initial))
	ctx, cancel := context.WithCancel(context.Background())
	srv := &adsDelta{srv: delta.NewServer(ctx, c, nil)}
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(1<<30), grpc.MaxSendMsgSize(1<<30))
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		return nil, err
	}
	p, err := newLinkProxy(lis.Addr().String(), true, link)
	if err != nil {
		cancel()
		lis.Close()
		return nil, err
	}
	x := &xdsServer{cache: c, gs: gs, lis: lis, proxy: p, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(x.done); _ = gs.Serve(lis) }()
	return x, nil
}

// adsDelta serves only the delta ADS stream, with go-control-plane's delta
// server.
type adsDelta struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	srv delta.Server
}

func (a *adsDelta) DeltaAggregatedResources(s discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return a.srv.DeltaStreamHandler(s, "")
}

func (x *xdsServer) close() {
	x.gs.Stop()
	<-x.done
	x.cancel()
	x.proxy.Close()
}

// xdsClient is the minimal delta client: it subscribes to everything,
// records what it receives and ACKs every response.
type xdsClient struct {
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	done   chan struct{}
	err    error

	mu        sync.Mutex
	versions  map[string]string
	responses int
	maxMsg    int
	changed   chan struct{}
	seen      func(name string, value []byte, at time.Time)
}

// dialXDS opens a delta stream to the baseline server at addr. expect is
// how many resources the caller expects (0 if it does not know): the
// client's record is sized for them, as follow sizes the engine side's.
func dialXDS(addr string, expect int, seen func(string, []byte, time.Time)) (*xdsClient, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30)))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		cancel()
		conn.Close()
		return nil, fmt.Errorf("open delta stream: %w", err)
	}
	c := &xdsClient{conn: conn, cancel: cancel, done: make(chan struct{}), versions: make(map[string]string, expect), changed: make(chan struct{}, 1), seen: seen}
	node := &core.Node{Id: "bench"}
	if err := st.Send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: xdsType, ResourceNamesSubscribe: []string{"*"}}); err != nil {
		cancel()
		conn.Close()
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	go func() {
		defer close(c.done)
		for {
			resp, err := st.Recv()
			if err != nil {
				if ctx.Err() == nil {
					c.err = err
				}
				return
			}
			now := time.Now()
			size := proto.Size(resp)
			c.mu.Lock()
			c.responses++
			c.maxMsg = max(c.maxMsg, size)
			for _, r := range resp.Resources {
				c.versions[r.Name] = r.Version
			}
			for _, n := range resp.RemovedResources {
				delete(c.versions, n)
			}
			c.mu.Unlock()
			if c.seen != nil {
				for _, r := range resp.Resources {
					c.seen(r.Name, r.GetResource().GetValue(), now)
				}
			}
			select {
			case c.changed <- struct{}{}:
			default:
			}
			if err := st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: xdsType, ResponseNonce: resp.Nonce}); err != nil {
				return
			}
		}
	}()
	return c, nil
}

func (c *xdsClient) close() {
	c.cancel()
	<-c.done
	c.conn.Close()
}

func (c *xdsClient) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.versions)
}

func (c *xdsClient) waitCount(ctx context.Context, n int, stall time.Duration) error {
	t := time.NewTimer(stall)
	defer t.Stop()
	for c.count() < n {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-c.done:
			return errors.Join(errors.New("delta stream ended"), c.err)
		case <-t.C:
			return errStalled
		case <-c.changed:
			t.Reset(stall)
		}
	}
	return nil
}
