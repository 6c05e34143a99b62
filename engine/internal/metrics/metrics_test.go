package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// touchAll calls every method once so every vector has a series.
func touchAll(m *Metrics) {
	m.ObserveSend("zone-1", StreamGlobalToZone, 100, 2*time.Millisecond)
	m.MessageReceived("zone-1", StreamZoneToGlobal, 50)
	m.SetSendBuffer("zone-1", StreamGlobalToZone, 3)
	m.SetSendBufferCapacity("zone-1", StreamGlobalToZone, 19)
	m.SetSubscriptionsWaiting("zone-1", StreamGlobalToZone, 4)
	m.SendTimeout("zone-1")
	m.SessionStarted("zone-1")
	m.SessionEnded("zone-2", ReasonSendTimeout)
	m.ResponseSent("zone-1", "MeshTimeout")
	m.ResponseACKed("zone-1", "MeshTimeout")
	m.ResponseNACKed("zone-1", "MeshTimeout")
	m.SetResources("MeshTimeout", 7)
	m.AuthRefused("expired")
	m.PluginRestarted("policies")
	m.SetPluginUp("policies", true)
	m.ObserveValidation("policies", time.Millisecond)
	m.SetCertificateExpiry("tls-cert-file", time.Unix(1900000000, 0))
	m.SetZoneTokenExpiry("zone-1", time.Unix(1900000000, 0))
	m.SetLeader(true)
	m.SetStoreAvailable(true)
	m.ApplyRetried("zone-1")
	m.SetInitialSyncs(1, 2, 3, 0, 0)
}

func scrape(t *testing.T, g prometheus.Gatherer) string {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}

// documentedNames reads the metric names from the table in docs/metrics.md
// (first column, backquoted).
func documentedNames(t *testing.T) []string {
	t.Helper()
	doc, err := os.ReadFile("../../../docs/metrics.md")
	require.NoError(t, err)
	re := regexp.MustCompile("(?m)^\\| `(kds_[a-z_]+)` \\|")
	var names []string
	for _, m := range re.FindAllStringSubmatch(string(doc), -1) {
		names = append(names, m[1])
	}
	require.NotEmpty(t, names)
	return names
}

func TestDocsListExactlyTheRegisteredMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	require.NoError(t, err)
	touchAll(m)

	mfs, err := reg.Gather()
	require.NoError(t, err)
	var registered []string
	for _, mf := range mfs {
		registered = append(registered, mf.GetName())
	}
	slices.Sort(registered)
	docs := documentedNames(t)
	slices.Sort(docs)
	assert.Equal(t, docs, registered)

	body := scrape(t, reg)
	for _, n := range docs {
		assert.Contains(t, body, "# TYPE "+n+" ", "scrape exposes %s", n)
	}
}

func TestValuesAndLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	require.NoError(t, err)
	touchAll(m)
	m.ObserveSend("zone-1", StreamGlobalToZone, 20, time.Millisecond)

	assert.Equal(t, 2.0, testutil.ToFloat64(m.messagesSent.WithLabelValues("zone-1", "global_to_zone")))
	assert.Equal(t, 120.0, testutil.ToFloat64(m.bytesSent.WithLabelValues("zone-1", "global_to_zone")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.sessionsEnded.WithLabelValues("zone-2", "send_timeout")))
	assert.Equal(t, 0.0, testutil.ToFloat64(m.sessionConnected.WithLabelValues("zone-2")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.sessionConnected.WithLabelValues("zone-1")))
	assert.Equal(t, 7.0, testutil.ToFloat64(m.resources.WithLabelValues("MeshTimeout")))

	body := scrape(t, reg)
	assert.Contains(t, body, `kds_send_duration_seconds_count{stream="global_to_zone",zone="zone-1"} 2`)
	assert.Contains(t, body, `kds_send_buffer_capacity_messages{stream="global_to_zone",zone="zone-1"} 19`)
	assert.Contains(t, body, `kds_subscriptions_waiting{stream="global_to_zone",zone="zone-1"} 4`)
	assert.Contains(t, body, `kds_plugin_restarts_total{plugin="policies"} 1`)
	assert.Contains(t, body, `kds_tls_certificate_expiry_timestamp_seconds{setting="tls-cert-file"} 1.9e+09`)
	assert.Contains(t, body, "\nkds_leader 1\n")

	// Ending zone-1's session drops its buffer and waiting gauges.
	m.SessionEnded("zone-1", ReasonPeerClosed)
	body = scrape(t, reg)
	assert.NotContains(t, body, `kds_send_buffer_capacity_messages{stream="global_to_zone",zone="zone-1"}`)
	assert.NotContains(t, body, `kds_subscriptions_waiting{stream="global_to_zone",zone="zone-1"}`)
	assert.Contains(t, body, `kds_sessions_ended_total{reason="peer_closed",zone="zone-1"} 1`)
}

func TestEndReasonsAreDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/metrics.md")
	require.NoError(t, err)
	for _, r := range EndReasons {
		assert.Contains(t, string(doc), "`"+string(r)+"`")
	}
}

func TestRegisterTwiceFails(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, err := New(reg)
	require.NoError(t, err)
	_, err = New(reg)
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "register metrics: "))
}

func TestNilMetricsAndNilRegistry(t *testing.T) {
	var m *Metrics
	assert.NotPanics(t, func() { touchAll(m) })
	m2, err := New(nil)
	require.NoError(t, err)
	assert.NotPanics(t, func() { touchAll(m2) })
}

func TestSeriesExistAtZeroAfterSessionStartAndPluginLoad(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	require.NoError(t, err)
	m.SessionStarted("zone-1")
	m.SetPluginUp("policies", true)
	body := scrape(t, reg)
	assert.Contains(t, body, `kds_send_timeouts_total{zone="zone-1"} 0`)
	assert.Contains(t, body, `kds_sessions_ended_total{reason="buffer_full",zone="zone-1"} 0`)
	assert.Contains(t, body, `kds_stream_messages_received_total{stream="zone_to_global",zone="zone-1"} 0`)
	assert.Contains(t, body, `kds_send_duration_seconds_count{stream="global_to_zone",zone="zone-1"} 0`)
	assert.Contains(t, body, `kds_plugin_restarts_total{plugin="policies"} 0`)
	assert.Contains(t, body, `kds_validation_duration_seconds_count{plugin="policies"} 0`)
}
