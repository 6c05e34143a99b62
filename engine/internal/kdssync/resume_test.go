package kdssync

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
	"unsafe"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/kds-engine/kds-engine/engine/internal/insights"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// recordingEnd is a clientEnd that keeps a copy of every request sent.
type recordingEnd struct {
	clientEnd
	mu   *sync.Mutex
	reqs *[]*discovery.DeltaDiscoveryRequest
}

func (r recordingEnd) Send(req *discovery.DeltaDiscoveryRequest) error {
	r.mu.Lock()
	*r.reqs = append(*r.reqs, proto.Clone(req).(*discovery.DeltaDiscoveryRequest))
	r.mu.Unlock()
	return r.clientEnd.Send(req)
}

// heldAndServed fills ix with n resources of T at version "1" and returns a
// sink holding the same, plus what the test changes: "default/t-00010" is
// at version "2" on the server, "default/new" exists only there, and 50
// "default/gone-N" only in the sink.
func heldAndServed(t *testing.T, n int) (*Index, *memSink) {
	t.Helper()
	ix := NewIndex([]string{"T"})
	sink := newMemSink()
	for i := range n {
		r := res("T", "default", fmt.Sprintf("t-%05d", i), "1", 10)
		require.NoError(t, ix.Put(r))
		c := r.Clone()
		c.Zone = "zone-1"
		sink.res[c.Key()] = c
	}
	require.NoError(t, ix.Put(res("T", "default", "t-00010", "2", 10)))
	require.NoError(t, ix.Put(res("T", "default", "new", "1", 10)))
	for i := range 50 {
		r := res("T", "default", fmt.Sprintf("gone-%d", i), "1", 10)
		r.Zone = "zone-1"
		sink.res[r.Key()] = r
	}
	return ix, sink
}

// A subscription whose held versions do not fit one message goes in parts;
// the server decides nothing before the last one, so a resume still sends
// only what changed and removes only what is gone.
func TestResumeInPartsSendsOnlyChanges(t *testing.T) {
	const n, maxMsg = 6000, 64 << 10
	ix, sink := heldAndServed(t, n)
	ctx, cancel := context.WithCancel(context.Background())
	p := newPipe(ctx)
	var mu sync.Mutex
	var reqs []*discovery.DeltaDiscoveryRequest
	srv := NewServer(ix, WithServerMaxMessageSize(maxMsg))
	cli := NewClient([]string{"T"}, sink, rejectValidator{}, "global", "zone-1",
		WithClientMaxMessageSize(maxMsg), WithResumeParts(true))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = srv.Serve(ctx, serverEnd{p}, "zone-1") }()
	go func() { defer wg.Done(); _ = cli.Run(ctx, recordingEnd{clientEnd{p}, &mu, &reqs}) }()
	defer func() { cancel(); wg.Wait() }()

	want := map[string]string{}
	for name, e := range ix.types["T"].entries {
		want[name] = e.res.Version
	}
	require.Eventually(t, func() bool {
		got := versions(sink)
		return len(got) == len(want) && fmt.Sprint(got) == fmt.Sprint(want)
	}, 10*time.Second, 5*time.Millisecond, "the zone converges on the server's state")

	mu.Lock()
	subs := slices.DeleteFunc(slices.Clone(reqs), func(r *discovery.DeltaDiscoveryRequest) bool { return r.GetResponseNonce() != "" })
	mu.Unlock()
	require.GreaterOrEqual(t, len(subs), 3, "%d held versions of ~25 bytes need several 64 KiB requests", n+50)
	held := map[string]string{}
	for i, r := range subs {
		assert.LessOrEqual(t, proto.Size(r), maxMsg, "part %d fits the message size", i)
		assert.Equal(t, i == len(subs)-1, slices.Contains(r.GetResourceNamesSubscribe(), "*"), "only the last part subscribes (part %d)", i)
		for k, v := range r.GetInitialResourceVersions() {
			_, dup := held[k]
			assert.False(t, dup, "%s sent in two parts", k)
			held[k] = v
		}
	}
	assert.Len(t, held, n+50, "every held version was sent once")

	var puts, removed int
	empty := 0
	for _, r := range p.responses() {
		puts += len(r.GetResources())
		removed += len(r.GetRemovedResources())
		if len(r.GetResources()) == 0 && len(r.GetRemovedResources()) == 0 {
			empty++
		}
	}
	assert.Equal(t, 2, puts, "only the changed and the new resource are sent")
	assert.Equal(t, 50, removed, "only what the server does not have is removed")
	assert.GreaterOrEqual(t, empty, len(subs)-1, "each part but the last is answered with an empty response")
}

// Without the peer's consent to parts, a subscription that does not fit one
// request ends the session with an error that says what to do.
func TestResumeTooLargeForPeerWithoutParts(t *testing.T) {
	const maxMsg = 64 << 10
	ix, sink := heldAndServed(t, 6000)
	p := newPipe(t.Context())
	cli := NewClient([]string{"T"}, sink, rejectValidator{}, "global", "zone-1", WithClientMaxMessageSize(maxMsg))
	err := cli.Run(t.Context(), clientEnd{p})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "does not accept them in parts")
	assert.Contains(t, err.Error(), "--max-message-size")
	assert.Empty(t, p.reqs, "nothing was sent")
	assert.NotEmpty(t, ix.types["T"].entries)
}

// A part sent before the answer to the previous one was ACKed ends the
// session: the server keeps at most one unanswered part per type.
func TestResumePartBeforeAnswerEndsSession(t *testing.T) {
	ix := NewIndex([]string{"T"})
	p := newPipe(t.Context())
	part := &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), InitialResourceVersions: map[string]string{"a": "1"}}
	p.reqs <- part
	p.reqs <- proto.Clone(part).(*discovery.DeltaDiscoveryRequest)
	err := NewServer(ix).Serve(t.Context(), serverEnd{p}, "zone-1")
	require.ErrorIs(t, err, ErrProtocol)
	assert.Contains(t, err.Error(), "before the answer to the previous part was ACKed")
	resps := p.responses()
	require.Len(t, resps, 1, "the first part was answered")
	assert.Empty(t, resps[0].GetResources())
	assert.Empty(t, resps[0].GetRemovedResources())
}

// Parts are kept until the subscription, so together they may name at most
// what the server serves of the type plus MaxNamesPerRequest.
func TestResumePartsAreBounded(t *testing.T) {
	ix := NewIndex([]string{"T"})
	require.NoError(t, ix.Put(res("T", "", "served", "1", 1)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPipe(ctx)
	done := make(chan error, 1)
	go func() { done <- NewServer(ix).Serve(ctx, serverEnd{p}, "zone-1") }()
	part := func(from, n int) *discovery.DeltaDiscoveryRequest {
		v := make(map[string]string, n)
		for i := range n {
			v[fmt.Sprintf("n-%d", from+i)] = "1"
		}
		return &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), InitialResourceVersions: v}
	}
	p.reqs <- part(0, MaxNamesPerRequest/2)
	first := <-p.resps
	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResponseNonce: first.GetNonce()}
	p.reqs <- part(MaxNamesPerRequest/2, MaxNamesPerRequest/2+2)
	err := <-done
	require.ErrorIs(t, err, ErrProtocol)
	assert.Contains(t, err.Error(), fmt.Sprintf("more than %d held or refused resources", MaxNamesPerRequest+1))
}

// A resumed subscription keeps the index's own strings for names held at
// the served version, so a peer holding what is served costs no copies.
func TestResumeSharesTheIndexStrings(t *testing.T) {
	ix := NewIndex([]string{"T"})
	require.NoError(t, ix.Put(res("T", "", "a", "1", 1)))
	ss := &serverSession{Server: NewServer(ix), resuming: map[string]*resumeState{}}
	rs, err := ss.collect("T", &discovery.DeltaDiscoveryRequest{InitialResourceVersions: map[string]string{string([]byte("a")): string([]byte("1"))}}, nil)
	require.NoError(t, err)
	e := ix.types["T"].entries["a"]
	for n, v := range rs.held {
		assert.Same(t, unsafeStringData(e.res.Name), unsafeStringData(n))
		assert.Same(t, unsafeStringData(e.res.Version), unsafeStringData(v))
	}
}

func unsafeStringData(s string) *byte { return unsafe.StringData(s) }

// A peer holding every served name at another version (after this side's
// store was restored, all versions are new) costs only its versions
// against the held budget: the names are the index's. 70 000 such entries
// copy 70 000 bytes of versions, well within a 64 KiB session's 1 MiB
// budget, where copying names too (~1.1 MB) would end the session.
func TestResumeWithStaleVersionsCostsOnlyTheVersions(t *testing.T) {
	const n, maxMsg = 70_000, 64 << 10
	ix := NewIndex([]string{"T"})
	held := make(map[string]string, n)
	for i := range n {
		name := fmt.Sprintf("default/t-%06d", i)
		require.NoError(t, ix.Put(res("T", "default", name[len("default/"):], "1", 1)))
		held[name] = "0"
	}
	ss := &serverSession{Server: NewServer(ix), maxMsg: maxMsg, resuming: map[string]*resumeState{}}
	rs, err := ss.collect("T", &discovery.DeltaDiscoveryRequest{InitialResourceVersions: held}, nil)
	require.NoError(t, err)
	assert.EqualValues(t, n, rs.bytes, "one byte of version per entry")
	e := ix.types["T"].entries["default/t-000007"]
	for name := range rs.held {
		if name == e.res.Name {
			assert.Same(t, unsafeStringData(e.res.Name), unsafeStringData(name))
		}
	}
}

// Parts are kept until the subscription, so what they copy is bounded in
// bytes too: a peer that sends one held name per part with a version the
// size of a message ends the session once the session's held budget is
// used up, instead of making the server keep MaxNamesPerRequest of them.
func TestResumePartsAreBoundedInBytes(t *testing.T) {
	const maxMsg = 64 << 10
	ix := NewIndex([]string{"T"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPipe(ctx)
	done := make(chan error, 1)
	go func() { done <- NewServer(ix, WithServerMaxMessageSize(maxMsg)).Serve(ctx, serverEnd{p}, "zone-1") }()
	version := string(make([]byte, maxMsg-1<<10))
	for i := range 2 * HeldBudgetMessages {
		p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), InitialResourceVersions: map[string]string{fmt.Sprintf("n-%d", i): version}}
		select {
		case resp := <-p.resps:
			p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResponseNonce: resp.GetNonce()}
		case err := <-done:
			require.ErrorIs(t, err, ErrProtocol)
			assert.Contains(t, err.Error(), fmt.Sprintf("more than %d", HeldBudgetMessages*maxMsg))
			assert.Equal(t, HeldBudgetMessages, i, "the parts that fit the budget were answered")
			return
		}
	}
	t.Fatalf("%d parts of %d-byte versions were all kept", 2*HeldBudgetMessages, len(version))
}

// The refusals a part carries are kept as names and versions: the reasons
// a peer attaches cost nothing until the subscription.
func TestResumePartsKeepRefusalsSlim(t *testing.T) {
	ix := NewIndex([]string{"T"})
	ss := &serverSession{Server: NewServer(ix), maxMsg: DefaultMaxMessageSize, resuming: map[string]*resumeState{}}
	rej := &kdsv1.Rejection{Resources: []*kdsv1.RejectedResource{{Name: "a", Version: "1", Errors: []*kdsv1.FieldError{{Field: "spec", Message: string(make([]byte, 1<<20))}}}}}
	rs, err := ss.collect("T", &discovery.DeltaDiscoveryRequest{}, rej)
	require.NoError(t, err)
	require.Len(t, rs.rejected, 1)
	assert.Equal(t, "a", rs.rejected[0].GetName())
	assert.Equal(t, "1", rs.rejected[0].GetVersion())
	assert.Empty(t, rs.rejected[0].GetErrors(), "the reasons are not kept")
	assert.Equal(t, int64(2), ss.heldBytes)
}

// The next part says what the client holds once the response that
// triggered it is applied: a name that response removed is left out and a
// name it updated goes at its new version, so the server never takes the
// client to hold what it dropped.
func TestResumeNextPartAfterTheAnswerIsApplied(t *testing.T) {
	const maxMsg = 64 << 10
	_, sink := heldAndServed(t, 6000)
	p := newPipe(t.Context())
	cli := NewClient([]string{"T"}, sink, rejectValidator{}, "global", "zone-1",
		WithClientMaxMessageSize(maxMsg), WithResumeParts(true))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- cli.Run(ctx, clientEnd{p}) }()
	defer func() { cancel(); <-done }()

	first := <-p.reqs
	require.NotContains(t, first.GetResourceNamesSubscribe(), "*", "6050 held versions do not fit one 64 KiB request")
	var rest []string
	for name := range versions(sink) {
		if _, sent := first.GetInitialResourceVersions()[name]; !sent {
			rest = append(rest, name)
		}
	}
	slices.Sort(rest)
	kept := rest[0]
	mesh, name := splitXDSName(kept)
	enc, err := Encode(res("T", mesh, name, "9", 10))
	require.NoError(t, err)
	p.resps <- &discovery.DeltaDiscoveryResponse{TypeUrl: TypeURL("T"), Nonce: "p1", Resources: []*discovery.Resource{enc}, RemovedResources: rest[1:]}
	ack := <-p.reqs
	require.Equal(t, "p1", ack.GetResponseNonce())
	next := <-p.reqs
	assert.Empty(t, next.GetResponseNonce())
	assert.Contains(t, next.GetResourceNamesSubscribe(), "*", "nothing else is held: the next part is the last")
	assert.Equal(t, map[string]string{kept: "9"}, next.GetInitialResourceVersions())
}

// The answers to parts count as responses sent and ACKed on both ends, so
// the two ends' figures agree once a resume in parts has settled.
func TestResumeInPartsCountsAgree(t *testing.T) {
	const maxMsg = 64 << 10
	ix, sink := heldAndServed(t, 6000)
	h := start(t, ix, sink, []string{"T"}, []ServerOption{WithServerMaxMessageSize(maxMsg)},
		WithClientMaxMessageSize(maxMsg), WithResumeParts(true))
	h.waitFor(func() bool { return len(versions(sink)) == 6001 }, "the zone converges")
	h.waitFor(func() bool {
		srv, cli := h.srvType("T"), h.cliType("T")
		return srv.ResponsesSent == srv.ResponsesACKed && srv.ResponsesACKed == cli.ResponsesACKed
	}, "every response sent is ACKed, and both ends count the same")
	assert.GreaterOrEqual(t, h.srvType("T").ResponsesSent, uint64(3), "the answers to the parts are counted")
}

// An answer to a part applies nothing and carries no system version, so the
// version last applied (of an earlier session) stays shown until the type
// is served.
func TestResumePartAnswerKeepsLastVersionApplied(t *testing.T) {
	const maxMsg = 64 << 10
	_, sink := heldAndServed(t, 6000)
	ins := insights.NewRegistry()
	ins.UpdateType("global", "T", func(ts *insights.TypeState) { ts.LastVersionApplied = "41" })
	p := newPipe(t.Context())
	cli := NewClient([]string{"T"}, sink, rejectValidator{}, "global", "zone-1",
		WithClientMaxMessageSize(maxMsg), WithResumeParts(true), WithClientInsights(ins))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- cli.Run(ctx, clientEnd{p}) }()
	defer func() { cancel(); <-done }()

	first := <-p.reqs
	require.NotContains(t, first.GetResourceNamesSubscribe(), "*")
	p.resps <- &discovery.DeltaDiscoveryResponse{TypeUrl: TypeURL("T"), Nonce: "p1"}
	require.Equal(t, "p1", (<-p.reqs).GetResponseNonce())
	c, _ := ins.Get("global")
	// Recorded before the ACK is sent.
	assert.Equal(t, "41", c.Types["T"].LastVersionApplied)
}

// A server that does not serve the type refuses each part like any request
// for it, and the client goes on to the last part: the session stays up and
// the client shows why the type is not served.
func TestResumeInPartsToServerWithoutTheType(t *testing.T) {
	const maxMsg = 64 << 10
	_, sink := heldAndServed(t, 6000)
	ix := NewIndex([]string{"Other"})
	ctx, cancel := context.WithCancel(context.Background())
	p := newPipe(ctx)
	var mu sync.Mutex
	var reqs []*discovery.DeltaDiscoveryRequest
	cliIns := insights.NewRegistry()
	srv := NewServer(ix, WithServerMaxMessageSize(maxMsg))
	cli := NewClient([]string{"T"}, sink, rejectValidator{}, "global", "zone-1",
		WithClientMaxMessageSize(maxMsg), WithResumeParts(true), WithClientInsights(cliIns))
	errs := make(chan error, 2)
	go func() { errs <- srv.Serve(ctx, serverEnd{p}, "zone-1") }()
	go func() { errs <- cli.Run(ctx, recordingEnd{clientEnd{p}, &mu, &reqs}) }()

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.ContainsFunc(reqs, func(r *discovery.DeltaDiscoveryRequest) bool {
			return slices.Contains(r.GetResourceNamesSubscribe(), "*")
		})
	}, 10*time.Second, 5*time.Millisecond, "every part was answered and the last one sent")
	require.Eventually(t, func() bool { return len(p.responses()) >= 3 }, 10*time.Second, 5*time.Millisecond)
	for _, r := range p.responses() {
		assert.NotEmpty(t, r.GetResourceErrors(), "each part is refused")
	}
	c, _ := cliIns.Get("global")
	assert.True(t, c.Types["T"].Unknown)
	assert.Len(t, versions(sink), 6050, "nothing removed")
	select {
	case err := <-errs:
		t.Fatalf("the session ended: %v", err)
	default:
	}
	cancel()
	<-errs
	<-errs
}
