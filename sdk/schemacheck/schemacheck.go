// Package schemacheck is the JSON Schema check of resource specs, the one
// implementation shared by the kds-engine (which runs it on every write and
// every received sync response) and by sdktest (so a plugin's unit tests
// see a schema violation exactly as `kds-engine apply` reports it).
//
// Schemas are draft 2020-12 (the default when a schema names no draft).
// Violations become field errors named from the resource root
// ("spec.items[1].value") with messages in one style: what the value must
// be, then what it is ("must be at most 65535, got 70000"). "format" is an
// annotation (draft 2020-12), not checked. Lengths (minLength, maxLength)
// count Unicode code points, not bytes.
package schemacheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Error is one problem at one field. Field is a path from the resource
// root, for example "spec.port" or `spec.tags["kuma.io/service"]`.
type Error struct {
	Field   string
	Message string
}

// Schema is a compiled JSON Schema. It is immutable and safe for concurrent
// use.
type Schema struct {
	s *jsonschema.Schema
}

// Compile parses and compiles doc, a JSON Schema document; name identifies
// it in errors (the type's name). Remote references are not loaded.
func Compile(name string, doc []byte) (*Schema, error) {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	url := "urn:kds-engine:type:" + name
	if err := c.AddResource(url, v); err != nil {
		return nil, fmt.Errorf("add: %w", err)
	}
	s, err := c.Compile(url)
	if err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	return &Schema{s: s}, nil
}

// Check validates instance, a decoded JSON value made of map[string]any,
// []any, string, json.Number (or float64), bool and nil, and returns every
// violation (nil when it is valid), ordered by field path so that the same
// spec always gets the same answer. Numbers given as json.Number are
// compared exactly.
func (s *Schema) Check(instance any) []Error {
	err := s.s.Validate(instance)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return []Error{{Field: "spec", Message: err.Error()}}
	}
	var out []Error
	collect(ve, &out)
	out = dedupe(out)
	slices.SortStableFunc(out, func(a, b Error) int { return strings.Compare(a.Field, b.Field) })
	return out
}

// CheckJSON decodes spec (empty or blank means {}) and checks it. It fails
// when spec is not a single JSON value.
func (s *Schema) CheckJSON(spec []byte) ([]Error, error) {
	inst, err := Decode(spec)
	if err != nil {
		return nil, err
	}
	return s.Check(inst), nil
}

// Decode decodes a spec the way Check expects it, numbers as json.Number;
// empty or blank means {}.
func Decode(spec []byte) (any, error) {
	if len(bytes.TrimSpace(spec)) == 0 {
		return map[string]any{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(spec))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("spec is not valid JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("spec is not valid JSON: data after the value")
	}
	return v, nil
}

// collect turns the leaves of a schema error tree into field errors.
func collect(e *jsonschema.ValidationError, out *[]Error) {
	if len(e.Causes) > 0 {
		for _, c := range e.Causes {
			collect(c, out)
		}
		return
	}
	base := specPath(e.InstanceLocation)
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		for _, m := range k.Missing {
			*out = append(*out, Error{Field: Child(base, m), Message: "is required"})
		}
	case *kind.AdditionalProperties:
		for _, p := range k.Properties {
			*out = append(*out, Error{Field: Child(base, p), Message: "unknown field"})
		}
	default:
		*out = append(*out, Error{Field: base, Message: Message(e.ErrorKind)})
	}
}

// Message describes one violation in the package's style: what the value
// must be, then what it is.
func Message(k jsonschema.ErrorKind) string {
	switch k := k.(type) {
	case *kind.Type:
		return fmt.Sprintf("must be %s, not JSON %s", typeList(k.Want), k.Got)
	case *kind.Minimum:
		return fmt.Sprintf("must be at least %s, got %s", rat(k.Want), rat(k.Got))
	case *kind.Maximum:
		return fmt.Sprintf("must be at most %s, got %s", rat(k.Want), rat(k.Got))
	case *kind.ExclusiveMinimum:
		return fmt.Sprintf("must be greater than %s, got %s", rat(k.Want), rat(k.Got))
	case *kind.ExclusiveMaximum:
		return fmt.Sprintf("must be less than %s, got %s", rat(k.Want), rat(k.Got))
	case *kind.MultipleOf:
		return fmt.Sprintf("must be a multiple of %s, got %s", rat(k.Want), rat(k.Got))
	case *kind.MinLength:
		return fmt.Sprintf("must be at least %d characters long, got %d", k.Want, k.Got)
	case *kind.MaxLength:
		return fmt.Sprintf("must be at most %d characters long, got %d", k.Want, k.Got)
	case *kind.Pattern:
		return fmt.Sprintf("must match the pattern %s, got %s", k.Want, strconv.Quote(k.Got))
	case *kind.Enum:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = value(w)
		}
		return fmt.Sprintf("must be one of %s, got %s", strings.Join(want, ", "), value(k.Got))
	case *kind.Const:
		return fmt.Sprintf("must be %s, got %s", value(k.Want), value(k.Got))
	case *kind.Format:
		msg := fmt.Sprintf("must be a valid %s, got %s", k.Want, value(k.Got))
		if k.Err != nil {
			msg += " (" + k.Err.Error() + ")"
		}
		return msg
	case *kind.MinItems:
		return fmt.Sprintf("must have at least %d items, got %d", k.Want, k.Got)
	case *kind.MaxItems:
		return fmt.Sprintf("must have at most %d items, got %d", k.Want, k.Got)
	case *kind.MinProperties:
		return fmt.Sprintf("must have at least %d fields, got %d", k.Want, k.Got)
	case *kind.MaxProperties:
		return fmt.Sprintf("must have at most %d fields, got %d", k.Want, k.Got)
	case *kind.UniqueItems:
		return fmt.Sprintf("must not repeat items, got equal items [%d] and [%d]", k.Duplicates[0], k.Duplicates[1])
	case *kind.FalseSchema:
		return "must not be given"
	}
	return ungroup(k.LocalizedString(printer))
}

var printer = message.NewPrinter(language.English)

var groupedNumber = regexp.MustCompile(`\b\d{1,3}(,\d{3})+\b`)

// ungroup removes the printer's thousands separators: 65,535 -> 65535.
func ungroup(s string) string {
	return groupedNumber.ReplaceAllStringFunc(s, func(n string) string { return strings.ReplaceAll(n, ",", "") })
}

// typeList names JSON Schema types the way the SDK's decoder does:
// "an integer", "a string or null".
func typeList(ts []string) string {
	names := make([]string, len(ts))
	for i, t := range ts {
		switch t {
		case "integer", "object", "array":
			names[i] = "an " + t
		case "null":
			names[i] = "null"
		default:
			names[i] = "a " + t
		}
	}
	if len(names) <= 1 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// rat prints a number exactly, without a fraction when it is an integer.
func rat(r *big.Rat) string {
	if r == nil {
		return "?"
	}
	if r.IsInt() {
		return r.Num().String()
	}
	s := r.FloatString(12)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// value prints a decoded JSON value as JSON.
func value(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// specPath renders a JSON pointer's tokens as spec.a.b[2].c.
func specPath(tokens []string) string {
	p := "spec"
	for _, t := range tokens {
		p = Child(p, t)
	}
	return p
}

// Child appends a JSON pointer token to a field path: a list index as
// [2], a plain name as .name, and any other name quoted: ["kuma.io/x"].
func Child(base, tok string) string {
	if _, err := strconv.Atoi(tok); err == nil {
		return base + "[" + tok + "]"
	}
	if tok == "" || strings.ContainsAny(tok, ".[]\" ") {
		return base + "[" + strconv.Quote(tok) + "]"
	}
	return base + "." + tok
}

func dedupe(es []Error) []Error {
	seen := map[Error]bool{}
	out := es[:0]
	for _, e := range es {
		if !seen[e] {
			seen[e] = true
			out = append(out, e)
		}
	}
	return out
}
