package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/kds-engine/kds-engine/engine/apitest"
	"github.com/kds-engine/kds-engine/engine/internal/api"
)

func writeSeeds() []string {
	return []string{
		`{"resources": [{"type": "Mesh", "name": "default", "spec": {}}]}`,
		`{"resources": [{"type": "MeshTimeout", "mesh": "default", "name": "t", "spec": {"connectTimeout": "5s"}}]}`,
		`{"resources": [{"type": "Dataplane", "mesh": "default", "name": "d", "zone": "zone-1", "spec": {"address": "1.2.3.4"}}]}`,
		`{"resources": [{"type": "Mesh", "name": "a"}, {"type": "Mesh", "name": "a"}]}`,
		`{"resources": [{"type": "Nope", "name": "a"}]}`,
		`{"resources": [{"type": "MeshTimeout", "name": "no-mesh"}]}`,
		`{"resources": [null]}`,
		`{"resources": []}`,
		`{"resources": [{"type": "Mesh", "name": "a"}]} trailing`,
		`{"resources": [{"type": "Mesh", "name": "a", "extra": 1}]}`,
		`{"resources": [{"type": "Mesh", "name": "a", "spec": "not an object", "labels": {"": ""}}]}`,
		`{"type": "MeshTimeout", "mesh": "default", "name": "t", "spec": {}}`,
		`{"version": "1", "spec": {"connectTimeout": 5}}`,
		`[]`,
		``,
	}
}

// FuzzAPIWrite feeds arbitrary bodies to the write endpoints that decode
// resources (apply, validate, PUT). Whatever the body, the handler does not
// panic, answers with a documented client error or success (never a 5xx),
// and its body is JSON.
func FuzzAPIWrite(f *testing.F) {
	for _, s := range writeSeeds() {
		f.Add([]byte(s), uint8(0))
	}
	f.Fuzz(func(t *testing.T, body []byte, route uint8) {
		h := api.NewHandler(apitest.NewBackend("global"), hclog.NewNullLogger())
		routes := []struct{ method, path string }{
			{http.MethodPost, "/api/v1/apply"},
			{http.MethodPost, "/api/v1/validate"},
			{http.MethodPut, "/api/v1/resources/MeshTimeout/t?mesh=default"},
			{http.MethodPut, "/api/v1/resources/Mesh/default"},
		}
		rt := routes[int(route)%len(routes)]
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(rt.method, rt.path, bytes.NewReader(body)))
		switch rec.Code {
		case http.StatusOK, http.StatusCreated, http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound,
			http.StatusConflict, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		default:
			t.Fatalf("%s %s: status %d: %s", rt.method, rt.path, rec.Code, rec.Body.String())
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %s: body is not JSON: %q", rt.method, rt.path, rec.Body.String())
		}
	})
}
