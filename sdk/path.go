package sdk

import (
	"fmt"
	"strconv"
	"strings"
)

// Path is the location of a field inside a resource, for example
// "spec.inbound[1].port". Paths are immutable values: every method returns a
// new Path and leaves the receiver unchanged, so a Path can be shared and
// extended freely. The zero Path is the resource itself.
type Path struct {
	s string
}

// Field starts a path at a top-level field, usually "spec".
func Field(name string) Path { return Path{}.Child(name) }

// Child returns the path of the named field below p.
func (p Path) Child(name string) Path {
	if p.s == "" {
		return Path{s: name}
	}
	return Path{s: p.s + "." + name}
}

// Index returns the path of element i of the list at p.
func (p Path) Index(i int) Path { return Path{s: p.s + "[" + strconv.Itoa(i) + "]"} }

// Key returns the path of the map entry k at p, for example tags["version"].
func (p Path) Key(k string) Path { return Path{s: p.s + "[" + strconv.Quote(k) + "]"} }

// String returns the dotted form, "" for the zero Path.
func (p Path) String() string { return p.s }

// FieldError is one problem with one field.
type FieldError struct {
	Field   string // path of the field, for example "spec.inbound[1].port"; "" means the whole resource
	Message string
	// Warning marks a problem that does not make the resource invalid: the
	// write goes ahead and apply prints it (see [ErrorList.Warn]).
	Warning bool
}

func (e FieldError) Error() string {
	msg := e.Message
	if e.Warning {
		msg = "warning: " + msg
	}
	if e.Field == "" {
		return msg
	}
	return e.Field + ": " + msg
}

// ErrorList collects the field errors of one resource. The zero value is an
// empty list ready to use. Not safe for concurrent use.
type ErrorList []FieldError

// Add appends an error for path p with a formatted message.
func (l *ErrorList) Add(p Path, format string, args ...any) {
	*l = append(*l, FieldError{Field: p.String(), Message: fmt.Sprintf(format, args...)})
}

// Required appends "is required" for p.
func (l *ErrorList) Required(p Path) { l.Add(p, "is required") }

// Invalid appends an error for p that quotes the offending value.
func (l *ErrorList) Invalid(p Path, value any, reason string) {
	l.Add(p, "invalid value %v: %s", quoteIfString(value), reason)
}

// Warn appends a warning for path p: a problem worth telling the user
// that does not refuse the resource. `kds-engine apply` prints it and the
// admin API returns it; the resource is written if it has no errors.
func (l *ErrorList) Warn(p Path, format string, args ...any) {
	*l = append(*l, FieldError{Field: p.String(), Message: fmt.Sprintf(format, args...), Warning: true})
}

// Errors returns the entries of l that are errors, not warnings.
func (l ErrorList) Errors() ErrorList {
	var out ErrorList
	for _, e := range l {
		if !e.Warning {
			out = append(out, e)
		}
	}
	return out
}

// Warnings returns the entries of l that are warnings.
func (l ErrorList) Warnings() ErrorList {
	var out ErrorList
	for _, e := range l {
		if e.Warning {
			out = append(out, e)
		}
	}
	return out
}

// Append adds every error of other to l.
func (l *ErrorList) Append(other ErrorList) { *l = append(*l, other...) }

// Empty reports whether the list has no entries, errors or warnings.
func (l ErrorList) Empty() bool { return len(l) == 0 }

// Error joins the errors with "; ". It makes ErrorList usable as an error in
// tests; the engine receives the individual FieldErrors.
func (l ErrorList) Error() string {
	parts := make([]string, len(l))
	for i, e := range l {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

func quoteIfString(v any) any {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return v
}
