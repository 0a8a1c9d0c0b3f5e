//! Models written by `vigil_core::onnx::GraphBuilder` run on every compiled-in engine and give
//! what a naive Rust forward pass of the same layers gives.

use vigil_core::bundle::Manifest;
use vigil_core::onnx::{Conv2d, Dim, GraphBuilder, LinearLayout};
use vigil_engine::{Batch, Outputs};

const ATOL: f32 = 1e-4;
const EPS: f32 = 1e-5;

/// Deterministic values in [-1, 1) (xorshift64*).
fn pseudo_random(seed: u64, len: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let bits = s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
            bits as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn n() -> Dim {
    Dim::Named("N".into())
}

fn fixed(dims: &[usize]) -> Vec<Dim> {
    std::iter::once(n())
        .chain(dims.iter().map(|&d| Dim::Fixed(d as i64)))
        .collect()
}

/// A row-major `[N, C, H, W]` tensor of the reference forward pass.
#[derive(Debug, Clone)]
struct T {
    shape: [usize; 4],
    data: Vec<f32>,
}

impl T {
    fn at(&self, n: usize, c: usize, y: usize, x: usize) -> f32 {
        let [_, cs, hs, ws] = self.shape;
        self.data[((n * cs + c) * hs + y) * ws + x]
    }

    fn build(shape: [usize; 4], f: impl Fn(usize, usize, usize, usize) -> f32) -> T {
        let [ns, cs, hs, ws] = shape;
        let mut data = Vec::with_capacity(ns * cs * hs * ws);
        for n in 0..ns {
            for c in 0..cs {
                for y in 0..hs {
                    for x in 0..ws {
                        data.push(f(n, c, y, x));
                    }
                }
            }
        }
        T { shape, data }
    }
}

/// Stride 1, `pad` zeros on every side, one group; weights OIHW.
fn conv(x: &T, w: &[f32], [o, i, kh, kw]: [usize; 4], b: &[f32], pad: usize) -> T {
    let [ns, _, hs, ws] = x.shape;
    let (oh, ow) = (hs + 2 * pad - kh + 1, ws + 2 * pad - kw + 1);
    T::build([ns, o, oh, ow], |n, oc, y, xx| {
        let mut acc = b[oc];
        for ic in 0..i {
            for dy in 0..kh {
                for dx in 0..kw {
                    let (sy, sx) = ((y + dy).wrapping_sub(pad), (xx + dx).wrapping_sub(pad));
                    if sy < hs && sx < ws {
                        acc += w[((oc * i + ic) * kh + dy) * kw + dx] * x.at(n, ic, sy, sx);
                    }
                }
            }
        }
        acc
    })
}

fn group_norm(x: &T, groups: usize, gamma: &[f32], beta: &[f32]) -> T {
    let [ns, cs, hs, ws] = x.shape;
    let per = cs / groups;
    let stats: Vec<(f32, f32)> = (0..ns * groups)
        .map(|ng| {
            let (n, g) = (ng / groups, ng % groups);
            let start = ((n * cs) + g * per) * hs * ws;
            let vals = &x.data[start..start + per * hs * ws];
            let mean = vals.iter().sum::<f32>() / vals.len() as f32;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / vals.len() as f32;
            (mean, var)
        })
        .collect();
    T::build(x.shape, |n, c, y, xx| {
        let (mean, var) = stats[n * groups + c / per];
        (x.at(n, c, y, xx) - mean) / (var + EPS).sqrt() * gamma[c] + beta[c]
    })
}

fn relu(x: &T) -> T {
    T::build(x.shape, |n, c, y, xx| x.at(n, c, y, xx).max(0.0))
}

/// Kernel 2, stride 2, no padding.
fn max_pool(x: &T) -> T {
    let [ns, cs, hs, ws] = x.shape;
    T::build([ns, cs, hs / 2, ws / 2], |n, c, y, xx| {
        let window = [(0, 0), (0, 1), (1, 0), (1, 1)];
        window
            .iter()
            .map(|&(dy, dx)| x.at(n, c, 2 * y + dy, 2 * xx + dx))
            .fold(f32::NEG_INFINITY, f32::max)
    })
}

/// Global average pool and flatten: `[N, C]` row-major.
fn gap(x: &T) -> Vec<f32> {
    let [_, _, hs, ws] = x.shape;
    x.data
        .chunks(hs * ws)
        .map(|c| c.iter().sum::<f32>() / c.len() as f32)
        .collect()
}

/// `x [N, in] · w [in, out] + b`.
fn gemm(x: &[f32], w: &[f32], b: &[f32], inf: usize, outf: usize) -> Vec<f32> {
    x.chunks(inf)
        .flat_map(|row| {
            (0..outf).map(move |o| b[o] + (0..inf).map(|i| row[i] * w[i * outf + o]).sum::<f32>())
        })
        .collect()
}

fn softmax(x: &[f32], width: usize) -> Vec<f32> {
    x.chunks(width)
        .flat_map(|row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
            let sum: f32 = exps.iter().sum();
            exps.into_iter().map(move |e| e / sum)
        })
        .collect()
}

fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| w[r * cols + c]))
        .collect()
}

/// Runs `model` on `input` on every engine this build has.
fn run_everywhere(model: &[u8], input: &T) -> Vec<(String, Outputs)> {
    let info = vigil_core::onnx::inspect(model).unwrap();
    let labels = ["ok", "defect"]
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    let m = Manifest::for_model(&info, "exported".parse().unwrap(), labels, vec![]);
    let batch = Batch {
        shape: input.shape,
        data: input.data.clone(),
    };
    super::engines(1)
        .into_iter()
        .map(|cfg| {
            let mut b = vigil_engine::load(model, &m, &cfg).unwrap();
            (format!("{:?}", cfg.kind), b.run(&batch).unwrap())
        })
        .collect()
}

fn assert_close(what: &str, got: &[f32], expected: &[f32]) {
    assert_eq!(got.len(), expected.len(), "{what}");
    let worst = got
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs())
        .fold(0.0f32, f32::max);
    eprintln!("{what}: max abs diff {worst:e}");
    assert!(worst <= ATOL, "{what}: max abs diff {worst}");
}

#[test]
fn group_norm_matches_a_reference() {
    let shape = [2, 4, 5, 5];
    let input = T {
        shape,
        data: pseudo_random(1, 200)
            .iter()
            .map(|v| 3.0 * v + 1.0)
            .collect(),
    };
    let (gamma, beta) = (pseudo_random(2, 4), pseudo_random(3, 4));
    let mut g = GraphBuilder::new(
        "gn",
        "x",
        [n(), Dim::Fixed(4), Dim::Fixed(5), Dim::Fixed(5)],
    );
    let y = g.group_norm("x", 2, 4, &gamma, &beta, EPS).unwrap();
    g.output(&y, fixed(&[4, 5, 5])).unwrap();
    let model = g.finish("vigil-test", "0", &[]).unwrap();
    let expected = group_norm(&input, 2, &gamma, &beta);
    for (engine, out) in run_everywhere(&model, &input) {
        assert_eq!(out[&y].shape, shape, "{engine}");
        assert_close(
            &format!("{engine} group norm"),
            &out[&y].data,
            &expected.data,
        );
    }
}

#[test]
fn an_exported_classifier_matches_a_reference_forward_pass() {
    let input = T {
        shape: [3, 1, 8, 8],
        data: pseudo_random(10, 3 * 64),
    };
    let (w1, b1) = (pseudo_random(11, 4 * 9), pseudo_random(12, 4));
    let (gamma, beta) = (pseudo_random(13, 4), pseudo_random(14, 4));
    let (w2, b2) = (pseudo_random(15, 8 * 4 * 9), pseudo_random(16, 8));
    let (w3, b3) = (pseudo_random(17, 8 * 2), pseudo_random(18, 2)); // [in, out]

    let x = conv(&input, &w1, [4, 1, 3, 3], &b1, 1);
    let x = max_pool(&relu(&group_norm(&x, 2, &gamma, &beta)));
    let embedding = gap(&conv(&x, &w2, [8, 4, 3, 3], &b2, 0));
    let probabilities = softmax(&gemm(&embedding, &w3, &b3, 8, 2), 2);

    for layout in [LinearLayout::InOut, LinearLayout::OutIn] {
        let w3 = match layout {
            LinearLayout::InOut => w3.clone(),
            LinearLayout::OutIn => transpose(&w3, 8, 2),
        };
        let mut g = GraphBuilder::new(
            "classifier",
            "image",
            [n(), Dim::Fixed(1), Dim::Fixed(8), Dim::Fixed(8)],
        );
        let first = Conv2d {
            bias: Some(&b1),
            pads: [1; 4],
            ..Conv2d::new(&w1, [4, 1, 3, 3])
        };
        let x = g.conv2d("image", &first).unwrap();
        let x = g.group_norm(&x, 2, 4, &gamma, &beta, EPS).unwrap();
        let x = g.relu(&x).unwrap();
        let x = g.max_pool(&x, [2, 2], [2, 2], [0; 4]).unwrap();
        let second = Conv2d {
            bias: Some(&b2),
            ..Conv2d::new(&w2, [8, 4, 3, 3])
        };
        let x = g.conv2d(&x, &second).unwrap();
        let x = g.global_average_pool(&x).unwrap();
        let e = g.flatten(&x, Some("embedding")).unwrap();
        let x = g.linear(&e, &w3, 8, 2, layout, Some(&b3)).unwrap();
        let p = g.softmax(&x, 1, Some("probabilities")).unwrap();
        g.output(&e, fixed(&[8])).unwrap();
        g.output(&p, fixed(&[2])).unwrap();
        let model = g.finish("vigil-test", "0", &[]).unwrap();

        for (engine, out) in run_everywhere(&model, &input) {
            let what = format!("{engine} {layout:?}");
            assert_eq!(out["embedding"].shape, [3, 8], "{what}");
            assert_eq!(out["probabilities"].shape, [3, 2], "{what}");
            assert_close(
                &format!("{what} embedding"),
                &out["embedding"].data,
                &embedding,
            );
            assert_close(
                &format!("{what} probabilities"),
                &out["probabilities"].data,
                &probabilities,
            );
        }
    }
}
