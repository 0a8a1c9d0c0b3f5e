//! Recording and checking golden cases: the same preprocessing and engine that serve
//! requests, run on the bundle's golden inputs.

use std::collections::BTreeMap;

use vigil_core::bundle::{GoldenCase, GoldenSet, GoldenTensor, GoldenTolerance, tensor_digest};

use crate::backend::{Backend, Batch};
use crate::preprocess::Pipeline;
use crate::{Error, Result};

/// Runs each input through `pipeline` and `backend` (one input per batch: a single image, or
/// all tiles of a whole radiograph) and records the tensor digest and every output.
pub fn record(
    backend: &mut dyn Backend,
    pipeline: &Pipeline,
    inputs: &[(String, Vec<u8>)],
) -> Result<GoldenSet> {
    let mut cases = Vec::with_capacity(inputs.len());
    for (name, bytes) in inputs {
        let (digest, batch) = prepare(pipeline, bytes).map_err(|e| Error::Golden {
            case: name.clone(),
            detail: e.to_string(),
        })?;
        let outputs = backend.run(&batch)?;
        cases.push(GoldenCase {
            input: name.clone(),
            tensor_sha256: digest,
            outputs: outputs
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        GoldenTensor {
                            shape: v.shape,
                            data: v.data,
                        },
                    )
                })
                .collect(),
        });
    }
    Ok(GoldenSet { cases })
}

/// Preprocesses one golden input into the batch the model sees (one tensor, or every tile
/// of a whole radiograph) and the digest of its values.
fn prepare(pipeline: &Pipeline, bytes: &[u8]) -> Result<(vigil_core::types::Sha256Digest, Batch)> {
    let tiled = pipeline.run_tiles(bytes)?;
    let refs: Vec<_> = tiled.tiles.iter().collect();
    let batch = Batch::stack(&refs)?;
    Ok((tensor_digest(&batch.data), batch))
}

/// What a successful check found.
#[derive(Debug, Clone, PartialEq)]
pub struct GoldenReport {
    /// Cases checked.
    pub cases: usize,
    /// Largest absolute difference between an output and its recorded value.
    pub max_abs_diff: f32,
}

/// Checks every case: the preprocessed tensor must be bit-identical (its digest), and every
/// output must be within `tolerance` of the recorded values. Inputs are given with their
/// bytes, read (and hash-checked) by the caller.
pub fn check(
    backend: &mut dyn Backend,
    pipeline: &Pipeline,
    cases: &[(&GoldenCase, Vec<u8>)],
    tolerance: GoldenTolerance,
) -> Result<GoldenReport> {
    let mut max_abs_diff = 0f32;
    for (case, bytes) in cases {
        let fail = |detail: String| Error::Golden {
            case: case.input.clone(),
            detail,
        };
        let (digest, batch) = prepare(pipeline, bytes).map_err(|e| fail(e.to_string()))?;
        if digest != case.tensor_sha256 {
            return Err(fail(format!(
                "preprocessing gave a different tensor (sha256 {} instead of {}): training-serving skew",
                digest.short(),
                case.tensor_sha256.short()
            )));
        }
        let outputs = backend.run(&batch)?;
        let recorded: &BTreeMap<String, GoldenTensor> = &case.outputs;
        for (name, expected) in recorded {
            let actual = outputs
                .get(name)
                .ok_or_else(|| fail(format!("the model gave no output {name:?}")))?;
            if actual.shape != expected.shape {
                return Err(fail(format!(
                    "output {name:?} has shape {:?}, recorded {:?}",
                    actual.shape, expected.shape
                )));
            }
            for (i, (&a, &e)) in actual.data.iter().zip(&expected.data).enumerate() {
                let diff = (a - e).abs();
                if !tolerance.accepts(a, e) || diff.is_nan() {
                    return Err(fail(format!(
                        "output {name:?}[{i}] is {a}, recorded {e} (difference {diff} exceeds atol {} + rtol {})",
                        tolerance.atol, tolerance.rtol
                    )));
                }
                max_abs_diff = max_abs_diff.max(diff);
            }
        }
    }
    Ok(GoldenReport {
        cases: cases.len(),
        max_abs_diff,
    })
}
