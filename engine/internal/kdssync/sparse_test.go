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
func directSession(t testing.TB, ix *Index, maxMsg int) (*serverSession, *pipe, *insights.Registry) {
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

// inSyncSession is a session on sparseIndex(t, n) whose peer subscribed
// holding every name at the served version and has answered everything.
func inSyncSession(t *testing.T, n, maxMsg int) (*Index, *serverSession, *pipe, *insights.Registry) {
	t.Helper()
	ix, versions := sparseIndex(t, n)
	ss, p, ins := directSession(t, ix, maxMsg)
	require.NoError(t, ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}, InitialResourceVersions: versions}))
	require.Zero(t, ackAll(t, ss, p), "a peer holding what is served is sent nothing")
	return ix, ss, p, ins
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
		// Nothing held yet, every name to send: the fresh region says so
		// without an entry per name, and so do the responses in flight
		// for the names they carry (their spans) until answered.
		inFlight := func() int {
			k := 0
			for _, f := range st.inflight {
				k += len(f.fresh) + len(f.puts) + len(f.removed)
			}
			return k
		}
		assert.Positive(t, inFlight())
		assert.Empty(t, st.overrides, "no override per name in flight")
		assert.Empty(t, st.pending)
		sent := 0
		for sent < n {
			require.Empty(t, st.overrides)
			got := ackAll(t, ss, p)
			require.NotZero(t, got, "the sync progresses")
			sent += got
		}
		assert.Equal(t, n, sent)
		assert.Empty(t, st.overrides, "in sync: nothing recorded per name")
		assert.Empty(t, st.fresh)
		assert.Less(t, st.overridesPeak, n/2, "never an entry per served name")
		assert.Zero(t, st.pendingPeak, "nor in pending")
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
	ix, ss, p, ins := inSyncSession(t, 10, 64<<10)
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

// FuzzSparseHeld drives a session through index changes, responses, ACKs,
// NACKs, skipped answers and re-subscriptions, and checks after every step
// that the sparse record agrees with a peer that keeps every name it
// applied: Held answers, the held count, and no override equal to the
// index's state; at the end the peer converges to the index.
func FuzzSparseHeld(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 2, 3})
	f.Add([]byte{0, 0, 2, 1, 1, 2, 4, 3, 7, 1, 5, 6, 2, 3})
	f.Add([]byte{2, 1, 9, 2, 17, 6, 3, 4, 0, 8, 2, 5, 3, 7, 15, 6, 14, 2, 3, 3})
	f.Fuzz(func(t *testing.T, ops []byte) { sparseHeld(t, 0, ops) })
}

// FuzzSparseHeldChunked is FuzzSparseHeld with small responses, so that
// a fresh subscriber's region (everything after the cursor is not held)
// spans several responses and answers, and with the index's lock
// released every few names while the index changes in between (cfg: bits
// 0-1 the response size, 0 for 1 MiB, else room for about that many
// resources; bit 2 a window of 3; bits 3-4 the names per hold of the
// lock, 0 for serveLockChunk; bit 5 a put or delete each time the lock is
// released).
func FuzzSparseHeldChunked(f *testing.F) {
	f.Add(byte(0b101001), []byte{3, 4, 3, 4, 3, 4, 3, 4})
	f.Add(byte(0b111010), []byte{0, 1, 2, 3, 2, 3})
	f.Add(byte(0b001101), []byte{3, 6, 3, 5, 3, 4, 7, 3, 4, 3, 4})
	f.Add(byte(0b101011), []byte{2, 1, 9, 2, 17, 6, 3, 4, 0, 8, 2, 5, 3, 7, 15, 6, 14, 2, 3, 3})
	f.Add(byte(0b110001), []byte{56, 3, 8, 4, 3, 7, 0, 3, 6, 3, 5, 3, 4})
	f.Fuzz(sparseHeld)
}

func sparseHeld(t *testing.T, cfg byte, ops []byte) {
	{
		if len(ops) > 400 {
			return
		}
		ix := NewIndex([]string{"T"})
		names := []string{"a", "b", "c", "d", "e"}
		version := 0
		last := map[string]string{} // the last version each name had
		put := func(i int) {
			version++
			n := names[i%len(names)]
			last[n] = fmt.Sprint("v", version)
			require.NoError(t, ix.Put(res("T", "m", n, last[n], 4)))
		}
		// replace resyncs the index to the names whose bit is set in keep:
		// those it holds at their version, the others re-created at the
		// last version they had (or a new one), the rest deleted.
		replace := func(keep int) {
			var items []*resource.Resource
			for i, n := range names {
				if keep&(1<<i) == 0 {
					continue
				}
				if _, ok := last[n]; !ok {
					version++
					last[n] = fmt.Sprint("v", version)
				}
				items = append(items, res("T", "m", n, last[n], 4))
			}
			require.NoError(t, ix.Replace(items))
		}
		for i := range 3 {
			put(i)
		}
		maxMsg := 1 << 20
		if k := int(cfg & 3); k > 0 {
			maxMsg = responseOverhead + k*40
		}
		ss, p, ins := directSession(t, ix, maxMsg)
		ss.window = 2
		if cfg&4 != 0 {
			ss.window = 3
		}
		if k := int(cfg>>3) & 3; k > 0 {
			ss.lockChunk = k
		}
		changes := cfg&32 != 0
		between := 0
		ss.betweenChunks = func() {
			if !changes {
				return
			}
			between++
			if between%3 == 2 {
				ix.Delete(resource.Key{Type: "T", Mesh: "m", Name: names[between%len(names)]})
			} else {
				put(between)
			}
		}
		// peer is what the peer applied; out what it was sent, in order.
		peer := map[string]string{}
		type out struct {
			resp  *discovery.DeltaDiscoveryResponse
			stale bool
		}
		var outs []out
		subscribe := func() {
			versions := map[string]string{}
			for n, v := range peer {
				versions[n] = v
			}
			for i := range outs {
				outs[i].stale = true
			}
			require.NoError(t, ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}, InitialResourceVersions: versions}))
		}
		collect := func() {
			for {
				select {
				case r := <-p.resps:
					outs = append(outs, out{resp: r})
				default:
					return
				}
			}
		}
		answer := func(i int, refuse bool) {
			o := outs[i]
			outs = outs[i+1:]
			var rej []*kdsv1.RejectedResource
			refused := ""
			if refuse {
				if rs := o.resp.GetResources(); len(rs) > 0 {
					refused = rs[0].GetName()
					rej = append(rej, &kdsv1.RejectedResource{Name: refused, Version: rs[0].GetVersion()})
				} else if rm := o.resp.GetRemovedResources(); len(rm) > 0 {
					refused = rm[0]
					rej = append(rej, &kdsv1.RejectedResource{Name: refused, Removal: true})
				}
			}
			if !o.stale {
				for _, r := range o.resp.GetResources() {
					if r.GetName() != refused {
						peer[r.GetName()] = r.GetVersion()
					}
				}
				for _, n := range o.resp.GetRemovedResources() {
					if n != refused {
						delete(peer, n)
					}
				}
			}
			req := &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResponseNonce: o.resp.GetNonce()}
			if len(rej) > 0 {
				detail, err := rejectionStatus(3, "refused", rej)
				require.NoError(t, err)
				req.ErrorDetail = detail
			}
			require.NoError(t, ss.handle(req))
			c, _ := ins.Get("zone-1")
			require.Equal(t, len(peer), c.Types["T"].ResourcesHeld, "ResourcesHeld after an answer")
			collect()
		}
		check := func() {
			st := ss.types["T"]
			if st == nil {
				return
			}
			for _, n := range names {
				w := WireName("m", n)
				h := ask(ss, w)
				v, holds := peer[w]
				require.Equal(t, holds, h.Holds, "%s held", w)
				require.Equal(t, v, h.Version, "%s version", w)
			}
			ss.ix.mu.RLock()
			ti := ss.ix.types["T"]
			st.catchUp(ti)
			for n, o := range st.overrides {
				require.NotEqual(t, ti.state(n), o, "override of %s equal to the index", n)
			}
			require.Equal(t, len(peer), st.heldCount(ti))
			ss.ix.mu.RUnlock()
		}
		subscribe()
		collect()
		for _, op := range ops {
			arg := int(op >> 3)
			switch op & 7 {
			case 0:
				put(arg)
			case 1:
				replace(arg)
			case 2:
				ix.Delete(resource.Key{Type: "T", Mesh: "m", Name: names[arg%len(names)]})
			case 3:
				require.NoError(t, ss.trySend(ss.types["T"]))
				collect()
			case 4, 5:
				if len(outs) > 0 {
					answer(0, op&7 == 5)
				}
			case 6:
				if len(outs) > 1 {
					answer(1, false) // the first was skipped
				}
			case 7:
				subscribe()
				collect()
			}
			check()
		}
		changes = false
		for range 100 {
			require.NoError(t, ss.trySend(ss.types["T"]))
			collect()
			if len(outs) == 0 {
				break
			}
			answer(0, false)
		}
		require.Empty(t, outs, "the session settles")
		check()
		ss.ix.mu.RLock()
		defer ss.ix.mu.RUnlock()
		st := ss.types["T"]
		for n, e := range ss.ix.types["T"].entries {
			if v, ok := st.rejected[n]; ok && v == e.res.Version {
				continue
			}
			require.Equal(t, e.res.Version, peer[n], "%s converged", n)
		}
		c, _ := ins.Get("zone-1")
		require.Equal(t, len(peer), c.Types["T"].ResourcesHeld)
	}
}

// A name deleted and re-created at the same version (a version names one
// content for good, so a restored store may bring it back) while the peer's
// refusal of that version and the removal are both in flight: the answer to
// the removal (an ACK, or a NACK of the removal of a name the peer does not
// hold) replaces what is remembered as refused, so the version is
// reconsidered and sent again (the peer refuses it again or applies it).
// Otherwise the peer lacks the name while the server sends nothing and
// remembers no refusal of what it serves.
func TestRecreatedAtRefusedVersionWhileRemovalInFlight(t *testing.T) {
	for _, refuseRemoval := range []bool{false, true} {
		t.Run(fmt.Sprintf("removal refused=%v", refuseRemoval), func(t *testing.T) {
			ix := NewIndex([]string{"T"})
			require.NoError(t, ix.Put(res("T", "m", "a", "v1", 8)))
			ss, p, _ := directSession(t, ix, 64<<10)
			require.NoError(t, ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}}))
			st := ss.types["T"]
			put := nextResponse(t, p)
			require.Len(t, put.GetResources(), 1)

			ix.Delete(resource.Key{Type: "T", Mesh: "m", Name: "a"})
			require.NoError(t, ss.trySend(st))
			removal := nextResponse(t, p)
			require.Equal(t, []string{"m/a"}, removal.GetRemovedResources())
			require.NoError(t, ix.Put(res("T", "m", "a", "v1", 8)))

			detail, err := rejectionStatus(3, "refused", []*kdsv1.RejectedResource{{Name: "m/a", Version: "v1"}})
			require.NoError(t, err)
			require.NoError(t, ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResponseNonce: put.GetNonce(), ErrorDetail: detail}))
			answer := &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResponseNonce: removal.GetNonce()}
			if refuseRemoval {
				answer.ErrorDetail, err = rejectionStatus(3, "refused", []*kdsv1.RejectedResource{{Name: "m/a", Removal: true}})
				require.NoError(t, err)
			}
			require.NoError(t, ss.handle(answer))

			assert.False(t, ask(ss, "m/a").Holds)
			require.NoError(t, ss.trySend(st))
			r := nextResponse(t, p)
			require.Len(t, r.GetResources(), 1, "v1 is served, the peer holds nothing and v1 is no longer remembered as refused: it is sent")
			assert.Equal(t, "v1", r.GetResources()[0].GetVersion())
		})
	}
}

// While a fresh peer's initial sync runs, the names in flight cost no
// override and no entry in sent each: the responses' spans record them as
// not held, and in flight, until their answers, so both maps stay empty
// through the whole sync (the overrides map held every name in flight,
// refilled by every response, and so did sent).
func TestFreshSyncRecordsNoOverridePerNameInFlight(t *testing.T) {
	ix, _ := sparseIndex(t, 20_000)
	ss, p, _ := directSession(t, ix, 256<<10)
	require.NoError(t, ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}}))
	st := ss.types["T"]
	require.Len(t, st.inflight, DefaultWindow)
	assert.Equal(t, PeerHolding{Subscribed: true, Pending: true, PendingVersion: "1"}, ask(ss, "default/t-000000"), "in flight, not held yet")
	answered := 0
	for st.region || len(st.inflight) > 0 {
		require.Empty(t, st.overrides, "answer %d", answered)
		require.Zero(t, st.overridesPeak, "answer %d", answered)
		require.Empty(t, st.sent, "answer %d", answered)
		r := nextResponse(t, p)
		require.NoError(t, ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}))
		answered++
	}
	require.Greater(t, answered, 3, "the sync took several answers")
	assert.Empty(t, st.spans)
	assert.Equal(t, PeerHolding{Subscribed: true, Holds: true, Version: "1"}, ask(ss, "default/t-019999"))
}
