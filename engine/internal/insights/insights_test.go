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

// A session's slot is cleared only by the session that took it: a newer
// session of the zone may hold one of its own by then.
func TestInitialSyncSlotIsClearedOnlyByItsSession(t *testing.T) {
	r := NewRegistry()
	older, newer := time.Unix(100, 0), time.Unix(200, 0)
	r.SetInitialSyncSlot("zone-1", older)
	r.SetInitialSyncSlot("zone-1", newer)
	r.ClearInitialSyncSlot("zone-1", older)
	c, _ := r.Get("zone-1")
	assert.Equal(t, newer, c.InitialSyncSlotSince, "the older session's end leaves the newer one's slot")
	r.ClearInitialSyncSlot("zone-1", newer)
	c, _ = r.Get("zone-1")
	assert.Zero(t, c.InitialSyncSlotSince)
	r.ClearInitialSyncSlot("zone-2", newer) // no such zone: nothing made up
	_, ok := r.Get("zone-2")
	assert.False(t, ok)
}

// Attempts that never become a session (global down, a refused token) keep
// the time the connection went offline: a zone retrying for an hour shows
// offline for an hour, with the latest attempt's error.
func TestRefusedAttemptsKeepWhenTheConnectionWentOffline(t *testing.T) {
	r := NewRegistry()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r.now = func() time.Time { return now }

	// Never connected: offline since the first failed attempt.
	r.Refused("global", errors.New("connection refused"))
	first := now
	now = now.Add(time.Minute)
	r.Refused("global", errors.New("connection refused again"))
	c, _ := r.Get("global")
	assert.False(t, c.Online)
	assert.Equal(t, first, c.DisconnectedAt)
	assert.Equal(t, "connection refused again", c.LastError)

	r.Connected("global")
	now = now.Add(time.Hour)
	r.Disconnected("global", errors.New("EOF"))
	lost := now
	for range 3 {
		now = now.Add(30 * time.Second)
		r.Refused("global", errors.New("connection refused"))
	}
	c, _ = r.Get("global")
	assert.False(t, c.Online)
	assert.Equal(t, lost, c.DisconnectedAt, "offline since the session ended, not since the latest attempt")
	assert.Equal(t, "connection refused", c.LastError)
	assert.Equal(t, uint64(1), c.Sessions)
}
