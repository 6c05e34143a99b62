// Package store defines the engine's resource store: the Store interface the
// admin API and the sync layer are built on, its errors, filters, batches,
// and the change feed (Feed, Watch, Event) that implementations share.
//
// Implementations: store/boltstore (durable, the default: one bbolt file in
// the data dir), store/pgstore (PostgreSQL, shared by several global
// replicas) and store/memory (tests and demos). store/storetest is the
// conformance suite every implementation passes.
//
// # Contract
//
// Every method of a Store is safe for concurrent use. A Store copies the
// resources it is given and returns copies the caller owns; only Event
// resources are shared (read-only) between watchers, so that fanning a large
// commit out to many watchers costs no copies.
//
// Identity is resource.Key: (Type, Mesh, Zone, Name). Zone is empty for
// resources written on this side and, on global, names the zone a
// zone-provided resource came from, so two zones may both hold "web-1" of the
// same type and mesh without touching each other.
//
// Two kinds of write exist, and the store itself does not police which side
// may do what (the admin API and the sync layer enforce the direction of each
// type):
//
//   - Local writes, Create, Update and Delete, used by the admin API. The
//     store assigns the Version, CreationTime and ModificationTime. Update
//     and Delete take the version the caller read for optimistic
//     concurrency; a mismatch is ErrConflict with both versions in the
//     message.
//   - Sync writes, Apply, used by the sync layer: one received sync response
//     is one Batch applied in one transaction, all or nothing. Puts keep the
//     sender's Version and times verbatim; deletes name keys. A Batch may
//     carry a session Fence (see ClaimSession) and a Limit on the resources
//     per (Type, Zone); both are checked inside the commit.
//
// # Versions
//
// A version is opaque: compare it, do not parse it. A version a store
// assigns names one content of one resource for good: it is never assigned
// again by this store, for any key, also after a restart, after the store
// was lost and started empty, or after a durable store was restored from an
// older copy. Peers rely on it: the sync resumes a session by comparing
// versions and treats an equal version as unchanged content. Stores build
// versions with Versioner ("<epoch>-<counter>", a random epoch per open; see
// its documentation for why per open).
//
// # Sessions
//
// On global, the sync keeps one live session per zone. ClaimSession makes a
// new generation current for a zone; Apply with a Fence of an older
// generation fails with ErrFenced inside the commit, so nothing a replaced
// session received commits after its successor claimed the zone.
//
// Every commit (one local write, or one Apply that changes something) gets
// the next store-wide revision; Revision reports the latest.
//
// # Change feed
//
// Watch returns a *Watch that receives one Event per changed resource for
// every commit published after Watch returned, in commit order, tagged with
// the commit's revision and Origin. Writers never wait for watchers: each
// watcher queues without bound, C() is a coalescing signal, and Next()
// drains everything queued (never half a commit). A watch ends when its
// context ends (Err is the context's cause) or the store closes (ErrClosed).
// Watch.Only restricts a watch to the commits that hold an event of some
// types, so that a consumer of a few types is not woken by every commit of
// the others (the served-resource index does that: on a zone it serves
// none of the types global sends).
//
// # Listing, then watching, without a gap
//
// To build state from a snapshot and keep it current without missing or
// double-applying a commit:
//
//	w, err := s.Watch(ctx)                   // 1. watch first
//	items, rev, err := s.Snapshot(ctx, f)    // 2. then take the snapshot
//	state := index(items)
//	for {
//		select {
//		case <-w.C():
//			for _, ev := range w.Next() {
//				if ev.Revision <= rev {          // 3. already in the snapshot
//					continue
//				}
//				if !f.Matches(ev.Resource) {
//					continue
//				}
//				apply(state, ev)
//			}
//		case <-w.Done():
//			return w.Err()
//		}
//	}
//
// This is gap-free because a commit is published after it is durable: a
// commit the snapshot does not contain was published after the watch was
// registered, so the watch has it; a commit the watch also received carries a
// revision <= rev and is skipped. SnapshotAndWatch performs steps 1 and 2.
package store
