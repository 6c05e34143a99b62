package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	pluginv1 "github.com/kds-engine/kds-engine/sdk/proto/plugin/v1"
)

func TestPathBuilder(t *testing.T) {
	p := Field("spec").Child("inbound").Index(1).Child("port")
	assert.Equal(t, "spec.inbound[1].port", p.String())
	base := Field("spec").Child("tags")
	assert.Equal(t, `spec.tags["kuma.io/service"]`, base.Key("kuma.io/service").String())
	assert.Equal(t, "spec.tags", base.String(), "paths are immutable")
	assert.Equal(t, "", Path{}.String())
}

func TestErrorList(t *testing.T) {
	var l ErrorList
	assert.True(t, l.Empty())
	l.Required(Field("spec").Child("a"))
	l.Invalid(Field("spec").Child("b"), "x", "not allowed")
	l.Add(Path{}, "whole resource is off")
	l.Append(ErrorList{{Field: "spec.c", Message: "m"}})
	require.Len(t, l, 4)
	assert.Equal(t, `spec.a: is required; spec.b: invalid value "x": not allowed; whole resource is off; spec.c: m`, l.Error())
}

type sample struct {
	Port    int               `json:"port" jsonschema:"minimum=1,maximum=65535"`
	Name    string            `json:"name,omitempty"`
	Tags    map[string]string `json:"tags,omitempty"`
	Inner   *inner            `json:"inner,omitempty"`
	Entries []inner           `json:"entries,omitempty"`
}

type inner struct {
	Value string `json:"value"`
}

func TestSchemaForIsStandaloneAndStrict(t *testing.T) {
	raw, err := SchemaFor[sample]()
	require.NoError(t, err)
	var s map[string]any
	require.NoError(t, json.Unmarshal(raw, &s))
	assert.Equal(t, "object", s["type"])
	assert.Equal(t, false, s["additionalProperties"])
	assert.Equal(t, []any{"port"}, s["required"])
	assert.NotContains(t, string(raw), `"$ref"`, "definitions are inlined")
	port := s["properties"].(map[string]any)["port"].(map[string]any)
	assert.EqualValues(t, 65535, port["maximum"])
}

func TestNewServerChecksDeclarations(t *testing.T) {
	ok := TypeSpec[sample]{Name: "Sample", Direction: GlobalToZone, Scope: ScopeMesh}
	cases := map[string]struct {
		p    Plugin
		want string
	}{
		"no name":        {Plugin{Types: []Type{Define(ok)}}, "plugin name is empty"},
		"bad type name":  {Plugin{Name: "p", Types: []Type{Define(TypeSpec[sample]{Name: "my-type", Direction: GlobalToZone, Scope: ScopeMesh})}}, "type name"},
		"no direction":   {Plugin{Name: "p", Types: []Type{Define(TypeSpec[sample]{Name: "A", Scope: ScopeMesh})}}, "direction"},
		"no scope":       {Plugin{Name: "p", Types: []Type{Define(TypeSpec[sample]{Name: "A", Direction: ZoneToGlobal})}}, "scope"},
		"duplicate type": {Plugin{Name: "p", Types: []Type{Define(ok), Define(ok)}}, "declared twice"},
		"bad schema":     {Plugin{Name: "p", Types: []Type{Define(TypeSpec[sample]{Name: "A", Direction: GlobalToZone, Scope: ScopeMesh, Schema: json.RawMessage("{")})}}, "not valid JSON"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := NewServer(tc.p)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestServerValidateReportsIndexesAndPassesMeta(t *testing.T) {
	var seen []Meta
	srv, err := NewServer(Plugin{Name: "p", Types: []Type{Define(TypeSpec[sample]{
		Name: "Sample", Direction: GlobalToZone, Scope: ScopeMesh, AllowUnknownFields: true,
		Validate: func(_ context.Context, m Meta, s *sample) ErrorList {
			seen = append(seen, m)
			if s.Port == 0 {
				return ErrorList{{Field: "spec.port", Message: "is required"}}
			}
			return nil
		},
	})}})
	require.NoError(t, err)
	resp, err := srv.Validate(context.Background(), &pluginv1.ValidateRequest{Resources: []*pluginv1.Resource{
		{Type: "Sample", Mesh: "m1", Name: "a", Spec: []byte(`{"port": 80, "extra": 1}`)},
		{Type: "Sample", Mesh: "m1", Name: "b", Labels: map[string]string{"k": "v"}},
		{Type: "Sample", Mesh: "m1", Name: "c", Spec: []byte(`[1]`)},
	}})
	require.NoError(t, err)
	require.Len(t, resp.GetInvalid(), 2)
	assert.EqualValues(t, 1, resp.GetInvalid()[0].GetIndex())
	assert.Equal(t, "spec.port", resp.GetInvalid()[0].GetErrors()[0].GetField())
	assert.EqualValues(t, 2, resp.GetInvalid()[1].GetIndex())
	assert.Equal(t, "spec", resp.GetInvalid()[1].GetErrors()[0].GetField())
	require.Len(t, seen, 2)
	assert.Equal(t, Meta{Type: "Sample", Mesh: "m1", Name: "b", Labels: map[string]string{"k": "v"}}, seen[1])
}

func TestTuneRuntime(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "")
	TuneRuntime()
	assert.Equal(t, PluginGCPercent, debug.SetGCPercent(100))
	t.Setenv("GOGC", "50")
	TuneRuntime()
	assert.Equal(t, 100, debug.SetGCPercent(100), "an explicit GOGC wins")
}

// level is a spec field with its own JSON decoding.
type level int

func (l *level) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case `"low"`:
		*l = 1
	case `"high"`:
		*l = 2
	default:
		return errors.New(`must be "low" or "high"`)
	}
	return nil
}

type decodeSpec struct {
	Port    uint8             `json:"port,omitempty"`
	Name    string            `json:"name,omitempty"`
	Tags    map[string]int    `json:"tags,omitempty"`
	Entries []inner           `json:"entries,omitempty"`
	Level   level             `json:"level,omitempty"`
	Extra   map[string]string `json:"extra,omitempty"`
}

func TestDecodeErrorsNameTheField(t *testing.T) {
	typ := Define(TypeSpec[decodeSpec]{Name: "Decode", Direction: GlobalToZone, Scope: ScopeMesh})
	cases := []struct {
		spec, field, msg string
	}{
		{`{"port":"80"}`, "spec.port", "must be an integer, not JSON string"},
		{`{"port":1.5}`, "spec.port", "must be an integer, not JSON number 1.5"},
		{`{"port":300}`, "spec.port", "number 300 is out of range for uint8"},
		{`{"name":true}`, "spec.name", "must be a string, not JSON boolean"},
		{`{"entries":[{"value":"a"},{"value":"b","nope":1}]}`, "spec.entries[1].nope", "unknown field"},
		{`{"entries":[{"value":"a"},{"value":7}]}`, "spec.entries[1].value", "must be a string, not JSON number"},
		{`{"entries":{}}`, "spec.entries", "must be a list, not JSON object"},
		{`{"tags":{"a":1,"b":"x"}}`, "spec.tags.b", "must be an integer, not JSON string"},
		{`{"Name":"x"}`, "spec.Name", "unknown field"},
		{`{"name":"a","name":"b"}`, "spec.name", "appears more than once"},
		{`{"level":"medium"}`, "spec.level", `must be "low" or "high"`},
		{`{"name":"x"} {}`, "spec", "not valid JSON"},
		{`{"name":`, "spec", "not valid JSON"},
		{`[1]`, "spec", "must be an object, not JSON array"},
	}
	for _, tc := range cases {
		t.Run(tc.spec, func(t *testing.T) {
			errs := typ.validate(context.Background(), Meta{}, []byte(tc.spec))
			require.Len(t, errs, 1, "%v", errs)
			assert.Equal(t, tc.field, errs[0].Field)
			assert.Contains(t, errs[0].Message, tc.msg)
		})
	}
	for _, ok := range []string{``, ` `, `{}`, `{"level":"low","tags":{"a":1},"entries":[{"value":"x"}]}`} {
		assert.Empty(t, typ.validate(context.Background(), Meta{}, []byte(ok)), "%q", ok)
	}
	lenient := Define(TypeSpec[decodeSpec]{Name: "Lenient", Direction: GlobalToZone, Scope: ScopeMesh, AllowUnknownFields: true})
	assert.Empty(t, lenient.validate(context.Background(), Meta{}, []byte(`{"port":1,"colour":"red"}`)))
}

// FuzzDecodeSpec feeds arbitrary bytes to the SDK's decoding: it never
// panics, and every error it reports names "spec" or a field below it.
func FuzzDecodeSpec(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"port":80,"entries":[{"value":"a"}]}`, `{"entries":[{},{"value":1}]}`,
		`{"tags":{"a/b~c":"x"}}`, `{"extra":{"k":"v"},"extra":{}}`, `{"level":"high"}`,
		`[`, `{"port":1e3}`, "{\"name\":\"\xff\"}", `{"entries":[[]]}`, `{"a~1b":1}`,
	} {
		f.Add([]byte(s))
	}
	typ := Define(TypeSpec[decodeSpec]{Name: "Decode", Direction: GlobalToZone, Scope: ScopeMesh})
	f.Fuzz(func(t *testing.T, raw []byte) {
		errs := typ.validate(context.Background(), Meta{}, raw)
		if len(errs) == 0 {
			return
		}
		// Every problem is reported at once, each at "spec" or below it.
		for _, e := range errs {
			assert.True(t, e.Field == "spec" || strings.HasPrefix(e.Field, "spec.") || strings.HasPrefix(e.Field, "spec["), "field %q", e.Field)
			assert.NotEmpty(t, e.Message)
		}
	})
}

// Every value that does not decode is reported in one answer, and the
// validate function still runs on the rest; its errors at fields the
// decoder already reported are dropped.
func TestEveryDecodeProblemAtOnce(t *testing.T) {
	var seen *decodeSpec
	typ := Define(TypeSpec[decodeSpec]{Name: "Decode", Direction: GlobalToZone, Scope: ScopeMesh,
		Validate: func(_ context.Context, _ Meta, s *decodeSpec) ErrorList {
			cp := *s
			seen = &cp
			var errs ErrorList
			if s.Port == 0 {
				errs.Required(Field("spec").Child("port"))
			}
			if s.Name != "ok" {
				errs.Invalid(Field("spec").Child("name"), s.Name, "must be ok")
			}
			return errs
		}})
	errs := typ.validate(context.Background(), Meta{}, []byte(`{"port":"80","colour":1,"entries":[{"value":"a"},{"value":7}],"level":"x","name":"bad"}`))
	var fields []string
	for _, e := range errs {
		fields = append(fields, e.Field)
	}
	assert.ElementsMatch(t, []string{"spec.port", "spec.colour", "spec.entries[1].value", "spec.level", "spec.name"}, fields)
	assert.Equal(t, "must be an integer, not JSON string", errs[0].Message, "the decoder's message, not the validate function's")
	require.NotNil(t, seen, "validate ran on the spec decoded as far as possible")
	assert.Equal(t, "bad", seen.Name)
	assert.Len(t, seen.Entries, 2)
}

func TestMergeErrors(t *testing.T) {
	first := ErrorList{{Field: "spec.a", Message: "x"}, {Field: "spec.b[1]", Message: "y"}}
	then := ErrorList{{Field: "spec.a", Message: "other"}, {Field: "spec.a.c", Message: "below"}, {Field: "spec.b[1].d", Message: "below"},
		{Field: "spec.ab", Message: "kept"}, {Field: "spec", Message: "kept"}}
	assert.Equal(t, ErrorList{first[0], first[1], {Field: "spec.ab", Message: "kept"}, {Field: "spec", Message: "kept"}}, MergeErrors(first, then))
	assert.Equal(t, then, MergeErrors(nil, then))
}

// A panic in a validate function is an error naming the resource and the
// plugin; the plugin keeps answering.
func TestValidatePanicIsAnError(t *testing.T) {
	typ := Define(TypeSpec[decodeSpec]{Name: "Boom", Direction: GlobalToZone, Scope: ScopeMesh,
		Validate: func(_ context.Context, _ Meta, s *decodeSpec) ErrorList {
			if s.Name == "boom" {
				panic("index out of range")
			}
			return nil
		}})
	srv, err := NewServer(Plugin{Name: "bomb", Types: []Type{typ}})
	require.NoError(t, err)
	resp, err := srv.Validate(context.Background(), &pluginv1.ValidateRequest{Resources: []*pluginv1.Resource{
		{Type: "Boom", Mesh: "m1", Name: "a", Spec: []byte(`{"name":"boom"}`)},
		{Type: "Boom", Mesh: "m1", Name: "b", Spec: []byte(`{"name":"fine"}`)},
	}})
	require.NoError(t, err)
	require.Len(t, resp.GetInvalid(), 1)
	assert.EqualValues(t, 0, resp.GetInvalid()[0].GetIndex())
	assert.Equal(t, "plugin bomb panicked validating Boom m1/a: index out of range (a bug in the plugin; its log has the stack)", resp.GetInvalid()[0].GetErrors()[0].GetMessage())
}

// Warnings travel apart from errors: a resource with only warnings is
// valid.
func TestWarnings(t *testing.T) {
	typ := Define(TypeSpec[decodeSpec]{Name: "Warn", Direction: GlobalToZone, Scope: ScopeMesh,
		Validate: func(_ context.Context, _ Meta, s *decodeSpec) ErrorList {
			var errs ErrorList
			errs.Warn(Field("spec").Child("name"), "%q is deprecated", s.Name)
			if s.Port == 0 {
				errs.Required(Field("spec").Child("port"))
			}
			return errs
		}})
	srv, err := NewServer(Plugin{Name: "w", Types: []Type{typ}})
	require.NoError(t, err)
	resp, err := srv.Validate(context.Background(), &pluginv1.ValidateRequest{Resources: []*pluginv1.Resource{
		{Type: "Warn", Mesh: "m", Name: "ok", Spec: []byte(`{"port":1,"name":"old"}`)},
		{Type: "Warn", Mesh: "m", Name: "bad", Spec: []byte(`{"name":"old"}`)},
	}})
	require.NoError(t, err)
	require.Len(t, resp.GetInvalid(), 1)
	assert.EqualValues(t, 1, resp.GetInvalid()[0].GetIndex())
	assert.Equal(t, "spec.port", resp.GetInvalid()[0].GetErrors()[0].GetField())
	require.Len(t, resp.GetWarnings(), 2)
	assert.EqualValues(t, 0, resp.GetWarnings()[0].GetIndex())
	assert.Equal(t, `"old" is deprecated`, resp.GetWarnings()[0].GetErrors()[0].GetMessage())
	assert.Equal(t, `spec.name: warning: "old" is deprecated`, ErrorList{{Field: "spec.name", Message: `"old" is deprecated`, Warning: true}}.Error())
}
