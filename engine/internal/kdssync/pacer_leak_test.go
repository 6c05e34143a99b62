package kdssync

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// A session that ends while subscriptions wait for room (the server never
// answers the ones sent) returns from Run and leaves no goroutine behind.
func TestSessionEndsWithSubscriptionsWaiting(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const maxMsg = 64 << 10
	sink := newMemSink()
	types := []string{"A", "B", "C", "D"}
	for _, typ := range types {
		for i := range 3000 {
			r := res(typ, "default", fmt.Sprintf("%s-%05d", typ, i), "1", 1)
			r.Zone = "zone-1"
			sink.res[r.Key()] = r
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	p := newPipe(ctx)
	cli := NewClient(types, sink, rejectValidator{}, "global", "zone-1",
		WithClientMaxMessageSize(maxMsg), WithResumeParts(true), WithPeerInboundBudget(4*maxMsg))
	done := make(chan error, 1)
	go func() { done <- cli.Run(ctx, clientEnd{p}) }()
	select {
	case <-p.reqs:
	case <-time.After(10 * time.Second):
		t.Fatal("no first part")
	}
	require.Len(t, cli.waiting, len(types)-1, "the others wait for room")
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
}
