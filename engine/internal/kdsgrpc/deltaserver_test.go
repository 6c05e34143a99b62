package kdsgrpc

import (
	"context"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	delta "github.com/envoyproxy/go-control-plane/pkg/server/delta/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/mux"
)

// go-control-plane's delta server runs unchanged on a session's serving
// stream, and the zone's subscribing stream receives what it serves.
func TestDeltaServerRunsOnServerStream(t *testing.T) {
	lc := cache.NewLinearCache(resource.ClusterType, cache.WithInitialResources(map[string]types.Resource{
		"c1": &cluster.Cluster{Name: "c1"},
	}))
	srvCtx, stopSrv := context.WithCancel(context.Background())
	defer stopSrv()
	xds := delta.NewServer(srvCtx, lc, nil)
	g := NewGlobal(1, func(_ context.Context, _ string, s *mux.Session) error {
		return xds.DeltaStreamHandler(s.Server(), resource.ClusterType)
	})
	addr := serve(t, g, Config{})

	got := make(chan *discovery.DeltaDiscoveryResponse, 1)
	d := NewDialer([]string{addr}, "zone-1", 1, func(ctx context.Context, s *mux.Session) error {
		err := s.Client().Send(&discovery.DeltaDiscoveryRequest{
			Node:                   &core.Node{Id: "zone-1"},
			TypeUrl:                resource.ClusterType,
			ResourceNamesSubscribe: []string{"*"},
		})
		if err != nil {
			return err
		}
		r, err := s.Client().Recv()
		if err != nil {
			return err
		}
		got <- r
		<-ctx.Done()
		return nil
	}, insecureDial())
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- d.Run(ctx) }()
	select {
	case r := <-got:
		assert.Equal(t, resource.ClusterType, r.GetTypeUrl())
		require.Len(t, r.GetResources(), 1)
		assert.Equal(t, "c1", r.GetResources()[0].GetName())
	case <-time.After(20 * time.Second):
		t.Fatal("no response from the delta server")
	}
	cancel()
	require.NoError(t, <-runDone)
}
