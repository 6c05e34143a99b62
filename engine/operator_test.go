package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/apitypes"
	"github.com/kds-engine/kds-engine/engine/internal/api"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// zoneLabels returns every value the zone label takes on n's kds_ metrics.
func zoneLabels(t *testing.T, n *node) map[string]bool {
	t.Helper()
	mfs, err := n.e.promReg.Gather()
	require.NoError(t, err)
	out := map[string]bool{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "kds_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "zone" {
					out[l.GetValue()] = true
				}
			}
		}
	}
	return out
}

// TestOperatorMetricsMatchTheStores checks the metrics an operator reads
// against independent counts: global's kds_resources of a zone-provided
// type is every zone's resources (also of a zone that went away), a
// zone's session metrics carry its own name, and a zone that stops ends
// its session on global as peer_closed (on the zone, a global that stops
// likewise).
func TestOperatorMetricsMatchTheStores(t *testing.T) {
	g := startGlobal(t, builtinDir)
	create(t, g, &resource.Resource{Type: "Mesh", Name: "default", Spec: spec(map[string]any{})})
	create(t, g, meshTimeout("web-timeouts", "5s"))
	zones := map[string]int{"zone-1": 3, "zone-2": 5, "zone-3": 2}
	nodes := map[string]*node{}
	for name, n := range zones {
		z := startZone(t, name, g, builtinDir, "")
		nodes[name] = z
		for i := range n {
			create(t, z, dataplane(fmt.Sprintf("dp-%d", i), fmt.Sprintf("10.0.0.%d", i+1)))
		}
	}
	const total = 3 + 5 + 2
	eventually(t, func() bool { return len(list(g, "Dataplane")) == total }, "global holds every zone's dataplanes")
	eventually(t, func() bool {
		return seriesValueOf(t, g, "kds_resources", map[string]string{"type": "Dataplane"}) == total
	}, "global's kds_resources{type=Dataplane} is the sum over zones (%d)", total)
	assert.Equal(t, 1.0, seriesValueOf(t, g, "kds_resources", map[string]string{"type": "MeshTimeout"}))
	for name, z := range nodes {
		eventually(t, func() bool {
			return seriesValueOf(t, z, "kds_resources", map[string]string{"type": "Dataplane"}) == float64(zones[name]) &&
				seriesValueOf(t, z, "kds_resources", map[string]string{"type": "MeshTimeout"}) == 1
		}, "%s's kds_resources: its own dataplanes and global's policy", name)
		assert.Equal(t, map[string]bool{name: true}, zoneLabels(t, z), "%s's metrics name the zone itself", name)
		assert.Equal(t, 1.0, seriesValueOf(t, z, "kds_sessions_started_total", map[string]string{"zone": name}))
	}

	// A zone that stops: global counts its session's end as peer_closed
	// and keeps counting its resources.
	nodes["zone-2"].stop()
	eventually(t, func() bool {
		return seriesValueOf(t, g, "kds_sessions_ended_total", map[string]string{"zone": "zone-2", "reason": "peer_closed"}) == 1
	}, "zone-2's stop counted as peer_closed on global")
	assert.Zero(t, seriesValueOf(t, g, "kds_sessions_ended_total", map[string]string{"zone": "zone-2", "reason": "other"}))
	assert.Zero(t, seriesValueOf(t, g, "kds_sessions_ended_total", map[string]string{"zone": "zone-2", "reason": "shutdown"}))
	eventually(t, func() bool {
		return seriesValueOf(t, g, "kds_resources", map[string]string{"type": "Dataplane"}) == total
	}, "an offline zone's resources still count")

	// Global restarts: each zone counts the end of its session as
	// peer_closed, under its own name, and the restarted global counts
	// every zone's resources from its store, also those of zone-2, which
	// does not come back, and those of zones whose sessions resume with
	// nothing to send.
	g = restartGlobal(t, g, nil)
	for _, name := range []string{"zone-1", "zone-3"} {
		z := nodes[name]
		eventually(t, func() bool {
			return seriesValueOf(t, z, "kds_sessions_ended_total", map[string]string{"zone": name, "reason": "peer_closed"}) == 1
		}, "%s counts global's stop as peer_closed", name)
		eventually(t, func() bool {
			ok, _ := zoneOnlineIn(g, name)
			return ok
		}, "%s reconnects", name)
	}
	eventually(t, func() bool {
		return seriesValueOf(t, g, "kds_resources", map[string]string{"type": "Dataplane"}) == total
	}, "the restarted global's kds_resources counts every zone's dataplanes (%d)", total)
	// resourcesHeld is set once the session has read what it holds, a
	// moment after the zone shows online.
	for _, name := range []string{"zone-1", "zone-3"} {
		eventually(t, func() bool {
			c, _ := g.e.Insights().Get(name)
			return c.Types["Dataplane"].ResourcesHeld == zones[name]
		}, "%s's resourcesHeld after a resumed session is %d", name, zones[name])
	}
}

// zoneOnlineIn reports whether zone's session on g is up.
func zoneOnlineIn(g *node, zone string) (bool, apitypes.Conn) {
	c, ok := g.e.Insights().Get(zone)
	return ok && c.Online, c
}

// TestRefusedSessionIsVisible: a zone global refuses (a token for another
// zone) says so in /readyz and in its sync state, not only in its log, with
// what it can tell about its token.
func TestRefusedSessionIsVisible(t *testing.T) {
	g := startGlobal(t, builtinDir)
	cfg := zoneConfig(t, "zone-1", g, Config{PluginsDir: builtinDir})
	cfg.TokenFile = zoneToken(t, g, "zone-2")
	z := startNode(t, cfg)
	// The address is the entry as configured, then the address it
	// resolved to: "global at localhost:PORT (127.0.0.1:PORT): session
	// refused: …".
	want := fmt.Sprintf("not connected to global at %s ", cfg.GlobalAddress)
	eventually(t, func() bool {
		err := z.b().Ready()
		return err != nil && strings.Contains(err.Error(), want) && strings.Contains(err.Error(), "): session refused: ")
	}, "readiness names the refusal")

	code, body := apiGet(t, z, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, "session refused")
	assert.Contains(t, body, "Unauthenticated")

	code, body = apiGet(t, z, "/api/v1/sync")
	require.Equal(t, http.StatusOK, code, body)
	var c apitypes.Conn
	require.NoError(t, json.Unmarshal([]byte(body), &c))
	assert.Equal(t, GlobalPeer, c.Name)
	assert.False(t, c.Online)
	assert.Contains(t, c.LastError, "session refused")
	// Global says nothing about why; the zone adds what it sees itself.
	assert.Contains(t, c.LastError, `is for zone "zone-2", not this zone "zone-1"`)
	assert.Contains(t, c.LastError, "kds-engine token generate --zone zone-1")
}

// TestMeshMustExist: a mesh-scoped resource is refused by the admin API
// when its mesh has no Mesh resource on that side, with an error that says
// how to create it; what the sync delivers is not checked again.
func TestMeshMustExist(t *testing.T) {
	g := startGlobal(t, builtinDir)
	mt := meshTimeout("web-timeouts", "5s")
	mt.Mesh = "no-such-mesh"
	_, err := g.b().Create(context.Background(), mt)
	require.ErrorIs(t, err, ErrMeshNotFound)
	assert.Contains(t, err.Error(), `mesh "no-such-mesh"`)
	assert.Contains(t, err.Error(), "create it first (type: Mesh, name: no-such-mesh)")

	code, body := apiDo(t, g, "PUT", "/api/v1/resources/MeshTimeout/web-timeouts?mesh=no-such-mesh",
		`{"type":"MeshTimeout","mesh":"no-such-mesh","name":"web-timeouts","spec":{"targetRef":{"kind":"Mesh"}}}`)
	assert.Equal(t, http.StatusBadRequest, code)
	var apiErr api.Error
	require.NoError(t, json.Unmarshal([]byte(body), &apiErr), body)
	assert.Equal(t, apitypes.CodeMeshNotFound, apiErr.Code)
	assert.Empty(t, list(g, "MeshTimeout"), "nothing was stored")

	// With its Mesh the same write succeeds; Meshes themselves are
	// global-scoped and need nothing.
	create(t, g, &resource.Resource{Type: "Mesh", Name: "no-such-mesh", Spec: spec(map[string]any{})})
	create(t, g, mt)

	// A policy whose Mesh is gone (deleted after the policy was written)
	// still syncs: the zone stores what global accepted, in any order.
	create(t, g, &resource.Resource{Type: "Mesh", Name: "short-lived", Spec: spec(map[string]any{})})
	orphan := meshTimeout("orphan", "1s")
	orphan.Mesh = "short-lived"
	create(t, g, orphan)
	require.NoError(t, g.b().Delete(context.Background(), resource.Key{Type: "Mesh", Name: "short-lived"}, ""))
	// Deleting a Mesh does not delete what is in it; what is left can be
	// read and deleted but not changed (docs/decisions/0019).
	stored := find(g, orphan.Key())
	require.NotNil(t, stored, "no cascade")
	upd := meshTimeout("orphan", "2s")
	upd.Mesh, upd.Version = "short-lived", stored.Version
	_, err = g.b().Update(context.Background(), upd)
	require.ErrorIs(t, err, ErrMeshNotFound, "an update into a deleted mesh")
	leftover := meshTimeout("leftover", "1s")
	leftover.Mesh = "short-lived"
	create(t, g, &resource.Resource{Type: "Mesh", Name: "short-lived", Spec: spec(map[string]any{})})
	create(t, g, leftover)
	require.NoError(t, g.b().Delete(context.Background(), resource.Key{Type: "Mesh", Name: "short-lived"}, ""))
	require.NoError(t, g.b().Delete(context.Background(), leftover.Key(), ""), "a resource of a deleted mesh can be deleted")

	z := startZone(t, "zone-1", g, builtinDir, "")
	eventually(t, func() bool { return len(list(z, "MeshTimeout")) == 2 }, "the zone holds both policies")
	assert.NotNil(t, find(z, orphan.Key()), "sync does not re-check the mesh")

	// On a zone, a dataplane in a mesh global has not created is refused
	// with a hint that meshes come from global.
	dp := dataplane("web-1", "10.0.0.1")
	dp.Mesh = "elsewhere"
	_, err = z.b().Create(context.Background(), dp)
	require.ErrorIs(t, err, ErrMeshNotFound)
	assert.Contains(t, err.Error(), "create it on global")
	dp.Mesh = "no-such-mesh"
	create(t, z, dp)
}

func apiGet(t *testing.T, n *node, path string) (int, string) {
	t.Helper()
	return apiDo(t, n, "GET", path, "")
}

func apiDo(t *testing.T, n *node, method, path, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+n.e.APIAddr().String()+path, rd)
	require.NoError(t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}
