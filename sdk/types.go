package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/invopop/jsonschema"

	pluginv1 "github.com/kds-engine/kds-engine/sdk/proto/plugin/v1"
)

// Direction says which side writes a type and which receives it.
type Direction int

const (
	// GlobalToZone types are written on global and synced to every zone.
	GlobalToZone Direction = iota + 1
	// ZoneToGlobal types are written on a zone and synced to global.
	ZoneToGlobal
)

// Scope says whether resources of a type belong to a mesh.
type Scope int

const (
	// ScopeGlobal resources have no mesh.
	ScopeGlobal Scope = iota + 1
	// ScopeMesh resources belong to exactly one mesh.
	ScopeMesh
)

// Meta is the envelope of the resource being validated. The engine has
// already checked the name and mesh syntax and the scope rules.
type Meta struct {
	Type   string
	Mesh   string // "" for global-scoped types
	Name   string
	Labels map[string]string
	Zone   string // origin zone, set only on global for zone-provided resources
}

// ValidateFunc checks one decoded spec and returns its problems: nil, or a
// list with only warnings ([ErrorList.Warn]), means valid. Paths should start at Field("spec"). It is called
// concurrently for different resources and must not retain spec.
type ValidateFunc[T any] func(ctx context.Context, meta Meta, spec *T) ErrorList

// TypeSpec declares one resource type whose spec decodes into T.
//
// Specs are decoded with the v2 JSON decoder (github.com/go-json-experiment/json):
// json struct tags, embedded structs and UnmarshalJSON methods work as with
// encoding/json, but field names match exactly, and a field given twice,
// invalid UTF-8 or data after the object is an error reported at its field.
type TypeSpec[T any] struct {
	// Name of the type, for example "MeshTimeout". Must start with an upper
	// case letter and contain only letters and digits.
	Name          string
	Direction     Direction
	Scope         Scope
	Description   string
	SchemaVersion uint32
	// Schema overrides the JSON Schema derived from T. Nil derives it with
	// github.com/invopop/jsonschema (json tags name the fields, fields
	// without omitempty are required, unknown fields are refused, and
	// `jsonschema:"..."` tags add constraints).
	Schema json.RawMessage
	// Validate is the semantic check. Nil means the schema and decoding are
	// the only checks.
	Validate ValidateFunc[T]
	// AllowUnknownFields decodes specs leniently. By default a spec field
	// that T does not have is an error.
	AllowUnknownFields bool
}

// Type is a declared resource type, made by [Define].
type Type interface {
	descriptor() (*pluginv1.TypeDescriptor, error)
	validate(ctx context.Context, meta Meta, spec []byte) ErrorList
}

// Define turns a TypeSpec into a Type for [Plugin.Types].
func Define[T any](spec TypeSpec[T]) Type { return &typed[T]{spec: spec} }

type typed[T any] struct {
	spec TypeSpec[T]
}

var typeNameRE = regexp.MustCompile(`^[A-Z][A-Za-z0-9]{0,62}$`)

func (t *typed[T]) descriptor() (*pluginv1.TypeDescriptor, error) {
	s := t.spec
	if !typeNameRE.MatchString(s.Name) {
		return nil, fmt.Errorf("type name %q: must match %s", s.Name, typeNameRE)
	}
	d := &pluginv1.TypeDescriptor{
		Name:          s.Name,
		Description:   s.Description,
		SchemaVersion: s.SchemaVersion,
	}
	switch s.Direction {
	case GlobalToZone:
		d.Direction = pluginv1.Direction_DIRECTION_GLOBAL_TO_ZONE
	case ZoneToGlobal:
		d.Direction = pluginv1.Direction_DIRECTION_ZONE_TO_GLOBAL
	default:
		return nil, fmt.Errorf("type %s: direction must be GlobalToZone or ZoneToGlobal", s.Name)
	}
	switch s.Scope {
	case ScopeGlobal:
		d.Scope = pluginv1.Scope_SCOPE_GLOBAL
	case ScopeMesh:
		d.Scope = pluginv1.Scope_SCOPE_MESH
	default:
		return nil, fmt.Errorf("type %s: scope must be ScopeGlobal or ScopeMesh", s.Name)
	}
	if s.Schema != nil {
		if !json.Valid(s.Schema) {
			return nil, fmt.Errorf("type %s: schema is not valid JSON", s.Name)
		}
		d.JsonSchema = s.Schema
	} else {
		if err := checkTags(reflect.TypeFor[T]()); err != nil {
			return nil, fmt.Errorf("type %s: %w", s.Name, err)
		}
		schema, err := SchemaFor[T]()
		if err != nil {
			return nil, fmt.Errorf("type %s: %w", s.Name, err)
		}
		d.JsonSchema = schema
	}
	return d, nil
}

func (t *typed[T]) validate(ctx context.Context, meta Meta, raw []byte) ErrorList {
	if len(raw) == 0 || (raw[0] != '{' && len(bytes.TrimSpace(raw)) == 0) {
		raw = []byte("{}")
	}
	opts := rejectUnknown
	if t.spec.AllowUnknownFields {
		opts = allowUnknown
	}
	spec, errs := decodeAll[T](raw, opts)
	if spec == nil || t.spec.Validate == nil {
		return errs
	}
	return MergeErrors(errs, t.spec.Validate(ctx, meta, spec))
}

// maxDecodeErrors bounds how many decoding errors one spec reports.
const maxDecodeErrors = 100

// decodeAll decodes raw into a new T and reports every value that does not
// decode, not only the first: after each error the offending value is
// replaced by null (an unknown member is removed) and decoding starts again.
// It returns the spec decoded as far as possible, or nil when raw cannot be
// repaired that way (it is not JSON, a name repeats, or an error does not
// go away).
func decodeAll[T any](raw []byte, opts jsonv2.Options) (*T, ErrorList) {
	var errs ErrorList
	tries := map[jsontext.Pointer]int{}
	for {
		spec := new(T)
		err := jsonv2.Unmarshal(raw, spec, opts)
		if err == nil {
			return spec, errs
		}
		var se *jsonv2.SemanticError
		if !errors.As(err, &se) || se.JSONPointer == "" {
			return nil, append(errs, decodeError(raw, err))
		}
		// A value that still fails as null (a custom unmarshaler may refuse
		// null) is removed instead; one that fails removed ends the loop.
		tries[se.JSONPointer]++
		n := tries[se.JSONPointer]
		if n == 1 {
			errs = append(errs, decodeError(raw, err))
		}
		if n > 2 || len(errs) >= maxDecodeErrors {
			return nil, errs
		}
		fixed, ok := clearAt(raw, se.JSONPointer, n == 2 || errors.Is(se.Err, jsonv2.ErrUnknownName))
		if !ok {
			return nil, errs
		}
		raw = fixed
	}
}

// clearAt returns raw with the value at ptr replaced by null, or with its
// member removed when remove is set.
func clearAt(raw []byte, ptr jsontext.Pointer, remove bool) ([]byte, bool) {
	var toks []string
	for tok := range ptr.Tokens() {
		toks = append(toks, tok)
	}
	if len(toks) == 0 {
		return nil, false
	}
	var walk func(v jsontext.Value, toks []string) (jsontext.Value, bool)
	walk = func(v jsontext.Value, toks []string) (jsontext.Value, bool) {
		switch v.Kind() {
		case '{':
			var members map[string]jsontext.Value
			if jsonv2.Unmarshal(v, &members) != nil {
				return nil, false
			}
			m, ok := members[toks[0]]
			if !ok {
				return nil, false
			}
			if len(toks) == 1 {
				if remove {
					delete(members, toks[0])
				} else {
					members[toks[0]] = jsontext.Value("null")
				}
			} else if members[toks[0]], ok = walk(m, toks[1:]); !ok {
				return nil, false
			}
			out, err := jsonv2.Marshal(members, jsonv2.Deterministic(true))
			return out, err == nil
		case '[':
			var items []jsontext.Value
			i, err := strconv.Atoi(toks[0])
			if err != nil || jsonv2.Unmarshal(v, &items) != nil || i < 0 || i >= len(items) {
				return nil, false
			}
			if len(toks) == 1 {
				items[i] = jsontext.Value("null")
			} else if items[i], err = walkOK(walk(items[i], toks[1:])); err != nil {
				return nil, false
			}
			out, err := jsonv2.Marshal(items)
			return out, err == nil
		}
		return nil, false
	}
	out, ok := walk(jsontext.Value(raw), toks)
	return out, ok
}

func walkOK(v jsontext.Value, ok bool) (jsontext.Value, error) {
	if !ok {
		return nil, errors.New("cannot clear")
	}
	return v, nil
}

// MergeErrors returns first followed by the errors of then that are not at
// or below a field first already reports, so one problem found by two
// checks (the schema and the decoder, or the decoder and a validate
// function) is reported once, by the earlier check.
func MergeErrors(first, then ErrorList) ErrorList {
	if len(first) == 0 {
		return then
	}
	out := append(ErrorList(nil), first...)
	for _, e := range then {
		covered := false
		for _, f := range first {
			if f.Field != "" && f.Field != "spec" && (e.Field == f.Field || strings.HasPrefix(e.Field, f.Field+".") || strings.HasPrefix(e.Field, f.Field+"[")) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, e)
		}
	}
	return out
}

// Decoding options: the v2 JSON decoder matches field names exactly, refuses
// duplicate names, invalid UTF-8 and trailing data, and (unless the type
// allows them) unknown fields.
var (
	rejectUnknown = jsonv2.RejectUnknownMembers(true)
	allowUnknown  = jsonv2.RejectUnknownMembers(false)
)

// decodeError turns a decoding error into a FieldError under "spec" that
// names the field and says what was expected.
func decodeError(raw []byte, err error) FieldError {
	var se *jsonv2.SemanticError
	if errors.As(err, &se) {
		p := pathOf(raw, se.JSONPointer)
		switch {
		case errors.Is(se.Err, jsonv2.ErrUnknownName):
			return FieldError{Field: p.String(), Message: "unknown field"}
		case se.Err == nil || errors.Is(se.Err, strconv.ErrSyntax):
			if se.GoType == nil {
				break
			}
			got := "JSON " + kindName(se.JSONKind)
			if se.JSONKind == '0' && len(se.JSONValue) > 0 {
				got += " " + string(se.JSONValue)
			}
			return FieldError{Field: p.String(), Message: fmt.Sprintf("must be %s, not %s", goKind(se.GoType), got)}
		case errors.Is(se.Err, strconv.ErrRange) && se.GoType != nil:
			return FieldError{Field: p.String(), Message: fmt.Sprintf("number %s is out of range for %s", se.JSONValue, se.GoType.Kind())}
		}
		if se.Err != nil {
			// An error from the type's own UnmarshalJSON or UnmarshalText.
			return FieldError{Field: p.String(), Message: se.Err.Error()}
		}
		return FieldError{Field: p.String(), Message: strings.TrimPrefix(err.Error(), "json: ")}
	}
	var sy *jsontext.SyntacticError
	if errors.As(err, &sy) {
		if errors.Is(sy.Err, jsontext.ErrDuplicateName) {
			return FieldError{Field: pathOf(raw, sy.JSONPointer).String(), Message: "appears more than once"}
		}
		return FieldError{Field: "spec", Message: fmt.Sprintf("not valid JSON: %v (at byte %d)", sy.Err, sy.ByteOffset)}
	}
	return FieldError{Field: "spec", Message: err.Error()}
}

// pathOf turns a JSON Pointer into a Path below "spec", using raw to tell
// list indexes from field names. Tokens it cannot resolve become fields.
func pathOf(raw []byte, ptr jsontext.Pointer) Path {
	p := Field("spec")
	v := jsontext.Value(raw)
	for tok := range ptr.Tokens() {
		switch v.Kind() {
		case '[':
			var items []jsontext.Value
			i, err := strconv.Atoi(tok)
			if err == nil && jsonv2.Unmarshal(v, &items, lenient...) == nil && i >= 0 && i < len(items) {
				p, v = p.Index(i), items[i]
				continue
			}
		case '{':
			var members map[string]jsontext.Value
			if jsonv2.Unmarshal(v, &members, lenient...) == nil {
				p, v = p.Child(tok), members[tok]
				continue
			}
		}
		p, v = p.Child(tok), nil
	}
	return p
}

// lenient reads a spec the strict decoder refused, to locate the problem.
var lenient = []jsonv2.Options{jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)}

// kindName names a JSON kind the way the JSON Schema does.
func kindName(k jsontext.Kind) string {
	switch k {
	case '"':
		return "string"
	case '0':
		return "number"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	case '{':
		return "object"
	case '[':
		return "array"
	}
	return "value"
}

func goKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return t.String()
}

// SchemaFor derives the JSON Schema (draft 2020-12) of T the way [Define]
// does, with every definition inlined so the schema stands alone.
func SchemaFor[T any]() (json.RawMessage, error) {
	r := &jsonschema.Reflector{DoNotReference: true, ExpandedStruct: true}
	s := r.Reflect(new(T))
	s.ID = ""
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("derive schema: %w", err)
	}
	return b, nil
}
