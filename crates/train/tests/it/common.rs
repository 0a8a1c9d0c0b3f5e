//! Fixtures: small real datasets and requests.

use std::path::{Path, PathBuf};

use vigil_core::bundle::Step;
use vigil_engine::preprocess::{Limits, Pipeline};
use vigil_train::augment::Augment;
use vigil_train::{Request, TrainConfig};

/// The repository's weld tiles.
pub fn weld() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/weld")
}

/// The weld tiles' preprocessing.
pub fn steps() -> Vec<Step> {
    #[derive(serde::Deserialize)]
    struct File {
        preprocess: Vec<Step>,
    }
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/weld-preprocess.toml"),
    )
    .unwrap();
    toml::from_str::<File>(&text).unwrap().preprocess
}

pub fn pipeline() -> Pipeline {
    Pipeline::from_steps(steps(), Limits::default())
}

/// A row of the manifest to write: (path in the new folder, label, split, group column).
pub type Row = (String, String, String, Option<String>);

/// `per` tiles of each label from each of the films named, copied under `dir` with a
/// manifest; training films and validation films as given.
pub fn subset(dir: &Path, train_films: &[&str], val_films: &[&str], per: usize) -> PathBuf {
    let mut rows = Vec::new();
    for (split, films) in [("train", train_films), ("val", val_films)] {
        for label in ["defect", "no_defect"] {
            let src = weld().join(split_of(films[0])).join(label);
            let mut names: Vec<String> = std::fs::read_dir(&src)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            for film in films {
                let src = weld().join(split_of(film)).join(label);
                for name in names
                    .iter()
                    .filter(|n| n.starts_with(&format!("{film}_x")))
                    .take(per)
                {
                    let rel = format!("{split}/{label}/{name}");
                    std::fs::create_dir_all(dir.join(format!("{split}/{label}"))).unwrap();
                    std::fs::copy(src.join(name), dir.join(&rel)).unwrap();
                    rows.push((rel, label.to_owned(), split.to_owned(), None));
                }
            }
        }
    }
    write_manifest(dir, &rows)
}

/// Which split of data/weld a film is in.
fn split_of(film: &str) -> &'static str {
    if ["RRT-106R", "RRT-22R"].contains(&film) {
        "val"
    } else {
        "train"
    }
}

/// Writes `manifest.csv` in `dir`.
pub fn write_manifest(dir: &Path, rows: &[Row]) -> PathBuf {
    let mut csv = String::from("path,label,split,group\n");
    for (p, l, s, g) in rows {
        csv.push_str(&format!("{p},{l},{s},{}\n", g.clone().unwrap_or_default()));
    }
    let path = dir.join("manifest.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// The standard small dataset: two training films, one validation film, 6 tiles per label
/// and film (36 images).
pub fn small(dir: &Path) -> PathBuf {
    subset(dir, &["RRT-13R", "RRT-28R"], &["RRT-106R"], 6)
}

/// A quick request on the tiny architecture.
pub fn request(data: PathBuf, out: PathBuf) -> Request {
    Request {
        data,
        arch: "weldnet-xs".into(),
        out,
        name: "weld-test".parse().unwrap(),
        version: "1.0.0".parse().unwrap(),
        preprocess: steps(),
        init: None,
        positive: None,
        target_recall: 0.95,
        train: TrainConfig {
            epochs: 2,
            batch_size: 8,
            augment: Augment::default(),
            ..TrainConfig::default()
        },
        engine: vigil_engine::EngineConfig::default(),
        actor: "test".into(),
    }
}
