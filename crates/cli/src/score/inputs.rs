//! What to score: folders (recursively), glob patterns, and CSV manifests with a `path`
//! column and an optional `label` column. Every input becomes one [`Input`], in a stable
//! order, so a rerun (and `--resume`) sees the same list.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use vigil_core::ErrorKind;

use crate::exit::fail;

/// File extensions scored when a folder is given.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "tif", "tiff", "dcm", "dicom"];

/// One image to score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// Where to read it.
    pub path: PathBuf,
    /// How rows name it (as given, or relative to the manifest for manifest entries).
    pub name: String,
    /// The expected label, from a manifest's `label` column.
    pub expected: Option<String>,
}

/// Expands every argument: a folder, a CSV manifest (`.csv`), a glob pattern, or a file.
pub fn collect(args: &[String]) -> anyhow::Result<Vec<Input>> {
    let mut out = Vec::new();
    for arg in args {
        let path = Path::new(arg);
        if path.is_dir() {
            let mut files = Vec::new();
            walk(path, &mut files).with_context(|| format!("cannot read folder {arg}"))?;
            files.sort();
            out.extend(files.into_iter().map(|p| Input {
                name: p.display().to_string(),
                path: p,
                expected: None,
            }));
        } else if path.is_file() && has_extension(path, &["csv"]) {
            out.extend(manifest(path)?);
        } else if path.is_file() {
            out.push(Input {
                path: path.to_owned(),
                name: arg.clone(),
                expected: None,
            });
        } else if arg.contains(['*', '?', '[']) {
            let mut files: Vec<PathBuf> = glob::glob(arg)
                .with_context(|| format!("bad glob pattern {arg:?}"))?
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            if files.is_empty() {
                return fail(
                    ErrorKind::NotFound,
                    format!("the pattern {arg:?} matches no file"),
                );
            }
            files.sort();
            out.extend(files.into_iter().map(|p| Input {
                name: p.display().to_string(),
                path: p,
                expected: None,
            }));
        } else {
            return fail(
                ErrorKind::NotFound,
                format!("{arg}: no such file, folder or pattern"),
            );
        }
    }
    if out.is_empty() {
        return fail(
            ErrorKind::NotFound,
            format!("no images found in {}", args.join(", ")),
        );
    }
    Ok(out)
}

fn has_extension(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if has_extension(&path, IMAGE_EXTENSIONS) {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads a CSV manifest: a `path` column (relative paths are relative to the manifest's
/// folder) and an optional `label` column. Other columns are ignored.
fn manifest(csv_path: &Path) -> anyhow::Result<Vec<Input>> {
    let base = csv_path.parent().unwrap_or(Path::new("."));
    let mut reader = csv::Reader::from_path(csv_path)
        .with_context(|| format!("cannot read {}", csv_path.display()))?;
    let headers = reader.headers()?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let path_col =
        col("path").with_context(|| format!("{}: no `path` column", csv_path.display()))?;
    let label_col = col("label");
    let mut out = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{}: row {}", csv_path.display(), i + 2))?;
        let rel = record.get(path_col).unwrap_or("").trim();
        if rel.is_empty() {
            return fail(
                ErrorKind::Invalid,
                format!("{}: row {} has an empty path", csv_path.display(), i + 2),
            );
        }
        let expected = label_col
            .and_then(|c| record.get(c))
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned);
        out.push(Input {
            path: base.join(rel),
            name: rel.to_owned(),
            expected,
        });
    }
    Ok(out)
}

/// The `split` column of a CSV manifest, by the `path` as written (what [`Input::name`]
/// holds). Errors when there is no `split` column.
pub fn split_of(csv_path: &Path) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(csv_path)
        .with_context(|| format!("cannot read {}", csv_path.display()))?;
    let headers = reader.headers()?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let path_col =
        col("path").with_context(|| format!("{}: no `path` column", csv_path.display()))?;
    let split_col =
        col("split").with_context(|| format!("{}: no `split` column", csv_path.display()))?;
    let mut out = std::collections::HashMap::new();
    for record in reader.records() {
        let record = record?;
        let path = record.get(path_col).unwrap_or("").trim().to_owned();
        let split = record.get(split_col).unwrap_or("").trim().to_owned();
        out.insert(path, split);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_globs_and_manifests_expand_in_a_stable_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        for f in ["b.png", "a.png", "sub/c.tif", "notes.txt"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let found = collect(&[dir.path().display().to_string()]).unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|i| i.path.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["a.png", "b.png", "c.tif"]);

        let pattern = format!("{}/*.png", dir.path().display());
        assert_eq!(collect(&[pattern]).unwrap().len(), 2);

        let csv = dir.path().join("m.csv");
        std::fs::write(&csv, "path,label,split\na.png,defect,val\nsub/c.tif,,val\n").unwrap();
        let m = collect(&[csv.display().to_string()]).unwrap();
        assert_eq!(m[0].expected.as_deref(), Some("defect"));
        assert_eq!(m[1].expected, None);
        assert_eq!(m[1].path, dir.path().join("sub/c.tif"));

        assert!(collect(&[dir.path().join("nope").display().to_string()]).is_err());
        std::fs::write(&csv, "file,label\na.png,x\n").unwrap();
        assert!(
            collect(&[csv.display().to_string()])
                .unwrap_err()
                .to_string()
                .contains("no `path` column")
        );
    }
}
