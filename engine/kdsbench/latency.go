package kdsbench

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// arrivals waits for one expected change to reach a number of receivers.
// Safe for concurrent use.
type arrivals struct {
	mu   sync.Mutex
	name string
	want []byte
	need int
	last time.Time
	got  map[int]bool
	done chan struct{}
}

// expect arms the waiter for name carrying want, to reach need receivers.
func (a *arrivals) expect(name string, want []byte, need int) <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.name, a.want, a.need, a.got, a.done = name, want, need, map[int]bool{}, make(chan struct{})
	return a.done
}

// saw records that receiver who got name with payload at.
func (a *arrivals) saw(who int, name string, payload []byte, at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done == nil || name != a.name || a.got[who] || !bytes.Contains(payload, a.want) {
		return
	}
	a.got[who] = true
	if at.After(a.last) {
		a.last = at
	}
	if len(a.got) == a.need {
		close(a.done)
	}
}

// lastAt returns when the last receiver got the change and disarms.
func (a *arrivals) lastAt() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	t := a.last
	a.last, a.done = time.Time{}, nil
	return t
}

// watchZone reports every SyncPolicy event on z's store to a as receiver
// who. The returned function stops and joins the watcher.
func watchZone(ctx context.Context, z *node, who int, a *arrivals) (*counter, func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	c, join, err := follow(ctx, z.e.Store(), store.Filter{Type: policyType}, 0, func(ev store.Event) {
		a.saw(who, ev.Resource.Name, ev.Resource.Spec, time.Now())
	})
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return c, func() { cancel(); join() }, nil
}

// measure runs count changes: change(i) starts change i and returns the
// name and the payload marker receivers must see; the latency of one change
// is from just before change(i) until the last of need receivers saw it.
func measure(ctx context.Context, p Progress, label string, count, need int, a *arrivals, change func(i int) (name string, marker []byte, err error)) ([]time.Duration, error) {
	p.Start(label, count)
	defer p.Finish()
	out := make([]time.Duration, 0, count)
	for i := range count {
		name, marker := nameMarker(i)
		done := a.expect(name, marker, need)
		start := time.Now()
		if _, _, err := change(i); err != nil {
			return nil, err
		}
		select {
		case <-done:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-time.After(30 * time.Second):
			return nil, fmt.Errorf("change %d of %s not seen by all %d receivers within 30s", i, name, need)
		}
		out = append(out, a.lastAt().Sub(start))
		p.Set(i + 1)
	}
	return out, nil
}

// nameMarker is the resource changed by change i and the marker its new
// spec carries.
func nameMarker(i int) (string, []byte) {
	return fmt.Sprintf("p-%d", i), fmt.Appendf(nil, `"value":"u%d"`, i)
}

// policyUpdate returns the new version of change i's resource.
func policyUpdate(i, size int) *resource.Resource {
	name, _ := nameMarker(i)
	return &resource.Resource{Type: policyType, Mesh: benchMesh, Name: name, Spec: specOf(fmt.Sprintf("u%d", i), size)}
}
