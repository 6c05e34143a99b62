package httpauth

import (
	"net/http"
	"net/http/httptest"
	pathpkg "path"
	"strings"
	"testing"
)

// FuzzMiddleware checks that the middleware never panics and lets a
// protected request through only with exactly the configured token.
func FuzzMiddleware(f *testing.F) {
	for _, seed := range []struct{ path, auth string }{
		{"/api/v1/resources", "Bearer " + testToken},
		{"/api/v1/resources", "bearer " + testToken},
		{"/api/v1/resources", "Bearer " + testToken + "x"},
		{"/api/v1/resources", "Basic " + testToken},
		{"/api/v1/resources", ""},
		{"/healthz", ""},
		{"/healthz/../metrics", "Bearer"},
		{"/ui/", ""},
		{"/ui/app.js", ""},
		{"/ui/../api/v1/zones", ""},
	} {
		f.Add(seed.path, seed.auth)
	}
	f.Fuzz(func(t *testing.T, path, auth string) {
		reached := false
		h := Middleware(testToken, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true }))
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.URL.Path = path
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		public := path == "/healthz" || path == "/readyz" || uiAsset(path)
		valid := len(auth) >= len(bearerPrefix) && strings.EqualFold(auth[:len(bearerPrefix)], bearerPrefix) &&
			strings.TrimSpace(auth[len(bearerPrefix):]) == testToken
		switch {
		case reached && !public && !valid:
			t.Fatalf("path %q with Authorization %q reached the handler", path, auth)
		case !reached && (public || valid):
			t.Fatalf("path %q with Authorization %q was refused (%d)", path, auth, rec.Code)
		case !reached && rec.Code != http.StatusUnauthorized:
			t.Fatalf("refusal with status %d", rec.Code)
		}
	})
}

// uiAsset reports whether p is a clean path of the web UI.
func uiAsset(p string) bool {
	if p == "/ui" {
		return true
	}
	if !strings.HasPrefix(p, "/ui/") {
		return false
	}
	c := pathpkg.Clean(p)
	if strings.HasSuffix(p, "/") {
		c += "/"
	}
	return c == p
}
