-- Monitoring: the prediction log, drift windows and alert events (vigil_core::monitor).
--
-- `at`/`ended_at` are RFC 3339 UTC text with microseconds like the registry's times (text
-- order is time order); the `*_ms` twin is the same instant in Unix milliseconds, indexed for
-- range queries and retention. JSON columns hold serde_json text; the store only reads back
-- what it wrote. Rows are appended, and deleted only by retention.

CREATE TABLE predictions (
    id             INTEGER PRIMARY KEY,
    request_id     TEXT NOT NULL UNIQUE,
    at             TEXT NOT NULL,
    at_ms          INTEGER NOT NULL,
    model          TEXT NOT NULL,
    version        TEXT NOT NULL,
    -- SHA-256 of the answering bundle's manifest.
    bundle         TEXT NOT NULL,
    -- `serve`, `score`, `demo`.
    source         TEXT NOT NULL,
    label          TEXT NOT NULL,
    -- NULL only when the model produced NaN (SQLite stores NaN as NULL).
    confidence     REAL,
    -- JSON array of numbers in the bundle's label order (`null` for NaN).
    probabilities  TEXT NOT NULL,
    -- JSON array of strings; `[]` when the prediction was not flagged.
    flags          TEXT NOT NULL,
    -- JSON object (`vigil_core::monitor::ImageStats`); NULL for tensor requests.
    stats          TEXT,
    -- Little-endian f32s, 4 bytes each; NULL when the bundle declares no embedding.
    embedding      BLOB,
    ood_distance   REAL,
    preprocess_us  INTEGER NOT NULL CHECK (preprocess_us >= 0),
    queue_us       INTEGER NOT NULL CHECK (queue_us >= 0),
    inference_us   INTEGER NOT NULL CHECK (inference_us >= 0),
    total_us       INTEGER NOT NULL CHECK (total_us >= 0)
);
CREATE INDEX predictions_model_at ON predictions (model, at_ms);
-- Retention deletes by time across models.
CREATE INDEX predictions_at ON predictions (at_ms);

-- One row per closed drift window; `report` is the runtime's JSON, opaque here.
CREATE TABLE drift_windows (
    id           INTEGER PRIMARY KEY,
    model        TEXT NOT NULL,
    version      TEXT NOT NULL,
    ended_at     TEXT NOT NULL,
    ended_at_ms  INTEGER NOT NULL,
    images       INTEGER NOT NULL CHECK (images >= 0),
    drift        INTEGER NOT NULL CHECK (drift IN (0, 1)),
    report       TEXT NOT NULL
);
CREATE INDEX drift_windows_model_ended ON drift_windows (model, ended_at_ms);

-- Alert state changes, in the order they happened.
CREATE TABLE alert_events (
    id        INTEGER PRIMARY KEY,
    rule      TEXT NOT NULL,
    -- NULL for rules that are not about one model.
    model     TEXT,
    state     TEXT NOT NULL CHECK (state IN ('firing', 'resolved')),
    severity  TEXT NOT NULL,
    at        TEXT NOT NULL,
    at_ms     INTEGER NOT NULL,
    -- NULL only for NaN.
    value     REAL,
    message   TEXT NOT NULL,
    details   TEXT NOT NULL
);
CREATE INDEX alert_events_at ON alert_events (at_ms);
