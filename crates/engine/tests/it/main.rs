//! Conformance of the ONNX Runtime engine on the reference weld model: golden outputs
//! reproduce, batches agree with single images, and bad tensors are typed errors.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use vigil_core::bundle::{
    DecisionRule, EngineRequirements, FORMAT_VERSION, GoldenTolerance, Layout, Manifest,
    ModelSection, OutputRoles, Provenance, ResizeFilter, Step, Task,
};
use vigil_engine::preprocess::{Limits, Pipeline};
use vigil_engine::{Backend, Batch, EngineConfig, Error, OrtBackend};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

fn model() -> Vec<u8> {
    std::fs::read(testdata().join("weldnet-s.onnx")).unwrap()
}

fn manifest(steps: Vec<Step>) -> Manifest {
    let info = vigil_core::onnx::inspect(&model()).unwrap();
    Manifest {
        format: FORMAT_VERSION,
        model: ModelSection {
            name: "weldnet".parse().unwrap(),
            version: "1".parse().unwrap(),
            task: Task::Classification,
            labels: ["a", "b", "c", "d"]
                .iter()
                .map(|l| l.parse().unwrap())
                .collect(),
            description: String::new(),
            created_at: chrono_now(),
            created_by: "test".into(),
        },
        inputs: info.inputs,
        outputs: info.outputs,
        roles: OutputRoles {
            probabilities: "probabilities".into(),
            embedding: Some("embedding".into()),
        },
        preprocess: steps,
        decision: DecisionRule::Argmax { review_below: None },
        provenance: Provenance::default(),
        engine: EngineRequirements {
            model_format: "onnx".into(),
            ir_version: info.ir_version,
            opsets: info.opsets,
        },
        golden: GoldenTolerance::default(),
        files: Default::default(),
    }
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    "2026-11-25T00:00:00Z".parse().unwrap()
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

fn backend(m: &Manifest, threads: usize) -> OrtBackend {
    OrtBackend::load(
        &model(),
        m,
        &EngineConfig {
            intra_threads: threads,
            library: None,
        },
    )
    .unwrap()
}

#[test]
fn the_model_gives_probabilities_and_embeddings_of_the_declared_shapes() {
    let m = manifest(weld_steps());
    let mut b = backend(&m, 1);
    let pipeline = Pipeline::new(&m, Limits::default());
    let t = pipeline.run(&tiles()[0].1).unwrap();
    let out = b.run(&Batch::stack(&[&t]).unwrap()).unwrap();
    assert_eq!(out["probabilities"].shape, vec![1, 4]);
    assert_eq!(out["embedding"].shape, vec![1, 128]);
    let sum: f32 = out["probabilities"].data.iter().sum();
    assert!((sum - 1.0).abs() < 1e-4, "probabilities sum to {sum}");
    assert!(b.describe().contains("onnxruntime 1.32.0"));
}

#[test]
fn golden_outputs_reproduce_across_thread_counts_and_catch_skew() {
    let m = manifest(weld_steps());
    let pipeline = Pipeline::new(&m, Limits::default());
    let inputs = tiles();
    let set = vigil_engine::golden::record(&mut backend(&m, 1), &pipeline, &inputs).unwrap();
    assert_eq!(set.cases.len(), 6);
    let cases: Vec<_> = set
        .cases
        .iter()
        .zip(&inputs)
        .map(|(c, (_, b))| (c, b.clone()))
        .collect();
    let report =
        vigil_engine::golden::check(&mut backend(&m, 2), &pipeline, &cases, m.golden).unwrap();
    assert_eq!(report.cases, 6);
    assert!(report.max_abs_diff <= 1e-5, "{report:?}");

    // The same model behind a different preprocessing (scale instead of standardise) must be
    // caught as skew, before any output is compared.
    let mut skewed = weld_steps();
    skewed[3] = Step::Scale {
        factor: 1.0 / 255.0,
    };
    let err = vigil_engine::golden::check(
        &mut backend(&m, 1),
        &Pipeline::from_steps(skewed, Limits::default()),
        &cases,
        m.golden,
    )
    .unwrap_err();
    assert!(err.to_string().contains("training-serving skew"), "{err}");
}

#[test]
fn a_batch_gives_the_same_answers_as_single_images() {
    let m = manifest(weld_steps());
    let mut b = backend(&m, 2);
    let pipeline = Pipeline::new(&m, Limits::default());
    let tensors: Vec<_> = tiles()
        .iter()
        .map(|(_, bytes)| pipeline.run(bytes).unwrap())
        .collect();
    let refs: Vec<_> = tensors.iter().collect();
    let batch = b.run(&Batch::stack(&refs).unwrap()).unwrap();
    assert_eq!(batch["probabilities"].shape, vec![6, 4]);
    for (i, t) in tensors.iter().enumerate() {
        let single = b.run(&Batch::stack(&[t]).unwrap()).unwrap();
        for (a, e) in batch["probabilities"]
            .item(i)
            .iter()
            .zip(&single["probabilities"].data)
        {
            assert!(
                GoldenTolerance::default().accepts(*a, *e),
                "item {i}: {a} vs {e}"
            );
        }
    }
}

#[test]
fn wrong_tensors_are_typed_errors() {
    let m = manifest(weld_steps());
    let mut b = backend(&m, 1);
    let err = b
        .run(&Batch {
            shape: [1, 1, 128, 128],
            data: vec![0.0; 10],
        })
        .unwrap_err();
    assert!(matches!(err, Error::Shape(_)), "{err}");
    let err = b
        .run(&Batch {
            shape: [1, 3, 128, 128],
            data: vec![0.0; 3 * 128 * 128],
        })
        .unwrap_err();
    assert!(matches!(err, Error::Run(_)), "{err}");
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
    m.engine.opsets.insert(String::new(), 99);
    let err = OrtBackend::load(&model(), &m, &EngineConfig::default()).unwrap_err();
    assert!(err.to_string().contains("opset 99"), "{err}");
    m.engine.opsets.insert("com.example.custom".into(), 1);
    assert!(vigil_engine::ort::check_requirements(&m).is_err());
}
