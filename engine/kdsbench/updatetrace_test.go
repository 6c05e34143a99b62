package kdsbench

import (
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kds-engine/kds-engine/engine/internal/kdssync"
	"github.com/kds-engine/kds-engine/engine/internal/store/boltstore"
)

// The change tracer attributes a change's time to global's commit (the one
// queued before Write returned), the response that carries the change's
// marker and the zone that applied it last; responses and commits of
// other changes are ignored.
func TestChangeTracerFollowsAChange(t *testing.T) {
	tr := newChangeTracer()
	wire := func(i int) *discovery.DeltaDiscoveryResponse {
		return &discovery.DeltaDiscoveryResponse{Resources: []*discovery.Resource{{Name: "m/p-1", Resource: &anypb.Any{Value: specOf("u"+string(rune('0'+i)), 64)}}}}
	}
	tick := func() time.Time { time.Sleep(time.Millisecond); return time.Now() }
	start := time.Now()
	tr.arm(changeMarker(7), start)
	tr.stage(kdssync.TraceSent, wire(3), false) // another change's response
	queued := tick()
	began := tick()
	done := tick()
	tr.commit(boltstore.CommitTrace{Queued: queued, Began: began, Done: done, Write: time.Millisecond, Group: 1})
	tr.wrote(tick())
	tr.stage(kdssync.TraceSent, wire(7), false)
	tick()
	tr.commit(boltstore.CommitTrace{Queued: tick(), Began: tick(), Done: tick(), Group: 1}) // the zone's
	zones := []*discovery.DeltaDiscoveryResponse{wire(7), wire(7)}
	for _, s := range []kdssync.TraceStage{kdssync.TraceReceived, kdssync.TraceChecked, kdssync.TraceApplying, kdssync.TraceApplied} {
		for _, z := range zones {
			tick()
			tr.stage(s, z, false)
		}
	}
	tr.finish(tick())
	require.Len(t, tr.done, 1)
	c := tr.done[0]
	assert.Equal(t, queued.Sub(start), c.validate)
	assert.Equal(t, began.Sub(queued), c.commitWait)
	assert.Equal(t, done.Sub(began), c.commit)
	assert.Equal(t, time.Millisecond, c.commitWrite)
	for i, d := range c.stages() {
		if i == 1 {
			continue
		}
		assert.Positive(t, d, changeStageNames[i])
	}
	var sum time.Duration
	for i, d := range c.stages() {
		if i != 3 { // bbolt's writes are part of the commit
			sum += d
		}
	}
	assert.Equal(t, c.total, sum, "the stages add up to the change's latency (the last zone's)")

	// Unarmed, nothing is recorded.
	tr.stage(kdssync.TraceSent, wire(7), false)
	tr.commit(boltstore.CommitTrace{Queued: time.Now()})
	assert.Empty(t, tr.sent)
	assert.Empty(t, tr.commits)
}
