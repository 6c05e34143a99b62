package engine

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/kds-engine/kds-engine/engine/apitypes"
)

// leaseReadTimeout bounds reading the leases for a zone status answer.
const leaseReadTimeout = 2 * time.Second

// zoneStatus completes global's zone entries cs (this replica's insights)
// with where each zone's session lives. On a store of its own (bolt,
// memory) this replica is the only one: an online zone is on it. With
// leases (PostgreSQL), each zone's online state, replica, peer and
// connected-since come from its lease row, which every replica reads
// alike; a zone whose session runs on another replica appears even if it
// never connected here. What only the serving replica counts (sessions,
// per-type state, streams, last error, token) stays this replica's own.
// If the leases cannot be read, the local view is returned: the zones
// whose sessions run here are online on this replica.
func (e *Engine) zoneStatus(cs []apitypes.Conn) []apitypes.Conn {
	self := e.cfg.ReplicaID
	ls := e.live.leases
	if ls == nil {
		for i := range cs {
			cs[i].Replica = self
		}
		return cs
	}
	ctx, cancel := context.WithTimeout(context.Background(), leaseReadTimeout)
	defer cancel()
	leases, err := ls.Leases(ctx)
	if err != nil {
		e.log.Debug("zone status: cannot read the session leases; showing this replica's own view", "error", err)
		for i := range cs {
			if cs[i].Online { // its session runs here
				cs[i].Replica = self
			}
		}
		return cs
	}
	at := make(map[string]int, len(cs))
	for i, c := range cs {
		at[c.Name] = i
	}
	for _, l := range leases {
		if l.Replica == "" {
			continue // a row from before leases: nothing known
		}
		i, ok := at[l.Zone]
		if !ok {
			cs = append(cs, apitypes.Conn{Name: l.Zone, Types: map[string]apitypes.TypeState{}})
			i = len(cs) - 1
			at[l.Zone] = i
		}
		c := &cs[i]
		c.Online, c.Replica = l.Live, l.Replica
		if l.Replica != self {
			// Served elsewhere: this replica's stream state is stale,
			// and a slot of its own an ending session still holds
			// is not the zone's.
			c.Peer, c.ConnectedSince, c.Streams, c.InitialSyncSlotSince = l.Peer, l.StartedAt, nil, time.Time{}
		}
		if !l.Live {
			end := l.EndedAt
			if end.IsZero() {
				end = l.HeartbeatAt // expired, not yet marked by the leader
			}
			if end.After(c.DisconnectedAt) {
				c.DisconnectedAt = end
			}
		}
	}
	slices.SortFunc(cs, func(a, b apitypes.Conn) int { return strings.Compare(a.Name, b.Name) })
	return cs
}
