package api

import (
	"bytes"
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kds-engine/kds-engine/engine/internal/httpauth"
	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/ui"
)

// DefaultMaxBodyBytes bounds request bodies unless WithMaxBodyBytes says
// otherwise: four resources of the default maximum size (1 MiB).
const DefaultMaxBodyBytes = 4 << 20

type options struct {
	token        string
	gatherer     prometheus.Gatherer
	mappings     []errorMapping
	maxBodyBytes int64
}

// Option configures NewHandler.
type Option func(*options)

// WithGatherer serves g on GET /metrics in the Prometheus text format.
// Without it /metrics answers 404.
func WithGatherer(g prometheus.Gatherer) Option {
	return func(o *options) { o.gatherer = g }
}

// WithErrorCode answers errors whose chain contains target (errors.Is) with
// status and code. Mappings are tried in order, after the built-in
// *resource.ValidationError and PluginDownError checks and before the
// resource sentinels.
func WithErrorCode(target error, status int, code string) Option {
	return func(o *options) { o.mappings = append(o.mappings, errorMapping{target, status, code}) }
}

// WithToken requires "Authorization: Bearer TOKEN" on every route except
// /healthz and /readyz (401 unauthenticated otherwise). An empty token means no
// authentication, which is only safe on a loopback address.
func WithToken(token string) Option {
	return func(o *options) { o.token = token }
}

// WithMaxBodyBytes bounds request bodies (413 too_large beyond it, with
// the limit in the message). A body whose Content-Length is over the limit
// is refused before any of it is read; any other is read through
// http.MaxBytesReader, so at most n+1 bytes are read.
func WithMaxBodyBytes(n int64) Option {
	return func(o *options) { o.maxBodyBytes = n }
}

type handler struct {
	b    Backend
	log  hclog.Logger
	opts options
	mux  *http.ServeMux
}

// NewHandler returns the admin API over b. logger must not be nil; the
// handler logs to a sub-logger named "api". The handler is safe for
// concurrent use and holds no state beyond its arguments.
func NewHandler(b Backend, logger hclog.Logger, opts ...Option) http.Handler {
	h := &handler{b: b, log: logger.Named("api"), opts: options{maxBodyBytes: DefaultMaxBodyBytes}}
	for _, o := range opts {
		o(&h.opts)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", h.healthz)
	mux.HandleFunc("GET /readyz", h.readyz)
	mux.HandleFunc("GET /metrics", h.metrics)
	mux.HandleFunc("GET /api/v1/types", h.types)
	mux.HandleFunc("GET /api/v1/resources/{type}", h.list)
	mux.HandleFunc("GET /api/v1/resources/{type}/{name}", h.get)
	mux.HandleFunc("PUT /api/v1/resources/{type}/{name}", h.put)
	mux.HandleFunc("DELETE /api/v1/resources/{type}/{name}", h.delete)
	mux.HandleFunc("POST /api/v1/validate", h.validate)
	mux.HandleFunc("POST /api/v1/apply", h.apply)
	mux.HandleFunc("GET /api/v1/zones", h.zones)
	mux.HandleFunc("GET /api/v1/zones/{name}", h.zone)
	mux.HandleFunc("GET /api/v1/sync", h.sync)
	mux.HandleFunc("GET /api/v1/plugins", h.plugins)
	mux.HandleFunc("GET /api/v1/holders/{type}/{name}", h.holders)
	mux.HandleFunc("GET /api/v1/revision", h.revision)
	mux.Handle("GET /ui/", ui.Handler())
	mux.HandleFunc("/", h.noRoute)
	h.mux = mux
	return h
}

// noRoute answers what no pattern matched: 405 when the path exists with
// other methods, else 404.
func (h *handler) noRoute(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := h.mux.Handler(probe); pattern != "/" && pattern != "" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		h.fail(w, r, newError(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "%s %s: allowed methods: %s",
			r.Method, r.URL.Path, strings.Join(allowed, ", ")), "")
		return
	}
	h.fail(w, r, newError(http.StatusNotFound, CodeNotFound, "no route %s %s", r.Method, r.URL.Path), "")
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	switch {
	case !h.authorized(r):
		sw.Header().Set("WWW-Authenticate", `Bearer realm="kds-engine"`)
		h.fail(sw, r, newError(http.StatusUnauthorized, CodeUnauthenticated, "this API requires a token: Authorization: Bearer TOKEN"), "")
	case !canonicalPath(r.URL.Path):
		// http.ServeMux would answer 307 to the cleaned path: a write to
		// ".../MeshTimeout/.." would be redirected to the list route.
		h.fail(sw, r, newError(http.StatusBadRequest, CodeBadRequest,
			"path %q is not canonical (it has an empty, \".\" or \"..\" segment): resource names never are \".\" or \"..\"; send the path without them", r.URL.Path), "")
	default:
		h.mux.ServeHTTP(sw, r)
	}
	h.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", sw.status, "duration", time.Since(start))
}

// canonicalPath reports whether p is what http.ServeMux cleans it to: no
// "." or ".." segments and no repeated slashes (a trailing slash is kept).
func canonicalPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/"
	}
	return clean == p
}

func (h *handler) authorized(r *http.Request) bool {
	if h.opts.token == "" || httpauth.Public(r) {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(h.opts.token)) == 1
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (h *handler) writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		h.log.Error("encode response", "error", err)
		http.Error(w, `{"code":"internal","message":"encode response"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error, typ string) {
	status, body := h.classify(err, typ)
	switch {
	case body.Code == CodeStoreUnavailable || body.Code == CodePluginDown:
		// An outage the engine logs once when it starts and once when it
		// ends; every request it refuses meanwhile would repeat it.
		h.log.Debug("request refused during an outage", "method", r.Method, "path", r.URL.Path, "status", status, "code", body.Code, "error", err)
	case status >= 500:
		h.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "error", err)
	}
	h.writeJSON(w, status, body)
}

func (h *handler) healthz(w http.ResponseWriter, _ *http.Request) {
	h.writeJSON(w, http.StatusOK, StatusResponse{Status: "ok"})
}

func (h *handler) readyz(w http.ResponseWriter, _ *http.Request) {
	if err := h.b.Ready(); err != nil {
		h.writeJSON(w, http.StatusServiceUnavailable, Error{Code: CodeNotReady, Message: err.Error()})
		return
	}
	h.writeJSON(w, http.StatusOK, StatusResponse{Status: "ready"})
}

func (h *handler) metrics(w http.ResponseWriter, r *http.Request) {
	if h.opts.gatherer == nil {
		h.fail(w, r, newError(http.StatusNotFound, CodeNotFound, "metrics are not enabled"), "")
		return
	}
	promhttp.HandlerFor(h.opts.gatherer, promhttp.HandlerOpts{}).ServeHTTP(w, r)
}

func (h *handler) typeByName(name string) (resource.TypeDescriptor, bool) {
	for _, td := range h.b.Types() {
		if td.Name == name {
			return td, true
		}
	}
	return resource.TypeDescriptor{}, false
}

// readOnly reports whether td is written on the other role.
func (h *handler) readOnly(td resource.TypeDescriptor) bool {
	switch h.b.Role() {
	case RoleZone:
		return td.Direction == resource.GlobalToZone
	case RoleGlobal:
		return td.Direction == resource.ZoneToGlobal
	}
	return false
}

func (h *handler) knownType(name string) (resource.TypeDescriptor, error) {
	td, ok := h.typeByName(name)
	if !ok {
		names := make([]string, 0)
		for _, t := range h.b.Types() {
			names = append(names, t.Name)
		}
		slices.Sort(names)
		known := "none"
		if len(names) > 0 {
			known = strings.Join(names, ", ")
		}
		return td, newError(http.StatusNotFound, CodeUnknownType, "unknown resource type %q (known types: %s)", name, known)
	}
	return td, nil
}

func (h *handler) types(w http.ResponseWriter, _ *http.Request) {
	tds := h.b.Types()
	out := TypesResponse{Role: h.b.Role(), Types: make([]TypeInfo, 0, len(tds))}
	for _, td := range tds {
		out.Types = append(out.Types, TypeInfo{
			Name:          td.Name,
			Direction:     td.Direction.String(),
			Scope:         td.Scope.String(),
			Description:   td.Description,
			SchemaVersion: td.SchemaVersion,
			Plugin:        td.Plugin,
			ReadOnly:      h.readOnly(td),
			Schema:        td.Schema,
		})
	}
	slices.SortFunc(out.Types, func(a, b TypeInfo) int { return cmp.Compare(a.Name, b.Name) })
	h.writeJSON(w, http.StatusOK, out)
}

// scopeQuery reads mesh and zone from the query and checks them against the
// type: mesh is required (single resource) or allowed (list) for
// mesh-scoped types and refused for global-scoped ones; zone exists only on
// global, for ZoneToGlobal types, and is required to name one resource there.
func (h *handler) scopeQuery(r *http.Request, td resource.TypeDescriptor, single bool) (mesh, zone string, err error) {
	q := r.URL.Query()
	mesh, zone = q.Get("mesh"), q.Get("zone")
	switch {
	case td.Scope == resource.ScopeGlobal && mesh != "":
		return "", "", badRequest("%s is not mesh-scoped; drop the mesh", td.Name)
	case td.Scope == resource.ScopeMesh && mesh == "" && single:
		return "", "", badRequest("%s is mesh-scoped; give the mesh (?mesh=)", td.Name)
	}
	zoneProvided := h.b.Role() == RoleGlobal && td.Direction == resource.ZoneToGlobal
	switch {
	case !zoneProvided && zone != "":
		return "", "", badRequest("%s resources here have no zone; drop the zone", td.Name)
	case zoneProvided && zone == "" && single:
		return "", "", badRequest("%s resources on global belong to a zone; give the zone (?zone=)", td.Name)
	}
	return mesh, zone, nil
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	typ := r.PathValue("type")
	td, err := h.knownType(typ)
	if err != nil {
		h.fail(w, r, err, typ)
		return
	}
	mesh, zone, err := h.scopeQuery(r, td, false)
	if err != nil {
		h.fail(w, r, err, typ)
		return
	}
	page, err := readListPage(r.URL.Query())
	if err != nil {
		h.fail(w, r, err, typ)
		return
	}
	f := Filter{Type: typ, Mesh: mesh, Zone: zone}
	for _, l := range r.URL.Query()["label"] {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			h.fail(w, r, badRequest("label %q: want key=value", l), typ)
			return
		}
		if f.Labels == nil {
			f.Labels = map[string]string{}
		}
		f.Labels[k] = v
	}
	if kl, ok := h.b.(KeyLister); ok && page.limit > 0 && len(f.Labels) == 0 {
		items, next, err := h.listPageByKeys(r.Context(), kl, f, page)
		if err != nil {
			h.fail(w, r, err, typ)
			return
		}
		h.writeJSON(w, http.StatusOK, ListResponse{Items: items, Continue: next})
		return
	}
	items, err := h.b.List(r.Context(), f)
	if err != nil {
		h.fail(w, r, err, typ)
		return
	}
	if items == nil {
		items = []*resource.Resource{}
	}
	slices.SortFunc(items, func(a, b *resource.Resource) int {
		return cmp.Or(cmp.Compare(a.Zone, b.Zone), cmp.Compare(a.Mesh, b.Mesh), cmp.Compare(a.Name, b.Name))
	})
	items, next := page.apply(items)
	h.writeJSON(w, http.StatusOK, ListResponse{Items: items, Continue: next})
}

func (h *handler) singleKey(r *http.Request) (resource.Key, resource.TypeDescriptor, error) {
	typ := r.PathValue("type")
	td, err := h.knownType(typ)
	if err != nil {
		return resource.Key{}, td, err
	}
	mesh, zone, err := h.scopeQuery(r, td, true)
	if err != nil {
		return resource.Key{}, td, err
	}
	return resource.Key{Type: typ, Mesh: mesh, Zone: zone, Name: r.PathValue("name")}, td, nil
}

func (h *handler) get(w http.ResponseWriter, r *http.Request) {
	key, _, err := h.singleKey(r)
	if err != nil {
		h.fail(w, r, err, key.Type)
		return
	}
	res, err := h.b.Get(r.Context(), key)
	if err != nil {
		h.fail(w, r, resourceError(key, err), key.Type)
		return
	}
	h.writeJSON(w, http.StatusOK, res)
}

func (h *handler) put(w http.ResponseWriter, r *http.Request) {
	typ := r.PathValue("type")
	key, td, err := h.singleKey(r)
	if err != nil {
		h.fail(w, r, err, typ)
		return
	}
	if h.readOnly(td) {
		h.fail(w, r, newError(http.StatusForbidden, CodeReadOnly, "%s", h.readOnlyMessage(td, "apply")), typ)
		return
	}
	var res resource.Resource
	if err := h.decode(w, r, &res); err != nil {
		h.fail(w, r, err, typ)
		return
	}
	for _, c := range []struct{ field, body, path string }{
		{"type", res.Type, key.Type}, {"mesh", res.Mesh, key.Mesh}, {"name", res.Name, key.Name},
	} {
		if c.body != "" && c.body != c.path {
			h.fail(w, r, badRequest("body %s %q does not match the URL (%q)", c.field, c.body, c.path), typ)
			return
		}
	}
	if res.Zone != "" {
		h.fail(w, r, badRequest("zone is set by the engine, not by writers"), typ)
		return
	}
	res.Type, res.Mesh, res.Name = key.Type, key.Mesh, key.Name
	if res.Version == "" {
		out, err := h.b.Create(r.Context(), &res)
		if err != nil {
			h.fail(w, r, err, typ)
			return
		}
		h.writeJSON(w, http.StatusCreated, out)
		return
	}
	out, err := h.b.Update(r.Context(), &res)
	if err != nil {
		h.fail(w, r, resourceError(key, err), typ)
		return
	}
	h.writeJSON(w, http.StatusOK, out)
}

func (h *handler) delete(w http.ResponseWriter, r *http.Request) {
	typ := r.PathValue("type")
	key, td, err := h.singleKey(r)
	if err != nil {
		h.fail(w, r, err, typ)
		return
	}
	if h.readOnly(td) {
		h.fail(w, r, newError(http.StatusForbidden, CodeReadOnly, "%s", h.readOnlyMessage(td, "delete")), typ)
		return
	}
	if err := h.b.Delete(r.Context(), key, r.URL.Query().Get("version")); err != nil {
		h.fail(w, r, resourceError(key, err), typ)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// decode reads a JSON body into v, refusing unknown fields and trailing data.
func (h *handler) decode(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength > h.opts.maxBodyBytes {
		return newError(http.StatusRequestEntityTooLarge, CodeTooLarge, "request body is %d bytes, over the limit of %d bytes",
			r.ContentLength, h.opts.maxBodyBytes)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.maxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return newError(http.StatusRequestEntityTooLarge, CodeTooLarge, "request body over the limit of %d bytes", mbe.Limit)
		}
		return badRequest("request body: %v", err)
	}
	if body, err = kumaForm(v, body); err != nil {
		return badRequest("request body: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("request body: %v", err)
	}
	if dec.More() {
		return badRequest("request body: data after the JSON value")
	}
	return nil
}

// checkBatch decodes a batch and runs every check apply makes before
// writing: envelope basics, known types, write side, duplicates, and the
// backend's full validation.
func (h *handler) checkBatch(w http.ResponseWriter, r *http.Request) ([]*resource.Resource, error) {
	var req BatchRequest
	if err := h.decode(w, r, &req); err != nil {
		return nil, err
	}
	if len(req.Resources) == 0 {
		return nil, badRequest("no resources in the request")
	}
	var unknown, readOnly []FieldProblem
	var roMsg string
	seen := map[resource.Key]int{}
	for i, res := range req.Resources {
		if res == nil {
			return nil, badRequest("resources[%d]: null", i)
		}
		if res.Type == "" || res.Name == "" {
			return nil, badRequest("resources[%d]: type and name are required", i)
		}
		if res.Zone != "" {
			return nil, badRequest("resources[%d] (%s): zone is set by the engine, not by writers", i, res.Key())
		}
		if j, dup := seen[res.Key()]; dup {
			return nil, badRequest("resources[%d] and resources[%d] are both %s", j, i, res.Key())
		}
		seen[res.Key()] = i
		td, ok := h.typeByName(res.Type)
		switch {
		case !ok:
			unknown = append(unknown, fieldProblem(res.Key(), "type", "unknown resource type "+res.Type))
		case h.readOnly(td):
			if roMsg == "" {
				roMsg = h.readOnlyMessage(td, "apply")
			}
			readOnly = append(readOnly, fieldProblem(res.Key(), "", h.readOnlyMessage(td, "apply")))
		}
	}
	if len(unknown) > 0 {
		e := newError(http.StatusNotFound, CodeUnknownType, "%s", unknown[0].Message)
		e.body.Fields = unknown
		return nil, e
	}
	if len(readOnly) > 0 {
		e := newError(http.StatusForbidden, CodeReadOnly, "%s", roMsg)
		e.body.Fields = readOnly
		return nil, e
	}
	if err := h.b.Validate(r.Context(), req.Resources); err != nil {
		return nil, err
	}
	return req.Resources, nil
}

func (h *handler) validate(w http.ResponseWriter, r *http.Request) {
	ctx, warns := resource.WithWarnings(r.Context())
	r = r.WithContext(ctx)
	rs, err := h.checkBatch(w, r)
	if err != nil {
		h.fail(w, r, err, "")
		return
	}
	h.writeJSON(w, http.StatusOK, ValidateResponse{Valid: true, Count: len(rs), Warnings: warningProblems(warns)})
}

// warningProblems lists the collected warnings, one per field.
func warningProblems(w *resource.Warnings) []FieldProblem {
	var out []FieldProblem
	for _, inv := range w.List() {
		for _, fe := range inv.Errors {
			out = append(out, fieldProblem(inv.Key, fe.Field, fe.Message))
		}
	}
	return out
}

func (h *handler) apply(w http.ResponseWriter, r *http.Request) {
	ctx, warns := resource.WithWarnings(r.Context())
	r = r.WithContext(ctx)
	rs, err := h.checkBatch(w, r)
	if err != nil {
		h.fail(w, r, err, "")
		return
	}
	out := ApplyResponse{Results: make([]ApplyResult, 0, len(rs)), Warnings: warningProblems(warns)}
	// checkBatch validated every resource in one pass; the writes need not
	// validate them one by one again.
	r = r.WithContext(context.WithValue(r.Context(), batchValidatedKey{}, true))
	for _, res := range rs {
		result, err := h.applyOne(r, res)
		if err != nil {
			status, body := h.classify(err, res.Type)
			if k := res.Key().String(); !strings.HasPrefix(body.Message, k) {
				body.Message = k + ": " + body.Message
			}
			if status >= 500 {
				h.log.Error("apply", "resource", res.Key().String(), "error", err)
			}
			h.writeJSON(w, status, body)
			return
		}
		out.Results = append(out.Results, result)
	}
	h.writeJSON(w, http.StatusOK, out)
}

// applyOne creates res, updates it, or leaves it alone when labels and spec
// already match. A version in res is a precondition: it must be the stored
// one.
func (h *handler) applyOne(r *http.Request, res *resource.Resource) (ApplyResult, error) {
	result := ApplyResult{Type: res.Type, Mesh: res.Mesh, Name: res.Name}
	cur, err := h.b.Get(r.Context(), res.Key())
	switch {
	case errors.Is(err, resource.ErrNotFound):
		if res.Version != "" {
			return result, resourceError(res.Key(), err)
		}
		created, err := h.b.Create(r.Context(), res)
		if err != nil {
			return result, err
		}
		result.Action, result.Version = ActionCreated, created.Version
		return result, nil
	case err != nil:
		return result, err
	}
	if res.Version != "" && res.Version != cur.Version {
		return result, newError(http.StatusConflict, CodeConflict,
			"version %s was given but the stored version is %s", res.Version, cur.Version)
	}
	if sameContent(cur, res) {
		result.Action, result.Version = ActionUnchanged, cur.Version
		return result, nil
	}
	upd := res.Clone()
	upd.Version = cur.Version
	updated, err := h.b.Update(r.Context(), upd)
	if err != nil {
		return result, resourceError(res.Key(), err)
	}
	result.Action, result.Version = ActionUpdated, updated.Version
	return result, nil
}

// sameContent reports whether a and b have equal labels and semantically
// equal specs (key order and whitespace do not matter).
func sameContent(a, b *resource.Resource) bool {
	if len(a.Labels) != len(b.Labels) {
		return false
	}
	for k, v := range a.Labels {
		if bv, ok := b.Labels[k]; !ok || bv != v {
			return false
		}
	}
	return jsonEqual(a.Spec, b.Spec)
}

func jsonEqual(a, b json.RawMessage) bool {
	if len(bytes.TrimSpace(a)) == 0 || len(bytes.TrimSpace(b)) == 0 {
		return len(bytes.TrimSpace(a)) == len(bytes.TrimSpace(b))
	}
	var av, bv any
	if json.Unmarshal(a, &av) != nil || json.Unmarshal(b, &bv) != nil {
		return bytes.Equal(a, b)
	}
	return reflect.DeepEqual(av, bv)
}

func (h *handler) requireRole(role string) error {
	if h.b.Role() != role {
		return newError(http.StatusNotFound, CodeWrongRole, "this route is served by %s; this is a %s control plane", role, h.b.Role())
	}
	return nil
}

func (h *handler) zones(w http.ResponseWriter, r *http.Request) {
	if err := h.requireRole(RoleGlobal); err != nil {
		h.fail(w, r, err, "")
		return
	}
	zs := h.b.Insights()
	if zs == nil {
		zs = []insights.Conn{}
	}
	slices.SortFunc(zs, func(a, b insights.Conn) int { return cmp.Compare(a.Name, b.Name) })
	resp := ZonesResponse{Zones: zs}
	if rn, ok := h.b.(ReplicaNamer); ok {
		resp.Replica = rn.Replica()
	}
	h.writeJSON(w, http.StatusOK, resp)
}

func (h *handler) zone(w http.ResponseWriter, r *http.Request) {
	if err := h.requireRole(RoleGlobal); err != nil {
		h.fail(w, r, err, "")
		return
	}
	name := r.PathValue("name")
	for _, c := range h.b.Insights() {
		if c.Name == name {
			h.writeJSON(w, http.StatusOK, c)
			return
		}
	}
	// Global replicas know each other's zones from the store's session
	// leases: while the store is away, a zone this replica does not serve
	// is unknown here, not absent.
	if err := h.b.Ready(); err != nil {
		if status, body := h.classify(err, ""); body.Code == CodeStoreUnavailable {
			h.fail(w, r, newError(status, CodeStoreUnavailable,
				"zone %q has no session on this replica, and which replica serves it cannot be read while the store is unavailable (%s): retry once it is back, or ask the replica the zone is connected to",
				name, body.Message), "")
			return
		}
	}
	h.fail(w, r, newError(http.StatusNotFound, CodeNotFound, "zone %q has never connected", name), "")
}

func (h *handler) sync(w http.ResponseWriter, r *http.Request) {
	if err := h.requireRole(RoleZone); err != nil {
		h.fail(w, r, err, "")
		return
	}
	c := insights.Conn{Name: "global", Types: map[string]insights.TypeState{}}
	if cs := h.b.Insights(); len(cs) > 0 {
		c = cs[0]
	}
	h.writeJSON(w, http.StatusOK, c)
}

func (h *handler) plugins(w http.ResponseWriter, _ *http.Request) {
	info := h.b.Plugins()
	if info.Plugins == nil {
		info.Plugins = []PluginInfo{}
	}
	h.writeJSON(w, http.StatusOK, info)
}
