package e2e

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine"
	"github.com/kds-engine/kds-engine/engine/apitypes"
)

// scrape is one parsed /metrics answer.
type scrape map[string]*dto.MetricFamily

// scrapeMetrics fetches and parses n's /metrics.
func scrapeMetrics(t *testing.T, n *node) scrape {
	t.Helper()
	code, body, err := httpGet(n.api() + "/metrics")
	require.NoError(t, err)
	require.Equal(t, 200, code, body)
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(t, err, "parse %s's /metrics", n.name)
	return mfs
}

// labelsMatch reports whether m carries every label of want (name, value
// pairs).
func labelsMatch(m *dto.Metric, want []string) bool {
	got := map[string]string{}
	for _, l := range m.GetLabel() {
		got[l.GetName()] = l.GetValue()
	}
	for i := 0; i+1 < len(want); i += 2 {
		if got[want[i]] != want[i+1] {
			return false
		}
	}
	return true
}

// sampleValue is a counter's or gauge's value, or a histogram's count.
func sampleValue(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetHistogram() != nil:
		return float64(m.GetHistogram().GetSampleCount())
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}

// get returns the value of the one series of name with labels (name,
// value pairs), and whether there is exactly one.
func (s scrape) get(name string, labels ...string) (float64, bool) {
	var v float64
	n := 0
	for _, m := range s[name].GetMetric() {
		if labelsMatch(m, labels) {
			v, n = sampleValue(m), n+1
		}
	}
	return v, n == 1
}

// val is get's value (0 when there is no such series).
func (s scrape) val(name string, labels ...string) float64 {
	v, _ := s.get(name, labels...)
	return v
}

// sum adds up the series of name that carry labels.
func (s scrape) sum(name string, labels ...string) float64 {
	var v float64
	for _, m := range s[name].GetMetric() {
		if labelsMatch(m, labels) {
			v += sampleValue(m)
		}
	}
	return v
}

// has reports whether name has at least one series.
func (s scrape) has(name string) bool { return len(s[name].GetMetric()) > 0 }

// counters returns every counter and histogram count of s by a key naming
// the metric and its labels.
func (s scrape) counters() map[string]float64 {
	out := map[string]float64{}
	for name, mf := range s {
		if mf.GetType() != dto.MetricType_COUNTER && mf.GetType() != dto.MetricType_HISTOGRAM {
			continue
		}
		if !strings.HasPrefix(name, "kds_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(ls)
			out[name+"{"+strings.Join(ls, ",")+"}"] = sampleValue(m)
		}
	}
	return out
}

// documentedMetric is one row of docs/metrics.md's table.
type documentedMetric struct {
	name, process string // process: "both" or "global"
}

// documentedMetrics parses the metric table of docs/metrics.md with its
// Process column.
func documentedMetrics(t *testing.T) []documentedMetric {
	t.Helper()
	b := readFile(t, filepath.Join(moduleRoot, "docs", "metrics.md"))
	re := regexp.MustCompile("(?m)^\\| `(kds_[a-z_]+)` \\| [a-z]+ \\| [^|]* \\| (both|global) \\|")
	var out []documentedMetric
	for _, m := range re.FindAllStringSubmatch(b, -1) {
		out = append(out, documentedMetric{m[1], m[2]})
	}
	require.Len(t, out, len(metricNames(t)), "every row of docs/metrics.md's table names its process (both or global)")
	return out
}

// dataplanesYAML is n Dataplanes in mesh default, named dp-0 to dp-(n-1).
func dataplanesYAML(n, subnet int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "---\ntype: Dataplane\nmesh: default\nname: dp-%d\nnetworking:\n  address: 10.%d.0.%d\n  inbound:\n    - port: 8080\n      tags: {kuma.io/service: web}\n", i, subnet, i+1)
	}
	return b.String()
}

// meshTimeoutsYAML is MeshTimeouts named prefix-0 to prefix-(n-1).
func meshTimeoutsYAML(prefix string, n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "---\ntype: MeshTimeout\nmesh: default\nname: %s-%d\nspec:\n  targetRef: {kind: Mesh}\n  to:\n    - targetRef: {kind: Mesh}\n      default: {connectionTimeout: %ds}\n", prefix, i, i+1)
	}
	return b.String()
}

// certNotAfter is the earliest expiry of the certificates in a PEM file.
func certNotAfter(t *testing.T, path string) time.Time {
	t.Helper()
	rest := []byte(readFile(t, path))
	var earliest time.Time
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		require.NoError(t, err)
		if earliest.IsZero() || c.NotAfter.Before(earliest) {
			earliest = c.NotAfter
		}
	}
	require.False(t, earliest.IsZero(), "no certificate in %s", path)
	return earliest
}

// pluginsOf is n's `plugins list -o json`.
func pluginsOf(t *testing.T, n *node) apitypes.PluginsInfo {
	t.Helper()
	return cliJSON[apitypes.PluginsInfo](t, "plugins", "list", "-o", "json", "--api", n.api())
}

var streams = []string{"global_to_zone", "zone_to_global"}

// TestMetricsMatchIndependentCounts runs a global and three zones as
// processes, writes on every one of them, and checks every metric of
// docs/metrics.md against what the CLI, the certificates, the tokens and
// the other side of each session say: a metric documented but not exposed
// by its process, or exposed with a value nothing else agrees with, fails.
func TestMetricsMatchIndependentCounts(t *testing.T) {
	c := newCluster(t)
	dps := map[string]int{"zone-1": 5, "zone-2": 9, "zone-3": 2}
	zoneNames := []string{"zone-1", "zone-2", "zone-3"}
	for _, z := range zoneNames {
		c.addZone(t, z)
	}
	g := c.global
	all := append([]*node{g}, c.zones["zone-1"], c.zones["zone-2"], c.zones["zone-3"])

	// A zone with a token that is not one: global refuses it (malformed)
	// and counts the refusal.
	badToken := writeFile(t, t.TempDir(), "bad.token", "not-a-token")
	startProc(t, "zone-bad", "zone", "--name", "zone-bad", "--global", addr(g.kdsPort),
		"--data-dir", t.TempDir(), "--plugins-dir", pluginsDir, "--api-addr", addr(freePort(t)),
		"--ca-file", c.pki.ca, "--token-file", badToken,
		"--reconnect-backoff-base", "100ms", "--reconnect-backoff-max", "1s")

	// Policies on global: the demo's four and seven MeshTimeouts.
	dir := t.TempDir()
	mustCLI(t, "apply", "-f", examplesFile(t, "global.yaml"), "--api", g.api())
	mustCLI(t, "apply", "-f", writeFile(t, dir, "timeouts.yaml", meshTimeoutsYAML("mt", 7)), "--api", g.api())
	// Dataplanes on each zone, a different number per zone, once its Mesh
	// has arrived.
	for i, zn := range zoneNames {
		z := c.zones[zn]
		waitFor(t, "Mesh default on "+zn, func() (bool, string) {
			rs := list(t, z.api(), "Mesh")
			_, ok := find(rs, "default", "")
			return ok, fmt.Sprint(names(rs))
		})
		r := mustCLI(t, "apply", "-f", writeFile(t, dir, zn+".yaml", dataplanesYAML(dps[zn], i+1)), "--api", z.api())
		require.Contains(t, r.stdout, fmt.Sprintf("%d resources applied: %d created", dps[zn], dps[zn]))
	}

	var types []string // every type the plugins supply
	var policyTypes []string
	for _, p := range pluginsOf(t, g).Plugins {
		types = append(types, p.Types...)
		if p.Name == "policies" {
			policyTypes = p.Types
		}
	}
	require.Contains(t, types, "Dataplane")
	require.Contains(t, policyTypes, "MeshTimeout")

	converged := func() (bool, string) {
		gdps := list(t, g.api(), "Dataplane")
		for _, zn := range zoneNames {
			if n := len(list(t, g.api(), "Dataplane", "--zone", zn)); n != dps[zn] {
				return false, fmt.Sprintf("global holds %d of %s's Dataplanes, want %d: %v", n, zn, dps[zn], names(gdps))
			}
			for _, typ := range policyTypes {
				want := names(list(t, g.api(), typ))
				if got := names(list(t, c.zones[zn].api(), typ)); !slices.Equal(got, want) {
					return false, fmt.Sprintf("%s on %s: %v, global has %v", typ, zn, got, want)
				}
			}
		}
		return true, ""
	}
	waitFor(t, "every write on every side synced", converged)

	// The metrics are sampled (sessions every second, resources every 5 s):
	// wait until every independent count agrees, then assert the rest on
	// that same scrape.
	var m map[string]scrape
	var zonesState map[string]apitypes.Conn
	waitFor(t, "metrics agree with independent counts", func() (bool, string) {
		m = map[string]scrape{}
		for _, n := range all {
			m[n.name] = scrapeMetrics(t, n)
		}
		zonesState = inspectZones(t, g)
		var why []string
		// kds_resources: every type, on every process, against `get`.
		for _, n := range all {
			for _, typ := range types {
				want := len(list(t, n.api(), typ))
				got, ok := m[n.name].get("kds_resources", "type", typ)
				if !ok || int(got) != want {
					why = append(why, fmt.Sprintf("%s kds_resources{type=%s}=%v (series %v), get lists %d", n.name, typ, got, ok, want))
				}
			}
			if v := m[n.name].val("kds_sync_inflight_bytes"); v != 0 {
				why = append(why, fmt.Sprintf("%s kds_sync_inflight_bytes=%v after convergence", n.name, v))
			}
		}
		// Both ends of every session count the same messages and bytes on
		// each logical stream, and each side timed every Send it made.
		for _, zn := range zoneNames {
			gs, zs := m["global"], m[zn]
			for _, s := range streams {
				l := []string{"zone", zn, "stream", s}
				pairs := [][2]string{
					{"kds_stream_sent_bytes_total", "kds_stream_received_bytes_total"},
					{"kds_stream_received_bytes_total", "kds_stream_sent_bytes_total"},
					{"kds_stream_messages_sent_total", "kds_stream_messages_received_total"},
					{"kds_stream_messages_received_total", "kds_stream_messages_sent_total"},
				}
				for _, p := range pairs {
					gv, zv := gs.val(p[0], l...), zs.val(p[1], l...)
					if gv == 0 || gv != zv {
						why = append(why, fmt.Sprintf("%s %s: global %s=%v, zone %s=%v", zn, s, p[0], gv, p[1], zv))
					}
				}
				for _, side := range []scrape{gs, zs} {
					if sent, timed := side.val("kds_stream_messages_sent_total", l...), side.val("kds_send_duration_seconds", l...); sent != timed {
						why = append(why, fmt.Sprintf("%s %s: %v messages sent, %v sends timed", zn, s, sent, timed))
					}
				}
			}
			// Every message a server stream sends is a response: global's
			// responses to the zone add up to its global_to_zone messages,
			// the zone's to its zone_to_global messages; each was ACKed.
			for _, side := range []struct {
				s      scrape
				stream string
			}{{gs, "global_to_zone"}, {zs, "zone_to_global"}} {
				resp := side.s.sum("kds_responses_sent_total", "zone", zn)
				msgs := side.s.val("kds_stream_messages_sent_total", "zone", zn, "stream", side.stream)
				acked := side.s.sum("kds_responses_acked_total", "zone", zn)
				if resp == 0 || resp != msgs || acked != resp {
					why = append(why, fmt.Sprintf("%s %s: responses sent %v, acked %v, messages sent %v", zn, side.stream, resp, acked, msgs))
				}
			}
		}
		return len(why) == 0, strings.Join(why, "\n")
	})

	t.Run("every documented metric is exposed by its process", func(t *testing.T) {
		for _, dm := range documentedMetrics(t) {
			for _, n := range all {
				if dm.process == "global" && n != g {
					assert.False(t, m[n.name].has(dm.name), "%s exposes %s, documented for global only", n.name, dm.name)
					continue
				}
				assert.True(t, m[n.name].has(dm.name), "%s does not expose %s (documented for %s)", n.name, dm.name, dm.process)
			}
		}
	})

	t.Run("sessions against inspect", func(t *testing.T) {
		gs := m["global"]
		for _, zn := range zoneNames {
			st, ok := zonesState[zn]
			require.True(t, ok, "inspect zones lists %s", zn)
			assert.True(t, st.Online, zn)
			assert.Equal(t, 1.0, gs.val("kds_session_connected", "zone", zn), "global: %s online", zn)
			assert.Equal(t, float64(st.Sessions), gs.val("kds_sessions_started_total", "zone", zn), "global: %s sessions", zn)
			assert.Equal(t, 1.0, gs.val("kds_sessions_started_total", "zone", zn), "global: %s started once", zn)
			assert.Zero(t, gs.sum("kds_sessions_ended_total", "zone", zn), "global: no session of %s ended", zn)
			assert.Zero(t, gs.val("kds_send_timeouts_total", "zone", zn))

			zs := m[zn]
			zst := inspectSync(t, c.zones[zn])
			assert.True(t, zst.Online, "%s: inspect sync online", zn)
			assert.Equal(t, 1.0, zs.val("kds_session_connected", "zone", zn), "%s's own gauge carries its name", zn)
			assert.Equal(t, float64(zst.Sessions), zs.val("kds_sessions_started_total", "zone", zn), "%s: sessions", zn)
			assert.Zero(t, zs.sum("kds_sessions_ended_total", "zone", zn))
			assert.Zero(t, zs.val("kds_send_timeouts_total", "zone", zn))
			// A zone's metrics name only itself.
			for name, mf := range zs {
				for _, mm := range mf.GetMetric() {
					for _, l := range mm.GetLabel() {
						if l.GetName() == "zone" {
							assert.Equal(t, zn, l.GetValue(), "%s: %s", zn, name)
						}
					}
				}
			}
			// Global's per-zone series cover exactly the connected zones.
			var zonesSeen []string
			for _, mm := range gs["kds_session_connected"].GetMetric() {
				for _, l := range mm.GetLabel() {
					if l.GetName() == "zone" {
						zonesSeen = append(zonesSeen, l.GetValue())
					}
				}
			}
			slices.Sort(zonesSeen)
			assert.Equal(t, zoneNames, zonesSeen, "global: zones with a session series")

			// Send buffers: the capacity and length the insights show.
			for _, side := range []struct {
				s       scrape
				streams []apitypes.StreamState
				who     string
			}{{gs, st.Streams, "global"}, {zs, zst.Streams, zn}} {
				require.Len(t, side.streams, 2, "%s: streams of the session with %s", side.who, zn)
				for _, ss := range side.streams {
					l := []string{"zone", zn, "stream", ss.Name}
					capy, ok := side.s.get("kds_send_buffer_capacity_messages", l...)
					assert.True(t, ok, "%s: capacity series of %s", side.who, ss.Name)
					assert.Equal(t, float64(ss.Capacity), capy, "%s: %s stream capacity", side.who, ss.Name)
					assert.Equal(t, float64(ss.SendBufferLen), side.s.val("kds_send_buffer_messages", l...), "%s: %s buffer", side.who, ss.Name)
				}
			}
			// Responses per type global serves: the insights' counts. (For
			// a type global receives, the insights count the responses it
			// received and answered; those are no response metric.)
			for _, typ := range policyTypes {
				ts := st.Types[typ]
				assert.Positive(t, ts.ResponsesSent, "global→%s %s: insights", zn, typ)
				assert.Equal(t, float64(ts.ResponsesSent), gs.val("kds_responses_sent_total", "zone", zn, "type", typ), "global→%s %s sent", zn, typ)
				assert.Equal(t, float64(ts.ResponsesACKed), gs.val("kds_responses_acked_total", "zone", zn, "type", typ), "global→%s %s acked", zn, typ)
				assert.Equal(t, float64(ts.ResponsesNACKed), gs.val("kds_responses_nacked_total", "zone", zn, "type", typ), "global→%s %s nacked", zn, typ)
			}
			for _, typ := range []string{"Dataplane", "DataplaneInsight"} {
				_, ok := gs.get("kds_responses_sent_total", "zone", zn, "type", typ)
				assert.False(t, ok, "global sends no %s responses to %s", typ, zn)
				_, ok = zs.get("kds_responses_sent_total", "zone", zn, "type", typ)
				assert.True(t, ok, "%s sends %s responses", zn, typ)
			}
			for _, typ := range policyTypes {
				_, ok := zs.get("kds_responses_acked_total", "zone", zn, "type", typ)
				assert.False(t, ok, "%s sends no %s responses", zn, typ)
			}
			assert.Zero(t, gs.sum("kds_responses_nacked_total", "zone", zn))
			assert.Zero(t, zs.sum("kds_responses_nacked_total", "zone", zn))
		}
	})

	t.Run("plugins, validation, certificates, tokens", func(t *testing.T) {
		for _, n := range all {
			s := m[n.name]
			for _, p := range pluginsOf(t, n).Plugins {
				up := 0.0
				if p.State == "running" {
					up = 1
				}
				assert.Equal(t, up, s.val("kds_plugin_up", "plugin", p.Name), "%s: plugin %s is %s", n.name, p.Name, p.State)
				assert.Equal(t, float64(p.Restarts), s.val("kds_plugin_restarts_total", "plugin", p.Name), "%s: restarts of %s", n.name, p.Name)
			}
		}
		// Global validated the policies it was given and the Dataplanes
		// the zones sent; each zone its own Dataplanes.
		assert.Positive(t, m["global"].val("kds_validation_duration_seconds", "plugin", "policies"))
		assert.Positive(t, m["global"].val("kds_validation_duration_seconds", "plugin", "dataplanes"))
		for _, zn := range zoneNames {
			assert.Positive(t, m[zn].val("kds_validation_duration_seconds", "plugin", "dataplanes"), zn)
		}

		assert.Equal(t, float64(certNotAfter(t, c.pki.cert).Unix()),
			m["global"].val("kds_tls_certificate_expiry_timestamp_seconds", "setting", "tls-cert-file"))
		for _, zn := range zoneNames {
			assert.Equal(t, float64(certNotAfter(t, c.pki.ca).Unix()),
				m[zn].val("kds_tls_certificate_expiry_timestamp_seconds", "setting", "ca-file"), zn)
			info, err := engine.InspectZoneToken(strings.TrimSpace(readFile(t, filepath.Join(c.dir, zn+".token"))))
			require.NoError(t, err)
			assert.Equal(t, float64(info.ExpiresAt.Unix()),
				m["global"].val("kds_zone_token_expiry_timestamp_seconds", "zone", zn), "token expiry of %s", zn)
		}
		_, ok := m["global"].get("kds_zone_token_expiry_timestamp_seconds", "zone", "zone-bad")
		assert.False(t, ok, "a refused zone has no token expiry")
		assert.GreaterOrEqual(t, m["global"].val("kds_auth_refused_total", "reason", "malformed"), 1.0)
		assert.Equal(t, m["global"].val("kds_auth_refused_total", "reason", "malformed"), m["global"].sum("kds_auth_refused_total"),
			"the only refusals are the bad zone's")
	})

	t.Run("counters only grow, and traffic shows on both sides", func(t *testing.T) {
		before := map[string]map[string]float64{}
		for _, n := range all {
			before[n.name] = m[n.name].counters()
		}
		mustCLI(t, "apply", "-f", writeFile(t, dir, "more.yaml", meshTimeoutsYAML("more", 1)), "--api", g.api())
		mustCLI(t, "apply", "-f", writeFile(t, dir, "more-dp.yaml", dataplanesYAML(dps["zone-1"]+1, 1)), "--api", c.zones["zone-1"].api())
		dps["zone-1"]++
		waitFor(t, "the new writes synced", converged)
		waitFor(t, "the new traffic counted on both sides", func() (bool, string) {
			var why []string
			for _, zn := range zoneNames {
				gs, zs := scrapeMetrics(t, g), scrapeMetrics(t, c.zones[zn])
				l := []string{"zone", zn, "stream", "global_to_zone"}
				if gs.val("kds_stream_sent_bytes_total", l...) <= before["global"]["kds_stream_sent_bytes_total{stream=global_to_zone,zone="+zn+"}"] ||
					zs.val("kds_stream_received_bytes_total", l...) != gs.val("kds_stream_sent_bytes_total", l...) {
					why = append(why, zn+": the new policy's bytes are not counted on both sides yet")
				}
			}
			return len(why) == 0, strings.Join(why, "; ")
		})
		for _, n := range all {
			after := scrapeMetrics(t, n).counters()
			for k, v := range before[n.name] {
				a, ok := after[k]
				assert.True(t, ok, "%s: series %s disappeared", n.name, k)
				assert.GreaterOrEqual(t, a, v, "%s: counter %s went down", n.name, k)
			}
		}
	})

	t.Run("a zone stopped with SIGTERM ends its session as peer_closed on global", func(t *testing.T) {
		z3 := c.zones["zone-3"]
		require.NoError(t, z3.p.cmd.Process.Signal(syscall.SIGTERM))
		assert.Equal(t, 0, z3.p.wait(t, 30*time.Second), "zone-3's exit code")
		waitFor(t, "global counts zone-3's session ended", func() (bool, string) {
			gs := scrapeMetrics(t, g)
			st := inspectZones(t, g)["zone-3"]
			ended := gs.val("kds_sessions_ended_total", "zone", "zone-3", "reason", "peer_closed")
			total := gs.sum("kds_sessions_ended_total", "zone", "zone-3")
			connected := gs.val("kds_session_connected", "zone", "zone-3")
			_, buf := gs.get("kds_send_buffer_capacity_messages", "zone", "zone-3", "stream", "global_to_zone")
			return !st.Online && ended == 1 && total == 1 && connected == 0 && !buf,
				fmt.Sprintf("online %v, peer_closed %v, ended %v, connected %v, buffer series %v", st.Online, ended, total, connected, buf)
		})
		gs := scrapeMetrics(t, g)
		for _, zn := range []string{"zone-1", "zone-2"} {
			assert.Equal(t, 1.0, gs.val("kds_session_connected", "zone", zn), "%s still connected", zn)
			assert.Zero(t, gs.sum("kds_sessions_ended_total", "zone", zn), zn)
		}
		// Global still counts zone-3's Dataplanes, as `get` lists them.
		waitFor(t, "kds_resources{type=Dataplane} on global", func() (bool, string) {
			want := len(list(t, g.api(), "Dataplane"))
			got := scrapeMetrics(t, g).val("kds_resources", "type", "Dataplane")
			return want == dps["zone-1"]+dps["zone-2"]+dps["zone-3"] && int(got) == want, fmt.Sprintf("metric %v, get %d", got, want)
		})
	})
}
