package resource

import (
	"errors"
	"fmt"
	"strings"
)

// FieldError is one problem with one field of a resource.
type FieldError struct {
	Field   string `json:"field"` // for example "spec.inbound[1].port"
	Message string `json:"message"`
}

func (e FieldError) String() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// InvalidResource lists what is wrong with one resource.
type InvalidResource struct {
	Key    Key          `json:"key"`
	Errors []FieldError `json:"errors"`
}

// ValidationError reports every invalid resource of a write or of a received
// sync response. Callers detect it with errors.As.
type ValidationError struct {
	Invalid []InvalidResource
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	for i, inv := range e.Invalid {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s invalid: ", inv.Key)
		for j, fe := range inv.Errors {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString(fe.String())
		}
	}
	return b.String()
}

// Sentinel errors shared by every layer that reads or writes resources. The
// admin API maps them to HTTP status codes; callers branch with errors.Is.
var (
	// ErrNotFound: no resource with that key.
	ErrNotFound = errors.New("resource not found")
	// ErrAlreadyExists: a create for a key that exists.
	ErrAlreadyExists = errors.New("resource already exists")
	// ErrConflict: an update or delete carried a version that is not the
	// stored one (optimistic concurrency).
	ErrConflict = errors.New("resource version conflict")
	// ErrReadOnly: a write on the side that only receives the type
	// (GlobalToZone types on a zone, ZoneToGlobal types on global).
	ErrReadOnly = errors.New("resource type is read-only on this side")
	// ErrUnknownType: no loaded plugin supplies the type.
	ErrUnknownType = errors.New("unknown resource type")
)

// VersionConflict is the ErrConflict error of one resource: the version a
// caller expected and the one stored. Its message starts with the key, so
// that a caller reporting it adds only its own context.
type VersionConflict struct {
	Key              Key
	Expected, Stored string
}

func (e *VersionConflict) Error() string {
	return fmt.Sprintf("%s: expected version %q, stored version %q: %s", e.Key, e.Expected, e.Stored, ErrConflict)
}

// Unwrap makes errors.Is(err, ErrConflict) true.
func (e *VersionConflict) Unwrap() error { return ErrConflict }
