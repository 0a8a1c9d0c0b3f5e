//! [`ReviewStore`] on SQLite: the review queue, verdicts and skips, in the same `vigil.db` and
//! through the same write protocol (`BEGIN IMMEDIATE`, busy timeout) as the registry. Claims
//! are taken inside a write transaction, so SQLite's single writer makes them atomic; kept
//! images are blobs in the artifact store, written before the transaction that names them.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use tracing::{debug, info, warn};
use vigil_core::audit::{self, AuditRecord, format_time};
use vigil_core::review::{self, ItemState, SecondOpinion};
use vigil_core::types::Sha256Digest;

use super::SqliteRegistry;
use super::monitor::{
    corrupt, from_json, lower, sql_limit, time, to_json, truncate, unsigned, upper,
};
use crate::{
    Claim, Error, NewReviewItem, NewVerdict, QueueSummary, Result, ReviewItem, ReviewQuery,
    ReviewStore, Settled, StoredImage, VerdictOutcome, VerdictRow, VerdictSource,
};

const ITEM_COLUMNS: &str = "id, request_id, model, version, at, label, confidence, \
     probabilities, labels, flags, priority, image_sha256, image_content_type, image_bytes, \
     details, state, resolved_label, claim_inspector, claim_token, claim_expires_at, \
     claim_expires_ms";

const VERDICT_COLUMNS: &str = "id, request_id, item_id, model, version, predicted, label, \
     inspector, comment, at, time_spent_ms, source, supersedes";

/// The states that still need an inspector, as SQL (index-friendly, unlike `!= 'done'`).
const OPEN_STATES: &str = "state IN ('open', 'awaiting_second', 'disputed')";

/// An item turned into column values, checked before anything is written.
struct Encoded<'a> {
    item: &'a NewReviewItem,
    at: String,
    at_ms: i64,
    probabilities: String,
    labels: String,
    flags: String,
    priority: i64,
    image: Option<(Sha256Digest, i64)>,
    details: String,
}

fn encode(item: &NewReviewItem) -> Result<Encoded<'_>> {
    let mut flags = item.flags.clone();
    flags.sort_by_key(|f| (f.priority(), f.as_str()));
    flags.dedup();
    let Some(priority) = review::priority(&flags) else {
        return Err(Error::Invalid(format!(
            "review item {:?} has no flags; only flagged predictions are queued",
            item.request_id
        )));
    };
    let image = match &item.image {
        Some(img) => Some((
            Sha256Digest::of(&img.bytes),
            i64::try_from(img.bytes.len())
                .map_err(|_| Error::Invalid("the image is too large to store".into()))?,
        )),
        None => None,
    };
    let at = truncate(item.at);
    Ok(Encoded {
        item,
        at: format_time(at),
        at_ms: at.timestamp_millis(),
        probabilities: to_json("probabilities", &item.probabilities)?,
        labels: to_json("labels", &item.labels)?,
        flags: to_json("flags", &flags)?,
        priority: i64::from(priority),
        image,
        details: to_json("details", &item.details)?,
    })
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The claim's expiry for a lease starting now.
fn expiry(lease: Duration) -> Result<DateTime<Utc>> {
    let lease = chrono::Duration::from_std(lease)
        .map_err(|_| Error::Invalid(format!("a claim lease of {lease:?} is too long")))?;
    Utc::now()
        .checked_add_signed(lease)
        .map(truncate)
        .ok_or_else(|| Error::Invalid(format!("a claim lease of {lease} is too long")))
}

/// A `review_items` row as stored.
#[derive(sqlx::FromRow)]
struct ItemRow {
    id: i64,
    request_id: String,
    model: String,
    version: String,
    at: String,
    label: String,
    confidence: Option<f64>,
    probabilities: String,
    labels: String,
    flags: String,
    priority: i64,
    image_sha256: Option<String>,
    image_content_type: Option<String>,
    image_bytes: Option<i64>,
    details: String,
    state: String,
    resolved_label: Option<String>,
    claim_inspector: Option<String>,
    claim_token: Option<String>,
    claim_expires_at: Option<String>,
    claim_expires_ms: Option<i64>,
}

impl ItemRow {
    fn state(&self) -> Result<ItemState> {
        self.state
            .parse()
            .map_err(|e| corrupt("review_items.state", &format!("id {}", self.id), e))
    }

    /// The claim if one is held and unexpired at `now_ms`.
    fn live_claim(&self, now_ms: i64) -> Option<(&str, &str)> {
        match (
            &self.claim_inspector,
            &self.claim_token,
            self.claim_expires_ms,
        ) {
            (Some(i), Some(t), Some(ms)) if ms > now_ms => Some((i, t)),
            _ => None,
        }
    }

    /// Labels a verdict may give.
    fn labels(&self) -> Result<Vec<String>> {
        from_json(
            "review_items.labels",
            &format!("id {}", self.id),
            &self.labels,
        )
    }

    fn decode(
        self,
        now_ms: i64,
        verdicts: Vec<VerdictRow>,
        skipped_by: Vec<String>,
    ) -> Result<ReviewItem> {
        let row = format!("id {}", self.id);
        let row = row.as_str();
        let state = self.state()?;
        let labels = self.labels()?;
        let claim = match (self.live_claim(now_ms), &self.claim_expires_at) {
            (Some((inspector, token)), Some(at)) => Some(Claim {
                inspector: inspector.to_owned(),
                token: token.to_owned(),
                expires_at: time("review_items.claim_expires_at", row, at)?,
            }),
            _ => None,
        };
        let image = match (self.image_sha256, self.image_content_type, self.image_bytes) {
            (Some(sha256), Some(content_type), Some(bytes)) => Some(StoredImage {
                sha256,
                content_type,
                bytes: unsigned("review_items.image_bytes", row, bytes)?,
            }),
            _ => None,
        };
        let probabilities: Vec<Option<f32>> =
            from_json("review_items.probabilities", row, &self.probabilities)?;
        Ok(ReviewItem {
            id: self.id,
            at: time("review_items.at", row, &self.at)?,
            model: self.model,
            version: self.version,
            label: self.label,
            // REAL holds every f32 exactly; NULL is how SQLite stored a NaN.
            #[allow(clippy::cast_possible_truncation)]
            confidence: self.confidence.map_or(f32::NAN, |c| c as f32),
            probabilities: probabilities
                .into_iter()
                .map(|p| p.unwrap_or(f32::NAN))
                .collect(),
            labels,
            flags: from_json("review_items.flags", row, &self.flags)?,
            priority: u8::try_from(self.priority)
                .map_err(|_| corrupt("review_items.priority", row, self.priority))?,
            image,
            details: from_json("review_items.details", row, &self.details)?,
            state,
            resolved_label: self.resolved_label,
            claim,
            verdicts,
            skipped_by,
            request_id: self.request_id,
        })
    }
}

/// A `review_verdicts` row as stored.
#[derive(sqlx::FromRow)]
struct StoredVerdict {
    id: i64,
    request_id: String,
    item_id: Option<i64>,
    model: String,
    version: String,
    predicted: String,
    label: String,
    inspector: String,
    comment: String,
    at: String,
    time_spent_ms: Option<i64>,
    source: String,
    supersedes: Option<i64>,
}

impl StoredVerdict {
    fn decode(self) -> Result<VerdictRow> {
        let row = format!("id {}", self.id);
        let row = row.as_str();
        let source = match self.source.as_str() {
            "queue" => VerdictSource::Queue,
            "feedback" => VerdictSource::Feedback,
            other => return Err(corrupt("review_verdicts.source", row, other)),
        };
        Ok(VerdictRow {
            id: self.id,
            at: time("review_verdicts.at", row, &self.at)?,
            time_spent_ms: self
                .time_spent_ms
                .map(|ms| unsigned("review_verdicts.time_spent_ms", row, ms))
                .transpose()?,
            request_id: self.request_id,
            item_id: self.item_id,
            model: self.model,
            version: self.version,
            predicted: self.predicted,
            label: self.label,
            inspector: self.inspector,
            comment: self.comment,
            source,
            supersedes: self.supersedes,
        })
    }
}

/// Which item to read.
#[derive(Clone, Copy)]
enum Key<'a> {
    Id(i64),
    Request(&'a str),
}

impl SqliteRegistry {
    async fn item_row(&self, conn: &mut SqliteConnection, key: Key<'_>) -> Result<Option<ItemRow>> {
        let column = match key {
            Key::Id(_) => "id",
            Key::Request(_) => "request_id",
        };
        let sql = format!("SELECT {ITEM_COLUMNS} FROM review_items WHERE {column} = ?1");
        let query = sqlx::query_as(&sql);
        let query = match key {
            Key::Id(id) => query.bind(id),
            Key::Request(r) => query.bind(r),
        };
        query
            .fetch_optional(conn)
            .await
            .map_err(self.db("reading a review item"))
    }

    /// An item's row, or `Error::NotFound`.
    async fn existing_item(&self, conn: &mut SqliteConnection, id: i64) -> Result<ItemRow> {
        self.item_row(conn, Key::Id(id))
            .await?
            .ok_or_else(|| Error::not_found(format!("review item {id}")))
    }

    async fn verdict_rows(
        &self,
        conn: &mut SqliteConnection,
        request_id: &str,
    ) -> Result<Vec<VerdictRow>> {
        let rows: Vec<StoredVerdict> = sqlx::query_as(&format!(
            "SELECT {VERDICT_COLUMNS} FROM review_verdicts WHERE request_id = ?1 ORDER BY id"
        ))
        .bind(request_id)
        .fetch_all(conn)
        .await
        .map_err(self.db("reading verdicts"))?;
        rows.into_iter().map(StoredVerdict::decode).collect()
    }

    /// A row made into a [`ReviewItem`] with its verdicts and skips.
    async fn complete_item(&self, conn: &mut SqliteConnection, row: ItemRow) -> Result<ReviewItem> {
        let verdicts = self.verdict_rows(&mut *conn, &row.request_id).await?;
        let skipped_by: Vec<String> = sqlx::query_scalar(
            "SELECT inspector FROM review_skips WHERE item_id = ?1 ORDER BY inspector",
        )
        .bind(row.id)
        .fetch_all(&mut *conn)
        .await
        .map_err(self.db("reading skips"))?;
        row.decode(now_ms(), verdicts, skipped_by)
    }

    async fn load_item(
        &self,
        conn: &mut SqliteConnection,
        key: Key<'_>,
    ) -> Result<Option<ReviewItem>> {
        match self.item_row(&mut *conn, key).await? {
            Some(row) => Ok(Some(self.complete_item(conn, row).await?)),
            None => Ok(None),
        }
    }

    /// Sets an item's claim (a new token) and returns the item.
    async fn set_claim(
        &self,
        conn: &mut SqliteConnection,
        id: i64,
        inspector: &str,
        lease: Duration,
    ) -> Result<ReviewItem> {
        let expires = expiry(lease)?;
        let token = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "UPDATE review_items SET claim_inspector = ?2, claim_token = ?3, \
             claim_expires_at = ?4, claim_expires_ms = ?5 WHERE id = ?1",
        )
        .bind(id)
        .bind(inspector)
        .bind(&token)
        .bind(format_time(expires))
        .bind(expires.timestamp_millis())
        .execute(&mut *conn)
        .await
        .map_err(self.db("claiming a review item"))?;
        self.load_item(conn, Key::Id(id))
            .await?
            .ok_or_else(|| Error::not_found(format!("review item {id}")))
    }

    async fn clear_claim(&self, conn: &mut SqliteConnection, id: i64) -> Result<()> {
        sqlx::query(
            "UPDATE review_items SET claim_inspector = NULL, claim_token = NULL, \
             claim_expires_at = NULL, claim_expires_ms = NULL WHERE id = ?1",
        )
        .bind(id)
        .execute(conn)
        .await
        .map_err(self.db("releasing a review claim"))?;
        Ok(())
    }

    /// The item's row if `token` is its live claim (held by `inspector`, when given);
    /// `Error::Conflict` otherwise.
    async fn claimed_item(
        &self,
        conn: &mut SqliteConnection,
        id: i64,
        token: &str,
        inspector: Option<&str>,
    ) -> Result<ItemRow> {
        let row = self.existing_item(conn, id).await?;
        match row.live_claim(now_ms()) {
            Some((i, t)) if t == token && inspector.is_none_or(|x| x == i) => Ok(row),
            _ => Err(Error::Conflict(format!(
                "review item {id}: the claim has expired or is not yours; claim it again"
            ))),
        }
    }

    /// The transactional half of a verdict.
    async fn verdict_rows_write(
        &self,
        conn: &mut SqliteConnection,
        v: &NewVerdict,
        policy: SecondOpinion,
    ) -> Result<VerdictOutcome> {
        let item = self
            .item_row(&mut *conn, Key::Request(&v.request_id))
            .await?;
        let (item_id, model, version, predicted) = match &item {
            Some(row) => (
                Some(row.id),
                row.model.clone(),
                row.version.clone(),
                row.label.clone(),
            ),
            None => {
                let p: Option<(String, String, String)> = sqlx::query_as(
                    "SELECT model, version, label FROM predictions WHERE request_id = ?1",
                )
                .bind(&v.request_id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(self.db("looking up a prediction"))?;
                let (model, version, label) =
                    p.ok_or_else(|| Error::not_found(format!("prediction {:?}", v.request_id)))?;
                (None, model, version, label)
            }
        };
        if let Some(row) = &item {
            let labels = row.labels()?;
            if !labels.contains(&v.label) {
                return Err(Error::Invalid(format!(
                    "{:?} is not a label of {}:{} ({})",
                    v.label,
                    row.model,
                    row.version,
                    labels.join(", ")
                )));
            }
        }
        if v.source == VerdictSource::Queue {
            let held = item.as_ref().and_then(|row| row.live_claim(now_ms()));
            let ok = matches!(
                (held, v.claim_token.as_deref()),
                (Some((i, t)), Some(token)) if i == v.inspector && t == token
            );
            if !ok {
                return Err(Error::Conflict(format!(
                    "prediction {:?}: the claim has expired or is not yours; claim it again",
                    v.request_id
                )));
            }
        }
        let supersedes: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(id) FROM review_verdicts WHERE request_id = ?1 AND inspector = ?2",
        )
        .bind(&v.request_id)
        .bind(&v.inspector)
        .fetch_one(&mut *conn)
        .await
        .map_err(self.db("looking up earlier verdicts"))?;
        let (prev, at) = self.audit_tail(&mut *conn).await?;
        let at_ms = super::parse_time("review_verdicts.at", &at)?.timestamp_millis();
        let spent = v
            .time_spent_ms
            .map(|ms| {
                i64::try_from(ms)
                    .map_err(|_| Error::Invalid(format!("time spent {ms} ms is too large")))
            })
            .transpose()?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO review_verdicts (request_id, item_id, model, version, predicted, label, \
             inspector, comment, at, at_ms, time_spent_ms, source, supersedes) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) RETURNING id",
        )
        .bind(&v.request_id)
        .bind(item_id)
        .bind(&model)
        .bind(&version)
        .bind(&predicted)
        .bind(&v.label)
        .bind(&v.inspector)
        .bind(&v.comment)
        .bind(&at)
        .bind(at_ms)
        .bind(spent)
        .bind(v.source.as_str())
        .bind(supersedes)
        .fetch_one(&mut *conn)
        .await
        .map_err(self.db("recording a verdict"))?;

        let verdicts = self.verdict_rows(&mut *conn, &v.request_id).await?;
        if let Some(item_id) = item_id {
            let pairs: Vec<(String, String)> = verdicts
                .iter()
                .map(|r| (r.inspector.clone(), r.label.clone()))
                .collect();
            let resolution = review::resolve(&predicted, &pairs, policy);
            sqlx::query("UPDATE review_items SET state = ?2, resolved_label = ?3 WHERE id = ?1")
                .bind(item_id)
                .bind(resolution.state.as_str())
                .bind(resolution.label.as_deref())
                .execute(&mut *conn)
                .await
                .map_err(self.db("settling a review item"))?;
            // A queue verdict ends its claim; a settled item has nothing left to claim.
            if v.source == VerdictSource::Queue || resolution.state == ItemState::Done {
                self.clear_claim(&mut *conn, item_id).await?;
            }
        }

        let record = AuditRecord {
            actor: v.inspector.clone(),
            action: "review.verdict".into(),
            subject: format!("{model}:{version}/{}", v.request_id),
            reason: v.comment.clone(),
            details: serde_json::json!({
                "label": v.label,
                "predicted": predicted,
                "source": v.source.as_str(),
                "supersedes": supersedes,
                "item_id": item_id,
            })
            .to_string(),
        };
        let entry = audit::chain(prev.as_ref(), at, record);
        self.insert_audit(&mut *conn, &entry).await?;

        let verdict = verdicts
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| Error::not_found(format!("verdict {id}")))?;
        let item = self.load_item(conn, Key::Request(&v.request_id)).await?;
        Ok(VerdictOutcome { verdict, item })
    }
}

#[async_trait::async_trait]
impl ReviewStore for SqliteRegistry {
    async fn enqueue(&self, items: &[NewReviewItem]) -> Result<u64> {
        let rows = items.iter().map(encode).collect::<Result<Vec<_>>>()?;
        if rows.is_empty() {
            return Ok(0);
        }
        // Images first: a row never names a blob that is not there.
        let mut images: BTreeMap<Sha256Digest, &[u8]> = BTreeMap::new();
        for e in &rows {
            if let (Some((d, _)), Some(img)) = (&e.image, &e.item.image) {
                images.insert(*d, &img.bytes);
            }
        }
        for (d, data) in &images {
            self.blobs.put_if_absent(d, data).await?;
        }
        let mut tx = self.begin_write().await?;
        // Image retention deletes unreferenced blobs under this same lock: one may have gone
        // between the write above and the lock.
        for (d, data) in &images {
            if !self.blobs.exists(d).await? {
                self.blobs.put_if_absent(d, data).await?;
            }
        }
        let mut added = 0u64;
        for e in &rows {
            let item = e.item;
            let done = sqlx::query(
                "INSERT INTO review_items (request_id, model, version, at, at_ms, label, \
                 confidence, probabilities, labels, flags, priority, image_sha256, \
                 image_content_type, image_bytes, details, state) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, 'open') \
                 ON CONFLICT (request_id) DO NOTHING",
            )
            .bind(&item.request_id)
            .bind(&item.model)
            .bind(&item.version)
            .bind(&e.at)
            .bind(e.at_ms)
            .bind(&item.label)
            .bind(f64::from(item.confidence))
            .bind(&e.probabilities)
            .bind(&e.labels)
            .bind(&e.flags)
            .bind(e.priority)
            .bind(e.image.map(|(d, _)| d.to_hex()))
            .bind(item.image.as_ref().map(|i| i.content_type.as_str()))
            .bind(e.image.map(|(_, n)| n))
            .bind(&e.details)
            .execute(&mut *tx)
            .await
            .map_err(self.db("queueing review items"))?;
            added += done.rows_affected();
        }
        self.finish_write(tx).await?;
        debug!(
            added,
            duplicates = (rows.len() as u64).saturating_sub(added),
            "Review items queued."
        );
        Ok(added)
    }

    async fn review_image(&self, sha256: &str) -> Result<Vec<u8>> {
        let not_kept = || Error::not_found(format!("review image sha256:{sha256}"));
        let digest: Sha256Digest = sha256.parse().map_err(|_| not_kept())?;
        let kept: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM review_items WHERE image_sha256 = ?1)",
        )
        .bind(digest.to_hex())
        .fetch_one(&self.pool)
        .await
        .map_err(self.db("looking up a review image"))?;
        if !kept {
            return Err(not_kept());
        }
        match self.blobs.get(&digest).await {
            Err(Error::Blob {
                source: object_store::Error::NotFound { .. },
                ..
            }) => Err(not_kept()),
            other => other,
        }
    }

    async fn review_items(&self, q: &ReviewQuery) -> Result<Vec<ReviewItem>> {
        let mut sql = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
            "SELECT {ITEM_COLUMNS} FROM review_items WHERE 1 = 1"
        ));
        if let Some(model) = &q.model {
            sql.push(" AND model = ").push_bind(model.as_str());
        }
        if !q.states.is_empty() {
            sql.push(" AND state IN (");
            let mut states = sql.separated(", ");
            for s in &q.states {
                states.push_bind(s.as_str());
            }
            sql.push(")");
        }
        sql.push(" ORDER BY priority, at_ms, at, id");
        if q.limit > 0 {
            sql.push(" LIMIT ").push_bind(sql_limit(q.limit));
        }
        let mut tx = self.begin_read().await?;
        let rows: Vec<ItemRow> = sql
            .build_query_as()
            .fetch_all(&mut *tx)
            .await
            .map_err(self.db("listing review items"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(self.complete_item(&mut tx, row).await?);
        }
        Ok(out)
    }

    async fn review_item(&self, id: i64) -> Result<Option<ReviewItem>> {
        let mut tx = self.begin_read().await?;
        self.load_item(&mut tx, Key::Id(id)).await
    }

    async fn review_item_by_request(&self, request_id: &str) -> Result<Option<ReviewItem>> {
        let mut tx = self.begin_read().await?;
        self.load_item(&mut tx, Key::Request(request_id)).await
    }

    async fn claim_next(
        &self,
        inspector: &str,
        model: Option<&str>,
        lease: Duration,
    ) -> Result<Option<ReviewItem>> {
        if inspector.trim().is_empty() {
            return Err(Error::Invalid("an inspector must be named".into()));
        }
        let mut tx = self.begin_write().await?;
        let id: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT id FROM review_items i WHERE {OPEN_STATES} \
             AND (?1 IS NULL OR model = ?1) \
             AND (claim_expires_ms IS NULL OR claim_expires_ms <= ?2) \
             AND NOT EXISTS (SELECT 1 FROM review_skips s \
                 WHERE s.item_id = i.id AND s.inspector = ?3) \
             AND NOT EXISTS (SELECT 1 FROM review_verdicts v \
                 WHERE v.request_id = i.request_id AND v.inspector = ?3) \
             ORDER BY priority, at_ms, at, id LIMIT 1"
        ))
        .bind(model)
        .bind(now_ms())
        .bind(inspector)
        .fetch_optional(&mut *tx)
        .await
        .map_err(self.db("finding the next review item"))?;
        let Some(id) = id else {
            return Ok(None);
        };
        let item = self.set_claim(&mut tx, id, inspector, lease).await?;
        self.finish_write(tx).await?;
        Ok(Some(item))
    }

    async fn claim(&self, id: i64, inspector: &str, lease: Duration) -> Result<ReviewItem> {
        if inspector.trim().is_empty() {
            return Err(Error::Invalid("an inspector must be named".into()));
        }
        let mut tx = self.begin_write().await?;
        let row = self.existing_item(&mut tx, id).await?;
        if !row.state()?.needs_inspector() {
            return Err(Error::Conflict(format!(
                "review item {id} is already settled"
            )));
        }
        if let Some((holder, _)) = row.live_claim(now_ms())
            && holder != inspector
        {
            return Err(Error::Conflict(format!(
                "review item {id} is claimed by {holder}"
            )));
        }
        let item = self.set_claim(&mut tx, id, inspector, lease).await?;
        self.finish_write(tx).await?;
        Ok(item)
    }

    async fn release(&self, id: i64, token: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        self.claimed_item(&mut tx, id, token, None).await?;
        self.clear_claim(&mut tx, id).await?;
        self.finish_write(tx).await
    }

    async fn skip(&self, id: i64, token: &str, inspector: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        self.claimed_item(&mut tx, id, token, Some(inspector))
            .await?;
        sqlx::query(
            "INSERT INTO review_skips (item_id, inspector) VALUES (?1, ?2) \
             ON CONFLICT (item_id, inspector) DO NOTHING",
        )
        .bind(id)
        .bind(inspector)
        .execute(&mut *tx)
        .await
        .map_err(self.db("recording a skip"))?;
        self.clear_claim(&mut tx, id).await?;
        self.finish_write(tx).await
    }

    async fn record_verdict(
        &self,
        v: &NewVerdict,
        policy: SecondOpinion,
    ) -> Result<VerdictOutcome> {
        if v.inspector.trim().is_empty() {
            return Err(Error::Invalid("a verdict must name its inspector".into()));
        }
        let mut tx = self.begin_write().await?;
        let outcome = self.verdict_rows_write(&mut tx, v, policy).await?;
        self.finish_write(tx).await?;
        info!(
            request_id = %v.request_id,
            inspector = %v.inspector,
            label = %v.label,
            source = v.source.as_str(),
            "Verdict recorded."
        );
        Ok(outcome)
    }

    async fn verdicts_for(&self, request_id: &str) -> Result<Vec<VerdictRow>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(self.db("connecting to the database"))?;
        self.verdict_rows(&mut conn, request_id).await
    }

    async fn queue_summary(&self, model: Option<&str>) -> Result<QueueSummary> {
        let mut tx = self.begin_read().await?;
        let by_state: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, COUNT(*) FROM review_items WHERE (?1 IS NULL OR model = ?1) \
             GROUP BY state",
        )
        .bind(model)
        .fetch_all(&mut *tx)
        .await
        .map_err(self.db("counting review items"))?;
        let by_flag: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT f.value, COUNT(*) FROM review_items i, json_each(i.flags) f \
             WHERE {OPEN_STATES} AND (?1 IS NULL OR model = ?1) GROUP BY f.value"
        ))
        .bind(model)
        .fetch_all(&mut *tx)
        .await
        .map_err(self.db("counting review flags"))?;
        let claimed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM review_items WHERE (?1 IS NULL OR model = ?1) \
             AND claim_expires_ms > ?2",
        )
        .bind(model)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await
        .map_err(self.db("counting review claims"))?;
        let oldest: Option<String> = sqlx::query_scalar(&format!(
            "SELECT at FROM review_items WHERE {OPEN_STATES} AND (?1 IS NULL OR model = ?1) \
             ORDER BY at_ms, at LIMIT 1"
        ))
        .bind(model)
        .fetch_optional(&mut *tx)
        .await
        .map_err(self.db("finding the oldest review item"))?;
        let count = |what: &'static str, n: i64| unsigned(what, "summary", n);
        Ok(QueueSummary {
            by_state: by_state
                .into_iter()
                .map(|(s, n)| Ok((s, count("review_items.state", n)?)))
                .collect::<Result<_>>()?,
            open_by_flag: by_flag
                .into_iter()
                .map(|(f, n)| Ok((f, count("review_items.flags", n)?)))
                .collect::<Result<_>>()?,
            claimed: count("review_items.claim_expires_ms", claimed)?,
            oldest_open_at: oldest
                .map(|t| time("review_items.at", "summary", &t))
                .transpose()?,
        })
    }

    async fn settled(
        &self,
        model: &str,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<Settled>> {
        let (since_ms, since) = lower(since);
        let (until_ms, until) = upper(until);
        // A queue item settles at its latest verdict; a prediction never queued has the
        // latest feedback on it as its ground truth.
        let rows: Vec<(String, String, String, String, String, String)> = sqlx::query_as(
            "SELECT request_id, model, version, predicted, actual, at FROM ( \
               SELECT i.request_id, i.model, i.version, i.label AS predicted, \
                 i.resolved_label AS actual, v.at, v.at_ms, v.id \
               FROM review_items i JOIN review_verdicts v ON v.id = \
                 (SELECT MAX(w.id) FROM review_verdicts w WHERE w.request_id = i.request_id) \
               WHERE i.model = ?1 AND i.state = 'done' AND i.resolved_label IS NOT NULL \
               UNION ALL \
               SELECT v.request_id, v.model, v.version, v.predicted, v.label, v.at, v.at_ms, v.id \
               FROM review_verdicts v WHERE v.model = ?1 \
                 AND v.id = (SELECT MAX(w.id) FROM review_verdicts w \
                   WHERE w.request_id = v.request_id) \
                 AND NOT EXISTS (SELECT 1 FROM review_items i WHERE i.request_id = v.request_id) \
             ) WHERE at_ms >= ?2 AND at_ms <= ?3 AND at >= ?4 AND at < ?5 \
             ORDER BY at_ms, at, id",
        )
        .bind(model)
        .bind(since_ms)
        .bind(until_ms)
        .bind(since)
        .bind(until)
        .fetch_all(&self.pool)
        .await
        .map_err(self.db("reading settled predictions"))?;
        rows.into_iter()
            .map(|(request_id, model, version, predicted, actual, at)| {
                let settled_at = time("review_verdicts.at", &request_id, &at)?;
                Ok(Settled {
                    request_id,
                    model,
                    version,
                    predicted,
                    actual,
                    settled_at,
                })
            })
            .collect()
    }

    async fn delete_review_images_before(&self, cutoff: DateTime<Utc>) -> Result<u64> {
        let (cutoff_ms, cutoff) = upper(Some(cutoff));
        let mut tx = self.begin_write().await?;
        let digests: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT image_sha256 FROM review_items \
             WHERE image_sha256 IS NOT NULL AND at_ms <= ?1 AND at < ?2",
        )
        .bind(cutoff_ms)
        .bind(&cutoff)
        .fetch_all(&mut *tx)
        .await
        .map_err(self.db("finding old review images"))?;
        let done = sqlx::query(
            "UPDATE review_items SET image_sha256 = NULL, image_content_type = NULL, \
             image_bytes = NULL WHERE image_sha256 IS NOT NULL AND at_ms <= ?1 AND at < ?2",
        )
        .bind(cutoff_ms)
        .bind(&cutoff)
        .execute(&mut *tx)
        .await
        .map_err(self.db("dropping old review images"))?;
        self.finish_write(tx).await?;
        if digests.is_empty() {
            return Ok(done.rows_affected());
        }
        // The rows no longer name the images; delete the blobs nothing else names, under the
        // write lock so that no push or enqueue starts relying on one meanwhile.
        let mut tx = self.begin_write().await?;
        for hex in &digests {
            let digest: Sha256Digest = super::parse("review_items.image_sha256", hex)?;
            if !self.blob_referenced(&mut tx, &digest).await?
                && let Err(e) = self.blobs.delete(&digest).await
            {
                // The rows are already committed without it: an unreferenced blob is
                // harmless, and failing here would hide how many images were dropped.
                warn!(digest = %digest, error = %e, "Cannot delete a dropped review image; it stays unreferenced.");
            }
        }
        self.finish_write(tx).await?;
        info!(
            dropped = done.rows_affected(),
            cutoff = %cutoff,
            "Old review images dropped."
        );
        Ok(done.rows_affected())
    }
}
