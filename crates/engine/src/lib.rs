//! Synchronous compute: declared preprocessing and the model engines. Never imports tokio.
//!
//! - [`preprocess`] turns encoded image bytes into the model's input tensor, driven by the
//!   bundle's declared steps; it is the only implementation anywhere in Vigil.
//! - [`backend`] is the engine interface (prepare once, run batches); [`load`] prepares a model
//!   on the engine an [`EngineConfig`] names. [`ort`] is the default engine (ONNX Runtime,
//!   loaded at run time, optionally on a GPU with the `cuda` feature); `tract` (pure Rust, the
//!   `tract` feature) is the fallback without a native library and the tests' cross-check.
//! - [`golden`] records and checks a bundle's golden cases through both.
//!
//! ```
//! use vigil_engine::preprocess::synthetic_png;
//! let png = synthetic_png(8, 8, 1, 42);
//! assert_eq!(&png[1..4], b"PNG");
//! ```

pub mod backend;
pub mod config;
mod error;
pub mod golden;
pub mod observe;
pub mod ort;
pub mod preprocess;
#[cfg(feature = "tract")]
pub mod tract;

use vigil_core::bundle::Manifest;

pub use backend::{Backend, Batch, OutputTensor, Outputs};
pub use config::{Device, EngineConfig, EngineKind};
pub use error::{Error, Result};
pub use ort::OrtBackend;
#[cfg(feature = "tract")]
pub use tract::TractBackend;

/// Prepares `model` (the bytes of `model.onnx`) on the engine `cfg.kind` names.
pub fn load(model: &[u8], manifest: &Manifest, cfg: &EngineConfig) -> Result<Box<dyn Backend>> {
    match cfg.kind {
        EngineKind::OnnxRuntime => Ok(Box::new(OrtBackend::load(model, manifest, cfg)?)),
        #[cfg(feature = "tract")]
        EngineKind::Tract => Ok(Box::new(TractBackend::load(model, manifest, cfg)?)),
        #[cfg(not(feature = "tract"))]
        EngineKind::Tract => Err(no_tract()),
    }
}

/// Checks that the engine `kind` supports what the manifest requires (operator domains and
/// opsets), before anything is loaded.
pub fn check_requirements(manifest: &Manifest, kind: EngineKind) -> Result<()> {
    match kind {
        EngineKind::OnnxRuntime => ort::check_requirements(manifest),
        #[cfg(feature = "tract")]
        EngineKind::Tract => tract::check_requirements(manifest),
        #[cfg(not(feature = "tract"))]
        EngineKind::Tract => Err(no_tract()),
    }
}

#[cfg(not(feature = "tract"))]
fn no_tract() -> Error {
    Error::Unsupported("this build has no tract engine; rebuild with --features tract".into())
}
