//! The engine's integration tests. This file: conformance of every compiled-in engine (ONNX
//! Runtime always, tract with the `tract` feature; see `engines`) on the reference weld model: golden outputs recorded on ONNX Runtime reproduce on
//! each, batches agree with single images, and bad tensors and unavailable engines or devices
//! are typed errors, the same on each engine.
#![allow(clippy::unwrap_used)]

mod onnx_export;
mod preprocessing;

use std::path::{Path, PathBuf};

use vigil_core::bundle::{GoldenTolerance, Layout, Manifest, ResizeFilter, Step};
use vigil_engine::preprocess::{Limits, Pipeline};
use vigil_engine::{Backend, Batch, Device, EngineConfig, EngineKind, Error, OrtBackend};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

fn model() -> Vec<u8> {
    std::fs::read(testdata().join("weldnet-s.onnx")).unwrap()
}

fn manifest(steps: Vec<Step>) -> Manifest {
    let info = vigil_core::onnx::inspect(&model()).unwrap();
    let labels = ["a", "b", "c", "d"]
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    Manifest::for_model(&info, "weldnet".parse().unwrap(), labels, steps)
}

fn weld_steps() -> Vec<Step> {
    vec![
        Step::Decode,
        Step::Grey,
        Step::Resize {
            width: 128,
            height: 128,
            filter: ResizeFilter::Bilinear,
        },
        Step::Standardize { eps: 1e-6 },
        Step::Layout {
            order: Layout::Nchw,
        },
    ]
}

fn tiles() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(testdata().join("weld")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "png") {
            out.push((
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            ));
        }
    }
    out.sort();
    out
}

/// Every engine this build has, each with `threads` threads.
fn engines(threads: usize) -> Vec<EngineConfig> {
    let mut kinds = vec![EngineKind::OnnxRuntime];
    if cfg!(feature = "tract") {
        kinds.push(EngineKind::Tract);
    }
    kinds
        .into_iter()
        .map(|kind| EngineConfig {
            kind,
            intra_threads: threads,
            ..EngineConfig::default()
        })
        .collect()
}

fn backend(m: &Manifest, cfg: &EngineConfig) -> Box<dyn Backend> {
    vigil_engine::load(&model(), m, cfg).unwrap()
}

/// ONNX Runtime, the engine golden outputs are recorded on.
fn reference(m: &Manifest, threads: usize) -> Box<dyn Backend> {
    backend(m, &engines(threads)[0])
}

#[test]
fn the_model_gives_probabilities_and_embeddings_of_the_declared_shapes() {
    let m = manifest(weld_steps());
    let pipeline = Pipeline::new(&m, Limits::default());
    let t = pipeline.run(&tiles()[0].1).unwrap();
    for cfg in engines(1) {
        let mut b = backend(&m, &cfg);
        let out = b.run(&Batch::stack(&[&t]).unwrap()).unwrap();
        assert_eq!(out["probabilities"].shape, vec![1, 4], "{cfg:?}");
        assert_eq!(out["embedding"].shape, vec![1, 128], "{cfg:?}");
        let sum: f32 = out["probabilities"].data.iter().sum();
        assert!(
            (sum - 1.0).abs() < 1e-4,
            "{cfg:?}: probabilities sum to {sum}"
        );
        let expected = match cfg.kind {
            EngineKind::OnnxRuntime => "onnxruntime 1.32.0 (CPU, 1 intra-op thread)",
            EngineKind::Tract => "tract 0.23.9 (CPU, 1 thread)",
        };
        assert_eq!(b.describe(), expected);
    }
}

#[test]
fn golden_outputs_recorded_on_onnx_runtime_reproduce_on_every_engine_and_catch_skew() {
    let m = manifest(weld_steps());
    let pipeline = Pipeline::new(&m, Limits::default());
    let inputs = tiles();
    let set = vigil_engine::golden::record(&mut *reference(&m, 1), &pipeline, &inputs).unwrap();
    assert_eq!(set.cases.len(), 6);
    let cases: Vec<_> = set
        .cases
        .iter()
        .zip(&inputs)
        .map(|(c, (_, b))| (c, b.clone()))
        .collect();
    // The bundle's default tolerance (1e-4 absolute + 1e-3 relative) is what each engine must
    // meet, and `check` enforces it. Measured largest absolute differences from the recording,
    // over all six tiles and both outputs (x86-64 with AVX-512, debug and release alike): ONNX
    // Runtime with two threads 0; tract 0.23.9 with two threads 1.9e-6, a fiftieth of the
    // absolute tolerance. The tighter bound below catches an engine drifting towards the
    // tolerance long before bundles would fail, and still leaves room for other SIMD kernels.
    assert_eq!(m.golden, GoldenTolerance::default());
    for cfg in engines(2) {
        let report =
            vigil_engine::golden::check(&mut *backend(&m, &cfg), &pipeline, &cases, m.golden)
                .unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
        assert_eq!(report.cases, 6);
        eprintln!("{:?}: max abs diff {:e}", cfg.kind, report.max_abs_diff);
        assert!(report.max_abs_diff <= 1e-5, "{cfg:?}: {report:?}");
    }

    // The same model behind a different preprocessing (scale instead of standardise) must be
    // caught as skew, before any output is compared.
    let mut skewed = weld_steps();
    skewed[3] = Step::Scale {
        factor: 1.0 / 255.0,
    };
    for cfg in engines(1) {
        let err = vigil_engine::golden::check(
            &mut *backend(&m, &cfg),
            &Pipeline::from_steps(skewed.clone(), Limits::default()),
            &cases,
            m.golden,
        )
        .unwrap_err();
        assert!(err.to_string().contains("training-serving skew"), "{err}");
    }
}

#[test]
fn a_batch_gives_the_same_answers_as_single_images() {
    let m = manifest(weld_steps());
    let pipeline = Pipeline::new(&m, Limits::default());
    let tensors: Vec<_> = tiles()
        .iter()
        .map(|(_, bytes)| pipeline.run(bytes).unwrap())
        .collect();
    let refs: Vec<_> = tensors.iter().collect();
    for cfg in engines(2) {
        let mut b = backend(&m, &cfg);
        // Batch sizes 6, 1 and 3, then 6 again: tract builds a plan for each size once and
        // reuses it; ONNX Runtime takes the dynamic dimension as it is.
        for _ in 0..2 {
            let batch = b.run(&Batch::stack(&refs).unwrap()).unwrap();
            assert_eq!(batch["probabilities"].shape, vec![6, 4]);
            assert_eq!(batch["embedding"].shape, vec![6, 128]);
            for (i, t) in tensors.iter().enumerate() {
                let single = b.run(&Batch::stack(&[t]).unwrap()).unwrap();
                for (a, e) in batch["probabilities"]
                    .item(i)
                    .iter()
                    .zip(&single["probabilities"].data)
                {
                    assert!(
                        GoldenTolerance::default().accepts(*a, *e),
                        "{cfg:?} item {i}: {a} vs {e}"
                    );
                }
            }
            let three = b.run(&Batch::stack(&refs[3..]).unwrap()).unwrap();
            assert_eq!(three["probabilities"].shape, vec![3, 4]);
            for (a, e) in three["probabilities"]
                .data
                .iter()
                .zip(&batch["probabilities"].data[3 * 4..])
            {
                assert!(GoldenTolerance::default().accepts(*a, *e), "{cfg:?}");
            }
        }
    }
}

#[test]
fn wrong_tensors_are_typed_errors() {
    let m = manifest(weld_steps());
    for cfg in engines(1) {
        let mut b = backend(&m, &cfg);
        let err = b
            .run(&Batch {
                shape: [1, 1, 128, 128],
                data: vec![0.0; 10],
            })
            .unwrap_err();
        assert!(matches!(err, Error::Shape(_)), "{cfg:?}: {err}");
        // Checked against the manifest before the engine sees it, so both engines say the
        // same thing (ONNX Runtime alone would fail the run).
        let err = b
            .run(&Batch {
                shape: [1, 3, 128, 128],
                data: vec![0.0; 3 * 128 * 128],
            })
            .unwrap_err();
        assert!(matches!(err, Error::Shape(_)), "{cfg:?}: {err}");
        assert!(err.to_string().contains("[-1, 1, 128, 128]"), "{err}");
        // The backend is still usable after refusing a tensor.
        let ok = b.run(&Batch {
            shape: [1, 1, 128, 128],
            data: vec![0.0; 128 * 128],
        });
        assert!(ok.is_ok(), "{cfg:?}: {ok:?}");
    }
    let big = Pipeline::new(&m, Limits::default())
        .run(&vigil_engine::preprocess::synthetic_png(64, 64, 1, 0))
        .unwrap();
    let small_steps = vec![
        Step::Decode,
        Step::Grey,
        Step::Layout {
            order: Layout::Nchw,
        },
    ];
    let small = Pipeline::from_steps(small_steps, Limits::default())
        .run(&vigil_engine::preprocess::synthetic_png(8, 8, 1, 0))
        .unwrap();
    assert!(matches!(
        Batch::stack(&[&big, &small]),
        Err(Error::Shape(_))
    ));
}

#[test]
fn a_model_needing_a_newer_opset_is_refused_before_loading() {
    let mut m = manifest(weld_steps());
    for cfg in engines(1) {
        vigil_engine::check_requirements(&m, cfg.kind).unwrap();
    }
    m.engine.opsets.insert(String::new(), 99);
    let err = OrtBackend::load(&model(), &m, &EngineConfig::default()).unwrap_err();
    assert!(err.to_string().contains("opset 99"), "{err}");
    for cfg in engines(1) {
        let err = vigil_engine::load(&model(), &m, &cfg).unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{cfg:?}: {err}");
        assert!(err.to_string().contains("opset 99"), "{cfg:?}: {err}");
    }
    m.engine.opsets.insert(String::new(), 17);
    m.engine.opsets.insert("com.example.custom".into(), 1);
    assert!(vigil_engine::ort::check_requirements(&m).is_err());
    for cfg in engines(1) {
        let err = vigil_engine::check_requirements(&m, cfg.kind).unwrap_err();
        assert!(err.to_string().contains("com.example.custom"), "{err}");
    }
}

#[test]
fn a_model_that_is_not_onnx_is_refused_at_load() {
    let m = manifest(weld_steps());
    for cfg in engines(1) {
        let err = vigil_engine::load(b"not a model", &m, &cfg).unwrap_err();
        assert!(matches!(err, Error::Load(_)), "{cfg:?}: {err}");
    }
}

#[cfg(not(feature = "tract"))]
#[test]
fn tract_is_refused_when_it_is_not_compiled_in() {
    let m = manifest(weld_steps());
    let cfg = EngineConfig {
        kind: EngineKind::Tract,
        ..EngineConfig::default()
    };
    let expected = "this build has no tract engine; rebuild with --features tract";
    let err = vigil_engine::load(&model(), &m, &cfg).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    assert!(err.to_string().contains(expected), "{err}");
    let err = vigil_engine::check_requirements(&m, EngineKind::Tract).unwrap_err();
    assert!(err.to_string().contains(expected), "{err}");
}

// There is no GPU here, so the CUDA path is tested only for its refusal: asking for CUDA where
// it cannot be had is an error at load, never a panic and never a silent run on the CPU.
#[test]
fn cuda_without_a_cuda_build_is_a_clear_error_at_load() {
    let m = manifest(weld_steps());
    for mut cfg in engines(1) {
        cfg.device = Device::Cuda { device_id: 0 };
        let err = vigil_engine::load(&model(), &m, &cfg).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("cuda:0"), "{cfg:?}: {msg}");
        match cfg.kind {
            EngineKind::Tract => {
                assert!(matches!(err, Error::Unsupported(_)), "{msg}");
                assert!(msg.contains("CPU only"), "{msg}");
            }
            // The library in third_party/ is ONNX Runtime's CPU build.
            EngineKind::OnnxRuntime if cfg!(feature = "cuda") => {
                assert!(matches!(err, Error::Load(_)), "{msg}");
                assert!(msg.contains("a build without CUDA"), "{msg}");
            }
            EngineKind::OnnxRuntime => {
                assert!(matches!(err, Error::Unsupported(_)), "{msg}");
                assert!(msg.contains("--features cuda"), "{msg}");
            }
        }
    }
}
