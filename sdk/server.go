package sdk

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pluginv1 "github.com/kds-engine/kds-engine/sdk/proto/plugin/v1"
)

// Plugin is a complete plugin: its identity and its types.
type Plugin struct {
	// Name should equal the NAME in the binary's file name kds-plugin-NAME;
	// the engine identifies the plugin by its file name and logs a mismatch.
	Name string
	// Version of the plugin, free form (for example "1.2.0").
	Version string
	Types   []Type
}

// NewServer checks the plugin's declarations and returns the gRPC
// implementation of the plugin protocol. [Serve] uses it; sdktest and
// benchmarks use it to run a plugin in-process. The returned server is safe
// for concurrent use.
func NewServer(p Plugin) (pluginv1.PluginServer, error) {
	if p.Name == "" {
		return nil, fmt.Errorf("plugin name is empty")
	}
	s := &server{name: p.Name, version: p.Version, types: make(map[string]Type, len(p.Types))}
	for _, t := range p.Types {
		d, err := t.descriptor()
		if err != nil {
			return nil, fmt.Errorf("plugin %s: %w", p.Name, err)
		}
		if _, dup := s.types[d.Name]; dup {
			return nil, fmt.Errorf("plugin %s: type %s declared twice", p.Name, d.Name)
		}
		s.types[d.Name] = t
		s.descriptors = append(s.descriptors, d)
	}
	return s, nil
}

var _ pluginv1.PluginServer = (*server)(nil)

type server struct {
	pluginv1.UnimplementedPluginServer
	name, version string
	types         map[string]Type
	descriptors   []*pluginv1.TypeDescriptor
}

func (s *server) Describe(context.Context, *pluginv1.DescribeRequest) (*pluginv1.DescribeResponse, error) {
	return &pluginv1.DescribeResponse{Name: s.name, Version: s.version, Types: s.descriptors}, nil
}

func resourceErrors(i int, errs ErrorList) *pluginv1.ResourceErrors {
	re := &pluginv1.ResourceErrors{Index: uint32(i), Errors: make([]*pluginv1.FieldError, len(errs))}
	for j, e := range errs {
		re.Errors[j] = &pluginv1.FieldError{Field: e.Field, Message: e.Message}
	}
	return re
}

// validateOne runs t's checks on one resource. A panic in them becomes an
// error naming the resource and the plugin, logged with its stack to the
// plugin's stderr; the plugin keeps serving.
func (s *server) validateOne(ctx context.Context, t Type, meta Meta, spec []byte) (errs ErrorList) {
	defer func() {
		if v := recover(); v != nil {
			name := meta.Name
			if meta.Mesh != "" {
				name = meta.Mesh + "/" + name
			}
			fmt.Fprintf(os.Stderr, "panic validating %s %s: %v\n%s", meta.Type, name, v, debug.Stack())
			errs = ErrorList{{Message: fmt.Sprintf("plugin %s panicked validating %s %s: %v (a bug in the plugin; its log has the stack)", s.name, meta.Type, name, v)}}
		}
	}()
	return t.validate(ctx, meta, spec)
}

func (s *server) Validate(ctx context.Context, req *pluginv1.ValidateRequest) (*pluginv1.ValidateResponse, error) {
	resp := &pluginv1.ValidateResponse{}
	for i, r := range req.GetResources() {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, status.FromContextError(err).Err()
			}
		}
		var errs ErrorList
		t, ok := s.types[r.GetType()]
		if !ok {
			errs = ErrorList{{Field: "type", Message: fmt.Sprintf("plugin %s does not supply type %q", s.name, r.GetType())}}
		} else {
			meta := Meta{Type: r.GetType(), Mesh: r.GetMesh(), Name: r.GetName(), Labels: r.GetLabels(), Zone: r.GetZone()}
			errs = s.validateOne(ctx, t, meta, r.GetSpec())
		}
		if fails := errs.Errors(); len(fails) > 0 {
			resp.Invalid = append(resp.Invalid, resourceErrors(i, fails))
		}
		if warns := errs.Warnings(); len(warns) > 0 {
			resp.Warnings = append(resp.Warnings, resourceErrors(i, warns))
		}
	}
	if len(req.GetResources()) > 0 && ctx.Err() != nil {
		return nil, status.Error(codes.Canceled, ctx.Err().Error())
	}
	return resp, nil
}
