-- kds-engine store schema, version 1.
--
-- Identity columns use the "C" collation so that ORDER BY sorts bytewise,
-- the order every store lists in (type, zone, mesh, name). Times are
-- nanoseconds since the Unix epoch (NULL for a zero time): timestamptz
-- keeps microseconds only, and a sync put must read back exactly as sent.

-- The single counter row. Every commit locks it first (SELECT ... FOR
-- UPDATE) and writes it last, so commits are serialised and revision order
-- is commit order. version is the counter of the last version a local
-- write assigned.
CREATE TABLE kds_counter (
    id       smallint PRIMARY KEY CHECK (id = 1),
    revision bigint   NOT NULL,
    version  bigint   NOT NULL
);
INSERT INTO kds_counter (id, revision, version) VALUES (1, 0, 0);

CREATE TABLE kds_resources (
    type              text COLLATE "C" NOT NULL,
    zone              text COLLATE "C" NOT NULL,
    mesh              text COLLATE "C" NOT NULL,
    name              text COLLATE "C" NOT NULL,
    version           text   NOT NULL,
    labels            jsonb,
    spec              bytea,
    creation_time     bigint,
    modification_time bigint,
    revision          bigint NOT NULL,
    PRIMARY KEY (type, zone, mesh, name)
);

-- How many resources each (type, zone) holds, kept by every commit that
-- adds or removes one, so that a limited Apply reads its counts instead
-- of counting the zone.
CREATE TABLE kds_counts (
    type text COLLATE "C" NOT NULL,
    zone text COLLATE "C" NOT NULL,
    n    bigint NOT NULL,
    PRIMARY KEY (type, zone)
);

-- One row per zone that ever had a session: the generation ClaimSession
-- handed out last. Fenced applies read it FOR SHARE inside their commit.
CREATE TABLE kds_sessions (
    zone       text COLLATE "C" PRIMARY KEY,
    generation bigint      NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
);

-- The change log watchers catch up from: one row per changed resource per
-- commit, the resource as stored after a put and as last stored before a
-- delete. kind: 1 put, 2 delete. origin: 1 local write, 2 sync apply.
-- Pruned from the oldest revision on.
CREATE TABLE kds_changes (
    revision          bigint   NOT NULL,
    kind              smallint NOT NULL,
    origin            smallint NOT NULL,
    type              text COLLATE "C" NOT NULL,
    zone              text COLLATE "C" NOT NULL,
    mesh              text COLLATE "C" NOT NULL,
    name              text COLLATE "C" NOT NULL,
    version           text   NOT NULL,
    labels            jsonb,
    spec              bytea,
    creation_time     bigint,
    modification_time bigint,
    committed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (revision, kind, type, zone, mesh, name)
);
