//! `vigil drift report`: the real weld model with a reference built from the real validation
//! tiles; the same kind of tiles give no drift (exit 0), brightened and blurred ones give
//! drift (exit 1) named in plain words, a bundle without a reference is refused (exit 5).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vigil_core::bundle::{
    self, Bundle, BundleWriter, MANIFEST_FILE, REFERENCE_FILE, SIGNATURE_FILE,
};
use vigil_core::monitor::{Observation, ReferenceConfig, ReferenceProfile};
use vigil_engine::preprocess::{Limits, Pipeline};

use crate::common::Env;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The validation tiles, film by film (sorted by file name across both class folders, so
/// that the tiles of one film are adjacent, as acquired).
fn val_tiles() -> Vec<PathBuf> {
    let mut tiles: Vec<PathBuf> = ["defect", "no_defect"]
        .iter()
        .flat_map(|c| {
            std::fs::read_dir(repo().join("data/weld/val").join(c))
                .unwrap()
                .map(|e| e.unwrap().path())
        })
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    tiles.sort_by_key(|p| p.file_name().unwrap().to_owned());
    tiles
}

/// `n` of the validation tiles, evenly spread.
fn some_tiles(n: usize) -> Vec<PathBuf> {
    let all = val_tiles();
    (0..n).map(|k| all[k * all.len() / n].clone()).collect()
}

/// The shipped bundle unpacked, and the same bundle with a reference profile of the
/// validation tiles (windows of 50), built once per test binary.
struct Fixture {
    _dir: tempfile::TempDir,
    plain: PathBuf,
    with_reference: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let shipped = dir.path().join("shipped");
        std::fs::create_dir(&shipped).unwrap();
        bundle::unpack(&repo().join("models/weldnet.tar"), &shipped).unwrap();
        let b = Bundle::open(&shipped).unwrap();
        let manifest = b.manifest().clone();
        // The shipped bundle carries its own reference: these tests build theirs, and a copy
        // without any.
        let files: Vec<(String, Vec<u8>)> = bundle::list_files(&shipped)
            .unwrap()
            .into_iter()
            .filter(|rel| rel != MANIFEST_FILE && rel != SIGNATURE_FILE && rel != REFERENCE_FILE)
            .map(|rel| {
                let bytes = b.read_file(&rel).unwrap();
                (rel, bytes)
            })
            .collect();
        let plain = dir.path().join("weldnet");
        let mut writer = BundleWriter::new(manifest.clone());
        for (rel, bytes) in &files {
            writer.add_file(rel, bytes.clone()).unwrap();
        }
        writer.write(&plain).unwrap();
        let model = b.read_file(vigil_core::bundle::MODEL_FILE).unwrap();
        let mut backend =
            vigil_engine::load(&model, &manifest, &vigil_engine::EngineConfig::default()).unwrap();
        let pipeline = Pipeline::new(&manifest, Limits::default()).observing();
        let observations: Vec<Observation> = val_tiles()
            .iter()
            .map(|p| {
                let bytes = std::fs::read(p).unwrap();
                vigil_engine::observe::observe(&manifest, &pipeline, backend.as_mut(), &bytes, 16)
                    .unwrap()
            })
            .collect();
        let labels: Vec<String> = manifest
            .model
            .labels
            .iter()
            .map(|l| l.to_string())
            .collect();
        let cfg = ReferenceConfig {
            window: 50,
            every: 10,
            alpha: 0.01,
            block_length: 10,
            calibration_windows: 1000,
            validation_windows: 200,
            embedding_sample: 300,
            mmd_vectors: 150,
            seed: 7,
            ..ReferenceConfig::default()
        };
        let profile =
            ReferenceProfile::build(&observations, &labels, "data/weld/val (test)", &cfg).unwrap();
        let mut writer = BundleWriter::new(manifest);
        for (rel, bytes) in files {
            writer.add_file(&rel, bytes).unwrap();
        }
        writer
            .add_file(REFERENCE_FILE, profile.to_json().unwrap())
            .unwrap();
        let with_reference = dir.path().join("weldnet-ref");
        writer.write(&with_reference).unwrap();
        Fixture {
            _dir: dir,
            plain,
            with_reference,
        }
    })
}

fn args<'a>(bundle: &'a Path, out: &'a Path, inputs: &'a [PathBuf]) -> Vec<&'a str> {
    let mut a = vec![
        "drift",
        "report",
        "--bundle",
        bundle.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--input",
    ];
    a.extend(inputs.iter().map(|p| p.to_str().unwrap()));
    a
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn tiles_like_the_validation_set_show_no_drift() {
    let f = fixture();
    let env = Env::new();
    let out = env.path("report/drift.html");
    let tiles = some_tiles(150);
    env.run(&args(&f.with_reference, &out, &tiles))
        .ok()
        .says("No drift")
        .says("drift.json");
    let page = std::fs::read_to_string(&out).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("How to read this"));
    assert!(!page.contains("<script"));
    let v = json(&env.path("report/drift.json"));
    assert_eq!(v["overall"]["drift"], false, "{}", v["overall"]["summary"]);
    assert_eq!(v["images"], 150);
    assert_eq!(v["current"]["kind"], "folder");
    assert_eq!(v["ood"]["scored"], 150);
    assert_eq!(v["timeline"].as_array().unwrap().len(), 0);
}

#[test]
fn brightened_and_blurred_tiles_drift_and_exit_1() {
    let f = fixture();
    let env = Env::new();
    let folder = env.path("new-films");
    std::fs::create_dir(&folder).unwrap();
    for p in some_tiles(150) {
        let img = image::open(&p).unwrap().to_luma8();
        let mut img = image::imageops::blur(&img, 1.5);
        for px in img.pixels_mut() {
            px.0[0] = (f32::from(px.0[0]) * 1.4).min(255.0) as u8;
        }
        img.save(folder.join(p.file_name().unwrap())).unwrap();
    }
    // An unreadable file is skipped with a warning, not fatal.
    std::fs::write(folder.join("broken.png"), b"not a png").unwrap();
    let out = env.path("drift.html");
    let run = env
        .run(&args(&f.with_reference, &out, &[folder]))
        .code(1)
        .says("Drift:")
        .says("broken.png");
    assert!(run.stdout.contains("blurrier"), "{}", run.stdout);
    let v = json(&env.path("drift.json"));
    assert_eq!(v["overall"]["drift"], true);
    let drifted: Vec<&str> = v["overall"]["drifted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(drifted.contains(&"stat.sharpness"), "{drifted:?}");
    // The tiles are bright already: ×1.4 mostly clips them (saturated), the mean moves
    // less than from film to film.
    assert!(drifted.contains(&"stat.saturated"), "{drifted:?}");
    assert_eq!(v["current"]["images"], 151);
    assert_eq!(v["current"]["skipped"], 1);
    let page = std::fs::read_to_string(&out).unwrap();
    assert!(page.contains("verdict drift"));
}

#[test]
fn a_bundle_without_a_reference_is_refused_with_how_to_add_one() {
    let f = fixture();
    let env = Env::new();
    let out = env.path("drift.html");
    env.run(&args(&f.plain, &out, &some_tiles(3)))
        .code(5)
        .says("no reference profile")
        .says("vigil bundle create --reference");
    assert!(!out.exists());
}

#[test]
fn an_empty_prediction_log_is_a_clear_error() {
    let f = fixture();
    let env = Env::new();
    let out = env.path("drift.html");
    env.run(&[
        "drift",
        "report",
        "--bundle",
        f.with_reference.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--since",
        "2h",
    ])
    .code(3)
    .says("no predictions of weldnet 1.0.0 were logged");
    assert!(!out.exists());
}

/// `vigil drift simulate --export`: a tiny case (60 tiles, windows of 50 every 10, a stream
/// of 100: 6 in-distribution windows) writes files whose sizes match `windows.json`, with
/// the same in-distribution verdicts as the false-alarm count; a non-empty folder is refused.
#[test]
fn simulate_export_writes_consistent_sizes_and_refuses_a_non_empty_folder() {
    let f = fixture();
    let env = Env::new();
    let tiles = some_tiles(60);
    let results = env.path("efficacy.json");
    let simulate = |dir: &Path| {
        let mut a: Vec<String> = [
            "drift",
            "simulate",
            "--bundle",
            f.with_reference.to_str().unwrap(),
            "--stream",
            "100",
            "--trials",
            "1",
            "--block",
            "10",
            "--json",
            results.to_str().unwrap(),
            "--export-windows",
            "100",
            "--export-changed",
            "2",
            "--export",
            dir.to_str().unwrap(),
            "--data",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(tiles.iter().map(|p| p.display().to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        env.run(&refs)
    };

    let busy = env.path("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep.txt"), "mine").unwrap();
    simulate(&busy).code(4).says("is not empty");
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);

    let dir = env.path("export");
    simulate(&dir).ok().says("exported 10 windows");
    let index = json(&dir.join("windows.json"));
    let dim = index["dim"].as_u64().unwrap();
    assert_eq!(index["window"], 50);
    assert_eq!(index["reference_rows"], 150);
    assert_eq!(index["bundle"], "weldnet:1.0.0");
    let len = |name: &str| std::fs::metadata(dir.join(name)).unwrap().len();
    assert_eq!(len("reference.f32"), 150 * dim * 4);
    let windows = index["windows"].as_array().unwrap();
    let kinds: Vec<&str> = windows
        .iter()
        .map(|w| w["kind"].as_str().unwrap())
        .collect();
    assert_eq!(&kinds[..6], ["in_distribution"; 6]);
    assert!(
        kinds[6].starts_with("new detector") && kinds[7] == kinds[6],
        "{kinds:?}"
    );
    assert!(
        kinds[8].starts_with("exposure change") && kinds[9] == kinds[8],
        "{kinds:?}"
    );
    let fa = &json(&results)["false_alarms"];
    assert_eq!(fa["evaluations"], 6);
    let alarming = windows[..6]
        .iter()
        .filter(|w| w["vigil"]["drift"] == true)
        .count();
    assert_eq!(fa["alarming_evaluations"], alarming);
    let mut offset = 0;
    for w in windows {
        assert_eq!(w["offset_rows"].as_u64().unwrap(), offset);
        assert_eq!(w["rows"], 50);
        offset += 50;
        let v = &w["vigil"];
        assert!(v["drift"].is_boolean() && v["drifted"].is_array(), "{v}");
        assert!(v["mmd_statistic"].as_f64().is_some(), "{v}");
        assert!(v["mmd_threshold"].as_f64().unwrap() > 0.0, "{v}");
        assert!(
            v["mmd_drift"].is_boolean() && v["mmd_p_value"].as_f64().is_some(),
            "{v}"
        );
        assert!(v["evaluate_seconds"].as_f64().unwrap() > 0.0, "{v}");
    }
    assert_eq!(len("windows.f32"), offset * dim * 4);
    // Nothing else in the folder (no staging leftovers beside it either).
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
    assert!(std::fs::read_dir(env.dir.path()).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".vigil-export-")
    }));
}

/// `vigil bundle reference --stats-data --block-length`: the image statistics come from the
/// other images (training tiles here), the model's signals from `--data`; a block length
/// past the window is cut to the window; image-statistics images beside a profile file
/// included as is are refused, and nothing is written.
#[test]
fn bundle_reference_takes_image_statistics_from_other_images() {
    let f = fixture();
    let env = Env::new();
    let mut train: Vec<PathBuf> = std::fs::read_dir(repo().join("data/weld/train/no_defect"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    train.sort();
    train.truncate(150);
    let out = env.path("weldnet-stats");
    let mut a: Vec<String> = ["bundle", "reference"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.push(f.plain.display().to_string());
    a.extend(
        [
            "--window",
            "25",
            "--block-length",
            "500",
            "--false-alarms",
            "0.5",
            "--out",
        ]
        .map(String::from),
    );
    a.push(out.display().to_string());
    a.push("--data".into());
    a.extend(some_tiles(100).iter().map(|p| p.display().to_string()));
    a.push("--stats-data".into());
    a.extend(train.iter().map(|p| p.display().to_string()));
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    env.run(&refs).ok();
    let profile = ReferenceProfile::from_json(
        &Bundle::open(&out)
            .unwrap()
            .read_file(REFERENCE_FILE)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(profile.images, 100);
    assert_eq!(profile.stat_images, Some(150));
    assert_eq!(profile.drift.block_length, 25);
    assert!(profile.drift.stat_holdout.is_some());
    // Half an alarming window per 10,000 images, a window every `every` images.
    let alpha = 0.5 * profile.drift.every as f64 / 10_000.0;
    assert!(
        (profile.drift.alpha - alpha).abs() < 1e-12,
        "{}",
        profile.drift.alpha
    );
    assert!(profile.drift.calibration_windows as f64 >= 20.0 / alpha);
    assert!(
        profile.source.contains("image statistics from"),
        "{}",
        profile.source
    );

    let json_profile = env.path("reference.json");
    std::fs::write(&json_profile, profile.to_json().unwrap()).unwrap();
    let refused = env.path("refused");
    env.run(&[
        "bundle",
        "reference",
        f.plain.to_str().unwrap(),
        "--data",
        json_profile.to_str().unwrap(),
        "--stats-data",
        train[0].to_str().unwrap(),
        "--out",
        refused.to_str().unwrap(),
    ])
    .code(5)
    .says("included as is");
    assert!(!refused.exists());

    // No false alarms at all is not a rate a test can be calibrated to.
    let tiles: Vec<String> = some_tiles(100)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut a: Vec<&str> = vec!["bundle", "reference", f.plain.to_str().unwrap()];
    a.extend(["--window", "25", "--false-alarms", "0", "--out"]);
    a.push(refused.to_str().unwrap());
    a.push("--data");
    a.extend(tiles.iter().map(String::as_str));
    env.run(&a).code(5).says("false alarms per 10,000 images");
    assert!(!refused.exists());
}
