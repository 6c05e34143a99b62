package httpauth

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// patience is how long a test waits for something that must happen; it
// only bounds a failing test, a passing one does not wait for it.
const patience = 20 * time.Second

// serveLimited runs NewServer(Guard(h)) on LimitListener with l and
// returns its address; it is closed with the test.
func serveLimited(t *testing.T, l Limits, h http.Handler) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := NewServer(Guard(RequestRules{BoundAddr: lis.Addr().String()}, h), l, nil)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(LimitListener(lis, l)) }()
	t.Cleanup(func() {
		require.NoError(t, srv.Close())
		require.ErrorIs(t, <-done, http.ErrServerClosed)
	})
	return lis.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer reads from c until the server closes it, and fails the
// test if that has not happened within patience.
func closedByServer(t *testing.T, c net.Conn) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(patience)))
	_, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the server kept the connection open for %s", patience)
	}
}

var readsBody = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.WriteHeader(http.StatusNoContent)
})

// A client that sends its body slowly (here: part of it, then nothing) is
// cut off once the read timeout has passed.
func TestSlowBodyClientIsCutAfterReadTimeout(t *testing.T) {
	addr := serveLimited(t, Limits{ReadTimeout: 300 * time.Millisecond, WriteTimeout: time.Hour, IdleTimeout: time.Hour}, readsBody)
	c := dial(t, addr)
	_, err := io.WriteString(c, "POST /api/v1/apply HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"+
		"Content-Length: 100000\r\n\r\n{\"resources\":")
	require.NoError(t, err)
	closedByServer(t, c)
}

// A kept-alive connection that sends nothing more is closed after the idle
// timeout.
func TestIdleConnectionIsClosedAfterIdleTimeout(t *testing.T) {
	addr := serveLimited(t, Limits{ReadTimeout: time.Hour, WriteTimeout: time.Hour, IdleTimeout: 300 * time.Millisecond}, readsBody)
	c := dial(t, addr)
	_, err := io.WriteString(c, "GET /api/v1/types HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusNoContent, resp.StatusCode)
	assert.False(t, resp.Close, "kept alive")
	closedByServer(t, c)
}

// No more than MaxConnections connections are served at once: the next
// one is not answered until one of them closes.
func TestConnectionCapHolds(t *testing.T) {
	addr := serveLimited(t, Limits{MaxConnections: 2, ReadTimeout: time.Hour, WriteTimeout: time.Hour, IdleTimeout: time.Hour}, readsBody)
	holders := []net.Conn{dial(t, addr), dial(t, addr)}
	// Both are accepted: each gets an answer.
	for _, h := range holders {
		_, err := io.WriteString(h, "GET /a HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		require.NoError(t, err)
		require.NoError(t, h.SetReadDeadline(time.Now().Add(patience)))
		resp, err := http.ReadResponse(bufio.NewReader(h), nil)
		require.NoError(t, err)
		resp.Body.Close()
	}

	third := dial(t, addr)
	_, err := io.WriteString(third, "GET /a HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(third)
	require.NoError(t, third.SetReadDeadline(time.Now().Add(300*time.Millisecond)))
	_, err = br.ReadByte()
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "a third connection is not served while two are open")

	require.NoError(t, holders[0].Close())
	require.NoError(t, third.SetReadDeadline(time.Now().Add(patience)))
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err, "served once a slot is free")
	resp.Body.Close()
	assert.Equal(t, http.StatusNoContent, resp.StatusCode)
}

// A health probe cannot hold a connection: the server closes it after the
// answer, keep-alive or not.
func TestHealthzDoesNotHoldConnections(t *testing.T) {
	addr := serveLimited(t, Limits{ReadTimeout: time.Hour, WriteTimeout: time.Hour, IdleTimeout: time.Hour}, readsBody)
	for _, p := range PublicPaths() {
		c := dial(t, addr)
		_, err := io.WriteString(c, "GET "+p+" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n")
		require.NoError(t, err)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err)
		resp.Body.Close()
		assert.True(t, resp.Close, "%s answers with Connection: close", p)
		closedByServer(t, c)
	}
}

func TestLimitsDefaults(t *testing.T) {
	l := Limits{}.WithDefaults()
	assert.Equal(t, Limits{ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: time.Minute,
		IdleTimeout: time.Minute, MaxConnections: 128}, l)
	assert.Equal(t, time.Second, Limits{ReadTimeout: time.Second}.WithDefaults().ReadHeaderTimeout, "never longer than the read timeout")
	srv := NewServer(http.NotFoundHandler(), Limits{}, nil)
	assert.Equal(t, 30*time.Second, srv.ReadTimeout)
	assert.Equal(t, MaxHeaderBytes, srv.MaxHeaderBytes)
}

// serveStoppable runs NewServer(h) on a loopback listener and returns it
// with its address; the test stops it, Serve's result is checked after.
func serveStoppable(t *testing.T, h http.Handler) (*Server, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := NewServer(h, Limits{}, nil)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() { require.ErrorIs(t, <-done, http.ErrServerClosed) })
	return srv, lis.Addr().String()
}

// A connection opened without a request (browsers open them ahead of
// use) neither fails nor stretches a stop: http.Server.Shutdown alone
// waits until such a connection is over five seconds old.
func TestStopClosesConnectionsThatSentNoRequest(t *testing.T) {
	srv, addr := serveStoppable(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	c := dial(t, addr)
	// The server has accepted it once a request on another connection
	// has been answered (one accept loop, in order).
	resp, err := http.Get("http://" + addr + "/")
	require.NoError(t, err)
	resp.Body.Close()

	st, err := srv.Stop(300 * time.Millisecond)
	require.NoError(t, err)
	assert.Zero(t, st, "no request was being served")
	closedByServer(t, c)
}

// A request still running when the grace runs out is cut: its context
// ends, Stop counts it and returns once its handler has.
func TestStopCutsRequestsRunningPastTheGrace(t *testing.T) {
	entered, returned := make(chan struct{}), make(chan error, 1)
	srv, addr := serveStoppable(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		select {
		case <-r.Context().Done():
			returned <- r.Context().Err()
		case <-time.After(patience):
			returned <- errors.New("request context not cancelled")
		}
	}))
	clientErr := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
		}
		clientErr <- err
	}()
	<-entered
	st, err := srv.Stop(200 * time.Millisecond)
	require.NoError(t, err)
	assert.Equal(t, Stopped{Cut: 1}, st)
	select {
	case err := <-returned:
		require.ErrorIs(t, err, context.Canceled, "the handler saw its request end")
	default:
		t.Fatal("Stop returned before the cut handler did")
	}
	require.Error(t, <-clientErr, "the client's request was cut")
}

// A request that finishes within the grace is answered in full.
func TestStopLetsRequestsFinishWithinTheGrace(t *testing.T) {
	entered := make(chan struct{})
	srv, addr := serveStoppable(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		time.Sleep(200 * time.Millisecond)
		_, _ = io.WriteString(w, "done")
	}))
	body := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			body <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body <- string(b)
	}()
	<-entered
	st, err := srv.Stop(patience)
	require.NoError(t, err)
	assert.Zero(t, st)
	assert.Equal(t, "done", <-body)
}
