package api

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/kds-engine/kds-engine/engine/apitypes"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// MaxListLimit is the largest page GET /api/v1/resources/{type} serves
// when ?limit= is given.
const MaxListLimit = 1000

// listPage reads limit, continue and q from the query. limit 0 means no
// limit (every match, as before paging existed).
type listPage struct {
	limit int
	after *pageKey
	q     string
}

// pageKey is the position a continue token names: the sort key of the last
// item of the previous page.
type pageKey struct {
	Zone string `json:"z,omitempty"`
	Mesh string `json:"m,omitempty"`
	Name string `json:"n"`
}

func compareKey(a, b pageKey) int {
	return cmp.Or(cmp.Compare(a.Zone, b.Zone), cmp.Compare(a.Mesh, b.Mesh), cmp.Compare(a.Name, b.Name))
}

func readListPage(q url.Values) (listPage, error) {
	var p listPage
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxListLimit {
			return p, badRequest("limit %q: want a number from 1 to %d", s, MaxListLimit)
		}
		p.limit = n
	}
	if s := q.Get("continue"); s != "" {
		raw, err := base64.RawURLEncoding.DecodeString(s)
		var k pageKey
		if err == nil {
			err = json.Unmarshal(raw, &k)
		}
		if err != nil || k.Name == "" {
			return p, badRequest("continue %.40q is not a token this API returned; start again without continue", s)
		}
		p.after = &k
	}
	p.q = strings.ToLower(q.Get("q"))
	return p, nil
}

// apply filters sorted items by q, skips what the continue token passed,
// and cuts the page, returning the token of the next page ("" on the last).
func (p listPage) apply(items []*resource.Resource) ([]*resource.Resource, string) {
	return pageOf(items, func(r *resource.Resource) pageKey { return pageKey{Zone: r.Zone, Mesh: r.Mesh, Name: r.Name} }, p)
}

// pageOf is apply for any item sorted by its pageKey.
func pageOf[T any](items []T, key func(T) pageKey, p listPage) ([]T, string) {
	if p.q != "" {
		items = slices.DeleteFunc(items, func(it T) bool { return !strings.Contains(strings.ToLower(key(it).Name), p.q) })
	}
	if p.after != nil {
		i, found := slices.BinarySearchFunc(items, *p.after, func(it T, k pageKey) int { return compareKey(key(it), k) })
		if found {
			i++
		}
		items = items[i:]
	}
	if p.limit == 0 || len(items) <= p.limit {
		return items, ""
	}
	items = items[:p.limit]
	raw, _ := json.Marshal(key(items[len(items)-1]))
	return items, base64.RawURLEncoding.EncodeToString(raw)
}

// KeyLister is implemented by a Backend that can list keys without
// reading the resources. With it, a list with ?limit= and no label filter
// reads only the keys of the matches, and then the resources of one page:
// the response and the decoding are bounded by the limit.
type KeyLister interface {
	// ListKeys returns the key of every resource matching f (f.Labels is
	// empty), sorted by zone, mesh, name.
	ListKeys(ctx context.Context, f Filter) ([]resource.Key, error)
}

// Revisioner is implemented by a Backend whose resources have a revision
// that changes with every write: GET /api/v1/revision serves it.
type Revisioner interface {
	// Revision returns the revision of the latest change to any resource.
	Revision() uint64
}

// RevisionResponse is the body of GET /api/v1/revision.
type RevisionResponse struct {
	// Revision changes whenever any resource is created, changed or
	// deleted (on this side or received from the peer). Clients poll it to
	// skip reading a list that cannot have changed.
	Revision uint64 `json:"revision"`
}

func (h *handler) revision(w http.ResponseWriter, r *http.Request) {
	rv, ok := h.b.(Revisioner)
	if !ok {
		h.fail(w, r, newError(http.StatusNotFound, CodeNotFound, "this backend has no revision"), "")
		return
	}
	h.writeJSON(w, http.StatusOK, RevisionResponse{Revision: rv.Revision()})
}

// listPageByKeys serves a page from the keys of the matches: the keys are
// filtered and cut as apply does, then only the page's resources are read.
// A resource deleted between the two reads is left out of the page.
func (h *handler) listPageByKeys(ctx context.Context, kl KeyLister, f Filter, p listPage) ([]*resource.Resource, string, error) {
	keys, err := kl.ListKeys(ctx, f)
	if err != nil {
		return nil, "", err
	}
	keyOf := func(k resource.Key) pageKey { return pageKey{Zone: k.Zone, Mesh: k.Mesh, Name: k.Name} }
	if !slices.IsSortedFunc(keys, func(a, b resource.Key) int { return compareKey(keyOf(a), keyOf(b)) }) {
		slices.SortFunc(keys, func(a, b resource.Key) int { return compareKey(keyOf(a), keyOf(b)) })
	}
	page, next := pageOf(keys, keyOf, p)
	out := make([]*resource.Resource, 0, len(page))
	for _, k := range page {
		r, err := h.b.Get(ctx, k)
		if errors.Is(err, resource.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		out = append(out, r)
	}
	return out, next, nil
}

// HoldersBackend is implemented by a global Backend that can say which
// zones hold which version of a resource it serves. Without it,
// GET /api/v1/holders/... answers 404.
type HoldersBackend interface {
	// Holders returns one entry per zone that ever connected, sorted by
	// zone name, for the resource key (which must exist: an error
	// wrapping resource.ErrNotFound otherwise) and its stored version.
	Holders(ctx context.Context, key resource.Key) (version string, zones []apitypes.Holding, err error)
}

// HoldersResponse is the body of GET /api/v1/holders/{type}/{name}.
type HoldersResponse = apitypes.HoldersResponse

func (h *handler) holders(w http.ResponseWriter, r *http.Request) {
	if err := h.requireRole(RoleGlobal); err != nil {
		h.fail(w, r, err, "")
		return
	}
	key, td, err := h.singleKey(r)
	if err != nil {
		h.fail(w, r, err, key.Type)
		return
	}
	hb, ok := h.b.(HoldersBackend)
	if td.Direction != resource.GlobalToZone || !ok {
		h.fail(w, r, newError(http.StatusNotFound, CodeNotFound,
			"%s resources are not sent to zones from here; holders exist only for GlobalToZone types on global", td.Name), key.Type)
		return
	}
	version, zones, err := hb.Holders(r.Context(), key)
	if err != nil {
		h.fail(w, r, resourceError(key, err), key.Type)
		return
	}
	if zones == nil {
		zones = []apitypes.Holding{}
	}
	h.writeJSON(w, http.StatusOK, HoldersResponse{Type: key.Type, Mesh: key.Mesh, Name: key.Name, Version: version, Zones: zones})
}
