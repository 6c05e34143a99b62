package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/apitest"
	"github.com/kds-engine/kds-engine/engine/apitypes"
	"github.com/kds-engine/kds-engine/engine/internal/api"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/ui"
)

// Pages of ?limit= in sort order, chained by ?continue=, cover every item
// exactly once; q filters by a part of the name, case-insensitively.
func TestListPagesWithLimitAndContinue(t *testing.T) {
	f := newFixture(t, api.RoleGlobal)
	for i := range 23 {
		f.b.Put(meshTimeout([]string{"default", "other"}[i%2], fmt.Sprintf("t-%02d", i), "1s"))
	}
	var got []string
	path := "/api/v1/resources/MeshTimeout?limit=5"
	pages := 0
	for {
		status, raw := f.do("GET", path, nil)
		require.Equal(t, 200, status, string(raw))
		page := decode[api.ListResponse](t, raw)
		pages++
		assert.LessOrEqual(t, len(page.Items), 5)
		for _, r := range page.Items {
			got = append(got, r.Mesh+"/"+r.Name)
		}
		if page.Continue == "" {
			break
		}
		path = "/api/v1/resources/MeshTimeout?limit=5&continue=" + url.QueryEscape(page.Continue)
	}
	assert.Equal(t, 5, pages)
	require.Len(t, got, 23)
	for i := 1; i < len(got); i++ {
		assert.Less(t, got[i-1], got[i], "sorted, no repeats")
	}

	status, raw := f.do("GET", "/api/v1/resources/MeshTimeout?q=T-1&mesh=other", nil)
	require.Equal(t, 200, status)
	var names []string
	for _, r := range decode[api.ListResponse](t, raw).Items {
		names = append(names, r.Name)
	}
	assert.Equal(t, []string{"t-11", "t-13", "t-15", "t-17", "t-19"}, names)

	// Without limit the whole list, and no token.
	status, raw = f.do("GET", "/api/v1/resources/MeshTimeout", nil)
	require.Equal(t, 200, status)
	assert.Len(t, decode[api.ListResponse](t, raw).Items, 23)
	assert.NotContains(t, string(raw), `"continue"`)

	for _, bad := range []string{"limit=0", "limit=1001", "limit=x", "continue=!!", "continue=e30"} {
		e := f.apiError("GET", "/api/v1/resources/MeshTimeout?"+bad, nil, 400, api.CodeBadRequest)
		assert.NotEmpty(t, e.Message, bad)
	}
}

// holdersBackend adds HoldersBackend to the fake.
type holdersBackend struct {
	*apitest.Backend
	got resource.Key
}

func (b *holdersBackend) Holders(ctx context.Context, key resource.Key) (string, []apitypes.Holding, error) {
	b.got = key
	r, err := b.Get(ctx, key)
	if err != nil {
		return "", nil, err
	}
	return r.Version, []apitypes.Holding{
		{Zone: "zone-1", Online: true, Holds: true, Version: r.Version},
		{Zone: "zone-2", Online: true, RejectedVersion: r.Version, RejectedErrors: []string{"spec.x: refused"}},
		{Zone: "zone-3"},
	}, nil
}

func TestHoldersRoute(t *testing.T) {
	hb := &holdersBackend{Backend: apitest.NewBackend(api.RoleGlobal)}
	stored := hb.Put(meshTimeout("default", "web", "1s"))
	srv := httptest.NewServer(api.NewHandler(hb, hclog.NewNullLogger()))
	t.Cleanup(srv.Close)
	f := &fixture{t: t, b: hb.Backend, srv: srv}

	status, raw := f.do("GET", "/api/v1/holders/MeshTimeout/web?mesh=default", nil)
	require.Equal(t, 200, status, string(raw))
	got := decode[api.HoldersResponse](t, raw)
	assert.Equal(t, resource.Key{Type: "MeshTimeout", Mesh: "default", Name: "web"}, hb.got)
	assert.Equal(t, stored.Version, got.Version)
	require.Len(t, got.Zones, 3)
	assert.Equal(t, []string{"spec.x: refused"}, got.Zones[1].RejectedErrors)

	f.apiError("GET", "/api/v1/holders/MeshTimeout/nope?mesh=default", nil, 404, api.CodeNotFound)
	f.apiError("GET", "/api/v1/holders/MeshTimeout/web", nil, 400, api.CodeBadRequest)
	e := f.apiError("GET", "/api/v1/holders/Dataplane/web-1?mesh=default&zone=zone-1", nil, 404, api.CodeNotFound)
	assert.Contains(t, e.Message, "GlobalToZone")

	// Without the optional interface, or on a zone: 404.
	plain := newFixture(t, api.RoleGlobal)
	plain.b.Put(meshTimeout("default", "web", "1s"))
	plain.apiError("GET", "/api/v1/holders/MeshTimeout/web?mesh=default", nil, 404, api.CodeNotFound)
	newFixture(t, api.RoleZone).apiError("GET", "/api/v1/holders/MeshTimeout/web?mesh=default", nil, 404, api.CodeWrongRole)
}

// The UI's assets load without the token the API requires, with a strict
// Content-Security-Policy; any other path under /ui/ is the page itself.
func TestUIIsServedWithoutTokenAndWithCSP(t *testing.T) {
	f := newFixture(t, api.RoleGlobal, api.WithToken("s3cret-s3cret-s3cret"))
	for _, p := range []string{"/ui/", "/ui/app.js", "/ui/style.css", "/ui/zones"} {
		resp, err := f.srv.Client().Get(f.srv.URL + p)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, p)
		assert.Equal(t, ui.ContentSecurityPolicy, resp.Header.Get("Content-Security-Policy"), p)
		assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"), p)
		switch {
		case strings.HasSuffix(p, ".js"):
			assert.Contains(t, resp.Header.Get("Content-Type"), "javascript")
		case strings.HasSuffix(p, ".css"):
			assert.Contains(t, resp.Header.Get("Content-Type"), "text/css")
		default:
			assert.Contains(t, resp.Header.Get("Content-Type"), "text/html")
		}
	}
	assert.NotContains(t, ui.ContentSecurityPolicy, "unsafe-inline")
	f.apiError("GET", "/api/v1/zones", nil, 401, api.CodeUnauthenticated)
	f.apiError("POST", "/ui/", "{}", 401, api.CodeUnauthenticated)
}

// keysBackend lists keys without resources and counts what it reads.
type keysBackend struct {
	*apitest.Backend
	gets, lists int
	rev         uint64
}

func (b *keysBackend) ListKeys(ctx context.Context, f api.Filter) ([]resource.Key, error) {
	rs, err := b.Backend.List(ctx, f)
	keys := make([]resource.Key, len(rs))
	for i, r := range rs {
		keys[i] = r.Key()
	}
	return keys, err
}

func (b *keysBackend) Get(ctx context.Context, k resource.Key) (*resource.Resource, error) {
	b.gets++
	return b.Backend.Get(ctx, k)
}

func (b *keysBackend) List(ctx context.Context, f api.Filter) ([]*resource.Resource, error) {
	b.lists++
	return b.Backend.List(ctx, f)
}

func (b *keysBackend) Revision() uint64 { return b.rev }

// With a KeyLister, a page reads the keys and then only its own resources,
// and returns what the full list would; GET /api/v1/revision serves the
// backend's revision.
func TestListPageReadsOnlyItsResources(t *testing.T) {
	kb := &keysBackend{Backend: apitest.NewBackend(api.RoleGlobal), rev: 42}
	full := newFixture(t, api.RoleGlobal)
	for i := range 40 {
		r := meshTimeout([]string{"default", "other"}[i%3%2], fmt.Sprintf("t-%02d", i), "1s")
		kb.Put(r)
		full.b.Put(r)
	}
	srv := httptest.NewServer(api.NewHandler(kb, hclog.NewNullLogger()))
	t.Cleanup(srv.Close)
	f := &fixture{t: t, b: kb.Backend, srv: srv}
	for _, q := range []string{"limit=7", "limit=7&q=1", "limit=7&mesh=other", "limit=50"} {
		path := "/api/v1/resources/MeshTimeout?" + q
		for {
			kb.gets = 0
			status, raw := f.do("GET", path, nil)
			require.Equal(t, 200, status, string(raw))
			_, want := full.do("GET", path, nil)
			assert.JSONEq(t, string(want), string(raw), path)
			page := decode[api.ListResponse](t, raw)
			assert.Equal(t, len(page.Items), kb.gets, "%s: one read per item of the page", path)
			if page.Continue == "" {
				break
			}
			path = "/api/v1/resources/MeshTimeout?" + q + "&continue=" + url.QueryEscape(page.Continue)
		}
	}
	assert.Zero(t, kb.lists, "no full list read")

	// A label filter needs the labels: the full list.
	status, _ := f.do("GET", "/api/v1/resources/MeshTimeout?limit=5&label=team=web", nil)
	assert.Equal(t, 200, status)
	assert.Equal(t, 1, kb.lists)

	status, raw := f.do("GET", "/api/v1/revision", nil)
	require.Equal(t, 200, status)
	assert.JSONEq(t, `{"revision":42}`, string(raw))
	full.apiError("GET", "/api/v1/revision", nil, 404, api.CodeNotFound)
}
