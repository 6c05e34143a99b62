package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kds-engine/kds-engine/engine/internal/resource"
	"github.com/kds-engine/kds-engine/engine/internal/store"
)

// catchUpBatch is the most revisions one catch-up query reads.
const catchUpBatch = 256

// poke wakes the reader without waiting.
func (s *Store) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// publishOwn publishes the events of this Store's commit rev. If every
// earlier commit is published (after catching up, if needed) it publishes
// them at once; if the reader has already read rev from the log it does
// nothing; otherwise (catching up failed) the reader will.
//
// wentBack says the commit found the database's revision below what this
// Store had published (checked under the counter lock, when no commit
// after rev-1 could exist): then the watchers are owed commits that are
// gone, and end with store.ErrWatchLost before rev is published, unless
// the reader did that already (resets, read under the counter lock, has
// changed since).
func (s *Store) publishOwn(ctx context.Context, rev uint64, events []store.Event, wentBack bool, resets uint64) {
	if len(events) == 0 {
		return
	}
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if wentBack && s.resets.Load() == resets && s.published.Load() >= rev {
		s.lost(s.published.Load(), rev-1, fmt.Errorf("the database was at revision %d, behind revision %d this store already published (restored from a backup, or failed over to a standby that lost commits?)", rev-1, s.published.Load()))
	}
	if s.published.Load() < rev-1 {
		if err := s.catchUpLocked(ctx, rev-1); err != nil {
			s.poke()
			return
		}
	}
	switch pub := s.published.Load(); {
	case pub == rev-1:
		// Revision first: it never lags what a watcher has seen.
		s.published.Store(rev)
		s.feed.Publish(events)
	case pub < rev-1:
		s.poke()
	}
}

// catchUp publishes every commit up to rev (at least), best effort.
func (s *Store) catchUp(ctx context.Context, rev uint64) {
	if s.published.Load() >= rev {
		return
	}
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if s.published.Load() < rev {
		if err := s.catchUpLocked(ctx, rev); err != nil {
			s.poke()
		}
	}
}

// catchUpLocked reads the commits after the published revision from
// kds_changes and publishes them in order, up to the database's latest
// revision (or to upto, if not zero, when that is reached first). s.pmu
// held. Commits pruned before they were published, or a database behind
// what was published, end every watch with store.ErrWatchLost.
func (s *Store) catchUpLocked(ctx context.Context, upto uint64) error {
	for {
		pub := s.published.Load()
		if upto != 0 && pub >= upto {
			return nil
		}
		var head uint64
		if err := s.pool.QueryRow(ctx, "SELECT revision FROM kds_counter WHERE id = 1").Scan(&head); err != nil {
			return s.classify(err)
		}
		if head < pub {
			s.lost(pub, head, fmt.Errorf("the database is at revision %d, behind revision %d this store already published (restored from a backup, or failed over to a standby that lost commits?)", head, pub))
			return nil
		}
		if head == pub {
			return nil
		}
		end := min(head, pub+catchUpBatch)
		rows, err := s.pool.Query(ctx, "SELECT revision, kind, origin, "+resourceColumns+
			" FROM kds_changes WHERE revision > $1 AND revision <= $2 ORDER BY revision, kind, type, zone, mesh, name", pub, end)
		if err != nil {
			return s.classify(err)
		}
		commits, err := readCommits(rows)
		if err != nil {
			return s.classify(err)
		}
		next := pub + 1
		for _, c := range commits {
			if c[0].Revision != next {
				break
			}
			s.published.Store(next)
			s.feed.Publish(c)
			next++
		}
		if next <= end {
			s.lost(next-1, head, fmt.Errorf("revisions from %d on were pruned from the change log before this store read them (it was cut off from the database for longer than the log's retention)", next))
			return nil
		}
	}
}

// lost ends every watch because commits after pub cannot be delivered,
// and carries on from the database's revision head.
func (s *Store) lost(pub, head uint64, why error) {
	s.log.Error("change feed lost commits: watchers resync", "published", pub, "database_revision", head, "why", why)
	s.feed.EndAll(fmt.Errorf("%w: %w", why, store.ErrWatchLost))
	s.published.Store(head)
	s.resets.Add(1)
}

// readCommits groups rows of kds_changes (ordered by revision) into
// commits.
func readCommits(rows pgx.Rows) ([][]store.Event, error) {
	defer rows.Close()
	var (
		out [][]store.Event
		cur []store.Event
	)
	for rows.Next() {
		var (
			ev           store.Event
			kind, origin int16
			r            resource.Resource
			rw           row
		)
		if err := rows.Scan(&ev.Revision, &kind, &origin, &r.Type, &r.Zone, &r.Mesh, &r.Name, &r.Version, &rw.labels, &rw.spec, &rw.ctime, &rw.mtime); err != nil {
			return nil, err
		}
		res, err := decodeRow(&r, rw)
		if err != nil {
			return nil, err
		}
		ev.Kind, ev.Origin, ev.Resource = store.EventKind(kind), store.Origin(origin), res
		if len(cur) > 0 && cur[0].Revision != ev.Revision {
			out = append(out, cur)
			cur = nil
		}
		cur = append(cur, ev)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out, rows.Err()
}

// readLoop is the reader: it catches up when woken and every poll
// interval, until ctx ends.
func (s *Store) readLoop(ctx context.Context) {
	poll := time.NewTicker(s.cfg.poll)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-poll.C:
		}
		s.pmu.Lock()
		err := s.catchUpLocked(ctx, 0)
		s.pmu.Unlock()
		s.noteReader(ctx, err)
	}
}

// noteReader logs the reader's failures once per change of state.
func (s *Store) noteReader(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	prev := s.lastErr.Load()
	switch {
	case err == nil && prev != nil:
		s.lastErr.Store(nil)
		s.log.Info("change log readable again", "postgres", s.target)
	case err != nil && prev == nil:
		s.lastErr.Store(&errBox{err})
		s.log.Warn("cannot read the change log; retrying", "error", err)
	}
}

// prune deletes the revisions of kds_changes older than the retention. Only
// the leader prunes, on its leader connection.
func (s *Store) prune(ctx context.Context, conn *pgx.Conn) {
	tag, err := conn.Exec(ctx, `DELETE FROM kds_changes
		WHERE revision <= (SELECT revision FROM kds_counter WHERE id = 1) - $1
		AND committed_at < now() - make_interval(secs => $2)`,
		int64(s.cfg.keepRevisions), s.cfg.keepFor.Seconds())
	if err != nil {
		if ctx.Err() == nil {
			s.log.Debug("prune change log", "error", s.classify(err))
		}
		return
	}
	if n := tag.RowsAffected(); n > 0 {
		s.log.Debug("change log pruned", "rows", n)
	}
}

// listenLoop keeps a LISTEN connection open until ctx ends, reconnecting
// with backoff; every notification, and every (re)connect, wakes the
// reader. A lost connection is logged once, as a warning, and its return
// once: the reconnects that fail in between (while the database is away)
// are logged at debug level only.
func (s *Store) listenLoop(ctx context.Context) {
	const minBackoff, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	failing := false // a loss was logged and LISTEN has not succeeded since
	back := func() {
		if failing {
			failing = false
			s.log.Info("LISTEN connection open again: following other replicas' commits and session claims", "postgres", s.target)
		}
	}
	for {
		connected, err := s.listenOnce(ctx, back)
		if ctx.Err() != nil {
			return
		}
		if connected {
			backoff = minBackoff
		}
		if failing {
			s.log.Debug("LISTEN connection: reconnect failed", "postgres", s.target, "error", fmt.Sprint(s.classify(err)), "backoff", backoff)
		} else {
			failing = true
			s.log.Warn("LISTEN connection lost; reconnecting with backoff (the change log is still polled; the reconnect is logged when it succeeds)",
				"postgres", s.target, "error", fmt.Sprint(s.classify(err)), "backoff", backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// listenOnce connects, LISTENs and wakes the reader on every notification
// until the connection fails or ctx ends. connected reports whether LISTEN
// succeeded; listening, if not nil, is called once it has.
func (s *Store) listenOnce(ctx context.Context, listening func()) (connected bool, err error) {
	conn, err := pgx.ConnectConfig(ctx, s.listen.Copy())
	if err != nil {
		return false, err
	}
	defer func() {
		s.listenPID.Store(0)
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+Channel+"; LISTEN "+SessionsChannel); err != nil {
		return false, err
	}
	s.listenPID.Store(conn.PgConn().PID())
	if listening != nil {
		listening()
	}
	// Notifications sent while this connection was down are lost: catch
	// up now, and check the leases.
	s.poke()
	s.pokeHeartbeat()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) && ctx.Err() != nil {
				return true, ctx.Err()
			}
			return true, err
		}
		if n.Channel == SessionsChannel {
			s.noteClaim(n.Payload)
			continue
		}
		s.poke()
	}
}
