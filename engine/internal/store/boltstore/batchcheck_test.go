package boltstore

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
	"github.com/kds-engine/kds-engine/engine/internal/store/storetest"
)

// A batch that names a key twice is refused with ErrInvalid and
// store.CheckBatch's message, and changes nothing: Apply finds a key put
// twice among its sorted puts rather than in a set of every key.
func TestApplyRefusesAKeyTwice(t *testing.T) {
	ctx := t.Context()
	s, err := Open(t.TempDir(), WithNoSync(true))
	require.NoError(t, err)
	defer s.Close()
	_, err = s.Apply(ctx, storetest.Batch(3, 64, "z0", "1"))
	require.NoError(t, err)
	before, err := s.List(ctx, store.Filter{})
	require.NoError(t, err)

	many := storetest.Batch(500, 64, "z1", "1").Put
	again := *many[7]
	again.Version = "2"
	otherType := *many[7]
	otherType.Type = "Other"
	for name, b := range map[string]store.Batch{
		"put twice, far apart":     {Put: append(append([]*resource.Resource{}, many...), &again)},
		"put twice, owned":         {Put: append(append([]*resource.Resource{}, many...), &again), Owned: true},
		"put twice, and a bad key": {Put: append(append([]*resource.Resource{}, many[:10]...), &again, storetest.Res("Dataplane", ""))},
		"put and delete":           {Put: many[:10], Delete: []resource.Key{many[3].Key()}},
		"delete twice":             {Delete: []resource.Key{many[3].Key(), many[3].Key()}},
	} {
		_, err := s.Apply(ctx, b)
		require.ErrorIs(t, err, store.ErrInvalid, name)
		want := store.CheckBatch(b)
		require.Error(t, want, name)
		assert.Equal(t, "apply: "+want.Error(), err.Error(), name)
	}
	_, err = s.Apply(ctx, store.Batch{Put: []*resource.Resource{many[7], &otherType}})
	require.NoError(t, err, "one name in two types is two keys")
	after, err := s.List(ctx, store.Filter{})
	require.NoError(t, err)
	assert.Len(t, after, len(before)+2, "only the valid batch changed anything")
}
