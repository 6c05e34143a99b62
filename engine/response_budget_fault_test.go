package engine

import (
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// A zone that floods global with responses of empty resource entries (2
// bytes each on the wire, ~144 decoded) makes global hold no more than its
// response queue's byte budget: global refuses a response that would hold
// many times its size before decoding it (kdswire.MaxResponseExpansion),
// and counts the others at what they hold decoded, so the session ends
// before the queue holds more. Counted at their encoding, the queue took
// every response that fit its count and held ~90x its byte budget.
func TestFaultHostileZoneEmptyResourcesAreBoundedInMemory(t *testing.T) {
	env := startHostileEnv(t, Config{})
	heap := func() int64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc)
	}
	// 64k empty resources: 128 KiB on the wire, half global's max message
	// size (hostileMaxMsg).
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: kdssync.TypeURL("Dataplane"), Nonce: "1",
		Resources: make([]*discovery.Resource, 64<<10)}
	for i := range resp.Resources {
		resp.Resources[i] = &discovery.Resource{}
	}
	msg := &kdsv1.Message{Kind: &kdsv1.Message_Response{Response: resp}}
	size := proto.Size(msg)
	const zone = "zone-empty"
	s := rawSession(t, dialGlobal(t, env.g), zone, tokenFor(t, env.g, zone))
	before := heap()

	// Sample global's heap while the zone sends.
	var peak atomic.Int64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			peak.Store(max(peak.Load(), heap()-before))
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	sent := 0
	for ; sent < 200; sent++ {
		if s.Send(msg) != nil {
			break
		}
	}
	// What was sent has arrived, or the session ended.
	eventually(t, func() bool {
		c, _ := env.g.e.Insights().Get(zone)
		return !c.Online
	}, "global ended the session")
	close(stop)
	<-done
	hog, _ := env.g.e.Insights().Get(zone)
	budget := int64(2 * 16 * hostileMaxMsg)
	t.Logf("%d responses of %d bytes sent; global's heap grew by at most %d KiB while they arrived (response budget %d KiB); last error %q",
		sent, size, peak.Load()>>10, budget>>10, hog.LastError)
	// Refused on receipt, before it is decoded (it would hold 145 times
	// its size), or counted at what it holds once decoded.
	assert.True(t, strings.Contains(hog.LastError, "response refused") || strings.Contains(hog.LastError, "inbound queue full"), hog.LastError)
	// The budget, plus the message being decoded and slack for the heap's
	// noise.
	assert.Less(t, peak.Load(), 2*budget+(16<<20), "what the zone's responses hold is bounded by the budget")
	require.NotZero(t, sent)
	env.assertHonestZoneSyncs(t)
}
