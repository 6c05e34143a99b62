package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// bulkBatch is how many resources BulkLoad validates and commits at once.
const bulkBatch = 5000

// BulkLoad writes rs on this side the fast way, for benchmarks and
// imports: every resource is validated by its plugin, as an admin API write
// would be, and then committed in store batches of a few thousand instead
// of one transaction per resource. Only types written on this side are
// accepted. The engine assigns each resource a fresh Version and the
// current time; rs is not modified. Call it only after Started is closed.
// Safe for concurrent use with everything else the engine does.
func (e *Engine) BulkLoad(ctx context.Context, rs []*resource.Resource) error {
	now := time.Now()
	for start := 0; start < len(rs); start += bulkBatch {
		chunk := rs[start:min(start+bulkBatch, len(rs))]
		for _, r := range chunk {
			if err := e.store.CheckLocalWrite(r.Type); err != nil {
				return err
			}
			if r.Zone != "" {
				return fmt.Errorf("%s: zone is set by the engine, not by writers: %w", r.Key(), resource.ErrReadOnly)
			}
		}
		if err := e.validator.Validate(ctx, chunk); err != nil {
			return fmt.Errorf("validate: %w", err)
		}
		puts := make([]*resource.Resource, len(chunk))
		for i, r := range chunk {
			c := *r
			c.Version = fmt.Sprintf("bulk-%d-%d", now.UnixNano(), start+i)
			c.CreationTime, c.ModificationTime = now, now
			puts[i] = &c
		}
		// The guard refuses sync writes of owned types; the checks above
		// are the local-write rules, so commit on the wrapped store.
		if _, err := e.store.Store.Apply(ctx, store.Batch{Put: puts}); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
	}
	return nil
}

// Write creates r, or replaces it (last writer wins) if its key is taken,
// through the same validation and read-only rules as the admin API, and
// returns the stored copy. Call it only after Started is closed.
func (e *Engine) Write(ctx context.Context, r *resource.Resource) (*resource.Resource, error) {
	b := backend{e}
	c := *r
	c.Version = ""
	if _, err := e.store.Get(ctx, r.Key()); err == nil {
		return b.Update(ctx, &c)
	}
	return b.Create(ctx, &c)
}

// Store returns the engine's store for reading and watching (Get, List,
// Snapshot, Watch). Writes through it bypass validation; use Write or
// BulkLoad. Valid between Started and the end of Run.
func (e *Engine) Store() store.Store { return e.store }

// InboundPoolStats are the figures of the byte budget all sessions'
// inbound queues share (what they received and the sync layer has not yet
// taken).
type InboundPoolStats struct {
	// Limit is the pool's size, Peak the most its queues held at once
	// since Run started, in bytes counted as they hold decoded.
	Limit, Peak int64
	// Waits counts the times a receive loop found the pool exhausted and
	// waited for room, LongestWait is the longest such wait.
	Waits       uint64
	LongestWait time.Duration
}

// InboundPool returns the shared inbound pool's figures. Call it only after
// Started is closed.
func (e *Engine) InboundPool() InboundPoolStats {
	p := e.inboundPool
	return InboundPoolStats{Limit: p.Limit(), Peak: p.Peak(), Waits: p.Waits(), LongestWait: p.LongestWait()}
}

// InitialSyncStats are the figures of global's initial-sync slots
// (decision 0041): how many zones may send their initial state at once,
// how many waited for a slot and how many slots went back at the hold
// limit and at the idle limit. All zero on a zone.
type InitialSyncStats struct {
	Slots                 int
	Waits, Expired, Idled uint64
}

// InitialSyncs returns global's initial-sync slot figures. Call it only
// after Started is closed.
func (e *Engine) InitialSyncs() InitialSyncStats {
	a := e.admission
	if a == nil {
		return InitialSyncStats{}
	}
	return InitialSyncStats{Slots: a.Slots(), Waits: a.Waits(), Expired: a.Expired(), Idled: a.Idled()}
}
