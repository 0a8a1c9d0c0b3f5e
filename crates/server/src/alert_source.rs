//! [`LiveSignals`]: the [`AlertSource`] over the live runtime that `vigil serve` evaluates
//! its alert rules on, and [`StoreHistory`]: the [`AlertHistory`] that keeps every
//! notification in the store.
//!
//! Where each signal comes from, per model (the deployment serving it now):
//!
//! | signal | value |
//! |---|---|
//! | `drift` | 1 or 0 from the latest drift window; none before the first |
//! | `drift_signal` | that signal's statistic / threshold in the latest drift window |
//! | `ood_share`, `flagged_share`, `mean_confidence` | the live summary over `window` (none without predictions in it) |
//! | `error_rate` | failed / not cancelled requests over `window`, from `vigil_infer_requests_total` |
//! | `latency_p99_seconds` | 99th percentile over `window` from the `vigil_infer_duration_seconds` buckets |
//!
//! The request signals work like Prometheus' `rate`: every evaluation tick
//! ([`AlertSource::models`] is asked once per tick) gathers the per-model counters from the
//! metrics registry (summed over versions), and a value over `window` is the difference
//! between now and the snapshot taken about `window` ago (the oldest one kept while the
//! server is younger than `window`; the first snapshot is taken when [`LiveSignals`] is made,
//! before any traffic). The p99 interpolates linearly inside the bucket that holds it, as
//! `histogram_quantile` does.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use vigil_core::monitor::alert::{
    AlertRule, Notification, NotificationState, Signal, metric_names,
};
use vigil_runtime::{Infer, LiveWindow};

use crate::alerting::{AlertHistory, AlertSource};

/// The most snapshots kept: with a short interval and a long window, older ones are thinned
/// (a snapshot is kept only when the last kept one is at least `span / MAX_SNAPSHOTS` old).
const MAX_SNAPSHOTS: usize = 1024;

/// One model's request counters at one moment, summed over its versions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Requests answered with `success`.
    pub success: f64,
    /// Requests that failed (any outcome but `success` and `cancelled`).
    pub failed: f64,
    /// `vigil_infer_duration_seconds` buckets: (upper bound, cumulative count), by bound,
    /// without `+Inf`.
    pub buckets: Vec<(f64, f64)>,
    /// Observations in the histogram (the `+Inf` bucket).
    pub count: f64,
}

impl Counters {
    /// What happened between `earlier` and `self`, like Prometheus' `increase` (a counter
    /// that went down was reset: its whole later value counts). `None` earlier: the model
    /// appeared since, everything counts.
    pub fn since(&self, earlier: Option<&Counters>) -> Counters {
        let Some(e) = earlier else {
            return self.clone();
        };
        let inc = |now: f64, then: f64| if now >= then { now - then } else { now };
        Counters {
            success: inc(self.success, e.success),
            failed: inc(self.failed, e.failed),
            buckets: self
                .buckets
                .iter()
                .map(|&(le, c)| {
                    let then = e
                        .buckets
                        .iter()
                        .find(|(b, _)| *b == le)
                        .map_or(0.0, |(_, c)| *c);
                    (le, inc(c, then))
                })
                .collect(),
            count: inc(self.count, e.count),
        }
    }

    /// Failed share of the requests not cancelled; `None` without any.
    pub fn error_rate(&self) -> Option<f64> {
        let answered = self.success + self.failed;
        (answered > 0.0).then(|| self.failed / answered)
    }

    /// The `q` quantile of the durations, interpolated linearly inside its bucket (from 0
    /// for the first); in the `+Inf` bucket, the highest finite bound. `None` without
    /// observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * self.count;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(le, cumulative) in &self.buckets {
            if cumulative >= rank && cumulative > below {
                let share = (rank - below) / (cumulative - below);
                return Some(lower + (le - lower) * share);
            }
            lower = le;
            below = cumulative;
        }
        // Beyond the last finite bound.
        Some(lower)
    }
}

/// The counters of every model at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When it was taken.
    pub at: Instant,
    /// By model name.
    pub models: BTreeMap<String, Counters>,
}

/// The kept snapshots, oldest first, and the latest one.
#[derive(Debug)]
struct Snapshots {
    kept: VecDeque<Snapshot>,
    current: Snapshot,
}

/// The counters of `model` over the `window` that ends at `current`: the difference with the
/// newest kept snapshot at least `window` old (or the oldest kept, when none is).
pub fn over_window(
    kept: &VecDeque<Snapshot>,
    current: &Snapshot,
    window: Duration,
    model: &str,
) -> Option<Counters> {
    let now = current.models.get(model)?;
    let start = current.at.checked_sub(window);
    let base = start
        .and_then(|start| kept.iter().rev().find(|s| s.at <= start))
        .or_else(|| kept.front())
        .filter(|s| s.at <= current.at);
    Some(now.since(base.and_then(|s| s.models.get(model))))
}

/// The values of the alert rules, read from the live runtime.
#[derive(Debug)]
pub struct LiveSignals {
    infer: Infer,
    /// The longest window of a request signal: how far back snapshots are kept.
    span: Duration,
    snapshots: Mutex<Snapshots>,
}

impl LiveSignals {
    /// A source over `infer` for `rules` (their longest window says how long request
    /// counters are kept). Takes the first snapshot now.
    pub fn new(infer: Infer, rules: &[AlertRule]) -> LiveSignals {
        let span = rules
            .iter()
            .filter(|r| matches!(r.signal, Signal::ErrorRate | Signal::LatencyP99Seconds))
            .map(|r| r.window)
            .max()
            .unwrap_or_default();
        let first = snapshot(&infer);
        LiveSignals {
            infer,
            span,
            snapshots: Mutex::new(Snapshots {
                kept: VecDeque::from([first.clone()]),
                current: first,
            }),
        }
    }

    /// Takes a snapshot of the request counters (once per evaluation tick) and forgets
    /// those no window needs any more.
    pub fn tick(&self) {
        if self.span.is_zero() {
            return;
        }
        let now = snapshot(&self.infer);
        let mut s = self
            .snapshots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let spacing = self.span / MAX_SNAPSHOTS as u32;
        let newest = s.kept.back().map(|k| k.at);
        if newest.is_none_or(|t| now.at.saturating_duration_since(t) >= spacing) {
            s.kept.push_back(now.clone());
        }
        s.current = now;
        // Keep the newest snapshot at least `span` old, and everything after it.
        if let Some(start) = s.current.at.checked_sub(self.span) {
            while s.kept.len() > 1 && s.kept[1].at <= start {
                s.kept.pop_front();
            }
        }
    }

    fn requests(&self, model: &str, window: Duration) -> Option<Counters> {
        let s = self
            .snapshots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        over_window(&s.kept, &s.current, window, model)
    }
}

impl AlertSource for LiveSignals {
    fn models(&self) -> Vec<String> {
        self.tick();
        self.infer
            .deployments()
            .list()
            .iter()
            .map(|d| d.name().to_string())
            .collect()
    }

    fn value(&self, rule: &AlertRule, model: &str) -> Option<f64> {
        match &rule.signal {
            Signal::ErrorRate => return self.requests(model, rule.window)?.error_rate(),
            Signal::LatencyP99Seconds => return self.requests(model, rule.window)?.quantile(0.99),
            _ => {}
        }
        let name = model.parse().ok()?;
        let deployment = self.infer.deployments().get(&name)?;
        let monitor = deployment.monitor();
        let live = || {
            let s = monitor.summary(LiveWindow::Time(rule.window));
            (s.predictions > 0).then_some(s)
        };
        match &rule.signal {
            Signal::Drift => monitor
                .latest_window()
                .map(|w| if w.report.drift { 1.0 } else { 0.0 }),
            Signal::DriftSignal(wanted) => {
                let window = monitor.latest_window()?;
                let s = window
                    .report
                    .signals
                    .iter()
                    .find(|s| drift_signal_matches(&s.name, &s.test, wanted))?;
                (s.threshold > 0.0).then(|| s.statistic / s.threshold)
            }
            Signal::OodShare => live().map(|s| s.ood_share),
            Signal::FlaggedShare => live().map(|s| s.flagged_share),
            Signal::MeanConfidence => live().map(|s| s.confidence_mean),
            Signal::ErrorRate | Signal::LatencyP99Seconds => None,
        }
    }
}

/// Whether a window's signal (`stat.contrast` tested with `ks`, `embedding.mmd` with `mmd`)
/// is the one a rule names: its name (`embedding.mmd`), or its name (less `stat.`) and
/// test (`contrast.ks`, `stat.contrast.ks`).
fn drift_signal_matches(name: &str, test: &str, wanted: &str) -> bool {
    if name == wanted {
        return true;
    }
    let short = name.strip_prefix("stat.").unwrap_or(name);
    wanted
        .strip_suffix(test)
        .and_then(|w| w.strip_suffix('.'))
        .is_some_and(|w| w == name || w == short)
}

/// The request counters of every model now, from the metrics registry.
fn snapshot(infer: &Infer) -> Snapshot {
    let mut models: BTreeMap<String, Counters> = BTreeMap::new();
    let families = infer.metrics().registry().gather();
    let model_of = |m: &prometheus::proto::Metric| {
        m.get_label()
            .iter()
            .find(|l| l.name() == "model")
            .map(|l| l.value().to_owned())
    };
    for family in &families {
        let name = family.name();
        if name == metric_names::REQUESTS_TOTAL {
            for m in family.get_metric() {
                let Some(model) = model_of(m) else { continue };
                let outcome = m
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "outcome")
                    .map_or("", |l| l.value());
                let value = m.get_counter().get_value();
                let c = models.entry(model).or_default();
                match outcome {
                    metric_names::OUTCOME_SUCCESS => c.success += value,
                    metric_names::OUTCOME_CANCELLED => {}
                    _ => c.failed += value,
                }
            }
        } else if name == metric_names::REQUEST_DURATION_SECONDS {
            for m in family.get_metric() {
                let Some(model) = model_of(m) else { continue };
                let h = m.get_histogram();
                let c = models.entry(model).or_default();
                c.count += h.get_sample_count() as f64;
                for b in h.get_bucket() {
                    let (le, n) = (b.upper_bound(), b.cumulative_count() as f64);
                    if le.is_infinite() {
                        continue;
                    }
                    match c.buckets.iter_mut().find(|(bound, _)| *bound == le) {
                        Some((_, total)) => *total += n,
                        None => c.buckets.push((le, n)),
                    }
                }
                c.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }
    Snapshot {
        at: Instant::now(),
        models,
    }
}

/// Keeps every notification in the store's alert history (`alert_events`).
#[derive(Debug, Clone)]
pub struct StoreHistory(pub Arc<dyn vigil_store::MonitorStore>);

/// The stored row of a notification: its fields, and the whole notification as `details`.
pub fn alert_event(n: &Notification) -> vigil_store::AlertEventRow {
    vigil_store::AlertEventRow {
        rule: n.rule.clone(),
        model: Some(n.model.clone()),
        state: match n.state {
            NotificationState::Firing => vigil_store::AlertState::Firing,
            NotificationState::Resolved => vigil_store::AlertState::Resolved,
        },
        severity: n.severity.as_str().to_owned(),
        at: n.at,
        value: n.value,
        message: n.message.clone(),
        details: serde_json::to_value(n).unwrap_or(serde_json::Value::Null),
    }
}

#[async_trait::async_trait]
impl AlertHistory for StoreHistory {
    async fn record(&self, n: &Notification) {
        if let Err(e) = self.0.append_alert_event(&alert_event(n)).await {
            tracing::error!(rule = %n.rule, model = %n.model, error = %e, "Cannot store the alert notification.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets like the runtime's, cumulative counts given per bound.
    fn counters(success: f64, failed: f64, buckets: &[(f64, f64)], count: f64) -> Counters {
        Counters {
            success,
            failed,
            buckets: buckets.to_vec(),
            count,
        }
    }

    fn snap(t0: Instant, secs: u64, c: Counters) -> Snapshot {
        Snapshot {
            at: t0 + Duration::from_secs(secs),
            models: BTreeMap::from([("weldnet".to_owned(), c)]),
        }
    }

    #[test]
    fn error_rate_is_failed_over_answered_in_the_window() {
        let t0 = Instant::now();
        let kept = VecDeque::from([
            snap(t0, 0, counters(0.0, 0.0, &[], 0.0)),
            snap(t0, 60, counters(100.0, 0.0, &[], 100.0)),
            snap(t0, 120, counters(150.0, 10.0, &[], 160.0)),
        ]);
        let current = snap(t0, 180, counters(240.0, 20.0, &[], 260.0));
        // 1m window: from the snapshot at 120 s: 90 successes, 10 failures.
        let c = over_window(&kept, &current, Duration::from_secs(60), "weldnet").unwrap();
        assert_eq!((c.success, c.failed), (90.0, 10.0));
        assert!((c.error_rate().unwrap() - 0.1).abs() < 1e-12);
        // 90 s: the newest snapshot at least 90 s old is at 60 s.
        let c = over_window(&kept, &current, Duration::from_secs(90), "weldnet").unwrap();
        assert_eq!((c.success, c.failed), (140.0, 20.0));
        // Longer than the history: from the oldest.
        let c = over_window(&kept, &current, Duration::from_secs(3600), "weldnet").unwrap();
        assert_eq!((c.success, c.failed), (240.0, 20.0));
        // No requests in the window: no value.
        let idle = snap(t0, 180, counters(150.0, 10.0, &[], 160.0));
        let c = over_window(&kept, &idle, Duration::from_secs(60), "weldnet").unwrap();
        assert_eq!(c.error_rate(), None);
        assert_eq!(c.quantile(0.99), None);
        // An unknown model has no value.
        assert!(over_window(&kept, &current, Duration::from_secs(60), "other").is_none());
    }

    #[test]
    fn a_reset_counter_counts_from_zero_and_a_new_model_counts_everything() {
        let now = counters(5.0, 1.0, &[(0.1, 6.0)], 6.0);
        let before = counters(50.0, 0.0, &[(0.1, 50.0)], 50.0);
        assert_eq!(now.since(Some(&before)), now);
        assert_eq!(now.since(None), now);
    }

    #[test]
    fn p99_interpolates_inside_its_bucket() {
        // 100 observations: 50 ≤ 0.01 s, 40 in (0.01, 0.1], 10 in (0.1, 1].
        let c = counters(
            100.0,
            0.0,
            &[(0.01, 50.0), (0.1, 90.0), (1.0, 100.0)],
            100.0,
        );
        // rank 99: 9 of the 10 in (0.1, 1] → 0.1 + 0.9 × 0.9.
        assert!((c.quantile(0.99).unwrap() - 0.91).abs() < 1e-12);
        // rank 50: the top of the first bucket; rank 25: half of (0, 0.01].
        assert!((c.quantile(0.5).unwrap() - 0.01).abs() < 1e-12);
        assert!((c.quantile(0.25).unwrap() - 0.005).abs() < 1e-12);
        // rank 70: half of (0.01, 0.1].
        assert!((c.quantile(0.7).unwrap() - 0.055).abs() < 1e-12);
        // Empty buckets below are skipped.
        let c = counters(4.0, 0.0, &[(0.01, 0.0), (0.1, 0.0), (1.0, 4.0)], 4.0);
        assert!((c.quantile(0.99).unwrap() - (0.1 + 0.9 * 0.99)).abs() < 1e-12);
        // Beyond the last finite bound: that bound, as histogram_quantile.
        let c = counters(10.0, 0.0, &[(0.01, 5.0), (0.1, 5.0)], 10.0);
        assert_eq!(c.quantile(0.99), Some(0.1));
    }

    #[test]
    fn p99_over_a_window_uses_the_bucket_increases() {
        let t0 = Instant::now();
        let old = counters(
            0.0,
            0.0,
            &[(0.01, 1000.0), (0.1, 1000.0), (1.0, 1000.0)],
            1000.0,
        );
        let kept = VecDeque::from([snap(t0, 0, old)]);
        // Since then: 100 slow requests, all in (0.1, 1].
        let now = counters(
            0.0,
            0.0,
            &[(0.01, 1000.0), (0.1, 1000.0), (1.0, 1100.0)],
            1100.0,
        );
        let c = over_window(
            &kept,
            &snap(t0, 60, now),
            Duration::from_secs(60),
            "weldnet",
        )
        .unwrap();
        assert!((c.quantile(0.99).unwrap() - (0.1 + 0.9 * 0.99)).abs() < 1e-12);
    }

    #[test]
    fn drift_signals_match_by_name_or_name_and_test() {
        assert!(drift_signal_matches(
            "embedding.mmd",
            "mmd",
            "embedding.mmd"
        ));
        assert!(drift_signal_matches("stat.contrast", "ks", "contrast.ks"));
        assert!(drift_signal_matches(
            "stat.contrast",
            "ks",
            "stat.contrast.ks"
        ));
        assert!(drift_signal_matches("stat.contrast", "ks", "stat.contrast"));
        assert!(!drift_signal_matches("stat.contrast", "ks", "stat.mean"));
        assert!(!drift_signal_matches("stat.contrast", "ks", "contrast.mmd"));
    }
}
