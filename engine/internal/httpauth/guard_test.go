package httpauth

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/apitypes"
)

// reached records that a request got past the guard, and reads its body.
type reached struct {
	n       int
	bodyErr error
}

func (h *reached) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.n++
	_, h.bodyErr = io.Copy(io.Discard, r.Body)
	if h.bodyErr != nil {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		return
	}
	w.WriteHeader(http.StatusOK)
}

var rules = RequestRules{BoundAddr: "127.0.0.1:5681", AllowedHosts: []string{"kds.example.com", "Admin.Internal:8443"}, MaxBodyBytes: 1 << 10}

// guarded sends r through Guard(rules) and returns the response and whether
// the request reached the handler.
func guarded(t *testing.T, rules RequestRules, r *http.Request) (*httptest.ResponseRecorder, bool) {
	t.Helper()
	next := &reached{}
	rec := httptest.NewRecorder()
	Guard(rules, next).ServeHTTP(rec, r)
	return rec, next.n > 0
}

func request(method, host, body string, header ...string) *http.Request {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, "http://"+host+"/api/v1/apply", rd)
	r.Host = host
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	return r
}

func refusal(t *testing.T, rec *httptest.ResponseRecorder, status int, code string) apitypes.Error {
	t.Helper()
	require.Equal(t, status, rec.Code, rec.Body.String())
	assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var e apitypes.Error
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &e), rec.Body.String())
	assert.Equal(t, code, e.Code)
	return e
}

const applyBody = `{"resources":[{"type":"Mesh","name":"pwned","spec":{}}]}`

// The attack as found: a web page in a browser on global's host posts a
// "simple" cross-site request (text/plain, so no CORS preflight) through a
// name it rebound to 127.0.0.1. Each of three rules refuses it on its own.
func TestGuardRefusesTheBrowserApplyAttack(t *testing.T) {
	rec, ok := guarded(t, rules, request("POST", "attacker.example:5681", applyBody,
		"Origin", "http://attacker.example", "Content-Type", "text/plain"))
	assert.False(t, ok)
	refusal(t, rec, http.StatusForbidden, apitypes.CodeHostNotAllowed)

	// Reached through 127.0.0.1 itself (no rebinding), the page is cross-origin.
	rec, ok = guarded(t, rules, request("POST", "127.0.0.1:5681", applyBody,
		"Origin", "http://attacker.example", "Content-Type", "text/plain"))
	assert.False(t, ok)
	refusal(t, rec, http.StatusForbidden, apitypes.CodeCrossOrigin)

	// And a form post without Origin still is not JSON.
	rec, ok = guarded(t, rules, request("POST", "127.0.0.1:5681", applyBody, "Content-Type", "text/plain"))
	assert.False(t, ok)
	refusal(t, rec, http.StatusUnsupportedMediaType, apitypes.CodeUnsupportedMediaType)

	// The CLI's request passes.
	rec, ok = guarded(t, rules, request("POST", "127.0.0.1:5681", applyBody, "Content-Type", "application/json"))
	assert.True(t, ok)
	assert.Equal(t, http.StatusOK, rec.Code)
}

// DNS rebinding: the Host header of a page that rebound its name to the
// API's address names that page. Reads are refused as well as writes.
func TestGuardRefusesForeignHostHeader(t *testing.T) {
	for _, host := range []string{"attacker.example:5681", "attacker.example", "localhost.attacker.example:5681", "127.0.0.1.nip.io:5681", "kds.example.com.evil:5681", "2130706433:5681"} {
		for _, method := range []string{"GET", "POST", "DELETE"} {
			rec, ok := guarded(t, rules, request(method, host, "", "Content-Type", "application/json"))
			assert.False(t, ok, "%s %s", method, host)
			e := refusal(t, rec, http.StatusForbidden, apitypes.CodeHostNotAllowed)
			assert.Contains(t, e.Message, "--api-allowed-hosts")
			assert.Contains(t, e.Message, "rule: allowed hosts")
		}
	}
	for _, host := range []string{
		"127.0.0.1:5681", "127.0.0.1", "localhost:5681", "LOCALHOST:5681", "localhost.:5681",
		"localhost:18080", // a port forward
		"[::1]:5681", "10.1.2.3:5681", "kds.example.com", "KDS.example.com:443", "admin.internal:5681", "",
	} {
		rec, ok := guarded(t, rules, request("GET", host, ""))
		assert.True(t, ok, "host %q: %s", host, rec.Body.String())
	}
	// A bound host name is accepted without listing it.
	named := RequestRules{BoundAddr: "global.example.com:5681"}
	_, ok := guarded(t, named, request("GET", "global.example.com:5681", ""))
	assert.True(t, ok)
	_, ok = guarded(t, named, request("GET", "other.example.com:5681", ""))
	assert.False(t, ok)
}

// A browser request from another origin is refused whatever its method.
func TestGuardRefusesCrossOriginRequests(t *testing.T) {
	for _, tc := range []struct{ name, method string }{{"read", "GET"}, {"write", "POST"}, {"delete", "DELETE"}} {
		for _, hdr := range [][]string{
			{"Origin", "http://attacker.example"},
			{"Origin", "null"},
			{"Origin", "http://localhost:3000"}, // another local web app
			{"Sec-Fetch-Site", "cross-site"},
			{"Sec-Fetch-Site", "same-site"},
		} {
			rec, ok := guarded(t, rules, request(tc.method, "localhost:5681", "{}", append(hdr, "Content-Type", "application/json")...))
			assert.False(t, ok, "%s %v", tc.name, hdr)
			e := refusal(t, rec, http.StatusForbidden, apitypes.CodeCrossOrigin)
			assert.Contains(t, e.Message, "rule: same origin")
		}
	}
	for _, hdr := range [][]string{
		{"Origin", "http://localhost:5681"},
		{"Sec-Fetch-Site", "same-origin"},
		{"Sec-Fetch-Site", "none"}, // typed into the address bar
	} {
		_, ok := guarded(t, rules, request("POST", "localhost:5681", "{}", append(hdr, "Content-Type", "application/json")...))
		assert.True(t, ok, "%v", hdr)
	}
}

// Writes must be JSON: a cross-site HTML form can send text/plain,
// multipart/form-data and application/x-www-form-urlencoded, never JSON.
func TestGuardRefusesWritesThatAreNotJSON(t *testing.T) {
	for _, method := range []string{"POST", "PUT", "PATCH"} {
		for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx", "text/json"} {
			rec, ok := guarded(t, rules, request(method, "127.0.0.1:5681", "{}", "Content-Type", ct))
			assert.False(t, ok, "%s %q", method, ct)
			e := refusal(t, rec, http.StatusUnsupportedMediaType, apitypes.CodeUnsupportedMediaType)
			assert.Contains(t, e.Message, "Content-Type: application/json")
		}
		_, ok := guarded(t, rules, request(method, "127.0.0.1:5681", "{}", "Content-Type", "application/json; charset=utf-8"))
		assert.True(t, ok)
	}
	for _, method := range []string{"GET", "DELETE", "HEAD"} {
		_, ok := guarded(t, rules, request(method, "127.0.0.1:5681", ""))
		assert.True(t, ok, "%s needs no body", method)
	}
}

// A body over the limit is refused with 413 and the limit before it is
// read when its length is declared, and cannot be read past the limit when
// it is not.
func TestGuardRefusesBodyOverLimit(t *testing.T) {
	big := strings.Repeat(" ", 4<<10)
	rec, ok := guarded(t, rules, request("POST", "127.0.0.1:5681", big, "Content-Type", "application/json"))
	assert.False(t, ok, "refused before the handler")
	e := refusal(t, rec, http.StatusRequestEntityTooLarge, apitypes.CodeTooLarge)
	assert.Contains(t, e.Message, "over the limit of 1024 bytes")

	r := request("POST", "127.0.0.1:5681", big, "Content-Type", "application/json")
	r.ContentLength = -1 // chunked
	next := &reached{}
	Guard(rules, next).ServeHTTP(httptest.NewRecorder(), r)
	var mbe *http.MaxBytesError
	require.True(t, errors.As(next.bodyErr, &mbe), "reading past the limit fails: %v", next.bodyErr)
	assert.EqualValues(t, 1<<10, mbe.Limit)
}

// Health responses close their connection: probes cannot keep one open.
func TestGuardClosesHealthConnections(t *testing.T) {
	for _, p := range PublicPaths() {
		r := httptest.NewRequest("GET", "http://127.0.0.1:5681"+p, nil)
		rec, ok := guarded(t, rules, r)
		assert.True(t, ok)
		assert.Equal(t, "close", rec.Header().Get("Connection"), p)
	}
	rec, _ := guarded(t, rules, request("GET", "127.0.0.1:5681", ""))
	assert.Empty(t, rec.Header().Get("Connection"))
}
