package api

import (
	"encoding/json"

	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// TypeInfo is one entry of GET /api/v1/types.
type TypeInfo struct {
	Name          string          `json:"name"`
	Direction     string          `json:"direction"`
	Scope         string          `json:"scope"`
	Description   string          `json:"description,omitempty"`
	SchemaVersion uint32          `json:"schemaVersion"`
	Plugin        string          `json:"plugin,omitempty"`
	ReadOnly      bool            `json:"readOnly"`
	Schema        json.RawMessage `json:"schema,omitempty"`
}

// TypesResponse is the body of GET /api/v1/types.
type TypesResponse struct {
	Role  string     `json:"role"`
	Types []TypeInfo `json:"types"`
}

// ListResponse is the body of GET /api/v1/resources/{type}.
type ListResponse struct {
	Items []*resource.Resource `json:"items"`
}

// BatchRequest is the body of POST /api/v1/validate and POST /api/v1/apply.
type BatchRequest struct {
	Resources []*resource.Resource `json:"resources"`
}

// Apply actions.
const (
	ActionCreated   = "created"
	ActionUpdated   = "updated"
	ActionUnchanged = "unchanged"
)

// ApplyResult is what apply did to one resource.
type ApplyResult struct {
	Type    string `json:"type"`
	Mesh    string `json:"mesh,omitempty"`
	Name    string `json:"name"`
	Action  string `json:"action"`
	Version string `json:"version"`
}

// ApplyResponse is the body of a successful POST /api/v1/apply, one result
// per resource in request order.
type ApplyResponse struct {
	Results []ApplyResult `json:"results"`
}

// ValidateResponse is the body of a successful POST /api/v1/validate.
type ValidateResponse struct {
	Valid bool `json:"valid"`
	Count int  `json:"count"`
}

// ZonesResponse is the body of GET /api/v1/zones.
type ZonesResponse struct {
	Zones []insights.Conn `json:"zones"`
}

// StatusResponse is the body of /healthz and of /readyz when ready.
type StatusResponse struct {
	Status string `json:"status"`
}

// Error is the body of every error response.
type Error struct {
	// Code is stable; clients branch on it (see the Code… constants).
	Code    string `json:"code"`
	Message string `json:"message"`
	// Fields lists per-resource, per-field problems (code "invalid", and
	// batch checks such as "unknown_type" or "read_only").
	Fields []FieldProblem `json:"fields,omitempty"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// FieldProblem is one problem with one field of one resource. Resource is
// the resource key as text ("MeshTimeout default/web"); Type, Mesh, Zone and
// Name are the same key, structured.
type FieldProblem struct {
	Resource string `json:"resource"`
	Type     string `json:"type"`
	Mesh     string `json:"mesh,omitempty"`
	Zone     string `json:"zone,omitempty"`
	Name     string `json:"name"`
	Field    string `json:"field,omitempty"`
	Message  string `json:"message"`
}

// Error codes and the HTTP status each comes with.
const (
	CodeBadRequest       = "bad_request"        // 400
	CodeUnauthorized     = "unauthorized"       // 401
	CodeReadOnly         = "read_only"          // 403
	CodeNotFound         = "not_found"          // 404
	CodeUnknownType      = "unknown_type"       // 404
	CodeWrongRole        = "wrong_role"         // 404: route served by the other role
	CodeMethodNotAllowed = "method_not_allowed" // 405
	CodeAlreadyExists    = "already_exists"     // 409
	CodeConflict         = "conflict"           // 409
	CodeTooLarge         = "too_large"          // 413
	CodeInvalid          = "invalid"            // 422
	CodeInternal         = "internal"           // 500
	CodePluginDown       = "plugin_down"        // 503
	CodeNotReady         = "not_ready"          // 503
)
