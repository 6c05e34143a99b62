package kdssync

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
)

// TestIndexReplace: Replace leaves the index holding exactly the given
// resources and marks for subscribers only what it changed.
func TestIndexReplace(t *testing.T) {
	ix := NewIndex([]string{"T"})
	r := func(name, version string) *resource.Resource {
		return &resource.Resource{Type: "T", Mesh: "m", Name: name, Version: version, Spec: json.RawMessage(`{}`)}
	}
	for _, x := range []*resource.Resource{r("same", "1"), r("changed", "1"), r("gone", "1")} {
		require.NoError(t, ix.Put(x))
	}
	sub := ix.subscribe("T", make(chan struct{}, 1))
	defer ix.unsubscribe(sub)
	other := &resource.Resource{Type: "Other", Name: "x", Version: "1"}
	require.NoError(t, ix.Replace([]*resource.Resource{r("same", "1"), r("changed", "2"), r("new", "1"), other}))

	dirty := map[string]heldState{}
	sub.take(func(n string, was heldState) { dirty[n] = was })
	assert.Equal(t, map[string]heldState{"m/changed": {"1", true}, "m/gone": {"1", true}, "m/new": {}}, dirty,
		"each name with its state before the changes")

	assert.Equal(t, 3, ix.Len("T"))
	ix.mu.RLock()
	assert.Equal(t, "2", ix.types["T"].entries["m/changed"].res.Version)
	_, held := ix.types["T"].entries["m/gone"]
	ix.mu.RUnlock()
	assert.False(t, held)

	// Only the first change since the last take records the state before.
	require.NoError(t, ix.Put(r("changed", "3")))
	require.NoError(t, ix.Put(r("changed", "4")))
	ix.Delete(resource.Key{Type: "T", Mesh: "m", Name: "new"})
	clear(dirty)
	sub.take(func(n string, was heldState) { dirty[n] = was })
	assert.Equal(t, map[string]heldState{"m/changed": {"2", true}, "m/new": {"1", true}}, dirty)
}
