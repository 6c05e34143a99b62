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
	"google.golang.org/protobuf/proto"

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
	// or nothing.
	Apply(ctx context.Context, puts []*resource.Resource, deletes []resource.Key) error
}

// Validator checks received resources. It returns a *resource.ValidationError
// for invalid resources; any other error means validation could not run
// (for example a plugin is down).
type Validator interface {
	Validate(ctx context.Context, rs []*resource.Resource) error
}

// ErrLimitExceeded is wrapped in NACKs that refuse a response because the
// peer would hold more resources of a type than allowed.
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
// make this side hold (0: no limit). A response that would exceed it is
// NACKed with ErrLimitExceeded.
func WithMaxResourcesPerType(n int) ClientOption { return func(c *Client) { c.maxPerType = n } }

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

	held map[string]map[string]string // type -> wire name -> version
}

// NewClient returns a client for one session with peer (the insights name).
// zone is stamped on every received resource: the authenticated zone on
// global, "" on a zone.
func NewClient(types []string, sink Sink, v Validator, peer, zone string, opts ...ClientOption) *Client {
	c := &Client{
		types:     slices.Clone(types),
		sink:      sink,
		validator: v,
		zone:      zone,
		peer:      peer,
		log:       hclog.NewNullLogger(),
		held:      map[string]map[string]string{},
	}
	for _, o := range opts {
		o(c)
	}
	c.log = c.log.With("peer", peer)
	return c
}

// Run subscribes to every type and applies responses until ctx ends or the
// stream fails. An invalid response is NACKed and the session goes on; a
// failure to validate at all (plugin down) or to store ends the session, so
// that the reconnect resumes from what is stored and nothing is lost.
//
// Responses go through two stages, so that one is validated while the one
// before it is stored: one goroutine receives, decodes and validates;
// another applies and answers (ACK or NACK) in arrival order. The first
// failure of either ends both; Run joins both before it returns.
func (c *Client) Run(ctx context.Context, stream ClientStream) error {
	for _, typ := range c.types {
		versions, err := c.sink.Versions(ctx, typ)
		if err != nil {
			return fmt.Errorf("read held versions of %s: %w", typ, err)
		}
		c.held[typ] = versions
		// A copy: the transport may marshal the request after Send returns,
		// while check updates held.
		req := &discovery.DeltaDiscoveryRequest{
			TypeUrl:                 TypeURL(typ),
			ResourceNamesSubscribe:  []string{"*"},
			InitialResourceVersions: maps.Clone(versions),
		}
		if err := stream.Send(req); err != nil {
			return fmt.Errorf("subscribe to %s: %w", typ, err)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	checked := make(chan *checked, 1)
	g.Go(func() error {
		defer close(checked)
		for {
			resp, err := stream.RecvContext(gctx)
			if err != nil {
				return fmt.Errorf("receive response: %w", err)
			}
			ch, err := c.check(gctx, resp)
			if err != nil {
				return err
			}
			select {
			case checked <- ch:
			case <-gctx.Done():
				return context.Cause(gctx)
			}
		}
	})
	g.Go(func() error {
		for ch := range checked {
			if err := c.answer(gctx, stream, ch); err != nil {
				return err
			}
		}
		return nil
	})
	return g.Wait()
}

// checked is a response that went through the checking stage: either
// accepted (puts and deletes to apply) or refused (nack set).
type checked struct {
	resp    *discovery.DeltaDiscoveryResponse
	typ     string
	puts    []*resource.Resource
	deletes []resource.Key
	nack    error
	held    int // resources of typ held once this response is applied
}

// check decodes and validates resp. Only a failure to validate at all is
// returned as an error; an invalid response comes back with nack set. It
// updates c.held as if the response were applied: answer applies it before
// anything later, and a failed apply ends the session (and this Client).
func (c *Client) check(ctx context.Context, resp *discovery.DeltaDiscoveryResponse) (*checked, error) {
	typ, err := TypeFromURL(resp.GetTypeUrl())
	if err == nil {
		if _, ok := c.held[typ]; !ok {
			err = fmt.Errorf("response for type %s, which this side never subscribed to", typ)
		}
	}
	if err != nil {
		c.log.Warn("rejecting response", "error", err)
		return &checked{resp: resp, typ: typ, nack: err}, nil
	}
	for _, re := range resp.GetResourceErrors() {
		msg := re.GetErrorDetail().GetMessage()
		c.log.Warn("peer reported an error for a type", "type", typ, "error", msg)
		c.record(typ, func(ts *insights.TypeState) {
			ts.Unknown = true
			ts.Error = "peer: " + msg
		})
	}

	puts, decodeErr := c.decode(typ, resp)
	if decodeErr == nil && len(puts) > 0 {
		if err := c.validator.Validate(ctx, puts); err != nil {
			var ve *resource.ValidationError
			if !errors.As(err, &ve) {
				return nil, fmt.Errorf("validate %s response: %w", typ, err)
			}
			decodeErr = ve
		}
	}
	held := c.held[typ]
	if decodeErr == nil && c.maxPerType > 0 {
		n := len(held)
		for _, p := range puts {
			if _, ok := held[WireName(p.Mesh, p.Name)]; !ok {
				n++
			}
		}
		for _, name := range resp.GetRemovedResources() {
			if _, ok := held[name]; ok {
				n--
			}
		}
		if n > c.maxPerType {
			decodeErr = fmt.Errorf("%w: %s would hold %d resources, the limit is %d", ErrLimitExceeded, typ, n, c.maxPerType)
		}
	}
	if decodeErr != nil {
		c.log.Warn("rejecting response (NACK)", "type", typ, "error", decodeErr)
		return &checked{resp: resp, typ: typ, nack: decodeErr}, nil
	}

	deletes := make([]resource.Key, 0, len(resp.GetRemovedResources()))
	for _, name := range resp.GetRemovedResources() {
		deletes = append(deletes, keyFor(typ, c.zone, name))
	}
	for _, p := range puts {
		held[WireName(p.Mesh, p.Name)] = p.Version
	}
	for _, name := range resp.GetRemovedResources() {
		delete(held, name)
	}
	return &checked{resp: resp, typ: typ, puts: puts, deletes: deletes, held: len(held)}, nil
}

// answer applies an accepted response as one transaction and ACKs it, or
// NACKs a refused one. A failure to store is returned and ends the session.
func (c *Client) answer(ctx context.Context, stream ClientStream, ch *checked) error {
	if ch.nack != nil {
		return c.nack(stream, ch.resp, ch.typ, ch.nack)
	}
	if len(ch.puts) > 0 || len(ch.deletes) > 0 {
		if err := c.sink.Apply(ctx, ch.puts, ch.deletes); err != nil {
			return fmt.Errorf("apply %s response: %w", ch.typ, err)
		}
	}
	if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: ch.resp.GetTypeUrl(), ResponseNonce: ch.resp.GetNonce()}); err != nil {
		return fmt.Errorf("ACK %s: %w", ch.typ, err)
	}
	c.record(ch.typ, func(ts *insights.TypeState) {
		ts.ResponsesACKed++
		ts.LastACK = time.Now()
		ts.LastVersionApplied = ch.resp.GetSystemVersionInfo()
		ts.ResourcesHeld = ch.held
		ts.ResourcesReceived += uint64(len(ch.puts))
	})
	return nil
}

// decode turns the wire resources into engine resources, stamped with the
// connection's zone. It returns a *resource.ValidationError for envelopes
// that cannot be decoded or do not match their wire name and type, and for
// a response the store could not apply as one batch: a name twice (among
// the resources and the removed names), a resource without a version, a
// removed name that cannot be a key.
func (c *Client) decode(typ string, resp *discovery.DeltaDiscoveryResponse) ([]*resource.Resource, error) {
	puts := make([]*resource.Resource, 0, len(resp.GetResources()))
	var invalid []resource.InvalidResource
	seen := make(map[string]struct{}, len(resp.GetResources())+len(resp.GetRemovedResources()))
	once := func(name string) bool {
		if _, dup := seen[name]; dup {
			return false
		}
		seen[name] = struct{}{}
		return true
	}
	for _, name := range resp.GetRemovedResources() {
		key := keyFor(typ, c.zone, name)
		msg := ""
		switch {
		case strings.IndexByte(name, 0) >= 0:
			msg = "removed resource name contains a NUL byte"
		case key.Name == "":
			msg = "removed resource has an empty name"
		case !once(name):
			msg = "appears more than once in the response"
		}
		if msg != "" {
			invalid = append(invalid, resource.InvalidResource{Key: key, Errors: []resource.FieldError{{Field: "name", Message: msg}}})
		}
	}
	for _, wr := range resp.GetResources() {
		key := keyFor(typ, c.zone, wr.GetName())
		bad := func(field, msg string) {
			invalid = append(invalid, resource.InvalidResource{Key: key, Errors: []resource.FieldError{{Field: field, Message: msg}}})
		}
		if !once(wr.GetName()) {
			bad("name", "appears more than once in the response")
			continue
		}
		if wr.GetVersion() == "" {
			bad("version", "is empty")
			continue
		}
		if wr.GetResource().GetTypeUrl() != resourceTypeURL {
			bad("", fmt.Sprintf("payload type %q, want %q", wr.GetResource().GetTypeUrl(), resourceTypeURL))
			continue
		}
		var p kdsv1.Resource
		if err := proto.Unmarshal(wr.GetResource().GetValue(), &p); err != nil {
			bad("", "malformed envelope: "+err.Error())
			continue
		}
		r := resource.FromProto(&p)
		if r.Type != typ {
			bad("type", fmt.Sprintf("is %q inside a %s response", r.Type, typ))
			continue
		}
		if WireName(r.Mesh, r.Name) != wr.GetName() {
			bad("name", fmt.Sprintf("envelope says %q, wire name is %q", WireName(r.Mesh, r.Name), wr.GetName()))
			continue
		}
		r.Zone = c.zone // attribution comes from the connection, never the payload
		r.Version = wr.GetVersion()
		puts = append(puts, r)
	}
	if len(invalid) > 0 {
		return nil, &resource.ValidationError{Invalid: invalid}
	}
	return puts, nil
}

func (c *Client) nack(stream ClientStream, resp *discovery.DeltaDiscoveryResponse, typ string, cause error) error {
	req := &discovery.DeltaDiscoveryRequest{
		TypeUrl:       resp.GetTypeUrl(),
		ResponseNonce: resp.GetNonce(),
		ErrorDetail:   &status.Status{Code: int32(codes.InvalidArgument), Message: cause.Error()},
	}
	if err := stream.Send(req); err != nil {
		return fmt.Errorf("NACK %s: %w", resp.GetTypeUrl(), err)
	}
	if typ != "" {
		c.record(typ, func(ts *insights.TypeState) {
			ts.ResponsesNACKed++
			ts.LastNACK = time.Now()
			ts.LastNACKError = cause.Error()
		})
	}
	return nil
}

func (c *Client) record(typ string, fn func(*insights.TypeState)) {
	if c.ins != nil {
		c.ins.UpdateType(c.peer, typ, fn)
	}
}
