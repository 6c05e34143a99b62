package kdssync

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"github.com/kds-engine/kds-engine/engine/apitypes"
	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// ClientStream is the subscribing side of a session's logical stream. Send
// must only enqueue.
type ClientStream interface {
	Send(*discovery.DeltaDiscoveryRequest) error
	// RecvContext blocks for the next response; it returns early, with
	// ctx's cause, when ctx ends.
	RecvContext(ctx context.Context) (*discovery.DeltaDiscoveryResponse, error)
	Context() context.Context
}

// Sink is where a client puts what it receives.
type Sink interface {
	// Versions returns wire name → version of the resources of typ held
	// for this connection's peer (sent as initial_resource_versions).
	Versions(ctx context.Context, typ string) (map[string]string, error)
	// Apply upserts puts (keeping their versions) and deletes the keys, all
	// or nothing. A key appears at most once across puts and deletes. One
	// call may hold several responses (see Client.Run). The puts are the
	// Sink's once Apply is called: the client neither changes nor reads
	// them afterwards, so a Sink may keep them without copying. Apply may
	// take its time (global waits for a store that is unavailable): the
	// response is answered only after it returns, so the peer keeps it in
	// flight meanwhile, and its window bounds what else it sends. It must
	// return once ctx ends.
	Apply(ctx context.Context, puts []*resource.Resource, deletes []resource.Key) error
}

// Validator checks received resources. It returns a *resource.ValidationError
// for invalid resources; any other error means validation could not run
// (for example a plugin is down).
type Validator interface {
	Validate(ctx context.Context, rs []*resource.Resource) error
}

// ErrLimitExceeded is wrapped in the errors of resources refused because
// the peer would make this side hold more resources of a type than allowed.
var ErrLimitExceeded = errors.New("resource limit exceeded")

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithClientLogger sets the logger (default: discard).
func WithClientLogger(l hclog.Logger) ClientOption { return func(c *Client) { c.log = l } }

// WithClientInsights records per-type state in reg.
func WithClientInsights(reg *insights.Registry) ClientOption {
	return func(c *Client) { c.ins = reg }
}

// WithMaxResourcesPerType limits how many resources of one type the peer may
// make this side hold (0: no limit). Creates beyond it are refused, one by
// one, with ErrLimitExceeded; the rest of the response is applied.
func WithMaxResourcesPerType(n int) ClientOption { return func(c *Client) { c.maxPerType = n } }

// WithRejections keeps what this side refused in r, which outlives the
// Client: the next session with the same peer tells the server, which then
// does not send those versions again until they change. Without it the
// memory lasts one session.
func WithRejections(r *Rejections) ClientOption { return func(c *Client) { c.rejections = r } }

// WithResumeParts lets the client send the versions it holds of a type in
// several requests when they do not fit one (the peer announced that it
// accepts them in parts). Without it, held versions that do not fit one
// request end the session with an error saying so.
func WithResumeParts(on bool) ClientOption { return func(c *Client) { c.parts = on } }

// WithClientMaxMessageSize sets the largest request the client sends: the
// session's agreed max message size (default DefaultMaxMessageSize).
func WithClientMaxMessageSize(n int) ClientOption {
	return func(c *Client) {
		if n > 0 {
			c.maxMsg = n
		}
	}
}

// Client subscribes to a fixed set of types and applies what arrives. One
// Client serves one session: create a new one per session.
type Client struct {
	types      []string
	sink       Sink
	validator  Validator
	zone       string
	peer       string
	log        hclog.Logger
	ins        *insights.Registry
	maxPerType int
	rejections *Rejections
	maxMsg     int
	parts      bool

	held map[string]*heldRecord // type -> what is held of it
	// resume holds, per type whose held versions go in parts, what is left
	// to send. Run fills it before the stages start; then only the
	// checking stage touches it (it builds the next part when the answer
	// to the previous one arrives).
	resume map[string]*resumeParts
	// The pacing of subscriptions (pacer.go), owned like resume: subLimit
	// bounds subUsed, the cost of the subscriptions in outstanding (sent,
	// not yet answered); waiting holds the subscriptions not sent yet, in
	// order.
	subLimit, subUsed int64
	outstanding       map[string]int64
	waiting           []*subPlan
	// unknown holds the types of responses this side never subscribed to
	// that insights show (at most MaxUnknownTypes); dropped when Run ends.
	// Only the answering stage touches it, and Run before the stages start
	// (waitForSlot).
	unknown map[string]struct{}
	// admission, if set, bounds the sessions receiving their initial
	// state at once (admission.go); adm is this session's slot from Run's
	// start, nil without admission.
	admission *Admission
	adm       *admitted
}

// NewClient returns a client for one session with peer (the insights name).
// zone is stamped on every received resource: the authenticated zone on
// global, "" on a zone.
func NewClient(types []string, sink Sink, v Validator, peer, zone string, opts ...ClientOption) *Client {
	c := &Client{
		types:       slices.Clone(types),
		sink:        sink,
		validator:   v,
		zone:        zone,
		peer:        peer,
		log:         hclog.NewNullLogger(),
		held:        map[string]*heldRecord{},
		unknown:     map[string]struct{}{},
		maxMsg:      DefaultMaxMessageSize,
		resume:      map[string]*resumeParts{},
		outstanding: map[string]int64{},
	}
	for _, o := range opts {
		o(c)
	}
	if c.rejections == nil {
		c.rejections = NewRejections()
	}
	c.log = c.log.With("peer", peer)
	return c
}

// Run subscribes to every type and applies responses until ctx ends or the
// stream fails. A resource this side refuses holds back only itself: the
// rest of its response is applied and the answer (a NACK with a Rejection)
// names what was refused and why. A failure to validate at all (plugin
// down) or to store ends the session, so that the reconnect resumes from
// what is stored and nothing is lost. (A Sink that waits for its store
// instead of failing keeps the session up: only the applying stage waits,
// never the receiving one, and the peer's window bounds what queues up.)
//
// Responses go through two stages, so that one is validated while the one
// before it is stored: one goroutine receives, decodes and validates;
// another applies and answers (ACK or NACK) in arrival order. The applying
// stage stores the checked responses that are already waiting when it
// takes one (never waiting for more; bounded by maxApplyBytes) in one
// Sink.Apply, as if applied one after another, then answers each; none is
// answered before that Apply returns. The first failure of either stage
// ends both; Run joins both before it returns.
//
// Subscriptions are paced (WithPeerInboundBudget): Run sends those that
// fit at once, and the applying stage sends each waiting one after the
// answer to the response that made room for it. Requests are sent by Run
// before the stages start and by the applying stage after, never by two
// goroutines at once.
func (c *Client) Run(ctx context.Context, stream ClientStream) error {
	defer c.stopWaiting()
	// After both stages are joined (or before they started: a session
	// waiting for a slot answers responses too).
	defer c.dropUnknown()
	// The slot first: a session that waits for one holds nothing of what
	// this side holds of the peer's resources meanwhile.
	adm, err := c.admit(ctx, stream)
	if err != nil {
		return err
	}
	defer adm.close()
	c.adm = adm
	for _, typ := range c.types {
		versions, err := c.sink.Versions(ctx, typ)
		if err != nil {
			return fmt.Errorf("read held versions of %s: %w", typ, err)
		}
		c.held[typ] = newHeldRecord(versions)
		c.record(typ, func(ts *insights.TypeState) { ts.ResourcesHeld = len(versions) })
		p, err := c.plan(typ)
		if err != nil {
			return err
		}
		c.waiting = append(c.waiting, p)
	}
	first, err := c.startWaiting()
	if err != nil {
		return err
	}
	if err := send(stream, first); err != nil {
		return err
	}
	adm.subscribed()
	g, gctx := errgroup.WithContext(ctx)
	checked := make(chan *checked, readyQueue)
	g.Go(func() error {
		defer close(checked)
		for {
			resp, err := stream.RecvContext(gctx)
			if err != nil {
				return fmt.Errorf("receive response: %w", err)
			}
			trace(TraceReceived, resp, false)
			// Only a response that moves the initial sync forward stops
			// the idle clock, from its arrival until it is answered.
			progress := c.progress(resp)
			if progress {
				adm.received()
			}
			ch, err := c.check(gctx, resp)
			if err != nil {
				return err
			}
			ch.progress = progress
			trace(TraceChecked, resp, false)
			select {
			case checked <- ch:
			case <-gctx.Done():
				return context.Cause(gctx)
			}
		}
	})
	g.Go(func() error {
		for first := range checked {
			batch, err := c.applyReady(gctx, first, checked)
			if err != nil {
				return err
			}
			for _, ch := range batch {
				if err := c.answer(stream, ch); err != nil {
					return err
				}
				if ch.progress {
					adm.answered()
				}
			}
		}
		return nil
	})
	return g.Wait()
}

// checked is a response that went through the checking stage: what to
// apply, and what is refused (all of it when whole is set).
type checked struct {
	resp     *discovery.DeltaDiscoveryResponse
	typ      string
	puts     []*resource.Resource
	deletes  []resource.Key
	accepted []string // wire names applied (puts and removals)
	rejected []*kdsv1.RejectedResource
	whole    error // the response is refused as a whole (NACK without a Rejection)
	held     int   // resources of typ held once this response is applied
	size     int   // wire bytes of its resources (bounds applyReady's batches)
	// next is the next part of typ's subscription, sent after the answer;
	// start the first requests of other types' subscriptions that this
	// response's arrival let go (pacer.go), sent after that.
	next  *discovery.DeltaDiscoveryRequest
	start []*discovery.DeltaDiscoveryRequest
	// progress is set when the response moved its type's initial state
	// forward (admission.go: the idle clock stays stopped until it is
	// answered).
	progress bool
}

// check decodes and validates resp. Only a failure to validate at all is
// returned as an error; refused resources come back in rejected. It
// updates c.held as if the accepted part were applied: answer applies it
// before anything later, and a failed apply ends the session (and this
// Client).
func (c *Client) check(ctx context.Context, resp *discovery.DeltaDiscoveryResponse) (*checked, error) {
	typ, err := TypeFromURL(resp.GetTypeUrl())
	if err == nil {
		if _, ok := c.held[typ]; !ok {
			err = fmt.Errorf("response for type %s, which this side never subscribed to", typ)
		} else if c.notSubscribedYet(typ) {
			err = fmt.Errorf("response for type %s, which this side has not subscribed to yet", typ)
		}
	}
	if err != nil {
		c.log.Warn("rejecting response", "error", err)
		return &checked{resp: resp, typ: typ, whole: err}, nil
	}
	for _, re := range resp.GetResourceErrors() {
		msg := truncate(re.GetErrorDetail().GetMessage())
		c.log.Warn("peer reported an error for a type", "type", typ, "error", msg)
		c.record(typ, func(ts *insights.TypeState) {
			ts.Unknown = true
			ts.Error = "peer: " + msg
		})
	}

	ch := &checked{resp: resp, typ: typ}
	puts, names, removed := c.decode(typ, resp, ch)
	if len(puts) > 0 {
		if err := c.validator.Validate(ctx, puts); err != nil {
			var ve *resource.ValidationError
			if !errors.As(err, &ve) {
				return nil, fmt.Errorf("validate %s response: %w", typ, err)
			}
			puts, names = c.refuseInvalid(ch, puts, names, ve)
		}
	}
	held := c.held[typ]
	if c.maxPerType > 0 {
		puts, names = c.refuseOverLimit(ch, typ, held, puts, names, removed)
	}
	for _, name := range removed {
		ch.deletes = append(ch.deletes, keyFor(typ, c.zone, name))
		ch.accepted = append(ch.accepted, name)
		held.remove(name)
	}
	for i, p := range puts {
		held.set(names[i], p.Version)
	}
	ch.accepted = append(ch.accepted, names...)
	ch.puts = puts
	ch.held = held.len()
	if c.resume[typ] != nil {
		// The answer to the previous part: the next one goes out once
		// this response is answered, from what is held once it is
		// applied.
		if ch.next, err = c.nextPart(typ); err != nil {
			return nil, err
		}
	} else {
		if ch.start, err = c.answered(typ); err != nil {
			return nil, err
		}
		if c.adm != nil && !morePending(resp) {
			c.adm.arrived(typ)
		}
	}
	if len(ch.rejected) > 0 {
		c.log.Warn("refusing resources (NACK); the rest of the response is applied",
			"type", typ, "refused", len(ch.rejected), "first", ch.rejected[0].GetName(), "why", fieldErrors(ch.rejected[0].GetErrors()))
	}
	return ch, nil
}

// refuseInvalid moves the puts ve names into ch.rejected and returns the
// rest, with their wire names (names[i] is puts[i]'s). If ve names a
// resource that is not among puts, the validator and this side disagree on
// identities: every put is refused.
func (c *Client) refuseInvalid(ch *checked, puts []*resource.Resource, names []string, ve *resource.ValidationError) ([]*resource.Resource, []string) {
	bad := make(map[resource.Key][]resource.FieldError, len(ve.Invalid))
	for _, inv := range ve.Invalid {
		bad[inv.Key] = append(bad[inv.Key], inv.Errors...)
	}
	matched := 0
	for _, p := range puts {
		if _, ok := bad[p.Key()]; ok {
			matched++
		}
	}
	keep, keepNames := puts[:0:0], names[:0:0]
	for i, p := range puts {
		errs, ok := bad[p.Key()]
		if matched < len(bad) && !ok {
			errs, ok = []resource.FieldError{{Message: "refused with its response: " + ve.Error()}}, true
		}
		if ok {
			ch.rejected = append(ch.rejected, rejectedEntry(names[i], p.Version, false, errs))
			continue
		}
		keep, keepNames = append(keep, p), append(keepNames, names[i])
	}
	return keep, keepNames
}

// refuseOverLimit refuses the creates (names not held) that would take the
// type past the per-type limit, in response order, and returns the rest
// with their wire names.
func (c *Client) refuseOverLimit(ch *checked, typ string, held *heldRecord, puts []*resource.Resource, names, removed []string) ([]*resource.Resource, []string) {
	n := held.len()
	for _, name := range removed {
		if _, ok := held.get(name); ok {
			n--
		}
	}
	keep, keepNames := puts[:0:0], names[:0:0]
	for i, p := range puts {
		name := names[i]
		if _, ok := held.get(name); !ok {
			if n >= c.maxPerType {
				msg := fmt.Sprintf("%s: %s would hold more than %d resources", ErrLimitExceeded, typ, c.maxPerType)
				ch.rejected = append(ch.rejected, rejectedEntry(name, p.Version, false, []resource.FieldError{{Message: msg}}))
				continue
			}
			n++
		}
		keep, keepNames = append(keep, p), append(keepNames, name)
	}
	return keep, keepNames
}

// answer settles one response (see settle), then sends the next part of
// its type's subscription if one is due, and the subscriptions it let go.
func (c *Client) answer(stream ClientStream, ch *checked) error {
	if err := c.settle(stream, ch); err != nil {
		return err
	}
	if ch.next != nil {
		if err := stream.Send(ch.next); err != nil {
			return fmt.Errorf("subscribe to %s: %w", ch.typ, err)
		}
	}
	return send(stream, ch.start)
}

// send sends the first requests of subscriptions.
func send(stream ClientStream, reqs []*discovery.DeltaDiscoveryRequest) error {
	for _, req := range reqs {
		if err := stream.Send(req); err != nil {
			return fmt.Errorf("subscribe to %s: %w", strings.TrimPrefix(req.GetTypeUrl(), TypeURLPrefix), err)
		}
	}
	return nil
}

// settle answers a response whose accepted part applyReady has stored: an
// ACK when nothing was refused, else a NACK whose Rejection names what was.
func (c *Client) settle(stream ClientStream, ch *checked) error {
	if ch.whole != nil {
		return c.nack(stream, ch, &status.Status{Code: int32(codes.InvalidArgument), Message: ch.whole.Error()})
	}
	c.rejections.update(ch.typ, ch.rejected, ch.accepted)
	refused := c.rejections.count(ch.typ)
	shown := make([]apitypes.RejectedResource, 0, len(ch.rejected))
	for _, r := range ch.rejected {
		shown = append(shown, apitypes.RejectedResource{Name: r.GetName(), Version: r.GetVersion(), Removal: r.GetRemoval(), Errors: fieldErrors(r.GetErrors())})
	}
	c.record(ch.typ, func(ts *insights.TypeState) {
		if v := strings.TrimSuffix(ch.resp.GetSystemVersionInfo(), MorePending); v != "" {
			ts.LastVersionApplied = v
		}
		ts.ResourcesHeld = ch.held
		ts.ResourcesReceived += uint64(len(ch.puts))
		ts.RejectedCount = refused
		ts.Rejected = insights.MergeRejected(ts.Rejected, shown, ch.accepted)
	})
	if len(ch.rejected) > 0 {
		// The reasons are cut to keep the NACK within the size of its
		// response (rejectionLimit); every refused name and version is
		// still in it (the server's view is what this side applied), and
		// insights here keep every reason.
		limit := rejectionLimit(ch.resp, c.maxMsg)
		sent, cut := fitRejections(ch.rejected, limit)
		st, err := rejectionStatus(int32(codes.InvalidArgument), truncate(rejectionSummary(ch.typ, ch.rejected, cut, limit)), sent)
		if err != nil {
			return err
		}
		return c.nack(stream, ch, st)
	}
	if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: ch.resp.GetTypeUrl(), ResponseNonce: ch.resp.GetNonce()}); err != nil {
		return fmt.Errorf("ACK %s: %w", ch.typ, err)
	}
	c.record(ch.typ, func(ts *insights.TypeState) {
		ts.ResponsesACKed++
		ts.LastACK = time.Now()
	})
	return nil
}

// rejectionSummary is the NACK's message: how many were refused, how many
// of their reasons were cut to fit limit (fitRejections), and the first
// reason. The first name is shortened to maxNameInSummary bytes (the
// rejection list carries it whole), so that the reason still fits the
// message's maxErrorText bytes after the longest names.
func rejectionSummary(typ string, rs []*kdsv1.RejectedResource, cut, limit int) string {
	first := rs[0]
	name := truncateTo(first.GetName(), maxNameInSummary)
	why := strings.Join(fieldErrors(first.GetErrors()), "; ")
	if len(rs) == 1 {
		return fmt.Sprintf("%s %s refused: %s", typ, name, why)
	}
	var note string
	if cut > 0 {
		note = fmt.Sprintf("; the reasons of %d are not sent, to fit the NACK in %d bytes: the refusing side's insights have them", cut, limit)
	}
	return fmt.Sprintf("%d %s resources refused (the rest applied%s); first: %s: %s", len(rs), typ, note, name, why)
}

// maxNameInSummary is how much of the first refused name a NACK's message
// shows: after the longest type name, the note on cut reasons and the
// counts, about 180 of the message's maxErrorText bytes are left for the
// reason.
const maxNameInSummary = 96

// decode turns the wire resources into engine resources, stamped with the
// connection's zone, and returns them with the removed names to apply.
// Everything that cannot be applied on its own goes to ch.rejected: an
// envelope that cannot be decoded or does not match its wire name and
// type, a resource without a version, a removed name that is not canonical
// (two spellings of one key, such as "x" and "/x", would otherwise reach
// the store twice), and every entry of a name that appears more than once
// among the resources and removed names (which one was meant is unknown, so
// the receiver keeps what it holds). The specs of the returned resources
// share memory with resp (decodeEnvelope), which nothing changes after, and
// so do their type, mesh, name and version strings where they equal the
// wire resource's (the type's and the wire name's parts). names[i] is
// puts[i]'s wire name.
func (c *Client) decode(typ string, resp *discovery.DeltaDiscoveryResponse, ch *checked) (puts []*resource.Resource, names, removed []string) {
	count := nameCounts(resp)
	refuse := func(name, version string, removal bool, field, msg string) {
		ch.rejected = append(ch.rejected, rejectedEntry(name, version, removal, []resource.FieldError{{Field: field, Message: msg}}))
	}
	ch.size = resourceBytes(resp)
	for _, name := range resp.GetRemovedResources() {
		switch {
		case strings.IndexByte(name, 0) >= 0:
			refuse(name, "", true, "name", "removed resource name contains a NUL byte")
		case keyFor(typ, c.zone, name).Name == "":
			refuse(name, "", true, "name", "removed resource has an empty name")
		case !canonicalName(name):
			refuse(name, "", true, "name", `removed resource name is not "name" or "mesh/name"`)
		case count[name] > 1:
			refuse(name, "", true, "name", "appears more than once in the response")
		default:
			removed = append(removed, name)
		}
	}
	puts = make([]*resource.Resource, 0, len(resp.GetResources()))
	names = make([]string, 0, len(resp.GetResources()))
	// The decoded resources, allocated together: they live as long as the
	// response they came in (the store copies what it keeps). Only those
	// that get as far as their envelope take one: a flood of resources
	// refused on sight (two bytes each on the wire) must not cost a
	// decoded resource each.
	slots := 0
	for _, wr := range resp.GetResources() {
		if count[wr.GetName()] <= 1 && wr.GetVersion() != "" && wr.GetResource().GetTypeUrl() == resourceTypeURL {
			slots++
		}
	}
	slab := make([]resource.Resource, slots)
	for _, wr := range resp.GetResources() {
		name, version := wr.GetName(), wr.GetVersion()
		bad := func(field, msg string) { refuse(name, version, false, field, msg) }
		if count[name] > 1 {
			bad("name", "appears more than once in the response")
			continue
		}
		if version == "" {
			bad("version", "is empty")
			continue
		}
		if wr.GetResource().GetTypeUrl() != resourceTypeURL {
			bad("", fmt.Sprintf("payload type %.100q, want %q", wr.GetResource().GetTypeUrl(), resourceTypeURL))
			continue
		}
		mesh, short := splitXDSName(name)
		if len(slab) == 0 {
			// Only if the count above and the checks before here
			// disagree: a resource of its own rather than a panic.
			slab = make([]resource.Resource, 1)
		}
		r, err := decodeEnvelopeInto(&slab[0], wr.GetResource().GetValue(), envelopeHint{typ: typ, mesh: mesh, name: short, version: version})
		slab = slab[1:]
		if err != nil {
			bad("", "malformed envelope: "+err.Error())
			continue
		}
		if r.Type != typ {
			bad("type", fmt.Sprintf("is %.100q inside a %s response", r.Type, typ))
			continue
		}
		if !isWireName(name, r.Mesh, r.Name) || !canonicalName(name) {
			bad("name", fmt.Sprintf("envelope says %.200q, wire name is %.200q", WireName(r.Mesh, r.Name), name))
			continue
		}
		r.Zone = c.zone // attribution comes from the connection, never the payload
		r.Version = version
		puts = append(puts, r)
		names = append(names, name)
	}
	return puts, names, removed
}

// notSubscribedYet reports whether typ's subscription waits to be sent
// (pacer.go). Checking stage only.
func (c *Client) notSubscribedYet(typ string) bool {
	return slices.ContainsFunc(c.waiting, func(p *subPlan) bool { return p.typ == typ })
}

// morePending reports whether the server marked resp as leaving more of
// its type pending (MorePending).
func morePending(resp *discovery.DeltaDiscoveryResponse) bool {
	return strings.HasSuffix(resp.GetSystemVersionInfo(), MorePending)
}

// resourceBytes is what resp's resources and removed names take on the
// wire, without the encoding's framing: their names, versions and
// payloads.
func resourceBytes(resp *discovery.DeltaDiscoveryResponse) int {
	n := 0
	for _, name := range resp.GetRemovedResources() {
		n += len(name)
	}
	for _, wr := range resp.GetResources() {
		n += len(wr.GetName()) + len(wr.GetVersion()) + len(wr.GetResource().GetValue())
	}
	return n
}

// nameCounts returns how many times each name appears in resp, among its
// resources and its removals, or nil when no name can appear twice: no
// removals, and resource names in strictly ascending store-key order (the
// order servers send them in), which costs one comparison per name instead
// of a map of every name.
func nameCounts(resp *discovery.DeltaDiscoveryResponse) map[string]int {
	rs := resp.GetResources()
	if len(resp.GetRemovedResources()) == 0 {
		ascending := true
		for i := 1; i < len(rs) && ascending; i++ {
			ascending = compareWireNames(rs[i-1].GetName(), rs[i].GetName()) < 0
		}
		if ascending {
			return nil
		}
	}
	count := make(map[string]int, len(rs)+len(resp.GetRemovedResources()))
	for _, name := range resp.GetRemovedResources() {
		count[name]++
	}
	for _, wr := range rs {
		count[wr.GetName()]++
	}
	return count
}

func (c *Client) nack(stream ClientStream, ch *checked, detail *status.Status) error {
	req := &discovery.DeltaDiscoveryRequest{
		TypeUrl:       ch.resp.GetTypeUrl(),
		ResponseNonce: ch.resp.GetNonce(),
		ErrorDetail:   detail,
	}
	if err := stream.Send(req); err != nil {
		return fmt.Errorf("NACK %.100q: %w", ch.resp.GetTypeUrl(), err)
	}
	// One of this side's types, also before Run has read what it holds of
	// them (while it waits for a slot).
	known := c.held[ch.typ] != nil || slices.Contains(c.types, ch.typ)
	if !known && ch.typ != "" {
		if _, ok := c.unknown[ch.typ]; !ok && len(c.unknown) < MaxUnknownTypes {
			c.unknown[ch.typ] = struct{}{}
		}
		_, known = c.unknown[ch.typ]
	}
	if known {
		c.record(ch.typ, func(ts *insights.TypeState) {
			ts.ResponsesNACKed++
			ts.LastNACK = time.Now()
			ts.LastNACKError = truncate(detail.GetMessage())
		})
	}
	return nil
}

// dropUnknown removes from insights the types of responses this side never
// subscribed to that it showed (c.unknown).
func (c *Client) dropUnknown() {
	if c.ins != nil && len(c.unknown) > 0 {
		c.ins.DropTypes(c.peer, slices.Collect(maps.Keys(c.unknown)))
	}
}

func (c *Client) record(typ string, fn func(*insights.TypeState)) {
	if c.ins != nil {
		c.ins.UpdateType(c.peer, typ, fn)
	}
}
