package guard

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/memory"
)

type types map[string]resource.TypeDescriptor

func (t types) Type(n string) (resource.TypeDescriptor, bool) { d, ok := t[n]; return d, ok }

var reg = types{
	"MeshTimeout": {Name: "MeshTimeout", Direction: resource.GlobalToZone, Scope: resource.ScopeMesh},
	"Dataplane":   {Name: "Dataplane", Direction: resource.ZoneToGlobal, Scope: resource.ScopeMesh},
}

func TestGlobalRefusesLocalWritesOfZoneTypes(t *testing.T) {
	ctx := context.Background()
	g := New(memory.New(), Global, reg)
	_, err := g.Create(ctx, &resource.Resource{Type: "Dataplane", Mesh: "default", Name: "web-1"})
	require.ErrorIs(t, err, resource.ErrReadOnly)
	assert.Contains(t, err.Error(), "write it on its zone")

	_, err = g.Create(ctx, &resource.Resource{Type: "MeshTimeout", Mesh: "default", Name: "t"})
	require.NoError(t, err)

	_, err = g.Create(ctx, &resource.Resource{Type: "Nope", Name: "x"})
	require.ErrorIs(t, err, resource.ErrUnknownType)

	// Sync writes: only zone types, only attributed.
	_, err = g.Apply(ctx, store.Batch{Put: []*resource.Resource{{Type: "MeshTimeout", Mesh: "default", Name: "t2", Zone: "z1", Version: "1"}}})
	require.ErrorIs(t, err, resource.ErrReadOnly, "a zone cannot push a GlobalToZone type")
	_, err = g.Apply(ctx, store.Batch{Put: []*resource.Resource{{Type: "Dataplane", Mesh: "default", Name: "d", Version: "1"}}})
	require.ErrorIs(t, err, resource.ErrReadOnly, "unattributed zone resource")
	_, err = g.Apply(ctx, store.Batch{Put: []*resource.Resource{{Type: "Dataplane", Mesh: "default", Name: "d", Zone: "z1", Version: "1"}}})
	require.NoError(t, err)

	// A local delete cannot touch a zone's resource.
	err = g.Delete(ctx, resource.Key{Type: "Dataplane", Mesh: "default", Name: "d", Zone: "z1"}, "")
	require.ErrorIs(t, err, resource.ErrReadOnly)
	_, err = g.Get(ctx, resource.Key{Type: "Dataplane", Mesh: "default", Name: "d", Zone: "z1"})
	require.NoError(t, err, "still there")
}

func TestZoneRefusesLocalWritesOfGlobalTypes(t *testing.T) {
	ctx := context.Background()
	g := New(memory.New(), Zone, reg)
	_, err := g.Create(ctx, &resource.Resource{Type: "MeshTimeout", Mesh: "default", Name: "t"})
	require.ErrorIs(t, err, resource.ErrReadOnly)
	assert.Contains(t, err.Error(), "write it on global")
	_, err = g.Create(ctx, &resource.Resource{Type: "Dataplane", Mesh: "default", Name: "web-1", Zone: "other"})
	require.ErrorIs(t, err, resource.ErrReadOnly, "writers cannot choose a zone")
	_, err = g.Create(ctx, &resource.Resource{Type: "Dataplane", Mesh: "default", Name: "web-1"})
	require.NoError(t, err)
	_, err = g.Apply(ctx, store.Batch{Put: []*resource.Resource{{Type: "Dataplane", Mesh: "default", Name: "x", Version: "1"}}})
	require.ErrorIs(t, err, resource.ErrReadOnly)
	_, err = g.Apply(ctx, store.Batch{Put: []*resource.Resource{{Type: "MeshTimeout", Mesh: "default", Name: "x", Version: "1"}}})
	require.NoError(t, err)
}
