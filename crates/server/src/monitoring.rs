//! Monitoring for the server: the prediction log's store adapter and the one place a
//! handler logs an answered prediction.
//!
//! The runtime writes through [`vigil_runtime::MonitorSink`]; [`StoreSink`] implements it
//! over the store's [`vigil_store::MonitorStore`] (SQLite now, PostgreSQL later), so the
//! runtime never sees SQL.

use std::sync::Arc;

use async_trait::async_trait;
use vigil_core::monitor::PredictionRecord;
use vigil_runtime::{DriftWindow, MonitorSink};

use crate::{ApiError, AppState};

/// The prediction log's sink: the store.
#[derive(Debug, Clone)]
pub struct StoreSink(pub Arc<dyn vigil_store::MonitorStore>);

#[async_trait]
impl MonitorSink for StoreSink {
    async fn append_predictions(&self, records: &[PredictionRecord]) -> Result<usize, String> {
        self.0
            .append_predictions(records)
            .await
            .map(|o| usize::try_from(o.inserted).unwrap_or(usize::MAX))
            .map_err(|e| e.to_string())
    }

    async fn append_window(&self, w: &DriftWindow) -> Result<(), String> {
        let report = serde_json::to_value(&w.report).map_err(|e| e.to_string())?;
        self.0
            .append_drift_window(&vigil_store::DriftWindowRow {
                model: w.model.clone(),
                version: w.version.clone(),
                ended_at: w.ended_at,
                images: w.report.images as u64,
                drift: w.report.drift,
                report,
            })
            .await
            .map_err(|e| e.to_string())
    }
}

/// Logs one answered prediction's record under the log's overload policy. Without a log (no
/// store) nothing is kept. A refused record fails the request: nothing is answered that the
/// policy says must be logged. Under `block` the wait for room ends at the request's deadline
/// (`server.request_timeout` from admission, `elapsed` of it gone): a stalled store fails
/// requests with 503 rather than holding them, and a graceful shutdown behind them, forever.
/// The one caller is `review::record_prediction`, which decides the record's flags.
pub(crate) async fn submit(
    state: &AppState,
    record: PredictionRecord,
    elapsed: std::time::Duration,
) -> Result<(), ApiError> {
    let Some(log) = state.log() else {
        return Ok(());
    };
    let limit = state.infer().request_timeout().saturating_sub(elapsed);
    log.submit_within(record, limit)
        .await
        .map_err(|e| ApiError::Kind {
            kind: vigil_core::ErrorKind::Unavailable,
            message: format!("the prediction could not be logged: {e}"),
        })
}
