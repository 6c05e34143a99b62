package resource

import (
	"context"
	"slices"
	"strings"
	"sync"
)

// Warnings collects the warnings plugins return while resources are
// validated: problems that do not make a resource invalid. A caller that
// wants them (the admin API's apply and validate) puts a collector in the
// context with WithWarnings; validation adds to it with AddWarnings. Safe for
// concurrent use.
type Warnings struct {
	mu   sync.Mutex
	list []InvalidResource
}

type warningsKey struct{}

// WithWarnings returns ctx carrying a new, empty collector, and the
// collector.
func WithWarnings(ctx context.Context) (context.Context, *Warnings) {
	w := &Warnings{}
	return context.WithValue(ctx, warningsKey{}, w), w
}

// AddWarnings records fes as warnings about the resource k, if ctx carries
// a collector; otherwise it does nothing.
func AddWarnings(ctx context.Context, k Key, fes []FieldError) {
	w, _ := ctx.Value(warningsKey{}).(*Warnings)
	if w == nil || len(fes) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, InvalidResource{Key: k, Errors: slices.Clone(fes)})
}

// List returns the warnings collected so far, one entry per resource and
// call, ordered by resource key.
func (w *Warnings) List() []InvalidResource {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := slices.Clone(w.list)
	slices.SortStableFunc(out, func(a, b InvalidResource) int { return strings.Compare(a.Key.String(), b.Key.String()) })
	return out
}
