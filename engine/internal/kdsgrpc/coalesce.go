package kdsgrpc

import (
	"context"
	"net"
	"sync"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// CoalesceRecords wraps TLS transport credentials so that the records one
// write of the gRPC transport becomes reach the socket in one write system
// call instead of one each.
//
// crypto/tls cuts a write into records of at most 16 KiB and writes each
// to the connection on its own. gRPC's transport writes its buffered frames
// (WriteBufferSize, 32 KiB by default) in one call, so a bulk transfer made
// two socket writes of 16 KiB per buffer; on loopback and on a real NIC
// alike each write is a packet through the TCP stack and a wake-up of the
// reader. Under the TLS connection, a recordConn gathers the records of
// one outer write and writes them together when that write is done (or
// once maxGather bytes are gathered). Nothing is held back between writes:
// when an outer Write returns, every byte of it has been handed to the
// socket, as without the wrapper, and bytes TLS writes on its own (the
// handshake, alerts, key updates written from the read side) go out
// directly, after anything gathered before them.
//
// The bytes on the wire are the same records in the same order: the peer
// cannot tell the difference. The handshake and the AuthInfo (peer
// certificates, used by zone authentication) are those of the wrapped
// credentials.
func CoalesceRecords(c credentials.TransportCredentials) credentials.TransportCredentials {
	return coalescing{c}
}

// TLSServerOptions returns the server options of a KDS port with TLS
// credentials creds: the credentials with CoalesceRecords, and no read
// buffer in gRPC's transport (see transportDialOptions).
func TLSServerOptions(creds credentials.TransportCredentials) []grpc.ServerOption {
	if creds.Info().SecurityProtocol != "tls" {
		return []grpc.ServerOption{grpc.Creds(creds)}
	}
	return []grpc.ServerOption{grpc.Creds(CoalesceRecords(creds)), grpc.ReadBufferSize(0)}
}

// transportDialOptions returns the dial options for a zone's transport
// credentials. With TLS: the credentials with CoalesceRecords, and no read
// buffer in gRPC's transport. crypto/tls returns at most one record's
// plaintext per Read, from a record it has already read whole, so the 32
// KiB buffer gRPC puts above it saved no system call: it only added a copy
// of every received byte (the frame headers' small reads are served from
// the record TLS holds). Other credentials (plaintext) keep gRPC's
// buffering, which there saves the reads from the socket.
func transportDialOptions(creds credentials.TransportCredentials) []grpc.DialOption {
	if creds.Info().SecurityProtocol != "tls" {
		return []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(CoalesceRecords(creds)), grpc.WithReadBufferSize(0)}
}

// maxGather bounds what a recordConn gathers before it writes: a write of
// the gRPC transport larger than this goes out in pieces of about this
// size.
const maxGather = 256 << 10

type coalescing struct {
	credentials.TransportCredentials
}

func (c coalescing) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	under := newRecordConn(raw)
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, under)
	if err != nil {
		return nil, nil, err
	}
	return wrapGathering(conn, under), info, nil
}

func (c coalescing) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	under := newRecordConn(raw)
	conn, info, err := c.TransportCredentials.ServerHandshake(under)
	if err != nil {
		return nil, nil, err
	}
	return wrapGathering(conn, under), info, nil
}

func (c coalescing) Clone() credentials.TransportCredentials {
	return coalescing{c.TransportCredentials.Clone()}
}

// recordConn is the connection under TLS. While an outer write is in
// progress (gathering > 0) it keeps what TLS writes in a buffer from
// gatherPool; it writes it on flush, before any direct write and when
// maxGather would be exceeded, and gives the buffer back once no outer
// write is in progress (an idle connection holds none).
type recordConn struct {
	net.Conn
	mu        sync.Mutex
	gathering int
	buf       *[]byte
}

// gatherPool holds the buffers of recordConns between outer writes.
var gatherPool = sync.Pool{New: func() any {
	b := make([]byte, 0, maxGather)
	return &b
}}

func newRecordConn(c net.Conn) underConn {
	rc := &recordConn{Conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		// Keep the raw connection reachable (gRPC sets socket options
		// through it).
		return &syscallRecordConn{recordConn: rc, sc: sc}
	}
	return rc
}

type syscallRecordConn struct {
	*recordConn
	sc syscall.Conn
}

func (c *syscallRecordConn) SyscallConn() (syscall.RawConn, error) { return c.sc.SyscallConn() }

func (c *recordConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gathering == 0 || len(p) > maxGather {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		return c.Conn.Write(p)
	}
	if c.buf == nil {
		c.buf = gatherPool.Get().(*[]byte)
	} else if len(*c.buf)+len(p) > maxGather {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

func (c *recordConn) begin() {
	c.mu.Lock()
	c.gathering++
	c.mu.Unlock()
}

// end ends one outer write and, once no outer write is in progress, writes
// what was gathered and gives the buffer back.
func (c *recordConn) end() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gathering--
	if c.gathering > 0 {
		return nil
	}
	err := c.flushLocked()
	if c.buf != nil {
		gatherPool.Put(c.buf)
		c.buf = nil
	}
	return err
}

func (c *recordConn) flushLocked() error {
	if c.buf == nil || len(*c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(*c.buf)
	*c.buf = (*c.buf)[:0]
	return err
}

// underConn is the connection under TLS: a recordConn, with or without
// access to the socket.
type underConn interface {
	net.Conn
	begin()
	end() error
}

// gatheringConn is the TLS connection the transport sees: each Write's
// records are gathered under it and written together.
type gatheringConn struct {
	net.Conn
	under underConn
}

func wrapGathering(conn net.Conn, under underConn) net.Conn {
	g := &gatheringConn{Conn: conn, under: under}
	if sc, ok := conn.(syscall.Conn); ok {
		return &syscallGatheringConn{gatheringConn: g, sc: sc}
	}
	return g
}

func (c *gatheringConn) Write(p []byte) (int, error) {
	c.under.begin()
	n, err := c.Conn.Write(p)
	if ferr := c.under.end(); err == nil && ferr != nil {
		return 0, ferr
	}
	return n, err
}

type syscallGatheringConn struct {
	*gatheringConn
	sc syscall.Conn
}

func (c *syscallGatheringConn) SyscallConn() (syscall.RawConn, error) { return c.sc.SyscallConn() }
