//! `vigil train` end to end: exit codes, bad data refused before training, a quick real run.

use std::path::Path;

use crate::common::*;

/// A few real weld tiles: two training films, one validation film, with a manifest.
fn tiny_dataset(env: &Env) -> std::path::PathBuf {
    dataset(env, 4)
}

/// Four tiles per label of two training films, and `val` per label of one validation film.
fn dataset(env: &Env, val: usize) -> std::path::PathBuf {
    let weld = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/weld");
    let dir = env.path("tiles");
    let mut csv = String::from("path,label,split\n");
    for (split, film) in [
        ("train", "RRT-13R"),
        ("train", "RRT-28R"),
        ("val", "RRT-106R"),
    ] {
        for label in ["defect", "no_defect"] {
            let src = weld.join(split).join(label);
            let mut names: Vec<String> = std::fs::read_dir(&src)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.starts_with(&format!("{film}_x")))
                .collect();
            names.sort();
            std::fs::create_dir_all(dir.join(split).join(label)).unwrap();
            let take = if split == "val" { val } else { 4 };
            for n in names.iter().take(take) {
                std::fs::copy(src.join(n), dir.join(split).join(label).join(n)).unwrap();
                csv.push_str(&format!("{split}/{label}/{n},{label},{split}\n"));
            }
        }
    }
    std::fs::write(dir.join("manifest.csv"), csv).unwrap();
    dir.join("manifest.csv")
}

/// One epoch of the smallest network on `data`, written to `out`.
fn quick_train(env: &Env, data: &Path, out: &Path) -> Run {
    env.run(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--arch",
        "weldnet-xs",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--out",
        out.to_str().unwrap(),
    ])
}

#[test]
fn train_writes_a_bundle_that_verifies_and_prints_the_validation_summary() {
    let env = Env::new();
    let data = tiny_dataset(&env);
    let out = env.path("model");
    quick_train(&env, &data, &out)
        .ok()
        .says("ROC-AUC")
        .says("RRT-106R")
        .says("report.html");
    env.run(&["bundle", "verify", out.to_str().unwrap()]).ok();
    // The bundle can be pushed like any other.
    env.run(&["models", "push", out.to_str().unwrap()]).ok();
    // The same output again is a conflict, and nothing is overwritten.
    env.run(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--arch",
        "weldnet-xs",
        "--out",
        out.to_str().unwrap(),
    ])
    .code(4)
    .says("already exists");
}

/// With enough validation tiles the bundle carries a reference profile: the model's signals
/// from the validation film, the image statistics from every film, calibrated on contiguous
/// windows.
#[test]
fn train_builds_a_reference_with_image_statistics_from_every_film() {
    let env = Env::new();
    let data = dataset(&env, 52);
    let out = env.path("model");
    quick_train(&env, &data, &out).ok();
    let b = vigil_core::bundle::Bundle::open(&out).unwrap();
    let profile = vigil_core::monitor::ReferenceProfile::from_json(
        &b.read_file(vigil_core::bundle::REFERENCE_FILE).unwrap(),
    )
    .unwrap();
    assert_eq!(profile.images, 104);
    assert_eq!(profile.stat_images, Some(120));
    assert_eq!(profile.drift.window, 25);
    assert_eq!(profile.drift.block_length, 25);
    assert!(
        profile.source.contains("image statistics from all"),
        "{}",
        profile.source
    );
}

#[test]
fn bad_data_and_bad_settings_are_refused_with_clear_errors() {
    let env = Env::new();
    let data = tiny_dataset(&env);
    let text = std::fs::read_to_string(&data).unwrap();
    std::fs::write(
        &data,
        format!("{text}train/defect/missing.png,defect,train\n"),
    )
    .unwrap();
    env.run(&["train", "--data", data.to_str().unwrap(), "--out", "o"])
        .code(5)
        .says("missing.png: cannot read it");
    env.run(&["train", "--data", "nowhere.csv", "--out", "o"])
        .code(3)
        .says("no dataset");
    env.run(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        "o",
        "--arch",
        "vgg",
    ])
    .code(5)
    .says("unknown architecture");
    assert!(!env.path("o").exists());
    env.run(&["train", "--help"])
        .ok()
        .says("--command")
        .says("Splits go by film");
}

#[test]
fn ctrl_c_stops_training_and_keeps_the_best_epoch() {
    use std::io::{BufRead as _, BufReader};
    use std::process::Stdio;
    let env = Env::new();
    let data = tiny_dataset(&env);
    let out = env.path("model");
    let mut child = env
        .cmd()
        .args([
            "train",
            "--data",
            data.to_str().unwrap(),
            "--arch",
            "weldnet-xs",
            "--epochs",
            "100000",
            "--patience",
            "100000",
            "--batch-size",
            "8",
            "--out",
            out.to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the first finished epoch, then press Ctrl-C (SIGINT).
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("epoch ") || !line.contains("val ROC-AUC") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no epoch finished"
        );
    }
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(rest.contains("holds the best epoch so far"), "{rest}");
    env.run(&["bundle", "verify", out.to_str().unwrap()]).ok();
}
