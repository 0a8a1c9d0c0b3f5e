//! The engine's errors. They are `Clone` because one failure fans out to every request of a
//! batch.

use std::path::PathBuf;

use vigil_core::ErrorKind;

/// What went wrong while preparing or running a model.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The ONNX Runtime library is not where we looked.
    #[error(
        "the ONNX Runtime library was not found (looked in: {}). Run `scripts/setup-onnxruntime`, set `engine.onnxruntime_library` in the config, or set ORT_DYLIB_PATH",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    LibraryNotFound {
        /// Every path tried, in order.
        searched: Vec<PathBuf>,
    },
    /// The library was found but could not be loaded.
    #[error("the ONNX Runtime library at {path} cannot be loaded: {reason}")]
    LibraryLoad {
        /// The library.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The model needs something this engine does not offer.
    #[error("the engine cannot run this model: {0}")]
    Unsupported(String),
    /// The requested device (a GPU) cannot be used on this machine or with this library.
    #[error("the device cannot be used: {0}")]
    Device(String),
    /// The engine refused the model.
    #[error("the engine cannot load the model: {0}")]
    Load(String),
    /// Running a batch failed.
    #[error("inference failed: {0}")]
    Run(String),
    /// The image could not be decoded.
    #[error("cannot decode the image: {0}")]
    Decode(String),
    /// The image is bigger than the limits allow.
    #[error("image too large: {0}")]
    TooLarge(String),
    /// A preprocessing step cannot be applied to this image.
    #[error("preprocessing failed: {0}")]
    Preprocess(String),
    /// A tensor does not have the shape the model takes.
    #[error("wrong input tensor: {0}")]
    Shape(String),
    /// A golden case did not reproduce.
    #[error("golden case {case}: {detail}")]
    Golden {
        /// The golden input.
        case: String,
        /// What differed.
        detail: String,
    },
}

impl Error {
    /// What a caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::LibraryNotFound { .. } | Error::LibraryLoad { .. } | Error::Device(_) => {
                ErrorKind::Unavailable
            }
            Error::Unsupported(_)
            | Error::Load(_)
            | Error::Decode(_)
            | Error::TooLarge(_)
            | Error::Preprocess(_)
            | Error::Shape(_)
            | Error::Golden { .. } => ErrorKind::Invalid,
            Error::Run(_) => ErrorKind::Internal,
        }
    }
}

/// `Result` with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
