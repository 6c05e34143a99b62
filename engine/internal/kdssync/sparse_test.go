package kdssync

import (
	"context"
	"fmt"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// directSession is a serving session for peer zone-1 driven by the test
// itself instead of Serve's loop: the test is the loop, so it may look at
// the session's state between steps.
func directSession(t *testing.T, ix *Index, maxMsg int) (*serverSession, *pipe, *insights.Registry) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ins := insights.NewRegistry()
	p := newPipe(ctx)
	srv := NewServer(ix, WithServerInsights(ins), WithServerMaxMessageSize(maxMsg))
	ss := &serverSession{
		Server: srv, maxMsg: srv.maxMsg, stream: serverEnd{p}, peer: "zone-1", log: srv.log,
		types: map[string]*serveState{}, unknown: map[string]struct{}{},
		notify: make(chan struct{}, 1), wake: make(chan struct{}, 1),
		resuming:      map[string]*resumeState{},
		sessionBudget: 1 << 40,
	}
	t.Cleanup(func() { ss.close(); cancel() })
	return ss, p, ins
}

// ackAll answers every response the session sent so far with an ACK, in
// order, and returns how many resources they carried.
func ackAll(t *testing.T, ss *serverSession, p *pipe) int {
	t.Helper()
	n := 0
	for {
		select {
		case r := <-p.resps:
			n += len(r.GetResources())
			require.NoError(t, ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}))
		default:
			return n
		}
	}
}

// ask answers a Held query the way the session's loop does.
func ask(ss *serverSession, name string) PeerHolding {
	q := heldQuery{typ: "T", name: name, reply: make(chan PeerHolding, 1)}
	ss.answer(q)
	return <-q.reply
}

func sparseIndex(t *testing.T, n int) (*Index, map[string]string) {
	t.Helper()
	ix := NewIndex([]string{"T"})
	versions := make(map[string]string, n)
	for i := range n {
		name := fmt.Sprintf("t-%06d", i)
		require.NoError(t, ix.Put(res("T", "default", name, "1", 8)))
		versions[WireName("default", name)] = "1"
	}
	return ix, versions
}

// A peer that holds what is served costs the server no entry per name:
// after a resume at the index's versions, and after an initial sync once
// every response is ACKed (the maps the sync filled are given back), the
// session records only names whose state differs from the index's.
func TestInSyncPeerCostsNoEntryPerName(t *testing.T) {
	const n = 5000
	ix, versions := sparseIndex(t, n)

	t.Run("resume", func(t *testing.T) {
		ss, p, ins := directSession(t, ix, 64<<10)
		held := make(map[string]string, n)
		for k, v := range versions {
			held[k] = v
		}
		held["default/gone"] = "1"       // deleted while away
		held["default/t-000007"] = "0"   // changed while away
		delete(held, "default/t-000008") // created while away
		require.NoError(t, ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}, InitialResourceVersions: held}))
		st := ss.types["T"]
		assert.Len(t, st.overrides, 3, "only the three names that differ")
		assert.Equal(t, 2, ackAll(t, ss, p), "the changed and the created name are sent")
		assert.Empty(t, st.overrides, "in sync: nothing recorded per name")
		c, _ := ins.Get("zone-1")
		assert.Equal(t, n, c.Types["T"].ResourcesHeld)
		assert.Equal(t, PeerHolding{Subscribed: true, Holds: true, Version: "1"}, ask(ss, "default/t-000042"))
	})

	t.Run("initial sync", func(t *testing.T) {
		ss, p, ins := directSession(t, ix, 64<<10)
		require.NoError(t, ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}}))
		st := ss.types["T"]
		assert.Len(t, st.overrides, n, "nothing held yet: every name differs")
		sent := 0
		for sent < n {
			got := ackAll(t, ss, p)
			require.NotZero(t, got, "the sync progresses")
			sent += got
		}
		assert.Equal(t, n, sent)
		assert.Empty(t, st.overrides, "in sync: nothing recorded per name")
		assert.Zero(t, st.overridesPeak, "the map the sync filled was given back")
		assert.Zero(t, st.pendingPeak, "so was pending")
		c, _ := ins.Get("zone-1")
		assert.Equal(t, n, c.Types["T"].ResourcesHeld)
	})
}

// The peer's holding of a name the session records nothing for is the
// index's state as of the session's last take, not the index's live state:
// right after a change, the peer still holds the old version (or the
// deleted name) until it ACKs the response that carries the change, and
// that response is sent. A rule "no entry means the index's current
// version" would report the new version as held and never send it.
func TestIndexChangeBeforeTheSessionLooks(t *testing.T) {
	ix, versions := sparseIndex(t, 10)
	ss, p, ins := directSession(t, ix, 64<<10)
	require.NoError(t, ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}, InitialResourceVersions: versions}))
	assert.Zero(t, ackAll(t, ss, p))
	st := ss.types["T"]
	require.Empty(t, st.overrides)

	require.NoError(t, ix.Put(res("T", "default", "t-000001", "2", 8)))
	require.NoError(t, ix.Put(res("T", "default", "t-000003", "2", 8)))
	ix.Delete(resource.Key{Type: "T", Mesh: "default", Name: "t-000002"})
	require.NoError(t, ix.Put(res("T", "default", "new", "1", 8)))

	// Held is asked before the session built anything.
	assert.Equal(t, PeerHolding{Subscribed: true, Holds: true, Version: "1"}, ask(ss, "default/t-000001"))
	assert.Equal(t, PeerHolding{Subscribed: true, Holds: true, Version: "1"}, ask(ss, "default/t-000002"), "deleted, not yet removed")
	assert.Equal(t, PeerHolding{Subscribed: true}, ask(ss, "default/new"))

	// A change after the take and before the build: build sees it too.
	require.NoError(t, ix.Put(res("T", "default", "t-000001", "3", 8)))
	require.NoError(t, ss.trySend(st))
	r := nextResponse(t, p)
	got := map[string]string{}
	for _, x := range r.GetResources() {
		got[x.GetName()] = x.GetVersion()
	}
	assert.Equal(t, map[string]string{"default/t-000001": "3", "default/t-000003": "2", "default/new": "1"}, got)
	assert.Equal(t, []string{"default/t-000002"}, r.GetRemovedResources())
	assert.Equal(t, PeerHolding{Subscribed: true, Holds: true, Version: "1", Pending: true, PendingVersion: "3"}, ask(ss, "default/t-000001"))

	// The peer refuses t-000003 at 2 and applies the rest.
	detail, err := rejectionStatus(3, "refused", []*kdsv1.RejectedResource{{Name: "default/t-000003", Version: "2"}})
	require.NoError(t, err)
	require.NoError(t, ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResponseNonce: r.GetNonce(), ErrorDetail: detail}))
	assert.Equal(t, PeerHolding{Subscribed: true, Holds: true, Version: "3"}, ask(ss, "default/t-000001"))
	assert.Equal(t, PeerHolding{Subscribed: true}, ask(ss, "default/t-000002"))
	assert.Equal(t, PeerHolding{Subscribed: true, Holds: true, Version: "1", Rejected: true, RejectedVersion: "2"}, ask(ss, "default/t-000003"))
	assert.Equal(t, map[string]heldState{"default/t-000003": {"1", true}}, st.overrides, "only the refused name differs")
	c, _ := ins.Get("zone-1")
	assert.Equal(t, 10, c.Types["T"].ResourcesHeld, "9 of the 10 plus new")

	// Deleting the refused name: the peer still holds it, and it goes.
	ix.Delete(resource.Key{Type: "T", Mesh: "default", Name: "t-000003"})
	assert.Equal(t, PeerHolding{Subscribed: true, Holds: true, Version: "1", Rejected: true, RejectedVersion: "2"}, ask(ss, "default/t-000003"))
	require.NoError(t, ss.trySend(st))
	r = nextResponse(t, p)
	assert.Equal(t, []string{"default/t-000003"}, r.GetRemovedResources())
	require.NoError(t, ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResponseNonce: r.GetNonce()}))
	assert.Empty(t, st.overrides)
	c, _ = ins.Get("zone-1")
	assert.Equal(t, 9, c.Types["T"].ResourcesHeld)
}

// A response answered after the peer subscribed again (stale) changes
// nothing, and a re-subscription's versions replace what was recorded.
func TestSparseHeldAcrossResubscription(t *testing.T) {
	ix, versions := sparseIndex(t, 10)
	ss, p, _ := directSession(t, ix, 64<<10)
	sub := &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}, InitialResourceVersions: versions}
	require.NoError(t, ss.handle(sub))
	ackAll(t, ss, p)
	st := ss.types["T"]
	require.NoError(t, ix.Put(res("T", "default", "t-000001", "2", 8)))
	require.NoError(t, ss.trySend(st))
	stale := nextResponse(t, p)
	require.Len(t, stale.GetResources(), 1)

	// The peer subscribes again still holding 1 everywhere, then answers
	// the stale response: it holds 1 until the new response is answered.
	require.NoError(t, ss.handle(sub))
	fresh := nextResponse(t, p)
	require.Len(t, fresh.GetResources(), 1)
	require.NoError(t, ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResponseNonce: stale.GetNonce()}))
	assert.Equal(t, PeerHolding{Subscribed: true, Holds: true, Version: "1", Pending: true, PendingVersion: "2"}, ask(ss, "default/t-000001"))
	require.NoError(t, ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResponseNonce: fresh.GetNonce()}))
	assert.Equal(t, PeerHolding{Subscribed: true, Holds: true, Version: "2"}, ask(ss, "default/t-000001"))
	assert.Empty(t, st.overrides)
}
