package e2e

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func examplesFile(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join(moduleRoot, "examples", "demo", name))
	require.NoError(t, err)
	return p
}

// syncedCluster is a global and zone-1 with examples/demo/global.yaml
// applied on global and examples/demo/zone-1.yaml on zone-1, both synced.
func syncedCluster(t *testing.T) (*cluster, *node) {
	t.Helper()
	c := newCluster(t)
	z := c.addZone(t, "zone-1")

	r := mustCLI(t, "apply", "-f", examplesFile(t, "global.yaml"), "--api", c.global.api())
	assert.Contains(t, r.stdout, "4 resources applied: 4 created")

	waitFor(t, "MeshTimeout web-timeouts on zone-1", func() (bool, string) {
		rs := list(t, z.api(), "MeshTimeout")
		mt, ok := find(rs, "web-timeouts", "")
		return ok && connectionTimeout(mt) == "5s", fmt.Sprint(rs)
	})
	// A zone accepts dataplanes only in a mesh it holds.
	waitFor(t, "Mesh default on zone-1", func() (bool, string) {
		rs := list(t, z.api(), "Mesh")
		_, ok := find(rs, "default", "")
		return ok, fmt.Sprint(rs)
	})

	r = mustCLI(t, "apply", "-f", examplesFile(t, "zone-1.yaml"), "--api", z.api())
	assert.Contains(t, r.stdout, "2 resources applied: 2 created")
	waitFor(t, "zone-1's Dataplanes on global", func() (bool, string) {
		got := names(list(t, c.global.api(), "Dataplane"))
		return slices.Equal(got, []string{"zone-1/default/frontend-1", "zone-1/default/web-1"}), fmt.Sprint(got)
	})
	return c, z
}

// TestSyncBothWays: policies applied on global reach the zone, dataplanes
// applied on the zone reach global attributed to it, and global lists the
// zone online. Then the error cases and the metrics run on the same pair.
func TestSyncBothWays(t *testing.T) {
	c, z := syncedCluster(t)

	t.Run("policies on zone", func(t *testing.T) {
		for _, typ := range []string{"Mesh", "MeshTimeout", "MeshTrafficPermission", "MeshRetry"} {
			assert.Len(t, list(t, z.api(), typ), 1, typ)
		}
		mt, ok := find(list(t, z.api(), "MeshTimeout"), "web-timeouts", "")
		require.True(t, ok)
		assert.Equal(t, "default", mt.Mesh)
		assert.Equal(t, map[string]any{"team": "web"}, mt.Labels)
		assert.Empty(t, mt.Zone, "a policy from global has no zone")
	})

	t.Run("dataplanes on global", func(t *testing.T) {
		dps := list(t, c.global.api(), "Dataplane")
		web, ok := find(dps, "web-1", "zone-1")
		require.True(t, ok, "%v", names(dps))
		nw, _ := web.Spec["networking"].(map[string]any)
		assert.Equal(t, "10.0.1.10", nw["address"])
		// The zone filter and the table's ZONE column.
		assert.Len(t, list(t, c.global.api(), "Dataplane", "--zone", "zone-1"), 2)
		assert.Empty(t, list(t, c.global.api(), "Dataplane", "--zone", "zone-2"))
		tab := mustCLI(t, "get", "Dataplane", "--api", c.global.api())
		assert.Regexp(t, `(?m)^MESH\s+NAME\s+ZONE\s+VERSION\s+AGE`, tab.stdout)
		assert.Regexp(t, `(?m)^default\s+web-1\s+zone-1\s`, tab.stdout)
	})

	t.Run("inspect zones", func(t *testing.T) {
		online, out := zoneOnline(t, c.global, "zone-1")
		assert.True(t, online, out)
		tab := mustCLI(t, "inspect", "zones", "--api", c.global.api())
		assert.Regexp(t, `(?m)^zone-1\s+online\s`, tab.stdout)
		// The zone's side of the same connection.
		tab = mustCLI(t, "inspect", "sync", "--api", z.api())
		assert.Regexp(t, `(?m)^global\s+online\s`, tab.stdout)
	})

	t.Run("cli errors", func(t *testing.T) { testCLIErrors(t, c, z) })
	t.Run("metrics", func(t *testing.T) { testMetrics(t, c) })

	t.Run("deletes propagate", func(t *testing.T) {
		r := mustCLI(t, "delete", "MeshRetry", "web-retries", "--api", c.global.api())
		assert.Contains(t, r.stdout, "MeshRetry default/web-retries deleted")
		r = mustCLI(t, "delete", "Dataplane", "frontend-1", "--api", z.api())
		assert.Contains(t, r.stdout, "Dataplane default/frontend-1 deleted")
		waitFor(t, "MeshRetry gone from the zone", func() (bool, string) {
			rs := list(t, z.api(), "MeshRetry")
			return len(rs) == 0, fmt.Sprint(names(rs))
		})
		waitFor(t, "frontend-1 gone from global", func() (bool, string) {
			got := names(list(t, c.global.api(), "Dataplane"))
			return slices.Equal(got, []string{"zone-1/default/web-1"}), fmt.Sprint(got)
		})
	})
}

// testCLIErrors: each bad apply exits 2 with the documented message and
// changes nothing on either side.
func testCLIErrors(t *testing.T, c *cluster, z *node) {
	dir := t.TempDir()
	before := map[string][]string{
		"global/MeshTimeout": names(list(t, c.global.api(), "MeshTimeout")),
		"global/Dataplane":   names(list(t, c.global.api(), "Dataplane")),
		"zone/MeshTimeout":   names(list(t, z.api(), "MeshTimeout")),
		"zone/Dataplane":     names(list(t, z.api(), "Dataplane")),
	}
	mtBefore, ok := find(list(t, c.global.api(), "MeshTimeout"), "web-timeouts", "")
	require.True(t, ok)

	// A valid resource in front of the bad one: the batch must not be
	// half-applied.
	const goodTimeout = `type: MeshTimeout
mesh: default
name: should-not-exist
spec:
  targetRef: {kind: Mesh}
  to:
    - targetRef: {kind: MeshService, name: db}
      default: {connectionTimeout: 3s}
`
	cases := []struct {
		name, api, file string
		want            []string // substrings of stderr
	}{
		{
			name: "invalid yaml", api: c.global.api(),
			file: writeFile(t, dir, "broken.yaml", "type: MeshTimeout\nname: [unclosed\n  spec: {\n"),
			want: []string{"broken.yaml document 1", "yaml"},
		},
		{
			name: "unknown type", api: c.global.api(),
			file: writeFile(t, dir, "unknown.yaml", goodTimeout+"---\ntype: NoSuchType\nname: x\nspec: {}\n"),
			want: []string{"unknown.yaml document 2", "unknown resource type NoSuchType"},
		},
		{
			name: "negative connectionTimeout", api: c.global.api(),
			file: writeFile(t, dir, "negative.yaml", goodTimeout+`---
type: MeshTimeout
mesh: default
name: web-timeouts
spec:
  targetRef: {kind: Mesh}
  to:
    - targetRef: {kind: MeshService, name: web}
      default: {connectionTimeout: -5s}
`),
			want: []string{"negative.yaml document 2", "MeshTimeout default/web-timeouts", "spec.to[0].default.connectionTimeout"},
		},
		{
			name: "dataplane port out of range", api: z.api(),
			file: writeFile(t, dir, "port.yaml", `type: Dataplane
mesh: default
name: web-2
spec:
  networking:
    address: 10.0.1.12
    inbound:
      - port: 70000
        tags: {kuma.io/service: web}
`),
			want: []string{"port.yaml document 1", "Dataplane default/web-2", "spec.networking.inbound[0].port"},
		},
		{
			name: "read-only side", api: z.api(),
			file: writeFile(t, dir, "on-zone.yaml", goodTimeout),
			want: []string{"MeshTimeout is written on global", "apply it on global"},
		},
		{
			name: "mesh that does not exist", api: c.global.api(),
			file: writeFile(t, dir, "no-mesh.yaml", strings.Replace(goodTimeout, "mesh: default", "mesh: no-such-mesh", 1)),
			want: []string{`mesh "no-such-mesh"`, "create it first (type: Mesh, name: no-such-mesh)"},
		},
		{
			name: "dataplane on global", api: c.global.api(),
			file: examplesFile(t, "zone-2.yaml"),
			want: []string{"Dataplane is written on a zone", "apply it on the zone"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := cli(t, "apply", "-f", tc.file, "--api", tc.api)
			t.Logf("%s", r.stderr)
			assert.Equal(t, 2, r.code, "%s", r)
			for _, w := range tc.want {
				assert.Contains(t, r.stderr, w, "%s", r)
			}
			assert.NotContains(t, r.stdout, "created", "nothing may be written")
		})
	}
	// The API codes behind those messages, as documented in api.md.
	t.Run("api codes", func(t *testing.T) {
		code, body := httpPost(t, c.global.api()+"/api/v1/apply",
			`{"resources":[{"type":"NoSuchType","name":"x","spec":{}}]}`)
		assert.Equal(t, 404, code, body)
		assert.Contains(t, body, `"unknown_type"`)
		code, body = httpPost(t, z.api()+"/api/v1/apply",
			`{"resources":[{"type":"Mesh","name":"other","spec":{}}]}`)
		assert.Equal(t, 403, code, body)
		assert.Contains(t, body, `"read_only"`)
		r := cli(t, "get", "NoSuchType", "--api", c.global.api())
		assert.Equal(t, 2, r.code, "%s", r)
		assert.Contains(t, r.stderr, "NoSuchType", "%s", r)
	})

	after := map[string][]string{
		"global/MeshTimeout": names(list(t, c.global.api(), "MeshTimeout")),
		"global/Dataplane":   names(list(t, c.global.api(), "Dataplane")),
		"zone/MeshTimeout":   names(list(t, z.api(), "MeshTimeout")),
		"zone/Dataplane":     names(list(t, z.api(), "Dataplane")),
	}
	assert.Equal(t, before, after, "a failed apply changed the resources")
	mtAfter, ok := find(list(t, c.global.api(), "MeshTimeout"), "web-timeouts", "")
	require.True(t, ok)
	assert.Equal(t, mtBefore.Version, mtAfter.Version, "web-timeouts was rewritten")
	assert.Equal(t, "5s", connectionTimeout(mtAfter))
}

// metricNames parses the metric table of docs/metrics.md.
func metricNames(t *testing.T) []string {
	t.Helper()
	b := readFile(t, filepath.Join(moduleRoot, "docs", "metrics.md"))
	re := regexp.MustCompile("(?m)^\\| `(kds_[a-z_]+)` \\|")
	var out []string
	for _, m := range re.FindAllStringSubmatch(b, -1) {
		out = append(out, m[1])
	}
	require.GreaterOrEqual(t, len(out), 10, "metric table of docs/metrics.md not found")
	return out
}

// testMetrics: global's /metrics exposes every documented metric once a
// zone is connected and plugins are loaded.
func testMetrics(t *testing.T, c *cluster) {
	want := metricNames(t)
	// kds_auth_refused_total has samples only after a refusal: make one
	// with a zone whose token is not a token (reason malformed).
	badToken := writeFile(t, t.TempDir(), "bad.token", "not-a-token")
	badAPI := addr(freePort(t))
	bad := startProc(t, "zone-bad", "zone", "--name", "zone-bad", "--global", addr(c.global.kdsPort),
		"--data-dir", t.TempDir(), "--plugins-dir", pluginsDir, "--api-addr", badAPI,
		"--ca-file", c.pki.ca, "--token-file", badToken,
		"--reconnect-backoff-base", "100ms", "--reconnect-backoff-max", "1s")
	var body string
	waitFor(t, "every documented metric on global", func() (bool, string) {
		code, b, err := httpGet(c.global.api() + "/metrics")
		if err != nil || code != 200 {
			return false, fmt.Sprintf("%d %v", code, err)
		}
		body = b
		var missing []string
		for _, name := range want {
			if !hasMetric(body, name) {
				missing = append(missing, name)
			}
		}
		return len(missing) == 0, "missing " + strings.Join(missing, ", ")
	})
	assert.Regexp(t, `(?m)^kds_session_connected\{zone="zone-1"\} 1$`, body)
	assert.Regexp(t, `(?m)^kds_plugin_up\{plugin="policies"\} 1$`, body)
	assert.Regexp(t, `(?m)^kds_plugin_up\{plugin="dataplanes"\} 1$`, body)
	assert.Regexp(t, `(?m)^kds_resources\{type="Dataplane"\} 2$`, body)
	assert.Regexp(t, `(?m)^kds_auth_refused_total\{reason="malformed"\} [1-9]`, body)

	// The refused zone never counts as connected, on either side.
	if !bad.exited() {
		code, _, err := httpGet("http://" + badAPI + "/readyz")
		if err == nil {
			assert.NotEqual(t, 200, code, "a zone refused by global reports ready")
		}
	}
	online, _ := zoneOnline(t, c.global, "zone-bad")
	assert.False(t, online)
}

// hasMetric reports whether the exposition has a sample of name (for a
// histogram, of its _bucket/_sum/_count series).
func hasMetric(body, name string) bool {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(_bucket|_sum|_count)?(\{[^}]*\})? `)
	return re.MatchString(body)
}
