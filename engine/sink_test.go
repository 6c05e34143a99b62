package engine

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/guard"
	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/memory"
)

// listlessStore refuses to List: what reads whole resources.
type listlessStore struct{ store.Store }

func (listlessStore) List(context.Context, store.Filter) ([]*resource.Resource, error) {
	panic("the sync read whole resources to learn their versions")
}

// The versions a session starts from are read without the resources'
// specs: a zone holding large resources does not make every session start
// load them.
func TestSinkReadsKeysAndVersionsOnly(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	defer mem.Close()
	put := func(zone, name, version string) *resource.Resource {
		return &resource.Resource{Type: "Dataplane", Mesh: "default", Zone: zone, Name: name, Version: version, Spec: spec(map[string]any{})}
	}
	_, err := mem.Apply(ctx, store.Batch{Put: []*resource.Resource{
		put("zone-1", "a", "v1"), put("zone-1", "b", "v2"), put("zone-2", "a", "v3"), put("", "local", "v4"),
	}})
	require.NoError(t, err)
	gs := guard.New(listlessStore{mem}, guard.Global, noTypes{})

	got, err := (&sink{s: gs, zone: "zone-1"}).Versions(ctx, "Dataplane")
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"default/a": "v1", "default/b": "v2"}, got, "only zone-1's, by wire name")
	got, err = (&sink{s: gs}).Versions(ctx, "Dataplane")
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"default/local": "v4"}, got, "on a zone: only what has no zone")
}

// What a session received is copied by a memory store: the batch is not
// Owned, because received specs share their response's buffer (decision
// 0032), which a stored resource would keep alive.
func TestSinkLetsTheStoreCopy(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	defer mem.Close()
	w, err := mem.Watch(t.Context())
	require.NoError(t, err)
	gs := guard.New(mem, guard.Global, dpTypes{})
	r := &resource.Resource{Type: "Dataplane", Mesh: "default", Zone: "zone-1", Name: "a", Version: "v1", Spec: spec(map[string]any{})}
	require.NoError(t, (&sink{s: gs, zone: "zone-1"}).Apply(ctx, []*resource.Resource{r}, nil))
	<-w.C()
	evs := w.Next()
	require.Len(t, evs, 1)
	assert.NotSame(t, r, evs[0].Resource, "stored as received, not copied")
	assert.NotSame(t, &r.Spec[0], &evs[0].Resource.Spec[0], "the spec was not copied")
}
