package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// PluginDownError is implemented by errors that mean the plugin supplying a
// type is not running. The handler answers them with 503 plugin_down and the
// error's own message. PluginDown returns the plugin's name.
type PluginDownError interface {
	error
	PluginDown() string
}

// apiError is an error the handler has already classified.
type apiError struct {
	status int
	body   Error
}

func (e *apiError) Error() string { return e.body.Message }

func newError(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, body: Error{Code: code, Message: fmt.Sprintf(format, args...)}}
}

func badRequest(format string, args ...any) *apiError {
	return newError(http.StatusBadRequest, CodeBadRequest, format, args...)
}

// errorMapping maps errors whose chain contains target (errors.Is).
type errorMapping struct {
	target error
	status int
	code   string
}

// resourceError answers a backend error about the resource key in the
// resource's own words, whatever else the backend's text says: a missing
// resource as "KEY: resource not found", a version conflict as
// "KEY: expected version …, stored version …". The stores put their
// operation (and the key) first ("get KEY: resource not found", "update
// KEY: KEY: expected version …"), which a client that asked for KEY
// already knows and would show twice (the CLI's "get: get ..."). Other
// errors are returned as they are.
func resourceError(key resource.Key, err error) error {
	var vc *resource.VersionConflict
	switch {
	case errors.Is(err, resource.ErrNotFound):
		return newError(http.StatusNotFound, CodeNotFound, "%s: %s", key, resource.ErrNotFound)
	case errors.As(err, &vc):
		return newError(http.StatusConflict, CodeConflict, "%s", vc)
	}
	return err
}

// classify turns any error into a status and a body. typ is the resource
// type the request was about ("" if none), used to phrase read-only errors.
func (h *handler) classify(err error, typ string) (int, Error) {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.status, ae.body
	}
	var ve *resource.ValidationError
	if errors.As(err, &ve) {
		return http.StatusUnprocessableEntity, Error{Code: CodeInvalid, Message: err.Error(), Fields: validationFields(ve)}
	}
	var pd PluginDownError
	if errors.As(err, &pd) {
		return http.StatusServiceUnavailable, Error{Code: CodePluginDown, Message: err.Error()}
	}
	for _, m := range h.opts.mappings {
		if errors.Is(err, m.target) {
			return m.status, Error{Code: m.code, Message: err.Error()}
		}
	}
	switch {
	case errors.Is(err, resource.ErrNotFound):
		return http.StatusNotFound, Error{Code: CodeNotFound, Message: err.Error()}
	case errors.Is(err, resource.ErrAlreadyExists):
		return http.StatusConflict, Error{Code: CodeAlreadyExists, Message: err.Error()}
	case errors.Is(err, resource.ErrConflict):
		return http.StatusConflict, Error{Code: CodeConflict, Message: err.Error()}
	case errors.Is(err, resource.ErrReadOnly):
		msg := err.Error()
		if typ != "" {
			if td, ok := h.typeByName(typ); ok {
				msg = h.readOnlyMessage(td, "apply")
			}
		}
		return http.StatusForbidden, Error{Code: CodeReadOnly, Message: msg}
	case errors.Is(err, resource.ErrUnknownType):
		return http.StatusNotFound, Error{Code: CodeUnknownType, Message: err.Error()}
	}
	return http.StatusInternalServerError, Error{Code: CodeInternal, Message: err.Error()}
}

func validationFields(ve *resource.ValidationError) []FieldProblem {
	var out []FieldProblem
	for _, inv := range ve.Invalid {
		for _, fe := range inv.Errors {
			out = append(out, fieldProblem(inv.Key, fe.Field, fe.Message))
		}
		if len(inv.Errors) == 0 {
			out = append(out, fieldProblem(inv.Key, "", "invalid"))
		}
	}
	return out
}

func fieldProblem(k resource.Key, field, msg string) FieldProblem {
	return FieldProblem{
		Resource: k.String(), Type: k.Type, Mesh: k.Mesh, Zone: k.Zone, Name: k.Name,
		Field: field, Message: msg,
	}
}

// readOnlyMessage says where a type must be written; verb is what the
// client should do there ("apply" or "delete").
func (h *handler) readOnlyMessage(td resource.TypeDescriptor, verb string) string {
	if td.Direction == resource.ZoneToGlobal {
		return fmt.Sprintf("%s is written on a zone and synced to global; %s it on the zone it belongs to", td.Name, verb)
	}
	return fmt.Sprintf("%s is written on global and synced to zones; %s it on global", td.Name, verb)
}
