package httpauth

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kds-engine/kds-engine/engine/internal/testsupport/logbuf"
	"github.com/kds-engine/kds-engine/engine/internal/tlsutil"
)

// serverTLS is a server TLS config with a fresh certificate for
// 127.0.0.1 (tlsutil's demo PKI).
func serverTLS(t *testing.T) *tls.Config {
	t.Helper()
	pki, err := tlsutil.GeneratePKI(t.TempDir(), []string{"127.0.0.1"}, nil)
	require.NoError(t, err)
	cert, err := tls.LoadX509KeyPair(pki.Server.CertFile, pki.Server.KeyFile)
	require.NoError(t, err)
	return &tls.Config{Certificates: []tls.Certificate{cert}}
}

// stallConn is a server-side connection whose writes, once stalled, block
// until its write deadline or its close: what a client that stopped
// reading, with the socket buffers full, makes of it.
type stallConn struct {
	net.Conn
	stalled  atomic.Bool
	mu       sync.Mutex
	deadline time.Time
	closed   chan struct{}
	once     sync.Once
}

func (c *stallConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *stallConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

func (c *stallConn) Write(b []byte) (int, error) {
	if !c.stalled.Load() {
		return c.Conn.Write(b)
	}
	c.mu.Lock()
	d := c.deadline
	c.mu.Unlock()
	var expired <-chan time.Time
	if !d.IsZero() {
		timer := time.NewTimer(time.Until(d))
		defer timer.Stop()
		expired = timer.C
	}
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	case <-expired:
		return 0, os.ErrDeadlineExceeded
	}
}

func (c *stallConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

type stallListener struct {
	net.Listener
	accepted chan *stallConn
}

func (l *stallListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	sc := &stallConn{Conn: c, closed: make(chan struct{})}
	l.accepted <- sc
	return sc, nil
}

// serveTLS runs NewServer(h) over TLS on a loopback listener whose
// connections the test can stall; Serve's result and leaked goroutines
// are checked after.
func serveTLS(t *testing.T, h http.Handler, idle chan<- struct{}, log hclog.Logger) (*Server, string, chan *stallConn) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	sl := &stallListener{Listener: lis, accepted: make(chan *stallConn, 16)}
	srv := NewServer(h, Limits{}, log)
	if idle != nil {
		track := srv.ConnState
		srv.ConnState = func(c net.Conn, st http.ConnState) {
			track(c, st)
			if st == http.StateIdle {
				select {
				case idle <- struct{}{}:
				default:
				}
			}
		}
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(tls.NewListener(sl, serverTLS(t))) }()
	t.Cleanup(func() {
		require.ErrorIs(t, <-done, http.ErrServerClosed)
		goleak.VerifyNone(t, goleak.IgnoreCurrent())
	})
	return srv, lis.Addr().String(), sl.accepted
}

// A TLS connection whose client reads nothing any more neither stretches
// a stop nor outlives it: closing it through crypto/tls sends a
// close_notify that waits up to five seconds for the client (in
// Shutdown, which closes an idle connection that way holding its lock,
// or in the connection's own goroutine, which Shutdown then no longer
// waits for). Stop closes the connection under TLS.
func TestStopClosesTLSConnectionsWhoseClientReadsNothing(t *testing.T) {
	for _, idleFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("idle first %v", idleFirst), func(t *testing.T) {
			var idle chan struct{}
			if idleFirst {
				idle = make(chan struct{}, 1)
			}
			stopWithAStalledTLSClient(t, idle)
		})
	}
}

func stopWithAStalledTLSClient(t *testing.T, idle chan struct{}) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv, addr, accepted := serveTLS(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}), idle, nil)
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	_, err = io.ReadAll(resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	sc := <-accepted
	sc.stalled.Store(true)
	if idle != nil {
		<-idle
	}

	start := time.Now()
	st, err := srv.Stop(300 * time.Millisecond)
	require.NoError(t, err)
	assert.Zero(t, st)
	assert.Less(t, time.Since(start), 2*time.Second, "Stop waited for the client")
	select {
	case <-sc.closed:
	default:
		t.Fatal("Stop left the connection open under TLS")
	}
}

// A client stalled in the TLS handshake (it sent nothing) neither fails
// nor stretches a stop.
func TestStopClosesConnectionsStalledInTheTLSHandshake(t *testing.T) {
	srv, addr, accepted := serveTLS(t, http.NotFoundHandler(), nil, nil)
	c := dial(t, addr)
	<-accepted
	start := time.Now()
	st, err := srv.Stop(300 * time.Millisecond)
	require.NoError(t, err)
	assert.Zero(t, st)
	assert.Less(t, time.Since(start), 2*time.Second)
	// Closed by the stop, not by the handshake's own timeout (10 s).
	require.NoError(t, c.SetReadDeadline(start.Add(2*time.Second)))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server kept the connection open: %v", err)
	require.Error(t, err)
}

// A handler that ignores its request's context is counted as cut, then as
// still running when the second grace is over; Stop returns within about
// twice the grace all the same.
func TestStopReportsHandlersThatOutliveIt(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	returned := make(chan struct{})
	srv, addr := serveStoppable(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		defer close(returned)
		close(entered)
		<-release
	}))
	go func() {
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	start := time.Now()
	st, err := srv.Stop(200 * time.Millisecond)
	require.NoError(t, err)
	assert.Equal(t, Stopped{Cut: 1, Running: 1}, st)
	assert.Less(t, time.Since(start), time.Second)
	close(release)
	<-returned
}

// What net/http logs of the admin API's clients reaches the engine's
// logger: a TLS handshake a stop cut at debug level, a handler's panic as
// an error (not the standard library's logger, on stderr).
func TestServerErrorsReachTheLogger(t *testing.T) {
	var buf logbuf.Buffer
	log := hclog.New(&hclog.LoggerOptions{Name: "api", Level: hclog.Debug, Output: &buf})
	srv, addr, accepted := serveTLS(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("handler bug")
	}), nil, log)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	_, err := client.Get("https://" + addr + "/")
	require.Error(t, err, "the panic cut the request")
	<-accepted
	c := dial(t, addr)
	defer c.Close()
	<-accepted
	_, err = srv.Stop(100 * time.Millisecond)
	require.NoError(t, err)
	client.CloseIdleConnections()
	assert.Eventually(t, func() bool {
		out := buf.String()
		return strings.Contains(out, "[ERROR] api: http: panic serving") && strings.Contains(out, "[DEBUG] api: http: TLS handshake error")
	}, patience, 10*time.Millisecond, "log:\n%s", &buf)
}
