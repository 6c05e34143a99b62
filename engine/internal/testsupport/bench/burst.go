package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kds-engine/kds-engine/engine/internal/mux"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/naive"
)

// Mode selects the peer implementation a workload runs.
type Mode int

const (
	// Engine runs a mux.Session on each end.
	Engine Mode = iota
	// Naive runs the naive peer (package naive) on each end.
	Naive
)

func (m Mode) String() string {
	if m == Naive {
		return "naive"
	}
	return "engine"
}

// BurstWindow is the static HTTP/2 window the burst exchange uses on both
// sides: small and fixed, so a burst fills it as it would a busy link.
const BurstWindow = 64 << 10

// BurstResult is the outcome of one burst exchange.
type BurstResult struct {
	// Completed: every request was answered and every response received,
	// on both ends.
	Completed bool
	// Progress is how many of the Target events (requests answered plus
	// responses received, both ends) happened.
	Progress, Target int64
	Elapsed          time.Duration
}

// Payload holds the shared, read-only messages of a workload: a request
// and a response each carrying size bytes in a bytes field (the request in
// its error detail, the response in one resource). Sharing them keeps a
// 500 MB exchange from allocating 500 MB of payloads (concurrent marshalling
// of one message is safe). Bytes rather than string fields: protobuf
// validates UTF-8 in strings byte by byte, which the race detector makes
// very slow.
type Payload struct {
	Request  *discovery.DeltaDiscoveryRequest
	Response *discovery.DeltaDiscoveryResponse
}

// NewPayload returns a Payload of size bytes per message.
func NewPayload(size int) Payload {
	return Payload{
		Request: &discovery.DeltaDiscoveryRequest{TypeUrl: "bench", ErrorDetail: &status.Status{
			Details: []*anypb.Any{{TypeUrl: "bench", Value: make([]byte, size)}},
		}},
		Response: &discovery.DeltaDiscoveryResponse{TypeUrl: "bench", Resources: []*discovery.Resource{
			{Name: "payload", Resource: &anypb.Any{TypeUrl: "bench", Value: make([]byte, size)}},
		}},
	}
}

// Burst opens a loopback stream with BurstWindow windows and has both ends
// send k requests of size bytes at once, each answered with a response of
// size bytes. It returns when every message arrived (Completed) or when
// nothing moved for stall (a deadlock); either way everything it started has
// been joined. An engine session is sized for the burst (types = k): the
// peer's burst is its in-flight window.
func Burst(ctx context.Context, mode Mode, size, k int, stall time.Duration) (BurstResult, error) {
	pair, err := NewPair(ctx, PairOptions{Window: BurstWindow, MaxMessageSize: 2*size + 4<<20})
	if err != nil {
		return BurstResult{}, err
	}
	defer pair.Close()

	res := BurstResult{Target: 4 * int64(k)}
	pl := NewPayload(size)
	var progress atomic.Int64
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var completed [2]chan struct{}
	var failOnce sync.Once
	var failure error
	var wg sync.WaitGroup
	ends := []struct {
		stream mux.Stream
		abort  func()
	}{{pair.Client, pair.AbortClient}, {pair.Server, pair.AbortServer}}
	start := time.Now()
	for i, e := range ends {
		completed[i] = make(chan struct{})
		wg.Go(func() {
			if err := runEnd(runCtx, mode, e.stream, e.abort, k, pl, &progress, completed[i]); err != nil {
				failOnce.Do(func() { failure = err })
				cancel()
			}
		})
	}

	both := make(chan struct{})
	wg.Go(func() {
		select {
		case <-completed[0]:
		case <-runCtx.Done():
			return
		}
		select {
		case <-completed[1]:
			close(both)
		case <-runCtx.Done():
		}
	})
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last, lastMove := int64(-1), time.Now()
	for done := false; !done; {
		select {
		case <-both:
			res.Completed = true
			done = true
		case <-ctx.Done():
			done = true
		case now := <-tick.C:
			if p := progress.Load(); p != last {
				last, lastMove = p, now
			} else if now.Sub(lastMove) >= stall {
				done = true
			}
		}
	}
	res.Elapsed = time.Since(start)
	res.Progress = progress.Load()
	cancel()
	wg.Wait()
	if failure != nil {
		return res, failure
	}
	if !res.Completed && ctx.Err() != nil {
		return res, ctx.Err()
	}
	return res, nil
}

// runEnd runs one end of the burst until ctx ends, closing completed once
// it has answered k requests and received k responses. It returns an error
// only for an engine session that failed before ctx ended.
func runEnd(ctx context.Context, mode Mode, stream mux.Stream, abort func(), k int, pl Payload, progress *atomic.Int64, completed chan struct{}) error {
	var answered, received atomic.Int64
	var once sync.Once
	step := func(c *atomic.Int64) {
		progress.Add(1)
		if c.Add(1) == int64(k) && answered.Load() == int64(k) && received.Load() == int64(k) {
			once.Do(func() { close(completed) })
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	switch mode {
	case Naive:
		p := naive.New(stream, naive.Config{
			Handle: func(*discovery.DeltaDiscoveryRequest) *discovery.DeltaDiscoveryResponse {
				step(&answered)
				return pl.Response
			},
			OnResponse: func(*discovery.DeltaDiscoveryResponse) { step(&received) },
			Abort:      abort,
		})
		wg.Go(func() {
			for range k {
				if p.SendRequest(pl.Request) != nil {
					return
				}
			}
		})
		_ = p.Run(ctx)
		return nil
	default:
		s := mux.NewSession(stream, k, mux.WithAbort(abort))
		wg.Go(func() {
			for range k {
				if s.Client().Send(pl.Request) != nil {
					return
				}
			}
		})
		wg.Go(func() {
			for range k {
				if _, err := s.Server().Recv(); err != nil {
					return
				}
				if s.Server().Send(pl.Response) != nil {
					return
				}
				step(&answered)
			}
		})
		wg.Go(func() {
			for range k {
				if _, err := s.Client().Recv(); err != nil {
					return
				}
				step(&received)
			}
		})
		err := s.Run(ctx)
		if ctx.Err() == nil {
			// The session ended before the workload did.
			return fmt.Errorf("%s end: %w", mode, err)
		}
		return nil
	}
}
