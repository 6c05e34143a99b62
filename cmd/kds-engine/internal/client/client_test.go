package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNonJSONErrorBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream gone", http.StatusBadGateway)
	}))
	defer srv.Close()
	c, err := New(srv.URL, "", nil)
	require.NoError(t, err)
	_, err = c.Types(context.Background())
	var ae *APIError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, http.StatusBadGateway, ae.Status)
	assert.Equal(t, "http_502", ae.Code)
	assert.Equal(t, "GET /api/v1/types: HTTP 502: upstream gone", ae.Message)
}

func TestRequestShape(t *testing.T) {
	var got *http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		_, _ = w.Write([]byte(`{"items":[{"type":"MeshTimeout","mesh":"m 1","name":"a/b"}]}`))
	}))
	defer srv.Close()
	c, err := New(srv.URL+"/", "tok", nil)
	require.NoError(t, err)
	items, err := c.List(context.Background(), "MeshTimeout", "m 1", "", []string{"team=web", "env=prod"})
	require.NoError(t, err)
	require.Len(t, items, 1)
	assert.Equal(t, "MeshTimeout m 1/a/b", items[0].Key())
	assert.Equal(t, "/api/v1/resources/MeshTimeout", got.URL.Path)
	assert.Equal(t, "m 1", got.URL.Query().Get("mesh"))
	assert.Equal(t, []string{"team=web", "env=prod"}, got.URL.Query()["label"])
	assert.Equal(t, "Bearer tok", got.Header.Get("Authorization"))
}

func TestUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c, err := New(url, "", nil)
	require.NoError(t, err)
	_, err = c.Plugins(context.Background())
	assert.True(t, errors.Is(err, ErrUnreachable), err)
}

// Writes send Content-Type: application/json, which the admin API requires
// of every request with a body (it refuses form-like cross-site posts).
func TestWritesSendJSONContentType(t *testing.T) {
	var got *http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		_, _ = w.Write([]byte(`{"results":[]}`))
	}))
	defer srv.Close()
	c, err := New(srv.URL, "", nil)
	require.NoError(t, err)
	_, _, err = c.Apply(context.Background(), []Resource{{Type: "Mesh", Name: "default"}})
	require.NoError(t, err)
	assert.Equal(t, http.MethodPost, got.Method)
	assert.Equal(t, "application/json", got.Header.Get("Content-Type"))
}
