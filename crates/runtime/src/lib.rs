//! Tokio orchestration of real-time inference, transport-agnostic: the request path from
//! encoded bytes (or an FP32 tensor) to a decision, and the live table of deployed models.
//!
//! ```text
//! caller ─► Infer::classify(model, bytes, deadline)
//!   1 admission   Semaphore::try_acquire_owned → Error::Overloaded; never queue without a limit
//!   2 preprocess  N OS threads fed by a bounded channel (vigil_engine::preprocess::Pipeline)
//!   3 enqueue     one queue per deployed version: Entry { tiles, respond, enqueued_at, deadline }
//!   4 batch       one task owns the queue; max batch size / max queue delay; skips cancelled
//!                 and expired entries; hands batches on over mpsc::channel(1)
//!   5 run         a dedicated std::thread per model instance owns the Backend
//!   6 reply       outputs split per entry; preprocess/queue/inference times ride along
//! ```
//!
//! - [`infer`]: the [`Infer`] handle (admission, preprocess pool, enqueue, await, decide).
//! - [`queue`]: batch formation ([`queue::next_batch`], a pure function of the clock) and
//!   the task that owns each queue.
//! - `model`: the model thread, joined when its handle drops.
//! - [`deploy`]: the live [`Deployments`] table: load, golden check, atomic swap, rollback.
//! - [`metrics`]: every metric name, its buckets and its recording helpers.
//!
//! It must not speak HTTP (that is the `server` crate's job), touch SQL or object storage
//! (`store`), or decode images itself (`engine`'s `Pipeline` does, on the preprocess pool).
//! Shutdown: [`Infer::shutdown`] stops admission, waits for admitted requests, drains the
//! queues, then joins every thread.

pub mod deploy;
pub mod infer;
pub mod memory;
pub mod metrics;
mod model;
pub mod monitor;
pub mod queue;

use std::sync::Arc;
use std::time::Duration;

use vigil_core::ErrorKind;
use vigil_core::types::{ModelName, ModelVersion};

pub use deploy::{BundleFiles, DeployConfig, Deployment, Deployments};
pub use infer::{Classified, Infer, Timings};
pub use memory::{MemoryBudget, Reservation};
pub use metrics::Metrics;
pub use monitor::{
    DriftWindow, LiveSummary, LiveWindow, LogConfig, MonitorConfig, MonitorSink, OnFull,
    OnStoreError, PredictionLog, VersionMonitor,
};

/// What went wrong on the request path or while deploying a model. `Clone`, because one
/// engine failure fans out to every request of a batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Too many requests are in flight; the caller should retry later.
    #[error("too many requests in flight (at most {max_in_flight}); retry later")]
    Overloaded {
        /// The admission limit.
        max_in_flight: usize,
    },
    /// The request's deadline passed before it was answered.
    #[error("the deadline passed while the request was {stage}")]
    DeadlineExceeded {
        /// Where the request was: `waiting` (preprocessing, queued or running), `queued`
        /// (dropped from the queue without running) or `logging` (waiting for room in a
        /// full prediction log).
        stage: &'static str,
    },
    /// The runtime is shutting down and admits nothing new.
    #[error("shutting down; no new requests are accepted")]
    ShuttingDown,
    /// The prediction log's store refuses writes (a full disk, a dead database) and the
    /// policy is to refuse what cannot be logged.
    #[error(
        "the prediction log cannot be written ({reason}); predictions are refused until it can \
         (monitoring.log.on_store_error)"
    )]
    LogUnavailable {
        /// The store's last error.
        reason: String,
    },
    /// The input is larger than the server will ever take (413).
    #[error("too large: {0}")]
    TooLarge(String),
    /// The memory budget has no room for this request now; retry shortly (503).
    #[error(
        "the server's memory budget ({} MiB, server.memory_budget) has no room now for {what} \
         (about {} MiB); retry shortly",
        budget >> 20,
        needed.div_ceil(1 << 20)
    )]
    OverBudget {
        /// What needed the memory: "the request body", "the image".
        what: String,
        /// Bytes it needed.
        needed: u64,
        /// The whole budget, in bytes.
        budget: u64,
    },
    /// No version of this model is deployed.
    #[error("model {model} is not deployed")]
    ModelNotFound {
        /// The model asked for.
        model: ModelName,
    },
    /// The request itself is wrong (a tensor of the wrong shape, a bundle without a model).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The engine failed: decoding, preprocessing, loading or running.
    #[error(transparent)]
    Engine(#[from] vigil_engine::Error),
    /// A new version's golden cases did not reproduce, so it was not deployed.
    #[error("{model} {version} was not deployed: {source}")]
    GoldenCheck {
        /// The model.
        model: ModelName,
        /// The version that failed.
        version: ModelVersion,
        /// What differed.
        source: vigil_engine::Error,
    },
    /// The bundle's files are unusable.
    #[error("bundle: {0}")]
    Bundle(Arc<vigil_core::bundle::Error>),
    /// The model's outputs cannot be turned into a decision (wrong length, not finite).
    #[error("the model's output is not a decision: {0}")]
    BadOutput(String),
    /// A broken invariant: an engine or preprocessing panic, a thread that is gone.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// What a caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            // A missed deadline means the runtime was too busy to answer in time.
            Error::Overloaded { .. } | Error::DeadlineExceeded { .. } => ErrorKind::Overloaded,
            Error::ShuttingDown | Error::LogUnavailable { .. } | Error::OverBudget { .. } => {
                ErrorKind::Unavailable
            }
            Error::TooLarge(_) => ErrorKind::Invalid,
            Error::ModelNotFound { .. } => ErrorKind::NotFound,
            Error::Invalid(_) | Error::GoldenCheck { .. } => ErrorKind::Invalid,
            Error::Engine(e) => e.kind(),
            Error::Bundle(e) => e.kind(),
            Error::BadOutput(_) | Error::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl From<vigil_core::bundle::Error> for Error {
    fn from(e: vigil_core::bundle::Error) -> Self {
        Error::Bundle(Arc::new(e))
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How one deployed version's queue forms batches (after Triton's dynamic batcher).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most images per engine call; each tile of a whole radiograph and each image of a
    /// tensor batch counts as one. A single request with more tiles runs alone, in engine
    /// calls of at most this many. Default 8: weldnet-class CNNs on a CPU gain little past
    /// 8 images per call, while a larger batch makes every request in it wait longer.
    pub max_batch_size: usize,
    /// How long a batch that is not full may wait for more requests, counted from when its
    /// oldest request was queued. Default 0 (as in Triton): run what is queued as soon as the
    /// engine is free; under load batches still grow, because requests pile up while the
    /// engine runs the previous batch. A few milliseconds trade latency for throughput.
    pub max_queue_delay: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch_size: 8,
            max_queue_delay: Duration::ZERO,
        }
    }
}

/// Admission, preprocessing and time limits of the request path, shared by every model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferConfig {
    /// Requests admitted at once, across all models (preprocessing, queued or running).
    /// One more is refused at once with [`Error::Overloaded`] instead of waiting. Default 64.
    pub max_in_flight: usize,
    /// OS threads that decode and preprocess images (CPU-heavy work kept off the async
    /// runtime). 0: one per available core. Default 0.
    pub preprocess_threads: usize,
    /// The longest a request may take, end to end, when its caller gives no earlier
    /// deadline; past it the request fails with [`Error::DeadlineExceeded`]. Default 30 s:
    /// a whole film of several hundred tiles on a busy CPU must still fit.
    pub request_timeout: Duration,
    /// Bytes that request bodies being received and images being decoded may hold together
    /// ([`MemoryBudget`]); 0: no limit. Default 768 MiB: with the default limits, 64
    /// worst-case requests at once keep the process under 1 GB.
    pub memory_budget: u64,
}

impl Default for InferConfig {
    fn default() -> Self {
        InferConfig {
            max_in_flight: 64,
            preprocess_threads: 0,
            request_timeout: Duration::from_secs(30),
            memory_budget: 768 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_what_a_caller_can_do() {
        let cases = [
            (
                Error::Overloaded { max_in_flight: 1 },
                ErrorKind::Overloaded,
            ),
            (
                Error::DeadlineExceeded { stage: "queued" },
                ErrorKind::Overloaded,
            ),
            (Error::ShuttingDown, ErrorKind::Unavailable),
            (
                Error::ModelNotFound {
                    model: "weldnet".parse().expect("a valid name"),
                },
                ErrorKind::NotFound,
            ),
            (Error::Invalid("x".into()), ErrorKind::Invalid),
            (
                Error::Engine(vigil_engine::Error::Decode("x".into())),
                ErrorKind::Invalid,
            ),
            (
                Error::Engine(vigil_engine::Error::Run("x".into())),
                ErrorKind::Internal,
            ),
            (Error::Internal("x".into()), ErrorKind::Internal),
        ];
        for (e, kind) in cases {
            assert_eq!(e.kind(), kind, "{e}");
        }
    }
}
