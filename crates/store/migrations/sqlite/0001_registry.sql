-- The model registry and the audit log.
--
-- Times are RFC 3339 UTC text with microseconds (`vigil_core::audit::format_time`), so text
-- order is time order. Digests are 64 lower-case hex digits. Blobs live in the artifact store
-- under `sha256/<first 2 hex>/<hex>`; these tables only name them.

CREATE TABLE models (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    -- Last push or alias change.
    updated_at  TEXT NOT NULL
);

-- One row per pushed version; rows are never updated or deleted (versions are immutable).
-- `id` grows with every push, so it is the push order.
CREATE TABLE versions (
    id                INTEGER PRIMARY KEY,
    model_id          INTEGER NOT NULL REFERENCES models (id),
    version           TEXT NOT NULL,
    -- SHA-256 of the manifest bytes: the bundle's identity and the manifest blob's name.
    digest            TEXT NOT NULL,
    -- `model.created_at` from the manifest.
    created_at        TEXT NOT NULL,
    pushed_at         TEXT NOT NULL,
    pushed_by         TEXT NOT NULL,
    -- The detached signature's blob, NULL when the bundle is unsigned.
    signature_digest  TEXT,
    UNIQUE (model_id, version)
);
CREATE INDEX versions_digest ON versions (digest);
CREATE INDEX versions_signature_digest ON versions (signature_digest);

-- The files a version's manifest lists.
CREATE TABLE files (
    version_id  INTEGER NOT NULL REFERENCES versions (id),
    path        TEXT NOT NULL,
    digest      TEXT NOT NULL,
    size        INTEGER NOT NULL CHECK (size >= 0),
    PRIMARY KEY (version_id, path)
);
CREATE INDEX files_digest ON files (digest);

-- Where each alias points now.
CREATE TABLE aliases (
    model_id    INTEGER NOT NULL REFERENCES models (id),
    alias       TEXT NOT NULL,
    version_id  INTEGER NOT NULL REFERENCES versions (id),
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (model_id, alias)
);

-- Every alias move, so "which version was production at time T" is one query.
CREATE TABLE alias_events (
    id            INTEGER PRIMARY KEY,
    model_id      INTEGER NOT NULL REFERENCES models (id),
    alias         TEXT NOT NULL,
    from_version  TEXT,
    -- NULL when the alias was removed.
    to_version    TEXT,
    at            TEXT NOT NULL,
    actor         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    -- The audit entry written in the same transaction. Deliberately not a foreign key: the
    -- audit log stands alone and is checked by its hash chain.
    audit_seq     INTEGER NOT NULL
);
CREATE INDEX alias_events_lookup ON alias_events (model_id, alias, at);

-- The hash-chained audit log (`vigil_core::audit`). `at` and `details` hold the exact text
-- that was hashed; `seq` is assigned by the chain, not by SQLite.
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    details    TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);

-- Append-only at the SQL level too. Someone with write access to the file can drop these;
-- the hash chain is what catches that.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: entries cannot be updated');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: entries cannot be deleted');
END;
