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

pub mod alert;
pub mod stats;

pub use stats::{ImageStats, STAT_DESCRIPTIONS, STAT_NAMES};

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
    /// The request id (also the response header); unique in the log.
    pub request_id: String,
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
