// Package client is the kds-engine CLI's client of the admin HTTP API
// (docs/api.md). The JSON bodies are the engine's own wire types, from
// package apitypes; resources are a plain copy (Resource), since the
// engine's resource model is internal to it.
//
// A Client is safe for concurrent use.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kds-engine/kds-engine/engine/apitypes"
)

// Resource is a resource as the API reads and writes it.
type Resource struct {
	Type             string            `json:"type"`
	Mesh             string            `json:"mesh,omitempty"`
	Name             string            `json:"name"`
	Labels           map[string]string `json:"labels,omitempty"`
	Spec             json.RawMessage   `json:"spec,omitempty"`
	Version          string            `json:"version,omitempty"`
	CreationTime     time.Time         `json:"creationTime,omitzero"`
	ModificationTime time.Time         `json:"modificationTime,omitzero"`
	Zone             string            `json:"zone,omitempty"`
}

// Key is the resource's identity as the API writes it in messages:
// "TYPE [ZONE/][MESH/]NAME".
func (r *Resource) Key() string { return KeyString(r.Type, r.Zone, r.Mesh, r.Name) }

// KeyString formats a resource key the way the API does.
func KeyString(typ, zone, mesh, name string) string {
	var b strings.Builder
	b.WriteString(typ + " ")
	if zone != "" {
		b.WriteString(zone + "/")
	}
	if mesh != "" {
		b.WriteString(mesh + "/")
	}
	b.WriteString(name)
	return b.String()
}

// Types is the body of GET /api/v1/types.
type Types apitypes.TypesResponse

// Find returns the type named name.
func (t Types) Find(name string) (apitypes.TypeInfo, bool) {
	for _, ti := range t.Types {
		if ti.Name == name {
			return ti, true
		}
	}
	return apitypes.TypeInfo{}, false
}

// APIError is an error response of the API: its HTTP status and its body,
// whose fields (Code, Message, Fields) it promotes.
type APIError struct {
	Status int `json:"-"`
	errorBody
}

// errorBody names the embedded body so that its field does not clash with
// the Error method.
type errorBody = apitypes.Error

func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString(e.Message)
	for _, f := range e.Fields {
		b.WriteString("\n  " + f.Resource + ": ")
		if f.Field != "" {
			b.WriteString(f.Field + ": ")
		}
		b.WriteString(f.Message)
	}
	return b.String()
}

// ErrUnreachable wraps transport failures: the API did not answer.
var ErrUnreachable = errors.New("cannot reach the admin API")

// Client talks to one admin API.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// New returns a client for the API at base (for example
// "http://127.0.0.1:5681"), sending token as a bearer token when not
// empty. A nil hc means a client with a 30s timeout.
func New(base, token string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("api URL %q: want http(s)://HOST:PORT", base)
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &Client{base: strings.TrimRight(base, "/"), token: token, hc: hc}, nil
}

// do sends a request; a 2xx response body is decoded into out (when not
// nil), anything else becomes an *APIError.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		js, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(js)
	}
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w at %s: %w", ErrUnreachable, c.base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read response from %s: %w", c.base, err)
	}
	if resp.StatusCode/100 != 2 {
		ae := &APIError{Status: resp.StatusCode}
		if json.Unmarshal(raw, ae) != nil || ae.Code == "" {
			ae.Code = "http_" + fmt.Sprint(resp.StatusCode)
			ae.Message = fmt.Sprintf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(raw)))
		}
		return ae
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("decode response of %s %s: %w", method, path, err)
		}
	}
	return nil
}

func resPath(typ string, name ...string) string {
	p := "/api/v1/resources/" + url.PathEscape(typ)
	for _, n := range name {
		p += "/" + url.PathEscape(n)
	}
	return p
}

func scope(mesh, zone string) url.Values {
	q := url.Values{}
	if mesh != "" {
		q.Set("mesh", mesh)
	}
	if zone != "" {
		q.Set("zone", zone)
	}
	return q
}

// Types lists the types the engine serves.
func (c *Client) Types(ctx context.Context) (Types, error) {
	var t Types
	err := c.do(ctx, http.MethodGet, "/api/v1/types", nil, nil, &t)
	return t, err
}

// List lists resources of typ; empty mesh and zone match all; labels must
// all match.
func (c *Client) List(ctx context.Context, typ, mesh, zone string, labels []string) ([]Resource, error) {
	q := scope(mesh, zone)
	for _, l := range labels {
		q.Add("label", l)
	}
	var out struct {
		Items []Resource `json:"items"`
	}
	err := c.do(ctx, http.MethodGet, resPath(typ), q, nil, &out)
	return out.Items, err
}

// Get reads one resource.
func (c *Client) Get(ctx context.Context, typ, name, mesh, zone string) (Resource, error) {
	var r Resource
	err := c.do(ctx, http.MethodGet, resPath(typ, name), scope(mesh, zone), nil, &r)
	return r, err
}

// Delete deletes one resource unconditionally.
func (c *Client) Delete(ctx context.Context, typ, name, mesh string) error {
	return c.do(ctx, http.MethodDelete, resPath(typ, name), scope(mesh, ""), nil, nil)
}

// Apply validates every resource, then creates, updates or leaves each one.
// It returns one result per resource and the plugins' warnings.
func (c *Client) Apply(ctx context.Context, rs []Resource) ([]apitypes.ApplyResult, []apitypes.FieldProblem, error) {
	var out apitypes.ApplyResponse
	err := c.do(ctx, http.MethodPost, "/api/v1/apply", nil, map[string]any{"resources": rs}, &out)
	return out.Results, out.Warnings, err
}

// Zones lists the zones global knows (global only).
func (c *Client) Zones(ctx context.Context) ([]apitypes.Conn, error) {
	var out apitypes.ZonesResponse
	err := c.do(ctx, http.MethodGet, "/api/v1/zones", nil, nil, &out)
	return out.Zones, err
}

// Zone reads one zone's state (global only).
func (c *Client) Zone(ctx context.Context, name string) (apitypes.Conn, error) {
	var out apitypes.Conn
	err := c.do(ctx, http.MethodGet, "/api/v1/zones/"+url.PathEscape(name), nil, nil, &out)
	return out, err
}

// Sync reads a zone's connection to global (zone only).
func (c *Client) Sync(ctx context.Context) (apitypes.Conn, error) {
	var out apitypes.Conn
	err := c.do(ctx, http.MethodGet, "/api/v1/sync", nil, nil, &out)
	return out, err
}

// Plugins lists the loaded plugins and the send-buffer capacity.
func (c *Client) Plugins(ctx context.Context) (apitypes.PluginsInfo, error) {
	var out apitypes.PluginsInfo
	err := c.do(ctx, http.MethodGet, "/api/v1/plugins", nil, nil, &out)
	return out, err
}
