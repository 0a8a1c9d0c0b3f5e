-- Human review (vigil_core::review): the queue of flagged predictions, the verdicts given on
-- them and the items each inspector skipped.
--
-- Times are RFC 3339 UTC text with microseconds like the other tables' (text order is time
-- order), each with a `*_ms` twin in Unix milliseconds for indexes and comparisons. JSON
-- columns hold serde_json text; the store only reads back what it wrote.

CREATE TABLE review_items (
    id                  INTEGER PRIMARY KEY,
    request_id          TEXT NOT NULL UNIQUE,
    model               TEXT NOT NULL,
    version             TEXT NOT NULL,
    -- When the prediction was made.
    at                  TEXT NOT NULL,
    at_ms               INTEGER NOT NULL,
    label               TEXT NOT NULL,
    -- NULL only when the model produced NaN.
    confidence          REAL,
    -- JSON array of numbers in the order of `labels` (`null` for NaN).
    probabilities       TEXT NOT NULL,
    -- JSON array of strings: the labels a verdict may give.
    labels              TEXT NOT NULL,
    -- JSON array of flag names, most urgent first; never empty.
    flags               TEXT NOT NULL,
    -- vigil_core::review::priority of the flags; lower is worked first.
    priority            INTEGER NOT NULL CHECK (priority >= 0),
    -- The kept image (a blob in the artifact store); all three NULL when none is kept or
    -- retention dropped it.
    image_sha256        TEXT,
    image_content_type  TEXT,
    image_bytes         INTEGER CHECK (image_bytes >= 0),
    -- JSON, opaque to the store.
    details             TEXT NOT NULL,
    state               TEXT NOT NULL
                        CHECK (state IN ('open', 'awaiting_second', 'disputed', 'done')),
    -- The settled label once `done`.
    resolved_label      TEXT,
    -- The current claim; a claim whose expiry has passed counts as none.
    claim_inspector     TEXT,
    claim_token         TEXT,
    claim_expires_at    TEXT,
    claim_expires_ms    INTEGER
);
-- Work order: the next item to claim.
CREATE INDEX review_items_work ON review_items (state, priority, at_ms);
CREATE INDEX review_items_model_work ON review_items (model, state, priority, at_ms);
-- Image retention and blob garbage collection.
CREATE INDEX review_items_at ON review_items (at_ms);
CREATE INDEX review_items_image ON review_items (image_sha256) WHERE image_sha256 IS NOT NULL;

-- Verdicts, appended and never changed: a changed verdict is a new row that names the same
-- inspector's earlier one in `supersedes`.
CREATE TABLE review_verdicts (
    id             INTEGER PRIMARY KEY,
    request_id     TEXT NOT NULL,
    -- The queue item, when the prediction was queued when the verdict was given.
    item_id        INTEGER REFERENCES review_items (id),
    -- Copied from the item or the prediction log when the verdict is recorded.
    model          TEXT NOT NULL,
    version        TEXT NOT NULL,
    predicted      TEXT NOT NULL,
    label          TEXT NOT NULL,
    inspector      TEXT NOT NULL,
    comment        TEXT NOT NULL,
    at             TEXT NOT NULL,
    at_ms          INTEGER NOT NULL,
    time_spent_ms  INTEGER CHECK (time_spent_ms >= 0),
    source         TEXT NOT NULL CHECK (source IN ('queue', 'feedback')),
    supersedes     INTEGER REFERENCES review_verdicts (id)
);
CREATE INDEX review_verdicts_request ON review_verdicts (request_id, inspector);
-- settled(): ground truth by model and time.
CREATE INDEX review_verdicts_model_at ON review_verdicts (model, at_ms);

-- Inspectors who skipped an item; they are not offered it again.
CREATE TABLE review_skips (
    item_id    INTEGER NOT NULL REFERENCES review_items (id),
    inspector  TEXT NOT NULL,
    PRIMARY KEY (item_id, inspector)
);
