//! The external trainer hook: a team's own command writes the ONNX file, Vigil packages and
//! evaluates it exactly like its own.

use std::sync::atomic::AtomicBool;

use burn::tensor::Device;
use vigil_core::bundle::Bundle;
use vigil_train::external::train_external;
use vigil_train::{Arch, Error};

use crate::common;

/// A model file the "external trainer" will hand back (a fresh tiny network).
fn model_file(dir: &std::path::Path) -> std::path::PathBuf {
    let arch = Arch::by_name("weldnet-xs").unwrap();
    let net = arch.init(1, 2, &Device::flex(), 1);
    let bytes = vigil_train::export::to_onnx(
        &net,
        arch,
        [1, 128, 128],
        &["defect".into(), "no_defect".into()],
    )
    .unwrap();
    let path = dir.join("their-model.onnx");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn the_command_gets_the_dataset_and_its_model_is_packaged() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::small(dir.path());
    let model = model_file(dir.path());
    let seen = dir.path().join("seen.txt");
    // A tiny "trainer": records what it was given and writes its model to $VIGIL_OUTPUT.
    let script = format!(
        "echo \"$VIGIL_LABELS|$VIGIL_INPUT_SHAPE|$VIGIL_SEED\" > {seen}; \
         wc -l < \"$VIGIL_DATASET\" >> {seen}; grep -c '^op' \"$VIGIL_PREPROCESS\" >> {seen}; \
         cp {model} \"$VIGIL_OUTPUT\"",
        seen = seen.display(),
        model = model.display()
    );
    let out = dir.path().join("bundle");
    let outcome = train_external(
        &common::request(data, out.clone()),
        &script,
        &AtomicBool::new(false),
    )
    .unwrap();
    let seen = std::fs::read_to_string(seen).unwrap();
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[0], "defect,no_defect|1,128,128|42");
    assert_eq!(lines[1].trim(), "37", "a header and 36 images");
    assert_eq!(lines[2].trim(), "5", "the five preprocessing steps");
    let b = Bundle::open(&out).unwrap();
    b.verify_files().unwrap();
    assert_eq!(b.manifest().provenance.trainer, "external");
    assert_eq!(b.manifest().provenance.extra["command"], script);
    assert!(outcome.report.history.is_empty());
    assert!(outcome.report.validation.roc_auc.is_finite());
    assert_eq!(
        b.read_file("model.onnx").unwrap(),
        std::fs::read(model).unwrap()
    );
}

#[test]
fn a_failing_command_or_a_missing_model_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::small(dir.path());
    let out = dir.path().join("bundle");
    for (script, says) in [
        ("exit 3", "failed"),
        ("true", "wrote no model"),
        (
            "echo nonsense > \"$VIGIL_OUTPUT\"",
            "not a valid ONNX model",
        ),
    ] {
        let err = train_external(
            &common::request(data.clone(), out.clone()),
            script,
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert!(err.to_string().contains(says), "{script}: {err}");
        assert!(
            matches!(err, Error::External(_) | Error::Bundle(_)),
            "{err:?}"
        );
        assert!(!out.exists());
    }
}
