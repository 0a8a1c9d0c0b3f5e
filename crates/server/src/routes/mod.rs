//! The route handlers, one module per API: `predict` (native), `ops` (health, readiness,
//! metrics, model list), `admin` (alias moves) and `v2` (Open Inference Protocol). Shared lookups live here.

pub mod admin;
pub mod ops;
pub mod predict;
pub mod v2;
pub mod v2_infer;

use std::sync::Arc;

use vigil_core::types::{ModelName, ModelVersion};
use vigil_runtime::{Deployment, Infer};

use crate::ApiError;

/// Parses a model name from the path; a name that cannot exist is not found.
pub fn model_name(raw: &str) -> Result<ModelName, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("model {raw:?} is not deployed")))
}

/// The deployment answering for `name` now, checked against `version` when one was asked
/// for: any other version is not found (only the deployed one is served).
pub fn deployment(
    infer: &Infer,
    name: &ModelName,
    version: Option<&str>,
) -> Result<Arc<Deployment>, ApiError> {
    let d = infer
        .deployments()
        .get(name)
        .ok_or_else(|| ApiError::not_found(format!("model {name} is not deployed")))?;
    check_version(name, d.version(), version)?;
    Ok(d)
}

/// Not found unless `asked` (when given) is `served`.
pub fn check_version(
    name: &ModelName,
    served: &ModelVersion,
    asked: Option<&str>,
) -> Result<(), ApiError> {
    match asked {
        Some(v) if v != served.as_str() => Err(ApiError::not_found(format!(
            "version {v} of model {name} is not deployed (version {served} is)"
        ))),
        _ => Ok(()),
    }
}
