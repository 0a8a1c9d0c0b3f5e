//! Reads just enough of an ONNX file to know what it is: IR version, opsets, producer, and the
//! graph's inputs and outputs with their element types and shapes.
//!
//! This is not an engine. It exists so that `bundle create` can record, and `bundle verify`
//! can check, what a model needs without loading a runtime, and so that a truncated or
//! non-ONNX file is refused with a clear message before anything is written.
//!
//! The other direction, [`GraphBuilder`], writes a small convolutional classifier as an ONNX
//! model (IR 8, opset 17), so the Rust trainer can export what it trained without Python.

use std::collections::BTreeMap;

use prost::Message;

use crate::bundle::{DType, TensorSpec};

mod pb;
mod write;

pub use write::{Conv2d, Dim, GraphBuilder, IR_VERSION, LinearLayout, OPSET};

/// A float32 initialiser (a weight) of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatTensor {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub dims: Vec<i64>,
    /// Its values, row-major.
    pub data: Vec<f32>,
}

/// The float32 initialisers of a model, in the order the graph lists them (the order
/// [`GraphBuilder`] wrote them in). Other element types are skipped.
pub fn float_initializers(bytes: &[u8]) -> Result<Vec<FloatTensor>, OnnxError> {
    let model = pb::ModelProto::decode(bytes)
        .map_err(|e| OnnxError(format!("protobuf decoding failed ({e})")))?;
    let graph = model
        .graph
        .ok_or_else(|| OnnxError("the model has no graph".into()))?;
    graph
        .initializer
        .into_iter()
        .filter(|t| t.data_type == pb::FLOAT)
        .map(|t| {
            let data = if t.raw_data.is_empty() {
                t.float_data
            } else if t.raw_data.len() % 4 == 0 {
                t.raw_data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            } else {
                return Err(OnnxError(format!(
                    "initialiser {:?} has {} raw bytes, not whole float32 values",
                    t.name,
                    t.raw_data.len()
                )));
            };
            Ok(FloatTensor {
                name: t.name,
                dims: t.dims,
                data,
            })
        })
        .collect()
}

/// What an ONNX file declares about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxInfo {
    /// The ONNX IR version.
    pub ir_version: i64,
    /// Operator set versions by domain (`""` is the default ONNX domain).
    pub opsets: BTreeMap<String, i64>,
    /// The tool that wrote the file, such as `pytorch 2.5`.
    pub producer: String,
    /// Graph inputs that are not initialisers.
    pub inputs: Vec<TensorSpec>,
    /// Graph outputs.
    pub outputs: Vec<TensorSpec>,
}

/// Why a file is not a usable ONNX model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid ONNX model: {0}")]
pub struct OnnxError(pub String);

/// Parses the header and graph signature of an ONNX model.
pub fn inspect(bytes: &[u8]) -> Result<OnnxInfo, OnnxError> {
    if bytes.is_empty() {
        return Err(OnnxError("the file is empty".into()));
    }
    let model = pb::ModelProto::decode(bytes).map_err(|e| {
        OnnxError(format!(
            "protobuf decoding failed ({e}); is the file truncated?"
        ))
    })?;
    if model.ir_version <= 0 {
        return Err(OnnxError(
            "no IR version: this is not an ONNX model file".into(),
        ));
    }
    if model.opset_import.is_empty() {
        return Err(OnnxError("no operator set is imported".into()));
    }
    let graph = model
        .graph
        .ok_or_else(|| OnnxError("the model has no graph".into()))?;
    let initialisers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = graph
        .input
        .iter()
        .filter(|v| !initialisers.contains(v.name.as_str()))
        .map(tensor_spec)
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = graph
        .output
        .iter()
        .map(tensor_spec)
        .collect::<Result<Vec<_>, _>>()?;
    if inputs.is_empty() || outputs.is_empty() {
        return Err(OnnxError("the graph has no inputs or no outputs".into()));
    }
    let opsets = model
        .opset_import
        .iter()
        .map(|o| {
            let domain = if o.domain == "ai.onnx" {
                String::new()
            } else {
                o.domain.clone()
            };
            (domain, o.version)
        })
        .collect();
    let producer = format!("{} {}", model.producer_name, model.producer_version)
        .trim()
        .to_owned();
    Ok(OnnxInfo {
        ir_version: model.ir_version,
        opsets,
        producer,
        inputs,
        outputs,
    })
}

fn tensor_spec(v: &pb::ValueInfoProto) -> Result<TensorSpec, OnnxError> {
    let tensor = v
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(|| OnnxError(format!("value {:?} is not a tensor", v.name)))?;
    let dtype = DType::from_onnx(tensor.elem_type).ok_or_else(|| {
        OnnxError(format!(
            "value {:?} has an unsupported element type {}",
            v.name, tensor.elem_type
        ))
    })?;
    let shape = tensor
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.dim_value {
                    Some(n) if n > 0 => n,
                    _ => -1,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(TensorSpec {
        name: v.name.clone(),
        dtype,
        shape,
    })
}
