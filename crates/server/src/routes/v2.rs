//! The Open Inference Protocol (KServe v2) over HTTP: health, server and model metadata,
//! model readiness (`infer` is in `v2_infer`). Errors keep the protocol's `{ "error": msg }`
//! body (with Vigil's `kind` beside it).
//!
//! `/v2/models/{name}/stats` answers in Triton's statistics format, read from the runtime's
//! Triton-named counters (so the two can never disagree).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use vigil_core::bundle::{DType, TensorSpec};

use crate::routes::ops::readiness;
use crate::routes::{deployment, model_name};
use crate::{ApiError, AppState};

/// `GET /v2`
#[derive(Debug, Serialize)]
pub struct ServerMetadataResponse {
    /// The server's name.
    pub name: &'static str,
    /// Its version.
    pub version: &'static str,
    /// Protocol extensions supported.
    pub extensions: Vec<&'static str>,
}

/// A tensor's metadata.
#[derive(Debug, Serialize)]
pub struct TensorMetadata {
    /// The graph's name for it.
    pub name: String,
    /// The protocol's data type (`FP32`, ...).
    pub datatype: &'static str,
    /// Dimensions; `-1` where the model leaves one open.
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{name}[/versions/{version}]`
#[derive(Debug, Serialize)]
pub struct ModelMetadataResponse {
    /// The model.
    pub name: String,
    /// The versions served (only the deployed one).
    pub versions: Vec<String>,
    /// The model format.
    pub platform: &'static str,
    /// The model's inputs.
    pub inputs: Vec<TensorMetadata>,
    /// The model's outputs.
    pub outputs: Vec<TensorMetadata>,
}

/// `GET /v2/health/*` and `.../ready`
#[derive(Debug, Serialize)]
pub struct StatusResponse {
    /// The model, for a model's readiness.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Live or ready.
    pub ready: bool,
}

/// `GET /v2`
pub async fn server_metadata() -> Json<ServerMetadataResponse> {
    Json(ServerMetadataResponse {
        name: "vigil",
        version: env!("CARGO_PKG_VERSION"),
        extensions: vec!["binary_tensor_data"],
    })
}

/// `GET /v2/health/live`
pub async fn live() -> Json<StatusResponse> {
    Json(StatusResponse {
        name: None,
        ready: true,
    })
}

/// `GET /v2/health/ready`: as `/readyz`.
pub async fn ready(State(state): State<AppState>) -> Response {
    let ready = readiness(&state).ready;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(StatusResponse { name: None, ready })).into_response()
}

/// `GET /v2/models/{name}`
pub async fn model_metadata(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelMetadataResponse>, ApiError> {
    metadata(&state, &name, None)
}

/// `GET /v2/models/{name}/versions/{version}`
pub async fn model_metadata_versioned(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ModelMetadataResponse>, ApiError> {
    metadata(&state, &name, Some(&version))
}

fn metadata(
    state: &AppState,
    name: &str,
    version: Option<&str>,
) -> Result<Json<ModelMetadataResponse>, ApiError> {
    let name = model_name(name)?;
    let d = deployment(state.infer(), &name, version)?;
    let m = d.manifest();
    Ok(Json(ModelMetadataResponse {
        name: name.to_string(),
        versions: vec![d.version().to_string()],
        platform: "onnx",
        inputs: m.inputs.iter().map(tensor_metadata).collect(),
        outputs: m.outputs.iter().map(tensor_metadata).collect(),
    }))
}

/// `GET /v2/models/{name}/ready`: 200 when deployed, else 404.
pub async fn model_ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<StatusResponse>, ApiError> {
    model_status(&state, &name, None)
}

/// `GET /v2/models/{name}/versions/{version}/ready`
pub async fn model_ready_versioned(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<StatusResponse>, ApiError> {
    model_status(&state, &name, Some(&version))
}

fn model_status(
    state: &AppState,
    name: &str,
    version: Option<&str>,
) -> Result<Json<StatusResponse>, ApiError> {
    let name = model_name(name)?;
    deployment(state.infer(), &name, version)?;
    Ok(Json(StatusResponse {
        name: Some(name.to_string()),
        ready: true,
    }))
}

/// Triton's count-and-time pair.
#[derive(Debug, Serialize)]
pub struct StatDuration {
    /// How many.
    pub count: u64,
    /// Their cumulative time, in nanoseconds.
    pub ns: u64,
}

/// Triton's per-stage statistics.
#[derive(Debug, Serialize)]
pub struct InferenceStats {
    /// Successful requests.
    pub success: StatDuration,
    /// Failed requests (time not measured: 0).
    pub fail: StatDuration,
    /// Time in the queue of successful requests.
    pub queue: StatDuration,
    /// Engine executions and their time.
    pub compute_infer: StatDuration,
}

/// One model's statistics.
#[derive(Debug, Serialize)]
pub struct ModelStats {
    /// The model.
    pub name: String,
    /// The deployed version.
    pub version: String,
    /// Inferences performed (images and tiles).
    pub inference_count: u64,
    /// Engine executions (batches).
    pub execution_count: u64,
    /// Per-stage counts and times.
    pub inference_stats: InferenceStats,
}

/// `GET /v2/models/{name}[/versions/{version}]/stats`
#[derive(Debug, Serialize)]
pub struct StatsResponse {
    /// One entry: the deployed version.
    pub model_stats: Vec<ModelStats>,
}

/// `GET /v2/models/{name}/stats`
pub async fn model_stats(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<StatsResponse>, ApiError> {
    stats(&state, &name, None)
}

/// `GET /v2/models/{name}/versions/{version}/stats`
pub async fn model_stats_versioned(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<StatsResponse>, ApiError> {
    stats(&state, &name, Some(&version))
}

fn stats(
    state: &AppState,
    name: &str,
    version: Option<&str>,
) -> Result<Json<StatsResponse>, ApiError> {
    use vigil_runtime::metrics as m;
    let name = model_name(name)?;
    let d = deployment(state.infer(), &name, version)?;
    let text = state.infer().metrics().render();
    let labels = [("model", name.as_str()), ("version", d.version().as_str())];
    let read = |metric: &str| counter(&text, metric, &labels);
    let success = read(m::NV_INFERENCE_REQUEST_SUCCESS);
    let execs = read(m::NV_INFERENCE_EXEC_COUNT);
    Ok(Json(StatsResponse {
        model_stats: vec![ModelStats {
            name: name.to_string(),
            version: d.version().to_string(),
            inference_count: read(m::NV_INFERENCE_COUNT),
            execution_count: execs,
            inference_stats: InferenceStats {
                success: StatDuration {
                    count: success,
                    ns: 0,
                },
                fail: StatDuration {
                    count: read(m::NV_INFERENCE_REQUEST_FAILURE),
                    ns: 0,
                },
                queue: StatDuration {
                    count: success,
                    ns: read(m::NV_INFERENCE_QUEUE_DURATION_US).saturating_mul(1000),
                },
                compute_infer: StatDuration {
                    count: execs,
                    ns: read(m::NV_INFERENCE_COMPUTE_INFER_DURATION_US).saturating_mul(1000),
                },
            },
        }],
    }))
}

/// The sum of a counter's samples whose labels include every pair in `labels`, read from
/// the Prometheus text (whole numbers: these counters count events and microseconds).
fn counter(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    let total: f64 = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            let matches = n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum();
    // Counters are non-negative and far below 2^53.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = total.max(0.0).round() as u64;
    n
}

fn tensor_metadata(t: &TensorSpec) -> TensorMetadata {
    TensorMetadata {
        name: t.name.clone(),
        datatype: datatype(t.dtype),
        shape: t.shape.clone(),
    }
}

/// The protocol's name for an element type.
fn datatype(d: DType) -> &'static str {
    match d {
        DType::Float32 => "FP32",
        DType::Float16 => "FP16",
        DType::Float64 => "FP64",
        DType::Int8 => "INT8",
        DType::Int16 => "INT16",
        DType::Int32 => "INT32",
        DType::Int64 => "INT64",
        DType::Uint8 => "UINT8",
        DType::Uint16 => "UINT16",
        DType::Bool => "BOOL",
        DType::String => "BYTES",
    }
}
