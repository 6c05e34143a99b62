package mux_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
	"github.com/kds-engine/kds-engine/engine/internal/kdswire"
	"github.com/kds-engine/kds-engine/engine/internal/mux"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// maxSizeResponse returns a response of as many resources made by res as
// fit the default max message size, as the sync layer's server fills one.
func maxSizeResponse(t *testing.T, typ string, res func(i int) *resource.Resource) *kdsv1.Message {
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: kdssync.TypeURL(typ), Nonce: "12", SystemVersionInfo: "1"}
	m := &kdsv1.Message{Kind: &kdsv1.Message_Response{Response: resp}}
	size := kdswire.Size(m)
	for i := 0; ; i++ {
		r, err := kdssync.Encode(res(i))
		require.NoError(t, err)
		resp.Resources = append(resp.Resources, r)
		// The message's length prefix grows by at most a byte or two:
		// size it whole near the end only.
		if size += 1 + protowire.SizeBytes(proto.Size(r)); size > mux.DefaultMaxMessageSize-8 && kdswire.Size(m) > mux.DefaultMaxMessageSize {
			resp.Resources = resp.Resources[:i]
			return m
		}
	}
}

// noStream is a stream nothing is sent on or received from.
type noStream struct{ ctx context.Context }

func (s noStream) Context() context.Context      { return s.ctx }
func (noStream) Send(*kdsv1.Message) error       { return nil }
func (s noStream) Recv() (*kdsv1.Message, error) { <-s.ctx.Done(); return nil, s.ctx.Err() }

// spec returns a JSON spec of about n bytes.
func spec(n int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"status":%q}`, strings.Repeat("x", max(n-13, 0))))
}

// Honest responses fit the response queue's byte budget as the sizing of
// the queues says (mux package documentation, "Why the per-session byte
// budget is 16 max-size messages"): counted at what they hold decoded
// against twice the budget, max-size responses of statuses of 200 bytes
// (the churn benchmark's shape) fit five heavy types' windows (15), as
// they did counted at their encoding, 1 KiB policies 16 and more, and
// even resources of an empty spec the initial sync of the two heavy
// zone→global types (window 3 each, six max-size responses).
func TestHonestMaxSizeResponsesFitTheBudget(t *testing.T) {
	now := time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)
	shapes := []struct {
		name string
		min  int // max-size responses that must fit
		res  func(i int) *resource.Resource
	}{
		{"200-byte statuses", 15, func(i int) *resource.Resource {
			return &resource.Resource{Type: "DataplaneInsight", Mesh: "default", Name: fmt.Sprintf("s-%d", i%1000),
				Spec: spec(200), Version: fmt.Sprint(1733470000 + i), CreationTime: now, ModificationTime: now}
		}},
		{"1 KiB policies", 16, func(i int) *resource.Resource {
			return &resource.Resource{Type: "MeshTimeout", Mesh: "default", Name: fmt.Sprintf("timeout-%06d", i),
				Labels: map[string]string{"team": "web"}, Spec: spec(1024), Version: fmt.Sprintf("v%016x", i), CreationTime: now, ModificationTime: now}
		}},
		{"empty specs", 6, func(i int) *resource.Resource {
			return &resource.Resource{Type: "Zone", Name: fmt.Sprintf("z%d", i), Spec: json.RawMessage("{}"), Version: fmt.Sprint(i + 1),
				CreationTime: now, ModificationTime: now}
		}},
	}
	budget := mux.NewSession(noStream{t.Context()}, 2).Params().ResponseBudget
	require.Equal(t, 2*mux.DefaultInboundBudgetMessages*mux.DefaultMaxMessageSize, budget)
	for _, sh := range shapes {
		m := maxSizeResponse(t, sh.name, sh.res)
		size, held := kdswire.Measure(m)
		n := len(m.GetResponse().GetResources())
		fit := budget / (held + mux.MessageOverhead)
		t.Logf("%s: %d resources of %d bytes in %d bytes, counted at %d (%.2fx): %d fit the budget of %d",
			sh.name, n, size/n, size, held, float64(held)/float64(size), fit, budget)
		assert.GreaterOrEqual(t, fit, sh.min, sh.name)
		// The codec lets it through (kdswire.MaxResponseExpansion).
		b, err := proto.Marshal(m)
		require.NoError(t, err)
		require.NoError(t, kdswire.Unmarshal(b, &kdsv1.Message{}), sh.name)
	}
}
