package kdssync

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// verboseRejecter refuses every resource with the most field errors, each
// of the longest text, that a rejected entry carries.
type verboseRejecter struct{}

func (verboseRejecter) Validate(_ context.Context, rs []*resource.Resource) error {
	inv := make([]resource.InvalidResource, 0, len(rs))
	for _, r := range rs {
		var errs []resource.FieldError
		for i := range maxFieldErrors {
			errs = append(errs, resource.FieldError{Field: fmt.Sprintf("spec.f%d", i), Message: strings.Repeat("m", maxErrorText)})
		}
		inv = append(inv, resource.InvalidResource{Key: r.Key(), Errors: errs})
	}
	return &resource.ValidationError{Invalid: inv}
}

// sizedClientEnd refuses to send a request over max bytes, as the mux does.
type sizedClientEnd struct {
	clientEnd
	max int
}

func (c sizedClientEnd) Send(r *discovery.DeltaDiscoveryRequest) error {
	if n := proto.Size(r); n > c.max {
		return fmt.Errorf("message too large: %d bytes, the limit is %d", n, c.max)
	}
	return c.clientEnd.Send(r)
}

// A response whose every resource is refused with long reasons still gets
// its NACK through a small max message size: the reasons are cut to fit,
// every refused name and version still reaches the server (its view is
// what the peer applied), and the session goes on.
func TestLargeRejectionListFitsTheMessageSize(t *testing.T) {
	const maxMsg = 64 << 10
	ix := NewIndex([]string{"T"})
	for i := range 300 {
		require.NoError(t, ix.Put(res("T", "default", fmt.Sprintf("t-%04d", i), "1", 50)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPipe(ctx)
	srvIns, cliIns := insights.NewRegistry(), insights.NewRegistry()
	srv := NewServer(ix, WithServerInsights(srvIns), WithServerMaxMessageSize(maxMsg))
	cli := NewClient([]string{"T"}, newMemSink(), verboseRejecter{}, "global", "zone-1",
		WithClientInsights(cliIns), WithClientMaxMessageSize(maxMsg))
	srvDone, cliDone := make(chan error, 1), make(chan error, 1)
	go func() { srvDone <- srv.Serve(ctx, serverEnd{p}, "zone-1") }()
	go func() { cliDone <- cli.Run(ctx, sizedClientEnd{clientEnd{p}, maxMsg}) }()

	srvType := func() insights.TypeState { c, _ := srvIns.Get("zone-1"); return c.Types["T"] }
	require.Eventually(t, func() bool {
		select {
		case err := <-cliDone:
			require.FailNow(t, "the client's session ended", "%v", err)
		default:
		}
		return srvType().RejectedCount == 300
	}, 10e9, 5e6, "every refusal reaches the server")
	st := srvType()
	assert.Zero(t, st.ResourcesHeld, "the server records nothing as held")
	assert.Contains(t, st.LastNACKError, "resources refused")
	assert.Contains(t, st.LastNACKError, "are not sent, to fit the NACK")
	var withReasons, without int
	for _, r := range st.Rejected {
		require.NotEmpty(t, r.Errors, "%s is shown with a reason, or a note that it was not sent", r.Name)
		if r.Errors[0] == reasonNotSent {
			without++
		} else {
			withReasons++
		}
	}
	assert.Positive(t, withReasons, "reasons that fit are kept")
	assert.Positive(t, without, "the others are shown as not sent")

	// Nothing is resent: the server knows what was refused.
	before := len(p.responses())
	require.NoError(t, ix.Put(res("T", "default", "t-0000", "2", 50)))
	require.Eventually(t, func() bool { return srvType().RejectedCount == 300 && srvType().ResponsesNACKed >= 2 }, 10e9, 5e6)
	for _, r := range p.responses()[before:] {
		for _, x := range r.Resources {
			assert.Equal(t, "default/t-0000", x.Name, "only the changed resource is sent again")
		}
	}
	cancel()
	<-srvDone
	<-cliDone
}

func TestFitRejections(t *testing.T) {
	long := []resource.FieldError{{Field: "spec.a", Message: strings.Repeat("m", 400)}}
	var rs []*kdsv1.RejectedResource
	for i := range 10 {
		rs = append(rs, rejectedEntry(fmt.Sprintf("m/r-%d", i), "v1", false, long))
	}
	size := func(rs []*kdsv1.RejectedResource) int { return proto.Size(&kdsv1.Rejection{Resources: rs}) }
	full := size(rs)

	out, cut := fitRejections(rs, full)
	assert.Zero(t, cut)
	assert.Equal(t, rs, out, "what fits is sent as it is")

	out, cut = fitRejections(rs, full/2)
	assert.LessOrEqual(t, size(out), full/2)
	assert.Equal(t, 6, cut, "only as many lose their reasons as needed (five halve the size, plus what the slim entries take), from the last")
	assert.NotEmpty(t, out[0].GetErrors(), "the first keeps its reasons")
	assert.Empty(t, out[9].GetErrors())
	assert.NotEmpty(t, rs[9].GetErrors(), "the input is not modified")

	// The first keeps as many of its reasons as fit.
	var many []resource.FieldError
	for i := range 8 {
		many = append(many, resource.FieldError{Field: fmt.Sprintf("spec.f%d", i), Message: strings.Repeat("m", 100)})
	}
	one := []*kdsv1.RejectedResource{rejectedEntry("m/r", "v1", false, many), rejectedEntry("m/s", "v1", false, long)}
	out, cut = fitRejections(one, 400)
	assert.Equal(t, 2, cut)
	assert.LessOrEqual(t, size(out), 400)
	assert.Len(t, out[0].GetErrors(), 3, "three of the first's reasons fit next to the other, slim")
	assert.Empty(t, out[1].GetErrors())
	assert.Len(t, one[0].GetErrors(), 8, "the input is not modified")

	out, cut = fitRejections(rs, 100)
	assert.Equal(t, 10, cut, "when even one reason does not fit, none is sent")
	require.Len(t, out, 10, "no refusal is dropped")
	for i, r := range out {
		assert.Equal(t, rs[i].GetName(), r.GetName())
		assert.Equal(t, "v1", r.GetVersion())
	}
}

// A NACK takes at most the size of the response it answers and a little
// more, whatever its reasons take: small responses refused with the
// longest reasons get NACKs about their own size, each naming every
// refused resource and version, and a large one still fits one message.
func TestNACKStaysWithinItsResponse(t *testing.T) {
	const maxMsg = 256 << 10
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPipe(ctx)
	cli := NewClient([]string{"T"}, newMemSink(), verboseRejecter{}, "global", "zone-1", WithClientMaxMessageSize(maxMsg))
	done := make(chan error, 1)
	go func() { done <- cli.Run(ctx, clientEnd{p}) }()
	defer func() { cancel(); <-done }()
	next := func() *discovery.DeltaDiscoveryRequest { t.Helper(); return nextRequest(t, p, done) }
	require.Empty(t, next().GetResponseNonce(), "the subscription")
	for i, count := range []int{1, 5, 60, 2000} {
		resp := &discovery.DeltaDiscoveryResponse{TypeUrl: TypeURL("T"), Nonce: fmt.Sprint(i + 1)}
		for j := range count {
			w, err := Encode(res("T", "default", fmt.Sprintf("r%d-%04d", i, j), "1", 10))
			require.NoError(t, err)
			resp.Resources = append(resp.Resources, w)
		}
		p.resps <- resp
		nack := next()
		require.Equal(t, resp.GetNonce(), nack.GetResponseNonce())
		limit := min(proto.Size(resp)+2<<10, maxMsg)
		assert.LessOrEqual(t, proto.Size(nack), limit, "%d resources: the NACK stays within its response's size and 2 KiB", count)
		rej, err := RejectionOf(nack.GetErrorDetail())
		require.NoError(t, err)
		require.Len(t, rej.GetResources(), count, "every refused resource is named")
		for j, r := range rej.GetResources() {
			assert.Equal(t, fmt.Sprintf("default/r%d-%04d", i, j), r.GetName())
			assert.Equal(t, "1", r.GetVersion())
		}
		assert.NotEmpty(t, rej.GetResources()[0].GetErrors(), "%d resources (response %d bytes, NACK %d): the first keeps its reasons while anything else gives way", count, proto.Size(resp), proto.Size(nack))
		assert.LessOrEqual(t, len(nack.GetErrorDetail().GetMessage()), maxErrorText+len("…"))
	}
}

// BenchmarkRejectionLimit measures what sizing a NACK by its response
// costs (rejectionLimit: proto.Size of the decoded response) against
// decoding that response from the wire, in the same loop: a 4 MiB
// response of 20,000 resources.
func BenchmarkRejectionLimit(b *testing.B) {
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: TypeURL("T"), Nonce: "1"}
	for i := range 20000 {
		w, err := Encode(res("T", "default", fmt.Sprintf("r-%05d", i), "1", 120))
		require.NoError(b, err)
		resp.Resources = append(resp.Resources, w)
	}
	wire, err := proto.Marshal(resp)
	require.NoError(b, err)
	var decode, limit time.Duration
	for b.Loop() {
		t0 := time.Now()
		var r discovery.DeltaDiscoveryResponse
		if err := proto.Unmarshal(wire, &r); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if rejectionLimit(&r, DefaultMaxMessageSize) <= 0 {
			b.Fatal("no limit")
		}
		decode, limit = decode+t1.Sub(t0), limit+time.Since(t1)
	}
	b.ReportMetric(float64(len(wire)), "response-bytes")
	b.ReportMetric(float64(limit)/float64(decode), "limit/decode")
}

// refuseWith refuses every resource with errs.
type refuseWith []resource.FieldError

func (errs refuseWith) Validate(_ context.Context, rs []*resource.Resource) error {
	inv := make([]resource.InvalidResource, 0, len(rs))
	for _, r := range rs {
		inv = append(inv, resource.InvalidResource{Key: r.Key(), Errors: errs})
	}
	return &resource.ValidationError{Invalid: inv}
}

// answerTo runs a client of type T with validator v, hands it resp once it
// has subscribed, and returns its answer, or the error that ended it.
func answerTo(t *testing.T, v Validator, resp *discovery.DeltaDiscoveryResponse) (*discovery.DeltaDiscoveryRequest, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newPipe(ctx)
	cli := NewClient([]string{"T"}, newMemSink(), v, "global", "zone-1", WithClientMaxMessageSize(256<<10))
	var runErr error
	ended := make(chan struct{})
	go func() { defer close(ended); runErr = cli.Run(ctx, clientEnd{p}) }()
	defer func() { cancel(); <-ended }()
	for i := range 2 {
		select {
		case r := <-p.reqs:
			if i == 0 {
				require.Empty(t, r.GetResponseNonce(), "the subscription")
				p.resps <- resp
				continue
			}
			return r, nil
		case <-ended:
			return nil, runErr
		case <-time.After(10 * time.Second):
			t.Fatal("no request")
		}
	}
	return nil, nil
}

// responseOf is a response of type T carrying resources of the wire names
// given (mesh-scoped), at version 1.
func responseOf(t *testing.T, wireNames ...string) *discovery.DeltaDiscoveryResponse {
	t.Helper()
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: TypeURL("T"), Nonce: "1"}
	for _, n := range wireNames {
		mesh, name := splitXDSName(n)
		w, err := Encode(res("T", mesh, name, "1", 4))
		require.NoError(t, err)
		resp.Resources = append(resp.Resources, w)
	}
	return resp
}

// A reason whose text is not UTF-8 (a validator's or a plugin's message
// quoting bytes of the refused spec) does not keep the NACK from being
// encoded: the refusal goes out with the bad bytes replaced, and the
// session goes on. Encoding the rejection list failed on it, which ended
// the session, and every reconnect met the same resource again.
func TestNACKReasonNotUTF8(t *testing.T) {
	nack, err := answerTo(t, refuseWith{{Field: "spec.k\xff", Message: "value \"\xfe\xfd\" is not allowed"}}, responseOf(t, "default/a"))
	require.NoError(t, err, "the client's session goes on")
	rej, err := RejectionOf(nack.GetErrorDetail())
	require.NoError(t, err)
	require.Len(t, rej.GetResources(), 1)
	r := rej.GetResources()[0]
	assert.Equal(t, "default/a", r.GetName())
	require.Len(t, r.GetErrors(), 1)
	assert.Equal(t, "spec.k\uFFFD", r.GetErrors()[0].GetField())
	assert.Equal(t, "value \"\uFFFD\" is not allowed", r.GetErrors()[0].GetMessage())
	assert.True(t, utf8.ValidString(nack.GetErrorDetail().GetMessage()))
	assert.Contains(t, nack.GetErrorDetail().GetMessage(), "is not allowed")
}

// The NACK's message (cut at maxErrorText bytes) shows the first refused
// resource's reason even when its name is as long as names get (a mesh and
// a name of validate.MaxNameLength each): the name is shortened there, and
// carried whole in the rejection list. The message showed the name and
// nothing of why ("T mmm…m re…").
func TestNACKMessageShowsTheReasonPastALongName(t *testing.T) {
	long := strings.Repeat("m", 253) + "/" + strings.Repeat("n", 252)
	why := refuseWith{{Field: "spec.port", Message: "must be below 65536, got 70000"}}
	for _, names := range [][]string{{long + "a"}, {long + "a", long + "b", long + "c"}} {
		nack, err := answerTo(t, why, responseOf(t, names...))
		require.NoError(t, err)
		msg := nack.GetErrorDetail().GetMessage()
		assert.LessOrEqual(t, len(msg), maxErrorText+len("…"))
		assert.Contains(t, msg, "spec.port: must be below 65536, got 70000", "%d refused", len(names))
		assert.Contains(t, msg, long[:40], "the start of the name")
		rej, err := RejectionOf(nack.GetErrorDetail())
		require.NoError(t, err)
		for i, r := range rej.GetResources() {
			assert.Equal(t, names[i], r.GetName(), "names are never cut")
		}
	}
}

// A refusal that arrives without its reasons (the refusing side cut them
// to fit its NACK in the size of the response) is shown with something:
// the first refused with the NACK's message, which carries the first
// one's reason, the others with a note that their reasons were not sent.
// They were shown with no reason at all (the holders of a resource on
// global: rejected, and nothing of why).
func TestRefusalsWithoutReasonsAreShownWithAReason(t *testing.T) {
	ix := NewIndex([]string{"T"})
	for _, n := range []string{"a", "b", "c"} {
		require.NoError(t, ix.Put(res("T", "m", n, "1", 8)))
	}
	ss, p, ins := directSession(t, ix, 64<<10)
	require.NoError(t, ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResourceNamesSubscribe: []string{"*"}}))
	r := nextResponse(t, p)
	require.Len(t, r.GetResources(), 3)
	msg := "2 T resources refused (the rest applied; the reasons of 1 are not sent, to fit the NACK in 1400 bytes: the refusing side's insights have them); first: m/a: spec.port: must be below 65536"
	detail, err := rejectionStatus(3, msg, []*kdsv1.RejectedResource{{Name: "m/a", Version: "1"}, {Name: "m/b", Version: "1"}})
	require.NoError(t, err)
	require.NoError(t, ss.handle(&discovery.DeltaDiscoveryRequest{TypeUrl: TypeURL("T"), ResponseNonce: r.GetNonce(), ErrorDetail: detail}))
	c, _ := ins.Get("zone-1")
	shown := map[string][]string{}
	for _, x := range c.Types["T"].Rejected {
		shown[x.Name] = x.Errors
	}
	assert.Equal(t, []string{msg}, shown["m/a"])
	assert.Equal(t, []string{reasonNotSent}, shown["m/b"])
	assert.Equal(t, PeerHolding{Subscribed: true, Holds: true, Version: "1"}, ask(ss, "m/c"))
}
