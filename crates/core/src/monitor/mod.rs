//! Monitoring's domain (DESIGN.md section 4): what is observed of each prediction, the
//! record the prediction log keeps, the reference profile a bundle carries, drift windows
//! and alert rules. Pure data and decisions, like the rest of this crate; the statistics
//! themselves are in [`crate::drift`]. Collecting observations, writing the log and running
//! the windows happen in `vigil-runtime`, storage in `vigil-store`.
//!
//! ```text
//! image ─► Pipeline (engine) ─► ImageStats ┐
//! model ─► probabilities, embedding ───────┴► Observation ─► Window ─► WindowReport ─► alerts
//!                                               │
//!                                               └► PredictionRecord ─► prediction log
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ErrorKind;
use crate::drift::DriftError;

pub mod alert;
pub mod reference;
pub mod report;
pub mod stats;
#[cfg(test)]
mod synthetic;
pub mod window;

pub use reference::{
    DriftSettings, EmbeddingProfile, OodScorer, PredictionProfile, REFERENCE_FILE, ReferenceConfig,
    ReferenceProfile, SignalThreshold, StatSample,
};
pub use report::{DriftReport, render_html as render_drift_html};
pub use stats::{ImageStats, STAT_DESCRIPTIONS, STAT_NAMES};
pub use window::{SignalResult, WindowReport, evaluate};

/// What can be wrong when a reference profile is built, read or used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MonitorError {
    /// A drift statistic refused its input.
    #[error(transparent)]
    Drift(#[from] DriftError),
    /// Nothing to work on.
    #[error("no {what} given")]
    Empty {
        /// What is missing (`"observations"`, `"labels"`, `"window"`).
        what: &'static str,
    },
    /// Too few observations to keep a reference sample and calibrate thresholds.
    #[error(
        "{got} observations are too few for windows of {window} images: a reference needs at \
         least {needed} (half is kept as the reference sample, half calibrates the thresholds)"
    )]
    TooFewObservations {
        /// The least accepted.
        needed: usize,
        /// What was given.
        got: usize,
        /// The window size asked for.
        window: usize,
    },
    /// An observation's probabilities do not match the labels.
    #[error("observation {index} has {actual} probabilities but there are {expected} labels")]
    LabelMismatch {
        /// Position of the observation.
        index: usize,
        /// Number of labels.
        expected: usize,
        /// Number of probabilities.
        actual: usize,
    },
    /// An observation's predicted class is not a label.
    #[error("observation {index} predicts class {predicted} but there are {labels} labels")]
    PredictedOutOfRange {
        /// Position of the observation.
        index: usize,
        /// The predicted index.
        predicted: usize,
        /// Number of labels.
        labels: usize,
    },
    /// An observation's embedding has another length than the others (or the reference's).
    #[error("observation {index} has a {actual}-dimensional embedding; expected {expected}")]
    EmbeddingDimension {
        /// Position of the observation.
        index: usize,
        /// The reference's dimension.
        expected: usize,
        /// The observation's.
        actual: usize,
    },
    /// Some observations carry a part (statistics, embedding) and others do not.
    #[error(
        "observation {index} has no {part} while observation 0 has (or the reverse): a \
         reference needs it on all observations or on none"
    )]
    Incomplete {
        /// Position of the first observation that differs from observation 0.
        index: usize,
        /// `"stats"` or `"embedding"`.
        part: &'static str,
    },
    /// A value that must be finite is not.
    #[error("observation {index} has a non-finite {what}")]
    NonFinite {
        /// Position of the observation.
        index: usize,
        /// Which value.
        what: &'static str,
    },
    /// A setting of [`ReferenceConfig`] outside its domain.
    #[error("invalid reference setting `{name}`: {reason}")]
    InvalidConfig {
        /// The setting.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A reference profile that parses but breaks a rule (wrong format, inconsistent parts).
    #[error("invalid reference profile: {0}")]
    InvalidProfile(String),
    /// `reference.json` is not JSON of a reference profile.
    #[error("{REFERENCE_FILE} cannot be read: {0}")]
    Json(String),
    /// A profile could not be written: a bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl MonitorError {
    /// What a caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            MonitorError::Drift(e) => e.kind(),
            MonitorError::Internal(_) => ErrorKind::Internal,
            MonitorError::Empty { .. }
            | MonitorError::TooFewObservations { .. }
            | MonitorError::LabelMismatch { .. }
            | MonitorError::PredictedOutOfRange { .. }
            | MonitorError::EmbeddingDimension { .. }
            | MonitorError::Incomplete { .. }
            | MonitorError::NonFinite { .. }
            | MonitorError::InvalidConfig { .. }
            | MonitorError::InvalidProfile(_)
            | MonitorError::Json(_) => ErrorKind::Invalid,
        }
    }
}

/// What monitoring sees of one prediction (one image, or one whole film's verdict).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Statistics of the decoded image; `None` for a tensor request (no image to measure).
    pub stats: Option<ImageStats>,
    /// The model's embedding of the image (of the verdict's tile for a film), when the
    /// bundle declares one.
    pub embedding: Option<Vec<f32>>,
    /// Class probabilities (of the verdict's row).
    pub probabilities: Vec<f32>,
    /// Index of the decided label.
    pub predicted: usize,
    /// The decision's confidence.
    pub confidence: f32,
    /// Mahalanobis distance of the embedding to the reference, when scored.
    pub ood_distance: Option<f64>,
    /// Whether that distance is past the reference's threshold.
    pub out_of_distribution: bool,
}

/// One row of the prediction log: enough to trace a decision back to the model version,
/// the input and the reason it was (or was not) flagged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionRecord {
    /// The request id, made by the server (also the response header); unique in the log.
    pub request_id: String,
    /// The client's own id for the request (its `x-request-id` or `x-correlation-id`), when it
    /// sent one: recorded beside the server's id, never used as a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// When the answer was produced.
    pub at: DateTime<Utc>,
    /// The model.
    pub model: String,
    /// The version that answered.
    pub version: String,
    /// That version's bundle identity (SHA-256 of its manifest).
    pub bundle: String,
    /// Where the prediction came from: `serve`, `score`, `demo`.
    pub source: String,
    /// The decided label.
    pub label: String,
    /// The decision's confidence.
    pub confidence: f32,
    /// Probabilities by label, in the bundle's label order.
    pub probabilities: Vec<f32>,
    /// Why the prediction was flagged (`review_band`, `out_of_distribution`, ...); empty
    /// when it was not.
    pub flags: Vec<String>,
    /// Per-image statistics.
    pub stats: Option<ImageStats>,
    /// The embedding (kept whole: 128 floats for weldnet-s, 512 bytes).
    pub embedding: Option<Vec<f32>>,
    /// Mahalanobis distance of the embedding to the reference.
    pub ood_distance: Option<f64>,
    /// Decode and preprocessing time, microseconds.
    pub preprocess_us: u64,
    /// Queue time, microseconds.
    pub queue_us: u64,
    /// Engine time, microseconds.
    pub inference_us: u64,
    /// Admission to answer, microseconds.
    pub total_us: u64,
}
