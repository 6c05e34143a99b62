package validate

import (
	"bytes"
	"testing"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/valyala/fastjson"
)

// FuzzDuplicateNames checks the envelope's duplicate-name walk against an
// independent JSON implementation: for any spec the parser accepts, the
// walk finds a duplicate exactly when the v2 decoder (which refuses
// duplicate names) refuses the spec.
func FuzzDuplicateNames(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"a":1,"a":2}`, `{"a":1,"b":{"a":1}}`, `[{"x":1},{"x":1,"x":2}]`,
		`{"a":1,"\u0061":2}`, `{"a":[[{"k":1,"k":1}]]}`, `{"f0":0,"f1":1,"f2":2,"f3":3,"f4":4,"f5":5,"f6":6,"f7":7,"f8":8,"f9":9,"f10":10,"f11":11,"f12":12,"f13":13,"f14":14,"f15":15,"f16":16,"f1":0}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, spec []byte) {
		var p fastjson.Parser
		v, err := parseSpec(&p, spec)
		if err != nil || !utf8.Valid(spec) || len(bytes.TrimSpace(spec)) == 0 {
			return
		}
		dup := duplicateName(v, "spec")
		refused := !jsontext.Value(spec).IsValid(jsontext.AllowInvalidUTF8(true))
		if (dup != "") != refused {
			t.Fatalf("spec %q: walk found %q, v2 decoder refuses: %v", spec, dup, refused)
		}
	})
}
