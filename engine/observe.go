package engine

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc/peer"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/kdsgrpc"
	"github.com/kds-engine/kds-engine/engine/internal/metrics"
	"github.com/kds-engine/kds-engine/engine/internal/mux"
	"github.com/kds-engine/kds-engine/engine/internal/plugin"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// sessionSampleInterval is how often a session's own counters are copied to
// the Prometheus metrics.
const sessionSampleInterval = time.Second

// streams returns the metric names of a session's serving and subscribing
// logical streams on this side.
func (e *Engine) streams() (server, client metrics.Stream) {
	if e.cfg.Role == RoleGlobal {
		return metrics.StreamGlobalToZone, metrics.StreamZoneToGlobal
	}
	return metrics.StreamZoneToGlobal, metrics.StreamGlobalToZone
}

// sendObserver returns the mux option that records every Send of peer's
// session in the send-latency histogram.
func (e *Engine) sendObserver(peer string) []mux.Option {
	srvName, cliName := e.streams()
	return []mux.Option{mux.WithInboundPool(e.inboundPool), mux.WithSendObserver(func(server bool, n int, d time.Duration) {
		if e.observeSent != nil {
			e.observeSent(peer, n)
		}
		name := cliName
		if server {
			name = srvName
		}
		e.metrics.ObserveSendDuration(peer, name, d)
	})}
}

// sampleSession copies sess's counters to the metrics under peer every
// second until ctx ends, then once more.
func (e *Engine) sampleSession(ctx context.Context, peer string, sess *mux.Session) {
	srvName, cliName := e.streams()
	// The stream this side serves is sized from the peer's announced type
	// count, the one it subscribes on from its own.
	e.metrics.SetSendBufferCapacity(peer, srvName, sess.Params().ServerCapacity)
	e.metrics.SetSendBufferCapacity(peer, cliName, sess.Params().ClientCapacity)
	var last mux.Stats
	sample := func() {
		st := sess.Stats()
		for _, s := range []struct {
			name      metrics.Stream
			now, prev mux.StreamStats
		}{{srvName, st.Server, last.Server}, {cliName, st.Client, last.Client}} {
			e.metrics.AddTraffic(peer, s.name,
				s.now.MessagesSent-s.prev.MessagesSent, s.now.BytesSent-s.prev.BytesSent,
				s.now.MessagesReceived-s.prev.MessagesReceived, s.now.BytesReceived-s.prev.BytesReceived)
			e.metrics.SetSendBuffer(peer, s.name, s.now.SendBufferLen)
		}
		if ctx.Err() == nil {
			// Only a live session: a replaced one must not overwrite the
			// state of the session that replaced it.
			e.ins.SetStreams(peer, []insights.StreamState{
				streamState(srvName, "server", st.Server), streamState(cliName, "client", st.Client),
			})
		}
		if st.SendTimeouts > last.SendTimeouts {
			e.metrics.SendTimeout(peer)
		}
		last = st
	}
	every(ctx, sessionSampleInterval, sample)
	sample()
}

func streamState(name metrics.Stream, role string, s mux.StreamStats) insights.StreamState {
	return insights.StreamState{Name: string(name), Role: role, SendBufferLen: s.SendBufferLen,
		SendBufferHighWater: s.SendBufferHighWater, Capacity: s.Capacity}
}

// streamPeer returns the remote address of a gRPC stream's context, "" when
// it carries none.
func streamPeer(ctx context.Context) string {
	if ctx == nil {
		return ""
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// sampleEngine refreshes engine-wide metrics (plugins, resources, responses
// per type) every interval until ctx ends.
func (e *Engine) sampleEngine(ctx context.Context, interval time.Duration) {
	restarts := map[string]int{}
	type key struct{ peer, typ string }
	responses := map[key]insights.TypeState{}
	sample := func() {
		for _, p := range e.host.Plugins() {
			if d := p.Restarts - restarts[p.Name]; d > 0 {
				for range d {
					e.metrics.PluginRestarted(p.Name)
				}
			}
			restarts[p.Name] = p.Restarts
			e.metrics.SetPluginUp(p.Name, p.State == plugin.StateRunning)
		}
		held := map[string]int{}
		served := map[string]bool{}
		for _, t := range e.served {
			held[t] = e.ix.Len(t)
			served[t] = true
		}
		registered := e.host.Registry()
		for _, c := range e.ins.List() {
			for typ, ts := range c.Types {
				if _, ok := registered.Type(typ); !ok {
					continue // a type a peer asked for: never a metric label
				}
				k := key{c.Name, typ}
				prev := responses[k]
				if ts.ResponsesSent >= prev.ResponsesSent && ts.ResponsesACKed >= prev.ResponsesACKed && ts.ResponsesNACKed >= prev.ResponsesNACKed {
					e.metrics.AddResponses(c.Name, typ, ts.ResponsesSent-prev.ResponsesSent, ts.ResponsesACKed-prev.ResponsesACKed, ts.ResponsesNACKed-prev.ResponsesNACKed)
				}
				responses[k] = ts
				if !served[typ] {
					held[typ] += ts.ResourcesHeld // every zone's, on global
				}
			}
		}
		for typ, n := range held {
			e.metrics.SetResources(typ, n)
		}
		if e.inflight != nil {
			e.metrics.SetInflightBytes(e.inflight.Used())
		}
	}
	sample()
	every(ctx, interval, sample)
}

// every calls f every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// endReason classifies why a session ended for kds_sessions_ended_total.
func endReason(err error) metrics.EndReason {
	switch {
	case err == nil:
		return metrics.ReasonOther
	case errors.Is(err, mux.ErrSendTimeout):
		return metrics.ReasonSendTimeout
	case errors.Is(err, mux.ErrBufferFull), errors.Is(err, mux.ErrInboundFull):
		return metrics.ReasonBufferFull
	case errors.Is(err, context.Canceled):
		return metrics.ReasonShutdown
	case errors.Is(err, io.EOF), errors.Is(err, mux.ErrSessionClosed):
		return metrics.ReasonPeerClosed
	case errors.Is(err, ErrSessionReplaced), errors.Is(err, store.ErrFenced):
		return metrics.ReasonReplaced
	case errors.Is(err, kdsgrpc.ErrCredentialsRevoked):
		return metrics.ReasonAuth
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "keepalive"):
		return metrics.ReasonKeepalive
	case strings.Contains(msg, "Unauthenticated"):
		return metrics.ReasonAuth
	}
	return metrics.ReasonOther
}
