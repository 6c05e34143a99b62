package kdssync

import (
	"sync/atomic"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// TraceStage names a point on a response's way from a server to a client's
// commit (see SetTrace).
type TraceStage int

// The traced stages, in the order a response passes them.
const (
	// TraceSent: a server handed the response to its stream. afterAnswer
	// is set when it was sent while handling the peer's answer to an
	// earlier response (a window slot opened), clear when a change
	// notification found the window open.
	TraceSent TraceStage = iota
	// TraceReceived: a client took the response from its stream.
	TraceReceived
	// TraceChecked: the client decoded and validated it.
	TraceChecked
	// TraceApplying: the applying stage took it (alone or in a batch) and
	// calls Sink.Apply.
	TraceApplying
	// TraceApplied: Sink.Apply returned; the response is answered next.
	TraceApplied
)

// TraceFunc observes one stage of one response. It runs on the session's
// own goroutines and must return quickly.
type TraceFunc func(stage TraceStage, resp *discovery.DeltaDiscoveryResponse, afterAnswer bool)

var tracer atomic.Pointer[TraceFunc]

// SetTrace makes every server and client of this process report their
// responses' stages to f (nil stops it). It is instrumentation for
// kds-bench's latency breakdown; without it the stages cost one atomic
// load each.
func SetTrace(f TraceFunc) {
	if f == nil {
		tracer.Store(nil)
		return
	}
	tracer.Store(&f)
}

func trace(stage TraceStage, resp *discovery.DeltaDiscoveryResponse, afterAnswer bool) {
	if f := tracer.Load(); f != nil {
		(*f)(stage, resp, afterAnswer)
	}
}
