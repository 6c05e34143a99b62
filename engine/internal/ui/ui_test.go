package ui

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func get(t *testing.T, method, path string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	resp := rec.Result()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(body)
}

// Every asset is served with the security headers; a path that is not an
// asset is the page, so a reload of any view works.
func TestHandlerServesAssetsWithHeaders(t *testing.T) {
	for path, want := range map[string]string{
		"/ui/":           `<script src="/ui/app.js" defer></script>`,
		"/ui/index.html": `<script src="/ui/app.js" defer></script>`,
		"/ui/zones/x":    `<script src="/ui/app.js" defer></script>`,
		"/ui/app.js":     "sessionStorage",
		"/ui/style.css":  "prefers-color-scheme: dark",
	} {
		resp, body := get(t, http.MethodGet, path)
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
		assert.Contains(t, body, want, path)
		assert.Equal(t, ContentSecurityPolicy, resp.Header.Get("Content-Security-Policy"), path)
		assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"), path)
		assert.Equal(t, "DENY", resp.Header.Get("X-Frame-Options"), path)
	}
	resp, body := get(t, http.MethodHead, "/ui/")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Empty(t, body)
}

// The page has no inline script or style for the policy to allow, and the
// script never puts the token anywhere but the Authorization header.
func TestPageNeedsNoInlineCode(t *testing.T) {
	_, html := get(t, http.MethodGet, "/ui/")
	assert.NotContains(t, html, "<script>")
	assert.NotContains(t, html, "style=")
	assert.NotRegexp(t, ` on[a-z]+=`, html)
	_, js := get(t, http.MethodGet, "/ui/app.js")
	assert.NotContains(t, js, "innerHTML")
	assert.NotContains(t, js, "localStorage")
	assert.NotContains(t, js, "document.cookie")
	assert.Equal(t, 1, strings.Count(js, "headers.Authorization ="), "the token goes into one place")
	assert.NotContains(t, ContentSecurityPolicy, "unsafe")
}
