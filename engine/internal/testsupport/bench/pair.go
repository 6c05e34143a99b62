// Package bench holds the transport workloads shared by the tests, the Go
// benchmarks and the kds-bench command: a loopback gRPC stream pair, the
// burst exchange that reproduces the flow-control deadlock, and a raw-gRPC
// versus engine-session throughput comparison. Each workload is a function
// that returns numbers; it starts nothing that outlives it.
package bench

import (
	"context"
	"fmt"
	"net"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// PairOptions configures a loopback stream pair.
type PairOptions struct {
	// Window, when > 0, sets static HTTP/2 stream and connection windows of
	// that many bytes on both sides (static windows disable gRPC's BDP
	// estimation). gRPC ignores values under 64 KiB.
	Window int32
	// MaxMessageSize, when > 0, is the gRPC max message size both ways.
	MaxMessageSize int
	// NoIOBuffers turns off gRPC's read and write buffering on both sides,
	// saving one copy of every byte each way (which matters under the race
	// detector, where every copy is checked).
	NoIOBuffers bool
	// ServerOptions and DialOptions are appended to the pair's own.
	ServerOptions []grpc.ServerOption
	DialOptions   []grpc.DialOption
}

// Pair is one kdsv1.KDS/Session stream over loopback TCP, with both ends in
// this process.
type Pair struct {
	Client kdsv1.KDS_SessionClient
	Server kdsv1.KDS_SessionServer

	cancelClient context.CancelFunc
	releaseOnce  sync.Once
	release      chan struct{}
	handlerDone  chan struct{}
	conn         *grpc.ClientConn
	srv          *grpc.Server
	serveDone    chan struct{}
}

type pairServer struct {
	kdsv1.UnimplementedKDSServer
	streams chan kdsv1.KDS_SessionServer
	release chan struct{}
	done    chan struct{}
}

func (s *pairServer) Session(stream kdsv1.KDS_SessionServer) error {
	defer close(s.done)
	select {
	case s.streams <- stream:
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
	select {
	case <-s.release:
	case <-stream.Context().Done():
	}
	return nil
}

// NewPair listens on 127.0.0.1:0, dials it and opens one stream. Close
// releases everything.
func NewPair(ctx context.Context, o PairOptions) (*Pair, error) {
	var sopts []grpc.ServerOption
	dopts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if o.Window > 0 {
		sopts = append(sopts, grpc.InitialWindowSize(o.Window), grpc.InitialConnWindowSize(o.Window))
		dopts = append(dopts, grpc.WithInitialWindowSize(o.Window), grpc.WithInitialConnWindowSize(o.Window))
	}
	if o.MaxMessageSize > 0 {
		sopts = append(sopts, grpc.MaxRecvMsgSize(o.MaxMessageSize), grpc.MaxSendMsgSize(o.MaxMessageSize))
		dopts = append(dopts, grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(o.MaxMessageSize), grpc.MaxCallSendMsgSize(o.MaxMessageSize)))
	}
	if o.NoIOBuffers {
		sopts = append(sopts, grpc.ReadBufferSize(0), grpc.WriteBufferSize(0))
		dopts = append(dopts, grpc.WithReadBufferSize(0), grpc.WithWriteBufferSize(0))
	}
	sopts = append(sopts, o.ServerOptions...)
	dopts = append(dopts, o.DialOptions...)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	ps := &pairServer{streams: make(chan kdsv1.KDS_SessionServer), release: make(chan struct{}), done: make(chan struct{})}
	p := &Pair{release: ps.release, handlerDone: ps.done, srv: grpc.NewServer(sopts...), serveDone: make(chan struct{})}
	kdsv1.RegisterKDSServer(p.srv, ps)
	go func() {
		defer close(p.serveDone)
		_ = p.srv.Serve(lis)
	}()
	p.conn, err = grpc.NewClient(lis.Addr().String(), dopts...)
	if err != nil {
		p.srv.Stop()
		<-p.serveDone
		return nil, fmt.Errorf("dial: %w", err)
	}
	sctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "kds-zone", "bench"))
	p.cancelClient = cancel
	p.Client, err = kdsv1.NewKDSClient(p.conn).Session(sctx)
	if err != nil {
		p.close(false)
		return nil, fmt.Errorf("open stream: %w", err)
	}
	select {
	case p.Server = <-ps.streams:
	case <-ctx.Done():
		p.close(false)
		return nil, ctx.Err()
	}
	return p, nil
}

// AbortClient cancels the client stream; a Send or Recv blocked on it
// returns.
func (p *Pair) AbortClient() { p.cancelClient() }

// AbortServer lets the server handler return, which ends the RPC; a Send or
// Recv blocked on the server stream returns.
func (p *Pair) AbortServer() { p.releaseOnce.Do(func() { close(p.release) }) }

// Close aborts both ends, stops the server and joins everything the pair
// started.
func (p *Pair) Close() { p.close(true) }

func (p *Pair) close(handler bool) {
	if p.cancelClient != nil {
		p.cancelClient()
	}
	p.AbortServer()
	if handler {
		<-p.handlerDone
	}
	_ = p.conn.Close()
	p.srv.Stop()
	<-p.serveDone
}
