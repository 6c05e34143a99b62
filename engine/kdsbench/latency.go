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
// Change i changes resource nameMarker(i).
func measure(ctx context.Context, p Progress, label string, count, need int, a *arrivals, change func(i int) (name string, marker []byte, err error)) ([]time.Duration, error) {
	return measureOver(ctx, p, label, count, count, need, a, nil, func(i int, _ string) error {
		_, _, err := change(i)
		return err
	}, nil)
}

// measureOver runs count changes over n resources: change i rewrites
// resource changeName(i, n) with a spec carrying changeMarker(i), so count
// may exceed n. The latency of one change is from just before change(i,
// name) until the last of need receivers saw it. tr (nil: none) follows
// each change's stages. between (nil: none) runs after each change, off
// the clock.
func measureOver(ctx context.Context, p Progress, label string, count, n, need int, a *arrivals, tr *changeTracer, change func(i int, name string) error, between func() error) ([]time.Duration, error) {
	p.Start(label, count)
	defer p.Finish()
	out := make([]time.Duration, 0, count)
	for i := range count {
		d, err := measureOne(ctx, i, n, need, a, tr, change)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
		if between != nil {
			if err := between(); err != nil {
				return nil, err
			}
		}
		p.Set(i + 1)
	}
	return out, nil
}

// measureOne runs change i of measureOver and returns its latency.
func measureOne(ctx context.Context, i, n, need int, a *arrivals, tr *changeTracer, change func(i int, name string) error) (time.Duration, error) {
	name, marker := changeName(i, n), changeMarker(i)
	done := a.expect(name, marker, need)
	start := time.Now()
	if tr != nil {
		tr.arm(marker, start)
	}
	if err := change(i, name); err != nil {
		return 0, err
	}
	select {
	case <-done:
	case <-ctx.Done():
		return 0, context.Cause(ctx)
	case <-time.After(30 * time.Second):
		return 0, fmt.Errorf("change %d of %s not seen by all %d receivers within 30s", i, name, need)
	}
	last := a.lastAt()
	if tr != nil {
		tr.finish(last)
	}
	return last.Sub(start), nil
}

// nameMarker is the resource changed by change i and the marker its new
// spec carries.
func nameMarker(i int) (string, []byte) {
	return changeName(i, i+1), changeMarker(i)
}

// changeName is the resource that change i rewrites when changes cycle
// over n resources.
func changeName(i, n int) string {
	return fmt.Sprintf("p-%d", i%max(n, 1))
}

// changeMarker is the marker change i's new spec carries (unique per
// change).
func changeMarker(i int) []byte {
	return fmt.Appendf(nil, `"value":"u%d"`, i)
}

// policyUpdate returns the new version of change i's resource.
func policyUpdate(i, size int) *resource.Resource {
	name, _ := nameMarker(i)
	return policyWrite(i, name, size)
}

// policyWrite returns the new version of resource name for change i.
func policyWrite(i int, name string, size int) *resource.Resource {
	return &resource.Resource{Type: policyType, Mesh: benchMesh, Name: name, Spec: specOf(fmt.Sprintf("u%d", i), size)}
}
