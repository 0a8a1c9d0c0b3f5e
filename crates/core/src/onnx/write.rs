//! Writes a small convolutional classifier as an ONNX model: IR version 8, default-domain
//! opset 17, float32 weights stored little-endian in `raw_data`.
//!
//! Each layer method checks its weights' lengths against the shapes it is given, and that
//! its input is a value the graph already has, before it changes the graph, so a failed call
//! leaves the builder as it was. Layers name their outputs `<op>_<k>` (`conv_0`, `relu_1`)
//! unless given a name, and their initialisers `<output>.<role>` (`conv_0.weight`).
//!
//! Group normalisation is written the way PyTorch exports it below opset 18, which has no
//! `GroupNormalization`: reshape to `[N, G, -1]`, `InstanceNormalization` with unit scale and
//! zero bias, reshape back to the input's shape, then multiply by gamma and add beta per
//! channel. ONNX Runtime and tract both run that.

use std::collections::HashSet;

use prost::Message;

use super::{OnnxError, pb};

/// The ONNX IR version written.
pub const IR_VERSION: i64 = 8;
/// The default-domain operator set version written.
pub const OPSET: i64 = 17;

/// One dimension of a declared graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A size chosen at run time, named (such as `"N"` for the batch).
    Named(String),
}

/// How a linear layer's weight matrix is stored, row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearLayout {
    /// `[in_features, out_features]`, as burn stores it.
    InOut,
    /// `[out_features, in_features]`, as PyTorch stores it.
    OutIn,
}

/// The parameters of a 2-D convolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conv2d<'a> {
    /// The kernel, row-major in `weight_shape`.
    pub weight: &'a [f32],
    /// `[out_channels, in_channels / groups, kernel_height, kernel_width]` (OIHW).
    pub weight_shape: [usize; 4],
    /// One bias per output channel, if any.
    pub bias: Option<&'a [f32]>,
    /// `[height, width]` strides.
    pub strides: [i64; 2],
    /// `[top, left, bottom, right]` zero padding.
    pub pads: [i64; 4],
    /// `[height, width]` dilations.
    pub dilations: [i64; 2],
    /// The number of channel groups; both channel counts must be multiples of it.
    pub groups: i64,
}

impl<'a> Conv2d<'a> {
    /// A convolution with stride 1, no padding, no dilation, one group and no bias.
    pub fn new(weight: &'a [f32], weight_shape: [usize; 4]) -> Self {
        Conv2d {
            weight,
            weight_shape,
            bias: None,
            strides: [1, 1],
            pads: [0; 4],
            dilations: [1, 1],
            groups: 1,
        }
    }
}

/// Builds an ONNX graph with one float32 `[N, C, H, W]` input, layer by layer.
///
/// ```
/// use vigil_core::onnx::{Dim, GraphBuilder};
/// let n = || Dim::Named("N".into());
/// let shape = [n(), Dim::Fixed(1), Dim::Fixed(8), Dim::Fixed(8)];
/// let mut g = GraphBuilder::new("net", "image", shape);
/// let x = g.relu("image").unwrap();
/// let y = g.global_average_pool(&x).unwrap();
/// let z = g.flatten(&y, Some("embedding")).unwrap();
/// g.output(&z, vec![n(), Dim::Fixed(1)]).unwrap();
/// let bytes = g.finish("example", "1", &[]).unwrap();
/// let info = vigil_core::onnx::inspect(&bytes).unwrap();
/// assert_eq!(info.outputs[0].name, "embedding");
/// assert_eq!(info.outputs[0].shape, [-1, 1]);
/// ```
#[derive(Debug, Clone)]
pub struct GraphBuilder {
    name: String,
    input: pb::ValueInfoProto,
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    outputs: Vec<pb::ValueInfoProto>,
    /// Every value name in use: the input, node outputs and initialisers.
    values: HashSet<String>,
}

impl GraphBuilder {
    /// Starts a graph named `graph_name` whose float32 input `input` has `input_shape`.
    pub fn new(graph_name: &str, input: &str, input_shape: [Dim; 4]) -> Self {
        GraphBuilder {
            name: graph_name.to_owned(),
            input: value_info(input, &input_shape),
            nodes: Vec::new(),
            initializers: Vec::new(),
            outputs: Vec::new(),
            values: HashSet::from([input.to_owned()]),
        }
    }

    /// Adds a 2-D convolution (`Conv`) of `x`; returns its output's name.
    pub fn conv2d(&mut self, x: &str, conv: &Conv2d<'_>) -> Result<String, OnnxError> {
        self.require(x)?;
        let [out_channels, _, kh, kw] = conv.weight_shape;
        let groups = usize::try_from(conv.groups).unwrap_or(0);
        if groups == 0 || !out_channels.is_multiple_of(groups) {
            return Err(OnnxError(format!(
                "conv: {out_channels} output channels do not split into {} groups",
                conv.groups
            )));
        }
        let name = self.fresh("conv");
        let mut tensors = vec![float_tensor(
            &format!("{name}.weight"),
            &conv.weight_shape,
            conv.weight,
        )?];
        if let Some(bias) = conv.bias {
            tensors.push(float_tensor(
                &format!("{name}.bias"),
                &[out_channels],
                bias,
            )?);
        }
        let attrs = vec![
            attr_ints("kernel_shape", &[to_i64(kh)?, to_i64(kw)?]),
            attr_ints("strides", &conv.strides),
            attr_ints("pads", &conv.pads),
            attr_ints("dilations", &conv.dilations),
            attr_int("group", conv.groups),
        ];
        self.layer("Conv", name, x, tensors, attrs)
    }

    /// Adds group normalisation of `x` (`channels` channels in `num_groups` groups, per-channel
    /// `gamma` and `beta`), in opset-17 operators; returns its output's name.
    pub fn group_norm(
        &mut self,
        x: &str,
        num_groups: usize,
        channels: usize,
        gamma: &[f32],
        beta: &[f32],
        epsilon: f32,
    ) -> Result<String, OnnxError> {
        self.require(x)?;
        if num_groups == 0 || !channels.is_multiple_of(num_groups) {
            return Err(OnnxError(format!(
                "group norm: {channels} channels do not split into {num_groups} groups"
            )));
        }
        let p = self.fresh("group_norm");
        let group_shape = int64_tensor(&format!("{p}.group_shape"), &[0, to_i64(num_groups)?, -1])?;
        let ones = float_tensor(&format!("{p}.ones"), &[num_groups], &vec![1.0; num_groups])?;
        let zeros = float_tensor(&format!("{p}.zeros"), &[num_groups], &vec![0.0; num_groups])?;
        let gamma = float_tensor(&format!("{p}.gamma"), &[channels, 1, 1], gamma)?;
        let beta = float_tensor(&format!("{p}.beta"), &[channels, 1, 1], beta)?;
        let [grouped, normalized, shape, restored, scaled] =
            ["grouped", "normalized", "shape", "restored", "scaled"].map(|s| format!("{p}.{s}"));
        let eps = vec![attr_float("epsilon", epsilon)];
        let steps: [(&str, [&str; 3], &str, Vec<pb::AttributeProto>); 6] = [
            ("Reshape", [x, &group_shape.name, ""], &grouped, vec![]),
            (
                "InstanceNormalization",
                [&grouped, &ones.name, &zeros.name],
                &normalized,
                eps,
            ),
            ("Shape", [x, "", ""], &shape, vec![]),
            ("Reshape", [&normalized, &shape, ""], &restored, vec![]),
            ("Mul", [&restored, &gamma.name, ""], &scaled, vec![]),
            ("Add", [&scaled, &beta.name, ""], &p, vec![]),
        ];
        for (op, inputs, output, attrs) in steps {
            let inputs: Vec<&str> = inputs.into_iter().filter(|i| !i.is_empty()).collect();
            self.push_node(op, output, &inputs, attrs);
        }
        self.add_initializers(vec![group_shape, ones, zeros, gamma, beta]);
        Ok(p)
    }

    /// Adds `Relu` of `x`; returns its output's name.
    pub fn relu(&mut self, x: &str) -> Result<String, OnnxError> {
        self.simple("Relu", "relu", x, None, vec![])
    }

    /// Adds 2-D max pooling (`MaxPool`) of `x`; `pads` are `[top, left, bottom, right]`.
    /// Returns its output's name.
    pub fn max_pool(
        &mut self,
        x: &str,
        kernel: [i64; 2],
        strides: [i64; 2],
        pads: [i64; 4],
    ) -> Result<String, OnnxError> {
        let attrs = vec![
            attr_ints("kernel_shape", &kernel),
            attr_ints("strides", &strides),
            attr_ints("pads", &pads),
        ];
        self.simple("MaxPool", "max_pool", x, None, attrs)
    }

    /// Adds `GlobalAveragePool` of `x` (`[N, C, H, W]` to `[N, C, 1, 1]`); returns its output's
    /// name.
    pub fn global_average_pool(&mut self, x: &str) -> Result<String, OnnxError> {
        self.simple("GlobalAveragePool", "global_average_pool", x, None, vec![])
    }

    /// Adds `Flatten` of `x` to `[N, rest]`, its output named `out_name` if given; returns its
    /// output's name.
    pub fn flatten(&mut self, x: &str, out_name: Option<&str>) -> Result<String, OnnxError> {
        self.simple("Flatten", "flatten", x, out_name, vec![attr_int("axis", 1)])
    }

    /// Adds a fully connected layer (`Gemm`) of the `[N, in_features]` value `x`; `weight` is
    /// laid out as `weight_layout` says. Returns its output's name.
    pub fn linear(
        &mut self,
        x: &str,
        weight: &[f32],
        in_features: usize,
        out_features: usize,
        weight_layout: LinearLayout,
        bias: Option<&[f32]>,
    ) -> Result<String, OnnxError> {
        self.require(x)?;
        let name = self.fresh("linear");
        let (dims, trans_b) = match weight_layout {
            LinearLayout::InOut => ([in_features, out_features], 0),
            LinearLayout::OutIn => ([out_features, in_features], 1),
        };
        let mut tensors = vec![float_tensor(&format!("{name}.weight"), &dims, weight)?];
        if let Some(bias) = bias {
            tensors.push(float_tensor(
                &format!("{name}.bias"),
                &[out_features],
                bias,
            )?);
        }
        self.layer("Gemm", name, x, tensors, vec![attr_int("transB", trans_b)])
    }

    /// Adds `Softmax` of `x` along `axis`, its output named `out_name` if given; returns its
    /// output's name.
    pub fn softmax(
        &mut self,
        x: &str,
        axis: i64,
        out_name: Option<&str>,
    ) -> Result<String, OnnxError> {
        self.simple(
            "Softmax",
            "softmax",
            x,
            out_name,
            vec![attr_int("axis", axis)],
        )
    }

    /// Declares the value `name` a float32 graph output of `shape`.
    pub fn output(&mut self, name: &str, shape: Vec<Dim>) -> Result<(), OnnxError> {
        self.require(name)?;
        if self.outputs.iter().any(|o| o.name == name) {
            return Err(OnnxError(format!("{name:?} is already a graph output")));
        }
        self.outputs.push(value_info(name, &shape));
        Ok(())
    }

    /// Encodes the model: IR version [`IR_VERSION`], default-domain opset [`OPSET`], the
    /// producer, and `metadata` as `metadata_props`. Fails when no output was declared.
    pub fn finish(
        self,
        producer_name: &str,
        producer_version: &str,
        metadata: &[(String, String)],
    ) -> Result<Vec<u8>, OnnxError> {
        if self.outputs.is_empty() {
            return Err(OnnxError("the graph declares no outputs".into()));
        }
        let model = pb::ModelProto {
            ir_version: IR_VERSION,
            producer_name: producer_name.to_owned(),
            producer_version: producer_version.to_owned(),
            graph: Some(pb::GraphProto {
                node: self.nodes,
                name: self.name,
                initializer: self.initializers,
                input: vec![self.input],
                output: self.outputs,
            }),
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            metadata_props: metadata
                .iter()
                .map(|(key, value)| pb::StringStringEntryProto {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        };
        Ok(model.encode_to_vec())
    }

    /// A one-input operator without weights, its output named `out_name` or automatically.
    fn simple(
        &mut self,
        op: &str,
        kind: &str,
        x: &str,
        out_name: Option<&str>,
        attrs: Vec<pb::AttributeProto>,
    ) -> Result<String, OnnxError> {
        self.require(x)?;
        let name = match out_name {
            Some(n) => self.claim(n)?,
            None => self.fresh(kind),
        };
        self.layer(op, name, x, vec![], attrs)
    }

    /// An operator taking `x` then `tensors` (already checked), writing the value `name`.
    fn layer(
        &mut self,
        op: &str,
        name: String,
        x: &str,
        tensors: Vec<pb::TensorProto>,
        attrs: Vec<pb::AttributeProto>,
    ) -> Result<String, OnnxError> {
        let inputs: Vec<&str> = std::iter::once(x)
            .chain(tensors.iter().map(|t| t.name.as_str()))
            .collect();
        self.push_node(op, &name, &inputs, attrs);
        self.add_initializers(tensors);
        Ok(name)
    }

    fn push_node(
        &mut self,
        op: &str,
        output: &str,
        inputs: &[&str],
        attrs: Vec<pb::AttributeProto>,
    ) {
        self.values.insert(output.to_owned());
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|&s| s.to_owned()).collect(),
            output: vec![output.to_owned()],
            name: output.to_owned(),
            op_type: op.to_owned(),
            attribute: attrs,
            domain: String::new(),
        });
    }

    fn add_initializers(&mut self, tensors: Vec<pb::TensorProto>) {
        self.values.extend(tensors.iter().map(|t| t.name.clone()));
        self.initializers.extend(tensors);
    }

    fn require(&self, x: &str) -> Result<(), OnnxError> {
        if self.values.contains(x) {
            Ok(())
        } else {
            Err(OnnxError(format!("the graph has no value named {x:?}")))
        }
    }

    /// Takes the caller's name for an output; it must be new.
    fn claim(&self, name: &str) -> Result<String, OnnxError> {
        if self.values.contains(name) {
            return Err(OnnxError(format!(
                "the graph already has a value named {name:?}"
            )));
        }
        Ok(name.to_owned())
    }

    /// The first `<kind>_<k>` that neither names a value nor prefixes one (`<name>.<role>`),
    /// so the layer's initialiser and intermediate names are free as well.
    fn fresh(&self, kind: &str) -> String {
        (0usize..)
            .map(|k| format!("{kind}_{k}"))
            .find(|name| {
                let prefix = format!("{name}.");
                !self
                    .values
                    .iter()
                    .any(|v| v == name || v.starts_with(&prefix))
            })
            .unwrap_or_else(|| kind.to_owned())
    }
}

fn value_info(name: &str, shape: &[Dim]) -> pb::ValueInfoProto {
    let dim = shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => pb::Dimension {
                dim_value: Some(*n),
                dim_param: None,
            },
            Dim::Named(s) => pb::Dimension {
                dim_value: None,
                dim_param: Some(s.clone()),
            },
        })
        .collect();
    pb::ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(pb::TypeProto {
            tensor_type: Some(pb::TensorTypeProto {
                elem_type: pb::FLOAT,
                shape: Some(pb::TensorShapeProto { dim }),
            }),
        }),
    }
}

/// A float32 initialiser of shape `dims`; `values` must fill it exactly.
fn float_tensor(name: &str, dims: &[usize], values: &[f32]) -> Result<pb::TensorProto, OnnxError> {
    let expected = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| OnnxError(format!("{name}: shape {dims:?} is too large")))?;
    if values.len() != expected {
        return Err(OnnxError(format!(
            "{name}: shape {dims:?} needs {expected} values, got {}",
            values.len()
        )));
    }
    Ok(pb::TensorProto {
        dims: dims.iter().map(|&d| to_i64(d)).collect::<Result<_, _>>()?,
        data_type: pb::FLOAT,
        float_data: Vec::new(),
        name: name.to_owned(),
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    })
}

/// A one-dimensional int64 initialiser.
fn int64_tensor(name: &str, values: &[i64]) -> Result<pb::TensorProto, OnnxError> {
    Ok(pb::TensorProto {
        dims: vec![to_i64(values.len())?],
        data_type: pb::INT64,
        float_data: Vec::new(),
        name: name.to_owned(),
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    })
}

fn to_i64(n: usize) -> Result<i64, OnnxError> {
    i64::try_from(n).map_err(|_| OnnxError(format!("{n} does not fit an ONNX dimension")))
}

fn attr_int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_owned(),
        i,
        r#type: pb::attr_type::INT,
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_owned(),
        ints: ints.to_vec(),
        r#type: pb::attr_type::INTS,
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_owned(),
        f,
        r#type: pb::attr_type::FLOAT,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use prost::Message;

    use super::*;
    use crate::bundle::{DType, TensorSpec};

    fn n() -> Dim {
        Dim::Named("N".into())
    }

    fn builder() -> GraphBuilder {
        GraphBuilder::new(
            "net",
            "image",
            [n(), Dim::Fixed(1), Dim::Fixed(8), Dim::Fixed(8)],
        )
    }

    /// conv 1→4, group norm, relu, max pool, global average pool, flatten, linear 4→2, softmax.
    fn classifier(layout: LinearLayout) -> Vec<u8> {
        let mut g = builder();
        let conv = Conv2d {
            bias: Some(&[0.0; 4]),
            pads: [1; 4],
            ..Conv2d::new(&[0.5; 36], [4, 1, 3, 3])
        };
        let x = g.conv2d("image", &conv).unwrap();
        let x = g.group_norm(&x, 2, 4, &[1.0; 4], &[0.0; 4], 1e-5).unwrap();
        let x = g.relu(&x).unwrap();
        let x = g.max_pool(&x, [2, 2], [2, 2], [0; 4]).unwrap();
        let x = g.global_average_pool(&x).unwrap();
        let e = g.flatten(&x, Some("embedding")).unwrap();
        let x = g
            .linear(&e, &[0.1; 8], 4, 2, layout, Some(&[0.0; 2]))
            .unwrap();
        let p = g.softmax(&x, 1, Some("probabilities")).unwrap();
        g.output(&e, vec![n(), Dim::Fixed(4)]).unwrap();
        g.output(&p, vec![n(), Dim::Fixed(2)]).unwrap();
        let meta = [("labels".to_owned(), "ok,defect".to_owned())];
        g.finish("vigil-train", "0.1.0", &meta).unwrap()
    }

    fn spec(name: &str, shape: Vec<i64>) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype: DType::Float32,
            shape,
        }
    }

    #[test]
    fn inspect_reads_back_what_was_written() {
        let info = crate::onnx::inspect(&classifier(LinearLayout::InOut)).unwrap();
        assert_eq!(info.ir_version, 8);
        assert_eq!(info.opsets, [(String::new(), 17)].into_iter().collect());
        assert_eq!(info.producer, "vigil-train 0.1.0");
        assert_eq!(info.inputs, vec![spec("image", vec![-1, 1, 8, 8])]);
        assert_eq!(
            info.outputs,
            vec![
                spec("embedding", vec![-1, 4]),
                spec("probabilities", vec![-1, 2])
            ]
        );
    }

    #[test]
    fn the_graph_holds_the_layers_weights_and_metadata() {
        let model = pb::ModelProto::decode(&classifier(LinearLayout::OutIn)[..]).unwrap();
        assert_eq!(model.metadata_props.len(), 1);
        assert_eq!(model.metadata_props[0].key, "labels");
        let graph = model.graph.unwrap();
        assert_eq!(graph.name, "net");
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(
            ops,
            [
                "Conv",
                "Reshape",
                "InstanceNormalization",
                "Shape",
                "Reshape",
                "Mul",
                "Add",
                "Relu",
                "MaxPool",
                "GlobalAveragePool",
                "Flatten",
                "Gemm",
                "Softmax"
            ]
        );
        // Every node input is the graph input, an initialiser or an earlier node's output.
        let mut known: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        known.insert("image");
        for node in &graph.node {
            for i in &node.input {
                assert!(known.contains(i.as_str()), "{}: {i}", node.name);
            }
            known.extend(node.output.iter().map(String::as_str));
        }
        let weight = graph
            .initializer
            .iter()
            .find(|t| t.name == "conv_0.weight")
            .unwrap();
        assert_eq!(weight.dims, [4, 1, 3, 3]);
        assert_eq!(weight.data_type, pb::FLOAT);
        assert_eq!(weight.raw_data[..4], 0.5f32.to_le_bytes());
        let shape = graph
            .initializer
            .iter()
            .find(|t| t.name == "group_norm_0.group_shape")
            .unwrap();
        assert_eq!(shape.data_type, pb::INT64);
        assert_eq!(shape.raw_data[8..16], 2i64.to_le_bytes());
        let gemm = graph.node.iter().find(|n| n.op_type == "Gemm").unwrap();
        assert_eq!(gemm.attribute[0].name, "transB");
        assert_eq!(gemm.attribute[0].i, 1);
        let dims = |name: &str| {
            let t = graph.initializer.iter().find(|t| t.name == name).unwrap();
            t.dims.clone()
        };
        assert_eq!(dims("linear_0.weight"), [2, 4]);
        assert_eq!(dims("group_norm_0.gamma"), [4, 1, 1]);
    }

    #[test]
    fn mistakes_are_errors_and_leave_the_graph_unchanged() {
        let mut g = builder();
        let before = format!("{g:?}");
        let conv = Conv2d::new(&[0.0; 35], [4, 1, 3, 3]);
        let err = g.conv2d("image", &conv).unwrap_err();
        assert!(err.0.contains("needs 36 values, got 35"), "{err}");
        let conv = Conv2d {
            bias: Some(&[0.0; 3]),
            ..Conv2d::new(&[0.0; 36], [4, 1, 3, 3])
        };
        assert!(g.conv2d("image", &conv).is_err());
        let conv = Conv2d {
            groups: 3,
            ..Conv2d::new(&[0.0; 36], [4, 1, 3, 3])
        };
        assert!(g.conv2d("image", &conv).is_err());
        assert!(
            g.group_norm("image", 3, 4, &[1.0; 4], &[0.0; 4], 1e-5)
                .is_err()
        );
        assert!(
            g.group_norm("image", 2, 4, &[1.0; 3], &[0.0; 4], 1e-5)
                .is_err()
        );
        let err = g.relu("nothing").unwrap_err();
        assert!(err.0.contains("no value named \"nothing\""), "{err}");
        assert!(
            g.linear("image", &[0.0; 7], 4, 2, LinearLayout::InOut, None)
                .is_err()
        );
        assert!(g.flatten("image", Some("image")).is_err());
        assert!(g.output("nothing", vec![]).is_err());
        assert_eq!(format!("{g:?}"), before);
        let err = g.clone().finish("p", "1", &[]).unwrap_err();
        assert!(err.0.contains("no outputs"), "{err}");
        g.output("image", vec![]).unwrap();
        assert!(g.output("image", vec![]).is_err());
    }

    #[test]
    fn automatic_names_skip_names_taken() {
        let mut g = builder();
        let a = g.flatten("image", Some("relu_0")).unwrap();
        let b = g.relu(&a).unwrap();
        assert_eq!(b, "relu_1");
        assert_eq!(g.relu(&b).unwrap(), "relu_2");
    }
}
