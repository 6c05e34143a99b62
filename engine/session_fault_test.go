package engine

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/guard"
	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
	"github.com/kds-engine/kds-engine/engine/internal/mux"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/memory"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// A second session of one zone replaces the first: the first ends with a
// reason naming where the newer one comes from, what the newer one writes
// stays, and the zone stays online (insights and kds_session_connected)
// while the newer one syncs.
func TestFaultNewerSessionReplacesOlder(t *testing.T) {
	env := startHostileEnv(t, Config{})
	dpURL := kdssync.TypeURL("Dataplane")
	const zone = "zone-twin"
	tok := tokenFor(t, env.g, zone)
	older := rawSession(t, dialGlobal(t, env.g), zone, tok)
	sendResponse(t, older, dpURL, "1", wireResource(t, dataplane("dp-1", "10.0.9.1"), "old-1"))
	require.Nil(t, awaitReply(t, older, "1").GetErrorDetail())

	newer := rawSession(t, dialGlobal(t, env.g), zone, tok)
	st := recvUntilErr(t, older)
	assert.Contains(t, st.Message(), "replaced by a newer session from 127.0.0.1:")
	sendResponse(t, newer, dpURL, "1", wireResource(t, dataplane("dp-1", "10.0.9.2"), "new-2"))
	require.Nil(t, awaitReply(t, newer, "1").GetErrorDetail())

	got := find(env.g, resource.Key{Type: "Dataplane", Mesh: "default", Zone: zone, Name: "dp-1"})
	require.NotNil(t, got)
	assert.Equal(t, "new-2", got.Version)
	eventually(t, func() bool {
		return seriesValueOf(t, env.g, "kds_sessions_ended_total", map[string]string{"zone": zone, "reason": "replaced"}) == 1
	}, "the older session is counted as replaced")
	c, _ := env.g.e.Insights().Get(zone)
	assert.True(t, c.Online, "online while the newer session lives: %s", c.LastError)
	assert.Equal(t, uint64(2), c.Sessions)
	assert.Equal(t, float64(1), seriesValueOf(t, env.g, "kds_session_connected", map[string]string{"zone": zone}))
	env.assertHonestZoneSyncs(t)
}

// dpTypes registers Dataplane as written in zones.
type dpTypes struct{}

func (dpTypes) Type(name string) (resource.TypeDescriptor, bool) {
	if name != "Dataplane" {
		return resource.TypeDescriptor{}, false
	}
	return resource.TypeDescriptor{Name: name, Direction: resource.ZoneToGlobal, Scope: resource.ScopeMesh}, true
}

func idleSession(t *testing.T) *mux.Session {
	t.Helper()
	st := &idleStream{ctx: context.Background(), done: make(chan struct{})}
	sess := mux.NewSession(st, 1, mux.WithAbort(func() { close(st.done) }))
	done := make(chan struct{})
	go func() { defer close(done); _ = sess.Run(context.Background()) }()
	t.Cleanup(func() { sess.Close(errors.New("test over")); <-done })
	return sess
}

// A replaced session's writes are fenced inside the store commit: once the
// newer session has claimed the zone, nothing the older one applies
// commits, even a write that was already on its way; and a session replaced
// before it claimed never claims after its successor.
func TestFaultReplacedSessionWritesAreFenced(t *testing.T) {
	ctx := t.Context()
	mem := memory.New()
	defer mem.Close()
	gs := guard.New(mem, guard.Global, dpTypes{})
	live := newLiveSessions(mem, hclog.NewNullLogger())
	dp := func(version, addr string) []*resource.Resource {
		r := dataplane("dp-1", addr)
		r.Zone, r.Version = "z", version
		return []*resource.Resource{r}
	}
	a, b, c := idleSession(t), idleSession(t), idleSession(t)

	live.start(ctx, "z", a)
	fa, _, err := live.claim(ctx, "z", a)
	require.NoError(t, err)
	sinkA := &sink{s: gs, zone: "z", fence: fa}
	require.NoError(t, sinkA.Apply(ctx, dp("a-1", "10.0.0.1"), nil))

	live.start(ctx, "z", b)
	assert.ErrorIs(t, a.Err(), ErrSessionReplaced, "the older session is ended")
	fb, _, err := live.claim(ctx, "z", b)
	require.NoError(t, err)
	sinkB := &sink{s: gs, zone: "z", fence: fb}

	err = sinkA.Apply(ctx, dp("a-2", "10.0.0.2"), nil)
	require.ErrorIs(t, err, store.ErrFenced, "a write of the replaced session after the claim")
	require.NoError(t, sinkB.Apply(ctx, dp("b-1", "10.0.0.3"), nil))
	got, err := mem.Get(ctx, resource.Key{Type: "Dataplane", Mesh: "default", Zone: "z", Name: "dp-1"})
	require.NoError(t, err)
	assert.Equal(t, "b-1", got.Version)

	// A claim by a session that was replaced is refused, so a late claim
	// cannot fence its successor off.
	live.start(ctx, "z", c)
	fc, _, err := live.claim(ctx, "z", c)
	require.NoError(t, err)
	_, _, err = live.claim(ctx, "z", b)
	require.ErrorIs(t, err, ErrSessionReplaced)
	require.NoError(t, (&sink{s: gs, zone: "z", fence: fc}).Apply(ctx, dp("c-1", "10.0.0.4"), nil))

	assert.False(t, live.end("z", a), "a replaced session does not take the zone offline")
	assert.False(t, live.end("z", b))
	assert.True(t, live.end("z", c))
}

// The per-zone per-type limit holds inside the commit whatever the number
// of sessions that write: two sinks of one zone (as two sessions were
// before fencing) cannot together store more than the limit.
func TestFaultLimitHoldsAcrossSessions(t *testing.T) {
	ctx := t.Context()
	mem := memory.New()
	defer mem.Close()
	gs := guard.New(mem, guard.Global, dpTypes{})
	s1 := &sink{s: gs, zone: "z", limit: 3}
	s2 := &sink{s: gs, zone: "z", limit: 3}
	put := func(k *sink, name string) error {
		r := dataplane(name, "10.0.0.1")
		r.Zone, r.Version = "z", "1"
		return k.Apply(ctx, []*resource.Resource{r}, nil)
	}
	for i := range 2 {
		require.NoError(t, put(s1, fmt.Sprintf("one-%d", i)))
	}
	require.NoError(t, put(s2, "two-0"))
	require.ErrorIs(t, put(s2, "two-1"), store.ErrLimitExceeded)
	require.ErrorIs(t, put(s1, "one-2"), store.ErrLimitExceeded)
	kvs, err := mem.Versions(ctx, store.Filter{Type: "Dataplane", Zone: "z"})
	require.NoError(t, err)
	assert.Len(t, kvs, 3)
}

// A hostile zone's mix — many subscriptions each carrying 100000 held
// names (3.8 MB), thousands of requests for types global does not serve,
// re-subscriptions to draw more responses, and not reading what global
// sends — grows global's heap by a bounded amount, and the honest zone
// keeps syncing.
func TestFaultHostileZoneMixIsBoundedInMemory(t *testing.T) {
	env := startHostileEnv(t, Config{MaxMessageSize: 8 << 20, MaxResourceSize: 1 << 20})
	for i := range 20 {
		create(t, env.g, meshTimeout(fmt.Sprintf("mt-%d", i), "5s"))
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := heap()

	const zone = "zone-hog"
	s := rawSession(t, dialGlobal(t, env.g, tlsCreds(t), grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10)), zone, tokenFor(t, env.g, zone))
	held := make(map[string]string, 100000)
	for i := range 100000 {
		held[fmt.Sprintf("default/name-%026d", i)] = "v-0000000000001"
	}
	sub := &kdsv1.Message{Kind: &kdsv1.Message_Request{Request: &discovery.DeltaDiscoveryRequest{
		TypeUrl: kdssync.TypeURL("MeshTimeout"), ResourceNamesSubscribe: []string{"*"}, InitialResourceVersions: held,
	}}}
	sent := 0
	for ; sent < 40; sent++ {
		if s.Send(sub) != nil {
			break
		}
	}
	for i := range 3000 {
		if s.Send(&kdsv1.Message{Kind: &kdsv1.Message_Request{Request: &discovery.DeltaDiscoveryRequest{
			TypeUrl: kdssync.TypeURL(fmt.Sprintf("Unknown%d", i)),
		}}}) != nil {
			break
		}
	}
	held, sub = nil, nil
	// Give global time to take in what it accepts (the stream may also be
	// ended for breaking the protocol, which is an acceptable answer).
	eventually(t, func() bool {
		c, _ := env.g.e.Insights().Get(zone)
		return !c.Online || len(c.Types) > 1
	}, "global handled the hostile requests")
	grown := int64(heap()) - int64(before)
	hog, _ := env.g.e.Insights().Get(zone)
	t.Logf("global's heap grew by %d MiB under the hostile mix (%d big subscriptions sent; session online %v, last error %q)", grown>>20, sent, hog.Online, hog.LastError)
	assert.Less(t, grown, int64(256<<20), "what one zone can make global hold is bounded")
	c, _ := env.g.e.Insights().Get(zone)
	unknown := 0
	for _, ts := range c.Types {
		if ts.Unknown {
			unknown++
		}
	}
	assert.LessOrEqual(t, unknown, kdssync.MaxUnknownTypes)
	env.assertHonestZoneSyncs(t)
}
