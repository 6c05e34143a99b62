package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/kds-engine/kds-engine/engine/apitypes/kumadoc"
)

// corpusDir holds Kuma documents with Kuma's verdict on each. Every file
// starts with a "# kuma: accept" or "# kuma: reject FIELD..." line (the
// field paths Kuma reports), followed by one document in Kuma's universal
// form. tuning/ is the part the built-in plugins were checked against
// while they were written; heldout/ is the part that was not looked at
// until the figures were measured.
const corpusDir = moduleRoot + "/plugins/testdata/kuma-corpus"

// Agreement targets.
const (
	wantAccepted  = 0.95 // of the documents Kuma accepts
	wantRejected  = 0.95 // of the documents Kuma rejects
	wantSameField = 0.80 // of the documents both reject: a field in common
)

type corpusCase struct {
	file   string
	typ    string
	accept bool
	fields []string // Kuma's paths
	doc    []byte   // JSON
}

func loadCorpus(t *testing.T, part string) []corpusCase {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(corpusDir, part, "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "no corpus in %s", part)
	var cs []corpusCase
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		first, _, _ := strings.Cut(string(b), "\n")
		verdict, ok := strings.CutPrefix(first, "# kuma: ")
		require.True(t, ok, "%s: first line must be the verdict", f)
		words := strings.Fields(verdict)
		c := corpusCase{file: filepath.Base(f), accept: words[0] == "accept", fields: words[1:]}
		require.True(t, c.accept || words[0] == "reject" && len(c.fields) > 0, "%s: bad verdict %q", f, verdict)
		c.doc, err = yaml.YAMLToJSON(b)
		require.NoError(t, err, f)
		var head struct {
			Type string `json:"type"`
		}
		require.NoError(t, json.Unmarshal(c.doc, &head), f)
		c.typ = head.Type
		cs = append(cs, c)
	}
	return cs
}

// verdict validates one document through a node's admin API (the
// validate endpoint: envelope, schema and plugin checks, no write) and
// returns whether it was accepted and the fields named otherwise, in
// Kuma's form (without "spec." for the types Kuma writes at the top level).
func verdict(t *testing.T, api string, c corpusCase) (bool, []string, string) {
	t.Helper()
	body := append(append([]byte(`{"resources":[`), c.doc...), []byte(`]}`)...)
	resp, err := http.Post(api+"/api/v1/validate", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if resp.StatusCode == http.StatusOK {
		return true, nil, ""
	}
	var e struct {
		Message string `json:"message"`
		Fields  []struct {
			Field   string `json:"field"`
			Message string `json:"message"`
		} `json:"fields"`
	}
	_ = json.Unmarshal(b, &e)
	var fields []string
	for _, f := range e.Fields {
		p := f.Field
		if kumadoc.IsTopLevelType(c.typ) {
			p = strings.TrimPrefix(strings.TrimPrefix(p, "spec"), ".")
		}
		fields = append(fields, p)
	}
	return false, fields, string(b)
}

// TestKumaCorpus measures how often the built-in plugins agree with Kuma
// v2.14 on Kuma's own documents, through a real global and zone: a
// document Kuma accepts must be accepted, one it rejects must be
// rejected, and the rejection should name a field Kuma names. Each part
// of the corpus must meet the targets.
func TestKumaCorpus(t *testing.T) {
	c := newCluster(t)
	zone := c.addZone(t, "zone-1")
	mesh := writeFile(t, c.dir, "mesh.yaml", "type: Mesh\nname: default\n")
	mustCLI(t, "apply", "-f", mesh, "--api", c.global.api())

	for _, part := range []string{"tuning", "heldout"} {
		t.Run(part, func(t *testing.T) {
			var acc, accOK, rej, rejOK, same, exact int
			var misses []string
			for _, cc := range loadCorpus(t, part) {
				api := c.global.api()
				if cc.typ == "Dataplane" || cc.typ == "DataplaneInsight" {
					api = zone.api()
				}
				ok, fields, raw := verdict(t, api, cc)
				switch {
				case cc.accept:
					acc++
					if ok {
						accOK++
					} else {
						misses = append(misses, fmt.Sprintf("%s: Kuma accepts, kds-engine rejects: %s", cc.file, raw))
					}
				default:
					rej++
					if !ok {
						rejOK++
					} else {
						misses = append(misses, fmt.Sprintf("%s: Kuma rejects at %v, kds-engine accepts", cc.file, cc.fields))
						continue
					}
					if slices.ContainsFunc(fields, func(f string) bool { return slices.Contains(cc.fields, f) }) {
						same++
					} else {
						misses = append(misses, fmt.Sprintf("%s: Kuma rejects at %v, kds-engine at %v: %s", cc.file, cc.fields, fields, raw))
					}
					if slices.Equal(sortedSet(fields), sortedSet(cc.fields)) {
						exact++
					}
				}
			}
			ratio := func(a, b int) float64 {
				if b == 0 {
					return 1
				}
				return float64(a) / float64(b)
			}
			t.Logf("%s: accepted %d/%d Kuma-accepted (%.1f%%), rejected %d/%d Kuma-rejected (%.1f%%), same field %d/%d (%.1f%%), same field set %d/%d (%.1f%%)",
				part, accOK, acc, 100*ratio(accOK, acc), rejOK, rej, 100*ratio(rejOK, rej),
				same, rejOK, 100*ratio(same, rejOK), exact, rejOK, 100*ratio(exact, rejOK))
			for _, m := range misses {
				t.Log(m)
			}
			assert.GreaterOrEqual(t, ratio(accOK, acc), wantAccepted, "accepted of Kuma-accepted")
			assert.GreaterOrEqual(t, ratio(rejOK, rej), wantRejected, "rejected of Kuma-rejected")
			assert.GreaterOrEqual(t, ratio(same, rejOK), wantSameField, "same field of both-rejected")
		})
	}
}

func sortedSet(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

// TestKumaRoundTrip: Kuma documents applied with the CLI come back
// unchanged from get -o yaml --format kuma (same YAML tree, apart from the
// creationTime and modificationTime Kuma prints too), in both the
// top-level form (Mesh, Dataplane) and the spec form (policies); the
// admin API takes the same documents; a document with a field name from
// before schema version 2 is refused with the new name.
func TestKumaRoundTrip(t *testing.T) {
	c := newCluster(t)
	zone := c.addZone(t, "zone-1")
	dir := t.TempDir()
	docs := map[string]struct {
		node *node
		doc  string
		get  []string
	}{
		"mesh": {c.global, `type: Mesh
name: default
mtls:
  enabledBackend: ca-1
  backends:
  - name: ca-1
    type: builtin
metrics:
  enabledBackend: prom
  backends:
  - name: prom
    type: prometheus
    conf: {port: 5670, path: /metrics}
`, []string{"Mesh", "default"}},
		"timeout": {c.global, `type: MeshTimeout
mesh: default
name: web-timeouts
labels: {team: web}
spec:
  targetRef: {kind: Dataplane, labels: {app: web}}
  rules:
  - default:
      idleTimeout: 20s
      http: {requestTimeout: 2s}
`, []string{"MeshTimeout", "web-timeouts"}},
		"dataplane": {zone, `type: Dataplane
mesh: default
name: web-1
networking:
  address: 10.0.1.10
  inbound:
  - port: 8080
    tags: {kuma.io/service: web, version: v1}
  outbound:
  - port: 10001
    tags: {kuma.io/service: api}
`, []string{"Dataplane", "web-1"}},
	}
	for _, name := range []string{"mesh", "timeout", "dataplane"} {
		d := docs[name]
		t.Run(name, func(t *testing.T) {
			f := writeFile(t, dir, name+".yaml", d.doc)
			r := mustCLI(t, "apply", "-f", f, "--api", d.node.api())
			require.Contains(t, r.stdout, "created")
			out := mustCLI(t, append(append([]string{"get"}, d.get...), "-o", "yaml", "--format", "kuma", "--api", d.node.api())...)
			var want, got map[string]any
			require.NoError(t, yaml.Unmarshal([]byte(d.doc), &want))
			require.NoError(t, yaml.Unmarshal([]byte(out.stdout), &got), out.stdout)
			assert.NotEmpty(t, got["creationTime"])
			delete(got, "creationTime")
			delete(got, "modificationTime")
			assert.Equal(t, want, got, "round trip of %s:\n%s", name, out.stdout)
			// Applying the printed document again changes nothing.
			again := mustCLI(t, "apply", "-f", writeFile(t, dir, name+"-again.yaml", out.stdout), "--api", d.node.api())
			assert.Contains(t, again.stdout, "unchanged")
		})
	}

	t.Run("admin API takes the top-level form", func(t *testing.T) {
		body := `{"networking":{"address":"10.0.1.11","inbound":[{"port":3000,"tags":{"kuma.io/service":"frontend"}}]},"type":"Dataplane","mesh":"default","name":"frontend-1"}`
		req, err := http.NewRequest(http.MethodPut, zone.api()+"/api/v1/resources/Dataplane/frontend-1?mesh=default", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusCreated, resp.StatusCode, string(b))
		var res struct {
			Spec map[string]any `json:"spec"`
		}
		require.NoError(t, json.Unmarshal(b, &res))
		assert.Contains(t, res.Spec, "networking", "the top-level fields are the spec")
	})

	t.Run("old field name", func(t *testing.T) {
		f := writeFile(t, dir, "old.yaml", `type: MeshTimeout
mesh: default
name: old
spec:
  to:
  - targetRef: {kind: Mesh}
    default: {connectTimeout: 5s}
`)
		r := cli(t, "apply", "-f", f, "--api", c.global.api())
		assert.NotEqual(t, 0, r.code)
		assert.Contains(t, r.stderr, "spec.to[0].default.connectTimeout")
		assert.Contains(t, r.stderr, "use connectionTimeout")
	})
}
