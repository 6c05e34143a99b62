package sdk

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
)

// Keys a `jsonschema:"..."` struct tag may set (key=value), by the kind of
// value they take, and the words it may hold alone.
var (
	tagNumberKeys = map[string]bool{"minimum": true, "maximum": true, "exclusiveMinimum": true, "exclusiveMaximum": true, "multipleOf": true}
	tagCountKeys  = map[string]bool{"minLength": true, "maxLength": true, "minItems": true, "maxItems": true}
	tagBoolKeys   = map[string]bool{"readOnly": true, "writeOnly": true, "uniqueItems": true}
	tagTextKeys   = map[string]bool{
		"title": true, "description": true, "type": true, "anchor": true, "format": true, "default": true,
		"example": true, "enum": true, "pattern": true, "dependencies": true, "patternProperties": true,
		"oneof_required": true, "anyof_required": true, "oneof_ref": true, "anyof_ref": true,
		"oneof_type": true, "anyof_type": true,
	}
	tagWords = map[string]bool{"required": true, "nullable": true, "-": true, "inline": true}
)

// checkTags refuses `jsonschema` struct tags in t (and the types it
// contains) that the schema derivation would read differently from what
// they say: the tag is split at every comma, so a comma inside a value (a
// pattern such as ^[A-Z]{1,3}$) cuts it in two. It also refuses unknown
// keys, numbers that do not parse and patterns that do not compile.
func checkTags(t reflect.Type) error {
	return checkTagsIn(t, map[reflect.Type]bool{})
}

func checkTagsIn(t reflect.Type, seen map[reflect.Type]bool) error {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] {
		return nil
	}
	seen[t] = true
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		if tag, ok := f.Tag.Lookup("jsonschema"); ok {
			if err := checkTag(tag); err != nil {
				return fmt.Errorf("field %s.%s: tag `jsonschema:%q`: %w", t.Name(), f.Name, tag, err)
			}
		}
		if err := checkTagsIn(f.Type, seen); err != nil {
			return err
		}
	}
	return nil
}

func checkTag(tag string) error {
	parts := strings.Split(tag, ",")
	for i, part := range parts {
		key, val, hasValue := strings.Cut(part, "=")
		switch {
		case part == "" && i == 0 && len(parts) == 1:
		case !hasValue && tagWords[part]:
		case !hasValue:
			if i > 0 && strings.Contains(parts[i-1], "=") {
				return fmt.Errorf("%q is not key=value: the tag is split at every comma, so %q was cut there; "+
					"write the value without a comma (for a pattern, ^[A-Z][A-Z]?[A-Z]?$ instead of ^[A-Z]{1,3}$), "+
					"or put it in a jsonschema_extras tag with the comma escaped (`jsonschema_extras:\"pattern=^[A-Z]{1\\\\,3}$\"`)",
					part, parts[i-1]+","+part)
			}
			return fmt.Errorf("%q is not key=value nor one of required, nullable, inline, -", part)
		case tagNumberKeys[key]:
			if _, err := strconv.ParseFloat(val, 64); err != nil {
				return fmt.Errorf("%s=%s: not a number", key, val)
			}
		case tagCountKeys[key]:
			if _, err := strconv.ParseUint(val, 10, 32); err != nil {
				return fmt.Errorf("%s=%s: not a non-negative integer", key, val)
			}
		case tagBoolKeys[key]:
			if _, err := strconv.ParseBool(val); err != nil {
				return fmt.Errorf("%s=%s: not true or false", key, val)
			}
		case key == "pattern":
			if _, err := regexp.Compile(val); err != nil {
				return fmt.Errorf("pattern %s does not compile: %w", val, err)
			}
		case tagTextKeys[key]:
		default:
			return fmt.Errorf("unknown key %q", key)
		}
	}
	return nil
}
