package kdssync

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
)

// Held answers from the session's own view: the version the peer applied,
// the version it refused, nothing for a type it did not subscribe to, and
// no entry once the session ended.
func TestHeldReportsWhatThePeerApplied(t *testing.T) {
	ix := NewIndex([]string{"MeshTimeout", "Mesh"})
	require.NoError(t, ix.Put(res("MeshTimeout", "default", "good", "v1", 10)))
	require.NoError(t, ix.Put(res("MeshTimeout", "default", "bad-1", "v1", 10)))
	require.NoError(t, ix.Put(res("Mesh", "", "default", "m1", 10)))
	sink := newMemSink()
	ctx, cancel := context.WithCancel(context.Background())
	p := newPipe(ctx)
	ins := insights.NewRegistry()
	srv := NewServer(ix, WithServerInsights(ins))
	cli := NewClient([]string{"MeshTimeout"}, sink, rejectValidator{}, "global", "zone-1")
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = srv.Serve(ctx, serverEnd{p}, "zone-1") }()
	go func() { defer wg.Done(); _ = cli.Run(ctx, clientEnd{p}) }()
	defer func() { cancel(); wg.Wait() }()

	require.Eventually(t, func() bool {
		c, _ := ins.Get("zone-1")
		return c.Types["MeshTimeout"].ResponsesNACKed == 1 && len(sink.snapshot()) == 1
	}, 10*time.Second, 5*time.Millisecond)

	got, err := srv.Held(context.Background(), "MeshTimeout", "default/good")
	require.NoError(t, err)
	assert.Equal(t, map[string]PeerHolding{"zone-1": {Subscribed: true, Holds: true, Version: "v1"}}, got)

	got, err = srv.Held(context.Background(), "MeshTimeout", "default/bad-1")
	require.NoError(t, err)
	assert.Equal(t, PeerHolding{Subscribed: true, Rejected: true, RejectedVersion: "v1"}, got["zone-1"])

	got, err = srv.Held(context.Background(), "Mesh", "default")
	require.NoError(t, err)
	assert.Equal(t, PeerHolding{}, got["zone-1"], "the client did not subscribe to Mesh")

	// After a change is ACKed the new version is what the peer holds.
	require.NoError(t, ix.Put(res("MeshTimeout", "default", "good", "v2", 10)))
	require.Eventually(t, func() bool {
		got, err := srv.Held(context.Background(), "MeshTimeout", "default/good")
		return err == nil && got["zone-1"].Version == "v2" && !got["zone-1"].Pending
	}, 10*time.Second, 5*time.Millisecond)

	cancel()
	wg.Wait()
	got, err = srv.Held(context.Background(), "MeshTimeout", "default/good")
	require.NoError(t, err)
	assert.Empty(t, got, "an ended session is not asked")
}

// Held gives up when its context ends instead of waiting for a session.
func TestHeldStopsWithItsContext(t *testing.T) {
	srv := NewServer(NewIndex([]string{"Mesh"}))
	ss := &serverSession{Server: srv, peer: "zone-1", queries: make(chan heldQuery), done: make(chan struct{})}
	srv.sessions.add(ss) // a session whose loop never answers
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	got, err := srv.Held(ctx, "Mesh", "default")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Empty(t, got)
}
