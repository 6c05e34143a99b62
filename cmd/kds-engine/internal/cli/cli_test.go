package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"sigs.k8s.io/yaml"

	"github.com/kds-engine/kds-engine/cmd/kds-engine/internal/syncbuf"
	"github.com/kds-engine/kds-engine/engine"
	"github.com/kds-engine/kds-engine/engine/apitest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// created is the fake backend's fixed creation time.
var created = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

type harness struct {
	t     *testing.T
	srv   *apitest.Server
	env   map[string]string
	files map[string]string
	stdin string
}

func newHarness(t *testing.T, role string) *harness {
	t.Helper()
	srv := apitest.NewServer(role)
	t.Cleanup(srv.Close)
	return &harness{t: t, srv: srv, env: map[string]string{}, files: map[string]string{}}
}

func (h *harness) app() (*App, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	return &App{
		Stdin:  strings.NewReader(h.stdin),
		Stdout: &out,
		Stderr: &errb,
		LookupEnv: func(k string) (string, bool) {
			v, ok := h.env[k]
			return v, ok
		},
		ReadFile: func(p string) ([]byte, error) {
			if s, ok := h.files[p]; ok {
				return []byte(s), nil
			}
			return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
		},
		Now:     func() time.Time { return created.Add(5 * time.Minute) },
		Version: "1.2.3", Commit: "abc123",
	}, &out, &errb
}

// run runs a client verb against the fake API.
func (h *harness) run(args ...string) (int, string, string) {
	h.t.Helper()
	a, out, errb := h.app()
	code := a.Run(append(args, "--api", h.srv.URL))
	return code, out.String(), errb.String()
}

const policiesYAML = `# two resources and an empty document
type: Mesh
name: default
---
---
type: MeshTimeout
mesh: default
name: web-timeouts
labels:
  team: web
spec:
  targetRef: {kind: MeshService, name: web}
  connectTimeout: 5s
`

func TestApplyYAMLCreatedUpdatedUnchanged(t *testing.T) {
	h := newHarness(t, "global")
	h.files["p.yaml"] = policiesYAML
	code, out, errOut := h.run("apply", "-f", "p.yaml")
	require.Equal(t, ExitOK, code, errOut)
	assert.Equal(t, "Mesh default created\nMeshTimeout default/web-timeouts created\n2 resources applied: 2 created, 0 updated, 0 unchanged\n", out)
	assert.Equal(t, 2, h.srv.Backend.Count())

	code, out, _ = h.run("apply", "-f", "p.yaml")
	require.Equal(t, ExitOK, code)
	assert.Equal(t, "Mesh default unchanged\nMeshTimeout default/web-timeouts unchanged\n2 resources applied: 0 created, 0 updated, 2 unchanged\n", out)

	h.files["p.yaml"] = strings.Replace(policiesYAML, "5s", "7s", 1)
	code, out, _ = h.run("apply", "-f", "p.yaml")
	require.Equal(t, ExitOK, code)
	assert.Equal(t, "Mesh default unchanged\nMeshTimeout default/web-timeouts updated\n2 resources applied: 0 created, 1 updated, 1 unchanged\n", out)
}

func TestApplyJSONAndStdin(t *testing.T) {
	h := newHarness(t, "global")
	h.files["p.json"] = `{"type":"MeshTimeout","mesh":"default","name":"a","spec":{"connectTimeout":"1s"}}
---
{"type":"MeshTimeout","mesh":"default","name":"b","spec":{}}
`
	code, out, errOut := h.run("apply", "-f", "p.json")
	require.Equal(t, ExitOK, code, errOut)
	assert.Contains(t, out, "MeshTimeout default/a created\nMeshTimeout default/b created\n")

	h.stdin = `{"type":"Mesh","name":"default"}`
	code, out, errOut = h.run("apply", "-f", "-")
	require.Equal(t, ExitOK, code, errOut)
	assert.Equal(t, "Mesh default created\n1 resource applied: 1 created, 0 updated, 0 unchanged\n", out)
	assert.Equal(t, 3, h.srv.Backend.Count())
}

func TestApplyInvalidNamesFileDocumentAndField(t *testing.T) {
	h := newHarness(t, "global")
	h.files["examples/x.yaml"] = `type: MeshTimeout
mesh: default
name: ok
spec: {connectTimeout: 5s}
---
type: MeshTimeout
mesh: default
name: web
spec: {connectTimeout: -3s}
`
	code, out, errOut := h.run("apply", "-f", "examples/x.yaml")
	assert.Equal(t, ExitFailed, code)
	assert.Empty(t, out)
	assert.Equal(t, "apply: examples/x.yaml document 2: MeshTimeout default/web: spec.connectTimeout: must be a positive duration\n", errOut)
	assert.Equal(t, 0, h.srv.Backend.Count(), "nothing written")
}

// Plugin warnings are printed to stderr, naming file, document and field;
// the resource is applied.
func TestApplyPrintsWarnings(t *testing.T) {
	h := newHarness(t, "global")
	h.files["x.yaml"] = `type: MeshTimeout
mesh: default
name: web
spec: {connectTimeout: 5s}
`
	h.srv.Backend.AddWarning("MeshTimeout", "default", "web", "spec.connectTimeout", "is deprecated")
	code, out, errOut := h.run("apply", "-f", "x.yaml")
	assert.Equal(t, 0, code, errOut)
	assert.Equal(t, "apply: x.yaml document 1: MeshTimeout default/web: spec.connectTimeout: warning: is deprecated\n", errOut)
	assert.Contains(t, out, "MeshTimeout default/web created")
	assert.Equal(t, 1, h.srv.Backend.Count())
}

func TestApplyInputErrors(t *testing.T) {
	h := newHarness(t, "global")
	for name, tc := range map[string]struct{ file, want string }{
		"unknown field": {"type: Mesh\nname: a\nspec: {}\nmetadata: {}\n", `apply: f.yaml document 1: document mixes spec with top-level fields: move metadata under spec`},
		"no name":       {"type: Mesh\n---\ntype: Mesh\n", `apply: f.yaml document 1: type and name are required`},
		"bad yaml":      {"type: Mesh\nname: a\n---\ntype: [\n", `apply: f.yaml document 2: `},
		"duplicate":     {"type: Mesh\nname: a\n---\ntype: Mesh\nname: a\n", `apply: f.yaml document 2: Mesh a is also in f.yaml document 1`},
		"empty":         {"# nothing\n", `apply: no resources in f.yaml`},
		"unknown type":  {"type: Mesh\nname: m\n---\ntype: Nope\nname: a\n", `apply: f.yaml document 2: Nope a: type: unknown resource type Nope`},
		"kind":          {"kind: Mesh\nname: a\n", "apply: f.yaml document 1: unknown field \"kind\"; a document names its type with type: (for example type: MeshTimeout), not kind:\n"},
	} {
		t.Run(name, func(t *testing.T) {
			h.files["f.yaml"] = tc.file
			code, _, errOut := h.run("apply", "-f", "f.yaml")
			assert.Equal(t, ExitFailed, code)
			assert.True(t, strings.HasPrefix(errOut, tc.want), "got %q", errOut)
		})
	}
	code, _, errOut := h.run("apply", "-f", "missing.yaml")
	assert.Equal(t, ExitFailed, code)
	assert.Contains(t, errOut, "apply: read missing.yaml: open missing.yaml: file does not exist")
	code, _, errOut = h.run("apply")
	assert.Equal(t, ExitUsage, code)
	assert.Contains(t, errOut, "give a file with -f")
	assert.Equal(t, 0, h.srv.Backend.Count())
}

func TestApplyReadOnlyOnZone(t *testing.T) {
	h := newHarness(t, "zone")
	h.files["p.yaml"] = policiesYAML
	code, _, errOut := h.run("apply", "-f", "p.yaml")
	assert.Equal(t, ExitFailed, code)
	assert.Equal(t, "apply: Mesh is written on global and synced to zones; apply it on global\n", errOut)
}

func TestApplyPluginDown(t *testing.T) {
	h := newHarness(t, "global")
	h.srv.Backend.SetPluginDown("policies", true)
	h.files["p.yaml"] = policiesYAML
	code, _, errOut := h.run("apply", "-f", "p.yaml")
	assert.Equal(t, ExitFailed, code)
	assert.Contains(t, errOut, "plugin policies (type Mesh) is down")
}

func seed(t *testing.T, h *harness) {
	t.Helper()
	require.NoError(t, h.srv.Backend.SeedJSON(`[
		{"type":"MeshTimeout","mesh":"default","name":"web","labels":{"team":"web"},"spec":{"connectTimeout":"5s"}},
		{"type":"MeshTimeout","mesh":"default","name":"db","labels":{"team":"db"},"spec":{"connectTimeout":"2s"}},
		{"type":"Dataplane","mesh":"default","zone":"zone-1","name":"web-1","spec":{"address":"10.0.0.1"}},
		{"type":"Mesh","name":"default","spec":{}}
	]`))
}

func TestGetTable(t *testing.T) {
	h := newHarness(t, "global")
	seed(t, h)
	code, out, errOut := h.run("get", "MeshTimeout")
	require.Equal(t, ExitOK, code, errOut)
	assert.Equal(t, "MESH     NAME  VERSION  AGE\ndefault  db    2        5m\ndefault  web   1        5m\n", out)

	code, out, _ = h.run("get", "Dataplane")
	require.Equal(t, ExitOK, code)
	assert.Equal(t, "MESH     NAME   ZONE    VERSION  AGE\ndefault  web-1  zone-1  3        5m\n", out)

	code, out, _ = h.run("get", "Mesh")
	require.Equal(t, ExitOK, code)
	assert.Equal(t, "NAME     VERSION  AGE\ndefault  4        5m\n", out)

	code, out, _ = h.run("get", "MeshTimeout", "-l", "team=web")
	require.Equal(t, ExitOK, code)
	assert.Equal(t, "MESH     NAME  VERSION  AGE\ndefault  web   1        5m\n", out)

	code, out, errOut = h.run("get", "MeshTimeout", "--mesh", "nope")
	require.Equal(t, ExitOK, code)
	assert.Empty(t, out)
	assert.Equal(t, "No MeshTimeout resources found.\n", errOut)

	// A single mesh-scoped resource: mesh defaults to "default".
	code, out, _ = h.run("get", "MeshTimeout", "web")
	require.Equal(t, ExitOK, code)
	assert.Equal(t, "MESH     NAME  VERSION  AGE\ndefault  web   1        5m\n", out)

	// A single zone-provided resource on global needs its zone: the CLI
	// asks for --zone (the API's message names its query parameter).
	code, out, errOut = h.run("get", "Dataplane", "web-1")
	assert.Equal(t, ExitUsage, code)
	assert.Empty(t, out)
	assert.Equal(t, "get: Dataplane resources on global belong to the zone that provided them; name it with --zone ZONE (the ZONE column of `kds-engine get Dataplane` lists them)\n", errOut)
	code, out, errOut = h.run("get", "Dataplane", "web-1", "--zone", "zone-1")
	require.Equal(t, ExitOK, code, errOut)
	assert.Contains(t, out, "web-1  zone-1")
}

func TestGetJSONAndYAML(t *testing.T) {
	h := newHarness(t, "global")
	seed(t, h)
	code, out, _ := h.run("get", "MeshTimeout", "web", "-o", "json")
	require.Equal(t, ExitOK, code)
	var one map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &one))
	assert.Equal(t, "web", one["name"])
	assert.Equal(t, map[string]any{"connectTimeout": "5s"}, one["spec"])

	code, out, _ = h.run("get", "MeshTimeout", "-o", "json")
	require.Equal(t, ExitOK, code)
	var list []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &list))
	require.Len(t, list, 2)
	assert.Equal(t, "db", list[0]["name"])

	code, out, _ = h.run("get", "MeshTimeout", "--mesh", "nope", "-o", "json")
	require.Equal(t, ExitOK, code)
	assert.Equal(t, "[]\n", out)

	code, out, _ = h.run("get", "MeshTimeout", "-o", "yaml")
	require.Equal(t, ExitOK, code)
	docs := strings.Split(out, "---\n")
	require.Len(t, docs, 2)
	var second map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(docs[1]), &second))
	assert.Equal(t, "web", second["name"])
	assert.Equal(t, map[string]any{"team": "web"}, second["labels"])

	// YAML output applies back unchanged (the versions match).
	h.files["back.yaml"] = out
	code, out, errOut := h.run("apply", "-f", "back.yaml")
	require.Equal(t, ExitOK, code, errOut)
	assert.Contains(t, out, "2 resources applied: 0 created, 0 updated, 2 unchanged")
}

func TestGetErrors(t *testing.T) {
	h := newHarness(t, "global")
	code, _, errOut := h.run("get", "Nope")
	assert.Equal(t, ExitFailed, code)
	assert.Equal(t, "get: unknown resource type \"Nope\" (known types: Dataplane, Mesh, MeshTimeout)\n", errOut)
	code, _, errOut = h.run("get", "MeshTimeout", "missing")
	assert.Equal(t, ExitFailed, code)
	assert.Equal(t, "get: MeshTimeout default/missing: resource not found\n", errOut)
	code, _, errOut = h.run("get", "MeshTimeout", "-o", "xml")
	assert.Equal(t, ExitUsage, code)
	assert.Equal(t, "get: -o \"xml\": accepted: table, json, yaml\n", errOut)
	code, _, errOut = h.run("get", "MeshTimeout", "-l", "novalue")
	assert.Equal(t, ExitUsage, code)
	assert.Equal(t, "get: -l \"novalue\": want key=value\n", errOut)
	code, _, _ = h.run("get")
	assert.Equal(t, ExitUsage, code)
}

func TestDelete(t *testing.T) {
	h := newHarness(t, "global")
	seed(t, h)
	code, out, errOut := h.run("delete", "MeshTimeout", "web")
	require.Equal(t, ExitOK, code, errOut)
	assert.Equal(t, "MeshTimeout default/web deleted\n", out)
	code, _, errOut = h.run("delete", "MeshTimeout", "web")
	assert.Equal(t, ExitFailed, code)
	assert.Contains(t, errOut, "delete: MeshTimeout default/web: resource not found")
	code, out, _ = h.run("delete", "Mesh", "default")
	require.Equal(t, ExitOK, code)
	assert.Equal(t, "Mesh default deleted\n", out)
	code, _, errOut = h.run("delete", "Dataplane", "web-1")
	assert.Equal(t, ExitFailed, code)
	assert.Contains(t, errOut, "delete: Dataplane resources on global belong to a zone")
	code, _, _ = h.run("delete", "MeshTimeout")
	assert.Equal(t, ExitUsage, code)
}

const zonesJSON = `[
	{"name":"zone-1","online":true,"connectedSince":"2026-01-02T03:00:00Z","sessions":3,
	 "types":{"MeshTimeout":{"type":"MeshTimeout","responsesSent":4,"responsesAcked":3,"responsesNacked":1,
	   "lastAck":"2026-01-02T03:01:00Z","lastNack":"2026-01-02T03:02:00Z","lastNackError":"spec.x: bad","resourcesHeld":2,
	   "rejectedCount":1,"rejected":[{"name":"default/bad","version":"v-7","errors":["spec.x: bad"]}]}}},
	{"name":"zone-2","online":false,"disconnectedAt":"2026-01-02T02:00:00Z","sessions":1,"lastError":"send timeout after 1m0s","types":{}}
]`

func TestInspectZones(t *testing.T) {
	h := newHarness(t, "global")
	require.NoError(t, h.srv.Backend.SetInsightsJSON(zonesJSON))
	code, out, errOut := h.run("inspect", "zones")
	require.Equal(t, ExitOK, code, errOut)
	want := `ZONE    STATUS   SINCE                 SESSIONS  TYPES  NACKED  LAST ERROR
zone-1  online   2026-01-02T03:00:00Z  3         1      1       -
zone-2  offline  2026-01-02T02:00:00Z  1         0      0       send timeout after 1m0s

ZONE    TYPE         SENT  ACKED  NACKED  HELD  REJECTED  LAST ACK              LAST NACK                         ERROR
zone-1  MeshTimeout  4     3      1       2     1         2026-01-02T03:01:00Z  2026-01-02T03:02:00Z spec.x: bad  -

ZONE    TYPE         REJECTED     VERSION  WHY
zone-1  MeshTimeout  default/bad  v-7      spec.x: bad
`
	assert.Equal(t, want, out)

	code, out, _ = h.run("inspect", "zones", "-o", "json")
	require.Equal(t, ExitOK, code)
	var z struct {
		Zones []map[string]any `json:"zones"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &z))
	require.Len(t, z.Zones, 2)
	assert.Equal(t, "zone-2", z.Zones[1]["name"])

	code, out, _ = h.run("inspect", "zones", "zone-2", "-o", "yaml")
	require.Equal(t, ExitOK, code)
	assert.Contains(t, out, "lastError: send timeout after 1m0s")

	code, _, errOut = h.run("inspect", "zones", "zone-9")
	assert.Equal(t, ExitFailed, code)
	assert.Equal(t, "inspect zones: zone \"zone-9\" has never connected\n", errOut)
}

// Zones that name the global replica holding their session get a REPLICA
// column.
func TestInspectZonesShowsReplica(t *testing.T) {
	h := newHarness(t, "global")
	require.NoError(t, h.srv.Backend.SetInsightsJSON(`[
	{"name":"zone-1","online":true,"connectedSince":"2026-01-02T03:00:00Z","sessions":1,"types":{},"replica":"gw-b"},
	{"name":"zone-2","online":false,"disconnectedAt":"2026-01-02T02:00:00Z","sessions":0,"types":{},"replica":"gw-a"}]`))
	code, out, errOut := h.run("inspect", "zones")
	require.Equal(t, ExitOK, code, errOut)
	assert.Equal(t, `ZONE    STATUS   REPLICA  SINCE                 SESSIONS  TYPES  NACKED  LAST ERROR
zone-1  online   gw-b     2026-01-02T03:00:00Z  1         0      0       -
zone-2  offline  gw-a     2026-01-02T02:00:00Z  0         0      0       -
`, out)

	code, _, errOut = h.run("inspect", "sync")
	assert.Equal(t, ExitFailed, code)
	assert.Equal(t, "inspect sync: this route is served by zone; this is a global control plane; point --api (or KDS_ENGINE_API) at the admin API of a zone control plane (zone's default: http://127.0.0.1:5682)\n", errOut)
}

// Zones whose session holds one of global's initial-sync slots show since
// when, in a column shown while any does.
func TestInspectZonesShowsInitialSyncSlots(t *testing.T) {
	h := newHarness(t, "global")
	require.NoError(t, h.srv.Backend.SetInsightsJSON(`[
	{"name":"zone-1","online":true,"connectedSince":"2026-01-02T03:00:00Z","sessions":1,"types":{},"initialSyncSlotSince":"2026-01-02T03:00:01Z"},
	{"name":"zone-2","online":true,"connectedSince":"2026-01-02T03:00:00Z","sessions":1,"types":{}}]`))
	code, out, errOut := h.run("inspect", "zones")
	require.Equal(t, ExitOK, code, errOut)
	assert.Equal(t, `ZONE    STATUS  SINCE                 SESSIONS  INITIAL-SYNC SLOT SINCE  TYPES  NACKED  LAST ERROR
zone-1  online  2026-01-02T03:00:00Z  1         2026-01-02T03:00:01Z     0      0       -
zone-2  online  2026-01-02T03:00:00Z  1         -                        0      0       -
`, out)
}

func TestInspectSync(t *testing.T) {
	h := newHarness(t, "zone")
	code, out, errOut := h.run("inspect", "sync")
	require.Equal(t, ExitOK, code, errOut)
	assert.Equal(t, "PEER    STATUS   SINCE  SESSIONS  TYPES  NACKED  LAST ERROR\nglobal  offline  -      0         0      0       -\n", out)

	require.NoError(t, h.srv.Backend.SetInsightsJSON(`[{"name":"global","online":true,"connectedSince":"2026-01-02T03:00:00Z","sessions":2,
		"types":{"Dataplane":{"type":"Dataplane","responsesSent":1,"responsesAcked":1,"resourcesHeld":5}}}]`))
	code, out, _ = h.run("inspect", "sync", "-o", "json")
	require.Equal(t, ExitOK, code)
	var c map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &c))
	assert.Equal(t, true, c["online"])

	// A subscription that waits for room in global's inbound budget.
	require.NoError(t, h.srv.Backend.SetInsightsJSON(`[{"name":"global","online":true,"connectedSince":"2026-01-02T03:00:00Z","sessions":2,
		"types":{"Dataplane":{"type":"Dataplane","waitingSince":"2026-01-02T03:00:01Z","waitingBytes":4195328}}}]`))
	code, out, _ = h.run("inspect", "sync")
	require.Equal(t, ExitOK, code)
	assert.Contains(t, out, "subscription waits for room in the peer's inbound budget since 2026-01-02T03:00:01Z (4195328 bytes)\n")

	// One that waits for an initial-sync slot on global.
	require.NoError(t, h.srv.Backend.SetInsightsJSON(`[{"name":"zone-1","online":true,"connectedSince":"2026-01-02T03:00:00Z","sessions":1,
		"types":{"Dataplane":{"type":"Dataplane","waitingSince":"2026-01-02T03:00:01Z","waitingFor":"initialSyncSlot"}}}]`))
	code, out, _ = h.run("inspect", "sync")
	require.Equal(t, ExitOK, code)
	assert.Contains(t, out, "subscription waits for an initial-sync slot on global since 2026-01-02T03:00:01Z\n")
	assert.NotContains(t, out, "inbound budget")

	// The global replica the zone is on.
	require.NoError(t, h.srv.Backend.SetInsightsJSON(`[{"name":"global","online":true,"connectedSince":"2026-01-02T03:00:00Z","sessions":3,
		"address":"10.0.0.2:5685","lastError":"global at g1.example:5685 (10.0.0.1:5685): stream closed","types":{}}]`))
	code, out, _ = h.run("inspect", "sync")
	require.Equal(t, ExitOK, code)
	assert.Equal(t, "PEER    STATUS  ADDRESS        SINCE                 SESSIONS  TYPES  NACKED  LAST ERROR\n"+
		"global  online  10.0.0.2:5685  2026-01-02T03:00:00Z  3         0      0       global at g1.example:5685 (10.0.0.1:5685): stream closed\n", out)
	code, out, _ = h.run("inspect", "sync", "-o", "json")
	require.Equal(t, ExitOK, code)
	require.NoError(t, json.Unmarshal([]byte(out), &c))
	assert.Equal(t, "10.0.0.2:5685", c["address"])

	code, _, errOut = h.run("inspect", "zones")
	assert.Equal(t, ExitFailed, code)
	assert.Equal(t, "inspect zones: this route is served by global; this is a zone control plane; point --api (or KDS_ENGINE_API) at the admin API of a global control plane (global's default: http://127.0.0.1:5681)\n", errOut)
}

func TestPluginsList(t *testing.T) {
	h := newHarness(t, "global")
	h.srv.Backend.SetPluginDown("dataplanes", true)
	code, out, errOut := h.run("plugins", "list")
	require.Equal(t, ExitOK, code, errOut)
	assert.Equal(t, `NAME        VERSION  STATE       TYPES             RESTARTS  LAST ERROR
dataplanes  0.1.0    restarting  Dataplane         0         -
policies    0.1.0    running     Mesh,MeshTimeout  0         -

Send buffer per logical stream: 3 types × 3 in flight + 16 headroom = 25 messages
(a server keeps at most 3 responses per type in flight before their ACKs; the headroom covers requests for types this side does not know)
`, out)
	code, out, _ = h.run("plugins", "list", "-o", "json")
	require.Equal(t, ExitOK, code)
	assert.Contains(t, out, `"capacity": 25`)
}

func TestVersion(t *testing.T) {
	h := newHarness(t, "global")
	a, out, _ := h.app()
	require.Equal(t, ExitOK, a.Run([]string{"version"}))
	assert.Regexp(t, `^kds-engine 1\.2\.3\ncommit: abc123\ngo: go1\.`, out.String())

	a = &App{Stdout: &bytes.Buffer{}}
	a.defaults()
	assert.Equal(t, "dev", a.Version)
	assert.Equal(t, "dev", a.Commit)
}

func TestAPIURLFromEnvAndErrors(t *testing.T) {
	h := newHarness(t, "global")
	seed(t, h)
	h.env[APIEnv] = h.srv.URL
	a, out, errb := h.app()
	require.Equal(t, ExitOK, a.Run([]string{"get", "Mesh"}), errb.String())
	assert.Contains(t, out.String(), "default")

	// --api wins over the environment.
	a, _, errb = h.app()
	assert.Equal(t, ExitFailed, a.Run([]string{"get", "Mesh", "--api", "http://127.0.0.1:1"}))
	assert.Contains(t, errb.String(), "get: cannot reach the admin API at http://127.0.0.1:1")

	a, _, errb = h.app()
	assert.Equal(t, ExitUsage, a.Run([]string{"get", "Mesh", "--api", "ftp://x"}))
	assert.Equal(t, "get: --api (or KDS_ENGINE_API): api URL \"ftp://x\": want http(s)://HOST:PORT\n", errb.String())

	a, _, errb = h.app()
	assert.Equal(t, ExitUsage, a.Run([]string{"frobnicate"}))
	assert.Contains(t, errb.String(), `unknown command "frobnicate"`)

	// Under a command group too (it printed the group's help and exited 0).
	for _, args := range [][]string{{"inspect", "zone"}, {"plugins", "lst"}, {"token", "verify"}} {
		a, _, errb = h.app()
		assert.Equal(t, ExitUsage, a.Run(args), "%v", args)
		assert.Contains(t, errb.String(), fmt.Sprintf("unknown command %q for \"kds-engine %s\"", args[1], args[0]))
	}
	a, out, errb = h.app()
	assert.Equal(t, ExitOK, a.Run([]string{"inspect"}), errb.String())
	assert.Contains(t, out.String(), "Available Commands:")
}

// ---- run commands ----

type fakeEngine struct {
	mu   sync.Mutex
	cfgs []engine.Config
	// run is what the fake does once started; nil returns nil at once.
	run func(ctx context.Context) error
}

func (f *fakeEngine) Run(ctx context.Context, cfg engine.Config, _ hclog.Logger) error {
	f.mu.Lock()
	f.cfgs = append(f.cfgs, cfg)
	f.mu.Unlock()
	if f.run == nil {
		return nil
	}
	return f.run(ctx)
}

func (f *fakeEngine) last(t *testing.T) engine.Config {
	f.mu.Lock()
	defer f.mu.Unlock()
	require.NotEmpty(t, f.cfgs)
	return f.cfgs[len(f.cfgs)-1]
}

func TestRunPrecedenceFileEnvFlag(t *testing.T) {
	h := newHarness(t, "global")
	h.files["kds.yaml"] = "sendTimeout: 20s\nbufferHeadroom: 4\nlogLevel: debug\nname: from-file\ndataDir: /file\n" +
		"caFile: ca.crt\ntokenFile: from-file.token\ntlsCertFile: kds.crt\n"
	h.env["KDS_ENGINE_BUFFER_HEADROOM"] = "8"
	h.env["KDS_ENGINE_DATA_DIR"] = "/env"
	h.env["KDS_ENGINE_CONFIG"] = "kds.yaml"
	fe := &fakeEngine{}
	a, _, errb := h.app()
	a.RunEngine = fe.Run
	code := a.Run([]string{"zone", "--global", "g.example:5685", "--data-dir", "/flag", "--max-message-size", "8MiB"})
	require.Equal(t, ExitOK, code, errb.String())
	cfg := fe.last(t)
	assert.Equal(t, engine.RoleZone, cfg.Role)
	assert.Equal(t, "from-file", cfg.ZoneName, "file")
	assert.Equal(t, 20*time.Second, cfg.SendTimeout, "file over default")
	assert.Equal(t, 8, cfg.BufferHeadroom, "env over file")
	assert.Equal(t, "/flag", cfg.DataDir, "flag over env over file")
	assert.Equal(t, 8<<20, cfg.MaxMessageSize)
	assert.Equal(t, "127.0.0.1:5682", cfg.APIAddress, "zone default")
	assert.Equal(t, "ca.crt", cfg.CAFile, "file")
	assert.Equal(t, "from-file.token", cfg.TokenFile, "file")
	assert.Empty(t, cfg.TLSCertFile, "a global setting in the file is ignored by a zone")
	assert.False(t, cfg.Insecure)

	// --config wins over KDS_ENGINE_CONFIG.
	h.files["other.yaml"] = "sendTimeout: 3s\n"
	a, _, errb = h.app()
	a.RunEngine = fe.Run
	require.Equal(t, ExitOK, a.Run([]string{"global", "--config", "other.yaml", "--insecure", "--insecure-allow-remote"}), errb.String())
	assert.Equal(t, 3*time.Second, fe.last(t).SendTimeout)
	assert.Equal(t, ":5685", fe.last(t).KDSAddress)
	assert.True(t, fe.last(t).Insecure, "--insecure without a value")
	assert.True(t, fe.last(t).InsecureAllowRemote)
	assert.Equal(t, 20, fe.last(t).SessionsPerMinute, "default")
	assert.Equal(t, 100000, fe.last(t).MaxResourcesPerZoneType, "default")
}

// The inbound pool and initial-sync settings reach engine.Config from
// flags and variables; unset, the engine picks the slots from the pool.
func TestRunInitialSyncSettingsReachEngine(t *testing.T) {
	h := newHarness(t, "global")
	h.env["KDS_ENGINE_INITIAL_SYNC_IDLE"] = "1m"
	fe := &fakeEngine{}
	a, _, errb := h.app()
	a.RunEngine = fe.Run
	require.Equal(t, ExitOK, a.Run([]string{"global", "--insecure", "--kds-addr", "127.0.0.1:5685",
		"--inbound-pool-size", "2GiB", "--initial-sync-slots", "40", "--initial-sync-hold", "15m"}), errb.String())
	cfg := fe.last(t)
	assert.Equal(t, int64(2<<30), cfg.InboundPoolSize)
	assert.Equal(t, 40, cfg.InitialSyncSlots)
	assert.Equal(t, 15*time.Minute, cfg.InitialSyncHold)
	assert.Equal(t, time.Minute, cfg.InitialSyncIdle, "from the environment")

	a, _, errb = h.app()
	a.RunEngine = fe.Run
	require.Equal(t, ExitOK, a.Run([]string{"global", "--insecure", "--kds-addr", "127.0.0.1:5685"}), errb.String())
	cfg = fe.last(t)
	assert.Equal(t, int64(256<<20), cfg.InboundPoolSize, "default")
	assert.Zero(t, cfg.InitialSyncSlots, "default: the engine sizes the slots from the pool")
	assert.Equal(t, 5*time.Minute, cfg.InitialSyncHold, "default")

	a, _, errb = h.app()
	a.RunEngine = fe.Run
	fe.cfgs = nil
	assert.Equal(t, ExitUsage, a.Run([]string{"global", "--insecure", "--kds-addr", "127.0.0.1:5685", "--inbound-pool-size", "1MiB"}))
	assert.Contains(t, errb.String(), "inbound-pool-size: 1MiB is below 4 × max-message-size (16MiB)")
	assert.Empty(t, fe.cfgs, "engine not started")
}

func TestRunInvalidConfigExitsOne(t *testing.T) {
	h := newHarness(t, "global")
	fe := &fakeEngine{}
	a, _, errb := h.app()
	a.RunEngine = fe.Run
	assert.Equal(t, ExitUsage, a.Run([]string{"zone", "--global", "g:1", "--store", "sqlite"}))
	assert.Equal(t, "kds-engine zone: invalid configuration:\n  name: required for a zone (accepted: a DNS label: lower-case letters, digits and '-', at most 63)\n"+
		"  ca-file: required unless --insecure (accepted: a PEM CA file)\n"+
		"  token-file: required: generate a token on global with `kds-engine token generate --zone NAME` (accepted: a file with the zone token, mode 0600)\n"+
		"  store: \"sqlite\" is not a store (accepted: bolt, memory)\n", errb.String())
	assert.Empty(t, fe.cfgs, "engine not started")

	a, _, errb = h.app()
	a.RunEngine = fe.Run
	assert.Equal(t, ExitUsage, a.Run([]string{"global"}))
	assert.Equal(t, "kds-engine global: invalid configuration:\n"+
		"  tls-cert-file: required unless --insecure (accepted: a PEM certificate file)\n"+
		"  tls-key-file: required unless --insecure (accepted: a PEM private key file)\n", errb.String())

	a, _, errb = h.app()
	a.RunEngine = fe.Run
	assert.Equal(t, ExitUsage, a.Run([]string{"zone", "--name", "zone-1", "--global", "127.0.0.1:1", "--insecure", "--token-file", "t",
		"--cert-file", "z.crt"}))
	assert.Equal(t, "kds-engine zone: invalid configuration:\n"+
		"  cert-file: --cert-file and --key-file go together (accepted: a PEM certificate file)\n", errb.String())

	a, _, errb = h.app()
	a.RunEngine = fe.Run
	assert.Equal(t, ExitUsage, a.Run([]string{"zone", "--name", "zone-1", "--global", "g:1", "--insecure", "--token-file", "t",
		"--sessions-per-minute", "5"}))
	assert.Contains(t, errb.String(), "unknown flag: --sessions-per-minute", "a global-only setting is not a zone flag")
	assert.Empty(t, fe.cfgs, "engine not started")

	a, _, errb = h.app()
	a.RunEngine = fe.Run
	assert.Equal(t, ExitUsage, a.Run([]string{"global", "--send-timeout", "forever"}))
	assert.Contains(t, errb.String(), `--send-timeout: "forever" is not a duration`)

	a, _, _ = h.app()
	assert.Equal(t, ExitUsage, a.Run([]string{"global", "--no-such-flag"}))
	assert.Equal(t, ExitUsage, a.Run([]string{"global", "extra-arg"}))
}

func TestRunEngineFailureExitsTwo(t *testing.T) {
	h := newHarness(t, "global")
	a, _, errb := h.app()
	a.RunEngine = (&fakeEngine{run: func(context.Context) error { return errors.New("listen :5685: address in use") }}).Run
	assert.Equal(t, ExitFailed, a.Run([]string{"global", "--log-level", "error", "--insecure", "--kds-addr", "127.0.0.1:5685"}))
	assert.Equal(t, "kds-engine global: listen :5685: address in use\n", errb.String())
}

// within waits for ch to deliver or fails the test after d, so that no test
// hangs when what it waits for never happens.
func within[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		require.FailNow(t, "timed out after "+d.String()+": "+what)
		var zero T
		return zero
	}
}

// waitStarted waits until the fake engine runs; if Run returns first (for
// example because the configuration was refused), it fails with the exit
// code and stderr instead of hanging.
func waitStarted(t *testing.T, started <-chan struct{}, done <-chan int, errb *syncbuf.Buffer) {
	t.Helper()
	select {
	case <-started:
	case code := <-done:
		require.FailNow(t, "run returned before the engine started", "exit %d: %s", code, errb.String())
	case <-time.After(10 * time.Second):
		require.FailNow(t, "engine not started after 10s", errb.String())
	}
}

func TestRunFirstSignalCancelsSecondExits(t *testing.T) {
	h := newHarness(t, "global")
	sigs := make(chan os.Signal, 2)
	started := make(chan struct{})

	// First signal: the context is cancelled, the engine returns, exit 0.
	a, _, _ := h.app()
	errb := &syncbuf.Buffer{}
	a.Stderr = errb
	a.Signals = func() (<-chan os.Signal, func()) { return sigs, func() {} }
	a.RunEngine = (&fakeEngine{run: func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	}}).Run
	done := make(chan int, 1)
	go func() { done <- a.Run([]string{"global", "--insecure", "--kds-addr", "127.0.0.1:5685"}) }()
	waitStarted(t, started, done, errb)
	sigs <- syscall.SIGTERM
	assert.Equal(t, ExitOK, within(t, done, 10*time.Second, "run did not return after the first signal"), errb.String())

	// Second signal: Exit(130) while the engine still shuts down.
	exited := make(chan int, 1)
	release := make(chan struct{})
	started2 := make(chan struct{})
	a, _, _ = h.app()
	errb2 := &syncbuf.Buffer{}
	a.Stderr = errb2
	a.Signals = func() (<-chan os.Signal, func()) { return sigs, func() {} }
	a.Exit = func(code int) { exited <- code; close(release) }
	a.RunEngine = (&fakeEngine{run: func(ctx context.Context) error {
		close(started2)
		<-ctx.Done()
		select { // a slow shutdown, bounded so a broken Exit cannot hang the test
		case <-release:
		case <-time.After(20 * time.Second):
		}
		return nil
	}}).Run
	go func() { done <- a.Run([]string{"global", "--insecure", "--kds-addr", "127.0.0.1:5685"}) }()
	waitStarted(t, started2, done, errb2)
	sigs <- syscall.SIGINT
	sigs <- syscall.SIGINT
	assert.Equal(t, ExitInterrupt, within(t, exited, 10*time.Second, "no exit after the second signal"))
	within(t, done, 30*time.Second, "run did not return after the engine stopped")
}

func TestApplyConflictNamesDocument(t *testing.T) {
	h := newHarness(t, "global")
	seed(t, h)
	h.files["stale.yaml"] = "type: Mesh\nname: default\n---\ntype: MeshTimeout\nmesh: default\nname: web\nversion: \"999\"\nspec: {connectTimeout: 9s}\n"
	code, _, errOut := h.run("apply", "-f", "stale.yaml")
	assert.Equal(t, ExitFailed, code)
	assert.Equal(t, "apply: stale.yaml document 2: MeshTimeout default/web: version 999 was given but the stored version is 1\n", errOut)
}

func TestTokenFromFlagAndEnv(t *testing.T) {
	srv := apitest.NewServerWithToken("global", "s3cret")
	t.Cleanup(srv.Close)
	h := &harness{t: t, srv: srv, env: map[string]string{}, files: map[string]string{}}
	code, _, errOut := h.run("get", "Mesh")
	assert.Equal(t, ExitFailed, code)
	assert.Equal(t, "get: this API requires a token: Authorization: Bearer TOKEN; give the CLI the token with --token TOKEN or KDS_ENGINE_API_TOKEN\n", errOut)

	code, _, errOut = h.run("get", "Mesh", "--token", "s3cret")
	assert.Equal(t, ExitOK, code, errOut)

	h.env[TokenEnv] = "s3cret"
	code, _, errOut = h.run("plugins", "list")
	assert.Equal(t, ExitOK, code, errOut)
	code, _, errOut = h.run("plugins", "list", "--token", "wrong")
	assert.Equal(t, ExitFailed, code, "flag wins over env")
	assert.Contains(t, errOut, "; give the CLI the token with --token TOKEN or KDS_ENGINE_API_TOKEN\n")
}

// TestRunFlagNames pins the flag names other tools and docs rely on.
func TestRunFlagNames(t *testing.T) {
	a := &App{}
	a.defaults()
	both := []string{"config", "plugins-dir", "required-plugins", "data-dir", "store", "api-addr", "send-timeout",
		"buffer-headroom", "max-message-size", "max-resource-size", "keepalive-time", "keepalive-timeout", "log-level", "log-format",
		"insecure", "api-token-file", "api-tls-cert-file", "api-tls-key-file"}
	g := a.runCommand(engine.RoleGlobal)
	for _, f := range append(both, "kds-addr", "tls-cert-file", "tls-key-file", "client-ca-file", "token-signing-key-file",
		"token-verification-key-files", "sessions-per-minute", "max-resources-per-zone-type",
		"inbound-pool-size", "initial-sync-slots", "initial-sync-hold", "initial-sync-idle") {
		assert.NotNil(t, g.Flags().Lookup(f), "global --%s", f)
	}
	assert.Nil(t, g.Flags().Lookup("name"))
	z := a.runCommand(engine.RoleZone)
	for _, f := range append(both, "name", "global", "reconnect-backoff-base", "reconnect-backoff-max",
		"ca-file", "cert-file", "key-file", "token-file") {
		assert.NotNil(t, z.Flags().Lookup(f), "zone --%s", f)
	}
	assert.Nil(t, z.Flags().Lookup("kds-addr"))
	assert.Nil(t, z.Flags().Lookup("tls-cert-file"))
	assert.Nil(t, z.Flags().Lookup("initial-sync-slots"), "global only")
	assert.Equal(t, "true", z.Flags().Lookup("insecure").NoOptDefVal, "--insecure needs no value")
}

func TestRunStoreUnreachableExitsOne(t *testing.T) {
	h := newHarness(t, "global")
	fe := &fakeEngine{run: func(context.Context) error {
		return fmt.Errorf("open postgres store: cannot reach PostgreSQL at db:5432 database kds: refused: %w", engine.ErrStoreUnavailable)
	}}
	a, _, errb := h.app()
	a.RunEngine = fe.Run
	h.env["KDS_ENGINE_POSTGRES_URL"] = "postgres://kds@db:5432/kds"
	assert.Equal(t, ExitUsage, a.Run([]string{"global", "--insecure", "--kds-addr", "127.0.0.1:5685", "--store", "postgres"}))
	assert.Contains(t, errb.String(), "kds-engine global: open postgres store: cannot reach PostgreSQL at db:5432 database kds")
	assert.Equal(t, "postgres://kds@db:5432/kds", fe.last(t).PostgresURL, "from the environment")
	assert.Equal(t, engine.StorePostgres, fe.last(t).Store)
}

// helpLine is the line of role's --help that starts with flag.
func helpLine(t *testing.T, role, flag string) string {
	t.Helper()
	code, out, errOut := runCLI(t, nil, role, "--help")
	require.Equal(t, ExitOK, code, errOut)
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), flag) {
			return line
		}
	}
	t.Fatalf("%s --help has no %s line:\n%s", role, flag, out)
	return ""
}

// A zone refuses --store postgres, so its help does not offer it; global's
// does.
func TestStoreHelpListsWhatTheRoleAccepts(t *testing.T) {
	zone := helpLine(t, "zone", "--store ")
	assert.NotContains(t, zone, "postgres", zone)
	assert.Contains(t, zone, "bolt (durable, under --data-dir) or memory", zone)
	assert.Contains(t, helpLine(t, "global", "--store "), "postgres (global replicas sharing --postgres-url)")
}

// Global's data dir holds its zone token signing key and cluster id, also
// with --store postgres (replicas share those files): its help says so,
// not only "the bolt store".
func TestDataDirHelpNamesGlobalsTrustFiles(t *testing.T) {
	global := helpLine(t, "global", "--data-dir ")
	assert.Contains(t, global, "zone token signing key and cluster id", global)
	assert.Contains(t, global, "also with --store postgres", global)
	zone := helpLine(t, "zone", "--data-dir ")
	assert.Contains(t, zone, "directory of the bolt store", zone)
	assert.NotContains(t, zone, "signing key", zone)
}

// While global's PostgreSQL is away, the admin API answers reads and
// writes with 503 store_unavailable: the CLI says what to do (retry once
// the database is back; a write is safe to repeat) and does not blame the
// first document of an apply.
func TestStoreUnavailableSaysRetry(t *testing.T) {
	h := newHarness(t, "global")
	seed(t, h)
	target, err := url.Parse(h.srv.URL)
	require.NoError(t, err)
	types := httputil.NewSingleHostReverseProxy(target)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/types" { // from the plugins, not the database
			types.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"code":"store_unavailable","message":"Mesh default: get Mesh default: PostgreSQL at db:5432 database kds unavailable: connection refused: store unavailable"}`)
	}))
	t.Cleanup(down.Close)
	run := func(args ...string) (int, string) {
		a, _, errb := h.app()
		return a.Run(append(args, "--api", down.URL)), errb.String()
	}

	h.files["p.yaml"] = policiesYAML
	code, errOut := run("apply", "-f", "p.yaml")
	assert.Equal(t, ExitFailed, code)
	assert.Equal(t, "apply: Mesh default: get Mesh default: PostgreSQL at db:5432 database kds unavailable: connection refused: store unavailable; "+
		"global's database cannot be reached (its /readyz says why): retry once it is back; nothing was written, or the outcome is unknown, and the same command is safe to repeat\n", errOut)
	assert.NotContains(t, errOut, "document 1")

	code, errOut = run("delete", "MeshTimeout", "web")
	assert.Equal(t, ExitFailed, code)
	assert.Contains(t, errOut, "; global's database cannot be reached (its /readyz says why): retry once it is back; nothing was written")

	code, errOut = run("get", "MeshTimeout")
	assert.Equal(t, ExitFailed, code)
	assert.Contains(t, errOut, "store unavailable; global's database cannot be reached (its /readyz says why): retry once it is back\n")
}
