//! Writing a new bundle: hash the files into the manifest, write everything to a temporary
//! folder beside the destination, then rename it into place, so a bundle is either complete
//! or absent.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use super::{
    Bundle, Error, MANIFEST_FILE, MODEL_FILE, Manifest, Result, SIGNATURE_FILE,
    check_relative_path, io_err, pack,
};
use crate::types::Sha256Digest;

/// Collects a manifest and files, then writes them as a bundle folder or archive.
#[derive(Debug)]
pub struct BundleWriter {
    manifest: Manifest,
    files: BTreeMap<String, Vec<u8>>,
}

impl BundleWriter {
    /// Starts from a manifest; its `files` table is filled in by [`BundleWriter::write`].
    pub fn new(manifest: Manifest) -> Self {
        BundleWriter {
            manifest,
            files: BTreeMap::new(),
        }
    }

    /// Adds a file at a relative path.
    pub fn add_file(&mut self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        check_relative_path(rel)?;
        if rel == MANIFEST_FILE || rel == SIGNATURE_FILE {
            return Err(Error::UnsafePath {
                path: rel.to_owned(),
                reason: "this name is reserved",
            });
        }
        self.manifest
            .files
            .insert(rel.to_owned(), Sha256Digest::of(&bytes));
        self.files.insert(rel.to_owned(), bytes);
        Ok(())
    }

    /// Checks the manifest and the model file as [`BundleWriter::write`] will, so a caller can
    /// fail before doing expensive work (such as running the model for golden outputs).
    pub fn validate(&self) -> Result<()> {
        let model = self
            .files
            .get(MODEL_FILE)
            .ok_or_else(|| Error::FileMissing {
                path: MODEL_FILE.into(),
            })?;
        self.manifest.validate()?;
        let info = crate::onnx::inspect(model)?;
        super::check_model_matches(&self.manifest, &info)
    }

    /// The manifest as it stands.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Hashes the files into the manifest, validates it, and writes the bundle to `out`: an
    /// archive when `out` ends in `.tar`, `.tar.gz` or `.tgz`, a folder otherwise.
    pub fn write(mut self, out: &Path) -> Result<Bundle> {
        if out.exists() {
            return Err(Error::Exists {
                path: out.to_owned(),
            });
        }
        self.manifest.files = self
            .files
            .iter()
            .map(|(k, v)| (k.clone(), Sha256Digest::of(v)))
            .collect();
        self.validate()?;
        let text = self.manifest.to_toml()?;
        // Round-trip: what we write must parse back to what we meant.
        if Manifest::parse(&text)? != self.manifest {
            return Err(Error::ManifestParse {
                message: "the manifest does not survive a round trip through TOML; this is a bug"
                    .into(),
            });
        }

        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        let staging = tempfile::Builder::new()
            .prefix(".vigil-bundle-")
            .tempdir_in(parent)
            .map_err(io_err(parent))?;
        for (rel, bytes) in &self.files {
            let path = staging.path().join(rel);
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(io_err(dir))?;
            }
            fs::write(&path, bytes).map_err(io_err(&path))?;
        }
        let manifest_path = staging.path().join(MANIFEST_FILE);
        fs::write(&manifest_path, text.as_bytes()).map_err(io_err(&manifest_path))?;

        let name = out.to_string_lossy();
        if name.ends_with(".tar") || name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            pack(staging.path(), out)?;
        } else {
            let staged = staging.keep();
            fs::rename(&staged, out).map_err(|e| {
                let _ = fs::remove_dir_all(&staged);
                io_err(out)(e)
            })?;
        }
        Bundle::open(out)
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(io_err(parent))?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
    Ok(())
}
