//! Training data: a manifest (`path,label,split[,sha256][,group]`) or a folder
//! (`train/<label>/*`, `val/<label>/*`), checked completely before any training starts.
//!
//! Splits are by group (the source film): neighbouring tiles overlap, so a film in both
//! splits would leak, and is refused. The group is the `group` column, or else the film name
//! in a tile's file name (`<film>_x<left>_y<top>.png`), or else the file itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use vigil_core::types::{Label, Sha256Digest};
use vigil_engine::preprocess::Pipeline;

use crate::{Error, Result};

/// Problems listed in one error before the rest are only counted.
const MAX_LISTED: usize = 20;

/// One image and what it is.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The path as the manifest names it (relative to the manifest's folder).
    pub path: String,
    /// Index into [`Dataset::labels`].
    pub label: usize,
    /// The source film (the unit of splitting and of the per-film report).
    pub group: String,
    /// The encoded image, as served images arrive.
    pub bytes: Vec<u8>,
}

/// A checked dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The manifest or folder it came from.
    pub source: PathBuf,
    /// Class names; a sample's label indexes this.
    pub labels: Vec<Label>,
    /// Training samples.
    pub train: Vec<Sample>,
    /// Validation samples (other films).
    pub val: Vec<Sample>,
    /// SHA-256 of the canonical listing (`split,label,path,sha256 of the file` per line,
    /// sorted): the same files and labels give the same digest whether they came from a
    /// manifest or a folder, and any changed pixel changes it.
    pub digest: Sha256Digest,
}

impl Dataset {
    /// Samples per label in a split.
    pub fn counts(samples: &[Sample], labels: usize) -> Vec<usize> {
        let mut c = vec![0; labels];
        for s in samples {
            c[s.label] += 1;
        }
        c
    }

    /// The films of a split, sorted.
    pub fn groups(samples: &[Sample]) -> Vec<String> {
        samples
            .iter()
            .map(|s| s.group.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

/// One manifest row before checking.
struct Row {
    path: String,
    label: String,
    split: String,
    sha256: Option<String>,
    group: Option<String>,
}

/// Loads and checks a dataset. `known_labels` (from a bundle being fine-tuned) fixes the label
/// order and refuses labels outside it. Every image is decoded through `pipeline`, the
/// bundle's own preprocessing, so an unreadable image is found now, not at epoch 7.
pub fn load(path: &Path, pipeline: &Pipeline, known_labels: Option<&[Label]>) -> Result<Dataset> {
    if !path.exists() {
        return Err(Error::NotFound(path.to_path_buf()));
    }
    let (root, rows) = if path.is_dir() && !path.join("manifest.csv").is_file() {
        (path.to_path_buf(), scan_folder(path)?)
    } else {
        let file = if path.is_dir() {
            path.join("manifest.csv")
        } else {
            path.to_path_buf()
        };
        let root = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        (root, read_manifest(&file)?)
    };
    let mut problems = Vec::new();
    let labels: Vec<Label> = match known_labels {
        Some(known) => known.to_vec(),
        None => {
            let names: BTreeSet<&str> = rows.iter().map(|r| r.label.as_str()).collect();
            let mut labels = Vec::new();
            for n in names {
                match n.parse::<Label>() {
                    Ok(l) => labels.push(l),
                    Err(e) => problems.push(format!("label {n:?}: {e}")),
                }
            }
            labels
        }
    };
    let mut train = Vec::new();
    let mut val = Vec::new();
    let mut listing = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(label) = labels.iter().position(|l| l.as_str() == row.label) else {
            if known_labels.is_some() {
                problems.push(format!(
                    "{}: label {:?} is not one of the model's labels ({})",
                    row.path,
                    row.label,
                    join(&labels)
                ));
            }
            continue;
        };
        let split = match row.split.as_str() {
            "train" => &mut train,
            "val" | "validation" => &mut val,
            other => {
                problems.push(format!(
                    "{}: split {other:?} is neither \"train\" nor \"val\"",
                    row.path
                ));
                continue;
            }
        };
        let file = root.join(&row.path);
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) => {
                problems.push(format!("{}: cannot read it ({e})", row.path));
                continue;
            }
        };
        let digest = Sha256Digest::of(&bytes);
        if let Some(expected) = &row.sha256
            && !expected.eq_ignore_ascii_case(&digest.to_string())
        {
            problems.push(format!(
                "{}: its SHA-256 is {digest}, the manifest says {expected}",
                row.path
            ));
            continue;
        }
        if let Err(e) = pipeline.run(&bytes) {
            problems.push(format!("{}: not a usable image ({e})", row.path));
            continue;
        }
        listing.push(format!(
            "{},{},{},{digest}\n",
            row.split, row.label, row.path
        ));
        let group = row.group.unwrap_or_else(|| film_of(&row.path));
        split.push(Sample {
            path: row.path,
            label,
            group,
            bytes,
        });
    }
    check_splits(&labels, &train, &val, &mut problems);
    if !problems.is_empty() {
        return Err(data_error(path, problems));
    }
    listing.sort();
    Ok(Dataset {
        source: path.to_path_buf(),
        labels,
        train,
        val,
        digest: Sha256Digest::of(listing.concat().as_bytes()),
    })
}

fn check_splits(labels: &[Label], train: &[Sample], val: &[Sample], problems: &mut Vec<String>) {
    for (name, split) in [("training", train), ("validation", val)] {
        if split.is_empty() {
            problems.push(format!("the {name} split is empty"));
            continue;
        }
        let counts = Dataset::counts(split, labels.len());
        let missing: Vec<&str> = labels
            .iter()
            .zip(&counts)
            .filter(|(_, c)| **c == 0)
            .map(|(l, _)| l.as_str())
            .collect();
        if counts.iter().filter(|c| **c > 0).count() < 2 {
            problems.push(format!(
                "the {name} split has a single class; a classifier needs at least two"
            ));
        } else if !missing.is_empty() && name == "training" {
            problems.push(format!(
                "the training split has no {} images",
                missing.join(", ")
            ));
        }
    }
    let train_groups: BTreeSet<String> = Dataset::groups(train).into_iter().collect();
    let shared: Vec<String> = Dataset::groups(val)
        .into_iter()
        .filter(|g| train_groups.contains(g))
        .collect();
    if !shared.is_empty() {
        problems.push(format!(
            "films in both splits ({}): neighbouring tiles overlap, so validation would see \
             training pixels; split by film",
            shared.join(", ")
        ));
    }
}

fn data_error(path: &Path, mut problems: Vec<String>) -> Error {
    if problems.len() > MAX_LISTED {
        let more = problems.len() - MAX_LISTED;
        problems.truncate(MAX_LISTED);
        problems.push(format!("... and {more} more"));
    }
    Error::Data {
        path: path.to_path_buf(),
        problems,
    }
}

fn join(labels: &[Label]) -> String {
    labels
        .iter()
        .map(Label::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The film a tile came from: `RRT-12R` for `train/defect/RRT-12R_x0064_y0251.png`; the file
/// stem when the name does not follow that pattern.
pub fn film_of(path: &str) -> String {
    let stem = Path::new(path)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(path);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((film, rest)) = stem.rsplit_once("_x")
        && let Some((x, y)) = rest.split_once("_y")
        && digits(x)
        && digits(y)
        && !film.is_empty()
    {
        return film.to_owned();
    }
    stem.to_owned()
}

fn read_manifest(file: &Path) -> Result<Vec<Row>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(file)
        .map_err(|e| data_error(file, vec![format!("cannot read the manifest: {e}")]))?;
    let headers = reader
        .headers()
        .map_err(|e| data_error(file, vec![format!("cannot read the header: {e}")]))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(p), Some(l), Some(s)) = (col("path"), col("label"), col("split")) else {
        return Err(data_error(
            file,
            vec![format!(
                "the header must name the columns path, label and split (found: {})",
                headers.iter().collect::<Vec<_>>().join(", ")
            )],
        ));
    };
    let (sha, group) = (col("sha256"), col("group"));
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let line = i + 2;
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let get = |c: usize| rec.get(c).unwrap_or("").to_owned();
        let path = get(p);
        if path.is_empty() || Path::new(&path).is_absolute() || path.contains("..") {
            problems.push(format!(
                "line {line}: path {path:?} must be relative to the manifest's folder"
            ));
            continue;
        }
        rows.push(Row {
            path,
            label: get(l),
            split: get(s),
            sha256: sha.map(get).filter(|v| !v.is_empty()),
            group: group.map(get).filter(|v| !v.is_empty()),
        });
    }
    if !problems.is_empty() {
        return Err(data_error(file, problems));
    }
    Ok(rows)
}

fn scan_folder(dir: &Path) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for split in ["train", "val"] {
        let split_dir = dir.join(split);
        let Ok(labels) = std::fs::read_dir(&split_dir) else {
            continue;
        };
        let mut by_label: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for entry in labels.flatten() {
            let Some(label) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !entry.path().is_dir() {
                continue;
            }
            let files = std::fs::read_dir(entry.path())
                .map_err(Error::io(format!("cannot list {}", entry.path().display())))?;
            for f in files.flatten() {
                if let Some(name) = f.file_name().to_str()
                    && f.path().is_file()
                    && !name.starts_with('.')
                {
                    by_label
                        .entry(label.clone())
                        .or_default()
                        .push(format!("{split}/{label}/{name}"));
                }
            }
        }
        for (label, mut paths) in by_label {
            paths.sort();
            rows.extend(paths.into_iter().map(|path| Row {
                path,
                label: label.clone(),
                split: split.to_owned(),
                sha256: None,
                group: None,
            }));
        }
    }
    if rows.is_empty() {
        return Err(data_error(
            dir,
            vec![
                "no images found: expected manifest.csv, or train/<label>/* and \
                 val/<label>/*"
                    .into(),
            ],
        ));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn film_names_come_from_tile_file_names() {
        assert_eq!(film_of("train/defect/RRT-12R_x0064_y0251.png"), "RRT-12R");
        assert_eq!(film_of("a/bam5_x1_y2.png"), "bam5");
        assert_eq!(film_of("a/photo_xmas.png"), "photo_xmas");
        assert_eq!(film_of("img.png"), "img");
    }
}
