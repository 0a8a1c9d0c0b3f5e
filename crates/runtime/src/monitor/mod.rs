//! Monitoring on the request path (DESIGN.md section 4): what each answered request adds to
//! its version's live picture, kept off the critical path.
//!
//! ```text
//! InFlight::finish ─► VersionMonitor::observe(observation)        (a mutex push, O(1))
//!                       ├─ live ring (count and time windows) ─► vigil_class_share, ...
//!                       └─ drift window full, `every` new images (reference) ─► spawn_blocking(evaluate)
//!                                                                  ├─► vigil_drift_* gauges
//!                                                                  ├─► log line
//!                                                                  └─► PredictionLog (store)
//! server ─► PredictionLog::submit(record) ─► bounded channel ─► writer task ─► MonitorSink
//! ```
//!
//! - [`log`]: the prediction log's writer: batches, flush interval, overload policy,
//!   flush on shutdown.
//! - [`VersionMonitor`]: one per deployed version: the reference profile and OOD scorer from
//!   the bundle's `reference.json`, the live ring, the drift window.

pub mod log;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use vigil_core::drift::mahalanobis::OodScore;
use vigil_core::monitor::{Observation, OodScorer, ReferenceProfile, WindowReport};
use vigil_core::types::{Label, ModelName, ModelVersion};

pub use log::{DriftWindow, LogConfig, MonitorSink, OnFull, OnStoreError, PredictionLog};

use crate::metrics::{LiveShares, MonitorMetrics, SignalValue};

/// How the runtime monitors: the live ring and where records go.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Compute per-image statistics, OOD scores and drift windows. Off, only the live
    /// shares of labels, confidence and flags are kept.
    pub enabled: bool,
    /// Predictions kept for the live shares and the API's count and time windows.
    /// Default 10,000.
    pub live_capacity: usize,
    /// The count window of the `vigil_*_share` gauges. Default 200.
    pub live_window: usize,
    /// Seed of the permutation tests, so that a window's p-values are reproducible.
    pub seed: u64,
    /// The least time between two drift evaluations of one version. A window is evaluated
    /// every `every` images the reference was calibrated for, but at high throughput (hundreds
    /// of images a second) that would keep a core busy with permutation tests: past this
    /// rate the evaluations are spaced out, which only lowers the false-alarm count per
    /// image. Default 1 s; zero: every `every` images, however fast they come.
    pub drift_min_interval: Duration,
    /// Where predictions and drift windows are written; `None` keeps nothing.
    pub log: Option<PredictionLog>,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            enabled: true,
            live_capacity: 10_000,
            live_window: 200,
            seed: 0,
            drift_min_interval: Duration::from_secs(1),
            log: None,
        }
    }
}

/// How one prediction looked to the live ring.
#[derive(Debug, Clone, Copy)]
struct LivePoint {
    at: Instant,
    predicted: usize,
    confidence: f32,
    flagged: bool,
    ood: bool,
}

#[derive(Debug, Default)]
struct State {
    live: VecDeque<LivePoint>,
    window: VecDeque<Observation>,
    since_evaluation: usize,
    last_evaluation: Option<Instant>,
}

/// The live picture over a window of recent predictions (API: `/v1/models/{name}/monitoring`).
#[derive(Debug, Clone, Serialize)]
pub struct LiveSummary {
    /// Predictions in the window.
    pub predictions: usize,
    /// Share of each label, by label.
    pub class_shares: Vec<(String, f64)>,
    /// Mean confidence.
    pub confidence_mean: f64,
    /// Confidence quantiles: 10%, 50%, 90%.
    pub confidence_quantiles: [f64; 3],
    /// Share flagged for review (any reason).
    pub flagged_share: f64,
    /// Share out of distribution.
    pub ood_share: f64,
}

/// Which recent predictions a summary covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveWindow {
    /// The last `n` predictions.
    Count(usize),
    /// Predictions of the last duration.
    Time(Duration),
}

/// Monitoring of one deployed version.
#[derive(Debug)]
pub struct VersionMonitor {
    model: ModelName,
    version: ModelVersion,
    labels: Vec<Label>,
    embedding_output: Option<String>,
    reference: Option<Arc<ReferenceProfile>>,
    ood: Option<OodScorer>,
    cfg: MonitorConfig,
    metrics: MonitorMetrics,
    state: Mutex<State>,
    evaluating: Arc<AtomicBool>,
    latest: Arc<Mutex<Option<Arc<DriftWindow>>>>,
}

impl VersionMonitor {
    pub(crate) fn new(
        model: ModelName,
        version: ModelVersion,
        labels: Vec<Label>,
        embedding_output: Option<String>,
        reference: Option<ReferenceProfile>,
        cfg: MonitorConfig,
        metrics: MonitorMetrics,
    ) -> VersionMonitor {
        let reference = reference.filter(|_| cfg.enabled).map(Arc::new);
        let ood = match reference.as_deref().map(ReferenceProfile::ood_scorer) {
            Some(Ok(scorer)) => scorer,
            Some(Err(e)) => {
                tracing::warn!(%model, %version, error = %e, "The reference profile has no usable embedding model; images are not scored for out-of-distribution.");
                None
            }
            None => None,
        };
        VersionMonitor {
            model,
            version,
            labels,
            embedding_output,
            reference,
            ood,
            cfg,
            metrics,
            state: Mutex::new(State::default()),
            evaluating: Arc::new(AtomicBool::new(false)),
            latest: Arc::new(Mutex::new(None)),
        }
    }

    /// Whether the pipeline should measure each decoded image.
    pub fn wants_stats(&self) -> bool {
        self.reference.is_some()
    }

    /// The output holding the embedding, when the bundle declares one and monitoring uses it.
    pub fn embedding_output(&self) -> Option<&str> {
        self.embedding_output
            .as_deref()
            .filter(|_| self.reference.is_some())
    }

    /// The bundle's reference profile.
    pub fn reference(&self) -> Option<&ReferenceProfile> {
        self.reference.as_deref()
    }

    /// The out-of-distribution score of one embedding against the reference.
    pub fn score_ood(&self, embedding: &[f32]) -> Option<OodScore> {
        self.ood.as_ref().and_then(|s| s.score(embedding).ok())
    }

    /// The latest drift window, if one was evaluated.
    pub fn latest_window(&self) -> Option<Arc<DriftWindow>> {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds one answered prediction: updates the live shares and, when the drift window is
    /// full and the reference's `every` new images arrived, evaluates it on a blocking thread (one at a time
    /// per version; a window that arrives while one is evaluated waits for the next step).
    pub(crate) fn observe(&self, obs: Observation, review: bool) {
        self.metrics.flagged(review, obs.out_of_distribution);
        let point = LivePoint {
            at: Instant::now(),
            predicted: obs.predicted,
            confidence: obs.confidence,
            flagged: review || obs.out_of_distribution,
            ood: obs.out_of_distribution,
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.live.len() >= self.cfg.live_capacity.max(1) {
            state.live.pop_front();
        }
        state.live.push_back(point);
        let shares = shares(&state.live, self.cfg.live_window, self.labels.len());
        self.metrics.shares(&shares);
        let Some(reference) = &self.reference else {
            return;
        };
        let size = reference.drift.window.max(2);
        if state.window.len() >= size {
            state.window.pop_front();
        }
        state.window.push_back(obs);
        state.since_evaluation += 1;
        if state.window.len() < size || state.since_evaluation < reference.drift.every.max(1) {
            return;
        }
        let now = Instant::now();
        if state
            .last_evaluation
            .is_some_and(|t| now.duration_since(t) < self.cfg.drift_min_interval)
        {
            return;
        }
        if self.evaluating.swap(true, Ordering::AcqRel) {
            return;
        }
        state.since_evaluation = 0;
        state.last_evaluation = Some(now);
        let window: Vec<Observation> = state.window.iter().cloned().collect();
        drop(state);
        self.spawn_evaluation(Arc::clone(reference), window);
    }

    fn spawn_evaluation(&self, reference: Arc<ReferenceProfile>, window: Vec<Observation>) {
        let evaluating = Arc::clone(&self.evaluating);
        let latest = Arc::clone(&self.latest);
        let metrics = self.metrics.clone();
        let log = self.cfg.log.clone();
        let (model, version, seed) = (self.model.clone(), self.version.clone(), self.cfg.seed);
        let job = move || {
            let result = vigil_core::monitor::evaluate(&reference, &window, seed);
            evaluating.store(false, Ordering::Release);
            let report = match result {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(%model, %version, error = %e, "A drift window could not be evaluated.");
                    return;
                }
            };
            record_window(&metrics, &report);
            if report.drift {
                tracing::warn!(%model, %version, drifted = ?report.drifted, summary = %report.summary, "Drift detected.");
            } else {
                tracing::debug!(%model, %version, "Drift window: no drift.");
            }
            let window = Arc::new(DriftWindow {
                model: model.to_string(),
                version: version.to_string(),
                ended_at: Utc::now(),
                report,
            });
            *latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&window));
            if let Some(log) = log {
                log.submit_window(window);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(job);
            }
            Err(_) => job(),
        }
    }

    /// The live picture over a count or time window of recent predictions.
    pub fn summary(&self, window: LiveWindow) -> LiveSummary {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let points: Vec<LivePoint> = match window {
            LiveWindow::Count(n) => state.live.iter().rev().take(n).copied().collect(),
            LiveWindow::Time(d) => state
                .live
                .iter()
                .rev()
                .take_while(|p| now.duration_since(p.at) <= d)
                .copied()
                .collect(),
        };
        drop(state);
        let s = shares(points.iter().rev(), usize::MAX, self.labels.len());
        let mut conf: Vec<f64> = points.iter().map(|p| f64::from(p.confidence)).collect();
        conf.sort_by(f64::total_cmp);
        let q = |p: f64| {
            if conf.is_empty() {
                0.0
            } else {
                conf[((conf.len() - 1) as f64 * p).round() as usize]
            }
        };
        LiveSummary {
            predictions: points.len(),
            class_shares: self
                .labels
                .iter()
                .map(|l| l.as_str().to_owned())
                .zip(s.class_shares)
                .collect(),
            confidence_mean: s.confidence_mean,
            confidence_quantiles: [q(0.1), q(0.5), q(0.9)],
            flagged_share: s.flagged_share,
            ood_share: s.ood_share,
        }
    }
}

fn record_window(metrics: &MonitorMetrics, report: &WindowReport) {
    let signals: Vec<SignalValue<'_>> = report
        .signals
        .iter()
        .map(|s| SignalValue {
            name: &s.name,
            statistic: s.statistic,
            threshold: s.threshold,
            p_value: s.p_value,
        })
        .collect();
    metrics.drift_window(report.drift, &signals);
}

/// Shares over the last `n` points of a ring (oldest first).
fn shares<'a>(
    points: impl IntoIterator<Item = &'a LivePoint, IntoIter: DoubleEndedIterator>,
    n: usize,
    labels: usize,
) -> LiveShares {
    let mut counts = vec![0usize; labels];
    let (mut total, mut flagged, mut ood, mut conf) = (0usize, 0usize, 0usize, 0f64);
    for p in points.into_iter().rev().take(n) {
        total += 1;
        if let Some(c) = counts.get_mut(p.predicted) {
            *c += 1;
        }
        flagged += usize::from(p.flagged);
        ood += usize::from(p.ood);
        conf += f64::from(p.confidence);
    }
    let share = |k: usize| {
        if total == 0 {
            0.0
        } else {
            k as f64 / total as f64
        }
    };
    LiveShares {
        class_shares: counts.into_iter().map(share).collect(),
        ood_share: share(ood),
        flagged_share: share(flagged),
        confidence_mean: if total == 0 { 0.0 } else { conf / total as f64 },
    }
}
