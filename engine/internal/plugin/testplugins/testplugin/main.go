// Command testplugin is a plugin for the plugin host's tests. Its behaviour
// follows its file name, kds-plugin-NAME, so one build serves every case:
//
//	alpha         types AlphaOne (mesh) and AlphaTwo (global); rejects
//	              {"bad": true} at spec.bad; writes to stdout and the log
//	beta          type BetaThing (mesh)
//	dupalpha      claims AlphaOne too
//	hang          never answers Describe
//	crashvalidate exits in the middle of Validate
//	reject        rejects every resource
//	shifty        type ShiftyV1, or ShiftyV2 once NAME.v2 exists next to it
//	garbage       breaks the handshake
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	goplugin "github.com/hashicorp/go-plugin"

	pluginv1 "github.com/kds-engine/kds-engine/proto/plugin/v1"
	"github.com/kds-engine/kds-engine/sdk"
)

type spec struct {
	Bad   bool   `json:"bad,omitempty"`
	Value string `json:"value,omitempty"`
	Pad   string `json:"pad,omitempty"`
}

func check(_ context.Context, _ sdk.Meta, s *spec) sdk.ErrorList {
	var errs sdk.ErrorList
	if s.Bad {
		errs.Invalid(sdk.Field("spec").Child("bad"), true, "bad is set")
	}
	return errs
}

func typ(name string, scope sdk.Scope) sdk.Type {
	return sdk.Define(sdk.TypeSpec[spec]{Name: name, Direction: sdk.GlobalToZone, Scope: scope, SchemaVersion: 1, Validate: check})
}

type server struct {
	pluginv1.PluginServer
	mode string
}

func (s *server) Describe(ctx context.Context, req *pluginv1.DescribeRequest) (*pluginv1.DescribeResponse, error) {
	switch s.mode {
	case "hang":
		<-ctx.Done()
		return nil, ctx.Err()
	case "alpha":
		fmt.Println("alpha says hello on stdout")
		sdk.Logger().Info("alpha describing itself", "engine", req.GetEngineVersion())
	}
	return s.PluginServer.Describe(ctx, req)
}

func (s *server) Validate(ctx context.Context, req *pluginv1.ValidateRequest) (*pluginv1.ValidateResponse, error) {
	switch s.mode {
	case "crashvalidate":
		os.Exit(3)
	case "reject":
		resp := &pluginv1.ValidateResponse{}
		for i := range req.GetResources() {
			resp.Invalid = append(resp.Invalid, &pluginv1.ResourceErrors{Index: uint32(i), Errors: []*pluginv1.FieldError{{Field: "spec", Message: "rejected by the reject plugin"}}})
		}
		return resp, nil
	}
	return s.PluginServer.Validate(ctx, req)
}

func main() {
	mode := strings.TrimPrefix(filepath.Base(os.Args[0]), "kds-plugin-")
	p := sdk.Plugin{Name: mode, Version: "9.9.9"}
	switch mode {
	case "alpha":
		p.Types = []sdk.Type{typ("AlphaOne", sdk.ScopeMesh), typ("AlphaTwo", sdk.ScopeGlobal)}
	case "beta":
		p.Types = []sdk.Type{typ("BetaThing", sdk.ScopeMesh)}
	case "dupalpha":
		p.Types = []sdk.Type{typ("AlphaOne", sdk.ScopeMesh)}
	case "shifty":
		if _, err := os.Stat(os.Args[0] + ".v2"); err == nil {
			p.Types = []sdk.Type{typ("ShiftyV2", sdk.ScopeMesh)}
		} else {
			p.Types = []sdk.Type{typ("ShiftyV1", sdk.ScopeMesh)}
		}
	case "garbage":
		fmt.Println("this is not a handshake")
		os.Exit(1)
	default:
		p.Types = []sdk.Type{typ(strings.ToUpper(mode[:1])+mode[1:]+"Thing", sdk.ScopeMesh)}
	}
	impl, err := sdk.NewServer(p)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig:  sdk.Handshake,
		VersionedPlugins: sdk.VersionedPlugins(&server{PluginServer: impl, mode: mode}),
		GRPCServer:       goplugin.DefaultGRPCServer,
		Logger:           sdk.Logger(),
	})
}
