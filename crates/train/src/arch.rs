//! The architectures the trainer builds: small CNNs for grey tiles. One description
//! ([`Arch`]) drives both the burn module and the ONNX export, so they cannot drift apart.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::tensor::{Device, Tensor, TensorData};

use crate::rng::Rng;

use crate::{Error, Result};

/// A named architecture: 3x3 conv → group norm → ReLU blocks, a 2x2 max-pool after every
/// block but the last, global average pooling (the embedding), one linear layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arch {
    /// The name recorded in the bundle (`provenance.extra.arch`).
    pub name: &'static str,
    /// Output channels of each block.
    pub channels: &'static [usize],
    /// Group-norm groups in every block.
    pub groups: usize,
}

/// Group-norm epsilon, in training and in the exported graph.
pub const NORM_EPS: f64 = 1e-5;

/// Every architecture the trainer knows.
pub const ARCHS: &[Arch] = &[
    // The weld model: the size of the reference weldnet-s (1→16→32→64→128).
    Arch {
        name: "weldnet-s",
        channels: &[16, 32, 64, 128],
        groups: 8,
    },
    // A tiny one for tests and quick experiments.
    Arch {
        name: "weldnet-xs",
        channels: &[4, 8, 8],
        groups: 2,
    },
];

impl Arch {
    /// Looks an architecture up by name.
    pub fn by_name(name: &str) -> Result<&'static Arch> {
        ARCHS.iter().find(|a| a.name == name).ok_or_else(|| {
            Error::Config(format!(
                "unknown architecture {name:?}; known: {}",
                ARCHS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Width of the embedding (the last block's channels).
    pub fn embedding_width(&self) -> usize {
        self.channels.last().copied().unwrap_or(1)
    }

    /// A freshly initialised network for `in_channels` input planes and `classes` outputs.
    /// Weights are drawn from `seed` alone (PyTorch's default scheme: uniform in
    /// ±1/sqrt(fan-in), norms at identity), never from a process-wide generator, so two
    /// trainings in one process cannot disturb each other's initialisation.
    pub fn init(&self, in_channels: usize, classes: usize, device: &Device, seed: u64) -> Net {
        let mut rng = Rng::derive(seed, &[0x1417]);
        let mut net = self.layers(in_channels, classes, device);
        for b in &mut net.blocks {
            let dims = b.conv.weight.val().dims();
            let fan_in = dims[1] * dims[2] * dims[3];
            b.conv.weight = uniform(&mut rng, dims, fan_in, device);
            b.conv.bias = Some(uniform(&mut rng, [dims[0]], fan_in, device));
        }
        let [d_in, d_out] = net.head.weight.val().dims();
        net.head.weight = uniform(&mut rng, [d_in, d_out], d_in, device);
        net.head.bias = Some(uniform(&mut rng, [d_out], d_in, device));
        net
    }

    /// The layers, with burn's own initial values (replaced by [`Arch::init`]).
    fn layers(&self, in_channels: usize, classes: usize, device: &Device) -> Net {
        let mut blocks = Vec::with_capacity(self.channels.len());
        let mut cin = in_channels;
        for &cout in self.channels {
            blocks.push(Block {
                conv: Conv2dConfig::new([cin, cout], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device),
                norm: GroupNormConfig::new(self.groups, cout)
                    .with_epsilon(NORM_EPS)
                    .init(device),
            });
            cin = cout;
        }
        Net {
            blocks,
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            head: LinearConfig::new(cin, classes).init(device),
        }
    }
}

/// A parameter uniform in ±1/sqrt(`fan_in`).
fn uniform<const D: usize>(
    rng: &mut Rng,
    dims: [usize; D],
    fan_in: usize,
    device: &Device,
) -> Param<Tensor<D>> {
    let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
    let values: Vec<f32> = (0..dims.iter().product::<usize>())
        .map(|_| rng.range(-bound, bound))
        .collect();
    Param::from_tensor(Tensor::from_data(TensorData::new(values, dims), device))
}

/// Conv → group norm → ReLU.
#[derive(Module, Debug)]
pub struct Block {
    /// 3x3 convolution, padding 1.
    pub conv: Conv2d,
    /// Group normalisation.
    pub norm: GroupNorm,
}

/// The network.
#[derive(Module, Debug)]
pub struct Net {
    /// The conv blocks, in order.
    pub blocks: Vec<Block>,
    /// 2x2 max-pool, stride 2, after every block but the last.
    pub pool: MaxPool2d,
    /// Embedding → logits.
    pub head: Linear,
}

impl Net {
    /// The embedding `[N, C]`: the last block, averaged over the image.
    pub fn embed(&self, mut x: Tensor<4>) -> Tensor<2> {
        let last = self.blocks.len().saturating_sub(1);
        for (i, b) in self.blocks.iter().enumerate() {
            x = Relu::new().forward(b.norm.forward(b.conv.forward(x)));
            if i < last {
                x = self.pool.forward(x);
            }
        }
        let [n, c, h, w] = x.dims();
        x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c])
    }

    /// Logits `[N, classes]` (the exported graph adds the softmax).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.embed(x))
    }
}
