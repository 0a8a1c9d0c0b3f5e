//! Human review on the server (DESIGN.md section 5): the flag policy applied to every
//! answered prediction, flagged predictions (with their images) put in the review queue off
//! the request path, the review metrics on `/metrics`, and the model's realised performance
//! from the verdicts beside the estimate from its probabilities.
//!
//! The queue itself is the store's ([`vigil_store::ReviewStore`]); the decisions (which
//! flags, in which order, when a verdict settles an item) are `vigil_core::review`'s. The
//! HTTP routes are `routes::review`, the pages `pages`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use vigil_core::monitor::alert::duration_text;
use vigil_core::review::{
    Estimated, Flag, FlagPolicy, Realised, SecondOpinion, estimate_from, realised,
};
use vigil_core::types::ModelName;
use vigil_runtime::Classified;
use vigil_store::{NewReviewItem, ReviewImage, ReviewStore, VerdictOutcome};

use crate::{ApiError, AppState};

/// Review settings (`[review]` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReviewConfig {
    /// Whether `vigil serve` keeps a review queue (it needs the store).
    pub enabled: bool,
    /// Which predictions go to the queue.
    pub flag: FlagPolicy,
    /// When a verdict needs a second inspector.
    pub second_opinion: SecondOpinion,
    /// How long a claim holds an item for its inspector.
    #[serde(with = "duration_text")]
    pub claim_lease: Duration,
    /// How far back realised and estimated performance look by default.
    #[serde(with = "duration_text")]
    pub performance_window: Duration,
    /// How long the images of queued predictions are kept (the items and verdicts stay).
    #[serde(with = "duration_text")]
    pub image_retention: Duration,
    /// Queue items waiting to be written at most; past it a flagged request waits (up to its
    /// deadline) rather than lose its queue item.
    pub max_pending_writes: usize,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        ReviewConfig {
            enabled: true,
            flag: FlagPolicy::default(),
            second_opinion: SecondOpinion::Never,
            claim_lease: Duration::from_secs(10 * 60),
            performance_window: Duration::from_secs(7 * 24 * 3600),
            image_retention: Duration::from_secs(365 * 24 * 3600),
            max_pending_writes: 1024,
        }
    }
}

impl ReviewConfig {
    /// Checks the settings; the message names the one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        self.flag.validate()?;
        if self.claim_lease.is_zero() {
            return Err("review.claim_lease must be longer than zero".into());
        }
        if self.max_pending_writes == 0 {
            return Err("review.max_pending_writes must be at least 1".into());
        }
        Ok(())
    }
}

/// The review queue as the server uses it: the store, the settings and the metrics.
#[derive(Debug, Clone)]
pub struct ReviewState {
    /// The queue and the verdicts.
    pub store: Arc<dyn ReviewStore>,
    /// The settings.
    pub config: ReviewConfig,
    metrics: ReviewMetrics,
    writer: mpsc::Sender<Write>,
}

/// What the queue writer is sent.
#[derive(Debug)]
enum Write {
    /// A flagged prediction to queue.
    Item(Box<NewReviewItem>),
    /// Answered once everything sent before is written.
    Flush(oneshot::Sender<()>),
}

/// Most items per `enqueue` transaction.
const WRITE_BATCH: usize = 256;

/// The queue writer: takes what has accumulated (up to [`WRITE_BATCH`]) while the previous
/// transaction ran and writes it in one, so a burst of flagged predictions costs a few
/// transactions, not one each.
async fn write_queue(
    store: Arc<dyn ReviewStore>,
    metrics: ReviewMetrics,
    mut rx: mpsc::Receiver<Write>,
) {
    let mut batch: Vec<NewReviewItem> = Vec::new();
    let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(w) = next.take() {
            match w {
                Write::Item(item) => batch.push(*item),
                Write::Flush(ack) => acks.push(ack),
            }
            if batch.len() < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            match store.enqueue(&batch).await {
                Ok(_) => {
                    for item in &batch {
                        for f in &item.flags {
                            metrics
                                .enqueued
                                .with_label_values(&[&item.model, f.as_str()])
                                .inc();
                        }
                    }
                }
                Err(e) => {
                    for item in &batch {
                        metrics
                            .enqueue_errors
                            .with_label_values(&[&item.model])
                            .inc();
                        tracing::error!(request_id = %item.request_id, error = %e, "A flagged prediction could not be put in the review queue.");
                    }
                }
            }
            batch.clear();
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}

impl ReviewState {
    /// Review over `store`, its metrics registered in `registry` (the server's `/metrics`).
    /// Starts the queue writer, so it must be called inside a tokio runtime.
    pub fn new(
        store: Arc<dyn ReviewStore>,
        config: ReviewConfig,
        registry: &Registry,
    ) -> Result<ReviewState, prometheus::Error> {
        let metrics = ReviewMetrics::register(registry)?;
        let (writer, rx) = mpsc::channel(config.max_pending_writes.max(1));
        tokio::spawn(write_queue(store.clone(), metrics.clone(), rx));
        Ok(ReviewState {
            store,
            metrics,
            writer,
            config,
        })
    }

    /// Waits until every queue item sent so far is written (at shutdown, after the last
    /// request).
    pub async fn drain(&self) {
        let (ack, done) = oneshot::channel();
        if self.writer.send(Write::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Counts a verdict and refreshes the queue and performance gauges of its model.
    pub(crate) async fn after_verdict(&self, state: &AppState, outcome: &VerdictOutcome) {
        let v = &outcome.verdict;
        let agreement = if v.label == v.predicted {
            "agree"
        } else {
            "overturn"
        };
        self.metrics
            .verdicts
            .with_label_values(&[&v.model, &v.version, v.source.as_str(), agreement])
            .inc();
        self.refresh_with(state, &v.model, Part::Realised).await;
    }

    /// Refreshes the queue gauges and one model's performance gauges (realised and
    /// estimated) from the store.
    pub async fn refresh(&self, state: &AppState, model: &str) {
        self.refresh_with(state, model, Part::Both).await;
    }

    async fn refresh_with(&self, state: &AppState, model: &str, part: Part) {
        match self.store.queue_summary(None).await {
            Ok(s) => {
                for st in vigil_core::review::ItemState::ALL {
                    let n = s.by_state.get(st.as_str()).copied().unwrap_or(0);
                    self.metrics
                        .queue
                        .with_label_values(&[st.as_str()])
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                for f in Flag::ALL {
                    let n = s.open_by_flag.get(f.as_str()).copied().unwrap_or(0);
                    self.metrics
                        .open_by_flag
                        .with_label_values(&[f.as_str()])
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                let age = s.oldest_open_at.map_or(0.0, |t| {
                    (Utc::now() - t).num_milliseconds().max(0) as f64 / 1e3
                });
                self.metrics.oldest_age.set(age);
            }
            Err(e) => tracing::warn!(error = %e, "The review queue summary could not be read."),
        }
        let Ok(name) = model.parse::<ModelName>() else {
            return;
        };
        match performance_of(state, &name, None, part).await {
            Ok(p) => self.metrics.set_performance(&p),
            Err(e) => {
                tracing::warn!(%model, error = ?e, "Realised performance could not be computed.");
            }
        }
    }
}

/// Refreshes the review gauges of every deployed model every `every`, until aborted.
pub fn spawn_refresh(state: AppState, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let Some(review) = state.review() else {
                return;
            };
            for d in state.infer().deployments().list() {
                review.refresh(&state, d.name().as_str()).await;
            }
        }
    })
}

/// The review families on `/metrics`.
#[derive(Debug, Clone)]
struct ReviewMetrics {
    enqueued: IntCounterVec,
    enqueue_errors: IntCounterVec,
    verdicts: IntCounterVec,
    queue: IntGaugeVec,
    open_by_flag: IntGaugeVec,
    oldest_age: prometheus::Gauge,
    settled: IntGaugeVec,
    realised_accuracy: GaugeVec,
    estimated_accuracy: GaugeVec,
    realised_precision: GaugeVec,
    realised_recall: GaugeVec,
}

impl ReviewMetrics {
    fn register(r: &Registry) -> Result<ReviewMetrics, prometheus::Error> {
        fn reg<C: prometheus::core::Collector + Clone + 'static>(
            r: &Registry,
            c: C,
        ) -> Result<C, prometheus::Error> {
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let mv = ["model", "version"];
        Ok(ReviewMetrics {
            enqueued: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "vigil_review_enqueued_total",
                        "Predictions put in the review queue, by model and flag (an item with two flags counts under both).",
                    ),
                    &["model", "flag"],
                )?,
            )?,
            enqueue_errors: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "vigil_review_enqueue_errors_total",
                        "Flagged predictions whose queue item could not be written (each is also logged).",
                    ),
                    &["model"],
                )?,
            )?,
            verdicts: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "vigil_review_verdicts_total",
                        "Inspectors' verdicts, by model, version, source (queue, feedback) and whether they agree with the model.",
                    ),
                    &["model", "version", "source", "agreement"],
                )?,
            )?,
            queue: reg(
                r,
                IntGaugeVec::new(
                    Opts::new("vigil_review_queue_items", "Review queue items by state."),
                    &["state"],
                )?,
            )?,
            open_by_flag: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "vigil_review_open_items",
                        "Review queue items still needing an inspector, by flag.",
                    ),
                    &["flag"],
                )?,
            )?,
            oldest_age: reg(
                r,
                prometheus::Gauge::new(
                    "vigil_review_oldest_open_age_seconds",
                    "Age of the oldest prediction still waiting for an inspector (0 when none).",
                )?,
            )?,
            settled: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "vigil_review_settled_predictions",
                        "Predictions with a settled verdict in the performance window.",
                    ),
                    &mv,
                )?,
            )?,
            realised_accuracy: reg(
                r,
                GaugeVec::new(
                    Opts::new(
                        "vigil_review_realised_accuracy",
                        "Share of settled predictions the model got right, in the performance window.",
                    ),
                    &mv,
                )?,
            )?,
            estimated_accuracy: reg(
                r,
                GaugeVec::new(
                    Opts::new(
                        "vigil_review_estimated_accuracy",
                        "Accuracy estimated from the model's probabilities alone (confidence-based performance estimation), in the performance window; an estimate, not a measurement.",
                    ),
                    &mv,
                )?,
            )?,
            realised_precision: reg(
                r,
                GaugeVec::new(
                    Opts::new(
                        "vigil_review_realised_precision",
                        "Per label: of the settled predictions of this label, the share right.",
                    ),
                    &["model", "version", "label"],
                )?,
            )?,
            realised_recall: reg(
                r,
                GaugeVec::new(
                    Opts::new(
                        "vigil_review_realised_recall",
                        "Per label: of the settled images of this label, the share the model predicted as it.",
                    ),
                    &["model", "version", "label"],
                )?,
            )?,
        })
    }

    fn set_performance(&self, p: &Performance) {
        for (version, v) in &p.versions {
            let mv = [p.model.as_str(), version.as_str()];
            self.settled
                .with_label_values(&mv)
                .set(i64::try_from(v.realised.verdicts).unwrap_or(i64::MAX));
            if let Some(a) = v.realised.accuracy {
                self.realised_accuracy.with_label_values(&mv).set(a);
            }
            if let Some(a) = v.estimated.accuracy {
                self.estimated_accuracy.with_label_values(&mv).set(a);
            }
            for (label, m) in &v.realised.per_label {
                let l = [p.model.as_str(), version.as_str(), label.as_str()];
                if let Some(x) = m.precision {
                    self.realised_precision.with_label_values(&l).set(x);
                }
                if let Some(x) = m.recall {
                    self.realised_recall.with_label_values(&l).set(x);
                }
            }
        }
    }
}

/// The media type of an encoded image by its magic bytes (what the queue keeps with it).
pub fn sniff_media_type(bytes: &[u8]) -> &'static str {
    match bytes {
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [0xff, 0xd8, 0xff, ..] => "image/jpeg",
        [b'I', b'I', 42, 0, ..] | [b'M', b'M', 0, 42, ..] => "image/tiff",
        [b'B', b'M', ..] => "image/bmp",
        _ if bytes.len() > 132 && &bytes[128..132] == b"DICM" => "application/dicom",
        _ => "application/octet-stream",
    }
}

/// Logs one answered prediction and, when the review policy flags it, queues it for an
/// inspector with its image. The log's overload policy applies first (a refused record
/// fails the request); the queue item then goes to the queue writer, which writes in
/// batches off the request path. At most `review.max_pending_writes` items wait: past that
/// the request waits, up to its deadline, and fails with 503 rather than answer a flagged
/// prediction nobody will review.
/// Returns the flags the prediction was queued under (empty: not queued).
pub(crate) async fn record_prediction(
    state: &AppState,
    request_id: &str,
    correlation: &crate::CorrelationId,
    c: &Classified,
    image: Option<&Bytes>,
) -> Result<Vec<Flag>, ApiError> {
    let flags = match state.review() {
        Some(r) => {
            let drifting = state
                .infer()
                .deployments()
                .get(&c.model)
                .filter(|d| d.version() == &c.version)
                .and_then(|d| d.monitor().latest_window())
                .is_some_and(|w| w.report.drift);
            r.config.flag.flags(
                c.model.as_str(),
                request_id,
                c.verdict.review,
                c.ood.is_some_and(|o| o.out_of_distribution),
                drifting,
            )
        }
        None => Vec::new(),
    };
    let mut record = c.record(request_id, "serve");
    record.correlation_id.clone_from(&correlation.0);
    if state.review().is_some() {
        record.flags = flags.iter().map(|f| f.as_str().to_owned()).collect();
    }
    crate::monitoring::submit(state, record, c.timings.total).await?;
    let Some(review) = state.review() else {
        return Ok(flags);
    };
    if flags.is_empty() {
        return Ok(flags);
    }
    let item = queue_item(state, request_id, c, &flags, image);
    let limit = state
        .infer()
        .request_timeout()
        .saturating_sub(c.timings.total);
    review
        .writer
        .send_timeout(Write::Item(Box::new(item)), limit)
        .await
        .map_err(|_| ApiError::Kind {
            kind: vigil_core::ErrorKind::Unavailable,
            message: "the review queue is not keeping up; the flagged prediction was not \
                      answered so that it is not lost to review"
                .into(),
        })?;
    Ok(flags)
}

/// The labels of `model` as deployed now (empty when it is not deployed).
pub(crate) fn deployed_labels(state: &AppState, model: &ModelName) -> Vec<String> {
    state
        .infer()
        .deployments()
        .get(model)
        .map(|d| {
            d.manifest()
                .model
                .labels
                .iter()
                .map(ToString::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The queue item of a flagged answer.
fn queue_item(
    state: &AppState,
    request_id: &str,
    c: &Classified,
    flags: &[Flag],
    image: Option<&Bytes>,
) -> NewReviewItem {
    let labels = deployed_labels(state, &c.model);
    let tiles = (c.decisions.len() > 1).then(|| {
        serde_json::json!({
            "columns": c.grid.as_ref().map(|g| g.columns),
            "rows": c.grid.as_ref().map(|g| g.rows),
            "verdict_tile": c.verdict_row,
            "scores": c.decisions.iter().map(|d| d.score).collect::<Vec<_>>(),
        })
    });
    let details = serde_json::json!({
        "ood": c.ood.map(|o| serde_json::json!({
            "distance": o.distance,
            "threshold": o.threshold,
            "out_of_distribution": o.out_of_distribution,
        })),
        "tiles": tiles,
        "flag_reasons": flags.iter().map(|f| f.describe()).collect::<Vec<_>>(),
    });
    NewReviewItem {
        request_id: request_id.to_owned(),
        model: c.model.to_string(),
        version: c.version.to_string(),
        at: Utc::now(),
        label: c.verdict.label.to_string(),
        confidence: c.verdict.confidence,
        probabilities: c.observation.probabilities.clone(),
        labels,
        flags: flags.to_vec(),
        image: image.map(|b| ReviewImage {
            content_type: sniff_media_type(b).to_owned(),
            bytes: b.to_vec(),
        }),
        details,
    }
}

/// One version's performance: measured from verdicts and estimated from probabilities.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VersionPerformance {
    /// From the inspectors' settled verdicts.
    pub realised: Realised,
    /// From the model's probabilities alone (CBPE): an estimate, shown until (and beside)
    /// verdicts.
    pub estimated: Estimated,
}

/// A model's performance per version over a window.
#[derive(Debug, Clone, Serialize)]
pub struct Performance {
    /// The model.
    pub model: String,
    /// The window's start (predictions and verdicts from then on).
    pub since: DateTime<Utc>,
    /// Per version.
    pub versions: BTreeMap<String, VersionPerformance>,
    /// How to read the estimate.
    pub note: &'static str,
}

/// Which part of [`Performance`] to compute: after a verdict only the realised part moves
/// (and the estimate reads the whole window of the prediction log, which is not free).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Realised,
    Both,
}

/// Realised performance from the verdicts settled since `since` (default: the performance
/// window) and the estimate from the probabilities of the predictions logged since then.
pub async fn performance(
    state: &AppState,
    model: &ModelName,
    since: Option<DateTime<Utc>>,
) -> Result<Performance, ApiError> {
    performance_of(state, model, since, Part::Both).await
}

async fn performance_of(
    state: &AppState,
    model: &ModelName,
    since: Option<DateTime<Utc>>,
    part: Part,
) -> Result<Performance, ApiError> {
    let review = state.review().ok_or_else(|| ApiError::Kind {
        kind: vigil_core::ErrorKind::Unavailable,
        message: "this server has no review queue (no store)".into(),
    })?;
    let window = chrono::Duration::from_std(review.config.performance_window)
        .unwrap_or(chrono::Duration::days(7));
    let since = since.unwrap_or_else(|| Utc::now() - window);
    let labels = deployed_labels(state, model);
    let settled = review
        .store
        .settled(model.as_str(), Some(since), None)
        .await?;
    let mut by_version: BTreeMap<String, Vec<(&str, &str)>> = BTreeMap::new();
    for s in &settled {
        by_version
            .entry(s.version.clone())
            .or_default()
            .push((s.predicted.as_str(), s.actual.as_str()));
    }
    let mut versions: BTreeMap<String, VersionPerformance> = by_version
        .into_iter()
        .map(|(v, pairs)| {
            let p = VersionPerformance {
                realised: realised(&labels, pairs),
                estimated: Estimated::default(),
            };
            (v, p)
        })
        .collect();
    if let Some(log) = state.monitor_store().filter(|_| part == Part::Both) {
        // Aggregated in the database: memory does not grow with the window's predictions
        // (loading up to 100,000 rows every refresh made RSS climb under load).
        let by_version = log
            .probability_mass(model.as_str(), since, labels.len())
            .await?;
        for (v, masses) in by_version {
            let entry = versions.entry(v).or_insert_with(|| VersionPerformance {
                realised: realised(&labels, []),
                estimated: Estimated::default(),
            });
            entry.estimated = estimate_from(&labels, &masses);
        }
    }
    Ok(Performance {
        model: model.to_string(),
        since,
        versions,
        note: "realised: from inspectors' settled verdicts; estimated: from the model's own \
               probabilities (confidence-based performance estimation), only as good as \
               their calibration",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_are_sniffed_from_the_bytes() {
        assert_eq!(sniff_media_type(b"\x89PNG\r\n\x1a\n...."), "image/png");
        assert_eq!(sniff_media_type(&[0xff, 0xd8, 0xff, 0xe0]), "image/jpeg");
        assert_eq!(sniff_media_type(b"II*\0...."), "image/tiff");
        let mut dicom = vec![0u8; 140];
        dicom[128..132].copy_from_slice(b"DICM");
        assert_eq!(sniff_media_type(&dicom), "application/dicom");
        assert_eq!(sniff_media_type(b"??"), "application/octet-stream");
    }

    #[test]
    fn the_config_reads_durations_and_checks_shares() {
        let c: ReviewConfig = toml_like(
            r#"{"claim_lease": "5m", "flag": {"qa_share": 0.1}, "second_opinion": "when_overturned"}"#,
        );
        assert_eq!(c.claim_lease, Duration::from_secs(300));
        assert_eq!(c.second_opinion, SecondOpinion::WhenOverturned);
        assert!(c.validate().is_ok());
        let mut bad = c.clone();
        bad.flag.qa_share = 2.0;
        assert!(bad.validate().unwrap_err().contains("qa_share"));
    }

    fn toml_like(json: &str) -> ReviewConfig {
        serde_json::from_str(json).unwrap()
    }
}
