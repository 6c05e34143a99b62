// Package sdktest runs a kds-engine plugin for unit tests, without the
// engine.
//
// [Client.Validate] checks each resource against its type's JSON Schema with
// the engine's own implementation (package schemacheck) and then asks the
// plugin, and merges the two as the engine does, so a test sees the field
// errors `kds-engine apply` would print for the same spec. Only the engine's
// envelope checks (name syntax, scope, labels, size) are not run.
//
// [Start] serves an sdk.Plugin in-process over a real gRPC connection on
// the loopback interface, so requests and responses go through the same
// protobuf encoding as in production. [StartBinary] starts a built
// kds-plugin-* binary the way the engine does: go-plugin handshake,
// versioned protocol negotiation, gRPC only. [Build] compiles a plugin's main
// package for StartBinary.
//
// For a test against a real engine (envelope checks, storage, the CLI's
// output), see package github.com/kds-engine/kds-engine/cmd/kds-engine/enginetest
// in the engine's module.
//
// Everything is torn down with t.Cleanup. Client methods report failures
// with t.Fatalf, so call them from the test's goroutine.
package sdktest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kds-engine/kds-engine/sdk"
	pluginv1 "github.com/kds-engine/kds-engine/sdk/proto/plugin/v1"
	"github.com/kds-engine/kds-engine/sdk/schemacheck"
)

// Timeout bounds every call a Client makes.
const Timeout = 30 * time.Second

// Resource is a resource to validate. Spec is marshalled to JSON unless it is
// already a json.RawMessage, []byte or string holding JSON.
type Resource struct {
	Type   string
	Mesh   string
	Name   string
	Labels map[string]string
	Spec   any
}

// Client talks to one running plugin.
type Client struct {
	t    testing.TB
	conn pluginv1.PluginClient
	// Pid is the plugin process id for StartBinary, 0 for Start.
	Pid int
	// PluginOnly skips the JSON Schema check in Validate, so only the
	// plugin's own decoding and validate functions answer.
	PluginOnly bool

	schemas map[string]*schemacheck.Schema // by type, from Describe; nil until first needed
}

// Start serves p in-process on a loopback gRPC server (with the server and
// client options the engine and sdk.Serve use) and returns a client for it.
func Start(t testing.TB, p sdk.Plugin) *Client {
	t.Helper()
	impl, err := sdk.NewServer(p)
	if err != nil {
		t.Fatalf("sdktest: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("sdktest: listen: %v", err)
	}
	srv := sdk.GRPCServer(nil)
	pluginv1.RegisterPluginServer(srv, impl)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	opts := append(sdk.GRPCDialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	cc, err := grpc.NewClient(lis.Addr().String(), opts...)
	if err != nil {
		srv.Stop()
		<-served
		t.Fatalf("sdktest: dial: %v", err)
	}
	t.Cleanup(func() {
		_ = cc.Close()
		srv.Stop()
		<-served
	})
	return &Client{t: t, conn: pluginv1.NewPluginClient(cc)}
}

// StartBinary starts the plugin binary at path with the engine's
// go-plugin settings (handshake, gRPC only, AutoMTLS, message limits) and
// returns a client for it; the process is killed at cleanup. It does not
// run the engine's file checks: see docs/plugins.md for those.
func StartBinary(t testing.TB, path string) *Client {
	t.Helper()
	c := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		VersionedPlugins: sdk.VersionedPlugins(nil),
		Cmd:              exec.Command(path),
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		GRPCDialOptions:  sdk.GRPCDialOptions(),
		AutoMTLS:         true,
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:   filepath.Base(path),
			Output: os.Stderr,
			Level:  hclog.Warn,
		}),
		StartTimeout: Timeout,
	})
	t.Cleanup(c.Kill)
	proto, err := c.Client()
	if err != nil {
		t.Fatalf("sdktest: start %s: %v", path, err)
	}
	raw, err := proto.Dispense(sdk.PluginKey)
	if err != nil {
		t.Fatalf("sdktest: dispense: %v", err)
	}
	return &Client{t: t, conn: raw.(*sdk.Conn), Pid: c.ReattachConfig().Pid}
}

// Build compiles the main package in dir (a path go build understands) to
// a temporary kds-plugin-NAME binary and returns its path.
func Build(t testing.TB, dir, name string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "kds-plugin-"+name)
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sdktest: go build %s: %v\n%s", dir, err, b)
	}
	return out
}

// Describe calls the plugin's Describe.
func (c *Client) Describe() *pluginv1.DescribeResponse {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	resp, err := c.conn.Describe(ctx, &pluginv1.DescribeRequest{EngineVersion: "sdktest"})
	if err != nil {
		c.t.Fatalf("sdktest: describe: %v", err)
	}
	return resp
}

// Validate checks rs as the engine would and returns one ErrorList per
// resource, in order; a valid resource has an empty list, or only warnings
// (entries with Warning set; see ErrorList.Errors and ErrorList.Warnings). Each spec is
// checked against its type's JSON Schema (unless PluginOnly), then all are
// sent to the plugin in one batch; the plugin's errors at fields the schema
// already reported are dropped ([sdk.MergeErrors]).
func (c *Client) Validate(rs ...Resource) []sdk.ErrorList {
	c.t.Helper()
	out := make([]sdk.ErrorList, len(rs))
	req := &pluginv1.ValidateRequest{Resources: make([]*pluginv1.Resource, len(rs))}
	for i, r := range rs {
		spec, err := specJSON(r.Spec)
		if err != nil {
			c.t.Fatalf("sdktest: resource %d spec: %v", i, err)
		}
		req.Resources[i] = &pluginv1.Resource{Type: r.Type, Mesh: r.Mesh, Name: r.Name, Labels: r.Labels, Spec: spec}
		if !c.PluginOnly {
			out[i] = c.schemaErrors(r.Type, spec)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	resp, err := c.conn.Validate(ctx, req)
	if err != nil {
		c.t.Fatalf("sdktest: validate: %v", err)
	}
	fromPlugin := make([]sdk.ErrorList, len(rs))
	for _, inv := range resp.GetInvalid() {
		if int(inv.GetIndex()) >= len(rs) {
			c.t.Fatalf("sdktest: plugin answered for index %d of a %d-resource batch", inv.GetIndex(), len(rs))
		}
		for _, fe := range inv.GetErrors() {
			fromPlugin[inv.GetIndex()] = append(fromPlugin[inv.GetIndex()], sdk.FieldError{Field: fe.GetField(), Message: fe.GetMessage()})
		}
	}
	for _, w := range resp.GetWarnings() {
		if int(w.GetIndex()) >= len(rs) {
			c.t.Fatalf("sdktest: plugin warned for index %d of a %d-resource batch", w.GetIndex(), len(rs))
		}
		for _, fe := range w.GetErrors() {
			fromPlugin[w.GetIndex()] = append(fromPlugin[w.GetIndex()], sdk.FieldError{Field: fe.GetField(), Message: fe.GetMessage(), Warning: true})
		}
	}
	for i := range out {
		out[i] = sdk.MergeErrors(out[i], fromPlugin[i])
	}
	return out
}

// schemaErrors checks spec against the JSON Schema the plugin describes for
// typ (none for an unknown type or a type without a schema).
func (c *Client) schemaErrors(typ string, spec []byte) sdk.ErrorList {
	c.t.Helper()
	if c.schemas == nil {
		c.schemas = map[string]*schemacheck.Schema{}
		for _, d := range c.Describe().GetTypes() {
			if len(d.GetJsonSchema()) == 0 {
				continue
			}
			s, err := schemacheck.Compile(d.GetName(), d.GetJsonSchema())
			if err != nil {
				c.t.Fatalf("sdktest: the engine would refuse the schema of type %s: %v", d.GetName(), err)
			}
			c.schemas[d.GetName()] = s
		}
	}
	s, ok := c.schemas[typ]
	if !ok {
		return nil
	}
	errs, err := s.CheckJSON(spec)
	if err != nil {
		return sdk.ErrorList{{Field: "spec", Message: err.Error()}}
	}
	var out sdk.ErrorList
	for _, e := range errs {
		out = append(out, sdk.FieldError{Field: e.Field, Message: e.Message})
	}
	return out
}

// ValidateOne validates a single resource and returns its errors.
func (c *Client) ValidateOne(r Resource) sdk.ErrorList {
	c.t.Helper()
	return c.Validate(r)[0]
}

func specJSON(v any) ([]byte, error) {
	switch s := v.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		return s, nil
	case []byte:
		return s, nil
	case string:
		if !json.Valid([]byte(s)) {
			return nil, fmt.Errorf("string spec is not JSON")
		}
		return []byte(s), nil
	}
	return json.Marshal(v)
}

// Fields returns the field paths of l, for compact assertions.
func Fields(l sdk.ErrorList) []string {
	out := make([]string, len(l))
	for i, e := range l {
		out[i] = e.Field
	}
	return out
}
