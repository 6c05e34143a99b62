package kdsgrpc

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/kds-engine/kds-engine/engine/internal/kdswire"
	"github.com/kds-engine/kds-engine/engine/internal/mux"
)

// Config holds the transport settings both sides share. The zero value of a
// field means its default.
type Config struct {
	// MaxMessageSize bounds every message sent and received, in bytes
	// (default mux.DefaultMaxMessageSize, 4 MiB).
	MaxMessageSize int
	// KeepaliveTime is how often a side pings an idle connection (default
	// 30s; gRPC raises a client's value below 10s to 10s and a server's
	// below 1s to 1s).
	KeepaliveTime time.Duration
	// KeepaliveTimeout is how long a ping may go unanswered before the
	// connection is closed (default 10s).
	KeepaliveTimeout time.Duration
	// KeepaliveMinTime is the server's enforcement policy: a client pinging
	// more often than this is disconnected (default 10s, which admits the
	// fastest client ping gRPC allows).
	KeepaliveMinTime time.Duration
	// KeepalivePermitWithoutStream lets pings flow without an active
	// stream (client) and tolerates them (server enforcement). Default
	// false; the zone always has its stream open.
	KeepalivePermitWithoutStream bool
	// SendTimeout bounds one gRPC Send (default mux.DefaultSendTimeout).
	SendTimeout time.Duration
	// Headroom is added to types × Window to size the session buffers
	// (default mux.DefaultHeadroom). Negative means 0.
	Headroom *int
	// Window is how many responses per type the sync layer keeps in flight
	// before the ACK/NACK; it sizes the session buffers (default 1).
	Window int
	// InitialWindowSize, if positive, sets static HTTP/2 stream and
	// connection flow-control windows of this many bytes on both sides
	// (gRPC then stops estimating the bandwidth-delay product). Zero keeps
	// gRPC's dynamic windows. For tests and benchmarks that need a full
	// window; gRPC ignores values below 64 KiB.
	InitialWindowSize int32
}

// MaxHeaderListSize bounds the request headers (metadata) a zone may send
// global: a zone token (at most 4 KiB) and a zone name fit many times over,
// and a peer cannot make global buffer megabytes of headers.
const MaxHeaderListSize = 64 << 10

// Defaults for Config fields.
const (
	DefaultKeepaliveTime    = 30 * time.Second
	DefaultKeepaliveTimeout = 10 * time.Second
	DefaultKeepaliveMinTime = 10 * time.Second
)

func (c Config) withDefaults() Config {
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = mux.DefaultMaxMessageSize
	}
	if c.KeepaliveTime <= 0 {
		c.KeepaliveTime = DefaultKeepaliveTime
	}
	if c.KeepaliveTimeout <= 0 {
		c.KeepaliveTimeout = DefaultKeepaliveTimeout
	}
	if c.KeepaliveMinTime <= 0 {
		c.KeepaliveMinTime = DefaultKeepaliveMinTime
	}
	if c.SendTimeout <= 0 {
		c.SendTimeout = mux.DefaultSendTimeout
	}
	return c
}

// ServerOptions returns the grpc.ServerOptions for the KDS port: keepalive
// parameters and enforcement policy, the max message size both ways, the
// header size limit (MaxHeaderListSize), grpc.WaitForHandlers(true) so
// that Server.Stop returns only once every RPC handler has, and the KDS
// codec (kdswire.Codec: protobuf on the wire, with fewer copies). extra
// (TLS credentials, interceptors) is appended.
func ServerOptions(cfg Config, extra ...grpc.ServerOption) []grpc.ServerOption {
	c := cfg.withDefaults()
	opts := []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    c.KeepaliveTime,
			Timeout: c.KeepaliveTimeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             c.KeepaliveMinTime,
			PermitWithoutStream: c.KeepalivePermitWithoutStream,
		}),
		grpc.MaxRecvMsgSize(c.MaxMessageSize),
		grpc.MaxSendMsgSize(c.MaxMessageSize),
		grpc.MaxHeaderListSize(MaxHeaderListSize),
		grpc.WaitForHandlers(true),
		grpc.ForceServerCodecV2(kdswire.Codec{}),
	}
	if c.InitialWindowSize > 0 {
		opts = append(opts, grpc.InitialWindowSize(c.InitialWindowSize), grpc.InitialConnWindowSize(c.InitialWindowSize))
	}
	return append(opts, extra...)
}

// NewServer returns a grpc.Server built with ServerOptions(cfg, extra...).
// Register a Global on it with kdsv1.RegisterKDSServer.
func NewServer(cfg Config, extra ...grpc.ServerOption) *grpc.Server {
	return grpc.NewServer(ServerOptions(cfg, extra...)...)
}

// DialOptions returns the grpc.DialOptions the zone uses: keepalive, the
// max message size both ways and the KDS codec (kdswire.Codec). extra (credentials, per-RPC tokens) is
// appended. Transport credentials are not set here; pass them in extra (for
// example insecure.NewCredentials() in tests).
func DialOptions(cfg Config, extra ...grpc.DialOption) []grpc.DialOption {
	c := cfg.withDefaults()
	opts := []grpc.DialOption{
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                c.KeepaliveTime,
			Timeout:             c.KeepaliveTimeout,
			PermitWithoutStream: c.KeepalivePermitWithoutStream,
		}),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(c.MaxMessageSize),
			grpc.MaxCallSendMsgSize(c.MaxMessageSize),
			grpc.ForceCodecV2(kdswire.Codec{}),
		),
	}
	if c.InitialWindowSize > 0 {
		opts = append(opts, grpc.WithInitialWindowSize(c.InitialWindowSize), grpc.WithInitialConnWindowSize(c.InitialWindowSize))
	}
	return append(opts, extra...)
}

func (c Config) muxOptions() []mux.Option {
	c = c.withDefaults()
	opts := []mux.Option{
		mux.WithMaxMessageSize(c.MaxMessageSize),
		mux.WithSendTimeout(c.SendTimeout),
	}
	if c.Headroom != nil {
		opts = append(opts, mux.WithHeadroom(*c.Headroom))
	}
	if c.Window > 0 {
		opts = append(opts, mux.WithWindow(c.Window))
	}
	return opts
}
