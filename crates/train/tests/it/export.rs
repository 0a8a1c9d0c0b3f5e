//! The exported ONNX graph computes what burn computes, on the engines Vigil ships.

use burn::tensor::Device;
use vigil_core::bundle::Manifest;
use vigil_engine::backend::Batch;
use vigil_engine::{EngineConfig, EngineKind};
use vigil_train::Arch;
use vigil_train::export::{load_weights, to_onnx};
use vigil_train::fit::predict;

use crate::common;

/// Real tiles through the weld preprocessing: `n` inputs of `[1, 128, 128]`.
fn inputs(n: usize) -> Vec<vigil_engine::preprocess::Tensor> {
    let dir = tempfile::tempdir().unwrap();
    let manifest = common::small(dir.path());
    let d = vigil_train::data::load(&manifest, &common::pipeline(), None).unwrap();
    d.train
        .iter()
        .chain(&d.val)
        .take(n)
        .map(|s| common::pipeline().run(&s.bytes).unwrap())
        .collect()
}

fn engine_probabilities(model: &[u8], kind: EngineKind, batch: &Batch) -> Vec<f32> {
    let info = vigil_core::onnx::inspect(model).unwrap();
    let manifest = Manifest::for_model(
        &info,
        "x".parse().unwrap(),
        vec!["defect".parse().unwrap(), "no_defect".parse().unwrap()],
        common::steps(),
    );
    let cfg = EngineConfig {
        kind,
        ..EngineConfig::default()
    };
    let mut backend = vigil_engine::load(model, &manifest, &cfg).unwrap();
    backend.run(batch).unwrap()["probabilities"].data.clone()
}

fn check(arch: &str) {
    let arch = Arch::by_name(arch).unwrap();
    let device = Device::flex();
    let net = arch.init(1, 2, &device, 7);
    let tensors = inputs(6);
    let refs: Vec<_> = tensors.iter().collect();
    let batch = Batch::stack(&refs).unwrap();
    let expected: Vec<f32> = predict(&net, &batch.data, [1, 128, 128]).unwrap().concat();
    let model = to_onnx(
        &net,
        arch,
        [1, 128, 128],
        &["defect".into(), "no_defect".into()],
    )
    .unwrap();
    let mut kinds = vec![EngineKind::OnnxRuntime];
    if cfg!(feature = "tract") {
        kinds.push(EngineKind::Tract);
    }
    for kind in kinds {
        let got = engine_probabilities(&model, kind, &batch);
        assert_eq!(got.len(), expected.len());
        let diff = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "{kind:?}: max |diff| {diff}");
        // Not a constant output: the check would be void.
        assert!(expected.iter().any(|p| (p - expected[0]).abs() > 1e-6));
    }
    // Fine-tuning reads the same weights back.
    let mut fresh_device = Device::flex();
    let reloaded = load_weights(arch.init(1, 2, &fresh_device, 99), &model, &fresh_device).unwrap();
    let again: Vec<f32> = predict(&reloaded, &batch.data, [1, 128, 128])
        .unwrap()
        .concat();
    assert_eq!(again, expected);
    fresh_device = Device::flex();
    let other = Arch::by_name(if arch.name == "weldnet-xs" {
        "weldnet-s"
    } else {
        "weldnet-xs"
    })
    .unwrap();
    assert!(load_weights(other.init(1, 2, &fresh_device, 99), &model, &fresh_device).is_err());
}

#[test]
fn the_tiny_architecture_exports_faithfully() {
    check("weldnet-xs");
}

#[test]
fn the_weld_architecture_exports_faithfully() {
    check("weldnet-s");
}
