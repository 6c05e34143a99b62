package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"github.com/invopop/jsonschema"

	pluginv1 "github.com/kds-engine/kds-engine/proto/plugin/v1"
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

// ValidateFunc checks one decoded spec and returns its problems (nil or empty
// means valid). Paths should start at Field("spec"). It is called
// concurrently for different resources and must not retain spec.
type ValidateFunc[T any] func(ctx context.Context, meta Meta, spec *T) ErrorList

// TypeSpec declares one resource type whose spec decodes into T.
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
		return d, nil
	}
	schema, err := SchemaFor[T]()
	if err != nil {
		return nil, fmt.Errorf("type %s: %w", s.Name, err)
	}
	d.JsonSchema = schema
	return d, nil
}

func (t *typed[T]) validate(ctx context.Context, meta Meta, raw []byte) ErrorList {
	spec := new(T)
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if !t.spec.AllowUnknownFields {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(spec); err != nil {
		return ErrorList{decodeError(err)}
	}
	if t.spec.Validate == nil {
		return nil
	}
	return t.spec.Validate(ctx, meta, spec)
}

// decodeError turns an encoding/json error into a FieldError under "spec".
func decodeError(err error) FieldError {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		p := Field("spec")
		if te.Field != "" {
			p = p.Child(te.Field)
		}
		return FieldError{Field: p.String(), Message: fmt.Sprintf("must be %s, not JSON %s", goKind(te.Type), te.Value)}
	}
	msg := err.Error()
	// encoding/json reports unknown fields as `json: unknown field "x"`.
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return FieldError{Field: Field("spec").Child(strings.Trim(name, `"`)).String(), Message: "unknown field"}
	}
	return FieldError{Field: "spec", Message: strings.TrimPrefix(msg, "json: ")}
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
