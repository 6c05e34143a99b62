package validate

import (
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/valyala/fastjson"
)

// fullCheckAccepts is what the envelope's full check says of a spec: it
// parses, strictly, in valid UTF-8, with no name twice.
func fullCheckAccepts(spec []byte) bool {
	var p fastjson.Parser
	v, err := parseSpec(&p, spec)
	return err == nil && utf8.Valid(spec) && duplicateName(v, "spec") == ""
}

var plainSeeds = []string{
	`{}`, ` { "a" : 1 } `, `{"a":1,"a":2}`, `{"a":1,"b":{"a":1}}`, `[{"x":1}]`, `{"a":[{"x":1},{"x":1,"x":2}]}`,
	`{"a":1,"\u0061":2}`, `{"a":"\u0000"}`, "{\"a\":\"\x01\"}", "{\"a\x1f\":1}", `{"a":01}`, `{"a":-0.5e+7}`,
	`{"a":1.}`, `{"a":.5}`, `{"a":-}`, `{"a":1e}`, `{"a":tru}`, `{"a":true,"b":false,"c":null}`, `{"a":NaN}`,
	`{"a":inf}`, `{"a":1}x`, `{"a":1,}`, `{"a" 1}`, `{"a":[1,2,]}`, `{"a":[1 2]}`, "{\"a\":\"\xff\"}",
	"{\"é\":\"ü\"}", "\v{}", ``, `   `, `"x"`, `[]`, `{"a":{"b":{"c":[[[]]]}}}`, `{"a":"x\"}`, `{"a":"`,
	`{"a":1}}`, `{"a":[}`, "{\"a\":1}\x00", `{"k0":0,"k1":1,"k0":2}`, `{"a":1e5,"b":-0,"c":0.0E-0}`,
}

// The plain scanner accepts a spec only if the full check does, and it
// accepts the plain specs syncs carry.
func FuzzPlainSpec(f *testing.F) {
	for _, s := range plainSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, spec []byte) {
		var sc plainScanner
		if sc.plain(spec) && !fullCheckAccepts(spec) {
			t.Fatalf("plain scanner accepts %q, the full check refuses it", spec)
		}
	})
}

func TestPlainSpec(t *testing.T) {
	var sc plainScanner
	for _, s := range plainSeeds {
		if sc.plain([]byte(s)) && !fullCheckAccepts([]byte(s)) {
			t.Errorf("plain scanner accepts %q, the full check refuses it", s)
		}
	}
	deep := strings.Repeat(`{"a":`, plainMaxDepth) + "1" + strings.Repeat("}", plainMaxDepth)
	many := "{"
	for i := range plainMaxNames {
		many += `"k` + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `":1,`
	}
	many = many[:len(many)-1] + "}"
	for _, s := range []string{
		`{}`, ` { "a" : 1 } `, `{"value":"v0","pad":"` + strings.Repeat("x", 1000) + `"}`,
		`{"a":true,"b":false,"c":null,"d":[1,-2.5,3e10,{"x":"y"}],"e":{"a":{"a":1}}}`,
		"{\"é\":\"ü\",\"tab\":\t1\n}", `{"a":-0.5e+7}`, deep, many,
	} {
		if !sc.plain([]byte(s)) {
			t.Errorf("plain scanner sends %q to the full check", s)
		}
		if !fullCheckAccepts([]byte(s)) {
			t.Errorf("full check refuses %q", s)
		}
	}
	for _, s := range []string{
		`{"a":1,"a":2}`, `{"a":[{"x":1,"x":2}]}`, `{"a":"\n"}`, "{\"a\":\"\xff\"}", `[]`, ``,
		strings.Repeat(`{"a":`, plainMaxDepth+1) + "1" + strings.Repeat("}", plainMaxDepth+1), many[:len(many)-1] + `,"zz":1}`,
	} {
		if sc.plain([]byte(s)) {
			t.Errorf("plain scanner accepts %q", s)
		}
	}
}

// hasControl agrees with a byte loop at every length and position.
func TestHasControl(t *testing.T) {
	for n := 0; n < 80; n++ {
		for at := -1; at < n; at++ {
			for _, c := range []byte{0x00, 0x1f, 0x20, 0x7f, 0x80, 0xff} {
				b := []byte(strings.Repeat("x", n))
				if at >= 0 {
					b[at] = c
				}
				want := at >= 0 && c < 0x20
				if got := hasControl(b); got != want {
					t.Fatalf("hasControl(%q) = %v", b, got)
				}
			}
		}
	}
}

// For a trusted type the envelope check gives the errors it gives without
// the plain scanner, for plain specs and for every kind of bad one.
func TestTrustedEnvelopeSameErrors(t *testing.T) {
	v, _ := newValidator(t)
	specs := append([]string{
		`{"port":`, `{"port":1} x`, `{"port":1,"items":[{"value":"\q"}]}`, "{\"port\":1,\"items\":[{\"value\":\"a\x01b\"}]}",
		strings.Repeat("[", 400) + strings.Repeat("]", 400), `{"a":{"b":1,"b":2}}`, `{"a":1,"\u0061":2}`,
		"{\"a\":\"\xff\"}", " \n", `{"port":80}`, `{"value":"v0","pad":"` + strings.Repeat("x", 1000) + `"}`,
	}, plainSeeds...)
	var (
		p1, p2 fastjson.Parser
		sc     plainScanner
	)
	for _, spec := range specs {
		res := r("alphaMeshy", "m", "x", spec)
		_, _, _, want := v.envelope(&p1, nil, res)
		_, _, _, got := v.envelope(&p2, &sc, res)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("spec %q: with the plain scanner %v, without %v", spec, got, want)
		}
	}
}

// BenchmarkTrustedEnvelope: the envelope check of a 1 KiB spec of a
// trusted type, with the plain scanner and with the full check.
func BenchmarkTrustedEnvelope(b *testing.B) {
	v, err := New(registry(b), &fakePlugins{})
	if err != nil {
		b.Fatal(err)
	}
	res := r("alphaMeshy", "default", "policy-1", `{"value":"v0","pad":"`+strings.Repeat("x", 1000)+`"}`)
	var (
		p  fastjson.Parser
		sc plainScanner
	)
	b.Run("plain", func(b *testing.B) {
		for b.Loop() {
			if _, _, _, fes := v.envelope(&p, &sc, res); len(fes) > 0 {
				b.Fatal(fes)
			}
		}
	})
	b.Run("full", func(b *testing.B) {
		for b.Loop() {
			if _, _, _, fes := v.envelope(&p, nil, res); len(fes) > 0 {
				b.Fatal(fes)
			}
		}
	})
}
