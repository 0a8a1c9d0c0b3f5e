//! What can go wrong while training, mapped onto the shared [`ErrorKind`].

use std::path::PathBuf;

use vigil_core::ErrorKind;

/// Result of training operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A training error. Data problems are all found before the first step runs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The dataset cannot be used; `problems` lists what is wrong (the first ones).
    #[error("the dataset {} cannot be used for training:\n{}", path.display(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Data {
        /// The manifest or folder.
        path: PathBuf,
        /// Each problem, in words.
        problems: Vec<String>,
    },
    /// The dataset path does not exist.
    #[error("no dataset at {}", .0.display())]
    NotFound(PathBuf),
    /// A setting is out of range (epochs 0, unknown architecture, bad learning rate...).
    #[error("{0}")]
    Config(String),
    /// The output folder already exists.
    #[error("{} already exists; choose another --out or remove it", .0.display())]
    Exists(PathBuf),
    /// The external trainer command failed or wrote no usable model.
    #[error("the external trainer {0}")]
    External(String),
    /// Training diverged (a loss that is not a number).
    #[error("training diverged at epoch {epoch}: the loss is {loss}; try a lower --lr")]
    Diverged {
        /// The epoch (1-based).
        epoch: u32,
        /// The loss value.
        loss: f64,
    },
    /// The bundle given to `--init` is unusable.
    #[error("cannot fine-tune from {}: {reason}", path.display())]
    Init {
        /// The bundle.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Packaging failed.
    #[error(transparent)]
    Bundle(#[from] vigil_core::bundle::Error),
    /// The engine (golden outputs, export check) failed.
    #[error(transparent)]
    Engine(#[from] vigil_engine::Error),
    /// Reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Error {
    /// What the caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Data { .. }
            | Error::Config(_)
            | Error::Diverged { .. }
            | Error::Init { .. }
            | Error::External(_) => ErrorKind::Invalid,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Exists(_) => ErrorKind::Conflict,
            Error::Bundle(e) => e.kind(),
            Error::Engine(e) => e.kind(),
            Error::Io { .. } => ErrorKind::Unavailable,
        }
    }

    /// An I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
