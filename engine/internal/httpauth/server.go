package httpauth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/net/netutil"
)

// Defaults of Limits. Every route of the admin API answers one request with
// one response — none streams or watches — so a request that takes longer
// than these is a slow or stuck client, not a long-lived endpoint.
const (
	// DefaultReadHeaderTimeout bounds reading a request's headers (and the
	// TLS handshake before them).
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultReadTimeout bounds reading a whole request, body included.
	DefaultReadTimeout = 30 * time.Second
	// DefaultWriteTimeout bounds the time from the end of the request's
	// headers to the end of the response (handling included).
	DefaultWriteTimeout = time.Minute
	// DefaultIdleTimeout bounds how long a kept-alive connection waits for
	// its next request.
	DefaultIdleTimeout = time.Minute
	// DefaultMaxConnections bounds the connections served at once.
	DefaultMaxConnections = 128
	// MaxHeaderBytes bounds a request's headers.
	MaxHeaderBytes = 64 << 10
)

// Limits bound what clients of the admin API can hold on to. Zero fields
// take the defaults above.
type Limits struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	// MaxConnections is how many connections are served at once; further
	// ones wait in the listen queue until one closes (LimitListener).
	MaxConnections int
}

// WithDefaults returns l with every zero field set to its default. The
// header timeout is never longer than the read timeout.
func (l Limits) WithDefaults() Limits {
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = DefaultReadTimeout
	}
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = min(DefaultReadHeaderTimeout, l.ReadTimeout)
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = DefaultWriteTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	if l.MaxConnections <= 0 {
		l.MaxConnections = DefaultMaxConnections
	}
	return l
}

// Server is an http.Server that counts the requests it is serving, so
// that Stop can say how many a shutdown cut, and tracks its connections
// (its ConnState hook), so that Stop can close them under TLS too. A
// caller that sets another ConnState must call the one it replaces.
type Server struct {
	*http.Server
	inFlight atomic.Int64
	// base is every request's parent context; Stop cancels it when the
	// grace runs out.
	base       context.Context
	cancelBase context.CancelFunc

	mu sync.Mutex
	// conns are the connections open, each with the connection under
	// it when it is TLS (closing that one sends nothing).
	conns map[net.Conn]net.Conn
}

// NewServer returns a Server for h with l's timeouts (defaults for zero
// fields) and MaxHeaderBytes, that reports what net/http logs to log (see
// errorLog; nil discards it). Serve it on LimitListener(lis, l), so that
// the connection limit holds too, and end it with Stop.
func NewServer(h http.Handler, l Limits, log hclog.Logger) *Server {
	l = l.WithDefaults()
	if log == nil {
		log = hclog.NewNullLogger()
	}
	s := &Server{conns: make(map[net.Conn]net.Conn)}
	s.base, s.cancelBase = context.WithCancel(context.Background())
	s.Server = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.inFlight.Add(1)
			defer s.inFlight.Add(-1)
			h.ServeHTTP(w, r)
		}),
		BaseContext:       func(net.Listener) context.Context { return s.base },
		ConnState:         s.track,
		ErrorLog:          errorLog(log),
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
	return s
}

// errorLog is an http.Server's ErrorLog that writes to log: what net/http
// says of clients (a TLS handshake that failed or was cut by a stop, a
// malformed request) at debug level, a handler's panic as an error.
func errorLog(log hclog.Logger) *stdlog.Logger {
	return stdlog.New(serverErrors{log}, "", 0)
}

type serverErrors struct{ log hclog.Logger }

func (w serverErrors) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if strings.Contains(msg, "panic serving") {
		w.log.Error(msg)
	} else {
		w.log.Debug(msg)
	}
	return len(p), nil
}

// track keeps s.conns: a connection from its first state to its last.
func (s *Server) track(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch st {
	case http.StateNew:
		raw := c
		if tc, ok := c.(*tls.Conn); ok {
			raw = tc.NetConn()
		}
		s.conns[c] = raw
	case http.StateClosed, http.StateHijacked:
		delete(s.conns, c)
	}
}

// closeConns closes the connections under every open one, sending
// nothing: a TLS close_notify to a client that reads nothing waits up to
// five seconds (crypto/tls), each, and http.Server closes them one after
// the other, holding its lock.
func (s *Server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, raw := range s.conns {
		_ = raw.Close()
	}
}

// Stopped is what Stop did to the requests being served.
type Stopped struct {
	// Cut is how many requests were still being served when the grace
	// ran out: their contexts were cancelled, their connections closed.
	Cut int
	// Running is how many handlers had still not returned a grace after
	// that: they ignore their request's context, and outlive Stop.
	Running int
}

// Stop ends the server: it stops accepting, lets the requests being served
// finish for at most grace, then cancels the context of those still
// running and closes every connection left — including ones a client
// opened without sending a request yet (browsers open such ahead of use;
// http.Server.Shutdown alone waits seconds for them) and TLS ones whose
// client reads nothing (closed under TLS, without a close_notify). It
// waits at most grace again for the cut requests' handlers to return, so
// it returns within about twice grace. err is only an error closing the
// listeners. Serve then returns http.ErrServerClosed.
func (s *Server) Stop(grace time.Duration) (Stopped, error) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(ctx) }()
	select {
	case err := <-shut:
		if !errors.Is(err, context.DeadlineExceeded) {
			s.cancelBase()
			// Connections still tracked are closing, maybe in a
			// close_notify to a client that reads nothing.
			s.closeConns()
			return Stopped{}, err
		}
		shut <- err
	case <-ctx.Done():
		// Shutdown may still be closing idle TLS connections.
	}
	// Connections first, contexts after: a cut handler that returns at
	// once must not answer its client as if all went well.
	st := Stopped{Cut: int(s.inFlight.Load())}
	s.closeConns()
	err := s.Close()
	s.cancelBase()
	if serr := <-shut; err == nil && serr != nil && !errors.Is(serr, context.DeadlineExceeded) {
		err = serr
	}
	if err != nil {
		return st, fmt.Errorf("close admin connections: %w", err)
	}
	deadline := time.Now().Add(grace)
	for s.inFlight.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	st.Running = int(s.inFlight.Load())
	return st, nil
}

// LimitListener returns lis accepting at most l.MaxConnections (default
// DefaultMaxConnections) connections at once: golang.org/x/net/netutil's
// LimitListener. Wrap the TCP listener, under any TLS listener, so that
// connections still in their handshake count too.
func LimitListener(lis net.Listener, l Limits) net.Listener {
	return netutil.LimitListener(lis, l.WithDefaults().MaxConnections)
}
