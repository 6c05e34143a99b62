package httpauth

import (
	"net"
	"net/http"
	"time"

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

// NewServer returns an http.Server for h with l's timeouts (defaults for
// zero fields) and MaxHeaderBytes. Serve it on LimitListener(lis, l), so
// that the connection limit holds too.
func NewServer(h http.Handler, l Limits) *http.Server {
	l = l.WithDefaults()
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
}

// LimitListener returns lis accepting at most l.MaxConnections (default
// DefaultMaxConnections) connections at once: golang.org/x/net/netutil's
// LimitListener. Wrap the TCP listener, under any TLS listener, so that
// connections still in their handshake count too.
func LimitListener(lis net.Listener, l Limits) net.Listener {
	return netutil.LimitListener(lis, l.WithDefaults().MaxConnections)
}
