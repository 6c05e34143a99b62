package plugin

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// sharing is one plugin's state for shared Validate RPCs (see
// Host.ValidateBatch): how many shared calls are in flight and the groups
// of small batches queued behind them, first to go first. The queue is
// empty unless every slot is in flight.
type sharing struct {
	mu       sync.Mutex
	inFlight int
	queue    []*callGroup
}

// waitingCallers counts the callers queued for a shared call that have
// not left.
func (s *sharing) waitingCallers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, g := range s.queue {
		for _, me := range g.members {
			if !me.gone {
				n++
			}
		}
	}
	return n
}

// callGroup is the batches of several callers that go as one RPC.
type callGroup struct {
	members []*member
	n       int // resources queued, also of members that left
	bytes   int
	started bool
	waiting int                // members still waiting for the result
	cancel  context.CancelFunc // the RPC's, once started
	done    chan struct{}      // closed once res and err are set
	res     map[int][]resource.FieldError
	err     error
}

// member is one caller's batch in a group.
type member struct {
	ctx  context.Context
	rs   []*resource.Resource
	off  int  // index of rs[0] in the RPC, once the group started
	gone bool // left before the group started: not sent
}

// shareable reports whether rs is small enough to share an RPC, and its
// approximate wire size: at most half the batch size and half of
// MaxBatchBytes. Larger batches gain little from sharing and go at once,
// so a large validation keeps its own RPCs in flight side by side.
func (h *Host) shareable(rs []*resource.Resource) (int, bool) {
	if len(rs) == 0 || 2*len(rs) > h.batchSize {
		return 0, false
	}
	bytes := 0
	for _, r := range rs {
		bytes += approxSize(r)
		if 2*bytes > MaxBatchBytes {
			return 0, false
		}
	}
	return bytes, true
}

// sendFunc sends rs in one RPC; warnCtx(i), when warnCtx is set, is the
// context whose warnings collector takes the warnings about rs[i].
type sendFunc func(ctx context.Context, rs []*resource.Resource, warnCtx func(i int) context.Context) (map[int][]resource.FieldError, error)

// shared validates rs, a batch of plugin m of the given approximate size,
// sharing its RPC (see Host.ValidateBatch).
func (h *Host) shared(ctx context.Context, pluginName string, m *managed, rs []*resource.Resource, bytes int) (map[int][]resource.FieldError, error) {
	send := func(ctx context.Context, rs []*resource.Resource, warnCtx func(int) context.Context) (map[int][]resource.FieldError, error) {
		return h.validateBatch(ctx, pluginName, m, rs, warnCtx)
	}
	return m.share.do(ctx, pluginName, rs, bytes, SharedCallsInFlight, h.batchSize, MaxBatchBytes, send, h.spawnSend)
}

// spawnSend runs f on a goroutine that Close joins; f must end soon after
// h.ctx ends. It fails once the host is closed.
func (h *Host) spawnSend(f func(base context.Context)) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.closed {
		return fmt.Errorf("plugin host closed: %w", ErrPluginDown)
	}
	h.sends.Add(1)
	go func() {
		defer h.sends.Done()
		f(h.ctx)
	}()
	return nil
}

// do validates rs (of the given approximate size) with send: at once on
// this goroutine when fewer than slots shared calls are in flight,
// otherwise in the last group queued behind them, of at most maxN
// resources and maxBytes. When a call ends and groups are queued, its slot
// passes to a goroutine that spawn starts, which sends the queued groups
// one after the other, each in one call of send, with contexts derived
// from the context spawn gives it. When spawn fails, the queued callers
// get its error.
func (s *sharing) do(ctx context.Context, pluginName string, rs []*resource.Resource, bytes, slots, maxN, maxBytes int, send sendFunc, spawn func(func(base context.Context)) error) (map[int][]resource.FieldError, error) {
	s.mu.Lock()
	if s.inFlight < slots {
		s.inFlight++
		s.mu.Unlock()
		res, err := send(ctx, rs, nil)
		s.next(send, spawn)
		return res, err
	}
	var g *callGroup
	if k := len(s.queue); k > 0 && s.queue[k-1].n+len(rs) <= maxN && s.queue[k-1].bytes+bytes <= maxBytes {
		g = s.queue[k-1]
	} else {
		g = &callGroup{done: make(chan struct{})}
		s.queue = append(s.queue, g)
	}
	me := &member{ctx: ctx, rs: rs}
	g.members = append(g.members, me)
	g.n += len(rs)
	g.bytes += bytes
	g.waiting++
	s.mu.Unlock()

	select {
	case <-g.done:
		if g.err != nil {
			return nil, g.err
		}
		out := map[int][]resource.FieldError{}
		for i := range rs {
			if fes, ok := g.res[me.off+i]; ok {
				out[i] = fes
			}
		}
		return out, nil
	case <-ctx.Done():
		s.mu.Lock()
		g.waiting--
		if !g.started {
			me.gone = true
		} else if g.waiting == 0 {
			g.cancel() // nobody waits for this call any more
		}
		s.mu.Unlock()
		return nil, fmt.Errorf("validate with plugin %q: %w", pluginName, context.Cause(ctx))
	}
}

// next hands the caller's slot, when groups are queued, to a goroutine
// that sends them one after the other; otherwise it frees the slot.
func (s *sharing) next(send sendFunc, spawn func(func(base context.Context)) error) {
	s.mu.Lock()
	if len(s.queue) == 0 {
		s.inFlight--
		s.mu.Unlock()
		return
	}
	// The slot stays taken, so callers keep queueing. spawn (which takes
	// the host's lock) runs without s.mu.
	s.mu.Unlock()
	if err := spawn(func(base context.Context) { s.sendQueued(base, send) }); err != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, g := range s.queue {
			g.err = err
			close(g.done)
		}
		s.queue = nil
		s.inFlight--
	}
}

// sendQueued sends the queued groups, one call at a time, until the queue
// is empty, then frees its slot. A call's context ends with base or when
// every caller of its group left.
func (s *sharing) sendQueued(base context.Context, send sendFunc) {
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.inFlight--
			s.mu.Unlock()
			return
		}
		g := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		var (
			rs   []*resource.Resource
			live []*member
		)
		for _, me := range g.members {
			if me.gone {
				continue
			}
			me.off = len(rs)
			rs = append(rs, me.rs...)
			live = append(live, me)
		}
		if len(live) == 0 {
			s.mu.Unlock()
			continue // every caller left before it went
		}
		ctx, cancel := context.WithCancel(base)
		g.started, g.cancel = true, cancel
		s.mu.Unlock()

		// Warnings about rs[i] go to the collector of the caller whose
		// batch holds it.
		owner := func(i int) context.Context {
			k := sort.Search(len(live), func(k int) bool { return live[k].off > i }) - 1
			return live[k].ctx
		}
		g.res, g.err = send(ctx, rs, owner)
		cancel()
		close(g.done)
	}
}
