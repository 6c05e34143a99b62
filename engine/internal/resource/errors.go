package resource

import (
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
