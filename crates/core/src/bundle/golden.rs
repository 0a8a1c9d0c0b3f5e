//! Golden cases: a few encoded inputs and the exact tensors and outputs they must give.
//!
//! They are checked when a bundle is verified and when it is loaded for serving, so that a
//! difference between how the model was built and how it is served (training-serving skew, a
//! changed decoder, another engine) is caught before a request is answered.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Error, Result};
use crate::types::Sha256Digest;

/// Where the expected results live inside a bundle.
pub const GOLDEN_EXPECTED_FILE: &str = "golden/expected.json";

/// All golden cases of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenSet {
    /// The cases, in a fixed order.
    pub cases: Vec<GoldenCase>,
}

/// One input and what it must give.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenCase {
    /// The encoded image, relative to the bundle root (listed in the manifest).
    pub input: String,
    /// SHA-256 of the preprocessed tensor as little-endian `f32` bytes: preprocessing must be
    /// bit-identical, not merely close.
    pub tensor_sha256: Sha256Digest,
    /// Every model output for this input, by name.
    pub outputs: BTreeMap<String, GoldenTensor>,
}

/// A recorded output tensor (batch dimension of one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenTensor {
    /// Shape, including the batch dimension.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl GoldenSet {
    /// Parses `golden/expected.json`.
    pub fn parse(bytes: &[u8]) -> Result<GoldenSet> {
        let set: GoldenSet = serde_json::from_slice(bytes)
            .map_err(|e| Error::Golden(format!("{GOLDEN_EXPECTED_FILE}: {e}")))?;
        for case in &set.cases {
            super::check_relative_path(&case.input)?;
            for (name, t) in &case.outputs {
                if t.shape.iter().product::<usize>() != t.data.len() {
                    return Err(Error::Golden(format!(
                        "{}: output {name:?} has shape {:?} but {} values",
                        case.input,
                        t.shape,
                        t.data.len()
                    )));
                }
            }
        }
        Ok(set)
    }

    /// Renders `golden/expected.json`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("golden sets always serialise; this is a bug")
    }
}

/// SHA-256 of a tensor's values as little-endian `f32` bytes.
pub fn tensor_digest(values: &[f32]) -> Sha256Digest {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for v in values {
        h.update(v.to_le_bytes());
    }
    Sha256Digest::from_hasher(h)
}
