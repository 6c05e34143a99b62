package kdsbench

import (
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
)

// The tracer follows a write's stamp from the zone's response to the
// watcher, through the client's response object, and attributes each
// interval to its stage.
func TestStageTracerFollowsAnUpdate(t *testing.T) {
	st := newStageTracer()
	st.reset()
	spec := specOf("c7-123", 64)
	require.Equal(t, "7-123", stampOf(spec))
	wire := func() *discovery.DeltaDiscoveryResponse {
		return &discovery.DeltaDiscoveryResponse{Resources: []*discovery.Resource{{Name: "m/s-1", Resource: &anypb.Any{Value: append([]byte{0x0a, 0x01}, spec...)}}}}
	}
	written := time.Now()
	st.stage(kdssync.TraceSent, wire(), true)
	got := wire() // the client's own decoded copy
	for _, s := range []kdssync.TraceStage{kdssync.TraceReceived, kdssync.TraceChecked, kdssync.TraceApplying, kdssync.TraceApplied} {
		time.Sleep(time.Millisecond)
		st.stage(s, got, false)
	}
	st.seen("7-123", written, time.Now())
	require.Len(t, st.done, 1)
	u := st.done[0]
	assert.True(t, u.afterAnswer)
	for i, d := range u.stages()[1:5] {
		assert.Positive(t, d, stageNames[i+1])
	}
	assert.Empty(t, st.at, "a seen update is forgotten")
	assert.Empty(t, st.carried, "an applied response is forgotten")
}
