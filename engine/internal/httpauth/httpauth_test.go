package httpauth

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testToken = "0123456789abcdef0123456789abcdef"

func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok "+r.URL.Path)
	})
}

func do(t *testing.T, srv *httptest.Server, method, path string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(body)
}

func assertUnauthorized(t *testing.T, resp *http.Response, body, fragment string) {
	t.Helper()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	assert.Equal(t, `Bearer realm="kds-engine"`, resp.Header.Get("WWW-Authenticate"))
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &e), body)
	assert.Equal(t, "unauthenticated", e.Code)
	assert.Contains(t, e.Message, fragment)
	assert.NotContains(t, body, "ok ", "the protected handler must not run")
}

func TestMiddlewareRequiresToken(t *testing.T) {
	srv := httptest.NewServer(Middleware(testToken, okHandler()))
	defer srv.Close()

	resp, body := do(t, srv, http.MethodGet, "/api/v1/resources", "Authorization", "Bearer "+testToken)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "ok /api/v1/resources", body)

	resp, body = do(t, srv, http.MethodDelete, "/api/v1/resources/x", "Authorization", "bearer "+testToken)
	assert.Equal(t, http.StatusOK, resp.StatusCode, "scheme is case-insensitive")
	assert.Equal(t, "ok /api/v1/resources/x", body)

	resp, body = do(t, srv, http.MethodGet, "/api/v1/resources")
	assertUnauthorized(t, resp, body, "missing Authorization header")

	resp, body = do(t, srv, http.MethodGet, "/api/v1/resources", "Authorization", "Bearer wrong")
	assertUnauthorized(t, resp, body, "invalid token")

	resp, body = do(t, srv, http.MethodGet, "/api/v1/resources", "Authorization", "Bearer "+testToken+"x")
	assertUnauthorized(t, resp, body, "invalid token")

	resp, body = do(t, srv, http.MethodGet, "/api/v1/resources", "Authorization", "Bearer "+testToken[:len(testToken)-1])
	assertUnauthorized(t, resp, body, "invalid token")

	resp, body = do(t, srv, http.MethodGet, "/api/v1/resources", "Authorization", "Basic "+testToken)
	assertUnauthorized(t, resp, body, "Bearer <token>")

	resp, body = do(t, srv, http.MethodGet, "/api/v1/resources", "Authorization", "Bearer "+testToken, "Authorization", "Bearer "+testToken)
	assertUnauthorized(t, resp, body, "more than one")

	resp, body = do(t, srv, http.MethodGet, "/metrics")
	assertUnauthorized(t, resp, body, "missing Authorization header")
}

func TestMiddlewareLeavesHealthOpen(t *testing.T) {
	srv := httptest.NewServer(Middleware(testToken, okHandler()))
	defer srv.Close()
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, body := do(t, srv, http.MethodGet, p)
		assert.Equal(t, http.StatusOK, resp.StatusCode, p)
		assert.Equal(t, "ok "+p, body)
	}
	// Only the exact paths are open.
	for _, p := range []string{"/healthz/", "/healthz/../api/v1/resources", "/readyzx", "/api/healthz"} {
		resp, body := do(t, srv, http.MethodGet, p)
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%s: %s", p, body)
	}
}

func TestMiddlewareWithoutTokenFailsClosed(t *testing.T) {
	srv := httptest.NewServer(Middleware("", okHandler()))
	defer srv.Close()
	resp, body := do(t, srv, http.MethodGet, "/api/v1/resources", "Authorization", "Bearer ")
	assertUnauthorized(t, resp, body, "--api-token-file")
	resp, _ = do(t, srv, http.MethodGet, "/healthz")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}

func writeTokenFile(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api-token")
	require.NoError(t, os.WriteFile(path, []byte(content), mode))
	require.NoError(t, os.Chmod(path, mode))
	return path
}

func TestLoadTokenFile(t *testing.T) {
	tok, err := LoadTokenFile(writeTokenFile(t, "  "+testToken+"\n", 0o600))
	require.NoError(t, err)
	assert.Equal(t, testToken, tok)

	open := writeTokenFile(t, testToken, 0o640)
	_, err = LoadTokenFile(open)
	require.Error(t, err)
	assert.Contains(t, err.Error(), open)
	assert.Contains(t, err.Error(), "0640")
	assert.Contains(t, err.Error(), "chmod 600 "+open)

	_, err = LoadTokenFile(writeTokenFile(t, "\n\n", 0o600))
	assert.ErrorContains(t, err, "is empty")

	_, err = LoadTokenFile(writeTokenFile(t, "short", 0o600))
	assert.ErrorContains(t, err, "at least 16")

	_, err = LoadTokenFile(writeTokenFile(t, testToken+" "+testToken, 0o600))
	assert.ErrorContains(t, err, "more than one word")

	_, err = LoadTokenFile(writeTokenFile(t, strings.Repeat("a", MaxTokenFileSize+1), 0o600))
	assert.ErrorContains(t, err, "limit")

	_, err = LoadTokenFile(filepath.Join(t.TempDir(), "absent"))
	assert.ErrorIs(t, err, os.ErrNotExist)

	_, err = LoadTokenFile(t.TempDir())
	assert.ErrorContains(t, err, "not a regular file")
}

func TestGenerateToken(t *testing.T) {
	a, err := GenerateToken()
	require.NoError(t, err)
	b, err := GenerateToken()
	require.NoError(t, err)
	assert.Len(t, a, 64)
	assert.NotEqual(t, a, b)
	path := writeTokenFile(t, a, 0o600)
	got, err := LoadTokenFile(path)
	require.NoError(t, err)
	assert.Equal(t, a, got)
}

func TestCheckBind(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:5681", "localhost:5681", "LOCALHOST:1", "[::1]:5681", "127.1.2.3:80"} {
		assert.NoError(t, CheckBind(addr, false, ""), addr)
	}

	cases := []struct {
		addr        string
		tls         bool
		token       string
		wantMissing []string
		notMissing  []string
	}{
		{":5681", false, "", []string{"--api-tls-cert-file", "--api-tls-key-file", "--api-token-file"}, nil},
		{"0.0.0.0:5681", true, "", []string{"--api-token-file"}, []string{"--api-tls-cert-file"}},
		{"[::]:5681", false, testToken, []string{"--api-tls-cert-file", "--api-tls-key-file"}, []string{"--api-token-file"}},
		{"10.0.0.5:5681", false, "", []string{"TLS", "a token"}, nil},
		{"api.example.com:5681", true, "", []string{"--api-token-file"}, nil},
	}
	for _, c := range cases {
		err := CheckBind(c.addr, c.tls, c.token)
		require.ErrorIs(t, err, ErrInsecureBind, c.addr)
		assert.Contains(t, err.Error(), c.addr)
		for _, w := range c.wantMissing {
			assert.Contains(t, err.Error(), w, c.addr)
		}
		for _, n := range c.notMissing {
			assert.NotContains(t, err.Error(), n, c.addr)
		}
	}

	assert.NoError(t, CheckBind("0.0.0.0:5681", true, testToken))
	assert.NoError(t, CheckBind("api.example.com:5681", true, testToken))

	err := CheckBind("no-port", true, testToken)
	require.Error(t, err)
	assert.NotErrorIs(t, err, ErrInsecureBind)
}

func TestPublicPathsIsACopy(t *testing.T) {
	p := PublicPaths()
	assert.Equal(t, []string{"/healthz", "/readyz"}, p)
	p[0] = "/api/v1/resources"
	assert.Equal(t, []string{"/healthz", "/readyz"}, PublicPaths())
}

// The web UI's assets load without a token (GET and HEAD only, clean paths
// only); the API the page reads still needs it.
func TestMiddlewareServesUIAssetsWithoutToken(t *testing.T) {
	srv := httptest.NewServer(Middleware(testToken, okHandler()))
	defer srv.Close()
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/ui/", http.StatusOK},
		{http.MethodGet, "/ui", http.StatusOK},
		{http.MethodHead, "/ui/app.js", http.StatusOK},
		{http.MethodPost, "/ui/", http.StatusUnauthorized},
		{http.MethodGet, "/ui/../api/v1/zones", http.StatusUnauthorized},
		{http.MethodGet, "/uix", http.StatusUnauthorized},
		{http.MethodGet, "/api/v1/zones", http.StatusUnauthorized},
	} {
		req, err := http.NewRequest(tc.method, srv.URL, nil)
		require.NoError(t, err)
		req.URL.Path = tc.path
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, tc.want, resp.StatusCode, "%s %s", tc.method, tc.path)
	}
}
