// Package metrics holds the engine's Prometheus collectors and the typed
// methods the transport, sync layer, store and plugin host call to update
// them. docs/metrics.md lists every metric; a test keeps the two in step.
//
// Label conventions: zone is the zone a session belongs to (on global the
// connected zone, on a zone its own name); stream is the logical delta-xDS
// stream, StreamGlobalToZone or StreamZoneToGlobal; type is a resource type;
// plugin is a plugin name.
//
// All methods are safe for concurrent use. Methods on a nil *Metrics do
// nothing, so components may run without metrics in tests.
package metrics

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Stream is a logical delta-xDS stream on a session.
type Stream string

// The two logical streams multiplexed on one session.
const (
	StreamGlobalToZone Stream = "global_to_zone"
	StreamZoneToGlobal Stream = "zone_to_global"
)

// EndReason says why a session ended; it is the reason label of
// kds_sessions_ended_total.
type EndReason string

// Session end reasons.
const (
	ReasonSendTimeout EndReason = "send_timeout" // a Send did not return within the send timeout
	ReasonBufferFull  EndReason = "buffer_full"  // a logical stream's send buffer overflowed
	ReasonPeerClosed  EndReason = "peer_closed"  // the peer ended the stream
	ReasonKeepalive   EndReason = "keepalive"    // keepalive pings went unanswered
	ReasonAuth        EndReason = "auth"         // the peer failed authentication
	ReasonShutdown    EndReason = "shutdown"     // this side is stopping
	ReasonReplaced    EndReason = "replaced"     // a newer session of the same zone replaced it
	ReasonOther       EndReason = "other"        // anything else
)

// EndReasons lists every EndReason.
var EndReasons = []EndReason{ReasonSendTimeout, ReasonBufferFull, ReasonPeerClosed, ReasonKeepalive, ReasonAuth, ReasonShutdown, ReasonReplaced, ReasonOther}

// Metrics holds every collector. Create it with New.
type Metrics struct {
	messagesSent     *prometheus.CounterVec
	messagesReceived *prometheus.CounterVec
	bytesSent        *prometheus.CounterVec
	bytesReceived    *prometheus.CounterVec
	bufferMessages   *prometheus.GaugeVec
	bufferCapacity   *prometheus.GaugeVec
	subsWaiting      *prometheus.GaugeVec
	sendDuration     *prometheus.HistogramVec
	sendTimeouts     *prometheus.CounterVec
	sessionsStarted  *prometheus.CounterVec
	sessionsEnded    *prometheus.CounterVec
	sessionConnected *prometheus.GaugeVec
	responsesSent    *prometheus.CounterVec
	responsesACKed   *prometheus.CounterVec
	responsesNACKed  *prometheus.CounterVec
	resources        *prometheus.GaugeVec
	inflightBytes    prometheus.Gauge
	inboundPool      prometheus.Gauge
	inboundPoolWaits prometheus.Counter
	initialSyncs     *prometheus.GaugeVec
	// Vectors without labels: exposed only once set, on global.
	initialSyncWaits *prometheus.CounterVec
	initialSyncHolds *prometheus.CounterVec
	pluginRestarts   *prometheus.CounterVec
	pluginUp         *prometheus.GaugeVec
	validation       *prometheus.HistogramVec
	authRefused      *prometheus.CounterVec
	certExpiry       *prometheus.GaugeVec
	tokenExpiry      *prometheus.GaugeVec
	leader           prometheus.Gauge
	storeAvailable   prometheus.Gauge
	applyRetries     *prometheus.CounterVec
}

// New creates the collectors and registers them with reg. A nil reg
// registers nothing (the collectors still work). Registering twice with
// the same registry is an error.
func New(reg prometheus.Registerer) (*Metrics, error) {
	zs := []string{"zone", "stream"}
	m := &Metrics{
		messagesSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kds_stream_messages_sent_total", Help: "Messages sent on a logical stream.",
		}, zs),
		messagesReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kds_stream_messages_received_total", Help: "Messages received on a logical stream.",
		}, zs),
		bytesSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kds_stream_sent_bytes_total", Help: "Serialized message bytes sent on a logical stream.",
		}, zs),
		bytesReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kds_stream_received_bytes_total", Help: "Serialized message bytes received on a logical stream.",
		}, zs),
		bufferMessages: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kds_send_buffer_messages", Help: "Messages waiting in a logical stream's send buffer.",
		}, zs),
		bufferCapacity: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kds_send_buffer_capacity_messages", Help: "Capacity of a logical stream's send buffer (registered types × responses in flight per type + headroom).",
		}, zs),
		subsWaiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kds_subscriptions_waiting", Help: "Types whose subscription on a logical stream is not sent yet: those sent and not yet answered leave too little of the peer's inbound budget for it.",
		}, zs),
		sendDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kds_send_duration_seconds",
			Help:    "Time a gRPC Send took to return.",
			Buckets: []float64{.0005, .001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60},
		}, zs),
		sendTimeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kds_send_timeouts_total", Help: "Sends that did not return within the send timeout.",
		}, []string{"zone"}),
		sessionsStarted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kds_sessions_started_total", Help: "KDS sessions established.",
		}, []string{"zone"}),
		sessionsEnded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kds_sessions_ended_total", Help: "KDS sessions ended, by reason.",
		}, []string{"zone", "reason"}),
		sessionConnected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kds_session_connected", Help: "1 while a KDS session is up, else 0.",
		}, []string{"zone"}),
		responsesSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kds_responses_sent_total", Help: "Delta discovery responses sent, per type.",
		}, []string{"zone", "type"}),
		responsesACKed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kds_responses_acked_total", Help: "Sent responses the peer ACKed, per type.",
		}, []string{"zone", "type"}),
		responsesNACKed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kds_responses_nacked_total", Help: "Sent responses the peer NACKed, per type.",
		}, []string{"zone", "type"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kds_leader", Help: "1 while this global replica leads (expires session leases, prunes the change log), else 0.",
		}),
		inflightBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kds_sync_inflight_bytes", Help: "Bytes of sync responses sent and not yet answered, all sessions.",
		}),
		resources: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kds_resources", Help: "Resources held in the store, per type.",
		}, []string{"type"}),
		inboundPool: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kds_inbound_pool_bytes", Help: "Bytes received and not yet taken by the sync layer, all sessions' inbound queues together, counted as they hold decoded; bounded by a shared pool (a receive loop that finds it full waits for room).",
		}),
		inboundPoolWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kds_inbound_pool_waits_total", Help: "Times a session's receive loop found the shared inbound pool full and waited for room.",
		}),
		initialSyncs: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kds_initial_syncs", Help: "Global: zones' sessions receiving their zone→global initial state (state=running, at most the slots) and waiting for a slot to subscribe (state=waiting).",
		}, []string{"state"}),
		initialSyncWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kds_initial_sync_waits_total", Help: "Global: zones' sessions that found every initial-sync slot taken and waited before subscribing.",
		}, nil),
		initialSyncHolds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kds_initial_sync_holds_expired_total", Help: "Global: initial-sync slots given back before the zone's initial state had arrived, at the hold limit (limit=hold) or the idle limit (limit=idle).",
		}, []string{"limit"}),
		pluginRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kds_plugin_restarts_total", Help: "Plugin process restarts after a crash.",
		}, []string{"plugin"}),
		pluginUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kds_plugin_up", Help: "1 while a plugin is running and serving, else 0.",
		}, []string{"plugin"}),
		validation: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kds_validation_duration_seconds",
			Help:    "Time to validate one batch of resources through a plugin.",
			Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5},
		}, []string{"plugin"}),
		authRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kds_auth_refused_total", Help: "Zone sessions refused by authentication or the session rate limit, by reason.",
		}, []string{"reason"}),
		certExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kds_tls_certificate_expiry_timestamp_seconds", Help: "When the TLS certificate in use expires (Unix time), by the setting naming its file; for a CA file the earliest of its certificates.",
		}, []string{"setting"}),
		tokenExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kds_zone_token_expiry_timestamp_seconds", Help: "When the token of a zone's latest session expires (Unix time), by zone (global).",
		}, []string{"zone"}),
		storeAvailable: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kds_store_available", Help: "1 while the store answers (always 1 for the embedded store), 0 while its database cannot be reached.",
		}),
		applyRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kds_sync_apply_retries_total", Help: "Attempts to store a peer's response that failed because the store was unavailable and are retried (the response stays un-ACKed).",
		}, []string{"zone"}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return m, nil
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.messagesSent, m.messagesReceived, m.bytesSent, m.bytesReceived,
		m.bufferMessages, m.bufferCapacity, m.subsWaiting, m.sendDuration, m.sendTimeouts,
		m.sessionsStarted, m.sessionsEnded, m.sessionConnected,
		m.responsesSent, m.responsesACKed, m.responsesNACKed,
		m.resources, m.inflightBytes, m.inboundPool, m.inboundPoolWaits, m.initialSyncs, m.initialSyncWaits, m.initialSyncHolds, m.pluginRestarts, m.pluginUp, m.validation, m.authRefused,
		m.certExpiry, m.tokenExpiry, m.leader, m.storeAvailable, m.applyRetries,
	}
}

// ObserveSend records one message sent on stream: its size and how long
// the gRPC Send took.
func (m *Metrics) ObserveSend(zone string, stream Stream, bytes int, d time.Duration) {
	if m == nil {
		return
	}
	m.messagesSent.WithLabelValues(zone, string(stream)).Inc()
	m.bytesSent.WithLabelValues(zone, string(stream)).Add(float64(bytes))
	m.sendDuration.WithLabelValues(zone, string(stream)).Observe(d.Seconds())
}

// ObserveSendDuration records how long one gRPC Send on stream took.
// Message and byte counts are added separately (AddTraffic).
func (m *Metrics) ObserveSendDuration(zone string, stream Stream, d time.Duration) {
	if m == nil {
		return
	}
	m.sendDuration.WithLabelValues(zone, string(stream)).Observe(d.Seconds())
}

// AddTraffic adds counts sampled from a session's own counters: messages
// and bytes sent and received on stream since the previous sample.
func (m *Metrics) AddTraffic(zone string, stream Stream, msgsSent, bytesSent, msgsRecv, bytesRecv uint64) {
	if m == nil {
		return
	}
	m.messagesSent.WithLabelValues(zone, string(stream)).Add(float64(msgsSent))
	m.bytesSent.WithLabelValues(zone, string(stream)).Add(float64(bytesSent))
	m.messagesReceived.WithLabelValues(zone, string(stream)).Add(float64(msgsRecv))
	m.bytesReceived.WithLabelValues(zone, string(stream)).Add(float64(bytesRecv))
}

// AddResponses adds per-type response counts sampled since the previous
// sample.
func (m *Metrics) AddResponses(zone, typ string, sent, acked, nacked uint64) {
	if m == nil {
		return
	}
	m.responsesSent.WithLabelValues(zone, typ).Add(float64(sent))
	m.responsesACKed.WithLabelValues(zone, typ).Add(float64(acked))
	m.responsesNACKed.WithLabelValues(zone, typ).Add(float64(nacked))
}

// MessageReceived records one message received for stream.
func (m *Metrics) MessageReceived(zone string, stream Stream, bytes int) {
	if m == nil {
		return
	}
	m.messagesReceived.WithLabelValues(zone, string(stream)).Inc()
	m.bytesReceived.WithLabelValues(zone, string(stream)).Add(float64(bytes))
}

// SetSendBuffer records how many messages wait in stream's send buffer.
func (m *Metrics) SetSendBuffer(zone string, stream Stream, messages int) {
	if m == nil {
		return
	}
	m.bufferMessages.WithLabelValues(zone, string(stream)).Set(float64(messages))
}

// SetSendBufferCapacity records the capacity of stream's send buffer.
func (m *Metrics) SetSendBufferCapacity(zone string, stream Stream, capacity int) {
	if m == nil {
		return
	}
	m.bufferCapacity.WithLabelValues(zone, string(stream)).Set(float64(capacity))
}

// SetSubscriptionsWaiting records how many types' subscriptions on stream
// (the one this side subscribes on) wait for room in the peer's inbound
// budget.
func (m *Metrics) SetSubscriptionsWaiting(zone string, stream Stream, types int) {
	if m == nil {
		return
	}
	m.subsWaiting.WithLabelValues(zone, string(stream)).Set(float64(types))
}

// SendTimeout records a Send that exceeded the send timeout. The session end
// that follows is recorded separately with SessionEnded.
func (m *Metrics) SendTimeout(zone string) {
	if m == nil {
		return
	}
	m.sendTimeouts.WithLabelValues(zone).Inc()
}

// SessionStarted records an established session for zone and creates the
// zone's per-session series at zero.
func (m *Metrics) SessionStarted(zone string) {
	if m == nil {
		return
	}
	m.sessionsStarted.WithLabelValues(zone).Inc()
	m.sessionConnected.WithLabelValues(zone).Set(1)
	m.zeroSessionSeries(zone)
}

// ZoneStarting creates a zone's own per-session series before its first
// session to global: kds_session_connected at 0 and the counters at zero,
// so that a zone that never gets a session (global down, a wrong CA, a
// refused token) is seen disconnected by a query such as
// kds_session_connected == 0 instead of having no series at all.
func (m *Metrics) ZoneStarting(zone string) {
	if m == nil {
		return
	}
	m.sessionConnected.WithLabelValues(zone).Set(0)
	m.sessionsStarted.WithLabelValues(zone).Add(0)
	m.zeroSessionSeries(zone)
}

// zeroSessionSeries creates zone's per-session series at zero so they are
// scraped (and rate() works) before the first event.
func (m *Metrics) zeroSessionSeries(zone string) {
	for _, s := range []Stream{StreamGlobalToZone, StreamZoneToGlobal} {
		m.messagesSent.WithLabelValues(zone, string(s)).Add(0)
		m.messagesReceived.WithLabelValues(zone, string(s)).Add(0)
		m.bytesSent.WithLabelValues(zone, string(s)).Add(0)
		m.bytesReceived.WithLabelValues(zone, string(s)).Add(0)
		m.sendDuration.WithLabelValues(zone, string(s))
	}
	m.sendTimeouts.WithLabelValues(zone).Add(0)
	for _, r := range EndReasons {
		m.sessionsEnded.WithLabelValues(zone, string(r)).Add(0)
	}
}

// SessionEnded records the end of zone's session and why, and drops the
// zone's send-buffer and waiting-subscription gauges (a new session sets
// them again).
func (m *Metrics) SessionEnded(zone string, reason EndReason) {
	if m == nil {
		return
	}
	m.sessionsEnded.WithLabelValues(zone, string(reason)).Inc()
	m.sessionConnected.WithLabelValues(zone).Set(0)
	m.bufferMessages.DeletePartialMatch(prometheus.Labels{"zone": zone})
	m.bufferCapacity.DeletePartialMatch(prometheus.Labels{"zone": zone})
	m.subsWaiting.DeletePartialMatch(prometheus.Labels{"zone": zone})
}

// SetLeader records whether this replica leads.
func (m *Metrics) SetLeader(leader bool) {
	if m == nil {
		return
	}
	v := 0.0
	if leader {
		v = 1
	}
	m.leader.Set(v)
}

// SetInflightBytes records the bytes of sync responses in flight.
func (m *Metrics) SetInflightBytes(n int64) {
	if m == nil {
		return
	}
	m.inflightBytes.Set(float64(n))
}

// SetInitialSyncs records global's initial syncs running and waiting for a
// slot, and adds waits, expired and idled: the waits and the holds ended at
// the hold and at the idle limit since the previous call.
func (m *Metrics) SetInitialSyncs(running, waiting int, waits, expired, idled uint64) {
	if m == nil {
		return
	}
	m.initialSyncs.WithLabelValues("running").Set(float64(running))
	m.initialSyncs.WithLabelValues("waiting").Set(float64(waiting))
	m.initialSyncWaits.WithLabelValues().Add(float64(waits))
	m.initialSyncHolds.WithLabelValues("hold").Add(float64(expired))
	m.initialSyncHolds.WithLabelValues("idle").Add(float64(idled))
}

// SetInboundPool records the bytes the shared inbound pool holds and adds
// waits, the receive loops' waits for room since the previous call.
func (m *Metrics) SetInboundPool(bytes int64, waits uint64) {
	if m == nil {
		return
	}
	m.inboundPool.Set(float64(bytes))
	m.inboundPoolWaits.Add(float64(waits))
}

// SessionReplaced records the end of a session that a newer session of the
// same zone replaced: it is counted as ended, and the zone's connected
// gauge and buffer series, which follow the live session, are left alone.
func (m *Metrics) SessionReplaced(zone string) {
	if m == nil {
		return
	}
	m.sessionsEnded.WithLabelValues(zone, string(ReasonReplaced)).Inc()
}

// ResponseSent records a response of typ sent to zone (and creates its ACK
// and NACK series at zero).
func (m *Metrics) ResponseSent(zone, typ string) {
	if m == nil {
		return
	}
	m.responsesSent.WithLabelValues(zone, typ).Inc()
	m.responsesACKed.WithLabelValues(zone, typ).Add(0)
	m.responsesNACKed.WithLabelValues(zone, typ).Add(0)
}

// ResponseACKed records the peer's ACK of a response of typ.
func (m *Metrics) ResponseACKed(zone, typ string) {
	if m == nil {
		return
	}
	m.responsesACKed.WithLabelValues(zone, typ).Inc()
}

// ResponseNACKed records the peer's NACK of a response of typ.
func (m *Metrics) ResponseNACKed(zone, typ string) {
	if m == nil {
		return
	}
	m.responsesNACKed.WithLabelValues(zone, typ).Inc()
}

// SetResources records how many resources of typ the store holds.
func (m *Metrics) SetResources(typ string, n int) {
	if m == nil {
		return
	}
	m.resources.WithLabelValues(typ).Set(float64(n))
}

// PluginRestarted records a restart of plugin after a crash.
func (m *Metrics) PluginRestarted(plugin string) {
	if m == nil {
		return
	}
	m.pluginRestarts.WithLabelValues(plugin).Add(1)
}

// AuthRefused counts a zone session refused for reason (one of the fixed
// kdsauth reasons, so the label stays bounded).
func (m *Metrics) AuthRefused(reason string) {
	if m == nil {
		return
	}
	m.authRefused.WithLabelValues(reason).Add(1)
}

// SetPluginUp records whether plugin is running and serving, and creates the
// plugin's other series at zero.
func (m *Metrics) SetPluginUp(plugin string, up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.pluginUp.WithLabelValues(plugin).Set(v)
	m.pluginRestarts.WithLabelValues(plugin).Add(0)
	m.validation.WithLabelValues(plugin)
}

// ObserveValidation records how long plugin took to validate one batch.
func (m *Metrics) ObserveValidation(plugin string, d time.Duration) {
	if m == nil {
		return
	}
	m.validation.WithLabelValues(plugin).Observe(d.Seconds())
}

// SetCertificateExpiry records when the certificate in use from the file
// named by setting (a flag name such as "tls-cert-file") expires. The
// settings are a fixed set, so the label stays bounded.
func (m *Metrics) SetCertificateExpiry(setting string, notAfter time.Time) {
	if m == nil {
		return
	}
	m.certExpiry.WithLabelValues(setting).Set(float64(notAfter.Unix()))
}

// SetZoneTokenExpiry records when the token zone's latest session
// authenticated with expires. zone is an authenticated zone, so the label
// is bounded by the zones global has tokens for.
func (m *Metrics) SetZoneTokenExpiry(zone string, expires time.Time) {
	if m == nil {
		return
	}
	m.tokenExpiry.WithLabelValues(zone).Set(float64(expires.Unix()))
}

// SetStoreAvailable records whether the store answers.
func (m *Metrics) SetStoreAvailable(up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.storeAvailable.Set(v)
}

// ApplyRetried records a failed attempt to store a response received on
// zone's session that is retried because the store was unavailable.
func (m *Metrics) ApplyRetried(zone string) {
	if m == nil {
		return
	}
	m.applyRetries.WithLabelValues(zone).Inc()
}

// ZoneSessionStarted creates, at zero, the series that only global keeps
// per zone, so that they are scraped before their first event. Global
// calls it next to SessionStarted.
func (m *Metrics) ZoneSessionStarted(zone string) {
	if m == nil {
		return
	}
	m.applyRetries.WithLabelValues(zone).Add(0)
}
