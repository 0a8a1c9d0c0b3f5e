//! Writes a trained [`Net`] as an ONNX graph (opset 17) with Vigil's output contract:
//! input `image` `[N, C, H, W]`, outputs `embedding` `[N, E]` and `probabilities` `[N, K]`.
//! Initialisers are written in the order of the network's parameters, which is also the
//! order [`load_weights`] reads them back in for fine-tuning.

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use vigil_core::onnx::{self, Conv2d, Dim, GraphBuilder, LinearLayout};

use crate::arch::{Arch, NORM_EPS, Net};
use crate::{Error, Result};

/// The producer name written into exported models.
pub const PRODUCER: &str = "vigil-train";

fn values<const D: usize>(p: &Param<Tensor<D>>) -> Result<Vec<f32>> {
    p.val()
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| Error::Config(format!("reading a weight tensor: {e:?}")))
}

fn export_error(e: onnx::OnnxError) -> Error {
    Error::Bundle(e.into())
}

/// The ONNX bytes of `net` for `[C, H, W]` inputs.
pub fn to_onnx(net: &Net, arch: &Arch, input: [usize; 3], labels: &[String]) -> Result<Vec<u8>> {
    let batch = || Dim::Named("N".into());
    let [c, h, w] = input.map(|d| Dim::Fixed(d as i64));
    let mut g = GraphBuilder::new(arch.name, "image", [batch(), c, h, w]);
    let mut x = "image".to_owned();
    let last = net.blocks.len().saturating_sub(1);
    for (i, b) in net.blocks.iter().enumerate() {
        let weight = values(&b.conv.weight)?;
        let bias = b.conv.bias.as_ref().map(values).transpose()?;
        let [o, ci, kh, kw] = b.conv.weight.val().dims();
        let mut conv = Conv2d::new(&weight, [o, ci, kh, kw]);
        conv.bias = bias.as_deref();
        conv.pads = [1, 1, 1, 1];
        x = g.conv2d(&x, &conv).map_err(export_error)?;
        let ones = vec![1.0; o];
        let zeros = vec![0.0; o];
        let gamma = b.norm.gamma.as_ref().map(values).transpose()?;
        let beta = b.norm.beta.as_ref().map(values).transpose()?;
        x = g
            .group_norm(
                &x,
                b.norm.num_groups,
                o,
                gamma.as_deref().unwrap_or(&ones),
                beta.as_deref().unwrap_or(&zeros),
                NORM_EPS as f32,
            )
            .map_err(export_error)?;
        x = g.relu(&x).map_err(export_error)?;
        if i < last {
            x = g
                .max_pool(&x, [2, 2], [2, 2], [0, 0, 0, 0])
                .map_err(export_error)?;
        }
    }
    x = g.global_average_pool(&x).map_err(export_error)?;
    let embedding = g.flatten(&x, Some("embedding")).map_err(export_error)?;
    let weight = values(&net.head.weight)?;
    let bias = net.head.bias.as_ref().map(values).transpose()?;
    let [d_in, d_out] = net.head.weight.val().dims();
    let logits = g
        .linear(
            &embedding,
            &weight,
            d_in,
            d_out,
            LinearLayout::InOut,
            bias.as_deref(),
        )
        .map_err(export_error)?;
    let probs = g
        .softmax(&logits, 1, Some("probabilities"))
        .map_err(export_error)?;
    g.output(&embedding, vec![batch(), Dim::Fixed(d_in as i64)])
        .map_err(export_error)?;
    g.output(&probs, vec![batch(), Dim::Fixed(d_out as i64)])
        .map_err(export_error)?;
    let metadata = vec![
        ("arch".to_owned(), arch.name.to_owned()),
        ("labels".to_owned(), labels.join(",")),
    ];
    g.finish(PRODUCER, env!("CARGO_PKG_VERSION"), &metadata)
        .map_err(export_error)
}

/// Loads the weights of a model this module exported back into a fresh `net` of the same
/// architecture, on `device` (an autodiff device to fine-tune). Every tensor's shape must
/// match.
pub fn load_weights(mut net: Net, model: &[u8], device: &Device) -> Result<Net> {
    let tensors = onnx::float_initializers(model).map_err(export_error)?;
    let mut it = tensors.into_iter().filter(|t| {
        [".weight", ".bias", ".gamma", ".beta"]
            .iter()
            .any(|s| t.name.ends_with(s))
    });
    let device = device.clone();
    let mut take = |want: &[usize], what: &str| -> Result<Vec<f32>> {
        let t = it.next().ok_or_else(|| {
            Error::Config(format!(
                "the model has fewer weights than the architecture ({what})"
            ))
        })?;
        let count: usize = want.iter().product();
        if t.data.len() != count {
            return Err(Error::Config(format!(
                "{}: {} values, the architecture's {what} needs {want:?}",
                t.name,
                t.data.len()
            )));
        }
        Ok(t.data)
    };
    fn param<const D: usize>(
        values: Vec<f32>,
        dims: [usize; D],
        device: &Device,
    ) -> Param<Tensor<D>> {
        Param::from_tensor(Tensor::from_data(TensorData::new(values, dims), device))
    }
    for b in &mut net.blocks {
        let dims = b.conv.weight.val().dims();
        b.conv.weight = param(take(&dims, "conv weight")?, dims, &device);
        if let Some(bias) = &b.conv.bias {
            let d = bias.val().dims();
            b.conv.bias = Some(param(take(&d, "conv bias")?, d, &device));
        }
        let c = b.norm.num_channels;
        // The export stores gamma and beta as [C, 1, 1].
        let gamma = take(&[c, 1, 1], "norm gamma")?;
        let beta = take(&[c, 1, 1], "norm beta")?;
        b.norm.gamma = Some(param(gamma, [c], &device));
        b.norm.beta = Some(param(beta, [c], &device));
    }
    let dims = net.head.weight.val().dims();
    net.head.weight = param(take(&dims, "head weight")?, dims, &device);
    if let Some(bias) = &net.head.bias {
        let d = bias.val().dims();
        net.head.bias = Some(param(take(&d, "head bias")?, d, &device));
    }
    Ok(net)
}
