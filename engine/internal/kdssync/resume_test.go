package kdssync

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/kds-engine/kds-engine/engine/internal/insights"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

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
	go func() { defer wg.Done(); _ = cli.Run(ctx, recordingClient{clientEnd{p}, &mu, &reqs}) }()
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
	partAnswers := 0
	for _, r := range p.responses() {
		puts += len(r.GetResources())
		removed += len(r.GetRemovedResources())
		if len(r.GetResources()) == 0 {
			partAnswers++
		}
	}
	assert.Equal(t, 2, puts, "only the changed and the new resource are sent")
	assert.Equal(t, 50, removed, "only what the server does not have is removed")
	assert.GreaterOrEqual(t, partAnswers, len(subs)-1, "each part but the last is answered without resources")
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
	require.NoError(t, ix.Put(res("T", "", "a", "1", 1)))
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

// What parts keep until the subscription — held names this side serves
// and refusals — may name at most what the server serves of the type plus
// MaxNamesPerRequest; held names it does not serve are removed by each
// part's answer and not kept.
func TestResumePartsAreBounded(t *testing.T) {
	ix := NewIndex([]string{"T"})
	require.NoError(t, ix.Put(res("T", "", "served", "1", 1)))
	p, done := serveSession(t, ix)
	part := func(from, n int) *discovery.DeltaDiscoveryRequest {
		rej := make([]*kdsv1.RejectedResource, n)
		for i := range rej {
			rej[i] = &kdsv1.RejectedResource{Name: fmt.Sprintf("n-%d", from+i), Version: "1"}
		}
		st, err := rejectionStatus(0, "refused earlier", rej)
		require.NoError(t, err)
		return &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), InitialResourceVersions: map[string]string{"served": "1"}, ErrorDetail: st}
	}
	p.reqs <- part(0, MaxNamesPerRequest/2)
	first := <-p.resps
	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResponseNonce: first.GetNonce()}
	p.reqs <- part(MaxNamesPerRequest/2, MaxNamesPerRequest/2+2)
	err := <-done
	require.ErrorIs(t, err, ErrProtocol)
	assert.Contains(t, err.Error(), fmt.Sprintf("more than %d held or refused resources", MaxNamesPerRequest+1))
}

// A zone that was away while global deleted more resources of a type than
// one request may name still resumes: each part's answer removes the held
// names the server does not serve, so the server keeps none of them, and
// nothing it does serve is sent again.
func TestResumeAfterMassDeleteRemovesInParts(t *testing.T) {
	const gone = MaxNamesPerRequest + 50_000
	ix, sink := heldAndServed(t, 100)
	for i := range gone {
		r := res("T", "default", fmt.Sprintf("deleted-%07d", i), "1", 1)
		r.Zone = "zone-1"
		sink.res[r.Key()] = r
	}
	h := start(t, ix, sink, []string{"T"}, nil, WithResumeParts(true))
	want := map[string]string{}
	for name, e := range ix.types["T"].entries {
		want[name] = e.res.Version
	}
	require.Eventually(t, func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return len(sink.res) == len(want)
	}, time.Minute, 10*time.Millisecond, "the zone converges: every deleted resource removed")
	assert.Equal(t, want, versions(sink))
	var puts int
	for _, r := range h.pipe.responses() {
		puts += len(r.GetResources())
	}
	assert.Equal(t, 2, puts, "only the changed and the new resource are sent")
}

// A resumed subscription keeps the index's own strings for names held at
// the served version, so a peer holding what is served costs no copies.
func TestResumeSharesTheIndexStrings(t *testing.T) {
	ix := NewIndex([]string{"T"})
	require.NoError(t, ix.Put(res("T", "", "a", "1", 1)))
	ss := &serverSession{Server: NewServer(ix), resuming: map[string]*resumeState{}}
	rs, _, err := ss.collect("T", &discovery.DeltaDiscoveryRequest{InitialResourceVersions: map[string]string{string([]byte("a")): string([]byte("1"))}}, nil, false)
	require.NoError(t, err)
	e := ix.types["T"].entries["a"]
	for n, v := range rs.held {
		assert.Same(t, unsafeStringData(e.res.Name), unsafeStringData(n))
		assert.Same(t, unsafeStringData(e.res.Version), unsafeStringData(v))
	}
}

func unsafeStringData(s string) *byte { return unsafe.StringData(s) }

// serveSession runs a server on ix for peer zone-1 over a pipe until the
// test ends (then it is stopped and joined); done receives Serve's result
// once.
func serveSession(t *testing.T, ix *Index, opts ...ServerOption) (*pipe, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := newPipe(ctx)
	done := make(chan error, 1)
	joined := make(chan struct{})
	go func() { defer close(joined); done <- NewServer(ix, opts...).Serve(ctx, serverEnd{p}, "zone-1") }()
	t.Cleanup(func() { cancel(); <-joined })
	return p, done
}

// A peer holding every served name at another version (after this side's
// store was restored, all versions are new) costs only its versions
// against the held budget: the names are the index's. 70 000 such entries
// copy 70 000 bytes of versions, not the ~1.2 MB names and versions would
// (so the budget's 64 MiB covers millions of them).
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
	rs, _, err := ss.collect("T", &discovery.DeltaDiscoveryRequest{InitialResourceVersions: held}, nil, false)
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
// size of a message, for one type or several, ends the session once the
// session's held budget is used up, instead of making the server keep MaxNamesPerRequest of them.
// (The budget is never below HeldBudgetMessages default-size messages, so
// that a small max message size does not end an honest resume.)
func TestResumePartsAreBoundedInBytes(t *testing.T) {
	const maxMsg = DefaultMaxMessageSize
	// Two types take turns: the budget is the session's, not each type's.
	types := []string{"T", "U"}
	ix := NewIndex(types)
	// Served names held at another version: the version is what is kept.
	// (Names the server does not serve are removed by each part's answer
	// and not kept at all.)
	for i := range 2 * HeldBudgetMessages {
		require.NoError(t, ix.Put(res(types[i%2], "", fmt.Sprintf("n-%d", i), "1", 1)))
	}
	p, done := serveSession(t, ix)
	version := string(make([]byte, maxMsg-64<<10))
	for i := range 2 * HeldBudgetMessages {
		url := TypeURL(types[i%2])
		p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: url, InitialResourceVersions: map[string]string{fmt.Sprintf("n-%d", i): version}}
		select {
		case resp := <-p.resps:
			p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: url, ResponseNonce: resp.GetNonce()}
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
	rs, _, err := ss.collect("T", &discovery.DeltaDiscoveryRequest{}, rej, true)
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
	go func() { errs <- cli.Run(ctx, recordingClient{clientEnd{p}, &mu, &reqs}) }()

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

// A NACK of a part's empty answer counts as a NACK (not an ACK), refuses
// nothing and lets the next part follow.
func TestResumePartAnswerNACKed(t *testing.T) {
	ix := NewIndex([]string{"T"})
	require.NoError(t, ix.Put(res("T", "", "a", "1", 1)))
	ins := insights.NewRegistry()
	p, _ := serveSession(t, ix, WithServerInsights(ins))

	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), InitialResourceVersions: map[string]string{"a": "1"}}
	answer := <-p.resps
	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResponseNonce: answer.GetNonce(),
		ErrorDetail: &status.Status{Code: int32(codes.InvalidArgument), Message: "no"}}
	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}}
	first := <-p.resps
	assert.Empty(t, first.GetResources(), "the part said a is held at the served version")
	c, _ := ins.Get("zone-1")
	assert.Equal(t, uint64(1), c.Types["T"].ResponsesNACKed)
	assert.Equal(t, uint64(0), c.Types["T"].ResponsesACKed)
	assert.Equal(t, "no", c.Types["T"].LastNACKError)
}

// With a small max message size the held budget stays that of default-size
// messages, and the names a part's answer removes are released once it is
// answered: a resume whose held names the server no longer serves take
// more than 16 small messages is served (each of those names removed).
func TestResumeHeldBudgetWithSmallMessages(t *testing.T) {
	const maxMsg = 64 << 10
	ix := NewIndex([]string{"T"})
	p, done := serveSession(t, ix, WithServerMaxMessageSize(maxMsg))
	pad := strings.Repeat("v", 1000)
	var gone, removed int
	for part := range 20 {
		v := make(map[string]string, 60)
		for i := range 60 {
			v[fmt.Sprintf("gone-%d-%d", part, i)] = pad
		}
		gone += len(v)
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), InitialResourceVersions: v}
		if part == 19 {
			req.ResourceNamesSubscribe = []string{"*"}
		}
		p.reqs <- req
		select {
		case resp := <-p.resps:
			removed += len(resp.GetRemovedResources())
			if part < 19 {
				p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResponseNonce: resp.GetNonce()}
				continue
			}
			for removed < gone {
				p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResponseNonce: resp.GetNonce()}
				resp = <-p.resps
				removed += len(resp.GetRemovedResources())
			}
			assert.Equal(t, gone, removed)
		case err := <-done:
			t.Fatalf("the session ended after %d parts of %d bytes: %v", part, 60*1010, err)
		}
	}
}

// The versions refused in earlier sessions go with the parts (the first
// ones) and the server honours them: a resume in parts does not send a
// refused version again.
func TestResumeInPartsCarriesEarlierRefusals(t *testing.T) {
	const maxMsg = 64 << 10
	ix, sink := heldAndServed(t, 6000)
	require.NoError(t, ix.Put(res("T", "default", "bad-new", "1", 10)))
	rej := NewRejections()
	rej.update("T", []*kdsv1.RejectedResource{{Name: "default/bad-new", Version: "1", Errors: []*kdsv1.FieldError{{Field: "spec.x", Message: "must not be bad"}}}}, nil)
	h := start(t, ix, sink, []string{"T"}, []ServerOption{WithServerMaxMessageSize(maxMsg)},
		WithClientMaxMessageSize(maxMsg), WithResumeParts(true), WithRejections(rej))
	h.waitFor(func() bool {
		v := versions(sink)
		return len(v) == 6001 && v["default/t-00010"] == "2" && v["default/new"] == "1"
	}, "everything else converges")
	h.waitFor(func() bool {
		srv := h.srvType("T")
		return srv.ResponsesSent >= 3 && srv.ResponsesSent == srv.ResponsesACKed+srv.ResponsesNACKed
	}, "every response answered")
	for _, r := range h.pipe.responses() {
		for _, x := range r.GetResources() {
			assert.NotEqual(t, "default/bad-new", x.GetName(), "the refused version is not sent again")
		}
	}
	assert.Equal(t, 1, h.srvType("T").RejectedCount, "the server knows the refusal from the parts")
}

// A peer may subscribe again in parts to a type it is being served: the
// answers to the parts are told apart from the responses in the window, and
// the server then serves from what the parts and the subscription say.
func TestResumeInPartsResubscription(t *testing.T) {
	ix := NewIndex([]string{"T"})
	require.NoError(t, ix.Put(res("T", "", "a", "1", 1)))
	require.NoError(t, ix.Put(res("T", "", "b", "1", 1)))
	p, done := serveSession(t, ix)
	ack := func(r *discovery.DeltaDiscoveryResponse) {
		p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResponseNonce: r.GetNonce()}
	}

	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}}
	first := <-p.resps
	assert.Len(t, first.GetResources(), 2)
	ack(first)
	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), InitialResourceVersions: map[string]string{"a": "1"}}
	part := <-p.resps
	assert.Empty(t, part.GetResources())
	ack(part)
	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}, InitialResourceVersions: map[string]string{"b": "1"}}
	select {
	case resp := <-p.resps:
		assert.Empty(t, resp.GetResources(), "a and b are held at the served versions: nothing is sent again")
		assert.Empty(t, resp.GetRemovedResources())
	case err := <-done:
		t.Fatalf("the session ended: %v", err)
	}
}

// The parts end with the subscription they complete: a later subscription
// starts from what it says alone, and a late ACK of a part's answer is
// ignored.
func TestResumePartsEndWithTheirSubscription(t *testing.T) {
	ix := NewIndex([]string{"T"})
	require.NoError(t, ix.Put(res("T", "", "a", "1", 1)))
	p, done := serveSession(t, ix)
	ack := func(r *discovery.DeltaDiscoveryResponse) {
		p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResponseNonce: r.GetNonce()}
	}

	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), InitialResourceVersions: map[string]string{"a": "1"}}
	part := <-p.resps
	ack(part)
	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}}
	first := <-p.resps
	assert.Empty(t, first.GetResources(), "the part said a is held")
	ack(first)
	ack(part) // late: ignored
	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}}
	select {
	case again := <-p.resps:
		require.Len(t, again.GetResources(), 1, "the new subscription holds nothing: a is sent")
		assert.Equal(t, "a", again.GetResources()[0].GetName())
	case err := <-done:
		t.Fatalf("the session ended: %v", err)
	}
}

// The subscription's "*" counts among the names a server accepts in one
// request, so held versions that fill MaxNamesPerRequest on their own go
// in parts even when their bytes fit one message.
func TestResumeNameLimitCountsTheSubscription(t *testing.T) {
	sink := newMemSink()
	for i := range MaxNamesPerRequest {
		r := res("T", "", fmt.Sprintf("n%d", i), "1", 0)
		r.Zone = "zone-1"
		sink.res[r.Key()] = r
	}
	p := newPipe(t.Context())
	cli := NewClient([]string{"T"}, sink, rejectValidator{}, "global", "zone-1",
		WithClientMaxMessageSize(64<<20), WithResumeParts(true))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- cli.Run(ctx, clientEnd{p}) }()
	defer func() { cancel(); <-done }()
	first := <-p.reqs
	rej, err := RejectionOf(first.GetErrorDetail())
	require.NoError(t, err)
	assert.LessOrEqual(t, requestNames(first, rej), MaxNamesPerRequest, "what a server accepts")
}

// A subscription that arrives before the answer to the previous part was
// ACKed ends the session with an error that says it was the subscription,
// and what counts as a part: a peer that unsubscribed (a request without
// "*" and without a nonce) and then subscribed again without answering
// was told that a subscription part had arrived.
func TestSubscriptionBeforePartAnswerEndsSession(t *testing.T) {
	ix := NewIndex([]string{"T"})
	require.NoError(t, ix.Put(res("T", "", "a", "1", 1)))
	p := newPipe(t.Context())
	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesUnsubscribe: []string{"*"}}
	p.reqs <- &discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}}
	err := NewServer(ix).Serve(t.Context(), serverEnd{p}, "zone-1")
	require.ErrorIs(t, err, ErrProtocol)
	assert.Contains(t, err.Error(), `the T subscription arrived before the answer to the previous part of its held versions (a request without "*" and without a nonce, such as an unsubscription) was ACKed`)
}
