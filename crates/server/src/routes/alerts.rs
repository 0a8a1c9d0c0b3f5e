//! `GET /v1/alerts`: what fired and when it resolved. The alerts pending or firing now and
//! the recent notifications come from the running alerting (memory); the history comes
//! from the store (`alert_events`), so it survives restarts.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use vigil_core::monitor::alert::{ActiveAlert, Notification};
use vigil_store::AlertEventRow;

use crate::alerting::DeliveryCounts;
use crate::routes::ApiQuery;
use crate::{ApiError, AppState};

/// Query of `GET /v1/alerts`.
#[derive(Debug, Deserialize)]
pub struct AlertsQuery {
    /// At most this many stored events (default 100, at most 10,000).
    pub limit: Option<usize>,
}

/// The answer of `GET /v1/alerts`.
#[derive(Debug, Serialize)]
pub struct AlertsResponse {
    /// Whether this server evaluates alert rules (`[alerts]` has rules).
    pub enabled: bool,
    /// Alerts pending or firing now, by rule and model.
    pub active: Vec<ActiveAlert>,
    /// Notifications since the server started (at most `alerts.keep`), newest first.
    pub recent: Vec<Notification>,
    /// Webhook deliveries since the server started; `null` when alerting is off.
    pub deliveries: Option<DeliveryCounts>,
    /// Stored notifications, newest first (at most `limit`); `null` when the server keeps
    /// no store.
    pub history: Option<Vec<AlertEventRow>>,
}

/// `GET /v1/alerts`
pub async fn alerts(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AlertsQuery>,
) -> Result<Json<AlertsResponse>, ApiError> {
    let limit = super::limit(q.limit, 100, 10_000)?;
    let history = match state.monitor_store() {
        Some(store) => Some(
            store
                .alert_events(limit)
                .await
                .map_err(|e| ApiError::Kind {
                    kind: e.kind(),
                    message: e.to_string(),
                })?,
        ),
        None => None,
    };
    let handle = state.alerting();
    Ok(Json(AlertsResponse {
        enabled: handle.is_some(),
        active: handle.map(|h| h.active()).unwrap_or_default(),
        recent: handle
            .map(|h| h.recent().into_iter().rev().collect())
            .unwrap_or_default(),
        deliveries: handle.map(|h| h.deliveries()),
        history,
    }))
}
