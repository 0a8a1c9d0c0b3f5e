//! [`MonitorStore`] on SQLite: the prediction log, drift windows and alert events, in the
//! same `vigil.db` and through the same write protocol (`BEGIN IMMEDIATE`, busy timeout) as
//! the registry, so the registry and the monitor writer never fail on each other's locks.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use vigil_core::audit::format_time;
use vigil_core::monitor::{ImageStats, PredictionRecord};
use vigil_core::review::ProbabilityMass;

use super::{SqliteRegistry, parse_time};
use crate::{
    AlertEventRow, AlertState, AppendOutcome, DriftWindowRow, Error, MonitorStore, PredictionQuery,
    Result,
};

/// Rows deleted per retention transaction: short enough that the prediction writer waits
/// milliseconds, not seconds, for the lock.
const DELETE_CHUNK: i64 = 10_000;

/// Rows per `INSERT` statement in a batch: 19 parameters each, well under SQLite's limit of
/// 32,766, and few enough statements that the per-statement round trip to the driver's
/// thread stops mattering.
const ROWS_PER_INSERT: usize = 64;

/// Greater than any stored RFC 3339 text (they start with a digit): "no upper bound".
const TEXT_MAX: &str = "~";

const PREDICTION_COLUMNS: &str = "request_id, at, model, version, bundle, source, label, \
     confidence, probabilities, flags, stats, embedding, ood_distance, preprocess_us, \
     queue_us, inference_us, total_us, correlation_id";

/// A record turned into column values, checked before the transaction starts.
struct Encoded<'a> {
    r: &'a PredictionRecord,
    at: String,
    at_ms: i64,
    probabilities: String,
    flags: String,
    stats: Option<String>,
    embedding: Option<Vec<u8>>,
    us: [i64; 4],
}

pub(super) fn to_json<T: serde::Serialize + ?Sized>(what: &str, value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| Error::Invalid(format!("cannot store {what} as JSON: {e}")))
}

fn encode(r: &PredictionRecord) -> Result<Encoded<'_>> {
    let us = |name: &str, v: u64| {
        i64::try_from(v).map_err(|_| {
            Error::Invalid(format!(
                "prediction {:?}: {name} = {v} is too large to store",
                r.request_id
            ))
        })
    };
    let at = truncate(r.at);
    Ok(Encoded {
        r,
        at: format_time(at),
        at_ms: at.timestamp_millis(),
        probabilities: to_json("probabilities", &r.probabilities)?,
        flags: to_json("flags", &r.flags)?,
        stats: r.stats.as_ref().map(|s| to_json("stats", s)).transpose()?,
        embedding: r.embedding.as_deref().map(f32_bytes),
        us: [
            us("preprocess_us", r.preprocess_us)?,
            us("queue_us", r.queue_us)?,
            us("inference_us", r.inference_us)?,
            us("total_us", r.total_us)?,
        ],
    })
}

/// `t` to the microsecond, as it is stored.
pub(super) fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    let sub = t.timestamp_subsec_nanos() % 1000;
    t - chrono::Duration::nanoseconds(i64::from(sub))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `(ms, text)` lower bound, inclusive: `at_ms >= ms AND at >= text`.
pub(super) fn lower(since: Option<DateTime<Utc>>) -> (i64, String) {
    since.map_or((i64::MIN, String::new()), |t| {
        (t.timestamp_millis(), format_time(t))
    })
}

/// `(ms, text)` upper bound, exclusive: `at_ms <= ms AND at < text`. The millisecond column
/// narrows the scan through the index; the text makes the bound exact to the microsecond.
pub(super) fn upper(until: Option<DateTime<Utc>>) -> (i64, String) {
    until.map_or((i64::MAX, TEXT_MAX.to_owned()), |t| {
        (t.timestamp_millis(), format_time(t))
    })
}

pub(super) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

pub(super) fn corrupt(column: &'static str, row: &str, detail: impl std::fmt::Display) -> Error {
    Error::CorruptRow {
        column,
        row: row.to_owned(),
        detail: detail.to_string(),
    }
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(
    column: &'static str,
    row: &str,
    text: &str,
) -> Result<T> {
    serde_json::from_str(text).map_err(|e| corrupt(column, row, format!("{e} in {text:?}")))
}

pub(super) fn time(column: &'static str, row: &str, text: &str) -> Result<DateTime<Utc>> {
    parse_time(column, text).map_err(|e| corrupt(column, row, e))
}

pub(super) fn unsigned(column: &'static str, row: &str, v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| corrupt(column, row, format!("{v} is negative")))
}

/// [`ImageStats`] as stored: serde_json writes a non-finite float as `null`, read back as NaN.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredStats {
    mean: Option<f64>,
    contrast: Option<f64>,
    dynamic_range: Option<f64>,
    sharpness: Option<f64>,
    noise: Option<f64>,
    saturated: Option<f64>,
    width: u32,
    height: u32,
    bit_depth: u8,
}

impl From<StoredStats> for ImageStats {
    fn from(s: StoredStats) -> ImageStats {
        let f = |v: Option<f64>| v.unwrap_or(f64::NAN);
        ImageStats {
            mean: f(s.mean),
            contrast: f(s.contrast),
            dynamic_range: f(s.dynamic_range),
            sharpness: f(s.sharpness),
            noise: f(s.noise),
            saturated: f(s.saturated),
            width: s.width,
            height: s.height,
            bit_depth: s.bit_depth,
        }
    }
}

/// A `predictions` row as stored.
#[derive(sqlx::FromRow)]
struct PredictionRow {
    request_id: String,
    at: String,
    model: String,
    version: String,
    bundle: String,
    source: String,
    label: String,
    confidence: Option<f64>,
    probabilities: String,
    flags: String,
    stats: Option<String>,
    embedding: Option<Vec<u8>>,
    ood_distance: Option<f64>,
    preprocess_us: i64,
    queue_us: i64,
    inference_us: i64,
    total_us: i64,
    correlation_id: Option<String>,
}

impl PredictionRow {
    fn decode(self) -> Result<PredictionRecord> {
        let row = format!("request_id {:?}", self.request_id);
        let row = row.as_str();
        let probabilities: Vec<Option<f32>> =
            from_json("predictions.probabilities", row, &self.probabilities)?;
        let embedding = match self.embedding {
            None => None,
            Some(bytes) if bytes.len() % 4 != 0 => {
                return Err(corrupt(
                    "predictions.embedding",
                    row,
                    format!("{} bytes is not a whole number of f32s", bytes.len()),
                ));
            }
            Some(bytes) => Some(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
        };
        Ok(PredictionRecord {
            at: time("predictions.at", row, &self.at)?,
            model: self.model,
            version: self.version,
            bundle: self.bundle,
            source: self.source,
            label: self.label,
            // REAL holds every f32 exactly; NULL is how SQLite stored a NaN.
            #[allow(clippy::cast_possible_truncation)]
            confidence: self.confidence.map_or(f32::NAN, |c| c as f32),
            probabilities: probabilities
                .into_iter()
                .map(|p| p.unwrap_or(f32::NAN))
                .collect(),
            flags: from_json("predictions.flags", row, &self.flags)?,
            stats: self
                .stats
                .map(|s| from_json::<StoredStats>("predictions.stats", row, &s).map(Into::into))
                .transpose()?,
            embedding,
            ood_distance: self.ood_distance,
            preprocess_us: unsigned("predictions.preprocess_us", row, self.preprocess_us)?,
            queue_us: unsigned("predictions.queue_us", row, self.queue_us)?,
            inference_us: unsigned("predictions.inference_us", row, self.inference_us)?,
            total_us: unsigned("predictions.total_us", row, self.total_us)?,
            request_id: self.request_id,
            correlation_id: self.correlation_id,
        })
    }
}

type DriftRow = (i64, String, String, String, i64, bool, String);
type AlertRow = (
    i64,
    String,
    Option<String>,
    String,
    String,
    String,
    Option<f64>,
    String,
    String,
);

fn drift_window(row: DriftRow) -> Result<DriftWindowRow> {
    let (id, model, version, ended_at, images, drift, report) = row;
    let row = format!("id {id}");
    Ok(DriftWindowRow {
        model,
        version,
        ended_at: time("drift_windows.ended_at", &row, &ended_at)?,
        images: unsigned("drift_windows.images", &row, images)?,
        drift,
        report: from_json("drift_windows.report", &row, &report)?,
    })
}

fn alert_event(row: AlertRow) -> Result<AlertEventRow> {
    let (id, rule, model, state, severity, at, value, message, details) = row;
    let row = format!("id {id}");
    Ok(AlertEventRow {
        rule,
        model,
        state: state
            .parse::<AlertState>()
            .map_err(|e| corrupt("alert_events.state", &row, e))?,
        severity,
        at: time("alert_events.at", &row, &at)?,
        value: value.unwrap_or(f64::NAN),
        message,
        details: from_json("alert_events.details", &row, &details)?,
    })
}

#[async_trait::async_trait]
impl MonitorStore for SqliteRegistry {
    async fn append_predictions(&self, records: &[PredictionRecord]) -> Result<AppendOutcome> {
        let rows = records.iter().map(encode).collect::<Result<Vec<_>>>()?;
        let mut out = AppendOutcome::default();
        if rows.is_empty() {
            return Ok(out);
        }
        let mut tx = self.begin_write().await?;
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO predictions (request_id, at, at_ms, model, version, bundle, source, \
                 label, confidence, probabilities, flags, stats, embedding, ood_distance, \
                 preprocess_us, queue_us, inference_us, total_us, correlation_id) ",
            );
            insert.push_values(chunk, |mut b, e| {
                let r = e.r;
                b.push_bind(&r.request_id)
                    .push_bind(&e.at)
                    .push_bind(e.at_ms)
                    .push_bind(&r.model)
                    .push_bind(&r.version)
                    .push_bind(&r.bundle)
                    .push_bind(&r.source)
                    .push_bind(&r.label)
                    .push_bind(f64::from(r.confidence))
                    .push_bind(&e.probabilities)
                    .push_bind(&e.flags)
                    .push_bind(e.stats.as_deref())
                    .push_bind(e.embedding.as_deref())
                    .push_bind(r.ood_distance)
                    .push_bind(e.us[0])
                    .push_bind(e.us[1])
                    .push_bind(e.us[2])
                    .push_bind(e.us[3])
                    .push_bind(r.correlation_id.as_deref());
            });
            // Rows conflict one by one, also with earlier rows of the same statement.
            insert.push(" ON CONFLICT (request_id) DO NOTHING");
            let done = insert
                .build()
                .execute(&mut *tx)
                .await
                .map_err(self.db("appending predictions"))?;
            let n = chunk.len() as u64;
            out.inserted += done.rows_affected();
            out.duplicates += n - done.rows_affected().min(n);
        }
        self.finish_write(tx).await?;
        Ok(out)
    }

    async fn prediction(&self, request_id: &str) -> Result<Option<PredictionRecord>> {
        let row: Option<PredictionRow> = sqlx::query_as(&format!(
            "SELECT {PREDICTION_COLUMNS} FROM predictions WHERE request_id = ?1"
        ))
        .bind(request_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.db("reading a prediction"))?;
        row.map(PredictionRow::decode).transpose()
    }

    async fn predictions(&self, q: &PredictionQuery) -> Result<Vec<PredictionRecord>> {
        let (since_ms, since) = lower(q.since);
        let (until_ms, until) = upper(q.until);
        let rows: Vec<PredictionRow> = sqlx::query_as(&format!(
            "SELECT {PREDICTION_COLUMNS} FROM predictions \
             WHERE model = ?1 AND at_ms >= ?2 AND at_ms <= ?3 AND at >= ?4 AND at < ?5 \
             AND (?6 IS NULL OR version = ?6) \
             ORDER BY at_ms, at, id LIMIT ?7"
        ))
        .bind(&q.model)
        .bind(since_ms)
        .bind(until_ms)
        .bind(since)
        .bind(until)
        .bind(q.version.as_deref())
        .bind(sql_limit(q.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(self.db("reading predictions"))?;
        rows.into_iter().map(PredictionRow::decode).collect()
    }

    async fn probability_mass(
        &self,
        model: &str,
        since: DateTime<Utc>,
        labels: usize,
    ) -> Result<BTreeMap<String, Vec<ProbabilityMass>>> {
        let (since_ms, since) = lower(Some(since));
        // Per row: the sum of its probabilities (negatives count as 0) and whether any is
        // null (a NaN as JSON stores it); then per version, predicted label and position,
        // the sum of the normalised probabilities and the number of rows.
        let rows: Vec<(String, String, i64, f64, i64)> = sqlx::query_as(
            "WITH p AS ( \
                 SELECT id, version, label, probabilities FROM predictions \
                 WHERE model = ?1 AND at_ms >= ?2 AND at >= ?3 \
                 AND json_array_length(probabilities) = ?4), \
             t AS ( \
                 SELECT p.id, SUM(MAX(j.value, 0.0)) AS total, \
                        SUM(j.value IS NULL) AS bad \
                 FROM p, json_each(p.probabilities) AS j GROUP BY p.id) \
             SELECT p.version, p.label, CAST(j.key AS INTEGER), \
                    SUM(MAX(j.value, 0.0) / t.total), COUNT(*) \
             FROM p JOIN t ON t.id = p.id, json_each(p.probabilities) AS j \
             WHERE t.total > 0 AND t.bad = 0 \
             GROUP BY p.version, p.label, CAST(j.key AS INTEGER)",
        )
        .bind(model)
        .bind(since_ms)
        .bind(since)
        .bind(i64::try_from(labels).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(self.db("aggregating prediction probabilities"))?;
        let mut out: BTreeMap<String, Vec<ProbabilityMass>> = BTreeMap::new();
        for (version, predicted, key, mass, count) in rows {
            let Ok(key) = usize::try_from(key) else {
                continue;
            };
            if key >= labels {
                continue;
            }
            let masses = out.entry(version).or_default();
            let i = match masses.iter().position(|m| m.predicted == predicted) {
                Some(i) => i,
                None => {
                    masses.push(ProbabilityMass {
                        predicted,
                        count: u64::try_from(count).unwrap_or(0),
                        mass: vec![0.0; labels],
                    });
                    masses.len() - 1
                }
            };
            masses[i].mass[key] = mass;
        }
        Ok(out)
    }

    async fn count_predictions(&self, model: Option<&str>) -> Result<u64> {
        let n: i64 = match model {
            Some(m) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM predictions WHERE model = ?1")
                    .bind(m)
                    .fetch_one(&self.pool)
                    .await
            }
            None => {
                sqlx::query_scalar("SELECT COUNT(*) FROM predictions")
                    .fetch_one(&self.pool)
                    .await
            }
        }
        .map_err(self.db("counting predictions"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn delete_predictions_before(&self, cutoff: DateTime<Utc>) -> Result<u64> {
        let (cutoff_ms, cutoff) = upper(Some(cutoff));
        let mut total = 0u64;
        loop {
            let mut tx = self.begin_write().await?;
            let done = sqlx::query(
                "DELETE FROM predictions WHERE id IN (SELECT id FROM predictions \
                 WHERE at_ms <= ?1 AND at < ?2 LIMIT ?3)",
            )
            .bind(cutoff_ms)
            .bind(&cutoff)
            .bind(DELETE_CHUNK)
            .execute(&mut *tx)
            .await
            .map_err(self.db("deleting old predictions"))?;
            self.finish_write(tx).await?;
            total += done.rows_affected();
            if done.rows_affected() < DELETE_CHUNK.unsigned_abs() {
                break;
            }
        }
        if total > 0 {
            tracing::info!(deleted = total, cutoff = %cutoff, "Old predictions deleted.");
        }
        Ok(total)
    }

    async fn append_drift_window(&self, w: &DriftWindowRow) -> Result<()> {
        let ended_at = truncate(w.ended_at);
        let images = i64::try_from(w.images)
            .map_err(|_| Error::Invalid(format!("{} images is too large to store", w.images)))?;
        let report = to_json("the drift report", &w.report)?;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO drift_windows \
             (model, version, ended_at, ended_at_ms, images, drift, report) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(&w.model)
        .bind(&w.version)
        .bind(format_time(ended_at))
        .bind(ended_at.timestamp_millis())
        .bind(images)
        .bind(w.drift)
        .bind(report)
        .execute(&mut *tx)
        .await
        .map_err(self.db("appending a drift window"))?;
        self.finish_write(tx).await
    }

    async fn drift_windows(
        &self,
        model: &str,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Vec<DriftWindowRow>> {
        let (since_ms, since) = lower(since);
        let (until_ms, until) = upper(until);
        let rows: Vec<DriftRow> = sqlx::query_as(
            "SELECT id, model, version, ended_at, images, drift, report FROM drift_windows \
             WHERE model = ?1 AND ended_at_ms >= ?2 AND ended_at_ms <= ?3 \
             AND ended_at >= ?4 AND ended_at < ?5 \
             ORDER BY ended_at_ms, ended_at, id LIMIT ?6",
        )
        .bind(model)
        .bind(since_ms)
        .bind(until_ms)
        .bind(since)
        .bind(until)
        .bind(sql_limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(self.db("reading drift windows"))?;
        rows.into_iter().map(drift_window).collect()
    }

    async fn append_alert_event(&self, e: &AlertEventRow) -> Result<()> {
        let at = truncate(e.at);
        let details = to_json("the alert details", &e.details)?;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO alert_events \
             (rule, model, state, severity, at, at_ms, value, message, details) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(&e.rule)
        .bind(e.model.as_deref())
        .bind(e.state.as_str())
        .bind(&e.severity)
        .bind(format_time(at))
        .bind(at.timestamp_millis())
        .bind(e.value)
        .bind(&e.message)
        .bind(details)
        .execute(&mut *tx)
        .await
        .map_err(self.db("appending an alert event"))?;
        self.finish_write(tx).await
    }

    async fn alert_events(&self, limit: usize) -> Result<Vec<AlertEventRow>> {
        let rows: Vec<AlertRow> = sqlx::query_as(
            "SELECT id, rule, model, state, severity, at, value, message, details \
             FROM alert_events ORDER BY at_ms DESC, at DESC, id DESC LIMIT ?1",
        )
        .bind(sql_limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(self.db("reading alert events"))?;
        rows.into_iter().map(alert_event).collect()
    }
}
