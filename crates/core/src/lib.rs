//! Vigil's domain: names and identifiers, the model bundle format, the audit chain, the
//! decision rule, evaluation and drift statistics, and the shared error vocabulary.
//!
//! This crate holds pure data and decisions. It never runs a model (that is `vigil-engine`),
//! never talks to a database (that is `vigil-store`) and never starts an async runtime.
//!
//! ```
//! use vigil_core::types::{ModelRef, VersionSelector};
//!
//! let r: ModelRef = "weldnet@production".parse().unwrap();
//! assert_eq!(r.name.as_str(), "weldnet");
//! assert!(matches!(r.selector, VersionSelector::Alias(_)));
//! ```

pub mod audit;
pub mod auth;
pub mod bundle;
pub mod decision;
pub mod drift;
pub mod error;
pub mod eval;
pub mod monitor;
pub mod onnx;
mod plot;
pub mod review;
pub mod types;

pub use error::ErrorKind;
pub use plot::escape as escape_html;
