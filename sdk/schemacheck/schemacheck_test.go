package schemacheck_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/sdk/schemacheck"
)

const doc = `{
  "type": "object",
  "additionalProperties": false,
  "required": ["code"],
  "properties": {
    "code":  {"type": "string", "pattern": "^[A-Z]{1,3}$"},
    "name":  {"type": "string", "minLength": 2, "maxLength": 4},
    "port":  {"type": "integer", "minimum": 1, "maximum": 65535},
    "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "multipleOf": 0.25},
    "mode":  {"enum": ["a", "b"]},
    "when":  {"type": "string", "format": "date-time"},
    "tags":  {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2, "uniqueItems": true},
    "opt":   {"type": ["string", "null"]},
    "kv":    {"type": "object", "additionalProperties": {"type": "integer"}}
  }
}`

// Every kind of violation gets a message in the one style, at its field.
func TestMessages(t *testing.T) {
	s, err := schemacheck.Compile("T", []byte(doc))
	require.NoError(t, err)
	cases := map[string]schemacheck.Error{
		`{"code":"eur"}`:                    {"spec.code", `must match the pattern ^[A-Z]{1,3}$, got "eur"`},
		`{"code":"A","name":"x"}`:           {"spec.name", "must be at least 2 characters long, got 1"},
		`{"code":"A","name":"ééééé"}`:       {"spec.name", "must be at most 4 characters long, got 5"},
		`{"code":"A","port":70000}`:         {"spec.port", "must be at most 65535, got 70000"},
		`{"code":"A","port":0}`:             {"spec.port", "must be at least 1, got 0"},
		`{"code":"A","port":"80"}`:          {"spec.port", "must be an integer, not JSON string"},
		`{"code":"A","port":1.5}`:           {"spec.port", "must be an integer, not JSON number"},
		`{"code":"A","ratio":0}`:            {"spec.ratio", "must be greater than 0, got 0"},
		`{"code":"A","ratio":1}`:            {"spec.ratio", "must be less than 1, got 1"},
		`{"code":"A","ratio":0.3}`:          {"spec.ratio", "must be a multiple of 0.25, got 0.3"},
		`{"code":"A","mode":"c"}`:           {"spec.mode", `must be one of "a", "b", got "c"`},
		`{"code":"A","tags":[]}`:            {"spec.tags", "must have at least 1 items, got 0"},
		`{"code":"A","tags":["a","b","c"]}`: {"spec.tags", "must have at most 2 items, got 3"},
		`{"code":"A","tags":["a","a"]}`:     {"spec.tags", "must not repeat items, got equal items [0] and [1]"},
		`{"code":"A","opt":1}`:              {"spec.opt", "must be null or a string, not JSON number"},
		`{"code":"A","kv":{"a.b":"x"}}`:     {`spec.kv["a.b"]`, "must be an integer, not JSON string"},
		`{}`:                                {"spec.code", "is required"},
		`{"code":"A","colour":1}`:           {"spec.colour", "unknown field"},
	}
	for spec, want := range cases {
		got, err := s.CheckJSON([]byte(spec))
		require.NoError(t, err, spec)
		assert.Equal(t, []schemacheck.Error{want}, got, spec)
	}
	// "format" is an annotation in draft 2020-12, not checked: a plugin
	// checks such values when it decodes them (time.Time, for example).
	got, err := s.CheckJSON([]byte(`{"code":"A","when":"next week"}`))
	require.NoError(t, err)
	assert.Empty(t, got)
}

// Every violation of one spec is reported, not only the first.
func TestEveryProblem(t *testing.T) {
	s, err := schemacheck.Compile("T", []byte(doc))
	require.NoError(t, err)
	for range 20 { // the same answer, in the same order, every time
		got, err := s.CheckJSON([]byte(`{"code":"eur","port":0,"name":"x","extra":true}`))
		require.NoError(t, err)
		var fields []string
		for _, e := range got {
			fields = append(fields, e.Field)
		}
		require.Equal(t, []string{"spec.code", "spec.extra", "spec.name", "spec.port"}, fields)
	}
}

// Numbers are compared exactly, and an empty spec is {}.
func TestDecode(t *testing.T) {
	s, err := schemacheck.Compile("T", []byte(doc))
	require.NoError(t, err)
	got, err := s.CheckJSON([]byte(`{"code":"A","port":65535.0000000000000001}`))
	require.NoError(t, err)
	assert.Equal(t, []schemacheck.Error{{"spec.port", "must be an integer, not JSON number"}}, got)
	got, err = s.CheckJSON(nil)
	require.NoError(t, err)
	assert.Equal(t, []schemacheck.Error{{"spec.code", "is required"}}, got)
	_, err = s.CheckJSON([]byte(`{} {}`))
	assert.Error(t, err)
	_, err = schemacheck.Compile("Bad", []byte(`{"type": 12}`))
	assert.Error(t, err)
}
