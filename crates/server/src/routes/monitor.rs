//! The monitoring API: the live picture of a deployed model (`GET
//! /v1/models/{name}/monitoring`), its stored drift windows (`GET /v1/models/{name}/drift`)
//! and one logged prediction (`GET /v1/predictions/{request_id}`).

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vigil_core::monitor::PredictionRecord;
use vigil_runtime::{DriftWindow, LiveSummary, LiveWindow};

use crate::routes::ApiQuery;
use crate::routes::{deployment, model_name};
use crate::{ApiError, AppState};

/// Query of `GET /v1/models/{name}/monitoring`.
#[derive(Debug, Deserialize)]
pub struct MonitoringQuery {
    /// The window of recent predictions: a count (`200`) or a duration (`5m`, `1h`).
    /// Default 200.
    pub window: Option<String>,
}

/// What the reference profile says about drift windows.
#[derive(Debug, Serialize)]
pub struct ReferenceSummary {
    /// Images the reference was computed from.
    pub images: usize,
    /// What it was computed from.
    pub source: String,
    /// Images per drift window (its thresholds are calibrated for this size).
    pub window: usize,
    /// Whether it has embeddings (MMD drift and per-image OOD scores).
    pub embeddings: bool,
}

/// The answer of `GET /v1/models/{name}/monitoring`.
#[derive(Debug, Serialize)]
pub struct MonitoringResponse {
    /// The model.
    pub model: String,
    /// The deployed version.
    pub version: String,
    /// The window asked for, as understood.
    pub window: String,
    /// Class shares, confidence, flagged and OOD shares over that window.
    pub live: LiveSummary,
    /// The bundle's reference profile; `null` when the bundle has none (no drift or OOD
    /// monitoring).
    pub reference: Option<ReferenceSummary>,
    /// The latest drift window; `null` until one was evaluated.
    pub latest_drift: Option<DriftWindow>,
}

/// `GET /v1/models/{name}/monitoring`
pub async fn monitoring(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<MonitoringQuery>,
) -> Result<Json<MonitoringResponse>, ApiError> {
    let name = model_name(&name)?;
    let d = deployment(state.infer(), &name, None)?;
    let raw = q.window.unwrap_or_else(|| "200".to_owned());
    let window = super::window::count_or_span(&raw)?;
    let m = d.monitor();
    Ok(Json(MonitoringResponse {
        model: name.to_string(),
        version: d.version().to_string(),
        window: match window {
            LiveWindow::Count(n) => format!("last {n} predictions"),
            LiveWindow::Time(t) => format!("last {}", humantime::format_duration(t)),
        },
        live: m.summary(window),
        reference: m.reference().map(|r| ReferenceSummary {
            images: r.images,
            source: r.source.clone(),
            window: r.drift.window,
            embeddings: r.embedding.is_some(),
        }),
        latest_drift: m.latest_window().map(|w| (*w).clone()),
    }))
}

/// Query of `GET /v1/models/{name}/drift`.
#[derive(Debug, Deserialize)]
pub struct DriftQuery {
    /// Only windows evaluated at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only windows evaluated before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// At most this many (default 100, 1 to 10,000; outside: 400).
    pub limit: Option<usize>,
}

/// One stored drift window.
#[derive(Debug, Serialize)]
pub struct DriftWindowResponse {
    /// The version monitored.
    pub version: String,
    /// When it was evaluated.
    pub ended_at: DateTime<Utc>,
    /// Images in the window.
    pub images: u64,
    /// Whether any signal was over its threshold.
    pub drift: bool,
    /// The full report (signals, statistics, thresholds, summary).
    pub report: serde_json::Value,
}

/// The answer of `GET /v1/models/{name}/drift`.
#[derive(Debug, Serialize)]
pub struct DriftResponse {
    /// The model.
    pub model: String,
    /// Windows, oldest first.
    pub windows: Vec<DriftWindowResponse>,
}

/// `GET /v1/models/{name}/drift`: stored drift windows (503 without a store).
pub async fn drift(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<DriftQuery>,
) -> Result<Json<DriftResponse>, ApiError> {
    let name = model_name(&name)?;
    let store = store(&state)?;
    let limit = super::limit(q.limit, 100, 10_000)?;
    let rows = store
        .drift_windows(name.as_str(), q.since, q.until, limit)
        .await
        .map_err(store_error)?;
    Ok(Json(DriftResponse {
        model: name.to_string(),
        windows: rows
            .into_iter()
            .map(|r| DriftWindowResponse {
                version: r.version,
                ended_at: r.ended_at,
                images: r.images,
                drift: r.drift,
                report: r.report,
            })
            .collect(),
    }))
}

/// `GET /v1/predictions/{request_id}`: one logged prediction (404 when unknown).
pub async fn prediction(
    State(state): State<AppState>,
    Path(request_id): Path<String>,
) -> Result<Json<PredictionRecord>, ApiError> {
    let store = store(&state)?;
    store
        .prediction(&request_id)
        .await
        .map_err(store_error)?
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no prediction with request id {request_id:?} is in the log"
            ))
        })
}

fn store(state: &AppState) -> Result<&std::sync::Arc<dyn vigil_store::MonitorStore>, ApiError> {
    state.monitor_store().ok_or_else(|| ApiError::Kind {
        kind: vigil_core::ErrorKind::Unavailable,
        message: "this server keeps no prediction log (no store)".into(),
    })
}

fn store_error(e: vigil_store::Error) -> ApiError {
    ApiError::Kind {
        kind: e.kind(),
        message: e.to_string(),
    }
}
