//! Alert rules over the monitoring signals and the state machine that turns their values into
//! notifications (DESIGN.md section 4), plus the same rules as a Prometheus alerting-rules
//! file.
//!
//! Pure: no I/O, no threads, no clock. The caller (the server's alerting task) reads the
//! time, computes each signal's value through its monitor and delivers the
//! [`Notification`]s that [`AlertEngine::evaluate`] returns.
//!
//! One alert exists per (rule, model). Its life, evaluated once per tick:
//!
//! ```text
//!             condition true               held for `for`
//!  inactive ─────────────────► pending ─────────────────► firing ──► notify "firing"
//!     ▲                           │                          │       (once; not again every tick)
//!     │      condition false      │                          │
//!     ├───────────────────────────┘                          │ condition false
//!     └──────────────────────────────────────────────────────┘ ──► notify "resolved"
//! ```
//!
//! - **Deduplication**: a firing alert notifies once, when it starts firing.
//! - **Cooldown**: two "firing" notifications of the same rule and model are at least
//!   `cooldown` apart, measured between the notifications. An alert that fires again within
//!   the cooldown of its last "firing" notification is firing but *silent*: it notifies
//!   "firing" on the first tick after the cooldown has passed if its condition still holds,
//!   and if it clears while silent it goes back to inactive without a "resolved"
//!   notification (the receiver's last word was already "resolved"). A "resolved"
//!   notification always follows a "firing" one, and only then.
//! - **Missing values**: when the value is `None` (no traffic in the window, no drift window
//!   yet, a model not deployed) or not a finite number, the tick is skipped for that alert:
//!   nothing fires, nothing resolves, and a pending alert keeps its start time. A gap in the
//!   data neither proves nor disproves the condition.
//! - **Clock**: `for` and `cooldown` compare the `now` of successive calls; a `now` earlier
//!   than a pending alert's start never counts as having held.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ErrorKind;

mod prometheus;

pub use prometheus::{metric_names, prometheus_rules};

/// What can be wrong with a set of alert rules.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlertError {
    /// A rule without a name.
    #[error("alert rule #{index} has an empty name")]
    EmptyName {
        /// Position of the rule in the list, from 1.
        index: usize,
    },
    /// A name that cannot also be a Prometheus alert name.
    #[error(
        "alert rule `{name}`: a name is letters, digits and `_`, not starting with a digit (it is also the Prometheus alert name)"
    )]
    InvalidName {
        /// The name.
        name: String,
    },
    /// Two rules with one name.
    #[error("alert rule `{name}` is defined more than once; rule names must be unique")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A NaN or infinite threshold.
    #[error("alert rule `{rule}`: the threshold {threshold} is not a finite number")]
    NonFiniteThreshold {
        /// The rule.
        rule: String,
        /// The threshold.
        threshold: f64,
    },
    /// A threshold the signal can never cross usefully (a share of 5 instead of 0.05).
    #[error("alert rule `{rule}`: the threshold {threshold} is outside {range} for `{signal}`")]
    ThresholdOutOfRange {
        /// The rule.
        rule: String,
        /// The signal.
        signal: String,
        /// The threshold.
        threshold: f64,
        /// The range the signal lives in, in words.
        range: &'static str,
    },
    /// A drift signal name that is not of the form `source.test`.
    #[error(
        "alert rule `{rule}`: unknown drift signal `{signal}`; a drift signal is named `source.test`, like `embedding.mmd` or `contrast.ks` (lower-case letters, digits, `_`, one or more `.`)"
    )]
    UnknownSignal {
        /// The rule.
        rule: String,
        /// The name given.
        signal: String,
    },
    /// A zero window.
    #[error("alert rule `{rule}`: the window must be longer than zero")]
    ZeroWindow {
        /// The rule.
        rule: String,
    },
    /// `model = ""`.
    #[error("alert rule `{rule}`: the model is empty; leave `model` out to watch every model")]
    EmptyModel {
        /// The rule.
        rule: String,
    },
}

impl AlertError {
    /// What a caller can do about it: fix the configuration.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AlertError::EmptyName { .. }
            | AlertError::InvalidName { .. }
            | AlertError::DuplicateName { .. }
            | AlertError::NonFiniteThreshold { .. }
            | AlertError::ThresholdOutOfRange { .. }
            | AlertError::UnknownSignal { .. }
            | AlertError::ZeroWindow { .. }
            | AlertError::EmptyModel { .. } => ErrorKind::Invalid,
        }
    }
}

/// The quantity a rule watches, per model.
///
/// In TOML: `signal = "ood_share"`, or for one drift statistic
/// `signal = { drift_signal = "embedding.mmd" }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// 1 when the model's latest drift window drifted (after the multiple-testing
    /// correction), else 0.
    Drift,
    /// One drift signal's statistic divided by its threshold (so 1 is the threshold): the
    /// name is `source.test`, like `embedding.mmd` or `contrast.ks`.
    DriftSignal(String),
    /// Share (0 to 1) of the window's predictions scored out of distribution.
    OodShare,
    /// Share (0 to 1) of the window's predictions flagged for review.
    FlaggedShare,
    /// Mean confidence (0 to 1) of the window's predictions.
    MeanConfidence,
    /// Share (0 to 1) of the window's requests that failed (outcome neither `success` nor
    /// `cancelled`), of those not cancelled.
    ErrorRate,
    /// 99th percentile of the whole request time over the window, in seconds.
    LatencyP99Seconds,
}

impl Signal {
    /// What the signal is, in words, for messages.
    fn label(&self) -> String {
        match self {
            Signal::Drift => "drift".to_owned(),
            Signal::DriftSignal(name) => name.clone(),
            Signal::OodShare => "out-of-distribution share".to_owned(),
            Signal::FlaggedShare => "flagged share".to_owned(),
            Signal::MeanConfidence => "mean confidence".to_owned(),
            Signal::ErrorRate => "error rate".to_owned(),
            Signal::LatencyP99Seconds => "p99 latency".to_owned(),
        }
    }

    /// A value of this signal, for people.
    fn format(&self, v: f64) -> String {
        match self {
            Signal::Drift => format!("{v}"),
            Signal::DriftSignal(_) => format!("{v:.1}x its threshold"),
            Signal::OodShare | Signal::FlaggedShare | Signal::ErrorRate => {
                format!("{:.1}%", v * 100.0)
            }
            Signal::MeanConfidence => format!("{v:.2}"),
            Signal::LatencyP99Seconds if v.abs() < 1.0 => format!("{:.0} ms", v * 1000.0),
            Signal::LatencyP99Seconds => format!("{v:.2} s"),
        }
    }

    /// The range of values a threshold must lie in, when the signal is bounded.
    fn range(&self) -> Option<(f64, f64, &'static str)> {
        match self {
            Signal::Drift => Some((0.0, 1.0, "[0, 1] (0: no drift, 1: drift)")),
            Signal::OodShare | Signal::FlaggedShare | Signal::ErrorRate => {
                Some((0.0, 1.0, "[0, 1] (a share is a fraction: 5% is 0.05)"))
            }
            Signal::MeanConfidence => Some((0.0, 1.0, "[0, 1]")),
            Signal::DriftSignal(_) => Some((0.0, f64::INFINITY, "[0, ∞) (a ratio)")),
            Signal::LatencyP99Seconds => Some((0.0, f64::INFINITY, "[0, ∞) (seconds)")),
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signal::Drift => f.write_str("drift"),
            Signal::DriftSignal(name) => write!(f, "drift_signal:{name}"),
            Signal::OodShare => f.write_str("ood_share"),
            Signal::FlaggedShare => f.write_str("flagged_share"),
            Signal::MeanConfidence => f.write_str("mean_confidence"),
            Signal::ErrorRate => f.write_str("error_rate"),
            Signal::LatencyP99Seconds => f.write_str("latency_p99_seconds"),
        }
    }
}

/// How the value is compared with the threshold; the condition holds when
/// `value <comparison> threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Comparison {
    /// `>`
    #[serde(rename = ">")]
    Above,
    /// `>=`
    #[serde(rename = ">=")]
    AtLeast,
    /// `<`
    #[serde(rename = "<")]
    Below,
    /// `<=`
    #[serde(rename = "<=")]
    AtMost,
}

impl Comparison {
    /// Whether `value <self> threshold`.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Above => value > threshold,
            Comparison::AtLeast => value >= threshold,
            Comparison::Below => value < threshold,
            Comparison::AtMost => value <= threshold,
        }
    }

    /// The operator, as in PromQL.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Above => ">",
            Comparison::AtLeast => ">=",
            Comparison::Below => "<",
            Comparison::AtMost => "<=",
        }
    }

    fn words(self) -> &'static str {
        match self {
            Comparison::Above => "above",
            Comparison::AtLeast => "at or above",
            Comparison::Below => "below",
            Comparison::AtMost => "at or below",
        }
    }

    fn upward(self) -> bool {
        matches!(self, Comparison::Above | Comparison::AtLeast)
    }
}

/// How urgent an alert is; a label of the Prometheus rule and a field of the notification.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For the record.
    Info,
    /// Someone should look today.
    #[default]
    Warning,
    /// Someone must act now.
    Critical,
}

impl Severity {
    /// `info`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert rule, as written in the `[[alerts.rules]]` array of the configuration.
///
/// ```toml
/// [[alerts.rules]]
/// name = "weldnet_embedding_drift"
/// signal = { drift_signal = "embedding.mmd" }
/// model = "weldnet"
/// comparison = ">"
/// threshold = 1.0
/// window = "15m"
/// for = "2m"
/// severity = "critical"
/// cooldown = "1h"
/// description = "The films no longer look like the training set."
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Unique name: letters, digits and `_`, not starting with a digit (it is also the
    /// Prometheus alert name).
    pub name: String,
    /// The quantity watched: `"drift"`, `{ drift_signal = "embedding.mmd" }`, `"ood_share"`,
    /// `"flagged_share"`, `"mean_confidence"`, `"error_rate"` or `"latency_p99_seconds"`.
    pub signal: Signal,
    /// The model watched; left out: every served model, each its own alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `">"`, `">="`, `"<"` or `"<="`: the condition is `value <comparison> threshold`.
    pub comparison: Comparison,
    /// The threshold (shares are fractions: 5% is 0.05; latency in seconds; a drift signal's
    /// ratio is 1 at its own threshold).
    pub threshold: f64,
    /// The span the signal is computed over ("15m", or a number of seconds); default 5m.
    /// Drift signals use the model's drift windows and ignore it.
    #[serde(default = "default_window", with = "duration_text")]
    pub window: Duration,
    /// How long the condition must hold before the alert fires ("0s": at once), like
    /// Prometheus' `for`; default 0s.
    #[serde(default, rename = "for", with = "duration_text")]
    pub for_duration: Duration,
    /// `"info"`, `"warning"` (default) or `"critical"`.
    #[serde(default)]
    pub severity: Severity,
    /// The least time between two "firing" notifications of this rule for one model, so that
    /// a flapping condition does not flood the receiver; default 0s (every new firing
    /// notifies).
    #[serde(default, with = "duration_text")]
    pub cooldown: Duration,
    /// Free text sent with the notification.
    #[serde(default)]
    pub description: String,
}

fn default_window() -> Duration {
    Duration::from_secs(300)
}

/// Durations as humantime text (`"90s"`, `"1h 30m"`) or a number of seconds.
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as humantime text.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Seconds(u64),
        Fraction(f64),
    }

    /// Reads humantime text or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        use serde::de::Error;
        match Repr::deserialize(d)? {
            Repr::Text(text) => humantime::parse_duration(&text).map_err(|e| {
                D::Error::custom(format!(
                    "invalid duration `{text}`: {e} (examples: \"30s\", \"5m\", \"1h 30m\")"
                ))
            }),
            Repr::Seconds(s) => Ok(Duration::from_secs(s)),
            Repr::Fraction(s) => Duration::try_from_secs_f64(s)
                .map_err(|e| D::Error::custom(format!("invalid duration {s} s: {e}"))),
        }
    }
}

/// Checks a set of rules: unique valid names, finite thresholds in the signal's range,
/// well-formed drift signal names, a window longer than zero, no empty model.
pub fn validate_rules(rules: &[AlertRule]) -> Result<(), AlertError> {
    let mut names = BTreeSet::new();
    for (i, rule) in rules.iter().enumerate() {
        let name = &rule.name;
        if name.is_empty() {
            return Err(AlertError::EmptyName { index: i + 1 });
        }
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(AlertError::InvalidName { name: name.clone() });
        }
        if !names.insert(name.as_str()) {
            return Err(AlertError::DuplicateName { name: name.clone() });
        }
        if !rule.threshold.is_finite() {
            return Err(AlertError::NonFiniteThreshold {
                rule: name.clone(),
                threshold: rule.threshold,
            });
        }
        if let Signal::DriftSignal(signal) = &rule.signal
            && !is_drift_signal_name(signal)
        {
            return Err(AlertError::UnknownSignal {
                rule: name.clone(),
                signal: signal.clone(),
            });
        }
        if let Some((low, high, range)) = rule.signal.range()
            && !(low..=high).contains(&rule.threshold)
        {
            return Err(AlertError::ThresholdOutOfRange {
                rule: name.clone(),
                signal: rule.signal.to_string(),
                threshold: rule.threshold,
                range,
            });
        }
        if rule.window.is_zero() {
            return Err(AlertError::ZeroWindow { rule: name.clone() });
        }
        if rule.model.as_deref() == Some("") {
            return Err(AlertError::EmptyModel { rule: name.clone() });
        }
    }
    Ok(())
}

/// `source.test`: dot-separated parts of lower-case letters, digits and `_`, at least two.
fn is_drift_signal_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

/// Whether a notification announces an alert or its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationState {
    /// The condition has held for the rule's `for`.
    Firing,
    /// The condition of a firing alert cleared.
    Resolved,
}

impl NotificationState {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationState::Firing => "firing",
            NotificationState::Resolved => "resolved",
        }
    }
}

/// What is sent when an alert starts firing or resolves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The rule's name.
    pub rule: String,
    /// The model it concerns.
    pub model: String,
    /// Firing or resolved.
    pub state: NotificationState,
    /// The rule's severity.
    pub severity: Severity,
    /// The signal's value at this tick.
    pub value: f64,
    /// The rule's threshold.
    pub threshold: f64,
    /// When the engine noticed.
    pub at: DateTime<Utc>,
    /// One sentence for people: "weldnet: drift detected (embedding.mmd 3.2x its threshold)
    /// for 2m".
    pub message: String,
    /// The rule's description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// Where an alert that is not inactive stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The condition holds, not yet for the rule's `for`.
    Pending,
    /// Firing, and announced.
    Firing,
    /// Firing, but not announced yet because of the rule's cooldown.
    FiringSilenced,
}

/// An alert that is pending or firing, for an API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveAlert {
    /// The rule's name.
    pub rule: String,
    /// The model.
    pub model: String,
    /// Pending or firing.
    pub status: AlertStatus,
    /// Since when the condition holds.
    pub since: DateTime<Utc>,
    /// The latest value.
    pub value: f64,
    /// The rule's severity.
    pub severity: Severity,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Inactive,
    Pending {
        since: DateTime<Utc>,
    },
    Firing {
        since: DateTime<Utc>,
        /// Whether the "firing" notification went out (false: held back by the cooldown).
        announced: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct Alert {
    phase: Phase,
    value: f64,
    /// When the latest "firing" notification went out.
    last_fired: Option<DateTime<Utc>>,
}

impl Default for Alert {
    fn default() -> Self {
        Alert {
            phase: Phase::Inactive,
            value: f64::NAN,
            last_fired: None,
        }
    }
}

/// The alerts of a set of rules: one state machine per (rule, model). See the module docs
/// for the transitions, deduplication, cooldown and missing values.
#[derive(Debug, Clone)]
pub struct AlertEngine {
    rules: Vec<AlertRule>,
    alerts: BTreeMap<(String, String), Alert>,
}

impl AlertEngine {
    /// An engine over `rules`, after [`validate_rules`]; every alert starts inactive.
    pub fn new(rules: Vec<AlertRule>) -> Result<AlertEngine, AlertError> {
        validate_rules(&rules)?;
        Ok(AlertEngine {
            rules,
            alerts: BTreeMap::new(),
        })
    }

    /// The rules.
    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// One tick: evaluates every rule for its model (or for each of `models` when it names
    /// none), with `value(rule, model)` giving the signal's current value over
    /// `rule.window`, and returns the notifications to send, in rule order.
    pub fn evaluate(
        &mut self,
        now: DateTime<Utc>,
        value: &dyn Fn(&AlertRule, &str) -> Option<f64>,
        models: &[String],
    ) -> Vec<Notification> {
        let mut out = Vec::new();
        for rule in &self.rules {
            let targets: Vec<&str> = match &rule.model {
                Some(model) => vec![model.as_str()],
                None => models.iter().map(String::as_str).collect(),
            };
            for model in targets {
                let Some(v) = value(rule, model).filter(|v| v.is_finite()) else {
                    continue;
                };
                let alert = self
                    .alerts
                    .entry((rule.name.clone(), model.to_owned()))
                    .or_default();
                if let Some(n) = step(rule, model, alert, now, v) {
                    out.push(n);
                }
            }
        }
        // Forget inactive alerts whose cooldown is over: they hold nothing a fresh one lacks.
        self.alerts.retain(|(name, _), alert| {
            alert.phase != Phase::Inactive
                || alert.last_fired.is_some_and(|at| {
                    let cooldown = self
                        .rules
                        .iter()
                        .find(|r| &r.name == name)
                        .map_or(Duration::ZERO, |r| r.cooldown);
                    !elapsed(at, now, cooldown)
                })
        });
        out
    }

    /// The alerts that are pending or firing, by rule and model.
    pub fn active(&self) -> Vec<ActiveAlert> {
        let severity = |name: &str| {
            self.rules
                .iter()
                .find(|r| r.name == name)
                .map_or(Severity::Warning, |r| r.severity)
        };
        self.alerts
            .iter()
            .filter_map(|((rule, model), alert)| {
                let (status, since) = match alert.phase {
                    Phase::Inactive => return None,
                    Phase::Pending { since } => (AlertStatus::Pending, since),
                    Phase::Firing {
                        since,
                        announced: true,
                    } => (AlertStatus::Firing, since),
                    Phase::Firing {
                        since,
                        announced: false,
                    } => (AlertStatus::FiringSilenced, since),
                };
                Some(ActiveAlert {
                    rule: rule.clone(),
                    model: model.clone(),
                    status,
                    since,
                    value: alert.value,
                    severity: severity(rule),
                })
            })
            .collect()
    }
}

/// Whether at least `span` passed from `from` to `to` (never, when `to` is earlier).
fn elapsed(from: DateTime<Utc>, to: DateTime<Utc>, span: Duration) -> bool {
    let span = TimeDelta::from_std(span).unwrap_or(TimeDelta::MAX);
    to.signed_duration_since(from) >= span
}

/// One alert's transition on a present value.
fn step(
    rule: &AlertRule,
    model: &str,
    alert: &mut Alert,
    now: DateTime<Utc>,
    value: f64,
) -> Option<Notification> {
    alert.value = value;
    let holds = rule.comparison.holds(value, rule.threshold);
    let cooled = |alert: &Alert| {
        alert
            .last_fired
            .is_none_or(|at| elapsed(at, now, rule.cooldown))
    };
    match (alert.phase, holds) {
        (Phase::Inactive, false) => None,
        (Phase::Pending { .. }, false) => {
            alert.phase = Phase::Inactive;
            None
        }
        (Phase::Inactive, true) | (Phase::Pending { .. }, true) => {
            let since = match alert.phase {
                Phase::Pending { since } => since,
                _ => now,
            };
            if !elapsed(since, now, rule.for_duration) {
                alert.phase = Phase::Pending { since };
                return None;
            }
            let announce = cooled(alert);
            alert.phase = Phase::Firing {
                since,
                announced: announce,
            };
            announce.then(|| {
                alert.last_fired = Some(now);
                notification(rule, model, NotificationState::Firing, since, now, value)
            })
        }
        (
            Phase::Firing {
                announced: true, ..
            },
            true,
        ) => None,
        (
            Phase::Firing {
                since,
                announced: false,
            },
            true,
        ) => {
            if !cooled(alert) {
                return None;
            }
            alert.phase = Phase::Firing {
                since,
                announced: true,
            };
            alert.last_fired = Some(now);
            Some(notification(
                rule,
                model,
                NotificationState::Firing,
                since,
                now,
                value,
            ))
        }
        (Phase::Firing { since, announced }, false) => {
            alert.phase = Phase::Inactive;
            announced
                .then(|| notification(rule, model, NotificationState::Resolved, since, now, value))
        }
    }
}

fn notification(
    rule: &AlertRule,
    model: &str,
    state: NotificationState,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    value: f64,
) -> Notification {
    let held = now
        .signed_duration_since(since)
        .to_std()
        .map(|d| Duration::from_secs(d.as_secs()))
        .unwrap_or_default();
    let held = (!held.is_zero()).then(|| humantime::format_duration(held).to_string());
    let message = match state {
        NotificationState::Firing => {
            let mut m = format!("{model}: {}", firing_phrase(rule, value));
            if let Some(held) = held {
                m.push_str(&format!(" for {held}"));
            }
            m
        }
        NotificationState::Resolved => {
            let mut m = format!("{model}: resolved, {}", resolved_phrase(rule, value));
            if let Some(held) = held {
                m.push_str(&format!(" (alert began {held} ago)"));
            }
            m
        }
    };
    Notification {
        rule: rule.name.clone(),
        model: model.to_owned(),
        state,
        severity: rule.severity,
        value,
        threshold: rule.threshold,
        at: now,
        message,
        description: rule.description.clone(),
    }
}

fn firing_phrase(rule: &AlertRule, value: f64) -> String {
    let s = &rule.signal;
    let op = rule.comparison;
    match s {
        Signal::Drift if op.upward() => "drift detected".to_owned(),
        Signal::Drift => "no drift detected".to_owned(),
        Signal::DriftSignal(name) if op.upward() => {
            format!("drift detected ({name} {})", s.format(value))
        }
        _ => format!(
            "{} {} {} {}",
            s.label(),
            s.format(value),
            op.words(),
            s.format(rule.threshold)
        ),
    }
}

fn resolved_phrase(rule: &AlertRule, value: f64) -> String {
    let s = &rule.signal;
    match s {
        Signal::Drift if rule.comparison.upward() => "drift no longer detected".to_owned(),
        Signal::Drift => "drift detected again".to_owned(),
        _ => format!(
            "{} back to {} (the alert is for {} {})",
            s.label(),
            s.format(value),
            rule.comparison.words(),
            s.format(rule.threshold)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("valid time")
    }

    pub(super) fn rule(name: &str) -> AlertRule {
        AlertRule {
            name: name.to_owned(),
            signal: Signal::OodShare,
            model: None,
            comparison: Comparison::Above,
            threshold: 0.05,
            window: Duration::from_secs(300),
            for_duration: Duration::ZERO,
            severity: Severity::Warning,
            cooldown: Duration::ZERO,
            description: String::new(),
        }
    }

    fn models() -> Vec<String> {
        vec!["weldnet".to_owned()]
    }

    /// One tick with the same value for every rule and model.
    fn tick(engine: &mut AlertEngine, at: i64, v: Option<f64>) -> Vec<Notification> {
        engine.evaluate(t(at), &|_, _| v, &models())
    }

    fn states(ns: &[Notification]) -> Vec<NotificationState> {
        ns.iter().map(|n| n.state).collect()
    }

    fn status(engine: &AlertEngine) -> Option<AlertStatus> {
        engine.active().first().map(|a| a.status)
    }

    #[test]
    fn inactive_to_firing_at_once_without_for_then_resolved() {
        let mut e = AlertEngine::new(vec![rule("ood")]).expect("valid");
        assert!(tick(&mut e, 0, Some(0.01)).is_empty());
        assert_eq!(status(&e), None);
        let fired = tick(&mut e, 10, Some(0.2));
        assert_eq!(states(&fired), [NotificationState::Firing]);
        let n = &fired[0];
        assert_eq!((n.rule.as_str(), n.model.as_str()), ("ood", "weldnet"));
        assert_eq!((n.value, n.threshold, n.at), (0.2, 0.05, t(10)));
        assert_eq!(n.severity, Severity::Warning);
        assert_eq!(
            n.message,
            "weldnet: out-of-distribution share 20.0% above 5.0%"
        );
        assert_eq!(status(&e), Some(AlertStatus::Firing));
        let resolved = tick(&mut e, 70, Some(0.01));
        assert_eq!(states(&resolved), [NotificationState::Resolved]);
        assert_eq!(
            resolved[0].message,
            "weldnet: resolved, out-of-distribution share back to 1.0% (the alert is for above 5.0%) (alert began 1m ago)"
        );
        assert_eq!(status(&e), None);
    }

    #[test]
    fn firing_notifies_once_not_every_tick() {
        let mut e = AlertEngine::new(vec![rule("ood")]).expect("valid");
        assert_eq!(tick(&mut e, 0, Some(0.2)).len(), 1);
        for i in 1..20 {
            assert!(tick(&mut e, i * 10, Some(0.3)).is_empty());
        }
        assert_eq!(status(&e), Some(AlertStatus::Firing));
    }

    #[test]
    fn pending_until_the_condition_held_for_its_duration() {
        let mut r = rule("drift");
        r.signal = Signal::DriftSignal("embedding.mmd".to_owned());
        r.threshold = 1.0;
        r.for_duration = Duration::from_secs(120);
        let mut e = AlertEngine::new(vec![r]).expect("valid");
        assert!(tick(&mut e, 0, Some(3.2)).is_empty());
        assert_eq!(status(&e), Some(AlertStatus::Pending));
        assert_eq!(e.active()[0].since, t(0));
        assert!(tick(&mut e, 60, Some(3.2)).is_empty());
        assert!(tick(&mut e, 119, Some(3.2)).is_empty());
        let fired = tick(&mut e, 120, Some(3.2));
        assert_eq!(states(&fired), [NotificationState::Firing]);
        assert_eq!(
            fired[0].message,
            "weldnet: drift detected (embedding.mmd 3.2x its threshold) for 2m"
        );
    }

    #[test]
    fn pending_that_clears_goes_back_to_inactive_silently_and_restarts_its_clock() {
        let mut r = rule("ood");
        r.for_duration = Duration::from_secs(60);
        let mut e = AlertEngine::new(vec![r]).expect("valid");
        assert!(tick(&mut e, 0, Some(0.2)).is_empty());
        assert!(tick(&mut e, 30, Some(0.0)).is_empty());
        assert_eq!(status(&e), None);
        assert!(tick(&mut e, 40, Some(0.2)).is_empty());
        // 60 s after the first breach, but only 30 s after the second.
        assert!(tick(&mut e, 70, Some(0.2)).is_empty());
        assert_eq!(
            states(&tick(&mut e, 100, Some(0.2))),
            [NotificationState::Firing]
        );
    }

    #[test]
    fn missing_value_neither_fires_nor_resolves() {
        let mut r = rule("ood");
        r.for_duration = Duration::from_secs(60);
        let mut e = AlertEngine::new(vec![r]).expect("valid");
        assert!(tick(&mut e, 0, Some(0.2)).is_empty());
        // A gap keeps the pending alert and its start time.
        assert!(tick(&mut e, 30, None).is_empty());
        assert!(tick(&mut e, 60, None).is_empty());
        assert_eq!(status(&e), Some(AlertStatus::Pending));
        assert_eq!(
            states(&tick(&mut e, 61, Some(0.2))),
            [NotificationState::Firing]
        );
        // A gap does not resolve a firing alert, and NaN counts as a gap.
        assert!(tick(&mut e, 90, None).is_empty());
        assert!(tick(&mut e, 100, Some(f64::NAN)).is_empty());
        assert_eq!(status(&e), Some(AlertStatus::Firing));
        assert_eq!(
            states(&tick(&mut e, 120, Some(0.0))),
            [NotificationState::Resolved]
        );
        // Nor does a gap fire an inactive one.
        assert!(tick(&mut e, 200, None).is_empty());
        assert_eq!(status(&e), None);
    }

    #[test]
    fn cooldown_silences_a_quick_refire_and_its_resolution() {
        let mut r = rule("ood");
        r.cooldown = Duration::from_secs(600);
        let mut e = AlertEngine::new(vec![r]).expect("valid");
        assert_eq!(
            states(&tick(&mut e, 0, Some(0.2))),
            [NotificationState::Firing]
        );
        assert_eq!(
            states(&tick(&mut e, 60, Some(0.0))),
            [NotificationState::Resolved]
        );
        // Fires again 2 minutes after the last "firing" notification: silent.
        assert!(tick(&mut e, 120, Some(0.2)).is_empty());
        assert_eq!(status(&e), Some(AlertStatus::FiringSilenced));
        // Clears while silent: no "resolved" either.
        assert!(tick(&mut e, 180, Some(0.0)).is_empty());
        assert_eq!(status(&e), None);
        // After the cooldown a new firing notifies again.
        assert_eq!(
            states(&tick(&mut e, 600, Some(0.2))),
            [NotificationState::Firing]
        );
    }

    #[test]
    fn a_silenced_alert_that_keeps_firing_notifies_when_the_cooldown_ends() {
        let mut r = rule("ood");
        r.cooldown = Duration::from_secs(600);
        let mut e = AlertEngine::new(vec![r]).expect("valid");
        assert_eq!(tick(&mut e, 0, Some(0.2)).len(), 1);
        assert_eq!(tick(&mut e, 60, Some(0.0)).len(), 1);
        assert!(tick(&mut e, 120, Some(0.2)).is_empty());
        assert!(tick(&mut e, 599, Some(0.2)).is_empty());
        let fired = tick(&mut e, 600, Some(0.3));
        assert_eq!(states(&fired), [NotificationState::Firing]);
        assert_eq!(fired[0].value, 0.3);
        assert_eq!(status(&e), Some(AlertStatus::Firing));
        assert!(tick(&mut e, 660, Some(0.3)).is_empty());
        assert_eq!(
            states(&tick(&mut e, 720, Some(0.0))),
            [NotificationState::Resolved]
        );
    }

    #[test]
    fn each_model_is_its_own_alert_and_a_named_model_only_its_own() {
        let all = rule("ood_all");
        let mut one = rule("ood_one");
        one.model = Some("other".to_owned());
        let mut e = AlertEngine::new(vec![all, one]).expect("valid");
        let models = vec!["weldnet".to_owned(), "other".to_owned()];
        let value = |_: &AlertRule, m: &str| Some(if m == "weldnet" { 0.2 } else { 0.1 });
        let ns = e.evaluate(t(0), &value, &models);
        let who: Vec<(&str, &str)> = ns
            .iter()
            .map(|n| (n.rule.as_str(), n.model.as_str()))
            .collect();
        assert_eq!(
            who,
            [
                ("ood_all", "weldnet"),
                ("ood_all", "other"),
                ("ood_one", "other")
            ]
        );
        let value = |_: &AlertRule, m: &str| Some(if m == "weldnet" { 0.0 } else { 0.1 });
        let ns = e.evaluate(t(10), &value, &models);
        assert_eq!(ns.len(), 1);
        assert_eq!(
            (ns[0].model.as_str(), ns[0].state),
            ("weldnet", NotificationState::Resolved)
        );
    }

    #[test]
    fn value_source_sees_the_rule_and_model() {
        let mut r = rule("lat");
        r.signal = Signal::LatencyP99Seconds;
        r.threshold = 0.5;
        r.window = Duration::from_secs(60);
        r.severity = Severity::Critical;
        let mut e = AlertEngine::new(vec![r]).expect("valid");
        let value = |r: &AlertRule, m: &str| {
            (r.window == Duration::from_secs(60) && m == "weldnet").then_some(0.84)
        };
        let ns = e.evaluate(t(0), &value, &models());
        assert_eq!(ns[0].message, "weldnet: p99 latency 840 ms above 500 ms");
        assert_eq!(ns[0].severity, Severity::Critical);
    }

    #[test]
    fn comparisons_and_low_confidence_message() {
        assert!(Comparison::Above.holds(2.0, 1.0) && !Comparison::Above.holds(1.0, 1.0));
        assert!(Comparison::AtLeast.holds(1.0, 1.0) && !Comparison::AtLeast.holds(0.9, 1.0));
        assert!(Comparison::Below.holds(0.5, 1.0) && !Comparison::Below.holds(1.0, 1.0));
        assert!(Comparison::AtMost.holds(1.0, 1.0) && !Comparison::AtMost.holds(1.1, 1.0));
        let mut r = rule("conf");
        r.signal = Signal::MeanConfidence;
        r.comparison = Comparison::Below;
        r.threshold = 0.7;
        let mut e = AlertEngine::new(vec![r]).expect("valid");
        let ns = tick(&mut e, 0, Some(0.61));
        assert_eq!(ns[0].message, "weldnet: mean confidence 0.61 below 0.70");
        let mut d = rule("drift");
        d.signal = Signal::Drift;
        d.comparison = Comparison::AtLeast;
        d.threshold = 1.0;
        let mut e = AlertEngine::new(vec![d]).expect("valid");
        assert_eq!(
            tick(&mut e, 0, Some(1.0))[0].message,
            "weldnet: drift detected"
        );
        assert_eq!(
            tick(&mut e, 30, Some(0.0))[0].message,
            "weldnet: resolved, drift no longer detected (alert began 30s ago)"
        );
    }

    #[test]
    fn rules_parse_from_toml() {
        #[derive(Deserialize)]
        struct Config {
            alerts: Alerts,
        }
        #[derive(Deserialize)]
        struct Alerts {
            rules: Vec<AlertRule>,
        }
        let text = r#"
            [[alerts.rules]]
            name = "weldnet_embedding_drift"
            signal = { drift_signal = "embedding.mmd" }
            model = "weldnet"
            comparison = ">"
            threshold = 1.0
            window = "15m"
            for = "2m"
            severity = "critical"
            cooldown = "1h"
            description = "The films no longer look like the training set."

            [[alerts.rules]]
            name = "ood"
            signal = "ood_share"
            comparison = ">="
            threshold = 0.05
            window = 600
        "#;
        let c: Config = toml::from_str(text).expect("parses");
        let [a, b] = c.alerts.rules.as_slice() else {
            panic!("two rules")
        };
        assert_eq!(a.signal, Signal::DriftSignal("embedding.mmd".to_owned()));
        assert_eq!(a.model.as_deref(), Some("weldnet"));
        assert_eq!(a.window, Duration::from_secs(900));
        assert_eq!(a.for_duration, Duration::from_secs(120));
        assert_eq!(a.cooldown, Duration::from_secs(3600));
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(b.signal, Signal::OodShare);
        assert_eq!(b.comparison, Comparison::AtLeast);
        assert_eq!(b.window, Duration::from_secs(600));
        assert_eq!(b.for_duration, Duration::ZERO);
        assert_eq!(b.severity, Severity::Warning);
        assert_eq!(b.model, None);
        validate_rules(&c.alerts.rules).expect("valid");
        // Round trip through serde.
        let json = serde_json::to_string(a).expect("serializes");
        let back: AlertRule = serde_json::from_str(&json).expect("parses back");
        assert_eq!(&back, a);
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let parse = |body: &str| {
            toml::from_str::<AlertRule>(&format!(
                "name = \"r\"\ncomparison = \">\"\nthreshold = 0.5\n{body}"
            ))
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        let e = parse("signal = \"drfit\"").expect_err("unknown signal");
        assert!(e.contains("unknown variant `drfit`"), "{e}");
        assert!(e.contains("ood_share"), "{e}");
        let e = parse("signal = \"drift\"\nwindow = \"5 minutes-ish\"").expect_err("duration");
        assert!(e.contains("invalid duration `5 minutes-ish`"), "{e}");
        let e = parse("signal = \"drift\"\ntreshold = 1").expect_err("unknown key");
        assert!(e.contains("unknown field `treshold`"), "{e}");
        let e = toml::from_str::<AlertRule>(
            "name = \"r\"\nsignal = \"drift\"\ncomparison = \"=>\"\nthreshold = 1",
        )
        .expect_err("comparison")
        .to_string();
        assert!(e.contains("unknown variant `=>`"), "{e}");
    }

    #[test]
    fn validation_errors() {
        let check = |r: AlertRule| AlertEngine::new(vec![r]).map(|_| ()).expect_err("invalid");
        let mut r = rule("");
        assert_eq!(check(r.clone()), AlertError::EmptyName { index: 1 });
        r.name = "weld-drift".to_owned();
        assert!(matches!(check(r.clone()), AlertError::InvalidName { .. }));
        r.name = "1st".to_owned();
        assert!(matches!(check(r.clone()), AlertError::InvalidName { .. }));

        let dup = AlertEngine::new(vec![rule("a"), rule("b"), rule("a")]).expect_err("dup");
        assert_eq!(dup, AlertError::DuplicateName { name: "a".into() });
        assert!(dup.to_string().contains("more than once"));

        let mut r = rule("r");
        r.threshold = f64::NAN;
        let e = check(r.clone());
        assert!(matches!(e, AlertError::NonFiniteThreshold { .. }));
        assert!(e.to_string().contains("not a finite number"), "{e}");
        r.threshold = f64::INFINITY;
        assert!(matches!(
            check(r.clone()),
            AlertError::NonFiniteThreshold { .. }
        ));

        r.threshold = 5.0;
        let e = check(r.clone());
        assert!(e.to_string().contains("5% is 0.05"), "{e}");
        r.threshold = 0.05;

        for bad in ["mmd", "embedding.", "Embedding.MMD", "a..b", ""] {
            let mut d = r.clone();
            d.signal = Signal::DriftSignal(bad.to_owned());
            d.threshold = 1.0;
            let e = check(d);
            assert!(matches!(e, AlertError::UnknownSignal { .. }), "{bad}: {e}");
        }
        let mut d = r.clone();
        d.signal = Signal::DriftSignal("dynamic_range.ks".to_owned());
        d.threshold = 1.0;
        AlertEngine::new(vec![d]).expect("a well-formed drift signal");

        let mut w = r.clone();
        w.window = Duration::ZERO;
        assert_eq!(check(w), AlertError::ZeroWindow { rule: "r".into() });
        let mut m = r.clone();
        m.model = Some(String::new());
        assert_eq!(check(m), AlertError::EmptyModel { rule: "r".into() });
        assert_eq!(check(rule("")).kind(), ErrorKind::Invalid);
    }
}
