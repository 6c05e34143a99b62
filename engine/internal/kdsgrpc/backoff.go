package kdsgrpc

import (
	"math/rand/v2"
	"time"
)

// Backoff is the zone's reconnect policy: exponential growth from Base,
// capped at Cap, with jitter; it starts over after a session that lived at
// least ResetAfter.
type Backoff struct {
	Base, Cap  time.Duration
	ResetAfter time.Duration
}

// DefaultBackoff: 1s doubling up to 30s, reset after a session of 1m.
var DefaultBackoff = Backoff{Base: time.Second, Cap: 30 * time.Second, ResetAfter: time.Minute}

func (b Backoff) withDefaults() Backoff {
	if b.Base <= 0 {
		b.Base = DefaultBackoff.Base
	}
	if b.Cap <= 0 {
		b.Cap = DefaultBackoff.Cap
	}
	if b.Cap < b.Base {
		b.Cap = b.Base
	}
	if b.ResetAfter <= 0 {
		b.ResetAfter = DefaultBackoff.ResetAfter
	}
	return b
}

// Delay is the wait before reconnect attempt n (0 for the first retry):
// d = min(Cap, Base·2ⁿ), then a uniformly random value in [d/2, d]
// ("equal jitter": zones that lost global together spread out, and the wait
// still grows).
func (b Backoff) Delay(n int) time.Duration {
	b = b.withDefaults()
	d := b.Base
	for i := 0; i < n && d < b.Cap; i++ {
		d *= 2
	}
	d = min(d, b.Cap)
	half := d / 2
	return half + rand.N(d-half+1)
}
