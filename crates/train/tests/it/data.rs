//! Bad data is refused, completely and clearly, before any training starts.

use std::sync::atomic::AtomicBool;

use vigil_train::{Error, Quiet};

use crate::common::{self, Row};

fn train_err(data: std::path::PathBuf) -> (Error, std::path::PathBuf, tempfile::TempDir) {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("bundle");
    let err = vigil_train::train(
        &common::request(data, out.clone()),
        &Quiet,
        &AtomicBool::new(false),
    )
    .expect_err("bad data must be refused");
    assert!(!out.exists(), "nothing may be written for bad data");
    (err, out, out_dir)
}

fn problems(err: &Error) -> String {
    assert!(
        matches!(err, Error::Data { .. } | Error::NotFound(_)),
        "{err}"
    );
    err.to_string()
}

#[test]
fn a_good_manifest_loads_with_films_labels_and_a_stable_digest() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = common::small(dir.path());
    let d = vigil_train::data::load(&manifest, &common::pipeline(), None).unwrap();
    assert_eq!(d.labels.len(), 2);
    assert_eq!(d.train.len(), 24);
    assert_eq!(d.val.len(), 12);
    assert_eq!(
        vigil_train::data::Dataset::groups(&d.train),
        ["RRT-13R", "RRT-28R"]
    );
    // The same files from the folder layout give the same digest.
    std::fs::remove_file(&manifest).unwrap();
    let from_folder = vigil_train::data::load(dir.path(), &common::pipeline(), None).unwrap();
    assert_eq!(from_folder.digest, d.digest);
    // Any changed pixel changes it.
    let first = dir.path().join(&d.train[0].path);
    let mut bytes = std::fs::read(&first).unwrap();
    let other = std::fs::read(dir.path().join(&d.train[1].path)).unwrap();
    bytes.clone_from(&other);
    std::fs::write(&first, bytes).unwrap();
    let changed = vigil_train::data::load(dir.path(), &common::pipeline(), None).unwrap();
    assert_ne!(changed.digest, d.digest);
}

#[test]
fn missing_and_unreadable_files_are_all_named() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = common::small(dir.path());
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("train/defect/gone.png,defect,train,\n");
    std::fs::write(dir.path().join("train/defect/notes.png"), "not an image").unwrap();
    text.push_str("train/defect/notes.png,defect,train,\n");
    std::fs::write(&manifest, text).unwrap();
    let (err, _, _) = train_err(manifest);
    let msg = problems(&err);
    assert!(msg.contains("gone.png: cannot read it"), "{msg}");
    assert!(msg.contains("notes.png: not a usable image"), "{msg}");
}

#[test]
fn a_single_class_an_empty_split_and_a_leaking_film_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = common::small(dir.path());
    let text = std::fs::read_to_string(&manifest).unwrap();
    // Only defects.
    let only_defects: String = text
        .lines()
        .filter(|l| !l.contains(",no_defect,"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&manifest, &only_defects).unwrap();
    let msg = problems(&train_err(manifest.clone()).0);
    assert!(msg.contains("single class"), "{msg}");
    // No validation rows.
    let no_val: String = text
        .lines()
        .filter(|l| !l.contains(",val,"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&manifest, &no_val).unwrap();
    let msg = problems(&train_err(manifest.clone()).0);
    assert!(msg.contains("validation split is empty"), "{msg}");
    // A header only: nothing at all.
    std::fs::write(&manifest, "path,label,split\n").unwrap();
    let msg = problems(&train_err(manifest.clone()).0);
    assert!(msg.contains("training split is empty"), "{msg}");
    // A training film also in validation (group column).
    let leak: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i > 0 && l.contains(",val,") {
                format!("{l}RRT-13R\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&manifest, leak).unwrap();
    let msg = problems(&train_err(manifest).0);
    assert!(msg.contains("films in both splits (RRT-13R)"), "{msg}");
}

#[test]
fn a_wrong_checksum_a_bad_split_and_a_missing_dataset_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = common::small(dir.path());
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut rows: Vec<Row> = Vec::new();
    for (i, l) in text.lines().skip(1).enumerate() {
        let f: Vec<&str> = l.split(',').collect();
        let split = if i == 0 { "test" } else { f[2] };
        rows.push((f[0].into(), f[1].into(), split.into(), None));
    }
    common::write_manifest(dir.path(), &rows);
    let msg = problems(&train_err(manifest.clone()).0);
    assert!(msg.contains("split \"test\""), "{msg}");
    let mut csv = String::from("path,label,split,sha256\n");
    for (p, l, s, _) in rows.iter().skip(1) {
        csv.push_str(&format!("{p},{l},{s},{}\n", "0".repeat(64)));
    }
    std::fs::write(&manifest, csv).unwrap();
    let msg = problems(&train_err(manifest).0);
    assert!(msg.contains("its SHA-256 is"), "{msg}");
    assert!(msg.contains("more"), "long lists are cut: {msg}");
    let (err, _, _) = train_err(dir.path().join("nowhere.csv"));
    assert!(matches!(err, Error::NotFound(_)), "{err}");
}
