package insights

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRegistryRecordsSessionsAndTypes(t *testing.T) {
	r := NewRegistry()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r.now = func() time.Time { return now }

	r.Connected("zone-b")
	r.Connected("zone-a")
	r.UpdateType("zone-a", "MeshTimeout", func(ts *TypeState) { ts.ResponsesSent++; ts.ResourcesHeld = 3 })
	r.UpdateType("zone-a", "MeshTimeout", func(ts *TypeState) { ts.ResponsesSent++ })
	now = now.Add(time.Minute)
	r.Disconnected("zone-a", errors.New("send timeout after 1m0s"))
	r.Connected("zone-a")

	c, ok := r.Get("zone-a")
	require.True(t, ok)
	assert.True(t, c.Online)
	assert.Equal(t, uint64(2), c.Sessions)
	assert.Equal(t, now, c.ConnectedSince)
	assert.Equal(t, now, c.DisconnectedAt)
	assert.Equal(t, "send timeout after 1m0s", c.LastError)
	assert.Equal(t, TypeState{Type: "MeshTimeout", ResponsesSent: 2, ResourcesHeld: 3}, c.Types["MeshTimeout"])

	names := []string{}
	for _, c := range r.List() {
		names = append(names, c.Name)
	}
	assert.Equal(t, []string{"zone-a", "zone-b"}, names, "sorted by name")

	_, ok = r.Get("nobody")
	assert.False(t, ok)
}

func TestSnapshotsAreCopies(t *testing.T) {
	r := NewRegistry()
	r.UpdateType("z", "Mesh", func(ts *TypeState) { ts.ResourcesHeld = 1 })
	c, _ := r.Get("z")
	c.Types["Mesh"] = TypeState{ResourcesHeld: 99}
	got, _ := r.Get("z")
	assert.Equal(t, 1, got.Types["Mesh"].ResourcesHeld, "mutating a snapshot does not change the registry")
}
