package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kds-engine/kds-engine/engine/apitest"
	"github.com/kds-engine/kds-engine/engine/internal/api"
	"github.com/kds-engine/kds-engine/engine/internal/insights"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixture struct {
	t   *testing.T
	b   *apitest.Backend
	srv *httptest.Server
}

func newFixture(t *testing.T, role string, opts ...api.Option) *fixture {
	t.Helper()
	b := apitest.NewBackend(role)
	srv := httptest.NewServer(api.NewHandler(b, hclog.NewNullLogger(), opts...))
	t.Cleanup(srv.Close)
	return &fixture{t: t, b: b, srv: srv}
}

// do sends a request and returns the status and the raw body.
func (f *fixture) do(method, path string, body any) (int, []byte) {
	f.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		js, err := json.Marshal(b)
		require.NoError(f.t, err)
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, rd)
	require.NoError(f.t, err)
	resp, err := f.srv.Client().Do(req)
	require.NoError(f.t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(f.t, err)
	return resp.StatusCode, out
}

func (f *fixture) apiError(method, path string, body any, wantStatus int, wantCode string) api.Error {
	f.t.Helper()
	status, raw := f.do(method, path, body)
	require.Equal(f.t, wantStatus, status, string(raw))
	var e api.Error
	require.NoError(f.t, json.Unmarshal(raw, &e), string(raw))
	require.Equal(f.t, wantCode, e.Code, string(raw))
	return e
}

func decode[T any](t *testing.T, raw []byte) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(raw, &v), string(raw))
	return v
}

func meshTimeout(mesh, name, timeout string) *resource.Resource {
	return &resource.Resource{Type: "MeshTimeout", Mesh: mesh, Name: name, Labels: map[string]string{"team": "web"},
		Spec: json.RawMessage(fmt.Sprintf(`{"connectTimeout":%q}`, timeout))}
}

func TestHealthAndReadiness(t *testing.T) {
	f := newFixture(t, api.RoleGlobal)
	status, raw := f.do("GET", "/healthz", nil)
	assert.Equal(t, 200, status)
	assert.Equal(t, "ok", decode[api.StatusResponse](t, raw).Status)

	status, raw = f.do("GET", "/readyz", nil)
	assert.Equal(t, 200, status)
	assert.Equal(t, "ready", decode[api.StatusResponse](t, raw).Status)

	f.b.SetNotReady("plugins not loaded yet")
	e := f.apiError("GET", "/readyz", nil, 503, api.CodeNotReady)
	assert.Equal(t, "plugins not loaded yet", e.Message)
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, api.RoleGlobal)
	f.apiError("GET", "/metrics", nil, 404, api.CodeNotFound)

	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "kds_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	f = newFixture(t, api.RoleGlobal, api.WithGatherer(reg))
	status, raw := f.do("GET", "/metrics", nil)
	assert.Equal(t, 200, status)
	assert.Contains(t, string(raw), "kds_test_total 3")
}

func TestTypes(t *testing.T) {
	for role, readOnly := range map[string]map[string]bool{
		api.RoleGlobal: {"Mesh": false, "MeshTimeout": false, "Dataplane": true},
		api.RoleZone:   {"Mesh": true, "MeshTimeout": true, "Dataplane": false},
	} {
		f := newFixture(t, role)
		status, raw := f.do("GET", "/api/v1/types", nil)
		require.Equal(t, 200, status)
		got := decode[api.TypesResponse](t, raw)
		assert.Equal(t, role, got.Role)
		require.Len(t, got.Types, 3)
		assert.Equal(t, []string{"Dataplane", "Mesh", "MeshTimeout"}, []string{got.Types[0].Name, got.Types[1].Name, got.Types[2].Name}, "sorted by name")
		for _, ti := range got.Types {
			assert.Equal(t, readOnly[ti.Name], ti.ReadOnly, "%s on %s", ti.Name, role)
		}
		mt := got.Types[2]
		assert.Equal(t, "GlobalToZone", mt.Direction)
		assert.Equal(t, "Mesh", mt.Scope)
		assert.Equal(t, "policies", mt.Plugin)
		assert.JSONEq(t, `{"type":"object","properties":{"connectTimeout":{"type":"string"}}}`, string(mt.Schema))
	}
}

func TestCreateGetUpdateDelete(t *testing.T) {
	f := newFixture(t, api.RoleGlobal)

	// Create: no version.
	status, raw := f.do("PUT", "/api/v1/resources/MeshTimeout/web?mesh=default",
		`{"labels":{"team":"web"},"spec":{"connectTimeout":"5s"}}`)
	require.Equal(t, 201, status, string(raw))
	created := decode[resource.Resource](t, raw)
	assert.Equal(t, "MeshTimeout", created.Type)
	assert.Equal(t, "default", created.Mesh)
	assert.Equal(t, "web", created.Name)
	assert.NotEmpty(t, created.Version)
	assert.False(t, created.CreationTime.IsZero())

	// Create again: already exists.
	f.apiError("PUT", "/api/v1/resources/MeshTimeout/web?mesh=default", `{"spec":{}}`, 409, api.CodeAlreadyExists)

	// Get.
	status, raw = f.do("GET", "/api/v1/resources/MeshTimeout/web?mesh=default", nil)
	require.Equal(t, 200, status)
	got := decode[resource.Resource](t, raw)
	assert.Equal(t, created.Version, got.Version)
	assert.JSONEq(t, `{"connectTimeout":"5s"}`, string(got.Spec))

	// Update with the version read.
	status, raw = f.do("PUT", "/api/v1/resources/MeshTimeout/web?mesh=default",
		fmt.Sprintf(`{"version":%q,"spec":{"connectTimeout":"7s"}}`, got.Version))
	require.Equal(t, 200, status, string(raw))
	updated := decode[resource.Resource](t, raw)
	assert.NotEqual(t, got.Version, updated.Version)

	// Update with the stale version: conflict, nothing changes.
	e := f.apiError("PUT", "/api/v1/resources/MeshTimeout/web?mesh=default",
		fmt.Sprintf(`{"version":%q,"spec":{"connectTimeout":"9s"}}`, got.Version), 409, api.CodeConflict)
	assert.Contains(t, e.Message, "version")
	_, raw = f.do("GET", "/api/v1/resources/MeshTimeout/web?mesh=default", nil)
	assert.JSONEq(t, `{"connectTimeout":"7s"}`, string(decode[resource.Resource](t, raw).Spec))

	// Delete with a stale version: conflict; with the current one: gone.
	f.apiError("DELETE", "/api/v1/resources/MeshTimeout/web?mesh=default&version="+got.Version, nil, 409, api.CodeConflict)
	status, _ = f.do("DELETE", "/api/v1/resources/MeshTimeout/web?mesh=default&version="+updated.Version, nil)
	assert.Equal(t, 204, status)
	f.apiError("GET", "/api/v1/resources/MeshTimeout/web?mesh=default", nil, 404, api.CodeNotFound)
	f.apiError("DELETE", "/api/v1/resources/MeshTimeout/web?mesh=default", nil, 404, api.CodeNotFound)
	f.apiError("PUT", "/api/v1/resources/MeshTimeout/gone?mesh=default", `{"version":"1","spec":{}}`, 404, api.CodeNotFound)
}

func TestPutRejectsMismatchedBody(t *testing.T) {
	f := newFixture(t, api.RoleGlobal)
	e := f.apiError("PUT", "/api/v1/resources/MeshTimeout/web?mesh=default", `{"name":"other","spec":{}}`, 400, api.CodeBadRequest)
	assert.Contains(t, e.Message, `body name "other" does not match the URL ("web")`)
	f.apiError("PUT", "/api/v1/resources/MeshTimeout/web?mesh=default", `{"mesh":"m2"}`, 400, api.CodeBadRequest)
	f.apiError("PUT", "/api/v1/resources/MeshTimeout/web?mesh=default", `{"zone":"z1"}`, 400, api.CodeBadRequest)
	e = f.apiError("PUT", "/api/v1/resources/MeshTimeout/web?mesh=default", `{"metadata":{}}`, 400, api.CodeBadRequest)
	assert.Contains(t, e.Message, "metadata")
	f.apiError("PUT", "/api/v1/resources/MeshTimeout/web?mesh=default", `{`, 400, api.CodeBadRequest)
	assert.Equal(t, 0, f.b.Count())
}

func TestBodyLimit(t *testing.T) {
	f := newFixture(t, api.RoleGlobal, api.WithMaxBodyBytes(64))
	big := `{"spec":{"x":"` + strings.Repeat("a", 100) + `"}}`
	e := f.apiError("PUT", "/api/v1/resources/MeshTimeout/web?mesh=default", big, 413, api.CodeTooLarge)
	assert.Contains(t, e.Message, "over the limit of 64 bytes")
}

// countingBody is an endless request body that counts what is read of it.
type countingBody struct{ n int64 }

func (c *countingBody) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' ' // JSON whitespace: the decoder keeps reading
	}
	c.n += int64(len(p))
	return len(p), nil
}

func (c *countingBody) Close() error { return nil }

// A body over the limit is refused with 413 and the limit, without being
// read: not at all when its Content-Length says so, and no more than the
// limit and one byte when it does not (chunked).
func TestBodyOverLimitIsRefusedWithoutReadingIt(t *testing.T) {
	const limit = 1 << 10
	h := api.NewHandler(apitest.NewBackend(api.RoleGlobal), hclog.NewNullLogger(), api.WithMaxBodyBytes(limit))
	for _, declared := range []int64{-1, 20 << 20} {
		for _, path := range []string{"/api/v1/apply", "/api/v1/validate"} {
			body := &countingBody{}
			req := httptest.NewRequest("POST", path, nil)
			req.Body, req.ContentLength = body, declared
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			require.Equal(t, 413, rec.Code, rec.Body.String())
			var e api.Error
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &e))
			assert.Equal(t, api.CodeTooLarge, e.Code)
			assert.Contains(t, e.Message, fmt.Sprintf("limit of %d bytes", limit))
			if declared > 0 {
				assert.Zero(t, body.n, "a declared size over the limit is refused before reading")
			} else {
				assert.LessOrEqual(t, body.n, int64(limit+1), "no more than the limit is read")
			}
		}
	}
}

func TestScopeChecks(t *testing.T) {
	f := newFixture(t, api.RoleGlobal)
	e := f.apiError("GET", "/api/v1/resources/MeshTimeout/web", nil, 400, api.CodeBadRequest)
	assert.Equal(t, "MeshTimeout is mesh-scoped; give the mesh (?mesh=)", e.Message)
	e = f.apiError("GET", "/api/v1/resources/Mesh/default?mesh=x", nil, 400, api.CodeBadRequest)
	assert.Equal(t, "Mesh is not mesh-scoped; drop the mesh", e.Message)
	e = f.apiError("GET", "/api/v1/resources/Dataplane/web-1?mesh=default", nil, 400, api.CodeBadRequest)
	assert.Contains(t, e.Message, "give the zone")
	f.apiError("GET", "/api/v1/resources/MeshTimeout/web?mesh=default&zone=z1", nil, 400, api.CodeBadRequest)

	z := newFixture(t, api.RoleZone)
	z.apiError("GET", "/api/v1/resources/Dataplane/web-1?mesh=default&zone=z1", nil, 400, api.CodeBadRequest)
}

func TestUnknownTypeAndRoute(t *testing.T) {
	f := newFixture(t, api.RoleGlobal)
	e := f.apiError("GET", "/api/v1/resources/Nope", nil, 404, api.CodeUnknownType)
	assert.Equal(t, `unknown resource type "Nope" (known types: Dataplane, Mesh, MeshTimeout)`, e.Message)
	f.apiError("GET", "/api/v1/resources/Nope/x", nil, 404, api.CodeUnknownType)
	f.apiError("PUT", "/api/v1/resources/Nope/x", `{}`, 404, api.CodeUnknownType)
	f.apiError("GET", "/api/v1/nothing", nil, 404, api.CodeNotFound)

	req, err := http.NewRequest("POST", f.srv.URL+"/api/v1/resources/MeshTimeout/web", nil)
	require.NoError(t, err)
	resp, err := f.srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, 405, resp.StatusCode)
	assert.Equal(t, "GET, PUT, DELETE", resp.Header.Get("Allow"))
	var body api.Error
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	assert.Equal(t, api.CodeMethodNotAllowed, body.Code)
}

func TestReadOnly(t *testing.T) {
	z := newFixture(t, api.RoleZone)
	e := z.apiError("PUT", "/api/v1/resources/MeshTimeout/web?mesh=default", `{"spec":{}}`, 403, api.CodeReadOnly)
	assert.Equal(t, "MeshTimeout is written on global and synced to zones; apply it on global", e.Message)
	e = z.apiError("DELETE", "/api/v1/resources/MeshTimeout/web?mesh=default", nil, 403, api.CodeReadOnly)
	assert.Equal(t, "MeshTimeout is written on global and synced to zones; delete it on global", e.Message)
	e = z.apiError("POST", "/api/v1/apply", api.BatchRequest{Resources: []*resource.Resource{meshTimeout("default", "web", "5s")}}, 403, api.CodeReadOnly)
	assert.Equal(t, "MeshTimeout is written on global and synced to zones; apply it on global", e.Message)
	require.Len(t, e.Fields, 1)
	assert.Equal(t, "MeshTimeout default/web", e.Fields[0].Resource)

	g := newFixture(t, api.RoleGlobal)
	g.b.Put(&resource.Resource{Type: "Dataplane", Mesh: "default", Zone: "zone-1", Name: "web-1", Spec: json.RawMessage(`{"address":"10.0.0.1"}`)})
	e = g.apiError("DELETE", "/api/v1/resources/Dataplane/web-1?mesh=default&zone=zone-1", nil, 403, api.CodeReadOnly)
	assert.Equal(t, "Dataplane is written on a zone and synced to global; delete it on the zone it belongs to", e.Message)
	assert.Equal(t, 1, g.b.Count())
}

// errReadOnlyBackend makes the backend itself refuse, to check the mapping of
// resource.ErrReadOnly from below the handler.
type errReadOnlyBackend struct{ *apitest.Backend }

func (errReadOnlyBackend) Create(_ context.Context, r *resource.Resource) (*resource.Resource, error) {
	return nil, fmt.Errorf("store %s: %w", r.Key(), resource.ErrReadOnly)
}

func TestBackendReadOnlyErrorIsMapped(t *testing.T) {
	b := errReadOnlyBackend{apitest.NewBackend(api.RoleGlobal)}
	srv := httptest.NewServer(api.NewHandler(b, hclog.NewNullLogger()))
	defer srv.Close()
	f := &fixture{t: t, b: b.Backend, srv: srv}
	e := f.apiError("PUT", "/api/v1/resources/MeshTimeout/web?mesh=default", `{"spec":{}}`, 403, api.CodeReadOnly)
	assert.Equal(t, "MeshTimeout is written on global and synced to zones; apply it on global", e.Message)
}

func TestInvalidWriteNamesFields(t *testing.T) {
	f := newFixture(t, api.RoleGlobal)
	e := f.apiError("PUT", "/api/v1/resources/MeshTimeout/web?mesh=default", `{"spec":{"connectTimeout":"-1s"}}`, 422, api.CodeInvalid)
	require.Len(t, e.Fields, 1)
	assert.Equal(t, api.FieldProblem{Resource: "MeshTimeout default/web", Type: "MeshTimeout", Mesh: "default", Name: "web",
		Field: "spec.connectTimeout", Message: "must be a positive duration"}, e.Fields[0])
	assert.Equal(t, 0, f.b.Count())
}

func TestPluginDown(t *testing.T) {
	f := newFixture(t, api.RoleGlobal)
	f.b.SetPluginDown("policies", true)
	e := f.apiError("PUT", "/api/v1/resources/MeshTimeout/web?mesh=default", `{"spec":{}}`, 503, api.CodePluginDown)
	assert.Contains(t, e.Message, "plugin policies")
	e = f.apiError("POST", "/api/v1/apply", api.BatchRequest{Resources: []*resource.Resource{meshTimeout("default", "web", "5s")}}, 503, api.CodePluginDown)
	assert.Contains(t, e.Message, "is down")
}

var errCustom = errors.New("store closed")

type customErrBackend struct{ *apitest.Backend }

func (customErrBackend) List(context.Context, api.Filter) ([]*resource.Resource, error) {
	return nil, fmt.Errorf("list: %w", errCustom)
}

func TestWithErrorCodeAndInternal(t *testing.T) {
	b := customErrBackend{apitest.NewBackend(api.RoleGlobal)}
	mapped := httptest.NewServer(api.NewHandler(b, hclog.NewNullLogger(), api.WithErrorCode(errCustom, 503, "store_closed")))
	defer mapped.Close()
	f := &fixture{t: t, b: b.Backend, srv: mapped}
	e := f.apiError("GET", "/api/v1/resources/MeshTimeout", nil, 503, "store_closed")
	assert.Equal(t, "list: store closed", e.Message)

	plain := httptest.NewServer(api.NewHandler(b, hclog.NewNullLogger()))
	defer plain.Close()
	f.srv = plain
	f.apiError("GET", "/api/v1/resources/MeshTimeout", nil, 500, api.CodeInternal)
}

// A request refused because the store is away (or a plugin is down) is
// not an error of its own: the outage is logged where it starts and ends,
// so each refusal is logged at debug only. Other failures still log an
// error line.
func TestOutageRefusalsAreNotLoggedAsErrors(t *testing.T) {
	b := customErrBackend{apitest.NewBackend(api.RoleGlobal)}
	for code, wantError := range map[string]bool{api.CodeStoreUnavailable: false, "store_closed": true} {
		var logs logbuf.Buffer
		srv := httptest.NewServer(api.NewHandler(b, hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info}),
			api.WithErrorCode(errCustom, 503, code)))
		f := &fixture{t: t, b: b.Backend, srv: srv}
		f.apiError("GET", "/api/v1/resources/MeshTimeout", nil, 503, code)
		srv.Close()
		if wantError {
			assert.Len(t, logs.Lines("[ERROR]", "request failed"), 1, "%s:\n%s", code, logs.String())
		} else {
			assert.Empty(t, logs.String(), "%s: nothing at info or above", code)
		}
	}
}

// While the store is away, a zone this replica does not serve is unknown,
// not "never connected": another replica may serve it, and which one is in
// the store. The answer says so with 503 store_unavailable.
func TestZoneLookupDuringStoreOutage(t *testing.T) {
	b := apitest.NewBackend(api.RoleGlobal)
	b.SetInsights(insights.Conn{Name: "zone-here", Online: true})
	srv := httptest.NewServer(api.NewHandler(b, hclog.NewNullLogger(), api.WithErrorCode(errCustom, 503, api.CodeStoreUnavailable)))
	defer srv.Close()
	f := &fixture{t: t, b: b, srv: srv}
	f.apiError("GET", "/api/v1/zones/zone-elsewhere", nil, 404, api.CodeNotFound)

	b.SetNotReadyError(fmt.Errorf("store: %w", errCustom))
	e := f.apiError("GET", "/api/v1/zones/zone-elsewhere", nil, 503, api.CodeStoreUnavailable)
	assert.Contains(t, e.Message, `zone "zone-elsewhere" has no session on this replica`)
	assert.Contains(t, e.Message, "store closed")
	status, _ := f.do("GET", "/api/v1/zones/zone-here", nil)
	assert.Equal(t, 200, status, "a zone this replica serves is answered from its own insights")

	b.SetNotReadyError(errors.New("no resource types"))
	f.apiError("GET", "/api/v1/zones/zone-elsewhere", nil, 404, api.CodeNotFound)
}

func TestListFilters(t *testing.T) {
	f := newFixture(t, api.RoleGlobal)
	require.NoError(t, f.b.SeedJSON(`[
		{"type":"MeshTimeout","mesh":"default","name":"b","labels":{"team":"web","env":"prod"},"spec":{}},
		{"type":"MeshTimeout","mesh":"default","name":"a","labels":{"team":"db"},"spec":{}},
		{"type":"MeshTimeout","mesh":"other","name":"c","labels":{"team":"web"},"spec":{}},
		{"type":"Dataplane","mesh":"default","zone":"zone-1","name":"web-1","spec":{"address":"10.0.0.1"}},
		{"type":"Dataplane","mesh":"default","zone":"zone-2","name":"web-1","spec":{"address":"10.0.0.2"}}
	]`))
	names := func(path string) []string {
		t.Helper()
		status, raw := f.do("GET", path, nil)
		require.Equal(t, 200, status, string(raw))
		var out []string
		for _, r := range decode[api.ListResponse](t, raw).Items {
			out = append(out, r.Zone+"/"+r.Mesh+"/"+r.Name)
		}
		return out
	}
	assert.Equal(t, []string{"/default/a", "/default/b", "/other/c"}, names("/api/v1/resources/MeshTimeout"))
	assert.Equal(t, []string{"/default/a", "/default/b"}, names("/api/v1/resources/MeshTimeout?mesh=default"))
	assert.Equal(t, []string{"/default/b", "/other/c"}, names("/api/v1/resources/MeshTimeout?label=team=web"))
	assert.Equal(t, []string{"/default/b"}, names("/api/v1/resources/MeshTimeout?label=team=web&label=env=prod"))
	assert.Equal(t, []string{"zone-1/default/web-1", "zone-2/default/web-1"}, names("/api/v1/resources/Dataplane"))
	assert.Equal(t, []string{"zone-2/default/web-1"}, names("/api/v1/resources/Dataplane?zone=zone-2"))
	assert.Nil(t, names("/api/v1/resources/Mesh"))

	status, raw := f.do("GET", "/api/v1/resources/Mesh", nil)
	require.Equal(t, 200, status)
	assert.JSONEq(t, `{"items":[]}`, string(raw), "empty list is [], not null")

	status, raw = f.do("GET", "/api/v1/resources/Dataplane/web-1?mesh=default&zone=zone-2", nil)
	require.Equal(t, 200, status)
	assert.JSONEq(t, `{"address":"10.0.0.2"}`, string(decode[resource.Resource](t, raw).Spec))

	f.apiError("GET", "/api/v1/resources/MeshTimeout?label=team", nil, 400, api.CodeBadRequest)
}

func TestApplyCreatedUpdatedUnchanged(t *testing.T) {
	f := newFixture(t, api.RoleGlobal)
	apply := func(rs ...*resource.Resource) []api.ApplyResult {
		t.Helper()
		status, raw := f.do("POST", "/api/v1/apply", api.BatchRequest{Resources: rs})
		require.Equal(t, 200, status, string(raw))
		return decode[api.ApplyResponse](t, raw).Results
	}
	actions := func(rs []api.ApplyResult) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Type+" "+r.Mesh+"/"+r.Name+" "+r.Action)
		}
		return out
	}
	mesh := &resource.Resource{Type: "Mesh", Name: "default", Spec: json.RawMessage(`{}`)}
	res := apply(mesh, meshTimeout("default", "web", "5s"), meshTimeout("default", "api", "5s"))
	assert.Equal(t, []string{"Mesh /default created", "MeshTimeout default/web created", "MeshTimeout default/api created"}, actions(res))
	for _, r := range res {
		assert.NotEmpty(t, r.Version)
	}

	// Same content with different key order and whitespace: unchanged.
	same := meshTimeout("default", "web", "5s")
	same.Spec = json.RawMessage(`{ "connectTimeout" : "5s" }`)
	res2 := apply(mesh, same, meshTimeout("default", "api", "6s"))
	assert.Equal(t, []string{"Mesh /default unchanged", "MeshTimeout default/web unchanged", "MeshTimeout default/api updated"}, actions(res2))
	assert.Equal(t, res[1].Version, res2[1].Version)
	assert.NotEqual(t, res[2].Version, res2[2].Version)

	// A label change is an update.
	relabeled := meshTimeout("default", "web", "5s")
	relabeled.Labels = map[string]string{"team": "platform"}
	assert.Equal(t, []string{"MeshTimeout default/web updated"}, actions(apply(relabeled)))

	// A stale version as precondition: conflict, message names the resource.
	stale := meshTimeout("default", "web", "8s")
	stale.Version = res[1].Version
	e := f.apiError("POST", "/api/v1/apply", api.BatchRequest{Resources: []*resource.Resource{stale}}, 409, api.CodeConflict)
	assert.True(t, strings.HasPrefix(e.Message, "MeshTimeout default/web: "), e.Message)

	// A backend error that already names the resource is not prefixed twice.
	gone := meshTimeout("default", "gone", "1s")
	gone.Version = "1"
	e = f.apiError("POST", "/api/v1/apply", api.BatchRequest{Resources: []*resource.Resource{gone}}, 404, api.CodeNotFound)
	assert.Equal(t, "MeshTimeout default/gone: resource not found", e.Message)
}

func TestApplyValidatesAllBeforeWriting(t *testing.T) {
	f := newFixture(t, api.RoleGlobal)
	good := meshTimeout("default", "web", "5s")
	bad := meshTimeout("default", "api", "soon")
	bad2 := &resource.Resource{Type: "Mesh", Mesh: "x", Name: "default"}
	e := f.apiError("POST", "/api/v1/apply", api.BatchRequest{Resources: []*resource.Resource{good, bad, bad2}}, 422, api.CodeInvalid)
	assert.Equal(t, 0, f.b.Count(), "nothing written when any resource is invalid")
	require.Len(t, e.Fields, 2)
	assert.Equal(t, "MeshTimeout default/api", e.Fields[0].Resource)
	assert.Equal(t, "spec.connectTimeout", e.Fields[0].Field)
	assert.Equal(t, "Mesh x/default", e.Fields[1].Resource)
	assert.Equal(t, "mesh", e.Fields[1].Field)

	e = f.apiError("POST", "/api/v1/apply", api.BatchRequest{Resources: []*resource.Resource{good, {Type: "Nope", Name: "x"}}}, 404, api.CodeUnknownType)
	require.Len(t, e.Fields, 1)
	assert.Equal(t, "Nope x", e.Fields[0].Resource)
	assert.Equal(t, 0, f.b.Count())

	e = f.apiError("POST", "/api/v1/apply", api.BatchRequest{Resources: []*resource.Resource{good, meshTimeout("default", "web", "6s")}}, 400, api.CodeBadRequest)
	assert.Contains(t, e.Message, "both MeshTimeout default/web")
	f.apiError("POST", "/api/v1/apply", `{"resources":[]}`, 400, api.CodeBadRequest)
	f.apiError("POST", "/api/v1/apply", `{"resources":[{"type":"MeshTimeout"}]}`, 400, api.CodeBadRequest)
	assert.Equal(t, 0, f.b.Count())
}

// Plugin warnings are returned by apply and validate; the write goes ahead.
func TestWarningsAreReturned(t *testing.T) {
	f := newFixture(t, api.RoleGlobal)
	web := meshTimeout("default", "web", "5s")
	f.b.AddWarning("MeshTimeout", "default", "web", "spec.connectTimeout", "is deprecated; use connectionTimeout")
	want := []api.FieldProblem{{Resource: "MeshTimeout default/web", Type: "MeshTimeout", Mesh: "default", Name: "web",
		Field: "spec.connectTimeout", Message: "is deprecated; use connectionTimeout"}}

	status, raw := f.do("POST", "/api/v1/validate", api.BatchRequest{Resources: []*resource.Resource{web}})
	require.Equal(t, 200, status, string(raw))
	assert.Equal(t, want, decode[api.ValidateResponse](t, raw).Warnings)

	status, raw = f.do("POST", "/api/v1/apply", api.BatchRequest{Resources: []*resource.Resource{web}})
	require.Equal(t, 200, status, string(raw))
	out := decode[api.ApplyResponse](t, raw)
	assert.Equal(t, want, out.Warnings)
	assert.Equal(t, api.ActionCreated, out.Results[0].Action, "a warning does not refuse the write")
	assert.Equal(t, 1, f.b.Count())
}

func TestValidate(t *testing.T) {
	f := newFixture(t, api.RoleGlobal)
	status, raw := f.do("POST", "/api/v1/validate", api.BatchRequest{Resources: []*resource.Resource{meshTimeout("default", "web", "5s")}})
	require.Equal(t, 200, status, string(raw))
	assert.Equal(t, api.ValidateResponse{Valid: true, Count: 1}, decode[api.ValidateResponse](t, raw))
	e := f.apiError("POST", "/api/v1/validate", api.BatchRequest{Resources: []*resource.Resource{meshTimeout("default", "web", "0s")}}, 422, api.CodeInvalid)
	assert.Equal(t, "spec.connectTimeout", e.Fields[0].Field)
	assert.Equal(t, 0, f.b.Count(), "validate never writes")
}

func TestZonesAndSync(t *testing.T) {
	since := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	g := newFixture(t, api.RoleGlobal)
	g.b.SetInsights(
		insights.Conn{Name: "zone-2", Online: false, Sessions: 2, LastError: "send timeout", Types: map[string]insights.TypeState{}},
		insights.Conn{Name: "zone-1", Online: true, ConnectedSince: since, Sessions: 1,
			Types: map[string]insights.TypeState{"MeshTimeout": {Type: "MeshTimeout", ResponsesSent: 3, ResponsesACKed: 2, ResponsesNACKed: 1, LastNACKError: "bad"}}},
	)
	status, raw := g.do("GET", "/api/v1/zones", nil)
	require.Equal(t, 200, status)
	zs := decode[api.ZonesResponse](t, raw).Zones
	require.Len(t, zs, 2)
	assert.Equal(t, "zone-1", zs[0].Name, "sorted by name")
	assert.True(t, zs[0].Online)
	assert.Equal(t, since, zs[0].ConnectedSince)
	assert.Equal(t, uint64(1), zs[0].Types["MeshTimeout"].ResponsesNACKed)

	status, raw = g.do("GET", "/api/v1/zones/zone-2", nil)
	require.Equal(t, 200, status)
	assert.Equal(t, "send timeout", decode[insights.Conn](t, raw).LastError)
	g.apiError("GET", "/api/v1/zones/zone-9", nil, 404, api.CodeNotFound)
	e := g.apiError("GET", "/api/v1/sync", nil, 404, api.CodeWrongRole)
	assert.Equal(t, "this route is served by zone; this is a global control plane", e.Message)

	z := newFixture(t, api.RoleZone)
	z.apiError("GET", "/api/v1/zones", nil, 404, api.CodeWrongRole)
	z.apiError("GET", "/api/v1/zones/zone-1", nil, 404, api.CodeWrongRole)
	status, raw = z.do("GET", "/api/v1/sync", nil)
	require.Equal(t, 200, status)
	c := decode[insights.Conn](t, raw)
	assert.Equal(t, "global", c.Name)
	assert.False(t, c.Online)

	z.b.SetInsights(insights.Conn{Name: "global", Online: true, ConnectedSince: since, Sessions: 4})
	status, raw = z.do("GET", "/api/v1/sync", nil)
	require.Equal(t, 200, status)
	c = decode[insights.Conn](t, raw)
	assert.True(t, c.Online)
	assert.Equal(t, uint64(4), c.Sessions)
}

func TestPlugins(t *testing.T) {
	f := newFixture(t, api.RoleGlobal)
	status, raw := f.do("GET", "/api/v1/plugins", nil)
	require.Equal(t, 200, status)
	p := decode[api.PluginsInfo](t, raw)
	require.Len(t, p.Plugins, 2)
	assert.Equal(t, "policies", p.Plugins[1].Name)
	assert.Equal(t, []string{"Mesh", "MeshTimeout"}, p.Plugins[1].Types)
	assert.Equal(t, 25, p.Buffer.Capacity)
	assert.Equal(t, 3, p.Buffer.Window)
	assert.Equal(t, "3 types × 3 in flight + 16 headroom = 25", p.Buffer.Formula)
}

func TestToken(t *testing.T) {
	f := newFixture(t, api.RoleGlobal, api.WithToken("s3cret"))
	status, _ := f.do("GET", "/healthz", nil)
	assert.Equal(t, 200, status, "health needs no token")
	status, _ = f.do("GET", "/readyz", nil)
	assert.Equal(t, 200, status, "readiness needs no token")
	e := f.apiError("GET", "/api/v1/types", nil, 401, api.CodeUnauthenticated)
	assert.Contains(t, e.Message, "Bearer")
	f.apiError("GET", "/metrics", nil, 401, api.CodeUnauthenticated)

	for token, want := range map[string]int{"s3cret": 200, "wrong": 401, "s3cret2": 401} {
		req, err := http.NewRequest("GET", f.srv.URL+"/api/v1/types", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := f.srv.Client().Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, want, resp.StatusCode, token)
	}
}

// TestNonCanonicalPathIsAnError: "." and ".." segments and doubled slashes
// get a JSON 400 naming the path, never the mux's 307 to the cleaned path
// (a write to ".../MeshTimeout/.." must not be redirected to the list).
func TestNonCanonicalPathIsAnError(t *testing.T) {
	f := newFixture(t, api.RoleGlobal)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	body := `{"type":"MeshTimeout","mesh":"default","name":"x","spec":{}}`
	for _, tc := range []struct{ method, path string }{
		{"PUT", "/api/v1/resources/MeshTimeout/..?mesh=default"},
		{"DELETE", "/api/v1/resources/MeshTimeout/.?mesh=default"},
		{"GET", "/api/v1/resources/MeshTimeout/./web?mesh=default"},
		{"GET", "/api/v1/../v1/types"},
		{"GET", "/api/v1//types"},
		{"POST", "/api/v1/./apply"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, f.srv.URL+tc.path, strings.NewReader(body))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/json")
			resp, err := noRedirect.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			raw, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(raw))
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			var e api.Error
			require.NoError(t, json.Unmarshal(raw, &e), string(raw))
			assert.Equal(t, api.CodeBadRequest, e.Code)
			assert.Contains(t, e.Message, "not canonical")
		})
	}
	rs, err := f.b.List(context.Background(), api.Filter{})
	require.NoError(t, err)
	assert.Empty(t, rs, "nothing was written")
	// Canonical paths, with and without a trailing slash, still route.
	status, _ := f.do("GET", "/api/v1/types", nil)
	assert.Equal(t, 200, status)
	f.apiError("GET", "/api/v1/types/", nil, 404, api.CodeNotFound)
}

// storeWorded is the test backend with not-found errors worded as the
// engine's stores word them: the operation first ("get KEY: resource not
// found").
type storeWorded struct{ *apitest.Backend }

func (b storeWorded) Get(ctx context.Context, key resource.Key) (*resource.Resource, error) {
	r, err := b.Backend.Get(ctx, key)
	if errors.Is(err, resource.ErrNotFound) {
		return nil, fmt.Errorf("get %s: %w", key, resource.ErrNotFound)
	}
	return r, err
}

func (b storeWorded) Update(ctx context.Context, r *resource.Resource) (*resource.Resource, error) {
	out, err := b.Backend.Update(ctx, r)
	switch {
	case errors.Is(err, resource.ErrNotFound):
		return nil, fmt.Errorf("update %s: %w", r.Key(), resource.ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("update %s: %w", r.Key(), err)
	}
	return out, err
}

func (b storeWorded) Delete(ctx context.Context, key resource.Key, version string) error {
	err := b.Backend.Delete(ctx, key, version)
	switch {
	case errors.Is(err, resource.ErrNotFound):
		return fmt.Errorf("delete %s: %w", key, resource.ErrNotFound)
	case err != nil:
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return err
}

// wordedFixture serves a backend worded like the stores (storeWorded) that
// holds mesh "default".
func wordedFixture(t *testing.T) *fixture {
	t.Helper()
	b := apitest.NewBackend(api.RoleGlobal)
	srv := httptest.NewServer(api.NewHandler(storeWorded{b}, hclog.NewNullLogger()))
	t.Cleanup(srv.Close)
	f := &fixture{t: t, b: b, srv: srv}
	f.b.Put(&resource.Resource{Type: "Mesh", Name: "default", Spec: json.RawMessage(`{}`)})
	return f
}

// A missing resource's message names it and says it is not found, without
// the backend's operation word: a client already knows what it asked, and
// the CLI puts its own verb in front ("get: get MeshTimeout ..." otherwise).
func TestNotFoundMessageNamesTheResourceOnly(t *testing.T) {
	f := wordedFixture(t)
	const want = "MeshTimeout default/x: resource not found"

	e := f.apiError("GET", "/api/v1/resources/MeshTimeout/x?mesh=default", nil, 404, api.CodeNotFound)
	assert.Equal(t, want, e.Message)
	e = f.apiError("DELETE", "/api/v1/resources/MeshTimeout/x?mesh=default", nil, 404, api.CodeNotFound)
	assert.Equal(t, want, e.Message)
	stale := meshTimeout("default", "x", "1s")
	stale.Version = "1"
	e = f.apiError("PUT", "/api/v1/resources/MeshTimeout/x?mesh=default", stale, 404, api.CodeNotFound)
	assert.Equal(t, want, e.Message)
	e = f.apiError("POST", "/api/v1/apply", api.BatchRequest{Resources: []*resource.Resource{stale}}, 404, api.CodeNotFound)
	assert.Equal(t, want, e.Message)
}

// A version conflict's message is the resource's own ("KEY: expected
// version …, stored version …"), without the backend's operation and its
// second copy of the key.
func TestConflictMessageNamesTheResourceOnce(t *testing.T) {
	f := wordedFixture(t)
	cur := f.b.Put(meshTimeout("default", "x", "1s"))
	want := (&resource.VersionConflict{Key: cur.Key(), Expected: "stale-1", Stored: cur.Version}).Error()

	stale := meshTimeout("default", "x", "2s")
	stale.Version = "stale-1"
	e := f.apiError("PUT", "/api/v1/resources/MeshTimeout/x?mesh=default", stale, 409, api.CodeConflict)
	assert.Equal(t, want, e.Message)
	e = f.apiError("DELETE", "/api/v1/resources/MeshTimeout/x?mesh=default&version=stale-1", nil, 409, api.CodeConflict)
	assert.Equal(t, want, e.Message)
}
