package mux

import (
	"bytes"
	"context"
	"runtime"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kds-engine/kds-engine/engine/internal/kdswire"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

func heapAlloc() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// A peer that fills its response queue with responses of tiny resource
// entries (44 bytes each on the wire, ~280 decoded) makes this side hold
// no more than the queue's byte budget: a response is counted at what it
// holds decoded (kdswire.Measure), not at its encoding, so the session
// ends with ErrInboundFull once that is over the budget. Counted at their
// encoding, the queue took 6.3 times as many of them as fit its budget.
func TestFaultResponsesAreCountedAtWhatTheyHoldDecoded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := newChanStream(ctx)
	const maxSize = 64 << 10
	// Many types, so that the count bound is not what stops it.
	s := NewSession(st, 1000, WithMaxMessageSize(maxSize), WithAbort(cancel))
	budget := s.Params().ResponseBudget
	require.Equal(t, ResponseBudgetMultiple*DefaultInboundBudgetMessages*maxSize, budget)
	wait := run(t, s)

	// A response of 1000 resources of 42 bytes (a two-byte name and
	// version, an Any of 30 bytes), decoded by the KDS codec as the receive
	// loop gets it from gRPC: ~280 bytes each decoded, within what the
	// codec lets through before decoding (kdswire.MaxResponseExpansion).
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: "T"}
	for range 1000 {
		resp.Resources = append(resp.Resources, &discovery.Resource{Name: "ab", Version: "cd", Resource: &anypb.Any{Value: make([]byte, 30)}})
	}
	wire, err := proto.Marshal(asResponse(resp))
	require.NoError(t, err)
	before := heapAlloc()
	peak, sent := int64(0), 0
	for ; sent < 2*s.Params().ClientCapacity && s.Err() == nil; sent++ {
		var m kdsv1.Message
		require.NoError(t, kdswire.Unmarshal(bytes.Clone(wire), &m))
		st.deliver(t, &m)
		waitFor(t, func() bool { return s.Stats().Client.InboundLen == sent+1 || s.Err() != nil }, "queued, or the session ended")
		if s.Err() == nil {
			peak = max(peak, heapAlloc()-before)
		}
	}
	err = wait()
	t.Logf("%d responses of %d bytes sent; the queue held at most %d bytes (%d KiB of heap), the budget is %d: %v",
		sent, len(wire), s.Stats().Client.InboundBytesHighWater, peak>>10, budget, err)
	require.ErrorIs(t, err, ErrInboundFull)
	assert.LessOrEqual(t, s.Stats().Client.InboundBytesHighWater, int64(budget))
	assert.Less(t, peak, int64(budget)*5/4, "the queue held no more than its budget")
}
