//! The engine interface: prepare a model once, then run batches on it.
//!
//! A [`Backend`] is owned by one thread (the model thread); it is `Send` but not shared.
//! Implementations: [`crate::ort`] (ONNX Runtime, the default) and, with the `tract` feature,
//! `crate::tract` (pure Rust); [`crate::load`] picks one. The batch dimension is dynamic: any
//! batch size the model's first dimension allows. Both check a batch against the manifest's
//! input shape the same way ([`check_batch`]), so a wrong tensor is the same error on each.

use std::collections::BTreeMap;

use crate::Result;

/// A batch of preprocessed images, laid out as the model input expects.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `[N, C, H, W]` or `[N, H, W, C]`.
    pub shape: [usize; 4],
    /// Row-major values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

impl Batch {
    /// Stacks single-image tensors of equal shape `[1, ..]` into one batch.
    pub fn stack(items: &[&crate::preprocess::Tensor]) -> Result<Batch> {
        let first = items
            .first()
            .ok_or_else(|| crate::Error::Shape("an empty batch".into()))?;
        let mut shape = first.shape;
        let mut data = Vec::with_capacity(first.data.len() * items.len());
        for t in items {
            if t.shape != first.shape {
                return Err(crate::Error::Shape(format!(
                    "cannot batch tensors of shapes {:?} and {:?}",
                    first.shape, t.shape
                )));
            }
            data.extend_from_slice(&t.data);
        }
        shape[0] = items.len();
        Ok(Batch { shape, data })
    }
}

/// One output tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    /// Shape, batch dimension first.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl OutputTensor {
    /// The values of batch item `i`.
    pub fn item(&self, i: usize) -> &[f32] {
        let per: usize = self.shape.iter().skip(1).product();
        &self.data[i * per..(i + 1) * per]
    }
}

/// Every output of a batch, by name.
pub type Outputs = BTreeMap<String, OutputTensor>;

/// Checks that `batch` holds as many values as its shape says, and that its shape fits the
/// model input's declared `[N, C, H, W]` (or `[N, H, W, C]`; `-1` where the model leaves a
/// dimension open).
pub fn check_batch(batch: &Batch, declared: &[i64]) -> Result<()> {
    // Checked: a client-declared shape whose product overflows used to panic here.
    let expected = batch
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if expected != Some(batch.data.len()) {
        return Err(crate::Error::Shape(format!(
            "shape {:?} does not hold the {} values given",
            batch.shape,
            batch.data.len()
        )));
    }
    if batch.shape[0] == 0 {
        return Err(crate::Error::Shape("an empty batch".into()));
    }
    let fits = declared.len() == batch.shape.len()
        && declared
            .iter()
            .zip(&batch.shape)
            .all(|(&d, &b)| d < 0 || usize::try_from(d).is_ok_and(|d| d == b));
    if !fits {
        return Err(crate::Error::Shape(format!(
            "the model takes {declared:?} (-1: any), got a batch of shape {:?}",
            batch.shape
        )));
    }
    Ok(())
}

/// A prepared model.
pub trait Backend: Send + std::fmt::Debug {
    /// Runs one batch and returns every float output.
    fn run(&mut self, batch: &Batch) -> Result<Outputs>;

    /// Which engine runs the model, for logs and `vigil doctor`.
    fn describe(&self) -> String;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(shape: [usize; 4]) -> Batch {
        Batch {
            shape,
            data: vec![0.0; shape.iter().product()],
        }
    }

    #[test]
    fn a_batch_must_fit_the_declared_input() {
        let declared = [-1, 1, 128, 128];
        check_batch(&batch([1, 1, 128, 128]), &declared).unwrap();
        check_batch(&batch([7, 1, 128, 128]), &declared).unwrap();
        check_batch(&batch([2, 1, 128, 128]), &[2, 1, -1, -1]).unwrap();
        for (shape, declared) in [
            ([1, 3, 128, 128], &declared[..]),
            ([1, 1, 64, 128], &declared[..]),
            ([0, 1, 128, 128], &declared[..]),
            ([3, 1, 128, 128], &[1, 1, 128, 128][..]),
            ([1, 1, 128, 128], &[-1, 1, 128][..]),
        ] {
            let err = check_batch(&batch(shape), declared).unwrap_err();
            assert!(matches!(err, crate::Error::Shape(_)), "{shape:?}: {err}");
        }
        let short = Batch {
            shape: [1, 1, 2, 2],
            data: vec![0.0; 3],
        };
        let err = check_batch(&short, &declared).unwrap_err();
        assert!(
            err.to_string().contains("does not hold the 3 values"),
            "{err}"
        );
        // A shape whose product overflows used to panic here.
        let huge = Batch {
            shape: [usize::MAX / 2, 4, 1, 1],
            data: vec![0.0; 4],
        };
        let err = check_batch(&huge, &declared).unwrap_err();
        assert!(matches!(err, crate::Error::Shape(_)), "{err}");
    }
}
