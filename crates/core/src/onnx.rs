//! Reads just enough of an ONNX file to know what it is: IR version, opsets, producer, and the
//! graph's inputs and outputs with their element types and shapes.
//!
//! This is not an engine. It exists so that `bundle create` can record, and `bundle verify`
//! can check, what a model needs without loading a runtime, and so that a truncated or
//! non-ONNX file is refused with a clear message before anything is written.

use std::collections::BTreeMap;

use prost::Message;

use crate::bundle::{DType, TensorSpec};

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

/// The subset of `onnx.proto3` this module reads. Field numbers are ONNX's; every other field
/// is skipped by the decoder.
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        #[prost(int64, tag = "1")]
        pub ir_version: i64,
        #[prost(string, tag = "2")]
        pub producer_name: String,
        #[prost(string, tag = "3")]
        pub producer_version: String,
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
        #[prost(message, repeated, tag = "8")]
        pub opset_import: Vec<OperatorSetIdProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OperatorSetIdProto {
        #[prost(string, tag = "1")]
        pub domain: String,
        #[prost(int64, tag = "2")]
        pub version: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<NamedTensor>,
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfoProto>,
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfoProto>,
    }

    /// A `TensorProto` read for its name only.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedTensor {
        #[prost(string, tag = "8")]
        pub name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfoProto {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub r#type: Option<TypeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeProto {
        #[prost(message, optional, tag = "1")]
        pub tensor_type: Option<TensorTypeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorTypeProto {
        #[prost(int32, tag = "1")]
        pub elem_type: i32,
        #[prost(message, optional, tag = "2")]
        pub shape: Option<TensorShapeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorShapeProto {
        #[prost(message, repeated, tag = "1")]
        pub dim: Vec<Dimension>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        #[prost(int64, optional, tag = "1")]
        pub dim_value: Option<i64>,
        #[prost(string, optional, tag = "2")]
        pub dim_param: Option<String>,
    }
}
