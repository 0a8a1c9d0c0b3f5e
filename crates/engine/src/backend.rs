//! The engine interface: prepare a model once, then run batches on it.
//!
//! A [`Backend`] is owned by one thread (the model thread); it is `Send` but not shared.
//! Implementations: [`crate::ort`] (ONNX Runtime, the default). The batch dimension is
//! dynamic: any batch size the model's first dimension allows.

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

/// A prepared model.
pub trait Backend: Send + std::fmt::Debug {
    /// Runs one batch and returns every float output.
    fn run(&mut self, batch: &Batch) -> Result<Outputs>;

    /// Which engine runs the model, for logs and `vigil doctor`.
    fn describe(&self) -> String;
}
