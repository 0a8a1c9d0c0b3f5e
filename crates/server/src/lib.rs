//! Vigil's HTTP server: axum routes over the transport-agnostic [`vigil_runtime::Infer`].
//!
//! - [`app`] builds the router from an [`AppState`]; tests drive it in process with
//!   `tower::ServiceExt::oneshot`, and [`serve`] runs it on a socket with graceful shutdown.
//! - `routes::predict`: the native API (`POST /v1/models/{name}/predict`, raw image body,
//!   or several images as `multipart/form-data` through `routes::multipart`).
//! - `routes::table`: every route, the one list [`app`] registers.
//! - [`openapi`]: `GET /openapi.json`, the OpenAPI 3.1 document of every route.
//! - `routes::ops`: `/healthz`, `/readyz`, `/metrics`, `GET /v1/models`.
//! - `routes::v2`, `routes::v2_infer`: the Open Inference Protocol (KServe v2): health,
//!   metadata, readiness, and infer on FP32 tensors or encoded images (BYTES), in JSON or
//!   with the binary tensor extension.
//! - [`error`]: [`ApiError`] and the one `ErrorKind` → status mapping.
//! - `routes::admin`: `PUT /v1/models/{name}/aliases/{alias}` over [`promote::promote`].
//! - [`promote`]: load and check a version beside the serving one, move the alias, swap;
//!   shared by the admin API and the alias watcher of `vigil serve`.
//! - [`request_id`]: the middleware that gives every request an id and logs internal errors.
//! - [`alerting`]: the alert rules evaluated on a timer, notifications delivered to webhooks
//!   (JSON or Slack-compatible), with retries, never in the way of serving.
//! - [`alert_source`]: the rules' values from the live runtime ([`alert_source::LiveSignals`])
//!   and the notification history in the store ([`alert_source::StoreHistory`]).
//! - `routes::alerts`: `GET /v1/alerts`, active alerts, recent notifications and the history.
//! - [`pages`]: the web pages for people: `/dashboard`, `/review/queue`, `/review`, their
//!   compiled-in assets under `/assets/`.
//! - [`review`]: the flag policy on every answer, flagged predictions queued for inspectors
//!   with their images, review metrics, realised and estimated performance;
//!   `routes::review` is its API (queue, claims, verdicts, `POST /v1/feedback`).
//!
//! Handlers stay thin: they parse HTTP, call the runtime, and shape the answer. The HTTP
//! vocabulary (routes, `ApiError`, `*Request`/`*Response` DTOs) stays in this crate. It must
//! not know SQL: it reaches the registry only through the `vigil_store::Registry` trait it
//! is handed ([`AppState::with_registry`]), for alias moves; nor decode images itself (the
//! runtime's preprocess pool does).

pub mod alert_source;
pub mod alerting;
pub mod auth;
pub mod error;
pub mod listen;
pub mod monitoring;
pub mod openapi;
pub mod pages;
pub mod promote;
pub mod request_id;
pub mod review;
pub mod routes;
pub mod session;

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use vigil_core::types::ModelName;
use vigil_runtime::{BundleFiles, Infer};

pub use error::ApiError;
pub use request_id::{CorrelationId, RequestId};

/// Limits the HTTP layer enforces before the runtime sees a request (the connection loop in
/// [`listen`] applies the connection ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request body, in bytes; a larger one is refused with 413.
    pub max_body_bytes: usize,
    /// Connections served normally at once; past it new ones get
    /// [`listen::PRESSED_HEADER_TIMEOUT`] to send their request, and past twice it they are
    /// closed at once.
    pub max_connections: usize,
    /// The longest a connection may take to send a request's headers, and the longest a
    /// kept-alive connection stays idle.
    pub header_read_timeout: std::time::Duration,
    /// The longest a request's body may take to arrive.
    pub body_timeout: std::time::Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            // 64 MiB: a 16-bit whole-film TIFF of several thousand pixels a side fits.
            max_body_bytes: 64 << 20,
            max_connections: 8192,
            header_read_timeout: std::time::Duration::from_secs(10),
            body_timeout: std::time::Duration::from_secs(60),
        }
    }
}

/// Where a model that should be served stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelStatus {
    /// Being prepared and checked.
    Loading,
    /// Deployed; its golden cases reproduced.
    Ready,
    /// It could not be deployed, and why.
    Failed(String),
}

/// Which models the server is meant to serve and how far each got: `/readyz` is 200 only
/// when there is at least one and every one is ready.
#[derive(Debug, Default)]
pub struct Readiness {
    models: RwLock<BTreeMap<ModelName, ModelStatus>>,
}

impl Readiness {
    /// Records `model`'s status.
    pub fn set(&self, model: ModelName, status: ModelStatus) {
        self.models
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(model, status);
    }

    /// Every expected model and its status.
    pub fn snapshot(&self) -> BTreeMap<ModelName, ModelStatus> {
        self.models
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Everything the routes share; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    infer: Infer,
    readiness: Arc<Readiness>,
    limits: HttpLimits,
    registry: Option<Arc<dyn vigil_store::Registry>>,
    monitor_store: Option<Arc<dyn vigil_store::MonitorStore>>,
    log: Option<vigil_runtime::PredictionLog>,
    alerting: Option<alerting::AlertingHandle>,
    review: Option<review::ReviewState>,
    bundle_check: promote::BundleCheck,
    /// Held by each promotion, so deployments change one at a time.
    promotions: Arc<tokio::sync::Mutex<()>>,
    /// `None`: auth is off and every route is open.
    auth: Option<Arc<auth::Auth>>,
}

impl AppState {
    /// State over a runtime; no model is expected until [`deploy`] (or
    /// [`Readiness::set`]) says so.
    pub fn new(infer: Infer, limits: HttpLimits) -> AppState {
        AppState {
            infer,
            readiness: Arc::new(Readiness::default()),
            limits,
            registry: None,
            monitor_store: None,
            log: None,
            alerting: None,
            review: None,
            bundle_check: promote::BundleCheck::basic(),
            promotions: Arc::new(tokio::sync::Mutex::new(())),
            auth: None,
        }
    }

    /// Tokens guard the routes (see [`auth`]); `None` leaves every route open.
    #[must_use]
    pub fn with_auth(mut self, auth: Option<Arc<auth::Auth>>) -> AppState {
        self.auth = auth;
        self
    }

    /// Whether routes are guarded by tokens.
    pub fn auth_enabled(&self) -> bool {
        self.auth.is_some()
    }

    /// The tokens, when auth is on.
    pub fn auth(&self) -> Option<&Arc<auth::Auth>> {
        self.auth.as_ref()
    }

    /// The registry that alias moves go through; without one the admin API answers 503.
    #[must_use]
    pub fn with_registry(mut self, registry: Arc<dyn vigil_store::Registry>) -> AppState {
        self.registry = Some(registry);
        self
    }

    /// The prediction log every answered prediction goes to, and the store that holds it
    /// (for the monitoring API). Without them nothing is logged.
    #[must_use]
    pub fn with_monitoring(
        mut self,
        store: Arc<dyn vigil_store::MonitorStore>,
        log: vigil_runtime::PredictionLog,
    ) -> AppState {
        self.monitor_store = Some(store);
        self.log = Some(log);
        self
    }

    /// The running alerting, whose active alerts and recent notifications `GET /v1/alerts`
    /// shows.
    #[must_use]
    pub fn with_alerting(mut self, handle: alerting::AlertingHandle) -> AppState {
        self.alerting = Some(handle);
        self
    }

    /// The review queue flagged predictions go to, and the review API and pages work on.
    #[must_use]
    pub fn with_review(mut self, review: review::ReviewState) -> AppState {
        self.review = Some(review);
        self
    }

    /// The review queue, if the server keeps one.
    pub fn review(&self) -> Option<&review::ReviewState> {
        self.review.as_ref()
    }

    /// The running alerting, if the server evaluates alert rules.
    pub fn alerting(&self) -> Option<&alerting::AlertingHandle> {
        self.alerting.as_ref()
    }

    /// The prediction log, if the server keeps one.
    pub fn log(&self) -> Option<&vigil_runtime::PredictionLog> {
        self.log.as_ref()
    }

    /// The monitoring store, if the server has one.
    pub fn monitor_store(&self) -> Option<&Arc<dyn vigil_store::MonitorStore>> {
        self.monitor_store.as_ref()
    }

    /// How a stored bundle is checked before it is deployed (default:
    /// [`promote::BundleCheck::basic`]).
    #[must_use]
    pub fn with_bundle_check(mut self, check: promote::BundleCheck) -> AppState {
        self.bundle_check = check;
        self
    }

    /// The registry, if the server has one.
    pub fn registry(&self) -> Option<&Arc<dyn vigil_store::Registry>> {
        self.registry.as_ref()
    }

    /// The runtime.
    pub fn infer(&self) -> &Infer {
        &self.infer
    }

    /// The expected models and their status.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }
}

/// Deploys a verified bundle on the runtime (engine, golden check, swap) and records the
/// outcome for `/readyz`. The error is returned as well, for the caller to log.
pub async fn deploy(
    state: &AppState,
    bundle: BundleFiles,
) -> vigil_runtime::Result<Arc<vigil_runtime::Deployment>> {
    let name = bundle.manifest.model.name.clone();
    state.readiness.set(name.clone(), ModelStatus::Loading);
    let result = state.infer.deployments().load(bundle).await;
    let status = match &result {
        Ok(_) => ModelStatus::Ready,
        Err(e) => ModelStatus::Failed(e.to_string()),
    };
    state.readiness.set(name, status);
    result
}

/// The router: every route behind its guard, the body limit, and the request-id
/// middleware.
pub fn app(state: AppState) -> Router {
    let limit = state.limits.max_body_bytes;
    let mut router = Router::new();
    for r in routes::table() {
        // With auth off there is nothing to check: no guard on the request path at all.
        let handler = match &state.auth {
            Some(auth) => r.handler.layer(axum::middleware::from_fn_with_state(
                auth::Guard {
                    auth: Arc::clone(auth),
                    access: r.access,
                },
                auth::guard,
            )),
            None => r.handler,
        };
        router = router.route(r.path, handler);
    }
    let body_timeout = state.limits.body_timeout;
    let budget = (state.infer.memory().clone(), limit);
    router
        .fallback(routes::ops::no_route)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(budget, reserve_body))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_timeout,
        ))
        .layer(axum::middleware::from_fn(request_id::middleware))
        .layer(axum::middleware::from_fn(pages::security_headers))
        .with_state(state)
}

/// Reserves a request body's memory from the runtime's budget before the body is read: its
/// declared length, or the body limit when it declares none (chunked). What does not fit
/// now is refused with 503 and Retry-After, so that no number of concurrent uploads can hold
/// more than the budget. The reservation lasts until the answer is ready.
async fn reserve_body(
    axum::extract::State((budget, limit)): axum::extract::State<(
        vigil_runtime::MemoryBudget,
        usize,
    )>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let has_body = declared.is_some_and(|n| n > 0)
        || req
            .headers()
            .contains_key(axum::http::header::TRANSFER_ENCODING);
    if !has_body {
        return next.run(req).await;
    }
    // Over the body limit is the body limit's 413, not the budget's.
    let bytes = declared.unwrap_or(limit as u64).min(limit as u64);
    match budget.try_reserve(bytes, "the request body") {
        Ok(reserved) => {
            let response = next.run(req).await;
            drop(reserved);
            response
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Serves `app(state)` on `listener` until `shutdown` resolves, then stops accepting,
/// lets the requests in flight finish, shuts the runtime down (queues drained, threads
/// joined), and flushes the prediction log.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let infer = state.infer.clone();
    let log = state.log.clone();
    let review = state.review.clone();
    let limits = state.limits;
    let result = listen::serve_connections(listener, app(state), limits, shutdown).await;
    infer.shutdown().await;
    if let Some(review) = review {
        review.drain().await;
    }
    if let Some(log) = log {
        let pending = log.pending();
        let unlogged = log.close().await;
        if unlogged > 0 {
            return Err(std::io::Error::other(format!(
                "{unlogged} answered predictions could not be written to the prediction log \
                 (the store refused writes until the end); each is in this server's log as an \
                 \"Unlogged prediction.\" error with its whole record"
            )));
        }
        tracing::info!(flushed = pending, "Prediction log flushed.");
    }
    result
}
