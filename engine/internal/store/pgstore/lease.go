package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// SessionsChannel is the LISTEN/NOTIFY channel every session claim
// notifies, with a JSON payload {"zone", "generation", "replica"}.
const SessionsChannel = "kds_sessions"

// leaderLockKey is the pg_advisory_lock key the leader replica holds on
// its dedicated connection. ("kdslead" in ASCII.)
const leaderLockKey int64 = 0x6b64736c65616400

// Default lease timings: a replica renews the leases of its live sessions
// every DefaultLeaseHeartbeat; a lease not renewed for DefaultLeaseExpiry
// is expired (its zone shows offline, and the leader marks it ended).
const (
	DefaultLeaseHeartbeat = 5 * time.Second
	DefaultLeaseExpiry    = 15 * time.Second
)

// Lease is one row of kds_sessions as the lease of a zone's session.
type Lease struct {
	Zone string
	// Generation is the last session generation claimed for the zone.
	Generation uint64
	// Replica is the id of the global replica that claimed it ("" for a
	// row written before leases existed); Peer is the zone's address as
	// that replica saw it ("" when not known).
	Replica, Peer string
	// StartedAt is when the session claimed the zone, HeartbeatAt when its
	// replica last renewed the lease, EndedAt when the session ended or
	// the lease was expired (zero while it has not).
	StartedAt, HeartbeatAt, EndedAt time.Time
	// Live reports whether the lease holds now: not ended, and renewed
	// within the lease expiry (by the database's clock).
	Live bool
}

// LeaseLoss tells a replica that a lease it held is no longer its own.
type LeaseLoss struct {
	Zone string
	// Generation is the generation this replica held.
	Generation uint64
	// By is the newer generation that replaced it, and Replica the
	// replica that claimed that one; By is 0 when the lease was not
	// replaced but ended (expired by the leader: this replica did not
	// renew it in time).
	By      uint64
	Replica string
}

// Replaced reports whether a newer session claimed the zone (rather than
// the lease expiring).
func (l LeaseLoss) Replaced() bool { return l.By > l.Generation }

// NewReplicaID returns a replica id for this process: the host name and
// six random hex digits ("host-3fa9c1"), or "replica-…" when the host name
// is unknown.
func NewReplicaID(hostname string) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	host := sanitizeID(hostname)
	if host == "" {
		host = "replica"
	}
	return host + "-" + hex.EncodeToString(b[:])
}

// sanitizeID keeps the characters CheckReplicaID accepts, cut to leave
// room for a suffix.
func sanitizeID(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s) && len(out) < 48; i++ {
		if c := s[i]; replicaIDChar(c) {
			out = append(out, c)
		}
	}
	return string(out)
}

func replicaIDChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
}

// ErrInvalidReplicaID is wrapped by CheckReplicaID's errors.
var ErrInvalidReplicaID = errors.New("invalid replica id")

// CheckReplicaID accepts 1 to 64 characters of [A-Za-z0-9._-].
func CheckReplicaID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("%w %q: want 1 to 64 characters", ErrInvalidReplicaID, id)
	}
	for i := 0; i < len(id); i++ {
		if !replicaIDChar(id[i]) {
			return fmt.Errorf("%w %q: only letters, digits, '.', '_' and '-' are allowed", ErrInvalidReplicaID, id)
		}
	}
	return nil
}

// WithReplica sets this process's replica id, written into the leases it
// claims (default: NewReplicaID of the host name).
func WithReplica(id string) Option { return func(c *config) { c.replica = id } }

// WithLeaseTimings sets how often the leases of this replica's live
// sessions are renewed (and how often a non-leader tries to become
// leader), and after how long without renewal a lease expires. Defaults
// DefaultLeaseHeartbeat and DefaultLeaseExpiry; expiry must be at least
// twice heartbeat.
func WithLeaseTimings(heartbeat, expiry time.Duration) Option {
	return func(c *config) { c.heartbeat, c.expiry = heartbeat, expiry }
}

// WithLeaderHook sets a function called with true when this Store becomes
// the leader replica and with false when it stops being it. It is called
// from the Store's leader goroutine and must not block.
func WithLeaderHook(fn func(leader bool)) Option { return func(c *config) { c.leaderHook = fn } }

// Replica returns this Store's replica id.
func (s *Store) Replica() string { return s.cfg.replica }

// LeaseExpiry returns after how long without renewal a lease expires.
func (s *Store) LeaseExpiry() time.Duration { return s.cfg.expiry }

// IsLeader reports whether this Store holds the leader lock now.
func (s *Store) IsLeader() bool { return s.leader.Load() }

// OnLeaseLost sets the function told when a lease this Store claimed is
// lost: replaced by a newer claim of the zone (anywhere: learnt from the
// claim's notification, or at the latest from the next heartbeat) or
// ended by the leader after it expired. It is called from the Store's
// goroutines (or from ClaimLease) and must not block. Set it before
// claiming.
func (s *Store) OnLeaseLost(fn func(LeaseLoss)) {
	s.lmu.Lock()
	s.onLost = fn
	s.lmu.Unlock()
}

// ClaimLease claims a new session generation for zone, as ClaimSession
// does, and in the same statement makes it this replica's live lease
// (replica, peer, start and heartbeat now). The claim notifies
// SessionsChannel, so the replica that held the older session learns at
// once. Until EndLease, the Store renews the lease every heartbeat.
func (s *Store) ClaimLease(ctx context.Context, zone, peer string) (uint64, error) {
	if err := store.CheckZone(zone); err != nil {
		return 0, fmt.Errorf("claim session: %w", err)
	}
	leave, err := s.enter(ctx)
	if err != nil {
		return 0, fmt.Errorf("claim session of zone %s: %w", zone, err)
	}
	defer leave()
	var gen uint64
	err = s.pool.QueryRow(ctx, `WITH c AS (
		INSERT INTO kds_sessions AS s (zone, generation, replica, peer, started_at, heartbeat_at)
		VALUES ($1, 1, $2, nullif($3, ''), now(), now())
		ON CONFLICT (zone) DO UPDATE SET generation = s.generation + 1, claimed_at = now(),
			replica = EXCLUDED.replica, peer = EXCLUDED.peer, started_at = now(), heartbeat_at = now(), ended_at = NULL
		RETURNING generation)
		SELECT c.generation FROM c, LATERAL pg_notify($4, json_build_object('zone', $1::text, 'generation', c.generation, 'replica', $2::text)::text)`,
		zone, s.cfg.replica, peer, SessionsChannel).Scan(&gen)
	if err != nil {
		return 0, fmt.Errorf("claim session of zone %s: %w", zone, s.classify(err))
	}
	s.lmu.Lock()
	s.claimed[zone] = max(s.claimed[zone], gen)
	newer := s.latest[zone]
	if newer <= gen {
		s.latest[zone] = gen
		if s.held[zone] < gen {
			s.held[zone] = gen
		}
	}
	fn := s.onLost
	s.lmu.Unlock()
	if newer > gen && fn != nil {
		// A newer claim was notified before this one returned.
		fn(LeaseLoss{Zone: zone, Generation: gen, By: newer})
	}
	return gen, nil
}

// EndLease marks zone's lease of generation ended (when that is still the
// zone's generation) and stops renewing it. The row stays: generations
// keep growing.
func (s *Store) EndLease(ctx context.Context, zone string, generation uint64) error {
	s.lmu.Lock()
	if s.held[zone] == generation {
		delete(s.held, zone)
	}
	s.lmu.Unlock()
	leave, err := s.enter(ctx)
	if err != nil {
		return fmt.Errorf("end lease of zone %s: %w", zone, err)
	}
	defer leave()
	if _, err := s.pool.Exec(ctx, `UPDATE kds_sessions SET ended_at = now()
		WHERE zone = $1 AND generation = $2 AND ended_at IS NULL`, zone, generation); err != nil {
		return fmt.Errorf("end lease of zone %s: %w", zone, s.classify(err))
	}
	return nil
}

// Leases returns every zone's lease row, ordered by zone, with Live
// computed by the database's clock.
func (s *Store) Leases(ctx context.Context) ([]Lease, error) {
	leave, err := s.enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("read leases: %w", err)
	}
	defer leave()
	rows, err := s.pool.Query(ctx, `SELECT zone, generation, coalesce(replica, ''), coalesce(peer, ''),
		started_at, heartbeat_at, ended_at,
		replica IS NOT NULL AND ended_at IS NULL AND heartbeat_at > now() - make_interval(secs => $1)
		FROM kds_sessions ORDER BY zone`, s.cfg.expiry.Seconds())
	if err != nil {
		return nil, fmt.Errorf("read leases: %w", s.classify(err))
	}
	defer rows.Close()
	var out []Lease
	for rows.Next() {
		var (
			l                      Lease
			started, beat, endedAt *time.Time
		)
		if err := rows.Scan(&l.Zone, &l.Generation, &l.Replica, &l.Peer, &started, &beat, &endedAt, &l.Live); err != nil {
			return nil, fmt.Errorf("read leases: %w", s.classify(err))
		}
		l.StartedAt, l.HeartbeatAt, l.EndedAt = deref(started), deref(beat), deref(endedAt)
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read leases: %w", s.classify(err))
	}
	return out, nil
}

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// claimNote is the payload of a SessionsChannel notification.
type claimNote struct {
	Zone       string `json:"zone"`
	Generation uint64 `json:"generation"`
	Replica    string `json:"replica"`
}

// noteClaim handles a SessionsChannel notification: a lease this Store
// holds for an older generation of the zone is lost.
func (s *Store) noteClaim(payload string) {
	var n claimNote
	if err := json.Unmarshal([]byte(payload), &n); err != nil || n.Zone == "" {
		s.log.Debug("ignored a malformed session notification", "payload", payload)
		return
	}
	s.lmu.Lock()
	if n.Generation > s.latest[n.Zone] {
		s.latest[n.Zone] = n.Generation
	}
	held, ok := s.held[n.Zone]
	lost := ok && held < n.Generation
	if lost {
		delete(s.held, n.Zone)
	}
	fn := s.onLost
	s.lmu.Unlock()
	if lost {
		s.log.Info("session lease taken over", "zone", n.Zone, "generation", held, "by_generation", n.Generation, "by_replica", n.Replica)
		if fn != nil {
			fn(LeaseLoss{Zone: n.Zone, Generation: held, By: n.Generation, Replica: n.Replica})
		}
	}
}

// heartbeatLoop renews this Store's leases every heartbeat, and at once
// when the LISTEN connection reconnects (claims notified meanwhile were
// missed), until ctx ends.
func (s *Store) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.beat:
		}
		s.heartbeat(ctx)
	}
}

// pokeHeartbeat asks for a heartbeat now, without waiting.
func (s *Store) pokeHeartbeat() {
	select {
	case s.beat <- struct{}{}:
	default:
	}
}

// heartbeat renews every held lease whose row still has its generation
// and is not ended; each other one is lost (replaced, or expired by the
// leader).
func (s *Store) heartbeat(ctx context.Context) {
	s.checkReplicaID(ctx)
	// The last renewal that succeeded, before this one: every lease held
	// then was renewed then (and a lease claimed since, at its claim).
	prev := s.renewed
	s.lmu.Lock()
	zones := slices.Sorted(maps.Keys(s.held))
	gens := make([]int64, len(zones))
	for i, z := range zones {
		gens[i] = int64(s.held[z])
	}
	s.lmu.Unlock()
	if len(zones) == 0 {
		return
	}
	rows, err := s.pool.Query(ctx, `UPDATE kds_sessions AS s SET heartbeat_at = now()
		FROM unnest($1::text[], $2::bigint[]) AS h(zone, generation)
		WHERE s.zone = h.zone AND s.generation = h.generation AND s.ended_at IS NULL
		RETURNING s.zone`, zones, gens)
	if err != nil {
		s.noteHeartbeat(ctx, err)
		return
	}
	renewed, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		s.noteHeartbeat(ctx, err)
		return
	}
	s.noteHeartbeat(ctx, nil)
	s.renewed = time.Now()
	if len(renewed) == len(zones) {
		return
	}
	var missing []string
	for _, z := range zones {
		if !slices.Contains(renewed, z) {
			missing = append(missing, z)
		}
	}
	rows, err = s.pool.Query(ctx, `SELECT zone, generation, coalesce(replica, '') FROM kds_sessions WHERE zone = ANY($1)`, missing)
	if err != nil {
		return // the next heartbeat tries again
	}
	type cur struct {
		gen     uint64
		replica string
	}
	now := map[string]cur{}
	for rows.Next() {
		var (
			z string
			c cur
		)
		if rows.Scan(&z, &c.gen, &c.replica) == nil {
			now[z] = c
		}
	}
	rows.Close()
	if rows.Err() != nil {
		return
	}
	for i, z := range zones {
		if slices.Contains(renewed, z) {
			continue
		}
		held := uint64(gens[i])
		loss := LeaseLoss{Zone: z, Generation: held}
		if c := now[z]; c.gen > held {
			loss.By, loss.Replica = c.gen, c.replica
		}
		s.lmu.Lock()
		mine := s.held[z] == held
		if mine {
			delete(s.held, z)
		}
		fn := s.onLost
		s.lmu.Unlock()
		if !mine {
			continue // ended or claimed again meanwhile
		}
		s.log.Warn("session lease lost at heartbeat", "zone", z, "generation", held, "replaced", loss.Replaced(),
			"by_generation", loss.By, "by_replica", loss.Replica)
		if since := time.Since(prev); !loss.Replaced() && !prev.IsZero() && since < s.cfg.expiry {
			// Expired, though renewed within this replica's own expiry:
			// the leader expires leases sooner.
			s.log.Warn("lease timings differ between replicas: the leader replica ended this zone's lease as expired, though this replica renewed it "+
				"within its own lease expiry; every replica of a database needs the same --lease-heartbeat-interval and --lease-expiry "+
				"(the leader's expiry must be longer than every replica's heartbeat)",
				"zone", z, "renewed_ago", since.Round(time.Millisecond), "heartbeat", s.cfg.heartbeat, "expiry", s.cfg.expiry)
		}
		if fn != nil {
			fn(loss)
		}
	}
}

// checkReplicaID warns, once per lease, about a live lease under this
// Store's replica id that this Store did not claim, started or renewed
// since it opened: another running process uses the same replica id, and
// zone status cannot tell the two apart. A lease is warned about when two
// heartbeats in a row see it, so that a claim of this Store that commits
// just before the first look is not taken for another's.
func (s *Store) checkReplicaID(ctx context.Context) {
	rows, err := s.pool.Query(ctx, `SELECT zone, generation, coalesce(peer, '') FROM kds_sessions
		WHERE replica = $1 AND ended_at IS NULL AND heartbeat_at > $2`, s.cfg.replica, s.opened)
	if err != nil {
		return // the lease renewal reports the database's failures
	}
	type lease struct {
		gen  uint64
		peer string
	}
	found := map[string]lease{}
	for rows.Next() {
		var (
			z string
			l lease
		)
		if rows.Scan(&z, &l.gen, &l.peer) == nil {
			found[z] = l
		}
	}
	rows.Close()
	if rows.Err() != nil {
		return
	}
	s.lmu.Lock()
	defer s.lmu.Unlock()
	foreign := map[string]uint64{}
	for z, l := range found {
		if s.claimed[z] >= l.gen {
			continue // this Store's own, or older than its own
		}
		foreign[z] = l.gen
		if s.foreign[z] == l.gen && s.warned[z] != l.gen {
			s.warned[z] = l.gen
			s.log.Warn("another running replica uses this replica id: it holds the session lease of a zone that this replica did not claim, "+
				"so zone status (the REPLICA column of inspect zones) cannot tell the two apart; give each replica its own --replica-id",
				"replica", s.cfg.replica, "zone", z, "generation", l.gen, "zone_peer", l.peer)
		}
	}
	s.foreign = foreign
}

// noteHeartbeat logs the heartbeat's failures once per change of state.
func (s *Store) noteHeartbeat(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	failing := s.beatFailing.Load()
	switch {
	case err == nil && failing:
		s.beatFailing.Store(false)
		s.log.Info("session leases renewed again")
	case err != nil && !failing:
		s.beatFailing.Store(true)
		s.log.Warn("cannot renew session leases; retrying every heartbeat (other replicas show these zones offline once the leases expire)",
			"error", s.classify(err), "expiry", s.cfg.expiry)
	}
}

// leaderLoop competes for leadership until ctx ends: on a dedicated
// connection it tries the leader lock every heartbeat; holding it, it
// runs the once-per-database work (expiring leases, pruning the change
// log) until the connection fails (which releases the lock) or ctx ends.
// first, if not nil, is a connection Open already tried the lock on, and
// held says whether it got it.
func (s *Store) leaderLoop(ctx context.Context, first *pgx.Conn, held bool) {
	conn := first
	for {
		if conn != nil {
			s.lead(ctx, conn, held)
			closeConn(conn)
			conn, held = nil, false
		}
		t := time.NewTimer(s.cfg.heartbeat)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		c, err := pgx.ConnectConfig(ctx, s.listen.Copy())
		if err != nil {
			continue
		}
		conn = c
	}
}

func closeConn(c *pgx.Conn) {
	cctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = c.Close(cctx)
}

// tryLead tries the leader lock on conn.
func tryLead(ctx context.Context, conn *pgx.Conn) (bool, error) {
	var ok bool
	err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", leaderLockKey).Scan(&ok)
	return ok, err
}

// lead tries the lock on conn every heartbeat until it has it (held: it
// has already), then leads until conn fails or ctx ends.
func (s *Store) lead(ctx context.Context, conn *pgx.Conn, held bool) {
	beat := time.NewTicker(s.cfg.heartbeat)
	defer beat.Stop()
	for !held {
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
		}
		var err error
		if held, err = tryLead(ctx, conn); err != nil {
			return
		}
	}
	s.setLeader(true)
	defer s.setLeader(false)
	prune := time.NewTicker(s.cfg.pruneEvery)
	defer prune.Stop()
	// A new leader expires nothing for one lease expiry: it may lead
	// because the database (or this replica's connection to it) just came
	// back, and then no replica could renew its leases meanwhile. Every
	// live replica renews within a heartbeat of reconnecting; a lease
	// still old after the grace belongs to a replica that is gone. (The
	// zone status readers already show an unrenewed lease offline.)
	grace := time.Now().Add(s.cfg.expiry)
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			if time.Now().Before(grace) {
				if err := conn.Ping(ctx); err == nil {
					continue
				}
			} else if err := s.expireLeases(ctx, conn); err == nil {
				continue
			}
			if err := conn.Ping(ctx); err != nil {
				if ctx.Err() == nil {
					s.log.Warn("leader connection lost: leadership released", "error", s.classify(err))
				}
				return
			}
		case <-prune.C:
			s.prune(ctx, conn)
		}
	}
}

func (s *Store) setLeader(v bool) {
	if s.leader.Swap(v) == v {
		return
	}
	if v {
		s.log.Info("became leader: this replica expires leases and prunes the change log", "replica", s.cfg.replica)
	} else {
		s.log.Info("no longer leader", "replica", s.cfg.replica)
	}
	if s.cfg.leaderHook != nil {
		s.cfg.leaderHook(v)
	}
}

// expireLeases marks ended every lease not renewed within the expiry.
func (s *Store) expireLeases(ctx context.Context, conn *pgx.Conn) error {
	rows, err := conn.Query(ctx, `UPDATE kds_sessions SET ended_at = now()
		WHERE ended_at IS NULL AND replica IS NOT NULL AND heartbeat_at < now() - make_interval(secs => $1)
		RETURNING zone, generation, replica`, s.cfg.expiry.Seconds())
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			zone, replica string
			gen           uint64
		)
		if err := rows.Scan(&zone, &gen, &replica); err != nil {
			return err
		}
		s.log.Info("session lease expired: zone offline until it connects again", "zone", zone, "generation", gen,
			"replica", replica, "expiry", s.cfg.expiry)
	}
	return rows.Err()
}
