package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func applySeeds() map[string]string {
	return map[string]string{
		"yaml_two_docs":     "type: Mesh\nname: default\n---\ntype: MeshTimeout\nmesh: default\nname: t\nlabels: {team: web}\nspec:\n  targetRef: {kind: Mesh}\n",
		"json":              `{"type": "Dataplane", "mesh": "default", "name": "web-1", "spec": {"networking": {"address": "10.0.0.1"}}}`,
		"separator_comment": "--- # first\ntype: Mesh\nname: a\n---   \n\n---\n",
		"unknown_field":     "type: Mesh\nname: a\nmetadata: {}\n",
		"duplicate_key":     "type: Mesh\ntype: Mesh\nname: a\n",
		"anchors":           "type: &t Mesh\nname: *t\nspec: &s {a: 1}\nlabels: {x: y}\n",
		"tagged_binary":     "type: Mesh\nname: !!binary aGVsbG8=\n",
		"big_number_spec":   "type: Mesh\nname: a\nspec: {n: 1e400, m: 123456789012345678901234567890}\n",
		"list_document":     "- type: Mesh\n  name: a\n",
		"null_document":     "null\n---\n~\n",
		"crlf":              "type: Mesh\r\nname: a\r\n---\r\ntype: Mesh\r\nname: b\r\n",
		"labels_not_string": "type: Mesh\nname: a\nlabels: {n: 1}\n",
		"spec_scalar":       "type: Mesh\nname: a\nspec: 5\n",
		"block_scalar_dash": "type: Mesh\nname: a\nspec:\n  text: |\n---\n",
	}
}

// FuzzReadDocs feeds arbitrary apply input (as stdin) to the YAML/JSON
// decoder. It never panics; it either fails with an error naming where, or
// returns documents numbered 1..n, each with a type and a name and a spec
// that is JSON, that read back the same when written out as JSON.
func FuzzReadDocs(f *testing.F) {
	for _, s := range applySeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a := &App{Stdin: bytes.NewReader(data)}
		docs, err := a.readDocs("-")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "stdin") && !strings.HasPrefix(err.Error(), "read stdin") {
				t.Fatalf("error does not say where: %v", err)
			}
			return
		}
		var again bytes.Buffer
		for i, d := range docs {
			if d.n != i+1 || d.source != "stdin" {
				t.Fatalf("document %d numbered %s", i+1, d.where())
			}
			if d.res.Type == "" || d.res.Name == "" {
				t.Fatalf("%s: accepted without type or name", d.where())
			}
			if len(d.res.Spec) > 0 && !json.Valid(d.res.Spec) {
				t.Fatalf("%s: spec is not JSON: %q", d.where(), d.res.Spec)
			}
			b, err := json.Marshal(d.res)
			if err != nil {
				t.Fatalf("%s: %v", d.where(), err)
			}
			fmt.Fprintf(&again, "---\n%s\n", b)
		}
		back, err := (&App{Stdin: &again}).readDocs("-")
		if err != nil {
			t.Fatalf("documents written as JSON do not read back: %v\n%s", err, again.String())
		}
		if len(back) != len(docs) {
			t.Fatalf("%d documents read back, want %d", len(back), len(docs))
		}
		for i := range docs {
			x, y := docs[i].res, back[i].res
			if x.Type != y.Type || x.Mesh != y.Mesh || x.Name != y.Name || x.Version != y.Version || x.Zone != y.Zone ||
				fmt.Sprint(x.Labels) != fmt.Sprint(y.Labels) {
				t.Fatalf("document %d read back as %+v, want %+v", i+1, y, x)
			}
		}
	})
}
