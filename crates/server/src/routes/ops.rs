//! Operations routes: `/healthz` (the process answers), `/readyz` (every expected model is
//! deployed and its golden cases reproduced), `/metrics` (Prometheus text) and
//! `GET /v1/models` (what is deployed), plus the JSON 404 for unknown routes.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::{ApiError, AppState, ModelStatus};

/// Prometheus' classic text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The answer of `/healthz`.
#[derive(Debug, Serialize)]
pub struct HealthResponse {
    /// Always `live`.
    pub status: &'static str,
}

/// The answer of `/readyz`.
#[derive(Debug, Serialize)]
pub struct ReadyResponse {
    /// Whether requests can be served.
    pub ready: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Each expected model: `ready`, `loading`, or `failed: <why>`.
    pub models: BTreeMap<String, String>,
}

/// One deployed model in `GET /v1/models`.
#[derive(Debug, Serialize)]
pub struct ModelResponse {
    /// The model.
    pub name: String,
    /// The deployed version.
    pub version: String,
    /// Its bundle identity (SHA-256 of the manifest).
    pub bundle: String,
    /// The engine that runs it.
    pub engine: String,
    /// Its labels, in output order.
    pub labels: Vec<String>,
}

/// The answer of `GET /v1/models`.
#[derive(Debug, Serialize)]
pub struct ModelsResponse {
    /// Every deployed model, by name.
    pub models: Vec<ModelResponse>,
}

/// `GET /healthz`: the process is up and answering.
pub async fn healthz() -> Json<HealthResponse> {
    Json(HealthResponse { status: "live" })
}

/// `GET /readyz`: 200 when ready, else 503 saying why.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let report = readiness(&state);
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

/// Whether the server can serve: not shutting down, at least one expected model, and every
/// expected model deployed after its golden check.
pub fn readiness(state: &AppState) -> ReadyResponse {
    let expected = state.readiness().snapshot();
    let deployments = state.infer().deployments();
    let models: BTreeMap<String, String> = expected
        .iter()
        .map(|(name, status)| {
            let text = match status {
                ModelStatus::Ready if deployments.get(name).is_some() => "ready".to_owned(),
                ModelStatus::Ready => "failed: no longer deployed".to_owned(),
                ModelStatus::Loading => "loading".to_owned(),
                ModelStatus::Failed(why) => format!("failed: {why}"),
            };
            (name.to_string(), text)
        })
        .collect();
    let reason = if state.infer().is_shutting_down() {
        Some("shutting down".to_owned())
    } else if models.is_empty() {
        Some(
            "no model to serve: no model in the registry has a production alias \
             (set one with `vigil models alias set NAME production VERSION`)"
                .to_owned(),
        )
    } else {
        let waiting: Vec<&str> = models
            .iter()
            .filter(|(_, s)| *s != "ready")
            .map(|(n, _)| n.as_str())
            .collect();
        (!waiting.is_empty())
            .then(|| format!("not ready: {}", waiting.join(", ")))
            .or_else(|| {
                // While the prediction log cannot be written, predictions are refused (or
                // answered unlogged, by monitoring.log.on_store_error): either way a load
                // balancer should send traffic elsewhere.
                state
                    .log()
                    .and_then(vigil_runtime::PredictionLog::health)
                    .map(|e| format!("the prediction log cannot be written: {e}"))
            })
    };
    ReadyResponse {
        ready: reason.is_none(),
        reason,
        models,
    }
}

/// `GET /metrics`: the runtime's metrics in Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut r = state.infer().metrics().render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROMETHEUS_TEXT),
    );
    r
}

/// `GET /v1/models`: the deployed models.
pub async fn models(State(state): State<AppState>) -> Json<ModelsResponse> {
    let models = state
        .infer()
        .deployments()
        .list()
        .iter()
        .map(|d| ModelResponse {
            name: d.name().to_string(),
            version: d.version().to_string(),
            bundle: d.digest().to_string(),
            engine: d.engine().to_owned(),
            labels: d
                .manifest()
                .model
                .labels
                .iter()
                .map(ToString::to_string)
                .collect(),
        })
        .collect();
    Json(ModelsResponse { models })
}

/// Any route not defined: a JSON 404.
pub async fn no_route() -> ApiError {
    ApiError::not_found("no such route; see /v1/models and /v2 for what is served")
}
