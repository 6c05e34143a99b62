package store

import (
	"context"
	"fmt"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// SnapshotAndWatch starts a Watch and then takes a Snapshot with filter f:
// the first two steps of the list-then-watch recipe in the package
// documentation. The caller skips events with Revision <= rev. The watch
// lives until ctx ends or the store closes; on error no watch is left
// registered.
func SnapshotAndWatch(ctx context.Context, s Store, f Filter) (w *Watch, items []*resource.Resource, rev uint64, err error) {
	w, err = s.Watch(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	items, rev, err = s.Snapshot(ctx, f)
	if err != nil {
		w.end(err)
		return nil, nil, 0, fmt.Errorf("snapshot after watch: %w", err)
	}
	return w, items, rev, nil
}
