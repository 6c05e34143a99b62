// Package apitypes holds the admin HTTP API's JSON wire types: the bodies the
// engine's admin API writes and reads, and the constants that appear in them.
// The engine (its API handler and sync insights) and the kds-engine CLI's
// client share these types, so both sides agree on one definition.
//
// Changing a field here changes the public API: docs/api.md documents every
// body, and clients depend on it. Resources themselves are not here: the
// engine's resource model carries behaviour of its own, and the CLI keeps a
// plain JSON copy of it.
//
// The package depends only on the standard library.
package apitypes

import (
	"encoding/json"
	"time"
)

// Role names, as TypesResponse.Role reports them.
const (
	RoleGlobal = "global"
	RoleZone   = "zone"
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

// Apply actions, as ApplyResult.Action reports them.
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
	// Warnings are problems plugins reported that did not refuse the
	// write, one per field, ordered by resource.
	Warnings []FieldProblem `json:"warnings,omitempty"`
}

// ValidateResponse is the body of a successful POST /api/v1/validate.
type ValidateResponse struct {
	Valid bool `json:"valid"`
	Count int  `json:"count"`
	// Warnings as in ApplyResponse.
	Warnings []FieldProblem `json:"warnings,omitempty"`
}

// ZonesResponse is the body of GET /api/v1/zones.
type ZonesResponse struct {
	Zones []Conn `json:"zones"`
	// Replica is the id of the global replica that answered.
	Replica string `json:"replica,omitempty"`
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
	CodeBadRequest           = "bad_request"            // 400
	CodeMeshNotFound         = "mesh_not_found"         // 400: a mesh-scoped write into a mesh with no Mesh resource
	CodeUnauthenticated      = "unauthenticated"        // 401
	CodeHostNotAllowed       = "host_not_allowed"       // 403: Host header names no address the API serves
	CodeCrossOrigin          = "cross_origin"           // 403: a browser request from another origin
	CodeReadOnly             = "read_only"              // 403
	CodeNotFound             = "not_found"              // 404
	CodeUnknownType          = "unknown_type"           // 404
	CodeWrongRole            = "wrong_role"             // 404: route served by the other role
	CodeMethodNotAllowed     = "method_not_allowed"     // 405
	CodeAlreadyExists        = "already_exists"         // 409
	CodeConflict             = "conflict"               // 409
	CodeTooLarge             = "too_large"              // 413
	CodeUnsupportedMediaType = "unsupported_media_type" // 415: a write without Content-Type: application/json
	CodeInvalid              = "invalid"                // 422
	CodeInternal             = "internal"               // 500
	CodePluginDown           = "plugin_down"            // 503
	CodeNotReady             = "not_ready"              // 503
	CodeStoreUnavailable     = "store_unavailable"      // 503: the store's database cannot be reached
)

// PluginsInfo is the body of GET /api/v1/plugins.
type PluginsInfo struct {
	Plugins []PluginInfo `json:"plugins"`
	Buffer  BufferInfo   `json:"buffer"`
}

// Plugin states, as PluginInfo.State reports them.
const (
	PluginRunning    = "running"
	PluginRestarting = "restarting"
	PluginFailed     = "failed"
)

// PluginInfo describes one plugin binary.
type PluginInfo struct {
	Name      string   `json:"name"`
	Version   string   `json:"version,omitempty"`
	Path      string   `json:"path,omitempty"`
	State     string   `json:"state"`
	Required  bool     `json:"required,omitempty"`
	Types     []string `json:"types"`
	Restarts  uint64   `json:"restarts"`
	LastError string   `json:"lastError,omitempty"`
}

// BufferInfo is the per-logical-stream send-buffer capacity and how it was
// computed: Capacity = RegisteredTypes × Window + Headroom, where Window is
// how many responses per type a server keeps in flight before their ACKs.
// Formula is that sum written out for people, for example
// "3 types × 3 in flight + 16 headroom = 25".
type BufferInfo struct {
	Capacity        int    `json:"capacity"`
	RegisteredTypes int    `json:"registeredTypes"`
	Window          int    `json:"window"`
	Headroom        int    `json:"headroom"`
	Formula         string `json:"formula"`
}

// TypeState is the sync state of one resource type on one connection.
type TypeState struct {
	Type               string    `json:"type"`
	LastVersionSent    string    `json:"lastVersionSent,omitempty"`
	LastVersionApplied string    `json:"lastVersionApplied,omitempty"`
	LastACK            time.Time `json:"lastAck,omitzero"`
	LastNACK           time.Time `json:"lastNack,omitzero"`
	LastNACKError      string    `json:"lastNackError,omitempty"`
	ResourcesHeld      int       `json:"resourcesHeld"`
	// ResourcesSent and ResourcesReceived count resources carried in
	// responses (a resumed peer with unchanged state adds nothing).
	ResourcesSent     uint64 `json:"resourcesSent"`
	ResourcesReceived uint64 `json:"resourcesReceived"`
	ResponsesSent     uint64 `json:"responsesSent"`
	// LargestResponseBytes is the encoded size of the largest response
	// this side sent for the type (never above the max message size).
	LargestResponseBytes int    `json:"largestResponseBytes,omitempty"`
	ResponsesACKed       uint64 `json:"responsesAcked"`
	ResponsesNACKed      uint64 `json:"responsesNacked"`
	// Unknown is set when the peer asked for (or sent) a type this side
	// has no plugin for; Error then says so.
	Unknown bool   `json:"unknown,omitempty"`
	Error   string `json:"error,omitempty"`
	// RejectedCount is how many resources of the type the receiving side
	// refused and does not hold at the version sent (on the sending side:
	// what the peer refused; on the receiving side: what this side
	// refused). Each holds back only itself, and is not sent again until
	// it changes.
	RejectedCount int `json:"rejectedCount,omitempty"`
	// Rejected lists up to MaxRejectedShown of them with the reasons.
	Rejected []RejectedResource `json:"rejected,omitempty"`
	// WaitingSince is set (on the receiving side) while this side's
	// subscription to the type is not sent yet because the subscriptions
	// sent before it and not yet answered leave too little of the peer's
	// inbound budget for it: since when it waits. WaitingBytes is what it
	// will take of that budget once sent. Both are cleared when it is sent
	// (as soon as answers make room) and when the session ends.
	//
	// WaitingFor says what the subscription waits for: "peerBudget" (room in
	// the peer's inbound budget, above) or "initialSyncSlot" (global: the
	// zone→global initial syncs running at once are at their limit; the
	// zone's subscriptions go when one ends; WaitingBytes is then 0).
	WaitingSince time.Time `json:"waitingSince,omitzero"`
	WaitingBytes int64     `json:"waitingBytes,omitempty"`
	WaitingFor   string    `json:"waitingFor,omitempty"`
}

// What a waiting subscription waits for (TypeState.WaitingFor).
const (
	// WaitingForPeerBudget: room in the peer's inbound budget.
	WaitingForPeerBudget = "peerBudget"
	// WaitingForSlot: a slot among the initial syncs global runs at once.
	WaitingForSlot = "initialSyncSlot"
)

// MaxRejectedShown bounds TypeState.Rejected.
const MaxRejectedShown = 100

// RejectedResource is one resource (or removal) the receiving side refused.
type RejectedResource struct {
	// Name is the wire name: "mesh/name" or "name".
	Name string `json:"name"`
	// Version is the version refused; empty for a removal.
	Version string `json:"version,omitempty"`
	// Removal is set when the refused entry removed the resource.
	Removal bool `json:"removal,omitempty"`
	// Errors say why, one per field ("field: message").
	Errors []string `json:"errors,omitempty"`
}

// Conn is the state of one zone<->global connection: the body of
// GET /api/v1/zones/{name} and GET /api/v1/sync, and each entry of
// ZonesResponse.
type Conn struct {
	// Name is the zone name (on global) or "global" (on a zone).
	Name           string               `json:"name"`
	Online         bool                 `json:"online"`
	ConnectedSince time.Time            `json:"connectedSince,omitzero"`
	DisconnectedAt time.Time            `json:"disconnectedAt,omitzero"`
	Sessions       uint64               `json:"sessions"`
	LastError      string               `json:"lastError,omitempty"`
	Types          map[string]TypeState `json:"types"`
	// Peer is the network address the latest session came from (on
	// global; empty on a zone and before the first session).
	Peer string `json:"peer,omitempty"`
	// Address is set on a zone only: the global address (HOST:PORT, as
	// dialed) the live session is on; while offline, the address last
	// tried. It tells which global replica the zone is attached to.
	Address string `json:"address,omitempty"`
	// TokenID is the id of the zone token the latest session
	// authenticated with (on global, when zones authenticate by token).
	TokenID string `json:"tokenId,omitempty"`
	// Replica is set on global only: the id of the global replica that
	// holds the zone's live session (Online) or held its latest one.
	// With --store postgres it comes from the session leases every
	// replica shares, so every replica answers the same.
	Replica string `json:"replica,omitempty"`
	// Streams describes the send buffer of each logical stream of the
	// latest session, sampled every second while it is live.
	Streams []StreamState `json:"streams,omitempty"`
	// InitialSyncSlotSince is set on global only, while the zone's
	// session holds one of global's initial-sync slots (its zone→global
	// initial state is arriving; decision 0041): since when. The replica
	// holding the session shows it. A zone holding a slot long without its
	// data arriving is a very large zone, a slow link or a misbehaving
	// zone; the slot goes back at the hold and idle limits.
	InitialSyncSlotSince time.Time `json:"initialSyncSlotSince,omitzero"`
}

// StreamState is the send buffer of one logical stream of a session.
type StreamState struct {
	// Name is "global-to-zone" or "zone-to-global".
	Name string `json:"name"`
	// Role is "server" when this side serves the stream's types,
	// "client" when it subscribes to them.
	Role string `json:"role"`
	// SendBufferLen is the messages waiting in the send buffer at the
	// sample, SendBufferHighWater the most it held during the session.
	SendBufferLen       int `json:"sendBufferLen"`
	SendBufferHighWater int `json:"sendBufferHighWater"`
	// Capacity bounds the send buffer (registered types × window +
	// headroom, see PluginsInfo.Buffer).
	Capacity int `json:"capacity"`
}

// Holding is what one zone holds of a resource global serves: the body's
// entries of GET /api/v1/holders/{type}/{name}.
type Holding struct {
	Zone string `json:"zone"`
	// Online is false for a zone without a live session; what it held
	// then is not known here and Version is empty.
	Online bool `json:"online"`
	// Holds reports whether the zone applied the resource, at Version.
	Holds   bool   `json:"holds"`
	Version string `json:"version,omitempty"`
	// Pending is set while a response carrying the resource is in flight
	// (sent, not yet ACKed or NACKed) with PendingVersion.
	Pending        bool   `json:"pending,omitempty"`
	PendingVersion string `json:"pendingVersion,omitempty"`
	// RejectedVersion is a version the zone refused (NACKed); it is not
	// sent again until the resource changes. RejectedErrors say why.
	RejectedVersion string   `json:"rejectedVersion,omitempty"`
	RejectedErrors  []string `json:"rejectedErrors,omitempty"`
}

// HoldersResponse is the body of GET /api/v1/holders/{type}/{name}.
type HoldersResponse struct {
	Type    string `json:"type"`
	Mesh    string `json:"mesh,omitempty"`
	Name    string `json:"name"`
	Version string `json:"version"`
	// Zones has one entry per zone that ever connected, sorted by name.
	Zones []Holding `json:"zones"`
}
