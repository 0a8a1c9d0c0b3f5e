//! Every metric name, its buckets and its recording helpers; no other file names a metric.
//!
//! Names follow `vigil_<area>_<noun>_<unit>[_total]` (counters end in `_total`, times are in
//! seconds), plus the counters Triton Inference Server exports (`nv_*`, with Triton's exact
//! names and microsecond units) so that existing dashboards work unchanged. Labels come from
//! bounded sets only: `model` and `version` of a deployed bundle, `label` from its manifest,
//! `outcome` and `reason` from fixed lists here. A request for a model that is not deployed
//! is not counted per model: its name came from the caller.
//!
//! The registry is [`prometheus::Registry`], one per [`Metrics`] (no global state, so tests
//! and several runtimes in one process do not mix), rendered as classic Prometheus text.

use std::time::Duration;

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use vigil_core::ErrorKind;
use vigil_core::types::{Label, ModelName, ModelVersion};

/// Requests answered, by outcome (`success`, `cancelled` or the error kind).
pub const INFER_REQUESTS_TOTAL: &str = "vigil_infer_requests_total";
/// Whole request time, admission to answer.
pub const INFER_DURATION_SECONDS: &str = "vigil_infer_duration_seconds";
/// Decode and preprocessing time, including the wait for a preprocess thread.
pub const INFER_PREPROCESS_DURATION_SECONDS: &str = "vigil_infer_preprocess_duration_seconds";
/// Time a request waited in its model's queue until its batch started running.
pub const INFER_QUEUE_DURATION_SECONDS: &str = "vigil_infer_queue_duration_seconds";
/// Engine time of one batch (one observation per batch).
pub const INFER_INFERENCE_DURATION_SECONDS: &str = "vigil_infer_inference_duration_seconds";
/// Requests admitted and not yet answered, across all models.
pub const INFER_IN_FLIGHT: &str = "vigil_infer_in_flight";
/// Images (tiles) per batch (one observation per batch).
pub const BATCH_SIZE: &str = "vigil_batch_size";
/// Requests waiting in a model's queue now.
pub const QUEUE_DEPTH: &str = "vigil_queue_depth";
/// Requests put into a model's queue; with the dequeued counter it shows spikes that a
/// scrape of the depth gauge misses.
pub const QUEUE_ENQUEUED_TOTAL: &str = "vigil_queue_enqueued_total";
/// Requests taken out of a model's queue: into a batch, or skipped.
pub const QUEUE_DEQUEUED_TOTAL: &str = "vigil_queue_dequeued_total";
/// Requests dropped without running: `cancelled` (the caller went away) or `expired`
/// (the deadline passed in the queue).
pub const QUEUE_SKIPPED_TOTAL: &str = "vigil_queue_skipped_total";
/// Decisions, by decided label.
pub const PREDICTIONS_TOTAL: &str = "vigil_predictions_total";
/// Confidence of each decision.
pub const PREDICTION_CONFIDENCE: &str = "vigil_prediction_confidence";
/// Triton: successful requests.
pub const NV_INFERENCE_REQUEST_SUCCESS: &str = "nv_inference_request_success";
/// Triton: failed requests, by `reason` (`REJECTED`, `CANCELED`, `BACKEND`, `OTHER`).
pub const NV_INFERENCE_REQUEST_FAILURE: &str = "nv_inference_request_failure";
/// Triton: inferences performed (images and tiles; a batch of 8 counts 8).
pub const NV_INFERENCE_COUNT: &str = "nv_inference_count";
/// Triton: engine executions (a batch of 8 counts 1).
pub const NV_INFERENCE_EXEC_COUNT: &str = "nv_inference_exec_count";
/// Triton: cumulative queue time of successful requests, in microseconds.
pub const NV_INFERENCE_QUEUE_DURATION_US: &str = "nv_inference_queue_duration_us";
/// Triton: cumulative engine time, in microseconds (counted per batch).
pub const NV_INFERENCE_COMPUTE_INFER_DURATION_US: &str = "nv_inference_compute_infer_duration_us";

/// Predictions flagged, by `reason` (`review`, `out_of_distribution`).
pub const FLAGGED_TOTAL: &str = "vigil_flagged_total";
/// Share of each label among the version's last window of predictions (count window).
pub const CLASS_SHARE: &str = "vigil_class_share";
/// Share of out-of-distribution images among the last window of predictions.
pub const OOD_SHARE: &str = "vigil_ood_share";
/// Share of flagged predictions among the last window of predictions.
pub const FLAGGED_SHARE: &str = "vigil_flagged_share";
/// Mean confidence of the last window of predictions.
pub const CONFIDENCE_MEAN: &str = "vigil_confidence_mean";
/// 1 when the latest drift window of the version drifted, else 0.
pub const DRIFT_DETECTED: &str = "vigil_drift_detected";
/// The latest drift window's statistic, by `signal` (`stat.mean`, `embedding.mmd`, ...).
pub const DRIFT_STATISTIC: &str = "vigil_drift_statistic";
/// The calibrated alarm threshold of each signal.
pub const DRIFT_THRESHOLD: &str = "vigil_drift_threshold";
/// Statistic over threshold: above 1 the signal alarms. Comparable across signals.
pub const DRIFT_STATISTIC_RATIO: &str = "vigil_drift_statistic_ratio";
/// The latest drift window's p-value, by `signal`, where the test gives one (assumes
/// independent images: read it with the calibrated threshold, not alone).
pub const DRIFT_P_VALUE: &str = "vigil_drift_p_value";
/// Drift windows evaluated, by `result` (`drift`, `ok`).
pub const DRIFT_WINDOWS_TOTAL: &str = "vigil_drift_windows_total";
/// Prediction-log records written to the store.
pub const PREDICTION_LOG_WRITTEN_TOTAL: &str = "vigil_prediction_log_written_total";
/// Prediction-log records not written, by `reason` (`dropped`: the log was full under the
/// `drop` policy; `rejected`: the request was refused under `reject`; `store_down`: the
/// request was refused because the store refused writes, under `on_store_error = "refuse"`;
/// `deadline`: the request's deadline passed waiting for room; `store_error`: given up on at
/// shutdown with a dead store; `duplicate`: the request id was already logged).
pub const PREDICTION_LOG_LOST_TOTAL: &str = "vigil_prediction_log_lost_total";
/// Records waiting to be written.
pub const PREDICTION_LOG_PENDING: &str = "vigil_prediction_log_pending";
/// Failed writes of a batch (the batch is kept and retried).
pub const PREDICTION_LOG_WRITE_ERRORS_TOTAL: &str = "vigil_prediction_log_write_errors_total";
/// Time to write one batch to the store.
pub const PREDICTION_LOG_FLUSH_SECONDS: &str = "vigil_prediction_log_flush_seconds";

/// Buckets for request, preprocessing, queue and engine times, in seconds: from 0.5 ms (one
/// 128x128 tile on weldnet-s runs in about 1 ms on a CPU) to 30 s (the default request
/// timeout; a whole film of hundreds of tiles takes seconds), roughly ×2.5 apart.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets for images per batch: powers of two, up to well past any sensible batch size.
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Buckets for a decision's confidence: tenths, finer near 1 where a healthy model lives
/// (a drift in confidence shows first as mass moving out of the top buckets).
const CONFIDENCE_BUCKETS: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99];

const MODEL: &str = "model";
const VERSION: &str = "version";

/// How a request ended, for `vigil_infer_requests_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Success,
    /// The caller dropped the request before it was answered.
    Cancelled,
    /// Failed with an error of this kind.
    Failed(ErrorKind),
}

impl Outcome {
    /// The `outcome` label: `success`, `cancelled` or the error kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Cancelled => "cancelled",
            Outcome::Failed(kind) => kind.as_str(),
        }
    }

    /// Triton's failure `reason`, `None` for a success.
    fn triton_reason(self) -> Option<&'static str> {
        match self {
            Outcome::Success => None,
            Outcome::Cancelled => Some("CANCELED"),
            Outcome::Failed(ErrorKind::Overloaded | ErrorKind::Unavailable) => Some("REJECTED"),
            Outcome::Failed(ErrorKind::Internal) => Some("BACKEND"),
            Outcome::Failed(
                ErrorKind::Invalid
                | ErrorKind::NotFound
                | ErrorKind::Conflict
                | ErrorKind::Unauthenticated
                | ErrorKind::Forbidden,
            ) => Some("OTHER"),
        }
    }
}

/// The runtime's metrics: one registry, rendered by [`Metrics::render`]. Cheap to clone
/// (every metric is shared).
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    preprocess: HistogramVec,
    queue: HistogramVec,
    inference: HistogramVec,
    in_flight: IntGauge,
    batch_size: HistogramVec,
    depth: IntGaugeVec,
    enqueued: IntCounterVec,
    dequeued: IntCounterVec,
    skipped: IntCounterVec,
    predictions: IntCounterVec,
    confidence: HistogramVec,
    nv_success: IntCounterVec,
    nv_failure: IntCounterVec,
    nv_count: IntCounterVec,
    nv_exec: IntCounterVec,
    nv_queue_us: IntCounterVec,
    nv_compute_us: IntCounterVec,
    monitor: MonitorFamilies,
}

/// Monitoring's families: model metrics on live data, drift, the prediction log.
#[derive(Debug, Clone)]
struct MonitorFamilies {
    flagged: IntCounterVec,
    class_share: GaugeVec,
    ood_share: GaugeVec,
    flagged_share: GaugeVec,
    confidence_mean: GaugeVec,
    drift_detected: GaugeVec,
    drift_statistic: GaugeVec,
    drift_threshold: GaugeVec,
    drift_ratio: GaugeVec,
    drift_p_value: GaugeVec,
    drift_windows: IntCounterVec,
    log_written: IntCounter,
    log_lost: IntCounterVec,
    log_pending: IntGauge,
    log_errors: IntCounter,
    log_flush: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every series family registered.
    ///
    /// # Panics
    /// Never, unless two metrics above share a name or have a malformed one: a bug.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("metric definitions are static and valid; this is a bug");
            registry
                .register(Box::new(c.clone()))
                .expect("metric names are unique; this is a bug");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )
            .expect("metric definitions are static and valid; this is a bug");
            registry
                .register(Box::new(h.clone()))
                .expect("metric names are unique; this is a bug");
            h
        };
        let mv = &[MODEL, VERSION];
        let requests = counter(
            INFER_REQUESTS_TOTAL,
            "Requests answered, by outcome.",
            &[MODEL, VERSION, "outcome"],
        );
        let duration = histogram(
            INFER_DURATION_SECONDS,
            "Whole request time, admission to answer, in seconds.",
            mv,
            DURATION_BUCKETS,
        );
        let preprocess = histogram(
            INFER_PREPROCESS_DURATION_SECONDS,
            "Decode and preprocessing time per request, in seconds.",
            mv,
            DURATION_BUCKETS,
        );
        let queue = histogram(
            INFER_QUEUE_DURATION_SECONDS,
            "Time a request waited in its model's queue, in seconds.",
            mv,
            DURATION_BUCKETS,
        );
        let inference = histogram(
            INFER_INFERENCE_DURATION_SECONDS,
            "Engine time per batch, in seconds.",
            mv,
            DURATION_BUCKETS,
        );
        let in_flight = IntGauge::new(INFER_IN_FLIGHT, "Requests admitted and not yet answered.")
            .expect("metric definitions are static and valid; this is a bug");
        registry
            .register(Box::new(in_flight.clone()))
            .expect("metric names are unique; this is a bug");
        let batch_size = histogram(
            BATCH_SIZE,
            "Images (tiles) per engine batch.",
            mv,
            BATCH_SIZE_BUCKETS,
        );
        let depth = IntGaugeVec::new(
            Opts::new(QUEUE_DEPTH, "Requests waiting in a model's queue."),
            mv,
        )
        .expect("metric definitions are static and valid; this is a bug");
        registry
            .register(Box::new(depth.clone()))
            .expect("metric names are unique; this is a bug");
        let enqueued = counter(
            QUEUE_ENQUEUED_TOTAL,
            "Requests put into a model's queue.",
            mv,
        );
        let dequeued = counter(
            QUEUE_DEQUEUED_TOTAL,
            "Requests taken out of a model's queue (run or skipped).",
            mv,
        );
        let skipped = counter(
            QUEUE_SKIPPED_TOTAL,
            "Requests dropped from a queue without running, by reason.",
            &[MODEL, VERSION, "reason"],
        );
        let predictions = counter(
            PREDICTIONS_TOTAL,
            "Decisions, by decided label.",
            &[MODEL, VERSION, "label"],
        );
        let confidence = histogram(
            PREDICTION_CONFIDENCE,
            "Confidence of each decision.",
            mv,
            CONFIDENCE_BUCKETS,
        );
        let nv_success = counter(
            NV_INFERENCE_REQUEST_SUCCESS,
            "Number of successful inference requests (Triton).",
            mv,
        );
        let nv_failure = counter(
            NV_INFERENCE_REQUEST_FAILURE,
            "Number of failed inference requests, by reason (Triton).",
            &[MODEL, VERSION, "reason"],
        );
        let nv_count = counter(
            NV_INFERENCE_COUNT,
            "Number of inferences performed (Triton).",
            mv,
        );
        let nv_exec = counter(
            NV_INFERENCE_EXEC_COUNT,
            "Number of model executions performed (Triton).",
            mv,
        );
        let nv_queue_us = counter(
            NV_INFERENCE_QUEUE_DURATION_US,
            "Cumulative inference queuing duration in microseconds (Triton).",
            mv,
        );
        let nv_compute_us = counter(
            NV_INFERENCE_COMPUTE_INFER_DURATION_US,
            "Cumulative compute inference duration in microseconds (Triton).",
            mv,
        );
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels)
                .expect("metric definitions are static and valid; this is a bug");
            registry
                .register(Box::new(g.clone()))
                .expect("metric names are unique; this is a bug");
            g
        };
        let mvs = &[MODEL, VERSION, "signal"];
        let log_written = IntCounter::new(
            PREDICTION_LOG_WRITTEN_TOTAL,
            "Prediction-log records written to the store.",
        )
        .expect("metric definitions are static and valid; this is a bug");
        let log_pending = IntGauge::new(
            PREDICTION_LOG_PENDING,
            "Prediction-log records waiting to be written.",
        )
        .expect("metric definitions are static and valid; this is a bug");
        let log_errors = IntCounter::new(
            PREDICTION_LOG_WRITE_ERRORS_TOTAL,
            "Failed writes of a prediction-log batch (kept and retried).",
        )
        .expect("metric definitions are static and valid; this is a bug");
        let log_flush = Histogram::with_opts(
            HistogramOpts::new(
                PREDICTION_LOG_FLUSH_SECONDS,
                "Time to write one prediction-log batch, in seconds.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
        )
        .expect("metric definitions are static and valid; this is a bug");
        for c in [
            Box::new(log_written.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(log_pending.clone()),
            Box::new(log_errors.clone()),
            Box::new(log_flush.clone()),
        ] {
            registry
                .register(c)
                .expect("metric names are unique; this is a bug");
        }
        let monitor = MonitorFamilies {
            flagged: counter(
                FLAGGED_TOTAL,
                "Predictions flagged, by reason.",
                &[MODEL, VERSION, "reason"],
            ),
            class_share: gauge(
                CLASS_SHARE,
                "Share of each label among the last window of predictions.",
                &[MODEL, VERSION, "label"],
            ),
            ood_share: gauge(
                OOD_SHARE,
                "Share of out-of-distribution images among the last window of predictions.",
                mv,
            ),
            flagged_share: gauge(
                FLAGGED_SHARE,
                "Share of flagged predictions among the last window of predictions.",
                mv,
            ),
            confidence_mean: gauge(
                CONFIDENCE_MEAN,
                "Mean confidence of the last window of predictions.",
                mv,
            ),
            drift_detected: gauge(
                DRIFT_DETECTED,
                "1 when the latest drift window drifted, else 0.",
                mv,
            ),
            drift_statistic: gauge(
                DRIFT_STATISTIC,
                "The latest drift window's statistic, by signal.",
                mvs,
            ),
            drift_threshold: gauge(
                DRIFT_THRESHOLD,
                "The calibrated alarm threshold of each drift signal.",
                mvs,
            ),
            drift_ratio: gauge(
                DRIFT_STATISTIC_RATIO,
                "Drift statistic over its threshold; above 1 the signal alarms.",
                mvs,
            ),
            drift_p_value: gauge(
                DRIFT_P_VALUE,
                "The latest drift window's p-value, by signal (assumes independent images).",
                mvs,
            ),
            drift_windows: counter(
                DRIFT_WINDOWS_TOTAL,
                "Drift windows evaluated, by result.",
                &[MODEL, VERSION, "result"],
            ),
            log_written,
            log_lost: counter(
                PREDICTION_LOG_LOST_TOTAL,
                "Prediction-log records not written, by reason.",
                &["reason"],
            ),
            log_pending,
            log_errors,
            log_flush,
        };
        Metrics {
            monitor,
            registry,
            requests,
            duration,
            preprocess,
            queue,
            inference,
            in_flight,
            batch_size,
            depth,
            enqueued,
            dequeued,
            skipped,
            predictions,
            confidence,
            nv_success,
            nv_failure,
            nv_count,
            nv_exec,
            nv_queue_us,
            nv_compute_us,
        }
    }

    /// Every series in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "Cannot render the metrics.");
                String::new()
            })
    }

    /// The registry, for a caller that adds its own families (the server's HTTP metrics).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn in_flight(&self) -> &IntGauge {
        &self.in_flight
    }

    /// The series of one deployed version, resolved once so that recording does not hash
    /// label values on every request.
    pub(crate) fn deployment(
        &self,
        model: &ModelName,
        version: &ModelVersion,
        labels: &[Label],
    ) -> DeploymentMetrics {
        let mv = [model.as_str(), version.as_str()];
        DeploymentMetrics {
            all: self.clone(),
            model: model.as_str().to_owned(),
            version: version.as_str().to_owned(),
            duration: self.duration.with_label_values(&mv),
            preprocess: self.preprocess.with_label_values(&mv),
            queue: self.queue.with_label_values(&mv),
            inference: self.inference.with_label_values(&mv),
            batch_size: self.batch_size.with_label_values(&mv),
            depth: self.depth.with_label_values(&mv),
            enqueued: self.enqueued.with_label_values(&mv),
            dequeued: self.dequeued.with_label_values(&mv),
            skipped_cancelled: self.skipped.with_label_values(&[mv[0], mv[1], "cancelled"]),
            skipped_expired: self.skipped.with_label_values(&[mv[0], mv[1], "expired"]),
            predictions: labels
                .iter()
                .map(|l| {
                    self.predictions
                        .with_label_values(&[mv[0], mv[1], l.as_str()])
                })
                .collect(),
            confidence: self.confidence.with_label_values(&mv),
            nv_success: self.nv_success.with_label_values(&mv),
            nv_count: self.nv_count.with_label_values(&mv),
            nv_exec: self.nv_exec.with_label_values(&mv),
            nv_queue_us: self.nv_queue_us.with_label_values(&mv),
            nv_compute_us: self.nv_compute_us.with_label_values(&mv),
        }
    }
}

/// The series of one deployed version.
#[derive(Debug, Clone)]
pub(crate) struct DeploymentMetrics {
    all: Metrics,
    model: String,
    version: String,
    duration: Histogram,
    preprocess: Histogram,
    queue: Histogram,
    inference: Histogram,
    batch_size: Histogram,
    depth: IntGauge,
    enqueued: IntCounter,
    dequeued: IntCounter,
    skipped_cancelled: IntCounter,
    skipped_expired: IntCounter,
    /// In the order of the manifest's labels.
    predictions: Vec<IntCounter>,
    confidence: Histogram,
    nv_success: IntCounter,
    nv_count: IntCounter,
    nv_exec: IntCounter,
    nv_queue_us: IntCounter,
    nv_compute_us: IntCounter,
}

/// What one finished request measured; absent stages did not happen.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RequestTimes {
    pub total: Duration,
    pub preprocess: Option<Duration>,
    pub queue: Option<Duration>,
}

impl DeploymentMetrics {
    /// One finished request (answered, failed or dropped by its caller).
    pub(crate) fn request(&self, outcome: Outcome, times: RequestTimes) {
        self.all
            .requests
            .with_label_values(&[&self.model, &self.version, outcome.as_str()])
            .inc();
        self.duration.observe(times.total.as_secs_f64());
        if let Some(p) = times.preprocess {
            self.preprocess.observe(p.as_secs_f64());
        }
        if let Some(q) = times.queue {
            self.queue.observe(q.as_secs_f64());
        }
        match outcome.triton_reason() {
            None => {
                self.nv_success.inc();
                if let Some(q) = times.queue {
                    self.nv_queue_us.inc_by(micros(q));
                }
            }
            Some(reason) => self
                .all
                .nv_failure
                .with_label_values(&[&self.model, &self.version, reason])
                .inc(),
        }
    }

    /// One decision: its label (by index in the manifest's labels) and confidence.
    pub(crate) fn prediction(&self, label: usize, confidence: f32) {
        if let Some(c) = self.predictions.get(label) {
            c.inc();
        }
        self.confidence.observe(f64::from(confidence));
    }

    /// One batch: `images` tiles run in `execs` engine calls taking `inference` in all.
    pub(crate) fn batch(&self, images: usize, execs: usize, inference: Duration) {
        self.batch_size.observe(images as f64);
        self.inference.observe(inference.as_secs_f64());
        self.nv_count.inc_by(images as u64);
        self.nv_exec.inc_by(execs as u64);
        self.nv_compute_us.inc_by(micros(inference));
    }

    /// A request entered the queue.
    pub(crate) fn enqueued(&self) {
        self.enqueued.inc();
        self.depth.inc();
    }

    /// `n` requests left the queue (into a batch or skipped).
    pub(crate) fn dequeued(&self, n: usize) {
        self.dequeued.inc_by(n as u64);
        self.depth.sub(n as i64);
    }

    /// Requests dropped without running.
    pub(crate) fn skipped(&self, cancelled: usize, expired: usize) {
        self.skipped_cancelled.inc_by(cancelled as u64);
        self.skipped_expired.inc_by(expired as u64);
    }
}

/// Monitoring's series of one deployed version.
#[derive(Debug, Clone)]
pub(crate) struct MonitorMetrics {
    families: MonitorFamilies,
    model: String,
    version: String,
    flagged_review: IntCounter,
    flagged_ood: IntCounter,
    /// In the order of the manifest's labels.
    class_share: Vec<Gauge>,
    ood_share: Gauge,
    flagged_share: Gauge,
    confidence_mean: Gauge,
    drift_detected: Gauge,
}

/// The live shares of one version's last window of predictions.
#[derive(Debug, Clone, Default)]
pub(crate) struct LiveShares {
    pub class_shares: Vec<f64>,
    pub ood_share: f64,
    pub flagged_share: f64,
    pub confidence_mean: f64,
}

/// One signal of a drift window, as the metrics see it.
#[derive(Debug, Clone)]
pub(crate) struct SignalValue<'a> {
    pub name: &'a str,
    pub statistic: f64,
    pub threshold: f64,
    pub p_value: Option<f64>,
}

impl MonitorMetrics {
    /// A flagged prediction, by reason.
    pub(crate) fn flagged(&self, review: bool, ood: bool) {
        if review {
            self.flagged_review.inc();
        }
        if ood {
            self.flagged_ood.inc();
        }
    }

    /// The shares of the last window.
    pub(crate) fn shares(&self, s: &LiveShares) {
        for (g, v) in self.class_share.iter().zip(&s.class_shares) {
            g.set(*v);
        }
        self.ood_share.set(s.ood_share);
        self.flagged_share.set(s.flagged_share);
        self.confidence_mean.set(s.confidence_mean);
    }

    /// A drift window's outcome and each signal's statistic.
    pub(crate) fn drift_window(&self, drift: bool, signals: &[SignalValue<'_>]) {
        let f = &self.families;
        self.drift_detected.set(if drift { 1.0 } else { 0.0 });
        f.drift_windows
            .with_label_values(&[
                self.model.as_str(),
                self.version.as_str(),
                if drift { "drift" } else { "ok" },
            ])
            .inc();
        for s in signals {
            let l = [self.model.as_str(), self.version.as_str(), s.name];
            f.drift_statistic.with_label_values(&l).set(s.statistic);
            f.drift_threshold.with_label_values(&l).set(s.threshold);
            if s.threshold > 0.0 {
                f.drift_ratio
                    .with_label_values(&l)
                    .set(s.statistic / s.threshold);
            }
            if let Some(p) = s.p_value {
                f.drift_p_value.with_label_values(&l).set(p);
            }
        }
    }
}

/// The prediction log's series.
#[derive(Debug, Clone)]
pub(crate) struct LogMetrics {
    families: MonitorFamilies,
}

impl LogMetrics {
    pub(crate) fn written(&self, n: usize) {
        self.families.log_written.inc_by(n as u64);
    }
    pub(crate) fn lost(&self, reason: &'static str, n: usize) {
        self.families
            .log_lost
            .with_label_values(&[reason])
            .inc_by(n as u64);
    }
    pub(crate) fn pending(&self, n: usize) {
        self.families
            .log_pending
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    pub(crate) fn write_error(&self) {
        self.families.log_errors.inc();
    }
    pub(crate) fn flush(&self, took: Duration) {
        self.families.log_flush.observe(took.as_secs_f64());
    }
}

impl Metrics {
    /// Monitoring's series of one deployed version.
    pub(crate) fn monitor(
        &self,
        model: &ModelName,
        version: &ModelVersion,
        labels: &[Label],
    ) -> MonitorMetrics {
        let f = &self.monitor;
        let mv = [model.as_str(), version.as_str()];
        MonitorMetrics {
            families: f.clone(),
            model: mv[0].to_owned(),
            version: mv[1].to_owned(),
            flagged_review: f.flagged.with_label_values(&[mv[0], mv[1], "review"]),
            flagged_ood: f
                .flagged
                .with_label_values(&[mv[0], mv[1], "out_of_distribution"]),
            class_share: labels
                .iter()
                .map(|l| f.class_share.with_label_values(&[mv[0], mv[1], l.as_str()]))
                .collect(),
            ood_share: f.ood_share.with_label_values(&mv),
            flagged_share: f.flagged_share.with_label_values(&mv),
            confidence_mean: f.confidence_mean.with_label_values(&mv),
            drift_detected: f.drift_detected.with_label_values(&mv),
        }
    }

    /// The prediction log's series.
    pub(crate) fn log(&self) -> LogMetrics {
        LogMetrics {
            families: self.monitor.clone(),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_renders_once_a_version_has_series() {
        let m = Metrics::new();
        let labels = vec!["ok".parse().expect("a valid label")];
        let d = m.deployment(
            &"weldnet".parse().expect("a valid name"),
            &"1".parse().expect("a valid version"),
            &labels,
        );
        d.request(Outcome::Success, RequestTimes::default());
        d.request(
            Outcome::Failed(ErrorKind::Overloaded),
            RequestTimes::default(),
        );
        d.batch(3, 1, Duration::from_millis(2));
        d.prediction(0, 0.9);
        let text = m.render();
        for name in [
            INFER_REQUESTS_TOTAL,
            INFER_DURATION_SECONDS,
            INFER_QUEUE_DURATION_SECONDS,
            INFER_INFERENCE_DURATION_SECONDS,
            INFER_IN_FLIGHT,
            BATCH_SIZE,
            QUEUE_DEPTH,
            QUEUE_ENQUEUED_TOTAL,
            QUEUE_DEQUEUED_TOTAL,
            PREDICTIONS_TOTAL,
            PREDICTION_CONFIDENCE,
            NV_INFERENCE_REQUEST_SUCCESS,
            NV_INFERENCE_REQUEST_FAILURE,
            NV_INFERENCE_COUNT,
            NV_INFERENCE_EXEC_COUNT,
            NV_INFERENCE_QUEUE_DURATION_US,
            NV_INFERENCE_COMPUTE_INFER_DURATION_US,
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
        }
        assert!(text.contains(
            r#"vigil_infer_requests_total{model="weldnet",outcome="success",version="1"} 1"#
        ));
        assert!(text.contains(
            r#"nv_inference_request_failure{model="weldnet",reason="REJECTED",version="1"} 1"#
        ));
        assert!(text.contains(r#"nv_inference_count{model="weldnet",version="1"} 3"#));
        assert!(text.contains(r#"nv_inference_exec_count{model="weldnet",version="1"} 1"#));
    }
}
