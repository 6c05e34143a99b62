-- kds-engine store schema, version 2: session leases.
--
-- A row of kds_sessions is also the lease of the zone's live session: the
-- global replica that holds it, the zone's address as that replica saw it,
-- when the session started, and when its holder last renewed it. A lease is
-- live while ended_at is NULL and heartbeat_at is recent (within the lease
-- expiry); a session that ends cleanly sets ended_at, and the leader
-- replica sets it on leases whose holder stopped renewing them. Rows are
-- never deleted: the generation keeps growing. Rows from version 1 have no
-- replica and count as ended.
ALTER TABLE kds_sessions
    ADD COLUMN replica      text,
    ADD COLUMN peer         text,
    ADD COLUMN started_at   timestamptz,
    ADD COLUMN heartbeat_at timestamptz,
    ADD COLUMN ended_at     timestamptz;
