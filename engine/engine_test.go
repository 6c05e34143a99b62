package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/api"
	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/pluginbuild"
)

// Plugin directories built once for the whole package.
var (
	builtinDir string // kds-plugin-policies, kds-plugin-dataplanes
	lenientDir string // kds-plugin-synctest
	// lenientV2Dir: the same plugin reporting version 2.0.0.
	lenientV2Dir string
	strictDir    string // kds-plugin-synctest-strict
	// The built-in plugins with the lenient (global) or strict (zones)
	// test plugin, for the browser tests.
	uiGlobalDir, uiZoneDir string
	manyDir                string // kds-plugin-synctest-many (203 types)

	// TLS material for every test: a CA and a certificate for localhost.
	caFile, certFile, keyFile string
)

func TestMain(m *testing.M) {
	os.Exit(pluginbuild.Main(m, func(tmp string) error {
		builtinDir, lenientDir, strictDir = filepath.Join(tmp, "builtin"), filepath.Join(tmp, "lenient"), filepath.Join(tmp, "strict")
		uiGlobalDir, uiZoneDir = filepath.Join(tmp, "ui-global"), filepath.Join(tmp, "ui-zone")
		manyDir = filepath.Join(tmp, "many")
		lenientV2Dir = filepath.Join(tmp, "lenient-v2")
		for dir, bins := range map[string]map[string]string{
			builtinDir:   {"kds-plugin-policies": "./plugins/policies", "kds-plugin-dataplanes": "./plugins/dataplanes"},
			lenientDir:   {"kds-plugin-synctest": "./engine/internal/testsupport/syncplugin"},
			lenientV2Dir: {"kds-plugin-synctest": "./engine/internal/testsupport/syncplugin"},
			strictDir:    {"kds-plugin-synctest-strict": "./engine/internal/testsupport/syncplugin"},
			uiGlobalDir: {"kds-plugin-policies": "./plugins/policies", "kds-plugin-dataplanes": "./plugins/dataplanes",
				"kds-plugin-synctest": "./engine/internal/testsupport/syncplugin"},
			uiZoneDir: {"kds-plugin-policies": "./plugins/policies", "kds-plugin-dataplanes": "./plugins/dataplanes",
				"kds-plugin-synctest-strict": "./engine/internal/testsupport/syncplugin"},
			manyDir: {"kds-plugin-synctest-many": "./engine/internal/testsupport/syncplugin"},
		} {
			if err := pluginbuild.Build(dir, bins); err != nil {
				return err
			}
		}
		var err error
		caFile, certFile, keyFile, _, err = GenerateDemoPKI(filepath.Join(tmp, "pki"), nil)
		return err
	}))
}

// node is one running engine in a test.
type node struct {
	t      *testing.T
	e      *Engine
	cancel context.CancelFunc
	done   chan error
}

func (n *node) b() backend { return backend{n.e} }

func (n *node) stop() {
	n.t.Helper()
	if n.cancel == nil {
		return
	}
	n.cancel()
	select {
	case err := <-n.done:
		require.NoError(n.t, err, "engine shut down cleanly")
	case <-time.After(30 * time.Second):
		n.t.Fatal("engine did not stop")
	}
	n.cancel = nil
}

func startNode(t *testing.T, cfg Config) *node {
	t.Helper()
	return startNodeLogging(t, cfg, hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: os.Stderr}))
}

// startNodeLogging is startNode with the engine's logger.
func startNodeLogging(t *testing.T, cfg Config, log hclog.Logger) *node {
	t.Helper()
	return startNodePrepared(t, cfg, log, nil)
}

// startNodePrepared is startNodeLogging with prep, if not nil, run on the
// engine before it runs.
func startNodePrepared(t *testing.T, cfg Config, log hclog.Logger, prep func(*Engine)) *node {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.APIAddress = "127.0.0.1:0"
	if cfg.Role == RoleGlobal {
		if cfg.KDSAddress == "" {
			cfg.KDSAddress = "127.0.0.1:0"
		}
		if cfg.TLSCertFile == "" {
			cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
		}
	} else if cfg.CAFile == "" {
		cfg.CAFile = caFile
	}
	cfg.ReconnectBackoffBase = 50 * time.Millisecond
	cfg.ReconnectBackoffMax = 500 * time.Millisecond
	e, err := New(cfg, log)
	require.NoError(t, err)
	if prep != nil {
		prep(e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{t: t, e: e, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- e.Run(ctx) }()
	select {
	case <-e.Started():
	case err := <-n.done:
		t.Fatalf("engine failed to start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("engine did not start")
	}
	t.Cleanup(n.stop)
	return n
}

func startGlobal(t *testing.T, plugins string) *node {
	return startNode(t, Config{Role: RoleGlobal, PluginsDir: plugins})
}

func startZone(t *testing.T, name string, g *node, plugins, dataDir string) *node {
	return startNode(t, zoneConfig(t, name, g, Config{PluginsDir: plugins, DataDir: dataDir}))
}

// zoneConfig completes cfg for zone name connecting to g with a token
// signed by g.
func zoneConfig(t *testing.T, name string, g *node, cfg Config) Config {
	t.Helper()
	cfg.Role, cfg.ZoneName = RoleZone, name
	cfg.GlobalAddress = "localhost:" + portOf(g.e.KDSAddr().String())
	cfg.TokenFile = zoneToken(t, g, name)
	return cfg
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// clusterIDOf is g's cluster id, the audience of its zone tokens.
func clusterIDOf(t *testing.T, g *node) string {
	t.Helper()
	id, _, err := ClusterID(g.e.cfg.DataDir, g.e.cfg.ClusterID)
	require.NoError(t, err)
	return id
}

// zoneToken writes a token for zone signed by g's key and returns its file.
func zoneToken(t *testing.T, g *node, zone string) string {
	t.Helper()
	tok, err := GenerateZoneToken(g.e.cfg.DataDir, "", "", zone, time.Hour)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), zone+".token")
	require.NoError(t, os.WriteFile(path, []byte(tok), 0o600))
	return path
}

// create writes r through n's admin API backend. On a zone, a write into a
// mesh whose Mesh has not synced from global yet is retried until it has.
func create(t *testing.T, n *node, r *resource.Resource) *resource.Resource {
	t.Helper()
	got, err := n.b().Create(context.Background(), r)
	for deadline := time.Now().Add(30 * time.Second); errors.Is(err, ErrMeshNotFound) && n.e.cfg.Role == RoleZone && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		got, err = n.b().Create(context.Background(), r)
	}
	require.NoError(t, err)
	return got
}

func list(n *node, typ string) []*resource.Resource {
	rs, err := n.b().List(context.Background(), api.Filter{Type: typ})
	if err != nil {
		return nil
	}
	return rs
}

func find(n *node, k resource.Key) *resource.Resource {
	r, err := n.b().Get(context.Background(), k)
	if err != nil {
		return nil
	}
	return r
}

func eventually(t *testing.T, cond func() bool, msg string, args ...any) {
	t.Helper()
	require.Eventually(t, cond, 30*time.Second, 10*time.Millisecond, append([]any{msg}, args...)...)
}

func spec(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// meshResource is the Mesh named name, with no settings.
func meshResource(name string) *resource.Resource {
	return &resource.Resource{Type: "Mesh", Name: name, Spec: spec(map[string]any{})}
}

func meshTimeout(name, connect string) *resource.Resource {
	return &resource.Resource{Type: "MeshTimeout", Mesh: "default", Name: name, Spec: spec(map[string]any{
		"targetRef": map[string]any{"kind": "Mesh"},
		"to": []any{map[string]any{
			"targetRef": map[string]any{"kind": "Mesh"},
			"default":   map[string]any{"connectionTimeout": connect},
		}},
	})}
}

func dataplane(name, addr string) *resource.Resource {
	return &resource.Resource{Type: "Dataplane", Mesh: "default", Name: name, Spec: spec(map[string]any{
		"networking": map[string]any{
			"address": addr,
			"inbound": []any{map[string]any{"port": 8080, "tags": map[string]any{"kuma.io/service": "web"}}},
		},
	})}
}

func zoneType(g *node, zone, typ string) insights.TypeState {
	c, _ := g.e.Insights().Get(zone)
	return c.Types[typ]
}

func TestPoliciesAndDataplanesSyncBothWays(t *testing.T) {
	g := startGlobal(t, builtinDir)
	z1 := startZone(t, "zone-1", g, builtinDir, "")
	z2 := startZone(t, "zone-2", g, builtinDir, "")

	create(t, g, &resource.Resource{Type: "Mesh", Name: "default", Spec: spec(map[string]any{})})
	mt := create(t, g, meshTimeout("web-timeouts", "5s"))
	for _, z := range []*node{z1, z2} {
		eventually(t, func() bool { return len(list(z, "MeshTimeout")) == 1 && len(list(z, "Mesh")) == 1 }, "policies reach %s", z.e.cfg.ZoneName)
		got := find(z, mt.Key())
		require.NotNil(t, got)
		assert.Equal(t, mt.Version, got.Version)
		assert.JSONEq(t, string(mt.Spec), string(got.Spec))
	}

	// The same dataplane name in two zones stays two resources on global.
	create(t, z1, dataplane("web-1", "10.0.0.1"))
	create(t, z2, dataplane("web-1", "10.0.0.2"))
	k1 := resource.Key{Type: "Dataplane", Mesh: "default", Zone: "zone-1", Name: "web-1"}
	k2 := resource.Key{Type: "Dataplane", Mesh: "default", Zone: "zone-2", Name: "web-1"}
	eventually(t, func() bool { return find(g, k1) != nil && find(g, k2) != nil }, "dataplanes reach global")
	assert.Contains(t, string(find(g, k1).Spec), "10.0.0.1")
	assert.Contains(t, string(find(g, k2).Spec), "10.0.0.2")

	// Updates and deletes propagate both ways.
	upd := meshTimeout("web-timeouts", "7s")
	upd.Version = mt.Version
	_, err := g.b().Update(context.Background(), upd)
	require.NoError(t, err)
	for _, z := range []*node{z1, z2} {
		eventually(t, func() bool {
			r := find(z, mt.Key())
			return r != nil && strings.Contains(string(r.Spec), "7s")
		}, "update reaches zone")
	}
	dp := find(z1, resource.Key{Type: "Dataplane", Mesh: "default", Name: "web-1"})
	require.NoError(t, z1.b().Delete(context.Background(), dp.Key(), dp.Version))
	eventually(t, func() bool { return find(g, k1) == nil }, "zone delete reaches global")
	assert.NotNil(t, find(g, k2), "the other zone's web-1 is untouched")

	require.NoError(t, g.b().Delete(context.Background(), mt.Key(), ""))
	for _, z := range []*node{z1, z2} {
		eventually(t, func() bool { return len(list(z, "MeshTimeout")) == 0 }, "global delete reaches zone")
	}

	// Read-only sides, below the API.
	_, err = z1.b().Create(context.Background(), meshTimeout("sneaky", "1s"))
	require.ErrorIs(t, err, resource.ErrReadOnly)
	_, err = g.b().Create(context.Background(), dataplane("sneaky", "10.0.0.9"))
	require.ErrorIs(t, err, resource.ErrReadOnly)

	c, ok := g.e.Insights().Get("zone-1")
	require.True(t, ok)
	assert.True(t, c.Online)
	assert.Equal(t, uint64(1), c.Sessions)
	assert.GreaterOrEqual(t, c.Types["MeshTimeout"].ResponsesACKed, uint64(3))

	// The session's traffic reaches the Prometheus metrics.
	eventually(t, func() bool {
		return metricSum(t, g, "kds_send_duration_seconds", "zone-1") > 0 &&
			metricSum(t, g, "kds_stream_messages_sent_total", "zone-1") > 0 &&
			metricSum(t, g, "kds_responses_acked_total", "zone-1") >= 3
	}, "metrics follow the session")
}

// metricSum adds up the samples (histogram counts) of a metric family on
// n's registry whose zone label is zone.
func metricSum(t *testing.T, n *node, name, zone string) float64 {
	t.Helper()
	mfs, err := n.e.promReg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := false
			for _, l := range m.GetLabel() {
				if l.GetName() == "zone" && l.GetValue() == zone {
					match = true
				}
			}
			if !match {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

func TestResumeWithUnchangedStateReceivesNothing(t *testing.T) {
	g := startGlobal(t, builtinDir)
	zoneData := t.TempDir()
	z := startZone(t, "zone-1", g, builtinDir, zoneData)
	create(t, g, &resource.Resource{Type: "Mesh", Name: "default", Spec: spec(map[string]any{})})
	for i := range 20 {
		create(t, g, meshTimeout(fmt.Sprintf("t-%d", i), "5s"))
	}
	create(t, z, dataplane("web-1", "10.0.0.1"))
	eventually(t, func() bool { return len(list(z, "MeshTimeout")) == 20 }, "initial sync")
	eventually(t, func() bool { return zoneType(g, "zone-1", "Dataplane").ResourcesReceived == 1 }, "dataplane up")
	eventually(t, func() bool {
		st, _ := z.e.Insights().Get(GlobalPeer)
		return st.Types["MeshTimeout"].ResourcesReceived == 20
	}, "zone recorded the initial sync")
	sentBefore := zoneType(g, "zone-1", "MeshTimeout").ResourcesSent
	receivedBefore := zoneType(g, "zone-1", "Dataplane").ResourcesReceived
	z.stop()
	eventually(t, func() bool { c, _ := g.e.Insights().Get("zone-1"); return !c.Online }, "global sees the zone go offline")

	z = startZone(t, "zone-1", g, builtinDir, zoneData)
	eventually(t, func() bool { c, _ := g.e.Insights().Get("zone-1"); return c.Online && c.Sessions == 2 }, "zone back")
	eventually(t, func() bool {
		st, _ := z.e.Insights().Get(GlobalPeer)
		return st.Types["MeshTimeout"].ResponsesACKed >= 1 && st.Types["Mesh"].ResponsesACKed >= 1
	}, "resumed zone applied global's answer")
	st, _ := z.e.Insights().Get(GlobalPeer)
	assert.Zero(t, st.Types["MeshTimeout"].ResourcesReceived, "zone received no MeshTimeout again")
	assert.Zero(t, st.Types["Mesh"].ResourcesReceived, "zone received no Mesh again")
	eventually(t, func() bool { return zoneType(g, "zone-1", "Dataplane").ResponsesACKed >= 2 }, "global applied the zone's answer")
	assert.Equal(t, sentBefore, zoneType(g, "zone-1", "MeshTimeout").ResourcesSent, "global resent nothing")
	assert.Equal(t, receivedBefore, zoneType(g, "zone-1", "Dataplane").ResourcesReceived, "zone resent nothing")
}

func TestOfflineZoneConvergesOnReconnect(t *testing.T) {
	g := startGlobal(t, builtinDir)
	zoneData := t.TempDir()
	z := startZone(t, "zone-1", g, builtinDir, zoneData)
	create(t, g, &resource.Resource{Type: "Mesh", Name: "default", Spec: spec(map[string]any{})})
	keep := create(t, g, meshTimeout("keep", "5s"))
	change := create(t, g, meshTimeout("change", "5s"))
	drop := create(t, g, meshTimeout("drop", "5s"))
	eventually(t, func() bool { return len(list(z, "MeshTimeout")) == 3 }, "initial sync")
	z.stop()

	upd := meshTimeout("change", "9s")
	upd.Version = change.Version
	_, err := g.b().Update(context.Background(), upd)
	require.NoError(t, err)
	require.NoError(t, g.b().Delete(context.Background(), drop.Key(), ""))
	added := create(t, g, meshTimeout("added", "5s"))

	z = startZone(t, "zone-1", g, builtinDir, zoneData)
	eventually(t, func() bool {
		c := find(z, change.Key())
		return find(z, added.Key()) != nil && find(z, drop.Key()) == nil && c != nil && strings.Contains(string(c.Spec), "9s")
	}, "zone converges")
	assert.NotNil(t, find(z, keep.Key()))
	eventually(t, func() bool {
		st, _ := z.e.Insights().Get(GlobalPeer)
		return st.Types["MeshTimeout"].ResourcesReceived == 2
	}, "insights record the applied response")
	time.Sleep(100 * time.Millisecond)
	st, _ := z.e.Insights().Get(GlobalPeer)
	assert.Equal(t, uint64(2), st.Types["MeshTimeout"].ResourcesReceived, "only the changed and the added resource were sent")
}

func syncPolicy(name string, reject bool) *resource.Resource {
	return &resource.Resource{Type: "SyncPolicy", Mesh: "default", Name: name, Spec: spec(map[string]any{"reject": reject})}
}

func TestNACKShowsInGlobalInsightsAndDoesNotBlockOtherTypes(t *testing.T) {
	g := startGlobal(t, lenientDir)
	z := startZone(t, "zone-1", g, strictDir, "")
	create(t, g, syncPolicy("refused", true))
	eventually(t, func() bool { return zoneType(g, "zone-1", "SyncPolicy").ResponsesNACKed == 1 }, "NACK recorded on global")
	st := zoneType(g, "zone-1", "SyncPolicy")
	assert.Contains(t, st.LastNACKError, "refused")
	assert.Contains(t, st.LastNACKError, "spec.reject")
	assert.False(t, st.LastNACK.IsZero())

	// The zone keeps syncing the other direction, and later changes of the
	// same type.
	create(t, z, &resource.Resource{Type: "SyncStatus", Mesh: "default", Name: "s1", Spec: spec(map[string]any{})})
	eventually(t, func() bool { return len(list(g, "SyncStatus")) == 1 }, "other direction unaffected")
	create(t, g, syncPolicy("fine", false))
	eventually(t, func() bool { return len(list(z, "SyncPolicy")) == 1 }, "later valid policy arrives")
	assert.Equal(t, uint64(1), zoneType(g, "zone-1", "SyncPolicy").ResponsesNACKed, "the NACKed version was not resent")
}

func TestTypeUnknownToOneSideLeavesStreamUp(t *testing.T) {
	g := startGlobal(t, lenientDir) // serves OldOnly; does not know FutureType
	z := startZone(t, "zone-1", g, strictDir, "")
	create(t, g, &resource.Resource{Type: "OldOnly", Mesh: "default", Name: "o", Spec: spec(map[string]any{})})
	eventually(t, func() bool {
		c, _ := z.e.Insights().Get(GlobalPeer)
		return c.Types["FutureType"].Unknown
	}, "zone learns global does not serve FutureType")
	eventually(t, func() bool { return zoneType(g, "zone-1", "FutureType").Unknown }, "global records the request")
	create(t, g, syncPolicy("p", false))
	eventually(t, func() bool { return len(list(z, "SyncPolicy")) == 1 }, "stream still up")
	c, _ := g.e.Insights().Get("zone-1")
	assert.Equal(t, uint64(1), c.Sessions, "no reconnect happened")
}

func TestLargeUpdateIsSplitAcrossMessages(t *testing.T) {
	g := startNode(t, Config{Role: RoleGlobal, PluginsDir: lenientDir, MaxMessageSize: 256 << 10, MaxResourceSize: 64 << 10})
	const n = 40
	for i := range n {
		r := syncPolicy(fmt.Sprintf("big-%d", i), false)
		r.Spec = spec(map[string]any{"pad": strings.Repeat("x", 40<<10)})
		create(t, g, r)
	}
	z := startNode(t, zoneConfig(t, "zone-1", g, Config{PluginsDir: lenientDir, MaxMessageSize: 256 << 10, MaxResourceSize: 64 << 10}))
	eventually(t, func() bool { return len(list(z, "SyncPolicy")) == n }, "all arrive")
	ts := zoneType(g, "zone-1", "SyncPolicy")
	assert.GreaterOrEqual(t, ts.ResponsesSent, uint64(7), "1.6 MB in 256 KiB messages")
	assert.LessOrEqual(t, ts.LargestResponseBytes, 256<<10, "insights show the largest response, under the limit")
	assert.Greater(t, ts.LargestResponseBytes, 160<<10, "responses are filled (four 40 KiB resources or more)")
}

func TestBothDirectionsLargeInitialSync(t *testing.T) {
	g := startGlobal(t, lenientDir)
	zoneData := t.TempDir()
	z := startZone(t, "zone-1", g, lenientDir, zoneData)
	z.stop()
	const n = 300
	pad := strings.Repeat("y", 16<<10)
	for i := range n {
		r := syncPolicy(fmt.Sprintf("p-%d", i), false)
		r.Spec = spec(map[string]any{"pad": pad})
		create(t, g, r)
	}
	// Fill the zone's store offline through a zone engine without a global.
	offCfg := zoneConfig(t, "zone-1", g, Config{PluginsDir: lenientDir, DataDir: zoneData})
	offCfg.GlobalAddress = "localhost:1"
	zOff := startNode(t, offCfg)
	for i := range n {
		create(t, zOff, &resource.Resource{Type: "SyncStatus", Mesh: "default", Name: fmt.Sprintf("s-%d", i), Spec: spec(map[string]any{"pad": pad})})
	}
	zOff.stop()
	z = startZone(t, "zone-1", g, lenientDir, zoneData)
	eventually(t, func() bool { return len(list(z, "SyncPolicy")) == n && len(list(g, "SyncStatus")) == n }, "both directions converge")
}

func TestStartFailsClearlyWithoutDataDir(t *testing.T) {
	_, err := New(Config{Role: RoleGlobal, PluginsDir: builtinDir}, hclog.NewNullLogger())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "data dir")
	_, err = New(Config{Role: RoleZone, ZoneName: "Bad_Name", GlobalAddress: "x:1", DataDir: "d"}, hclog.NewNullLogger())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "zone name")
}

// pluginCalls returns how many Validate RPCs n has sent to plugin.
func pluginCalls(n *node, plugin string) int64 {
	for _, p := range n.e.host.Plugins() {
		if p.Name == plugin {
			return p.Calls
		}
	}
	return -1
}

func TestBatchApplyValidatesOnce(t *testing.T) {
	g := startGlobal(t, builtinDir)
	create(t, g, &resource.Resource{Type: "Mesh", Name: "default", Spec: spec(map[string]any{})})
	var docs []any
	for i := range 5 {
		docs = append(docs, meshTimeout(fmt.Sprintf("t-%d", i), "5s"))
	}
	body, err := json.Marshal(map[string]any{"resources": docs})
	require.NoError(t, err)
	before := pluginCalls(g, "policies")
	resp, err := http.Post("http://"+g.e.APIAddr().String()+"/api/v1/apply", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Len(t, list(g, "MeshTimeout"), 5)
	assert.Equal(t, int64(1), pluginCalls(g, "policies")-before,
		"the batch is validated in one plugin call, and the writes do not validate each resource again")
}

// A zone whose schema for a type is byte for byte global's does not check
// it again; its plugin still validates. Shown with a policy that reached
// global's store without the schema step (written below the API): the zone
// stores it, where a zone checking the schema itself would NACK it.
func TestZoneTrustsGlobalsIdenticalSchema(t *testing.T) {
	g := startGlobal(t, lenientDir)
	z := startZone(t, "zone-1", g, lenientDir, "")
	long := &resource.Resource{Type: "SyncPolicy", Mesh: "default", Name: "long",
		Spec: spec(map[string]any{"value": strings.Repeat("v", 100)})}
	_, err := g.b().Create(context.Background(), long.Clone())
	require.Error(t, err, "global's own writes are schema-checked (value is capped at 64 characters)")
	assert.Contains(t, err.Error(), "spec.value")

	_, err = g.e.store.Create(context.Background(), long.Clone())
	require.NoError(t, err)
	eventually(t, func() bool { return len(list(z, "SyncPolicy")) == 1 }, "the zone trusts global's schema check")
	assert.Zero(t, zoneType(g, "zone-1", "SyncPolicy").ResponsesNACKed)
}

// A zone running the plugin global announced, at the same version and with
// the same schema, does not ask it about what global sends; at another
// version it does. Global asks its own plugin about every resource a zone
// sends (decision 0025).
func TestZoneTrustsGlobalsValidationForTheSamePluginVersion(t *testing.T) {
	for _, c := range []struct {
		name      string
		zoneDir   string
		wantCalls bool
	}{
		{"same plugin and version", lenientDir, false},
		{"other plugin version", lenientV2Dir, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := startGlobal(t, lenientDir)
			for i := range 20 {
				create(t, g, syncPolicy(fmt.Sprintf("p%d", i), false))
			}
			z := startZone(t, "zone-1", g, c.zoneDir, "")
			eventually(t, func() bool { return len(list(z, "SyncPolicy")) == 20 }, "the zone has every policy")
			if c.wantCalls {
				assert.Positive(t, pluginCalls(z, "synctest"), "the zone's own plugin judged global's resources")
			} else {
				assert.Zero(t, pluginCalls(z, "synctest"), "global's verdict stands for the zone's plugin")
			}

			before := pluginCalls(g, "synctest")
			create(t, z, &resource.Resource{Type: "SyncStatus", Mesh: "default", Name: "s1", Spec: spec(map[string]any{})})
			eventually(t, func() bool { return len(list(g, "SyncStatus")) == 1 }, "the status reaches global")
			assert.Greater(t, pluginCalls(g, "synctest"), before, "global validates what a zone sends with its own plugin")
		})
	}
}
