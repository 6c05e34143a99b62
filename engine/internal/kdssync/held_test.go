package kdssync

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// Held answers from the session's own view: the version the peer applied,
// the version it refused, nothing for a type it did not subscribe to, and
// no entry once the session ended.
func TestHeldReportsWhatThePeerApplied(t *testing.T) {
	ix := NewIndex([]string{"MeshTimeout", "Mesh"})
	require.NoError(t, ix.Put(res("MeshTimeout", "default", "good", "v1", 10)))
	require.NoError(t, ix.Put(res("MeshTimeout", "default", "bad-1", "v1", 10)))
	require.NoError(t, ix.Put(res("Mesh", "", "default", "m1", 10)))
	sink := newMemSink()
	ctx, cancel := context.WithCancel(context.Background())
	p := newPipe(ctx)
	ins := insights.NewRegistry()
	srv := NewServer(ix, WithServerInsights(ins))
	cli := NewClient([]string{"MeshTimeout"}, sink, rejectValidator{}, "global", "zone-1")
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = srv.Serve(ctx, serverEnd{p}, "zone-1") }()
	go func() { defer wg.Done(); _ = cli.Run(ctx, clientEnd{p}) }()
	defer func() { cancel(); wg.Wait() }()

	require.Eventually(t, func() bool {
		c, _ := ins.Get("zone-1")
		return c.Types["MeshTimeout"].ResponsesNACKed == 1 && len(sink.snapshot()) == 1
	}, 10*time.Second, 5*time.Millisecond)

	got, err := srv.Held(context.Background(), "MeshTimeout", "default/good")
	require.NoError(t, err)
	assert.Equal(t, map[string]PeerHolding{"zone-1": {Subscribed: true, Holds: true, Version: "v1"}}, got)

	got, err = srv.Held(context.Background(), "MeshTimeout", "default/bad-1")
	require.NoError(t, err)
	assert.Equal(t, PeerHolding{Subscribed: true, Rejected: true, RejectedVersion: "v1"}, got["zone-1"])

	got, err = srv.Held(context.Background(), "Mesh", "default")
	require.NoError(t, err)
	assert.Equal(t, PeerHolding{}, got["zone-1"], "the client did not subscribe to Mesh")

	// After a change is ACKed the new version is what the peer holds.
	require.NoError(t, ix.Put(res("MeshTimeout", "default", "good", "v2", 10)))
	require.Eventually(t, func() bool {
		got, err := srv.Held(context.Background(), "MeshTimeout", "default/good")
		return err == nil && got["zone-1"].Version == "v2" && !got["zone-1"].Pending
	}, 10*time.Second, 5*time.Millisecond)

	cancel()
	wg.Wait()
	got, err = srv.Held(context.Background(), "MeshTimeout", "default/good")
	require.NoError(t, err)
	assert.Empty(t, got, "an ended session is not asked")
}

// Held gives up when its context ends instead of waiting for a session.
func TestHeldStopsWithItsContext(t *testing.T) {
	srv := NewServer(NewIndex([]string{"Mesh"}))
	ss := &serverSession{Server: srv, peer: "zone-1", queries: make(chan heldQuery), done: make(chan struct{})}
	srv.sessions.add(ss) // a session whose loop never answers
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	got, err := srv.Held(ctx, "Mesh", "default")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Empty(t, got)
}

// A zone's session replaced while its first one is in the middle of a
// fresh sync (decision 0011: the newer session of a peer replaces the
// older): the new session starts from the names and entries the index
// kept for the first (shared, read only), the changes made while both
// have names in flight reach it, Held answers from it alone while the
// older still runs, and the older ending changes nothing of it.
func TestSessionReplacedMidFreshSync(t *testing.T) {
	ix := NewIndex([]string{"T"})
	for i := range 2000 {
		require.NoError(t, ix.Put(res("T", "default", fmt.Sprintf("t-%05d", i), "1", 100)))
	}
	srv := NewServer(ix, WithServerMaxMessageSize(responseOverhead+20_000))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctxA, cancelA := context.WithCancel(ctx)
	pa := newPipe(ctxA)
	doneA := make(chan error, 1)
	go func() { doneA <- srv.Serve(ctxA, serverEnd{pa}, "zone-1") }()
	pa.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}}
	first := nextResponse(t, pa)
	require.NotEmpty(t, first.GetResources())
	pa.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResponseNonce: first.GetNonce()}
	second := nextResponse(t, pa) // in flight on the first session: a span
	inSpan := second.GetResources()[0].GetName()
	_, short := splitXDSName(inSpan)

	pb := newPipe(ctx)
	sink := newMemSink()
	cli := NewClient([]string{"T"}, sink, acceptAll{}, "global", "zone-1")
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = srv.Serve(ctx, serverEnd{pb}, "zone-1") }()
	go func() { defer wg.Done(); _ = cli.Run(ctx, clientEnd{pb}) }()
	defer func() { cancel(); wg.Wait() }()
	// Changes while the first session has names in flight and the second
	// syncs: a version (the kept entries go, the names stay), a delete and
	// a new name (the names go too).
	require.NoError(t, ix.Put(res("T", "default", short, "2", 100)))
	ix.Delete(resource.Key{Type: "T", Mesh: "default", Name: "t-00003"})
	require.NoError(t, ix.Put(res("T", "default", "new", "1", 100)))

	want := func() map[string]string {
		ix.mu.RLock()
		defer ix.mu.RUnlock()
		out := map[string]string{}
		for n, e := range ix.types["T"].entries {
			out[n] = e.res.Version
		}
		return out
	}()
	got := func() map[string]string {
		out := map[string]string{}
		for _, r := range sink.snapshot() {
			out[WireName(r.Mesh, r.Name)] = r.Version
		}
		return out
	}
	require.Eventually(t, func() bool { return maps.Equal(want, got()) }, 10*time.Second, 5*time.Millisecond, "the second session's peer converges")
	check := func(name string, want PeerHolding) {
		t.Helper()
		h, err := srv.Held(context.Background(), "T", name)
		require.NoError(t, err)
		assert.Equal(t, map[string]PeerHolding{"zone-1": want}, h, name)
	}
	check(inSpan, PeerHolding{Subscribed: true, Holds: true, Version: "2"})
	check("default/t-00003", PeerHolding{Subscribed: true})
	check("default/new", PeerHolding{Subscribed: true, Holds: true, Version: "1"})
	check("default/t-01999", PeerHolding{Subscribed: true, Holds: true, Version: "1"})

	cancelA()
	require.ErrorIs(t, <-doneA, context.Canceled)
	check(inSpan, PeerHolding{Subscribed: true, Holds: true, Version: "2"})
	require.NoError(t, ix.Put(res("T", "default", "t-01999", "2", 100)))
	require.Eventually(t, func() bool { return got()["default/t-01999"] == "2" }, 10*time.Second, 5*time.Millisecond)
}
