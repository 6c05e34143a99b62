package kdssync

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

func TestAdmissionSlotsFromThePool(t *testing.T) {
	// Half of 256 MiB over three 4 MiB responses counted at twice their size.
	assert.Equal(t, 5, AdmissionSlots(256<<20, 4<<20))
	assert.Equal(t, 341, AdmissionSlots(256<<20, 64<<10))
	assert.Equal(t, 1, AdmissionSlots(512<<10, 64<<10), "never fewer than one")
	assert.Equal(t, 1, AdmissionSlots(0, 0))
}

// admissionClient is a Client run against a pipe the test answers as the
// server would; the test sees each request it sends.
type admissionClient struct {
	t    *testing.T
	p    *pipe
	ins  *insights.Registry
	done chan error
	stop context.CancelFunc
	n    int // nonces used
}

const admissionMaxMsg = 64 << 10

func runAdmitted(t *testing.T, a *Admission, sink *memSink, types []string, opts ...ClientOption) *admissionClient {
	t.Helper()
	return runAdmittedChecking(t, a, sink, types, rejectValidator{}, opts...)
}

// runAdmittedChecking is runAdmitted with v checking the responses.
func runAdmittedChecking(t *testing.T, a *Admission, sink *memSink, types []string, v Validator, opts ...ClientOption) *admissionClient {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	ac := &admissionClient{t: t, p: newPipe(ctx), ins: insights.NewRegistry(), done: make(chan error, 1), stop: cancel}
	cli := NewClient(types, sink, v, "zone", "zone-1",
		append([]ClientOption{WithClientInsights(ac.ins), WithClientMaxMessageSize(admissionMaxMsg), WithAdmission(a)}, opts...)...)
	go func() { ac.done <- cli.Run(ctx, clientEnd{ac.p}) }()
	t.Cleanup(func() { cancel(); <-ac.done })
	return ac
}

// subscriptions waits for the client's first requests, one per type.
func (ac *admissionClient) subscriptions(n int) []string {
	ac.t.Helper()
	var urls []string
	for range n {
		urls = append(urls, nextRequest(ac.t, ac.p, ac.done).GetTypeUrl())
	}
	slices.Sort(urls)
	return urls
}

// quiet fails the test if the client sends a request within 100 ms.
func (ac *admissionClient) quiet(why string) {
	ac.t.Helper()
	select {
	case r := <-ac.p.reqs:
		ac.t.Fatalf("%s: unexpected request for %s", why, r.GetTypeUrl())
	case <-time.After(100 * time.Millisecond):
	}
}

// respond sends a response of typ whose resources take about bytes,
// marked MorePending if more is set, and waits for its ACK.
func (ac *admissionClient) respond(typ string, bytes int, more bool) {
	ac.t.Helper()
	ac.push(typ, bytes, more)
	ack := nextRequest(ac.t, ac.p, ac.done)
	require.Equal(ac.t, fmt.Sprint(ac.n), ack.GetResponseNonce(), "the answer to %s's response", typ)
	require.Nil(ac.t, ack.GetErrorDetail(), "an ACK")
}

// push sends a response as respond does, without waiting for its answer.
func (ac *admissionClient) push(typ string, bytes int, more bool) {
	ac.n++
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: TypeURL(typ), Nonce: fmt.Sprint(ac.n), SystemVersionInfo: "7"}
	if more {
		resp.SystemVersionInfo += MorePending
	}
	for i := 0; bytes > 0; i++ {
		size := min(bytes, 8<<10)
		bytes -= size
		name := fmt.Sprintf("r-%d-%d", ac.n, i)
		resp.Resources = append(resp.Resources, wire("default", name, "1",
			&kdsv1.Resource{Type: typ, Mesh: "default", Name: name, Spec: fmt.Appendf(nil, `{"pad":%q}`, strings.Repeat("x", size))}))
	}
	ac.p.resps <- resp
}

// oneHoldsOneWaits starts two sessions of Dataplane on one slot: the
// first holds it (subscribed, nothing answered), the second waits for it.
func oneHoldsOneWaits(t *testing.T) (a *Admission, first, second *admissionClient) {
	t.Helper()
	a = NewAdmission(1, AdmissionHold(time.Minute))
	first = runAdmitted(t, a, newMemSink(), []string{"Dataplane"})
	first.subscriptions(1)
	second = runAdmitted(t, a, newMemSink(), []string{"Dataplane"})
	require.Eventually(t, func() bool { return a.Waiting() == 1 }, 10*time.Second, 5*time.Millisecond)
	return a, first, second
}

// slotSince is what the insights show of the session's slot.
func (ac *admissionClient) slotSince() time.Time {
	c, _ := ac.ins.Get("zone")
	return c.InitialSyncSlotSince
}

func (ac *admissionClient) waitingFor(typ string) insights.TypeState {
	c, _ := ac.ins.Get("zone")
	return c.Types[typ]
}

// One slot: a second session subscribes only once the first has received
// its initial state, which ends at the first response of each type the
// server did not mark MorePending, however large; marked ones keep the slot.
func TestAdmissionHoldsASecondSessionUntilTheFirstHasItsInitialState(t *testing.T) {
	a := NewAdmission(1, AdmissionHold(time.Minute))
	types := []string{"Dataplane", "DataplaneInsight"}
	first := runAdmitted(t, a, newMemSink(), types)
	require.Equal(t, []string{TypeURL("Dataplane"), TypeURL("DataplaneInsight")}, first.subscriptions(2))
	require.Equal(t, 1, a.Running())

	assert.NotZero(t, first.slotSince(), "the insights show the slot held")
	second := runAdmitted(t, a, newMemSink(), types)
	second.quiet("every slot is taken")
	require.Eventually(t, func() bool { return a.Waiting() == 1 }, 10*time.Second, 5*time.Millisecond)
	assert.Zero(t, second.slotSince(), "a waiting session holds none")
	for _, typ := range types {
		ts := second.waitingFor(typ)
		assert.NotZero(t, ts.WaitingSince, "%s shows as waiting", typ)
		assert.Equal(t, insights.WaitingForSlot, ts.WaitingFor, typ)
	}

	large, small := admissionMaxMsg*3/4, 1<<10
	first.respond("Dataplane", large, true)
	first.respond("Dataplane", small, true)  // a small response can be followed by more
	first.respond("Dataplane", large, false) // Dataplane's initial state is in
	first.respond("DataplaneInsight", large, true)
	second.quiet("DataplaneInsight's initial state is still arriving")
	assert.Equal(t, 1, a.Running())
	assert.Equal(t, "7", first.waitingFor("DataplaneInsight").LastVersionApplied, "the mark is not part of the version shown")
	first.respond("DataplaneInsight", 0, false) // an empty answer: nothing more was pending

	assert.Equal(t, []string{TypeURL("Dataplane"), TypeURL("DataplaneInsight")}, second.subscriptions(2), "the second session subscribes")
	assert.Zero(t, first.slotSince(), "the first no longer shows a slot")
	assert.NotZero(t, second.slotSince())
	for _, typ := range types {
		ts := second.waitingFor(typ)
		assert.Zero(t, ts.WaitingSince, "%s no longer waits", typ)
		assert.Empty(t, ts.WaitingFor, typ)
	}
	assert.Equal(t, 1, a.Running())
	assert.Zero(t, a.Waiting())
	assert.EqualValues(t, 1, a.Waits())

	// Later responses of the first session change nothing.
	first.respond("Dataplane", small, false)
	second.respond("Dataplane", 0, false)
	second.respond("DataplaneInsight", 0, false)
	require.Eventually(t, func() bool { return a.Running() == 0 }, 10*time.Second, 5*time.Millisecond)
	assert.Zero(t, a.Expired())
}

// The answers to held versions sent in parts are small, but the initial
// state comes after the last part: the slot is kept until then.
func TestAdmissionKeepsTheSlotWhileHeldVersionsGoInParts(t *testing.T) {
	a := NewAdmission(1, AdmissionHold(time.Minute))
	sink := newMemSink()
	sink.holdNamed("Dataplane", strings.Repeat("d", 24), 3000)
	first := runAdmitted(t, a, sink, []string{"Dataplane"}, WithResumeParts(true))
	parts := 0
	for {
		req := nextRequest(t, first.p, first.done)
		parts++
		if slices.Contains(req.GetResourceNamesSubscribe(), "*") {
			break
		}
		first.respond("Dataplane", 0, false)
	}
	require.Greater(t, parts, 2, "the held versions went in parts")
	assert.Equal(t, 1, a.Running(), "the answers to the parts kept the slot")

	second := runAdmitted(t, a, newMemSink(), []string{"Dataplane"})
	second.quiet("the first session's initial state has not arrived")
	first.respond("Dataplane", 0, false)
	assert.Equal(t, []string{TypeURL("Dataplane")}, second.subscriptions(1))
}

// A session that keeps its slot past the hold limit gives it back, and so
// does one that ends.
func TestAdmissionSlotGoesBackAtTheHoldLimitAndWhenTheSessionEnds(t *testing.T) {
	a := NewAdmission(1, AdmissionHold(200*time.Millisecond))
	first := runAdmitted(t, a, newMemSink(), []string{"Dataplane"})
	first.subscriptions(1)
	first.respond("Dataplane", admissionMaxMsg*3/4, true) // more is pending, never sent
	second := runAdmitted(t, a, newMemSink(), []string{"Dataplane"})
	assert.Equal(t, []string{TypeURL("Dataplane")}, second.subscriptions(1), "the second session went at the first one's hold limit")
	assert.EqualValues(t, 1, a.Expired())
	assert.Equal(t, 1, a.Running(), "only the second holds a slot")

	third := runAdmitted(t, a, newMemSink(), []string{"Dataplane"})
	third.quiet("the second holds the slot")
	second.stop()
	assert.Equal(t, []string{TypeURL("Dataplane")}, third.subscriptions(1), "the third went when the second's session ended")
	third.respond("Dataplane", 0, false)
	require.Eventually(t, func() bool { return a.Running() == 0 }, 10*time.Second, 5*time.Millisecond)
}

// A session that ends while it waits for a slot gives up its place.
func TestAdmissionWaitEndsWithTheSession(t *testing.T) {
	a, first, second := oneHoldsOneWaits(t)
	second.stop()
	require.ErrorIs(t, <-second.done, context.Canceled)
	second.done <- nil // for the cleanup's wait
	assert.Zero(t, a.Waiting())
	assert.Zero(t, second.waitingFor("Dataplane").WaitingSince, "insights no longer show it waiting")
	first.respond("Dataplane", 0, false)
	require.Eventually(t, func() bool { return a.Running() == 0 }, 10*time.Second, 5*time.Millisecond)
}

// The server marks each response of an initial sync that leaves more of
// its type pending, and not the one that ends it; a change after it goes
// unmarked.
func TestServerMarksResponsesThatLeaveMorePending(t *testing.T) {
	ix := NewIndex([]string{"MeshTimeout"})
	for i := range 200 {
		require.NoError(t, ix.Put(res("MeshTimeout", "default", fmt.Sprintf("t-%03d", i), "1", 1000)))
	}
	h := start(t, ix, newMemSink(), []string{"MeshTimeout"}, []ServerOption{WithServerMaxMessageSize(64 << 10)}, WithClientMaxMessageSize(64<<10))
	h.waitFor(func() bool { return len(h.sink.snapshot()) == 200 }, "initial sync")
	resps := h.pipe.responses()
	require.Greater(t, len(resps), 2, "the initial sync took several responses")
	for i, r := range resps {
		more := strings.HasSuffix(r.GetSystemVersionInfo(), MorePending)
		assert.Equal(t, i < len(resps)-1, more, "response %d of %d (%s)", i+1, len(resps), r.GetSystemVersionInfo())
	}
	require.NoError(t, ix.Put(res("MeshTimeout", "default", "t-000", "2", 1000)))
	h.waitFor(func() bool { return len(h.pipe.responses()) == len(resps)+1 }, "the change")
	assert.False(t, strings.HasSuffix(h.pipe.responses()[len(resps)].GetSystemVersionInfo(), MorePending))
	assert.NotContains(t, h.srvType("MeshTimeout").LastVersionSent, MorePending, "the mark is not part of the version shown")
	h.waitFor(func() bool {
		return h.cliType("MeshTimeout").LastVersionApplied == h.srvType("MeshTimeout").LastVersionSent
	}, "the versions shown agree")
}

// A session waiting for a slot reads what its peer sends and refuses it
// at once (nothing is subscribed yet): responses left unread would hold
// the shared inbound pool for as long as the session waits.
func TestAdmissionWaitRefusesResponsesAtOnce(t *testing.T) {
	a, first, second := oneHoldsOneWaits(t)
	for i := range 3 {
		second.p.resps <- &discovery.DeltaDiscoveryResponse{TypeUrl: TypeURL("Dataplane"), Nonce: fmt.Sprint("unasked-", i), SystemVersionInfo: "7",
			Resources: []*discovery.Resource{wire("default", "r", "1", &kdsv1.Resource{Type: "Dataplane", Mesh: "default", Name: "r", Spec: []byte(`{}`)})}}
		nack := nextRequest(t, second.p, second.done)
		assert.Equal(t, fmt.Sprint("unasked-", i), nack.GetResponseNonce())
		assert.Contains(t, nack.GetErrorDetail().GetMessage(), "not subscribed to yet")
	}
	assert.Equal(t, 1, a.Waiting(), "still waiting")
	assert.Equal(t, insights.WaitingForSlot, second.waitingFor("Dataplane").WaitingFor)

	first.respond("Dataplane", 0, false)
	assert.Equal(t, []string{TypeURL("Dataplane")}, second.subscriptions(1), "the slot is taken as before")
	second.respond("Dataplane", 0, false)
	require.Eventually(t, func() bool { return a.Running() == 0 }, 10*time.Second, 5*time.Millisecond)
}

// A client with no types to receive (global without a plugin of a
// zone→global type) takes no slot: nothing would give it back before the
// hold limit.
func TestAdmissionClientWithoutTypesTakesNoSlot(t *testing.T) {
	a := NewAdmission(1, AdmissionHold(time.Minute))
	none := runAdmitted(t, a, newMemSink(), nil)
	none.quiet("nothing to subscribe to") // and its Run is past the admission
	other := runAdmitted(t, a, newMemSink(), []string{"Dataplane"})
	assert.Equal(t, []string{TypeURL("Dataplane")}, other.subscriptions(1))
	assert.Equal(t, 1, a.Running())
	assert.Zero(t, a.Waits())
	other.respond("Dataplane", 0, false)
	require.Eventually(t, func() bool { return a.Running() == 0 }, 10*time.Second, 5*time.Millisecond)
}

// The types of responses nobody subscribed to that a waiting session
// showed in insights go when the session ends, as they do after the
// stages ran: each session could otherwise leave up to MaxUnknownTypes
// more behind.
func TestAdmissionWaitDropsUnknownTypesWhenTheSessionEnds(t *testing.T) {
	_, _, second := oneHoldsOneWaits(t)
	second.p.resps <- &discovery.DeltaDiscoveryResponse{TypeUrl: TypeURL("Bogus"), Nonce: "1"}
	nack := nextRequest(t, second.p, second.done)
	assert.Contains(t, nack.GetErrorDetail().GetMessage(), "never subscribed to")
	second.p.resps <- &discovery.DeltaDiscoveryResponse{TypeUrl: TypeURL("Dataplane"), Nonce: "2"}
	nack = nextRequest(t, second.p, second.done)
	assert.Contains(t, nack.GetErrorDetail().GetMessage(), "not subscribed to yet")
	c, _ := second.ins.Get("zone")
	require.Contains(t, c.Types, "Bogus", "shown while the session lasts")

	second.stop()
	require.ErrorIs(t, <-second.done, context.Canceled)
	second.done <- nil // for the cleanup's wait
	c, _ = second.ins.Get("zone")
	assert.NotContains(t, c.Types, "Bogus")
	assert.Contains(t, c.Types, "Dataplane", "a type of this side's, refused while waiting, is not taken for an unknown one")
	assert.EqualValues(t, 1, c.Types["Dataplane"].ResponsesNACKed)
}

// A session reads what it holds of its types only once it has a slot: the
// sessions waiting for one hold none of it.
func TestAdmissionReadsHeldVersionsOnlyOnceAdmitted(t *testing.T) {
	a := NewAdmission(1, AdmissionHold(time.Minute))
	first := runAdmitted(t, a, newMemSink(), []string{"Dataplane"})
	first.subscriptions(1)
	var reads atomic.Int32
	sink := countingSink{newMemSink(), &reads}
	ctx, cancel := context.WithCancel(t.Context())
	p := newPipe(ctx)
	done := make(chan error, 1)
	cli := NewClient([]string{"Dataplane", "DataplaneInsight"}, sink, rejectValidator{}, "zone", "zone-1", WithAdmission(a))
	go func() { done <- cli.Run(ctx, clientEnd{p}) }()
	defer func() { cancel(); <-done }()
	require.Eventually(t, func() bool { return a.Waiting() == 1 }, 10*time.Second, 5*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	assert.Zero(t, reads.Load(), "nothing read while waiting")
	first.respond("Dataplane", 0, false)
	nextRequest(t, p, done)
	assert.EqualValues(t, 2, reads.Load(), "read once admitted, one type at a time")
}

// subscribedWithin reports whether the client sent a request within d.
func (ac *admissionClient) subscribedWithin(d time.Duration) bool {
	select {
	case r := <-ac.p.reqs:
		require.Equal(ac.t, TypeURL("Dataplane"), r.GetTypeUrl())
		return true
	case err := <-ac.done:
		ac.t.Fatalf("the session ended: %v", err)
	case <-time.After(d):
	}
	return false
}

// A peer that never answers the subscriptions gives its slot back at the
// idle limit, long before the hold limit.
func TestAdmissionSlotGoesBackWhenThePeerSendsNothing(t *testing.T) {
	const idle = 300 * time.Millisecond
	a := NewAdmission(1, AdmissionHold(time.Hour), AdmissionIdle(idle))
	start := time.Now()
	first := runAdmitted(t, a, newMemSink(), []string{"Dataplane"})
	first.subscriptions(1)
	second := runAdmitted(t, a, newMemSink(), []string{"Dataplane"})
	assert.Equal(t, []string{TypeURL("Dataplane")}, second.subscriptions(1), "the second session went at the first one's idle limit")
	assert.GreaterOrEqual(t, time.Since(start), idle, "not before it")
	assert.EqualValues(t, 1, a.Idled())
	assert.Zero(t, a.Expired())
	assert.Equal(t, 1, a.Running(), "only the second holds a slot")
}

// Idle time adds up over the session: a peer that sends a response now and
// then, each time before the idle limit, still gives its slot back once
// its pauses add up to it.
func TestAdmissionIdleTimeAddsUpOverResponses(t *testing.T) {
	const idle = time.Second
	a := NewAdmission(1, AdmissionHold(time.Hour), AdmissionIdle(idle))
	first := runAdmitted(t, a, newMemSink(), []string{"Dataplane"})
	first.subscriptions(1)
	second := runAdmitted(t, a, newMemSink(), []string{"Dataplane"})
	require.Eventually(t, func() bool { return a.Waiting() == 1 }, 10*time.Second, 5*time.Millisecond)
	sent := 0
	for !second.subscribedWithin(idle / 5) {
		first.respond("Dataplane", 1<<10, true) // every idle/5: never idle for the limit at once
		sent++
		require.Less(t, sent, 40, "the pauses added up long ago")
	}
	assert.Positive(t, sent, "the slot was kept while the pauses were short of the limit")
	assert.EqualValues(t, 1, a.Idled())
}

// gateValidator holds each Validate call until the test lets it go.
type gateValidator struct{ entered, release chan struct{} }

func (v gateValidator) Validate(ctx context.Context, _ []*resource.Resource) error {
	v.entered <- struct{}{}
	select {
	case <-v.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Time this side takes with a response that moves the initial sync
// forward is not the peer's idle time: a check that outlasts the idle
// limit keeps the slot; the clock runs again once the response is
// answered.
func TestAdmissionSlowCheckIsNotIdle(t *testing.T) {
	const idle = 300 * time.Millisecond
	a := NewAdmission(1, AdmissionHold(time.Hour), AdmissionIdle(idle))
	v := gateValidator{entered: make(chan struct{}), release: make(chan struct{})}
	first := runAdmittedChecking(t, a, newMemSink(), []string{"Dataplane"}, v)
	first.subscriptions(1)
	second := runAdmitted(t, a, newMemSink(), []string{"Dataplane"})
	require.Eventually(t, func() bool { return a.Waiting() == 1 }, 10*time.Second, 5*time.Millisecond)

	first.push("Dataplane", admissionMaxMsg*3/4, true) // bulk: it moves the initial sync forward
	<-v.entered
	assert.False(t, second.subscribedWithin(3*idle), "the response is being checked: the peer is not idle")
	assert.Zero(t, a.Idled())
	close(v.release)
	ack := nextRequest(t, first.p, first.done)
	require.Equal(t, fmt.Sprint(first.n), ack.GetResponseNonce())
	assert.True(t, second.subscribedWithin(10*time.Second), "the peer sent nothing after the answer: idle again, then the slot goes")
	assert.EqualValues(t, 1, a.Idled())
}

// While this side is busy (a full inbound pool: the peer's next response
// may be waiting there), an idle session keeps its slot.
func TestAdmissionKeepsIdleSlotsWhileThisSideIsBusy(t *testing.T) {
	var busy atomic.Bool
	busy.Store(true)
	a := NewAdmission(1, AdmissionHold(time.Hour), AdmissionIdle(100*time.Millisecond), AdmissionBusy(busy.Load))
	runAdmitted(t, a, newMemSink(), []string{"Dataplane"}).subscriptions(1)
	second := runAdmitted(t, a, newMemSink(), []string{"Dataplane"})
	assert.False(t, second.subscribedWithin(time.Second), "busy: the idle session keeps its slot")
	busy.Store(false)
	assert.True(t, second.subscribedWithin(10*time.Second), "no longer busy: the slot goes")
	assert.EqualValues(t, 1, a.Idled())
}

// Time this side was busy is its own, not the peer's idle time: a session
// whose next response waited for this side (a full inbound pool) for longer
// than the idle limit still has its idle time once it arrives, rather than
// losing its slot at the first answer after the pool drained.
func TestAdmissionBusyTimeIsNotIdle(t *testing.T) {
	const idle = time.Second
	var busy atomic.Bool
	busy.Store(true)
	a := NewAdmission(1, AdmissionHold(time.Hour), AdmissionIdle(idle), AdmissionBusy(busy.Load))
	first := runAdmitted(t, a, newMemSink(), []string{"Dataplane"})
	first.subscriptions(1)
	second := runAdmitted(t, a, newMemSink(), []string{"Dataplane"})
	require.Eventually(t, func() bool { return a.Waiting() == 1 }, 10*time.Second, 5*time.Millisecond)
	assert.False(t, second.subscribedWithin(3*idle), "busy: the idle session keeps its slot")
	busy.Store(false)
	first.respond("Dataplane", 1<<10, true) // the response that waited for room
	assert.False(t, second.subscribedWithin(idle/3), "the time this side was busy did not use up the peer's idle time")
	assert.Zero(t, a.Idled())
	assert.True(t, second.subscribedWithin(10*time.Second), "idle for the limit after that: the slot goes")
	assert.EqualValues(t, 1, a.Idled())
}

// A zone's server answers every subscription, even of a type it holds
// nothing of, or of which this side already holds everything, with a
// response it does not mark MorePending: such a session gives its slot
// back at once, not at the idle limit.
func TestAdmissionSlotGoesBackAtOnceWhenThePeerHasNothingToSend(t *testing.T) {
	a := NewAdmission(1, AdmissionHold(time.Hour), AdmissionIdle(time.Hour))
	ix := NewIndex([]string{"MeshTimeout", "MeshRetry"})
	for i := range 200 {
		require.NoError(t, ix.Put(res("MeshTimeout", "default", fmt.Sprintf("t-%03d", i), "1", 1000)))
	}
	types := []string{"MeshTimeout", "MeshRetry"}
	h := start(t, ix, newMemSink(), types, []ServerOption{WithServerMaxMessageSize(64 << 10)},
		WithClientMaxMessageSize(64<<10), WithAdmission(a))
	h.waitFor(func() bool { return len(h.sink.snapshot()) == 200 && a.Running() == 0 }, "the initial sync, and the slot back")
	h.stop()

	// The next session resumes from all of it: nothing differs.
	h = start(t, ix, h.sink, types, []ServerOption{WithServerMaxMessageSize(64 << 10)},
		WithClientMaxMessageSize(64<<10), WithAdmission(a))
	h.waitFor(func() bool { return h.cliType("MeshTimeout").ResponsesACKed > 0 && a.Running() == 0 }, "the slot back")
	assert.Zero(t, a.Idled())
	assert.Zero(t, a.Expired())
}

// floodUntilAdmitted has ac send marked responses of about bytes each,
// three in flight (a new one as each is answered), until waiting's session
// subscribes; the test fails if it does not within limit. It returns how
// many were answered.
func (ac *admissionClient) floodUntilAdmitted(waiting *admissionClient, bytes int, limit time.Duration) (answered int) {
	ac.t.Helper()
	start, sent := time.Now(), 0
	deadline := time.After(limit)
	for {
		for ; sent-answered < 3; sent++ {
			ac.push("Dataplane", bytes, true)
		}
		select {
		case <-ac.p.reqs:
			answered++
		case r := <-waiting.p.reqs:
			require.Equal(ac.t, TypeURL("Dataplane"), r.GetTypeUrl())
			ac.t.Logf("slot given back after %v and %d responses", time.Since(start).Round(time.Millisecond), sent)
			return answered
		case <-deadline:
			ac.t.Fatalf("the first session kept its slot through %d responses of %d bytes", sent, bytes)
		}
	}
}

// A peer that keeps this side busy cheaply — small responses marked
// MorePending back to back, three in flight, each arriving while the one
// before is stored — never leaves it waiting, but moves nothing forward:
// the time those responses are stored counts as idle, and the slot goes.
func TestAdmissionSmallResponsesBackToBackDoNotKeepTheSlot(t *testing.T) {
	const idle = 300 * time.Millisecond
	a := NewAdmission(1, AdmissionHold(time.Hour), AdmissionIdle(idle))
	sink := newMemSink()
	sink.delay = 5 * time.Millisecond
	first := runAdmitted(t, a, sink, []string{"Dataplane"})
	first.subscriptions(1)
	second := runAdmitted(t, a, newMemSink(), []string{"Dataplane"})
	require.Eventually(t, func() bool { return a.Waiting() == 1 }, 10*time.Second, 5*time.Millisecond)
	answered := first.floodUntilAdmitted(second, 100, 20*time.Second)
	assert.GreaterOrEqual(t, answered, 3, "the peer kept sending")
	assert.EqualValues(t, 1, a.Idled())
}

// Bulk responses of a type whose initial state is still arriving keep the
// slot however long this side takes to store them.
func TestAdmissionBulkResponsesKeepTheSlotWhileStored(t *testing.T) {
	const idle = 200 * time.Millisecond
	a := NewAdmission(1, AdmissionHold(time.Hour), AdmissionIdle(idle))
	sink := newMemSink()
	sink.delay = idle
	first := runAdmitted(t, a, sink, []string{"Dataplane"})
	first.subscriptions(1)
	second := runAdmitted(t, a, newMemSink(), []string{"Dataplane"})
	require.Eventually(t, func() bool { return a.Waiting() == 1 }, 10*time.Second, 5*time.Millisecond)
	for range 5 { // stored for 5 idle limits in all
		first.push("Dataplane", admissionMaxMsg*3/4, true)
		first.push("Dataplane", admissionMaxMsg*3/4, true)
		for range 2 {
			nextRequest(t, first.p, first.done)
		}
	}
	assert.Zero(t, a.Idled(), "storing bulk is this side's time")
	assert.False(t, second.subscribedWithin(idle/4))
	first.respond("Dataplane", 0, false)
	assert.True(t, second.subscribedWithin(10*time.Second), "the initial state arrived")
	assert.Zero(t, a.Idled())
}

// slowValidator takes d over each Validate call (a busy plugin).
type slowValidator struct{ d time.Duration }

func (v slowValidator) Validate(ctx context.Context, _ []*resource.Resource) error {
	select {
	case <-time.After(v.d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// A peer that keeps this side's check busy cheaply — small responses
// marked MorePending back to back, each with a resource to validate, three
// in flight, while this side checks each slowly — never leaves it waiting
// for a response, but moves nothing forward: the time those responses are
// checked counts as idle too, and the slot goes.
func TestAdmissionSmallResponsesCheckedSlowlyDoNotKeepTheSlot(t *testing.T) {
	const idle = 300 * time.Millisecond
	a := NewAdmission(1, AdmissionHold(time.Hour), AdmissionIdle(idle))
	first := runAdmittedChecking(t, a, newMemSink(), []string{"Dataplane"}, slowValidator{10 * time.Millisecond})
	first.subscriptions(1)
	second := runAdmitted(t, a, newMemSink(), []string{"Dataplane"})
	require.Eventually(t, func() bool { return a.Waiting() == 1 }, 10*time.Second, 5*time.Millisecond)
	first.floodUntilAdmitted(second, 100, 10*time.Second)
	assert.EqualValues(t, 1, a.Idled())
}

// What counts as bulk is measured against this side's own max message
// size, not the session's agreed one, which the peer lowers by announcing
// a small size: marked responses of three quarters of a 64 KiB agreed
// size, back to back and stored slowly, are small against this side's
// 4 MiB, and the time they are stored counts as idle.
func TestAdmissionBulkIsMeasuredAgainstThisSidesMaxMessageSize(t *testing.T) {
	const idle = 300 * time.Millisecond
	a := NewAdmission(1, AdmissionHold(time.Hour), AdmissionIdle(idle), AdmissionMaxMessageSize(4<<20))
	sink := newMemSink()
	sink.delay = 5 * time.Millisecond
	first := runAdmitted(t, a, sink, []string{"Dataplane"}) // agreed: admissionMaxMsg
	first.subscriptions(1)
	second := runAdmitted(t, a, newMemSink(), []string{"Dataplane"})
	require.Eventually(t, func() bool { return a.Waiting() == 1 }, 10*time.Second, 5*time.Millisecond)
	first.floodUntilAdmitted(second, admissionMaxMsg*3/4, 10*time.Second)
	assert.EqualValues(t, 1, a.Idled())
}
