package kdssync

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
)

// A session that ends while subscriptions wait for room (the server never
// answers the ones sent) returns from Run and leaves no goroutine behind;
// insights show the waiting ones while they wait, and nothing once the
// session has ended.
func TestSessionEndsWithSubscriptionsWaiting(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const maxMsg = 64 << 10
	sink := newMemSink()
	types := []string{"A", "B", "C", "D"}
	for _, typ := range types {
		sink.holdNamed(typ, typ, 3000)
	}
	ctx, cancel := context.WithCancel(t.Context())
	p := newPipe(ctx)
	ins := insights.NewRegistry()
	cli := NewClient(types, sink, rejectValidator{}, "global", "zone-1", WithClientInsights(ins),
		WithClientMaxMessageSize(maxMsg), WithResumeParts(true), WithPeerInboundBudget(4*maxMsg))
	before := time.Now()
	done := make(chan error, 1)
	go func() { done <- cli.Run(ctx, clientEnd{p}) }()
	select {
	case <-p.reqs:
	case <-time.After(10 * time.Second):
		t.Fatal("no first part")
	}
	require.Len(t, cli.waiting, len(types)-1, "the others wait for room")
	c, _ := ins.Get("global")
	assert.Zero(t, c.Types["A"].WaitingSince, "A's first part is sent")
	for _, typ := range types[1:] {
		ts := c.Types[typ]
		assert.False(t, ts.WaitingSince.Before(before), "%s waits since it was left waiting", typ)
		assert.Greater(t, ts.WaitingBytes, int64(maxMsg/2), "%s: what its parts will take", typ)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	c, _ = ins.Get("global")
	for _, typ := range types {
		assert.Zero(t, c.Types[typ].WaitingSince, "%s: nothing waits once the session has ended", typ)
		assert.Zero(t, c.Types[typ].WaitingBytes, typ)
	}
}
