//! Alert delivery: evaluates the rules of [`vigil_core::monitor::alert`] on a timer over an
//! [`AlertSource`] and delivers their notifications to webhooks, as the notification's JSON
//! or as a Slack-compatible incoming-webhook message.
//!
//! ```text
//!  every `interval` ─► spawn_blocking: AlertEngine::evaluate(now, source) ─► notifications
//!      ─► log, keep the last N (AlertingHandle::recent), AlertHistory::record
//!      ─► try_send, one bounded queue per webhook ─► its task: POST, retried with backoff
//! ```
//!
//! Delivery never holds up evaluation, nor serving: each webhook has its own task and queue
//! (full: the notification is dropped for that webhook, logged and counted), HTTP runs on the
//! blocking pool, and every try has a timeout. A webhook task sends in order, so a "resolved"
//! never overtakes its "firing". Failures are logged with `tracing` and counted
//! ([`AlertingHandle::deliveries`]).
//!
//! The HTTP client is `ureq` 3 (blocking, rustls with ring and the webpki roots, run on
//! `tokio::task::spawn_blocking`): it speaks plain HTTP to webhooks inside the plant and HTTPS
//! to Slack, and adds only `ureq` and `ureq-proto` to the build (rustls, ring and
//! webpki-roots are already in the lock file). hyper-util's client would need a TLS connector
//! crate on top and more code for the same few POSTs a day. Proxies come from the usual
//! `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` variables.
//!
//! This module must not know where the values come from (the integrator implements
//! [`AlertSource`] over the live monitor) nor where notifications are stored
//! ([`AlertHistory`], backed by the store).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use vigil_core::ErrorKind;
use vigil_core::monitor::alert::{
    ActiveAlert, AlertEngine, AlertError, AlertRule, Notification, NotificationState, Severity,
    duration_text,
};

/// Notifications queued per webhook before new ones are dropped for it: far more than a
/// sane rule set produces while one delivery is retried.
const WEBHOOK_QUEUE: usize = 64;
/// The longest `AlertHistory::record` may take before the loop moves on.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for webhook queues to empty (one try each, no retries).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The first retry's delay; each further retry waits twice as long.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Where rule values come from: implemented over the live monitor by `vigil serve`.
///
/// Both methods run on tokio's blocking pool, so they may take locks or do a little work.
pub trait AlertSource: Send + Sync {
    /// The models served now: a rule without `model` is evaluated for each.
    fn models(&self) -> Vec<String>;
    /// `rule.signal` for `model` over `rule.window`; `None` when it is not known (no
    /// traffic in the window, no drift window yet, a model not served). `None` neither fires
    /// nor resolves an alert.
    fn value(&self, rule: &AlertRule, model: &str) -> Option<f64>;
}

/// Where notifications are kept for good (backed by the store by `vigil serve`).
#[async_trait::async_trait]
pub trait AlertHistory: Send + Sync {
    /// Records one notification. Failures are the implementation's to log: alerting goes on.
    async fn record(&self, notification: &Notification);
}

/// What can be wrong with the alerting configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlertingError {
    /// A rule is invalid.
    #[error(transparent)]
    Rule(#[from] AlertError),
    /// A webhook URL that is not `http://` or `https://` with a host.
    #[error("webhook `{url}`: {reason}")]
    WebhookUrl {
        /// The URL, without its path (which may hold a token).
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A header that HTTP cannot carry.
    #[error("webhook `{url}`: header `{name}`: {reason}")]
    WebhookHeader {
        /// The URL, without its path.
        url: String,
        /// The header name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// `tries = 0` or a zero timeout.
    #[error("webhook `{url}`: {reason}")]
    WebhookSetting {
        /// The URL, without its path.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A zero evaluation interval.
    #[error("alerts.interval must be longer than zero")]
    ZeroInterval,
}

impl AlertingError {
    /// What a caller can do about it: fix the configuration.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AlertingError::Rule(e) => e.kind(),
            AlertingError::WebhookUrl { .. }
            | AlertingError::WebhookHeader { .. }
            | AlertingError::WebhookSetting { .. }
            | AlertingError::ZeroInterval => ErrorKind::Invalid,
        }
    }
}

/// The `[alerts]` section: rules, webhooks and how often rules are evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    /// How often every rule is evaluated (humantime, or seconds); default 30s.
    #[serde(default = "default_interval", with = "duration_text")]
    pub interval: Duration,
    /// How many recent notifications are kept in memory for the API; default 100.
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// The rules (`[[alerts.rules]]`); none: alerting is off.
    #[serde(default)]
    pub rules: Vec<AlertRule>,
    /// Where notifications go (`[[alerts.webhooks]]`); none: only logged and kept.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

fn default_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_keep() -> usize {
    100
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            interval: default_interval(),
            keep: default_keep(),
            rules: Vec::new(),
            webhooks: Vec::new(),
        }
    }
}

impl AlertingConfig {
    /// Checks every rule and webhook and builds what [`spawn_alerting`] runs.
    pub fn build(&self) -> Result<Alerting, AlertingError> {
        let webhooks = self
            .webhooks
            .iter()
            .map(Webhook::new)
            .collect::<Result<Vec<_>, _>>()?;
        Alerting::new(self.rules.clone(), webhooks, self.interval, self.keep)
    }
}

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The [`Notification`] as JSON.
    #[default]
    Json,
    /// A Slack incoming-webhook message (`text` and one coloured attachment with fields);
    /// Mattermost and Rocket.Chat accept it too.
    Slack,
}

impl WebhookFormat {
    /// The request body for `n`.
    pub fn body(self, n: &Notification) -> serde_json::Value {
        match self {
            WebhookFormat::Json => serde_json::to_value(n)
                .expect("a notification is plain data and always serializes; this is a bug"),
            WebhookFormat::Slack => slack_message(n),
        }
    }
}

/// A Slack-compatible incoming-webhook message.
fn slack_message(n: &Notification) -> serde_json::Value {
    let color = match (n.state, n.severity) {
        (NotificationState::Resolved, _) => "good",
        (NotificationState::Firing, Severity::Critical) => "danger",
        (NotificationState::Firing, Severity::Warning) => "warning",
        (NotificationState::Firing, Severity::Info) => "#439FE0",
    };
    let field = |title: &str, value: String| serde_json::json!({ "title": title, "value": value, "short": true });
    let text = format!("[{}] {}", n.state.as_str().to_uppercase(), n.message);
    serde_json::json!({
        "text": text,
        "attachments": [{
            "color": color,
            "fallback": text,
            "title": n.rule,
            "text": n.description,
            "fields": [
                field("Model", n.model.clone()),
                field("Severity", n.severity.as_str().to_owned()),
                field("Value", format!("{}", n.value)),
                field("Threshold", format!("{}", n.threshold)),
            ],
            "ts": n.at.timestamp(),
        }],
    })
}

/// One webhook, as configured in `[[alerts.webhooks]]`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL the notifications are POSTed to. Kept out of logs beyond
    /// its host: a Slack URL holds its token in the path.
    pub url: String,
    /// `"json"` (default: the notification as JSON) or `"slack"` (an incoming-webhook
    /// message).
    #[serde(default)]
    pub format: WebhookFormat,
    /// The longest one try may take, connection included; default 5s.
    #[serde(default = "default_timeout", with = "duration_text")]
    pub timeout: Duration,
    /// How many times a notification is sent before it is given up (on a network error, a
    /// timeout, 429 or 5xx; other answers are not retried), waiting 1s, 2s, 4s, ... between
    /// tries; default 3.
    #[serde(default = "default_tries")]
    pub tries: u32,
    /// Extra request headers, for example `{ Authorization = "Bearer …" }`. Their values
    /// never appear in logs.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Only notifications of this severity or higher go to this webhook; default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_tries() -> u32 {
    3
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &redact_url(&self.url))
            .field("format", &self.format)
            .field("timeout", &self.timeout)
            .field("tries", &self.tries)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("min_severity", &self.min_severity)
            .finish()
    }
}

/// `scheme://host[:port]/…`: enough to tell webhooks apart, without the path's token or a
/// password.
fn redact_url(url: &str) -> String {
    match url.parse::<ureq::http::Uri>() {
        Ok(uri) => {
            let scheme = uri.scheme_str().unwrap_or("?");
            let host = uri.host().unwrap_or("?");
            match uri.port_u16() {
                Some(port) => format!("{scheme}://{host}:{port}/…"),
                None => format!("{scheme}://{host}/…"),
            }
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

/// A checked webhook with its HTTP client.
#[derive(Clone)]
pub struct Webhook {
    config: WebhookConfig,
    /// Shown in logs instead of the URL.
    display: String,
    agent: ureq::Agent,
    first_backoff: Duration,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("config", &self.config)
            .field("first_backoff", &self.first_backoff)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// Checks the URL, headers and settings and builds the client.
    pub fn new(config: &WebhookConfig) -> Result<Webhook, AlertingError> {
        let display = redact_url(&config.url);
        let uri: ureq::http::Uri =
            config
                .url
                .parse()
                .map_err(|e: ureq::http::uri::InvalidUri| AlertingError::WebhookUrl {
                    url: display.clone(),
                    reason: e.to_string(),
                })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(AlertingError::WebhookUrl {
                url: display,
                reason: "the URL must start with http:// or https://".to_owned(),
            });
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(AlertingError::WebhookUrl {
                url: display,
                reason: "the URL has no host".to_owned(),
            });
        }
        for (name, value) in &config.headers {
            let header_error = |reason: String| AlertingError::WebhookHeader {
                url: display.clone(),
                name: name.clone(),
                reason,
            };
            ureq::http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| header_error(e.to_string()))?;
            ureq::http::HeaderValue::from_str(value)
                .map_err(|_| header_error("the value holds characters HTTP cannot carry".into()))?;
        }
        if config.tries == 0 {
            return Err(AlertingError::WebhookSetting {
                url: display,
                reason: "tries must be at least 1",
            });
        }
        if config.timeout.is_zero() {
            return Err(AlertingError::WebhookSetting {
                url: display,
                reason: "the timeout must be longer than zero",
            });
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Webhook {
            config: config.clone(),
            display,
            agent,
            first_backoff: FIRST_BACKOFF,
        })
    }

    /// The same webhook with another first retry delay (tests use milliseconds).
    #[must_use]
    pub fn with_first_backoff(mut self, backoff: Duration) -> Webhook {
        self.first_backoff = backoff;
        self
    }

    fn wants(&self, n: &Notification) -> bool {
        self.config.min_severity.is_none_or(|min| n.severity >= min)
    }

    /// One POST, blocking: `Ok` on 2xx.
    fn post(&self, body: &[u8]) -> Result<(), Failure> {
        let mut request = self.agent.post(&self.config.url);
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        match request.content_type("application/json").send(body) {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => {
                let status = response.status();
                Err(Failure {
                    retry: status.is_server_error()
                        || status == ureq::http::StatusCode::TOO_MANY_REQUESTS,
                    reason: format!("the webhook answered {status}"),
                })
            }
            Err(e) => Err(Failure {
                retry: true,
                reason: e.to_string(),
            }),
        }
    }
}

#[derive(Debug)]
struct Failure {
    retry: bool,
    reason: String,
}

/// How deliveries went, since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct DeliveryCounts {
    /// Notifications a webhook accepted (2xx).
    pub delivered: u64,
    /// Notifications given up on after their last try (or a non-retryable answer).
    pub failed: u64,
    /// Tries that failed and were retried.
    pub retries: u64,
    /// Notifications dropped because a webhook's queue was full.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Shared {
    keep: usize,
    recent: Mutex<VecDeque<Notification>>,
    active: Mutex<Vec<ActiveAlert>>,
    delivered: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    dropped: AtomicU64,
}

/// The alerting task's state as an API shows it; cheap to clone.
#[derive(Debug, Clone)]
pub struct AlertingHandle {
    shared: Arc<Shared>,
}

impl AlertingHandle {
    /// The last notifications (at most `keep`), oldest first.
    pub fn recent(&self) -> Vec<Notification> {
        let recent = self
            .shared
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        recent.iter().cloned().collect()
    }

    /// The alerts pending or firing after the latest evaluation.
    pub fn active(&self) -> Vec<ActiveAlert> {
        self.shared
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How deliveries went.
    pub fn deliveries(&self) -> DeliveryCounts {
        let s = &self.shared;
        DeliveryCounts {
            delivered: s.delivered.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
        }
    }

    fn push(&self, n: &Notification) {
        if self.shared.keep == 0 {
            return;
        }
        let mut recent = self
            .shared
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while recent.len() >= self.shared.keep {
            recent.pop_front();
        }
        recent.push_back(n.clone());
    }

    fn count(&self, counter: fn(&Shared) -> &AtomicU64) {
        counter(&self.shared).fetch_add(1, Ordering::Relaxed);
    }
}

/// Checked rules and webhooks, ready for [`spawn_alerting`].
#[derive(Debug)]
pub struct Alerting {
    engine: AlertEngine,
    webhooks: Vec<Webhook>,
    interval: Duration,
    handle: AlertingHandle,
}

impl Alerting {
    /// Checks the rules; keeps the last `keep` notifications in memory.
    pub fn new(
        rules: Vec<AlertRule>,
        webhooks: Vec<Webhook>,
        interval: Duration,
        keep: usize,
    ) -> Result<Alerting, AlertingError> {
        if interval.is_zero() {
            return Err(AlertingError::ZeroInterval);
        }
        Ok(Alerting {
            engine: AlertEngine::new(rules)?,
            webhooks,
            interval,
            handle: AlertingHandle {
                shared: Arc::new(Shared {
                    keep,
                    ..Shared::default()
                }),
            },
        })
    }

    /// The handle an API reads recent notifications, active alerts and delivery counts from.
    pub fn handle(&self) -> AlertingHandle {
        self.handle.clone()
    }
}

/// Runs `alerting` until `shutdown`: evaluates the rules every interval (the first at once)
/// over `source`, records each notification in `history` (when given) and in memory, and
/// queues it for every webhook. On shutdown, webhook queues get 5 seconds to empty,
/// one try per notification.
///
/// # Panics
///
/// Must be called within a tokio runtime.
pub fn spawn_alerting(
    alerting: Alerting,
    source: Arc<dyn AlertSource>,
    history: Option<Arc<dyn AlertHistory>>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(run(alerting, source, history, shutdown))
}

async fn run(
    alerting: Alerting,
    source: Arc<dyn AlertSource>,
    history: Option<Arc<dyn AlertHistory>>,
    shutdown: CancellationToken,
) {
    let Alerting {
        engine,
        webhooks,
        interval,
        handle,
    } = alerting;
    info!(
        rules = engine.rules().len(),
        webhooks = webhooks.len(),
        interval = ?interval,
        "Alerting started."
    );
    let engine = Arc::new(Mutex::new(engine));
    let mut queues = Vec::with_capacity(webhooks.len());
    let mut workers = Vec::with_capacity(webhooks.len());
    for webhook in webhooks {
        let (tx, rx) = mpsc::channel(WEBHOOK_QUEUE);
        queues.push((webhook.clone(), tx));
        workers.push(tokio::spawn(deliver_queue(
            webhook,
            rx,
            handle.clone(),
            shutdown.clone(),
        )));
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let (engine, source) = (Arc::clone(&engine), Arc::clone(&source));
        let evaluated = tokio::task::spawn_blocking(move || {
            let mut engine = engine.lock().unwrap_or_else(PoisonError::into_inner);
            let models = source.models();
            let notifications = engine.evaluate(Utc::now(), &|r, m| source.value(r, m), &models);
            (notifications, engine.active())
        })
        .await;
        let (notifications, active) = match evaluated {
            Ok(evaluated) => evaluated,
            Err(e) => {
                error!(error = %e, "Evaluating the alert rules failed (the alert source panicked); skipping this tick.");
                continue;
            }
        };
        *handle
            .shared
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = active;
        for n in notifications {
            match n.state {
                NotificationState::Firing => warn!(
                    rule = %n.rule, model = %n.model, severity = %n.severity, value = n.value,
                    "Alert firing: {}", n.message
                ),
                NotificationState::Resolved => info!(
                    rule = %n.rule, model = %n.model, value = n.value,
                    "Alert resolved: {}", n.message
                ),
            }
            handle.push(&n);
            if let Some(history) = &history
                && tokio::time::timeout(HISTORY_TIMEOUT, history.record(&n))
                    .await
                    .is_err()
            {
                warn!(rule = %n.rule, model = %n.model, "Recording the notification timed out; it is still delivered.");
            }
            for (webhook, tx) in &queues {
                if !webhook.wants(&n) {
                    continue;
                }
                if tx.try_send(n.clone()).is_err() {
                    handle.count(|s| &s.dropped);
                    warn!(webhook = %webhook.display, rule = %n.rule, model = %n.model, "The webhook's queue is full; notification dropped for it.");
                }
            }
        }
    }
    drop(queues);
    if tokio::time::timeout(SHUTDOWN_GRACE, futures::future::join_all(workers))
        .await
        .is_err()
    {
        warn!("Alerting stopped with notifications still queued for a slow webhook.");
    }
    info!("Alerting stopped.");
}

/// One webhook's task: sends its queue in order.
async fn deliver_queue(
    webhook: Webhook,
    mut rx: mpsc::Receiver<Notification>,
    handle: AlertingHandle,
    shutdown: CancellationToken,
) {
    while let Some(n) = rx.recv().await {
        deliver(&webhook, &n, &handle, &shutdown).await;
    }
}

/// Sends one notification, retrying with backoff (no more retries once `shutdown` is
/// cancelled); counts and logs the outcome.
async fn deliver(
    webhook: &Webhook,
    n: &Notification,
    handle: &AlertingHandle,
    shutdown: &CancellationToken,
) {
    let body = match serde_json::to_vec(&webhook.config.format.body(n)) {
        Ok(body) => Arc::new(body),
        Err(e) => {
            error!(error = %e, "Serializing a notification failed; this is a bug.");
            handle.count(|s| &s.failed);
            return;
        }
    };
    let mut backoff = webhook.first_backoff;
    let tries = webhook.config.tries;
    for attempt in 1..=tries {
        let (w, b) = (webhook.clone(), Arc::clone(&body));
        let outcome = tokio::task::spawn_blocking(move || w.post(&b))
            .await
            .unwrap_or_else(|e| {
                Err(Failure {
                    retry: false,
                    reason: format!("the HTTP client panicked: {e}"),
                })
            });
        let failure = match outcome {
            Ok(()) => {
                handle.count(|s| &s.delivered);
                debug!(webhook = %webhook.display, rule = %n.rule, model = %n.model, state = n.state.as_str(), "Notification delivered.");
                return;
            }
            Err(failure) => failure,
        };
        let last = attempt == tries || !failure.retry || shutdown.is_cancelled();
        if last {
            handle.count(|s| &s.failed);
            error!(
                webhook = %webhook.display, rule = %n.rule, model = %n.model, attempt,
                error = %failure.reason, "Notification not delivered; giving up."
            );
            return;
        }
        handle.count(|s| &s.retries);
        warn!(
            webhook = %webhook.display, rule = %n.rule, model = %n.model, attempt,
            error = %failure.reason, retry_in = ?backoff, "Notification not delivered; retrying."
        );
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => {}
        }
        backoff = backoff.saturating_mul(2);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use axum::Router;
    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::routing::post;
    use vigil_core::monitor::alert::{Comparison, Signal, metric_names};

    use super::*;

    /// What the test receiver got: (path, headers, body).
    type Received = Arc<Mutex<Vec<(String, HeaderMap, serde_json::Value)>>>;

    /// A real HTTP server on 127.0.0.1:0 that records every POST and answers 200.
    async fn receiver() -> (String, Received) {
        async fn record(
            State(got): State<Received>,
            uri: axum::http::Uri,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> &'static str {
            let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            got.lock()
                .expect("lock")
                .push((uri.path().to_owned(), headers, json));
            "ok"
        }
        let got: Received = Arc::default();
        let app = Router::new()
            .route("/json", post(record))
            .route("/slack", post(record))
            .with_state(Arc::clone(&got));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), got)
    }

    /// A socket that accepts connections and never answers.
    async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        (format!("http://{addr}/hook"), task)
    }

    /// A port nothing listens on.
    async fn closed_port() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        drop(listener);
        format!("http://{addr}/hook")
    }

    #[derive(Debug)]
    struct FakeSource {
        value: Mutex<Option<f64>>,
        asked: AtomicBool,
    }

    impl FakeSource {
        fn new() -> Arc<FakeSource> {
            Arc::new(FakeSource {
                value: Mutex::new(Some(0.0)),
                asked: AtomicBool::new(false),
            })
        }
        fn set(&self, v: Option<f64>) {
            *self.value.lock().expect("lock") = v;
        }
    }

    impl AlertSource for FakeSource {
        fn models(&self) -> Vec<String> {
            vec!["weldnet".to_owned()]
        }
        fn value(&self, rule: &AlertRule, model: &str) -> Option<f64> {
            assert_eq!((rule.name.as_str(), model), ("weldnet_ood", "weldnet"));
            self.asked.store(true, Ordering::SeqCst);
            *self.value.lock().expect("lock")
        }
    }

    #[derive(Debug, Default)]
    struct FakeHistory(Mutex<Vec<Notification>>);

    #[async_trait::async_trait]
    impl AlertHistory for FakeHistory {
        async fn record(&self, n: &Notification) {
            self.0.lock().expect("lock").push(n.clone());
        }
    }

    fn ood_rule() -> AlertRule {
        AlertRule {
            name: "weldnet_ood".to_owned(),
            signal: Signal::OodShare,
            model: None,
            comparison: Comparison::Above,
            threshold: 0.05,
            window: Duration::from_secs(300),
            for_duration: Duration::ZERO,
            severity: Severity::Critical,
            cooldown: Duration::ZERO,
            description: "Films unlike the training set.".to_owned(),
        }
    }

    fn webhook(url: &str, format: WebhookFormat) -> WebhookConfig {
        WebhookConfig {
            url: url.to_owned(),
            format,
            timeout: Duration::from_millis(500),
            tries: 3,
            headers: BTreeMap::new(),
            min_severity: None,
        }
    }

    /// Waits up to 10 s for `done`.
    async fn until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_firing_and_one_resolved_reach_json_and_slack_webhooks() {
        let (base, got) = receiver().await;
        let mut json = webhook(&format!("{base}/json"), WebhookFormat::Json);
        json.headers
            .insert("Authorization".to_owned(), "Bearer s3cret".to_owned());
        let slack = webhook(&format!("{base}/slack"), WebhookFormat::Slack);
        let config = AlertingConfig {
            interval: Duration::from_millis(20),
            keep: 10,
            rules: vec![ood_rule()],
            webhooks: vec![json, slack],
        };
        let alerting = config.build().expect("valid");
        let handle = alerting.handle();
        let source = FakeSource::new();
        let history = Arc::new(FakeHistory::default());
        let shutdown = CancellationToken::new();
        let task = spawn_alerting(
            alerting,
            source.clone(),
            Some(history.clone()),
            shutdown.clone(),
        );

        until("a first evaluation", || source.asked.load(Ordering::SeqCst)).await;
        source.set(Some(0.2));
        until("the firing notifications", || {
            got.lock().expect("lock").len() == 2
        })
        .await;
        // Many ticks later: still only one firing notification per webhook.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(got.lock().expect("lock").len(), 2);
        assert_eq!(handle.active().len(), 1);
        source.set(Some(0.01));
        until("the resolved notifications", || {
            got.lock().expect("lock").len() == 4
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the task stops on shutdown")
            .expect("the task does not panic");

        let got = got.lock().expect("lock").clone();
        assert_eq!(got.len(), 4, "{got:#?}");
        let at = |path: &str| -> Vec<&(String, HeaderMap, serde_json::Value)> {
            got.iter().filter(|(p, _, _)| p == path).collect()
        };
        let json = at("/json");
        assert_eq!(json.len(), 2);
        let firing = &json[0].2;
        assert_eq!(firing["rule"], "weldnet_ood");
        assert_eq!(firing["model"], "weldnet");
        assert_eq!(firing["state"], "firing");
        assert_eq!(firing["severity"], "critical");
        assert_eq!(firing["value"], 0.2);
        assert_eq!(firing["threshold"], 0.05);
        assert_eq!(
            firing["message"],
            "weldnet: out-of-distribution share 20.0% above 5.0%"
        );
        assert_eq!(firing["description"], "Films unlike the training set.");
        assert!(firing["at"].as_str().is_some_and(|s| s.contains('T')));
        let parsed: Notification =
            serde_json::from_value(firing.clone()).expect("the JSON shape is a Notification");
        assert_eq!(parsed.state, NotificationState::Firing);
        assert_eq!(json[1].2["state"], "resolved");
        assert_eq!(json[0].1["authorization"], "Bearer s3cret");
        assert_eq!(json[0].1["content-type"], "application/json");

        let slack = at("/slack");
        assert_eq!(slack.len(), 2);
        let firing = &slack[0].2;
        assert_eq!(
            firing["text"],
            "[FIRING] weldnet: out-of-distribution share 20.0% above 5.0%"
        );
        let attachment = &firing["attachments"][0];
        assert_eq!(attachment["color"], "danger");
        assert_eq!(attachment["title"], "weldnet_ood");
        assert_eq!(attachment["fields"][0]["title"], "Model");
        assert_eq!(attachment["fields"][0]["value"], "weldnet");
        assert_eq!(attachment["fields"][1]["value"], "critical");
        assert!(attachment["ts"].is_i64());
        let resolved = &slack[1].2;
        assert!(
            resolved["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("[RESOLVED] weldnet: resolved, ")),
            "{resolved}"
        );
        assert_eq!(resolved["attachments"][0]["color"], "good");
        assert!(slack[0].1.get("authorization").is_none());

        let recorded = history.0.lock().expect("lock").clone();
        let states: Vec<_> = recorded.iter().map(|n| n.state).collect();
        assert_eq!(
            states,
            [NotificationState::Firing, NotificationState::Resolved]
        );
        assert_eq!(handle.recent(), recorded);
        assert_eq!(
            handle.deliveries(),
            DeliveryCounts {
                delivered: 4,
                ..DeliveryCounts::default()
            }
        );
        assert!(handle.active().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_and_hanging_webhooks_neither_panic_nor_block_the_loop() {
        let (hanging, hole) = black_hole().await;
        let refused = closed_port().await;
        let webhooks = [&hanging, &refused]
            .into_iter()
            .map(|url| {
                let mut w = webhook(url, WebhookFormat::Slack);
                w.timeout = Duration::from_millis(200);
                w.tries = 2;
                Webhook::new(&w)
                    .expect("valid")
                    .with_first_backoff(Duration::from_millis(10))
            })
            .collect();
        let alerting =
            Alerting::new(vec![ood_rule()], webhooks, Duration::from_millis(20), 1).expect("valid");
        let handle = alerting.handle();
        let source = FakeSource::new();
        let shutdown = CancellationToken::new();
        let task = spawn_alerting(alerting, source.clone(), None, shutdown.clone());

        source.set(Some(0.2));
        until("firing", || handle.recent().len() == 1).await;
        source.set(Some(0.0));
        // Evaluation goes on while the webhooks time out.
        until("resolved", || {
            handle
                .recent()
                .first()
                .is_some_and(|n| n.state == NotificationState::Resolved)
        })
        .await;
        // `keep = 1`: only the latest.
        assert_eq!(handle.recent().len(), 1);
        // 2 notifications × 2 webhooks, 2 tries each.
        until("every delivery to give up", || {
            handle.deliveries().failed == 4
        })
        .await;
        let counts = handle.deliveries();
        assert_eq!((counts.delivered, counts.retries), (0, 4));
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the task stops on shutdown")
            .expect("the task does not panic");
        hole.abort();
    }

    #[tokio::test]
    async fn a_missing_value_sends_nothing() {
        let (base, got) = receiver().await;
        let config = AlertingConfig {
            interval: Duration::from_millis(10),
            rules: vec![ood_rule()],
            webhooks: vec![webhook(&format!("{base}/json"), WebhookFormat::Json)],
            ..AlertingConfig::default()
        };
        let alerting = config.build().expect("valid");
        let handle = alerting.handle();
        let source = FakeSource::new();
        source.set(None);
        let shutdown = CancellationToken::new();
        let task = spawn_alerting(alerting, source.clone(), None, shutdown.clone());
        until("evaluations", || source.asked.load(Ordering::SeqCst)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        shutdown.cancel();
        task.await.expect("no panic");
        assert!(got.lock().expect("lock").is_empty());
        assert!(handle.recent().is_empty());
    }

    #[test]
    fn webhook_checks_and_redaction() {
        let bad = |w: WebhookConfig| Webhook::new(&w).expect_err("invalid").to_string();
        let e = bad(webhook("ftp://example.com/x", WebhookFormat::Json));
        assert!(e.contains("http:// or https://"), "{e}");
        let e = bad(webhook("not a url", WebhookFormat::Json));
        assert!(e.contains("webhook"), "{e}");
        let mut w = webhook(
            "https://hooks.slack.com/services/T0/B0/SECRET",
            WebhookFormat::Slack,
        );
        w.headers.insert("Bad Header".to_owned(), "x".to_owned());
        let e = bad(w.clone());
        assert!(e.contains("Bad Header") && !e.contains("SECRET"), "{e}");
        w.headers.clear();
        w.headers
            .insert("Authorization".to_owned(), "Bearer TOKEN".to_owned());
        let debug = format!("{:?}", Webhook::new(&w).expect("valid"));
        assert!(debug.contains("https://hooks.slack.com/…"), "{debug}");
        assert!(
            !debug.contains("SECRET") && !debug.contains("TOKEN"),
            "{debug}"
        );
        w.tries = 0;
        assert!(bad(w).contains("tries"));
        let e = Alerting::new(
            vec![ood_rule(), ood_rule()],
            vec![],
            Duration::from_secs(1),
            1,
        )
        .expect_err("duplicate");
        assert_eq!(e.kind(), ErrorKind::Invalid);
        assert!(e.to_string().contains("more than once"), "{e}");
        let e = Alerting::new(vec![], vec![], Duration::ZERO, 1).expect_err("zero interval");
        assert_eq!(e, AlertingError::ZeroInterval);
    }

    #[test]
    fn min_severity_filters() {
        let mut w = webhook("http://127.0.0.1:9/x", WebhookFormat::Json);
        w.min_severity = Some(Severity::Critical);
        let w = Webhook::new(&w).expect("valid");
        let mut engine = AlertEngine::new(vec![ood_rule()]).expect("valid");
        let n = engine.evaluate(Utc::now(), &|_, _| Some(1.0), &["m".to_owned()]);
        assert!(w.wants(&n[0]));
        let mut info = n[0].clone();
        info.severity = Severity::Warning;
        assert!(!w.wants(&info));
    }

    /// The commented `[[alerts.rules]]` and `[[alerts.webhooks]]` examples in
    /// config/default.toml parse and build.
    #[test]
    fn the_documented_example_parses() {
        let default = include_str!("../../../config/default.toml");
        let start = default
            .find("# [[alerts.rules]]")
            .expect("config/default.toml documents [[alerts.rules]]");
        let example: String = default[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                // Example lines are TOML; prose lines in the block start with two spaces.
                !l.starts_with("  ")
            })
            .collect::<Vec<_>>()
            .join("\n");
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Doc {
            alerts: AlertingConfig,
        }
        let doc: Doc = toml::from_str(&example).expect("the example parses");
        assert!(doc.alerts.rules.len() >= 3, "{example}");
        assert_eq!(doc.alerts.webhooks.len(), 2);
        doc.alerts.build().expect("the example is valid");
        // And the rules export to Prometheus.
        let yaml = vigil_core::monitor::alert::prometheus_rules(&doc.alerts.rules);
        assert!(yaml.contains("vigil_drift_statistic_ratio"));
    }

    /// The exported Prometheus rules query the request metrics under their real names.
    #[test]
    fn metric_names_match_the_runtime() {
        use vigil_runtime::metrics;
        assert_eq!(metric_names::REQUESTS_TOTAL, metrics::INFER_REQUESTS_TOTAL);
        assert_eq!(
            metric_names::REQUEST_DURATION_SECONDS,
            metrics::INFER_DURATION_SECONDS
        );
        assert_eq!(
            metric_names::OUTCOME_SUCCESS,
            metrics::Outcome::Success.as_str()
        );
        assert_eq!(
            metric_names::OUTCOME_CANCELLED,
            metrics::Outcome::Cancelled.as_str()
        );
    }
}
