-- API tokens and browser sessions (issue 20): made, listed and revoked while servers run.
-- Secrets are never stored, only their SHA-256.
CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('viewer', 'inspector', 'operator', 'admin')),
    sha256      TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    expires_at  TEXT,
    revoked_at  TEXT,
    revoked_by  TEXT
);
-- One token that is not revoked per name: the name is what the audit log records.
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL;

CREATE TABLE sessions (
    id_sha256     TEXT PRIMARY KEY,
    token_sha256  TEXT NOT NULL,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL,
    csrf          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL
);
CREATE INDEX sessions_token ON sessions (token_sha256);
CREATE INDEX sessions_expires ON sessions (expires_at);
