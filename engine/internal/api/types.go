package api

import (
	"github.com/kds-engine/kds-engine/engine/apitypes"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// The JSON bodies of the API live in package apitypes, shared with the CLI's
// client; these aliases keep the handler's names.
type (
	TypeInfo         = apitypes.TypeInfo
	TypesResponse    = apitypes.TypesResponse
	ApplyResult      = apitypes.ApplyResult
	ApplyResponse    = apitypes.ApplyResponse
	ValidateResponse = apitypes.ValidateResponse
	ZonesResponse    = apitypes.ZonesResponse
	StatusResponse   = apitypes.StatusResponse
	Error            = apitypes.Error
	FieldProblem     = apitypes.FieldProblem
	PluginsInfo      = apitypes.PluginsInfo
	PluginInfo       = apitypes.PluginInfo
	BufferInfo       = apitypes.BufferInfo
)

// ListResponse is the body of GET /api/v1/resources/{type}.
type ListResponse struct {
	Items []*resource.Resource `json:"items"`
	// Continue, set when ?limit= cut the list, is the token to pass as
	// ?continue= for the next page.
	Continue string `json:"continue,omitempty"`
}

// BatchRequest is the body of POST /api/v1/validate and POST /api/v1/apply.
type BatchRequest struct {
	Resources []*resource.Resource `json:"resources"`
}

// Apply actions (see apitypes).
const (
	ActionCreated   = apitypes.ActionCreated
	ActionUpdated   = apitypes.ActionUpdated
	ActionUnchanged = apitypes.ActionUnchanged
)

// Error codes and the HTTP status each comes with (see apitypes).
const (
	CodeBadRequest           = apitypes.CodeBadRequest           // 400
	CodeUnauthenticated      = apitypes.CodeUnauthenticated      // 401
	CodeHostNotAllowed       = apitypes.CodeHostNotAllowed       // 403: Host header names no address the API serves
	CodeCrossOrigin          = apitypes.CodeCrossOrigin          // 403: a browser request from another origin
	CodeReadOnly             = apitypes.CodeReadOnly             // 403
	CodeNotFound             = apitypes.CodeNotFound             // 404
	CodeUnknownType          = apitypes.CodeUnknownType          // 404
	CodeWrongRole            = apitypes.CodeWrongRole            // 404: route served by the other role
	CodeMethodNotAllowed     = apitypes.CodeMethodNotAllowed     // 405
	CodeAlreadyExists        = apitypes.CodeAlreadyExists        // 409
	CodeConflict             = apitypes.CodeConflict             // 409
	CodeTooLarge             = apitypes.CodeTooLarge             // 413
	CodeUnsupportedMediaType = apitypes.CodeUnsupportedMediaType // 415: a write without Content-Type: application/json
	CodeInvalid              = apitypes.CodeInvalid              // 422
	CodeInternal             = apitypes.CodeInternal             // 500
	CodePluginDown           = apitypes.CodePluginDown           // 503
	CodeNotReady             = apitypes.CodeNotReady             // 503
	CodeStoreUnavailable     = apitypes.CodeStoreUnavailable     // 503: the store's database cannot be reached
)
