package engine

import (
	"context"
	"errors"
	"slices"
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

// metricZone is the zone label of a session's metrics: on global the
// connected zone (peer), on a zone its own name (not the insights name of
// its connection to global).
func (e *Engine) metricZone(peer string) string {
	if e.cfg.Role == RoleZone {
		return e.cfg.ZoneName
	}
	return peer
}

// sendObserver returns the mux option that records every Send of peer's
// session in the send-latency histogram.
func (e *Engine) sendObserver(peer string) []mux.Option {
	srvName, cliName := e.streams()
	zone := e.metricZone(peer)
	return []mux.Option{mux.WithInboundPool(e.inboundPool), mux.WithSendObserver(func(server bool, n int, d time.Duration) {
		if e.observeSent != nil {
			e.observeSent(peer, n)
		}
		name := cliName
		if server {
			name = srvName
		}
		e.metrics.ObserveSendDuration(zone, name, d)
	})}
}

// sampleSession copies sess's counters to the metrics under peer every
// second until ctx ends, then once more.
func (e *Engine) sampleSession(ctx context.Context, peer string, sess *mux.Session) {
	srvName, cliName := e.streams()
	// The stream this side serves is sized from the peer's announced type
	// count, the one it subscribes on from its own.
	mz := e.metricZone(peer)
	e.metrics.SetSendBufferCapacity(mz, srvName, sess.Params().ServerCapacity)
	e.metrics.SetSendBufferCapacity(mz, cliName, sess.Params().ClientCapacity)
	var last mux.Stats
	sample := func() {
		st := sess.Stats()
		for _, s := range []struct {
			name      metrics.Stream
			now, prev mux.StreamStats
		}{{srvName, st.Server, last.Server}, {cliName, st.Client, last.Client}} {
			e.metrics.AddTraffic(mz, s.name,
				s.now.MessagesSent-s.prev.MessagesSent, s.now.BytesSent-s.prev.BytesSent,
				s.now.MessagesReceived-s.prev.MessagesReceived, s.now.BytesReceived-s.prev.BytesReceived)
			e.metrics.SetSendBuffer(mz, s.name, s.now.SendBufferLen)
		}
		if ctx.Err() == nil {
			// Only a live session: a replaced one must not overwrite the
			// state of the session that replaced it.
			e.ins.SetStreams(peer, []insights.StreamState{
				streamState(srvName, "server", st.Server), streamState(cliName, "client", st.Client),
			})
			e.metrics.SetSubscriptionsWaiting(mz, cliName, e.subscriptionsWaiting(peer))
		}
		if st.SendTimeouts > last.SendTimeouts {
			e.metrics.SendTimeout(mz)
		}
		last = st
	}
	every(ctx, sessionSampleInterval, sample)
	sample()
}

// subscriptionsWaiting counts the types whose subscription on peer's
// session waits for room in the peer's inbound budget (insights). Types
// waiting for an initial-sync slot are not among them: every type of each
// waiting zone would count, and kds_initial_syncs counts those zones.
func (e *Engine) subscriptionsWaiting(peer string) int {
	c, _ := e.ins.Get(peer)
	n := 0
	for _, ts := range c.Types {
		if !ts.WaitingSince.IsZero() && ts.WaitingFor != insights.WaitingForSlot {
			n++
		}
	}
	return n
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

// sampleEngine refreshes engine-wide metrics (plugins, resources held,
// responses per type) at once and then every interval until ctx ends.
func (e *Engine) sampleEngine(ctx context.Context, interval time.Duration) {
	restarts := map[string]int{}
	type key struct{ peer, typ string }
	responses := map[key]insights.TypeState{}
	var poolWaits, admitWaits, admitExpired, admitIdled uint64
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
		// Resources held: the index counts what this side serves (written
		// here); the store counts what it received, on global from every
		// zone, connected or not.
		held := map[string]int{}
		for _, t := range e.served {
			held[t] = e.ix.Len(t)
		}
		// On a zone, what it holds of a type received from global is what
		// its sync client last counted (read from the store when a session
		// starts, kept after every apply): no scan of every key of the
		// type every interval, which on a large zone cost a burst of CPU
		// and allocation that showed in the update latency's tail.
		var fromGlobal map[string]insights.TypeState
		if e.cfg.Role == RoleZone {
			if c, ok := e.ins.Get(GlobalPeer); ok {
				fromGlobal = c.Types
			}
		}
		for _, t := range e.received {
			if ts, ok := fromGlobal[t]; ok && !ts.Unknown {
				held[t] = ts.ResourcesHeld
				continue
			}
			n, err := countHeld(ctx, e.raw, t)
			if err != nil {
				continue // stopping, or the store failed: keep the last value
			}
			held[t] = n
		}
		// The response counters count responses this side sent, so only
		// the types it serves: for a type it receives, the insights count
		// the responses it received and ACKed or NACKed itself.
		for _, c := range e.ins.List() {
			for typ, ts := range c.Types {
				if !slices.Contains(e.served, typ) {
					continue // received, or a type a peer asked for (never a metric label)
				}
				k := key{c.Name, typ}
				prev := responses[k]
				if ts.ResponsesSent >= prev.ResponsesSent && ts.ResponsesACKed >= prev.ResponsesACKed && ts.ResponsesNACKed >= prev.ResponsesNACKed {
					e.metrics.AddResponses(e.metricZone(c.Name), typ, ts.ResponsesSent-prev.ResponsesSent, ts.ResponsesACKed-prev.ResponsesACKed, ts.ResponsesNACKed-prev.ResponsesNACKed)
				}
				responses[k] = ts
			}
		}
		for typ, n := range held {
			e.metrics.SetResources(typ, n)
		}
		if e.inflight != nil {
			e.metrics.SetInflightBytes(e.inflight.Used())
		}
		if a := e.admission; a != nil {
			w, x, i := a.Waits(), a.Expired(), a.Idled()
			e.metrics.SetInitialSyncs(a.Running(), a.Waiting(), w-admitWaits, x-admitExpired, i-admitIdled)
			admitWaits, admitExpired, admitIdled = w, x, i
		}
		if e.inboundPool != nil {
			w := e.inboundPool.Waits()
			e.metrics.SetInboundPool(e.inboundPool.Queued(), w-poolWaits)
			poolWaits = w
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
// stopping is true when this side is shutting down (which ends every
// stream with the same errors a peer that goes away causes).
func endReason(err error, stopping bool) metrics.EndReason {
	switch {
	case stopping:
		return metrics.ReasonShutdown
	case err == nil:
		return metrics.ReasonOther
	case errors.Is(err, mux.ErrSendTimeout):
		return metrics.ReasonSendTimeout
	case errors.Is(err, mux.ErrBufferFull), errors.Is(err, mux.ErrInboundFull):
		return metrics.ReasonBufferFull
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
	case kdsgrpc.PeerClosed(err):
		return metrics.ReasonPeerClosed
	}
	return metrics.ReasonOther
}

// countHeld returns how many resources of typ s holds: s's own count when
// it keeps one (store.Counter), else the length of a Versions scan.
func countHeld(ctx context.Context, s store.Store, typ string) (int, error) {
	if c, ok := s.(store.Counter); ok {
		return c.Count(ctx, typ)
	}
	kvs, err := s.Versions(ctx, store.Filter{Type: typ})
	return len(kvs), err
}
