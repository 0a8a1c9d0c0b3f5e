//! Synchronous compute: declared preprocessing and the model engines. Never imports tokio.
//!
//! - [`preprocess`] turns encoded image bytes into the model's input tensor, driven by the
//!   bundle's declared steps; it is the only implementation anywhere in Vigil.
//! - [`backend`] is the engine interface (prepare once, run batches); [`ort`] is the default
//!   engine (ONNX Runtime, loaded at run time).
//! - [`golden`] records and checks a bundle's golden cases through both.
//!
//! ```
//! use vigil_engine::preprocess::synthetic_png;
//! let png = synthetic_png(8, 8, 1, 42);
//! assert_eq!(&png[1..4], b"PNG");
//! ```

pub mod backend;
mod error;
pub mod golden;
pub mod ort;
pub mod preprocess;

pub use backend::{Backend, Batch, OutputTensor, Outputs};
pub use error::{Error, Result};
pub use ort::{EngineConfig, OrtBackend};
