package plugin

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

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
	// retrying are the callers of failed shared calls whose batches are
	// being sent again and who have no result yet.
	retrying map[*member]struct{}
}

// waitingCallers counts the callers that wait for a shared call, queued
// or for their batch to be sent again after the call failed, and have not
// left.
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
	for me := range s.retrying {
		if !me.gone {
			n++
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
	waiting int                // members still waiting for their result
	cancel  context.CancelFunc // the RPC's (and the retries'), once started
}

// member is one caller's batch in a group.
type member struct {
	ctx  context.Context
	rs   []*resource.Resource
	off  int           // index of rs[0] in the RPC, once the group started
	gone bool          // left: not sent, or not sent again
	done chan struct{} // closed once res and err are set
	res  map[int][]resource.FieldError
	err  error
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

// sharedSends is how a sharing sends.
type sharedSends struct {
	// send sends rs in one RPC; shared tells whether it holds several
	// callers' batches; warnCtx(i), when warnCtx is set, is the context
	// whose warnings collector takes the warnings about rs[i].
	send func(ctx context.Context, rs []*resource.Resource, warnCtx func(i int) context.Context, shared bool) (map[int][]resource.FieldError, error)
	// alone sends one caller's batch again, on an RPC of its own, after
	// the shared RPC it was in failed with after, an error that retry
	// accepts. Nil: a failed RPC fails every caller in it.
	alone func(ctx context.Context, rs []*resource.Resource, warnCtx func(i int) context.Context, after error) (map[int][]resource.FieldError, error)
	// retry tells whether a shared RPC's error is worth sending again.
	retry func(err error) bool
	// budget bounds the retries of one failed shared RPC together, the
	// wait for the plugin's restart included: a caller whose batch has not
	// been sent again, or whose retry has not ended, when it runs out gets
	// the shared RPC's error. 0: no bound.
	budget time.Duration
	// spawn runs f on a goroutine that the owner joins; f must end soon
	// after base ends.
	spawn func(f func(base context.Context)) error
}

// shared validates rs, a batch of plugin m of the given approximate size,
// sharing its RPC (see Host.ValidateBatch).
func (h *Host) shared(ctx context.Context, pluginName string, m *managed, rs []*resource.Resource, bytes int) (map[int][]resource.FieldError, error) {
	sends := sharedSends{
		send: func(ctx context.Context, rs []*resource.Resource, warnCtx func(int) context.Context, shared bool) (map[int][]resource.FieldError, error) {
			return h.validateBatch(ctx, pluginName, m, rs, callOpts{warnCtx: warnCtx, shared: shared})
		},
		alone: func(ctx context.Context, rs []*resource.Resource, warnCtx func(int) context.Context, after error) (map[int][]resource.FieldError, error) {
			return h.retryAlone(ctx, pluginName, m, rs, warnCtx, after)
		},
		retry:  worthRetrying,
		budget: h.callTimeout,
		spawn:  h.spawnSend,
	}
	return m.share.do(ctx, pluginName, rs, bytes, SharedCallsInFlight, h.batchSize, MaxBatchBytes, sends)
}

// worthRetrying reports whether the batches of a shared RPC that failed
// with err are sent again, each on its own: unless nothing was sent (the
// plugin was not running) or the RPC was cancelled (the host closing, or
// every caller gone).
func worthRetrying(err error) bool {
	var ns notSent
	return !errors.As(err, &ns) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// retryAlone validates rs, one caller's batch of a shared RPC that failed
// with after, on an RPC of its own, so that it fails only if this batch
// makes the plugin fail again: it waits first for the plugin to run again
// (after a crash, the supervisor's restart) until ctx ends or at most the
// call timeout. After the plugin went down (after wraps ErrPluginDown: it
// exited, or its connection failed) the RPC is the only one in flight to
// the plugin, so that an exit during it is this batch's; after any other
// failure (no answer within the call timeout, a malformed answer) it goes
// side by side with the plugin's other calls: a batch that hangs the
// plugin hangs its own RPC, and holding every other call back for it would
// stop the plugin for everyone for a call timeout.
func (h *Host) retryAlone(ctx context.Context, pluginName string, m *managed, rs []*resource.Resource, warnCtx func(int) context.Context, after error) (map[int][]resource.FieldError, error) {
	if _, err := m.waitRunning(ctx, h.callTimeout); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("validate with plugin %q: %w", pluginName, context.Cause(ctx))
		}
		return nil, fmt.Errorf("validate: %w", err)
	}
	return h.validateBatch(ctx, pluginName, m, rs, callOpts{warnCtx: warnCtx, exclusive: errors.Is(after, ErrPluginDown)})
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

// do validates rs (of the given approximate size) with sends: at once on
// this goroutine when fewer than slots shared calls are in flight,
// otherwise in the last group queued behind them, of at most maxN
// resources and maxBytes. When a call ends and groups are queued, its slot
// passes to a goroutine that sends.spawn starts, which sends the queued
// groups one after the other, each in one call of sends.send, with
// contexts derived from the context spawn gives it. When a group's call
// fails with an error sends.retry accepts and more than one caller is in
// it, that goroutine sends each caller's batch again with sends.alone, one
// after the other, and each caller gets the result of its own, or the
// group's error once sends.budget has run out. When spawn fails, the
// queued callers get its error.
func (s *sharing) do(ctx context.Context, pluginName string, rs []*resource.Resource, bytes, slots, maxN, maxBytes int, sends sharedSends) (map[int][]resource.FieldError, error) {
	s.mu.Lock()
	if s.inFlight < slots {
		s.inFlight++
		s.mu.Unlock()
		res, err := sends.send(ctx, rs, nil, false)
		s.next(sends)
		return res, err
	}
	var g *callGroup
	if k := len(s.queue); k > 0 && s.queue[k-1].n+len(rs) <= maxN && s.queue[k-1].bytes+bytes <= maxBytes {
		g = s.queue[k-1]
	} else {
		g = &callGroup{}
		s.queue = append(s.queue, g)
	}
	me := &member{ctx: ctx, rs: rs, done: make(chan struct{})}
	g.members = append(g.members, me)
	g.n += len(rs)
	g.bytes += bytes
	g.waiting++
	s.mu.Unlock()

	select {
	case <-me.done:
		return me.res, me.err
	case <-ctx.Done():
		s.mu.Lock()
		g.waiting--
		me.gone = true
		if g.started && g.waiting == 0 {
			g.cancel() // nobody waits for this call any more
		}
		s.mu.Unlock()
		return nil, fmt.Errorf("validate with plugin %q: %w", pluginName, context.Cause(ctx))
	}
}

// next hands the caller's slot, when groups are queued, to a goroutine
// that sends them one after the other; otherwise it frees the slot.
func (s *sharing) next(sends sharedSends) {
	s.mu.Lock()
	if len(s.queue) == 0 {
		s.inFlight--
		s.mu.Unlock()
		return
	}
	// The slot stays taken, so callers keep queueing. spawn (which takes
	// the host's lock) runs without s.mu.
	s.mu.Unlock()
	if err := sends.spawn(func(base context.Context) { s.sendQueued(base, sends) }); err != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, g := range s.queue {
			for _, me := range g.members {
				me.err = err
				close(me.done)
			}
		}
		s.queue = nil
		s.inFlight--
	}
}

// sendQueued sends the queued groups, one call at a time, until the queue
// is empty, then frees its slot. A call's context ends with base or when
// every caller of its group left.
func (s *sharing) sendQueued(base context.Context, sends sharedSends) {
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
		res, err := sends.send(ctx, rs, owner, len(live) > 1)
		switch {
		case err == nil:
			for _, me := range live {
				me.res = map[int][]resource.FieldError{}
				for i := range me.rs {
					if fes, ok := res[me.off+i]; ok {
						me.res[i] = fes
					}
				}
				close(me.done)
			}
		case len(live) == 1 || sends.alone == nil || !sends.retry(err) || ctx.Err() != nil:
			for _, me := range live {
				me.err = err
				close(me.done)
			}
		default:
			s.retryEach(ctx, live, err, sends)
		}
		cancel()
	}
}

// retryEach sends the batch of each caller in live that has not left, one
// after the other, each with sends.alone, after their shared call failed
// with err; each caller gets its own call's result. The retries together
// end within sends.budget: a caller whose retry fails once it has run out,
// or whose turn comes after, gets err, as it would have without retries.
// So no caller waits more than the shared call and the budget for its
// result, however many callers are before it (each retry may otherwise
// take a restart wait and a call timeout). A retry's context ends with
// ctx, the budget, or when its caller leaves. Callers that left get err
// (nobody reads it).
func (s *sharing) retryEach(ctx context.Context, live []*member, err error, sends sharedSends) {
	if sends.budget > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, sends.budget)
		defer cancel()
	}
	s.mu.Lock()
	if s.retrying == nil {
		s.retrying = map[*member]struct{}{}
	}
	for _, me := range live {
		s.retrying[me] = struct{}{}
	}
	s.mu.Unlock()
	for _, me := range live {
		s.mu.Lock()
		gone := me.gone
		if gone || ctx.Err() != nil {
			delete(s.retrying, me)
			s.mu.Unlock()
			me.err = err
			close(me.done)
			continue
		}
		s.mu.Unlock()
		rctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(me.ctx, cancel)
		warn := func(int) context.Context { return me.ctx }
		res, rerr := sends.alone(rctx, me.rs, warn, err)
		stop()
		cancel()
		if rerr != nil && ctx.Err() != nil {
			res, rerr = nil, err // cut short by the budget (or the host closing)
		}
		s.mu.Lock()
		delete(s.retrying, me)
		s.mu.Unlock()
		me.res, me.err = res, rerr
		close(me.done)
	}
}
