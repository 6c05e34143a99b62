package kdssync

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/memory"
	"github.com/kds-engine/kds-engine/engine/internal/validate"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

const (
	fuzzType  = "Dataplane"
	fuzzZone  = "zone-a"
	fuzzLimit = 4
)

// fuzzRegistry knows one mesh-scoped ZoneToGlobal type without a schema.
type fuzzRegistry struct{}

func (fuzzRegistry) Type(name string) (resource.TypeDescriptor, bool) {
	if name != fuzzType {
		return resource.TypeDescriptor{}, false
	}
	return fuzzRegistry{}.Types()[0], true
}

func (fuzzRegistry) Types() []resource.TypeDescriptor {
	return []resource.TypeDescriptor{{Name: fuzzType, Direction: resource.ZoneToGlobal, Scope: resource.ScopeMesh, Plugin: "p"}}
}

// fuzzPlugins accepts everything.
type fuzzPlugins struct{}

func (fuzzPlugins) ValidateBatch(context.Context, string, []*resource.Resource) (map[int][]resource.FieldError, error) {
	return nil, nil
}

// storeSink is the engine's sink on a real (memory) store, so the store's
// batch rules apply.
type storeSink struct{ s store.Store }

func (k storeSink) Versions(ctx context.Context, typ string) (map[string]string, error) {
	rs, err := k.s.List(ctx, store.Filter{Type: typ, Zone: fuzzZone})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, r := range rs {
		out[WireName(r.Mesh, r.Name)] = r.Version
	}
	return out, nil
}

func (k storeSink) Apply(ctx context.Context, puts []*resource.Resource, deletes []resource.Key) error {
	_, err := k.s.Apply(ctx, store.Batch{Put: puts, Delete: deletes})
	return err
}

// recordingStream records what the client sends; Recv is not used.
type recordingStream struct {
	sent []*discovery.DeltaDiscoveryRequest
}

func (s *recordingStream) Send(r *discovery.DeltaDiscoveryRequest) error {
	s.sent = append(s.sent, r)
	return nil
}
func (s *recordingStream) RecvContext(context.Context) (*discovery.DeltaDiscoveryResponse, error) {
	return nil, errors.New("not used")
}
func (s *recordingStream) Context() context.Context { return context.Background() }

// splitFrames splits data into uvarint-length-prefixed frames; what cannot
// be split is the last frame.
func splitFrames(data []byte) [][]byte {
	var out [][]byte
	for len(data) > 0 {
		n, k := binary.Uvarint(data)
		if k <= 0 || n > uint64(len(data)-k) {
			return append(out, data)
		}
		out = append(out, data[k:k+int(n)])
		data = data[k+int(n):]
	}
	return out
}

func frames(msgs ...proto.Message) []byte {
	var out []byte
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			panic(err)
		}
		out = binary.AppendUvarint(out, uint64(len(b)))
		out = append(out, b...)
	}
	return out
}

func wire(mesh, name, version string, p *kdsv1.Resource) *discovery.Resource {
	b, err := proto.Marshal(p)
	if err != nil {
		panic(err)
	}
	return &discovery.Resource{Name: WireName(mesh, name), Version: version,
		Resource: &anypb.Any{TypeUrl: resourceTypeURL, Value: b}}
}

func fuzzSeeds() [][]byte {
	url := TypeURL(fuzzType)
	dp := func(name, zone string) *kdsv1.Resource {
		return &kdsv1.Resource{Type: fuzzType, Mesh: "default", Name: name, Zone: zone, Spec: []byte(`{}`)}
	}
	return [][]byte{
		frames(&discovery.DeltaDiscoveryResponse{TypeUrl: url, Nonce: "1", Resources: []*discovery.Resource{wire("default", "a", "1", dp("a", ""))}}),
		frames(&discovery.DeltaDiscoveryResponse{TypeUrl: url, Nonce: "1", Resources: []*discovery.Resource{wire("default", "a", "1", dp("a", "zone-b"))}},
			&discovery.DeltaDiscoveryResponse{TypeUrl: url, Nonce: "2", RemovedResources: []string{"default/a", "default/a"}}),
		frames(&discovery.DeltaDiscoveryResponse{TypeUrl: url, Nonce: "1", Resources: []*discovery.Resource{
			wire("default", "a", "1", dp("a", "")), wire("default", "a", "2", dp("a", ""))}}),
		frames(&discovery.DeltaDiscoveryResponse{TypeUrl: url, Nonce: "1", Resources: []*discovery.Resource{wire("default", "a", "", dp("a", ""))}}),
		frames(&discovery.DeltaDiscoveryResponse{TypeUrl: url, Nonce: "1", RemovedResources: []string{"", "/", "default/", "a\x00b"}}),
		frames(&discovery.DeltaDiscoveryResponse{TypeUrl: url, Nonce: "1", Resources: []*discovery.Resource{
			wire("default", "a", "1", dp("a", "")), wire("default", "b", "1", dp("b", "")), wire("default", "c", "1", dp("c", "")),
			wire("default", "d", "1", dp("d", "")), wire("default", "e", "1", dp("e", ""))}}),
		frames(&discovery.DeltaDiscoveryResponse{TypeUrl: url, Nonce: "1", Resources: []*discovery.Resource{
			{Name: "default/x", Version: "1", Resource: &anypb.Any{TypeUrl: resourceTypeURL, Value: []byte{0xff, 0xff}}}}}),
		frames(&discovery.DeltaDiscoveryResponse{TypeUrl: TypeURL("MeshTimeout"), Nonce: "1"}),
		frames(&discovery.DeltaDiscoveryResponse{TypeUrl: "garbage", Nonce: "1"}),
		frames(&discovery.DeltaDiscoveryResponse{TypeUrl: url, Nonce: "1", Resources: []*discovery.Resource{
			wire("default", "a/b", "1", &kdsv1.Resource{Type: fuzzType, Mesh: "default", Name: "a/b"})}}),
		{0xff, 0x01, 0x02},
	}
}

// FuzzClientDecode feeds arbitrary responses to a client on global (one
// frame per response). Whatever arrives, the client never panics, answers
// each response with exactly one ACK or NACK carrying its nonce, never
// fails (a zone's payload must not end the session through a store error),
// stores only what it ACKed, attributes everything to the connection's zone,
// and never holds more than the per-type limit; a refused entry changes nothing
// under its name.
func FuzzClientDecode(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	v, err := validate.New(fuzzRegistry{}, fuzzPlugins{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		mem := memory.New()
		defer mem.Close()
		sink := storeSink{mem}
		c := NewClient([]string{fuzzType}, sink, v, fuzzZone, fuzzZone, WithMaxResourcesPerType(fuzzLimit))
		c.held[fuzzType] = newHeldRecord(nil)
		stream := &recordingStream{}
		for i, fr := range splitFrames(data) {
			var resp discovery.DeltaDiscoveryResponse
			if proto.Unmarshal(fr, &resp) != nil {
				continue // the transport refuses what does not decode
			}
			before, err := mem.List(ctx, store.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			if err := handle(ctx, c, stream, &resp); err != nil {
				t.Fatalf("response %d ended the session: %v", i, err)
			}
			if len(stream.sent) != 1 {
				t.Fatalf("response %d: %d answers, want exactly one", i, len(stream.sent))
			}
			ans := stream.sent[0]
			stream.sent = nil
			if ans.GetResponseNonce() != resp.GetNonce() || ans.GetTypeUrl() != resp.GetTypeUrl() {
				t.Fatalf("answer (%q, %q) for response (%q, %q)", ans.GetTypeUrl(), ans.GetResponseNonce(), resp.GetTypeUrl(), resp.GetNonce())
			}
			after, err := mem.List(ctx, store.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			rej, err := RejectionOf(ans.GetErrorDetail())
			if err != nil {
				t.Fatalf("response %d: unreadable rejection list: %v", i, err)
			}
			if ans.GetErrorDetail() != nil && rej == nil {
				if !sameResources(before, after) {
					t.Fatalf("response %d refused as a whole changed the store", i)
				}
				continue
			}
			// A refused entry holds back only itself: what the store held
			// under its name is unchanged.
			for _, r := range rej.GetResources() {
				k := keyFor(fuzzType, fuzzZone, r.GetName())
				if versionOf(before, k) != versionOf(after, k) {
					t.Fatalf("response %d: refused %q changed the store", i, r.GetName())
				}
			}
			if len(after) > fuzzLimit {
				t.Fatalf("response %d: %d resources held, the limit is %d", i, len(after), fuzzLimit)
			}
			if len(after) != c.held[fuzzType].len() {
				t.Fatalf("store holds %d, client believes %d", len(after), c.held[fuzzType].len())
			}
			for _, r := range after {
				if r.Zone != fuzzZone || r.Type != fuzzType {
					t.Fatalf("stored %s: not attributed to the connection's zone and type", r.Key())
				}
				if v, _ := c.held[fuzzType].get(WireName(r.Mesh, r.Name)); v != r.Version {
					t.Fatalf("stored %s version %q, client believes %q", r.Key(), r.Version, v)
				}
			}
		}
	})
}

// handle runs resp through both of the client's stages, as Run does.
func handle(ctx context.Context, c *Client, stream ClientStream, resp *discovery.DeltaDiscoveryResponse) error {
	ch, err := c.check(ctx, resp)
	if err != nil {
		return err
	}
	if _, err := c.applyReady(ctx, ch, nil); err != nil {
		return err
	}
	return c.answer(stream, ch)
}

// versionOf returns the version stored under k in rs ("" if absent).
func versionOf(rs []*resource.Resource, k resource.Key) string {
	for _, r := range rs {
		if r.Key() == k {
			return r.Version
		}
	}
	return ""
}

func sameResources(a, b []*resource.Resource) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key() != b[i].Key() || a[i].Version != b[i].Version {
			return false
		}
	}
	return true
}
