package sdk

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pluginv1 "github.com/kds-engine/kds-engine/sdk/proto/plugin/v1"
)

// Protocol constants shared by the engine and every plugin.
const (
	// ProtocolVersion is the newest plugin protocol version this SDK speaks.
	// A future v2 is added to [VersionedPlugins] next to v1, so v1 plugins
	// keep working with newer engines and the other way round.
	ProtocolVersion = 1
	// PluginKey is the name under which the plugin service is dispensed.
	PluginKey = "kds"
	// MaxMessageBytes bounds one Validate request or response on both ends.
	MaxMessageBytes = 64 << 20
	// windowBytes is the HTTP/2 flow-control window on plugin connections:
	// large enough that a whole batch goes out without waiting for
	// WINDOW_UPDATEs (the connection is local, memory is the only cost).
	windowBytes = 16 << 20
)

// Handshake is the go-plugin handshake. The magic cookie only tells a
// kds-plugin binary that it was started by the engine (run by hand it says
// so and exits); it is not a security feature. ProtocolVersion is left at
// zero because versions are negotiated with [VersionedPlugins].
var Handshake = goplugin.HandshakeConfig{
	MagicCookieKey:   "KDS_PLUGIN_MAGIC_COOKIE",
	MagicCookieValue: "kds-engine-plugin-7c1f3e9a",
}

// VersionedPlugins returns the plugin sets per protocol version, with impl
// served for every version (nil on the engine side, which only dials).
func VersionedPlugins(impl pluginv1.PluginServer) map[int]goplugin.PluginSet {
	return map[int]goplugin.PluginSet{
		1: {PluginKey: &GRPCPlugin{Impl: impl}},
	}
}

// GRPCPlugin adapts the plugin service to go-plugin. On the plugin side Impl
// is served; on the engine side GRPCClient returns a *Conn.
type GRPCPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	Impl pluginv1.PluginServer
}

var _ goplugin.GRPCPlugin = (*GRPCPlugin)(nil)

// GRPCServer registers Impl.
func (p *GRPCPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	if p.Impl == nil {
		return fmt.Errorf("no plugin implementation to serve")
	}
	pluginv1.RegisterPluginServer(s, p.Impl)
	return nil
}

// GRPCClient returns a *Conn whose Done channel closes when go-plugin sees
// the plugin process exit.
func (p *GRPCPlugin) GRPCClient(ctx context.Context, _ *goplugin.GRPCBroker, cc *grpc.ClientConn) (any, error) {
	return &Conn{PluginClient: pluginv1.NewPluginClient(cc), done: ctx.Done()}, nil
}

// Conn is the engine side of a connection to one plugin process.
type Conn struct {
	pluginv1.PluginClient
	done <-chan struct{}
}

// NewConn wraps a client; done (may be nil: never) closes when the plugin
// goes away. For tests and in-process use.
func NewConn(c pluginv1.PluginClient, done <-chan struct{}) *Conn {
	return &Conn{PluginClient: c, done: done}
}

// Done is closed when the plugin process has exited.
func (c *Conn) Done() <-chan struct{} { return c.done }

// GRPCDialOptions are the dial options the engine uses for plugin
// connections, matching the limits [Serve] sets on the plugin side.
func GRPCDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(MaxMessageBytes),
			grpc.MaxCallSendMsgSize(MaxMessageBytes),
		),
		grpc.WithInitialWindowSize(windowBytes),
		grpc.WithInitialConnWindowSize(windowBytes),
	}
}

// Logger returns the logger a plugin should use: hclog JSON on the process's
// original stderr, which go-plugin forwards to the engine's log, tagged with
// the plugin's name. Call it before [Serve] or from validate functions.
func Logger() hclog.Logger { return logger }

var logger = hclog.New(&hclog.LoggerOptions{
	Level:      hclog.Trace,
	Output:     os.Stderr,
	JSONFormat: true,
})

// Serve runs the plugin until the engine stops it. It never returns: an
// invalid declaration prints the reason to stderr and exits with status 1;
// started by hand (not by the engine) it explains that and exits.
func Serve(p Plugin) {
	impl, err := NewServer(p)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kds plugin: %v\n", err)
		os.Exit(1)
	}
	TuneRuntime()
	go exitWithParent(os.Getppid(), time.Second)
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: VersionedPlugins(impl),
		GRPCServer:       GRPCServer,
		Logger:           logger,
	})
	os.Exit(0)
}

// PluginGCPercent is the garbage-collection target [TuneRuntime] sets.
const PluginGCPercent = 200

// TuneRuntime adapts the Go runtime to a plugin's work, a small live heap
// with batch-sized bursts of short-lived garbage: unless the GOGC
// environment variable is set, it sets the GC target to [PluginGCPercent],
// so a batch does not trigger several collections. [Serve] calls it.
func TuneRuntime() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(PluginGCPercent)
	}
}

// GRPCServer builds the plugin's gRPC server with the message limits and
// flow-control windows matching [GRPCDialOptions]. [Serve] uses it; a plugin
// that calls go-plugin's Serve itself should too.
func GRPCServer(opts []grpc.ServerOption) *grpc.Server {
	opts = append(opts,
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.InitialWindowSize(windowBytes),
		grpc.InitialConnWindowSize(windowBytes),
	)
	return grpc.NewServer(opts...)
}

// exitWithParent ends the plugin process once the engine that started it is
// gone (the process is re-parented), so an engine killed with SIGKILL leaves
// no plugin processes behind. It polls: the portable way to notice.
func exitWithParent(parent int, every time.Duration) {
	if parent <= 1 {
		return // started by init or a subreaper directly: nothing to watch
	}
	for range time.Tick(every) {
		if os.Getppid() != parent {
			logger.Warn("the engine that started this plugin is gone; exiting", "engine_pid", parent)
			os.Exit(0)
		}
	}
}
