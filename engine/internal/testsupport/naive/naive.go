// Package naive is a deliberately broken KDS peer, for tests and benchmarks
// only: it reproduces the flow-control deadlock that package mux prevents.
//
// Its receive loop calls the request handler inline and hands the reply to a
// send buffer of size 1 before it reads again; one goroutine drains that
// buffer with blocking Sends. When both peers of a stream send bursts of
// large messages, both HTTP/2 windows fill, both senders block, both receive
// loops block on their full send buffer, and nothing moves again.
//
// Nothing in the engine's configuration can select it: it lives under
// internal/testsupport and is imported only by tests and benchmark code.
package naive

import (
	"context"
	"errors"
	"fmt"
	"sync"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/kds-engine/kds-engine/engine/internal/mux"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// Config is what a Peer does with what it receives.
type Config struct {
	// Handle answers a request; a nil reply sends nothing. Called inline by
	// the receive loop.
	Handle func(*discovery.DeltaDiscoveryRequest) *discovery.DeltaDiscoveryResponse
	// OnResponse is called inline by the receive loop for each response.
	OnResponse func(*discovery.DeltaDiscoveryResponse)
	// Abort must make a Send or Recv blocked on the stream return (cancel a
	// client stream's context; end a server RPC). Run calls it when it stops.
	Abort func()
}

// Peer is the naive pattern on one stream.
type Peer struct {
	stream mux.Stream
	cfg    Config
	out    chan *kdsv1.Message // the size-1 send buffer
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// New returns a Peer on stream. Nothing runs until Run.
func New(stream mux.Stream, cfg Config) *Peer {
	p := &Peer{stream: stream, cfg: cfg, out: make(chan *kdsv1.Message, 1)}
	p.ctx, p.cancel = context.WithCancelCause(stream.Context())
	return p
}

// SendRequest hands r to the size-1 send buffer, blocking while it is full.
func (p *Peer) SendRequest(r *discovery.DeltaDiscoveryRequest) error {
	return p.put(&kdsv1.Message{Kind: &kdsv1.Message_Request{Request: r}})
}

func (p *Peer) put(m *kdsv1.Message) error {
	select {
	case p.out <- m:
		return nil
	case <-p.ctx.Done():
		return context.Cause(p.ctx)
	}
}

// Run runs the receive loop and the sender until ctx ends or the stream
// fails, then aborts the stream, joins both and returns the cause.
func (p *Peer) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { p.cancel(context.Cause(ctx)) })
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-p.ctx.Done():
				return
			case m := <-p.out:
				if err := p.stream.Send(m); err != nil {
					p.cancel(fmt.Errorf("send: %w", err))
					return
				}
			}
		}
	})
	wg.Go(func() {
		for {
			m, err := p.stream.Recv()
			if err != nil {
				p.cancel(fmt.Errorf("receive: %w", err))
				return
			}
			switch k := m.GetKind().(type) {
			case *kdsv1.Message_Request:
				if p.cfg.Handle == nil {
					continue
				}
				if reply := p.cfg.Handle(k.Request); reply != nil {
					// The naive step: wait for room in the send buffer
					// before reading again.
					if p.put(&kdsv1.Message{Kind: &kdsv1.Message_Response{Response: reply}}) != nil {
						return
					}
				}
			case *kdsv1.Message_Response:
				if p.cfg.OnResponse != nil {
					p.cfg.OnResponse(k.Response)
				}
			default:
				p.cancel(errors.New("message with unknown kind"))
				return
			}
		}
	})
	<-p.ctx.Done()
	if p.cfg.Abort != nil {
		p.cfg.Abort()
	}
	wg.Wait()
	return context.Cause(p.ctx)
}
