package sdk

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/sdk/schemacheck"
)

type commaPattern struct {
	Currency string `json:"currency" jsonschema:"pattern=^[A-Z]{1,3}$"`
}

type badNumber struct {
	Inner struct {
		Tiers int `json:"tiers" jsonschema:"minimum=one"`
	} `json:"inner"`
}

type unknownKey struct {
	Name string `json:"name" jsonschema:"maxLen=3"`
}

type badPattern struct {
	Name string `json:"name" jsonschema:"pattern=^[a-z($"`
}

type escapedComma struct {
	Currency string `json:"currency" jsonschema_extras:"pattern=^[A-Z]{1\\,3}$"`
	Note     string `json:"note,omitempty" jsonschema:"maxLength=3,description=short"`
}

// A struct tag the schema derivation would misread is refused when the
// plugin starts, naming the type, the field and the tag.
func TestMalformedTagsRefusedAtDefine(t *testing.T) {
	cases := map[string]struct {
		typ  Type
		want []string
	}{
		"comma in pattern": {Define(TypeSpec[commaPattern]{Name: "A", Direction: GlobalToZone, Scope: ScopeMesh}),
			[]string{"type A: field commaPattern.Currency", `jsonschema:"pattern=^[A-Z]{1,3}$"`, `"3}$" is not key=value`, "split at every comma", "jsonschema_extras"}},
		"number": {Define(TypeSpec[badNumber]{Name: "B", Direction: GlobalToZone, Scope: ScopeMesh}),
			[]string{"field .Tiers", "minimum=one: not a number"}},
		"unknown key": {Define(TypeSpec[unknownKey]{Name: "C", Direction: GlobalToZone, Scope: ScopeMesh}),
			[]string{"field unknownKey.Name", `unknown key "maxLen"`}},
		"pattern": {Define(TypeSpec[badPattern]{Name: "D", Direction: GlobalToZone, Scope: ScopeMesh}),
			[]string{"field badPattern.Name", "does not compile"}},
	}
	for name, tc := range cases {
		_, err := NewServer(Plugin{Name: "p", Types: []Type{tc.typ}})
		require.Error(t, err, name)
		for _, w := range tc.want {
			assert.Contains(t, err.Error(), w, name)
		}
	}
}

// A pattern with a comma goes in jsonschema_extras with the comma escaped,
// and is enforced whole.
func TestEscapedCommaPattern(t *testing.T) {
	typ := Define(TypeSpec[escapedComma]{Name: "E", Direction: GlobalToZone, Scope: ScopeMesh})
	d, err := typ.descriptor()
	require.NoError(t, err)
	s, err := schemacheck.Compile("E", d.GetJsonSchema())
	require.NoError(t, err)
	for spec, want := range map[string][]schemacheck.Error{
		`{"currency":"AB"}`:               nil,
		`{"currency":"ABCD"}`:             {{Field: "spec.currency", Message: `must match the pattern ^[A-Z]{1,3}$, got "ABCD"`}},
		`{"currency":"AB","note":"ééé"}`:  nil,
		`{"currency":"AB","note":"éééé"}`: {{Field: "spec.note", Message: "must be at most 3 characters long, got 4"}},
	} {
		got, err := s.CheckJSON([]byte(spec))
		require.NoError(t, err)
		assert.Equal(t, want, got, spec)
	}
	assert.Empty(t, typ.validate(context.Background(), Meta{}, []byte(`{"currency":"AB"}`)))
}
