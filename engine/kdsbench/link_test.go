package kdsbench

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// echoServer answers every byte it reads with the same byte.
func echoServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	t.Cleanup(func() { lis.Close(); <-done })
	return lis.Addr().String()
}

// A shaped link never delivers faster than it is told to: a round trip
// takes at least the RTT, and a megabyte at 10 MB/s at least 100 ms
// (lower bounds only: a loaded machine is slower, never faster). The
// bytes arrive intact and in order.
func TestShapedLinkDelaysAndLimitsRate(t *testing.T) {
	const rtt = 40 * time.Millisecond
	p, err := newLinkProxy(echoServer(t), true, Link{RTT: rtt, Bandwidth: 10_000_000})
	require.NoError(t, err)
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr().String())
	require.NoError(t, err)
	defer c.Close()

	start := time.Now()
	_, err = c.Write([]byte{1})
	require.NoError(t, err)
	one := make([]byte, 1)
	_, err = io.ReadFull(c, one)
	require.NoError(t, err)
	// Half the RTT on the way to the echo server, half on the way back.
	assert.GreaterOrEqual(t, time.Since(start), rtt, "one byte's round trip")

	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	start = time.Now()
	errc := make(chan error, 1)
	go func() { _, err := c.Write(payload); errc <- err }()
	got := make([]byte, len(payload))
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	require.NoError(t, <-errc)
	assert.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond, "1 MiB at 10 MB/s")
	assert.Equal(t, payload, got)
	assert.Equal(t, int64(2*(len(payload)+1)), p.Bytes())
}

// The queue bounds what one direction holds: a writer that outruns the
// link waits instead of queueing without limit.
func TestLinkQueueBoundsBytes(t *testing.T) {
	q := &linkQueue{limit: 100}
	q.cond = newCond(q)
	require.True(t, q.push(chunk{b: make([]byte, 80)}))
	pushed := make(chan bool, 1)
	go func() { pushed <- q.push(chunk{b: make([]byte, 50)}) }()
	select {
	case <-pushed:
		t.Fatal("a push over the limit did not wait")
	case <-time.After(50 * time.Millisecond):
	}
	c, ok := q.pop()
	require.True(t, ok)
	q.release(len(c.b))
	assert.True(t, <-pushed)
	q.fail()
	assert.False(t, q.push(chunk{b: make([]byte, 200)}), "no push after the far end failed")
}

// The wan mode runs end to end at a toy size and fills its figures (no
// timing is asserted).
func TestWANSmoke(t *testing.T) {
	r, err := WAN(context.Background(), Options{PluginsDir: pluginsDir},
		WANConfig{N: 300, Size: 256, RTTs: []time.Duration{20 * time.Millisecond}})
	require.NoError(t, err)
	assert.Positive(t, r.Figures["rtt_0ms_engine_seconds"])
	assert.Positive(t, r.Figures["rtt_20ms_engine_seconds"])
	assert.Positive(t, r.Figures["rtt_20ms_baseline_seconds"])
	assert.GreaterOrEqual(t, r.Figures["rtt_20ms_engine_seconds"], 0.02, "at least one round trip over the shaped link")
	assert.Greater(t, r.Figures["rtt_20ms_link_floor_seconds"], 0.02, "the link's floor: its round trip plus the bytes at its rate")
	assert.LessOrEqual(t, r.Figures["rtt_20ms_link_floor_seconds"], r.Figures["rtt_20ms_engine_seconds"], "no sync beats the link's floor")
	assert.False(t, r.Pass, "the judged 50 ms link did not run")
}
