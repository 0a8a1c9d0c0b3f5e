//! Training end to end on real tiles: a complete bundle, determinism, fine-tuning, Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};

use vigil_core::bundle::{Bundle, DecisionRule, MODEL_FILE, REPORT_FILE};
use vigil_core::eval::EpochRecord;
use vigil_engine::preprocess::{Limits, Pipeline};
use vigil_train::{Error, Progress, Quiet, Stop, TrainReport};

use crate::common;

#[test]
fn training_writes_a_complete_verified_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::small(dir.path());
    let out = dir.path().join("bundle");
    let outcome = vigil_train::train(
        &common::request(data, out.clone()),
        &Quiet,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(outcome.stop, Stop::Completed);
    let b = Bundle::open(&out).unwrap();
    b.verify_files().unwrap();
    let m = b.manifest();
    assert_eq!(m.provenance.extra["arch"], "weldnet-xs");
    assert_eq!(m.provenance.extra["seed"], "42");
    assert!(m.provenance.training_data.is_some());
    assert_eq!(m.provenance.trainer, "vigil-train weldnet-xs");
    let DecisionRule::Threshold {
        positive,
        threshold,
        review_band: Some([lo, hi]),
    } = &m.decision
    else {
        panic!("a threshold rule with a review band: {:?}", m.decision);
    };
    assert_eq!(positive.as_str(), "defect");
    assert!(lo <= threshold && threshold <= hi);
    // The threshold reaches the target recall on validation, as the report says.
    let report: TrainReport = serde_json::from_slice(&b.read_file(REPORT_FILE).unwrap()).unwrap();
    assert!(report.validation.counts.recall.unwrap() >= 0.95);
    assert_eq!(report.validation.threshold, *threshold);
    assert_eq!(report.history.len(), 2);
    assert!(report.export_max_abs_diff.unwrap() < 1e-4);
    let html = String::from_utf8(b.read_file("report.html").unwrap()).unwrap();
    assert!(html.contains("<svg") && html.contains("RRT-106R"));
    // Golden outputs check on the serving engine.
    let model = b.read_file(MODEL_FILE).unwrap();
    let mut backend =
        vigil_engine::load(&model, m, &vigil_engine::EngineConfig::default()).unwrap();
    let golden = b.golden().unwrap().unwrap();
    assert_eq!(golden.cases.len(), 4);
    let cases: Vec<_> = golden
        .cases
        .iter()
        .map(|c| (c, b.read_file(&c.input).unwrap()))
        .collect();
    vigil_engine::golden::check(
        backend.as_mut(),
        &Pipeline::new(m, Limits::default()),
        &cases,
        m.golden,
    )
    .unwrap();
}

#[test]
fn the_same_seed_gives_the_same_model_and_another_seed_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::small(dir.path());
    let run = |name: &str, seed: u64| {
        let mut req = common::request(data.clone(), dir.path().join(name));
        req.train.epochs = 1;
        req.train.seed = seed;
        vigil_train::train(&req, &Quiet, &AtomicBool::new(false)).unwrap();
        std::fs::read(dir.path().join(name).join(MODEL_FILE)).unwrap()
    };
    let a = run("a", 3);
    let b = run("b", 3);
    let c = run("c", 4);
    assert!(a == b, "same seed and threads, different weights");
    assert!(a != c, "another seed gave the same weights");
}

/// Sets the stop flag when the first epoch ends, as Ctrl-C would.
struct StopAfterFirst<'a>(&'a AtomicBool);
impl Progress for StopAfterFirst<'_> {
    fn epoch_finished(&self, _r: &EpochRecord, _best: bool) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn interrupting_keeps_the_best_epoch_and_fine_tuning_starts_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::small(dir.path());
    let first = dir.path().join("first");
    let stop = AtomicBool::new(false);
    let mut req = common::request(data.clone(), first.clone());
    req.train.epochs = 5;
    let outcome = vigil_train::train(&req, &StopAfterFirst(&stop), &stop).unwrap();
    assert_eq!(outcome.stop, Stop::Interrupted);
    assert_eq!(outcome.report.history.len(), 1);
    assert_eq!(outcome.report.training["best_epoch"], "1");
    Bundle::open(&first).unwrap().verify_files().unwrap();

    // Fine-tune from it: architecture, labels and preprocessing come from the bundle.
    let mut tune = common::request(data, dir.path().join("tuned"));
    tune.arch = "weldnet-s".into(); // ignored: --init decides
    tune.init = Some(first.clone());
    tune.train.epochs = 1;
    let tuned = vigil_train::train(&tune, &Quiet, &AtomicBool::new(false)).unwrap();
    let m = tuned.bundle.manifest();
    assert_eq!(m.provenance.extra["arch"], "weldnet-xs");
    assert_eq!(
        m.provenance.extra["init"],
        Bundle::open(&first).unwrap().digest().to_string()
    );

    // Data with a label the bundle does not know is refused before training.
    let other = tempfile::tempdir().unwrap();
    let manifest = common::small(other.path());
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace(",no_defect,", ",porosity,");
    std::fs::write(&manifest, text).unwrap();
    let mut bad = common::request(manifest, dir.path().join("bad"));
    bad.init = Some(first);
    let err = vigil_train::train(&bad, &Quiet, &AtomicBool::new(false)).unwrap_err();
    assert!(
        matches!(&err, Error::Data { .. })
            && err
                .to_string()
                .contains("\"porosity\" is not one of the model's labels"),
        "{err}"
    );
    assert!(!dir.path().join("bad").exists());
}

#[test]
fn settings_that_cannot_train_are_refused_before_loading_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut req = common::request(dir.path().join("missing.csv"), dir.path().join("o"));
    req.train.epochs = 0;
    let err = vigil_train::train(&req, &Quiet, &AtomicBool::new(false)).unwrap_err();
    assert!(err.to_string().contains("--epochs"), "{err}");
    let mut req = common::request(dir.path().join("missing.csv"), dir.path().join("o"));
    req.arch = "resnet-9000".into();
    let data = common::small(dir.path());
    req.data = data;
    let err = vigil_train::train(&req, &Quiet, &AtomicBool::new(false)).unwrap_err();
    assert!(err.to_string().contains("unknown architecture"), "{err}");
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    let req = common::request(dir.path().join("manifest.csv"), dir.path().join("taken"));
    let err = vigil_train::train(&req, &Quiet, &AtomicBool::new(false)).unwrap_err();
    assert!(matches!(err, Error::Exists(_)), "{err}");
}
