package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/kds-engine/kds-engine/engine/internal/mux"
	kdsv1 "github.com/kds-engine/kds-engine/proto/kds/v1"
)

// EngineWindow is how many responses each engine end keeps unacknowledged in
// the throughput workload (and the session's type count, so its buffers fit
// them, as application flow control would size them).
const EngineWindow = 256

// AckEvery is how many responses one ACK of the throughput workload
// acknowledges by default: the credit returns in batches, so the engine
// carries the raw workload's payloads plus one small message per AckEvery.
// The sync client's real pattern is one ACK per response (EngineOptions).
const AckEvery = EngineWindow / 8

// EngineOptions shape the engine side of the throughput workload.
type EngineOptions struct {
	// AckEvery is how many responses one ACK acknowledges (default
	// AckEvery; 1 is the sync client's pattern: one ACK per response).
	// EngineWindow must be a multiple of it.
	AckEvery int
	// Mux are extra options for both sessions.
	Mux []mux.Option
}

func (o EngineOptions) ackEvery() int {
	if o.AckEvery <= 0 {
		return AckEvery
	}
	return o.AckEvery
}

// RawThroughput streams n messages of the payload's size from each end of a
// fresh loopback stream to the other, both directions at once, with plain
// gRPC Send and Recv (one sending and one receiving goroutine per end). It
// returns the time until both ends received everything.
func RawThroughput(ctx context.Context, pl Payload, n int) (time.Duration, error) {
	pair, err := NewPair(ctx, PairOptions{})
	if err != nil {
		return 0, err
	}
	defer pair.Close()
	msg := &kdsv1.Message{Kind: &kdsv1.Message_Response{Response: pl.Response}}
	ends := []mux.Stream{pair.Client, pair.Server}
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	start := time.Now()
	for _, e := range ends {
		wg.Go(func() {
			for range n {
				if err := e.Send(msg); err != nil {
					errs <- fmt.Errorf("raw send: %w", err)
					return
				}
			}
		})
		wg.Go(func() {
			for range n {
				if _, err := e.Recv(); err != nil {
					errs <- fmt.Errorf("raw receive: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	return elapsed, <-errs
}

// EngineThroughput carries the same payloads as RawThroughput through a
// mux.Session on each end: each end's serving stream sends n responses,
// keeping at most EngineWindow unacknowledged, and each end's subscribing
// stream acknowledges every AckEvery responses with one small request (a
// cumulative ACK: the application-level flow control that bounds the
// session's buffers). It returns the time until both ends received every
// response and every ACK. n must be a multiple of the ACK interval (o).
func EngineThroughput(ctx context.Context, pl Payload, n int, o EngineOptions) (time.Duration, error) {
	ackEvery := o.ackEvery()
	if n%ackEvery != 0 || EngineWindow%ackEvery != 0 {
		return 0, fmt.Errorf("engine: %d messages or a window of %d is not a multiple of %d", n, EngineWindow, ackEvery)
	}
	pair, err := NewPair(ctx, PairOptions{})
	if err != nil {
		return 0, err
	}
	defer pair.Close()
	ack := &discovery.DeltaDiscoveryRequest{TypeUrl: "bench", ResponseNonce: "ack"}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	ends := []struct {
		stream mux.Stream
		abort  func()
	}{{pair.Client, pair.AbortClient}, {pair.Server, pair.AbortServer}}
	sessions := make([]*mux.Session, len(ends))
	var runs sync.WaitGroup
	for i, e := range ends {
		sessions[i] = mux.NewSession(e.stream, EngineWindow, append([]mux.Option{mux.WithAbort(e.abort)}, o.Mux...)...)
		runs.Go(func() { _ = sessions[i].Run(runCtx) })
	}
	defer runs.Wait()
	defer cancel()

	errs := make(chan error, 6)
	var wg sync.WaitGroup
	start := time.Now()
	for _, s := range sessions {
		credit := make(chan struct{}, EngineWindow)
		wg.Go(func() { // serve: send responses within the window
			for range n {
				select {
				case credit <- struct{}{}:
				case <-s.Done():
					errs <- s.Err()
					return
				}
				if err := s.Server().Send(pl.Response); err != nil {
					errs <- err
					return
				}
			}
		})
		wg.Go(func() { // serve: each ACK frees AckEvery slots
			for range n / ackEvery {
				if _, err := s.Server().Recv(); err != nil {
					errs <- err
					return
				}
				for range ackEvery {
					<-credit
				}
			}
		})
		wg.Go(func() { // subscribe: receive, ACK every ackEvery
			for i := range n {
				if _, err := s.Client().Recv(); err != nil {
					errs <- err
					return
				}
				if (i+1)%ackEvery != 0 {
					continue
				}
				if err := s.Client().Send(ack); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return elapsed, fmt.Errorf("engine: %w", err)
	}
	return elapsed, nil
}

// Comparison is the outcome of Compare.
type Comparison struct {
	Size, Messages, Rounds int
	// Raw and Engine are the total times over all rounds.
	Raw, Engine time.Duration
}

// payloadBytes is the payload moved per run: n messages each way.
func (c Comparison) payloadBytes() float64 { return float64(2 * c.Messages * c.Size * c.Rounds) }

// RawMBps and EngineMBps are payload throughputs in MB/s (both directions
// added).
func (c Comparison) RawMBps() float64 { return c.payloadBytes() / c.Raw.Seconds() / 1e6 }

// EngineMBps: see RawMBps.
func (c Comparison) EngineMBps() float64 { return c.payloadBytes() / c.Engine.Seconds() / 1e6 }

// Ratio is engine throughput over raw throughput.
func (c Comparison) Ratio() float64 { return c.Raw.Seconds() / c.Engine.Seconds() }

// Compare runs RawThroughput and EngineThroughput alternately, rounds times
// each, with n messages of size bytes each way, and returns the totals.
func Compare(ctx context.Context, size, n, rounds int) (Comparison, error) {
	return CompareWith(ctx, size, n, rounds, EngineOptions{})
}

// CompareWith is Compare with the engine side shaped by o.
func CompareWith(ctx context.Context, size, n, rounds int, o EngineOptions) (Comparison, error) {
	c := Comparison{Size: size, Messages: n, Rounds: rounds}
	pl := NewPayload(size)
	for range rounds {
		d, err := RawThroughput(ctx, pl, n)
		if err != nil {
			return c, err
		}
		c.Raw += d
		d, err = EngineThroughput(ctx, pl, n, o)
		if err != nil {
			return c, err
		}
		c.Engine += d
	}
	return c, nil
}
