package kdsbench

import (
	"context"
	"fmt"

	"github.com/kds-engine/kds-engine/engine/internal/mux"
	"github.com/kds-engine/kds-engine/engine/internal/testsupport/bench"
)

// TransportConfig sizes the transport mode.
type TransportConfig struct {
	Rounds int // alternating raw/engine rounds per size (default 3)
	// Messages per direction for 1 KiB and 64 KiB (default 20480 and 2048).
	Small, Large int
	// AckEvery is how many responses one engine ACK acknowledges (default
	// bench.AckEvery, 32; 1 is the sync client's pattern).
	AckEvery int
	// NoCoalesce sends one message per gRPC message, as an engine does
	// with a peer that did not announce kds-coalesce.
	NoCoalesce bool
}

// Transport compares an engine session with a raw gRPC bidi stream, both
// directions at once, at 1 KiB and 64 KiB (bench.Compare).
func Transport(ctx context.Context, o Options, c TransportConfig) (*Report, error) {
	o = o.withDefaults()
	if c.Rounds <= 0 {
		c.Rounds = 3
	}
	if c.Small <= 0 {
		c.Small = 20480
	}
	if c.Large <= 0 {
		c.Large = 2048
	}
	// With one ACK per response (the sync client's pattern) the 1 KiB
	// target is the round-two one, 0.8×; without ACKs it stays 0.6×.
	small := 0.6
	if c.AckEvery == 1 {
		small = 0.8
	}
	r := newReport("transport", fmt.Sprintf("engine session ≥ 0.8× raw gRPC at 64 KiB and ≥ %.1f× at 1 KiB", small),
		"size", "messages/direction", "rounds", "raw MB/s", "engine MB/s", "engine/raw", "target")
	for _, x := range []struct {
		size, n int
		target  float64
	}{{1 << 10, c.Small, small}, {64 << 10, c.Large, 0.8}} {
		o.Progress.Start(fmt.Sprintf("transport %d KiB", x.size>>10), 0)
		res, err := bench.CompareWith(ctx, x.size, x.n, c.Rounds, bench.EngineOptions{AckEvery: c.AckEvery, Mux: []mux.Option{mux.WithCoalesce(!c.NoCoalesce)}})
		o.Progress.Finish()
		if err != nil {
			return nil, err
		}
		r.row(fmt.Sprintf("%d KiB", x.size>>10), x.n, c.Rounds, res.RawMBps(), res.EngineMBps(), res.Ratio(), fmt.Sprintf("≥ %.1f", x.target))
		k := fmt.Sprintf("%dkib_", x.size>>10)
		r.Figures[k+"raw_mbps"] = res.RawMBps()
		r.Figures[k+"engine_mbps"] = res.EngineMBps()
		r.Figures[k+"ratio"] = res.Ratio()
		if res.Ratio() < x.target {
			r.Pass = false
		}
	}
	r.note("loopback, default gRPC windows, no TLS; MB/s counts payload in both directions")
	ack := c.AckEvery
	if ack <= 0 {
		ack = bench.AckEvery
	}
	r.note("engine: one ACK per %d responses (the sync client sends one per response: --ack-every 1)", ack)
	r.Figures["ack_every"] = float64(ack)
	if c.NoCoalesce {
		r.note("engine: one message per gRPC message (--no-coalesce)")
	} else {
		r.note("engine: messages ready together share a gRPC message (kds-coalesce)")
	}
	return r, nil
}
