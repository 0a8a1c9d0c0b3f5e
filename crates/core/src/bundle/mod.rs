//! The model bundle: the unit of trust.
//!
//! A bundle is a folder (or one tar archive of it) holding `vigil.toml`, `model.onnx` and the
//! files the manifest lists with their SHA-256. The SHA-256 of the manifest's bytes is the
//! bundle's identity: the manifest names every other file's hash, so one digest covers all.
//! This module reads, checks and writes bundles; running the model is the engine's job.

mod archive;
mod golden;
mod manifest;
pub mod preprocess;
mod signature;
mod write;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

pub use archive::{MAX_ARCHIVE_BYTES, MAX_ARCHIVE_ENTRIES, is_archive, pack, unpack};
pub use golden::{GOLDEN_EXPECTED_FILE, GoldenCase, GoldenSet, GoldenTensor, tensor_digest};
pub use manifest::{
    DType, DecisionRule, EngineRequirements, FORMAT_VERSION, GoldenTolerance, Manifest,
    ModelSection, OutputRoles, Provenance, Task, TensorSpec,
};
pub use preprocess::{Layout, ResizeFilter, Step};
pub use signature::{PublicKey, SecretKey, Signature, SignatureCheck};
pub use write::BundleWriter;

use crate::error::ErrorKind;
use crate::types::Sha256Digest;

/// The manifest's file name.
pub const MANIFEST_FILE: &str = "vigil.toml";
/// The model's file name.
pub const MODEL_FILE: &str = "model.onnx";
/// The reference profile's file name (written by the monitoring side).
pub const REFERENCE_FILE: &str = "reference.json";
/// The evaluation report's file name.
pub const REPORT_FILE: &str = "report.json";
/// The optional detached signature over the manifest.
pub const SIGNATURE_FILE: &str = "signature";
/// Largest single file a bundle may hold (1 GiB): bigger is not a model for this line.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// What can be wrong with a bundle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path is neither a bundle folder nor a bundle archive.
    #[error(
        "{path}: no bundle here (expected a folder with {MANIFEST_FILE} or a .tar/.tar.gz archive)"
    )]
    NotABundle {
        /// Where we looked.
        path: PathBuf,
    },
    /// The manifest is not valid TOML or does not match the schema.
    #[error("{MANIFEST_FILE} cannot be read: {message}")]
    ManifestParse {
        /// The parser's explanation, with line and column.
        message: String,
    },
    /// The manifest parses but breaks a rule.
    #[error("{MANIFEST_FILE}: `{field}` {reason}")]
    ManifestInvalid {
        /// The field at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A listed file is missing.
    #[error("{path}: listed in the manifest but missing from the bundle")]
    FileMissing {
        /// Relative path.
        path: String,
    },
    /// A file's content does not match its listed hash.
    #[error(
        "{path}: checksum mismatch (manifest says sha256 {expected}, file has {actual}); the file was changed or corrupted"
    )]
    Checksum {
        /// Relative path.
        path: String,
        /// What the manifest lists.
        expected: Sha256Digest,
        /// What the file hashes to.
        actual: Sha256Digest,
    },
    /// A file that the manifest does not list.
    #[error("{path}: not listed in the manifest; a bundle may only hold files the manifest covers")]
    UnlistedFile {
        /// Relative path.
        path: String,
    },
    /// A path that could escape the bundle or is otherwise unusable.
    #[error("{path:?}: unsafe path in bundle: {reason}")]
    UnsafePath {
        /// The path as found.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The model file is not ONNX or is truncated.
    #[error("{MODEL_FILE}: {0}")]
    Model(#[from] crate::onnx::OnnxError),
    /// The model file does not match what the manifest declares about it.
    #[error("{MODEL_FILE} does not match the manifest: {0}")]
    ModelMismatch(String),
    /// The archive is malformed or exceeds a limit.
    #[error("bundle archive: {0}")]
    Archive(String),
    /// A signature problem.
    #[error("signature: {0}")]
    Signature(String),
    /// Golden data is malformed.
    #[error("golden data: {0}")]
    Golden(String),
    /// The destination already exists.
    #[error("{path}: already exists; refusing to overwrite")]
    Exists {
        /// The destination.
        path: PathBuf,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl Error {
    /// What a caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotABundle { .. } => ErrorKind::NotFound,
            Error::Exists { .. } => ErrorKind::Conflict,
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                std::io::ErrorKind::AlreadyExists => ErrorKind::Conflict,
                _ => ErrorKind::Unavailable,
            },
            Error::ManifestParse { .. }
            | Error::ManifestInvalid { .. }
            | Error::FileMissing { .. }
            | Error::Checksum { .. }
            | Error::UnlistedFile { .. }
            | Error::UnsafePath { .. }
            | Error::Model(_)
            | Error::ModelMismatch(_)
            | Error::Archive(_)
            | Error::Signature(_)
            | Error::Golden(_) => ErrorKind::Invalid,
        }
    }
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

/// Refuses paths that are absolute, climb out with `..`, or are otherwise not plain relative
/// `/`-separated file paths.
pub fn check_relative_path(path: &str) -> Result<()> {
    let err = |reason| {
        Err(Error::UnsafePath {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() || path.len() > 255 {
        return err("must be 1 to 255 bytes long");
    }
    if path.contains('\\') || path.contains('\0') {
        return err("backslashes and NUL are not allowed");
    }
    for c in Path::new(path).components() {
        match c {
            Component::Normal(_) => {}
            Component::ParentDir => return err("`..` would escape the bundle"),
            Component::RootDir | Component::Prefix(_) => {
                return err("absolute paths are not allowed");
            }
            Component::CurDir => return err("`.` components are not allowed"),
        }
    }
    if path.ends_with('/') {
        return err("must name a file");
    }
    Ok(())
}

/// A bundle on disk whose manifest has been read and validated. Opening does not hash the
/// files; [`Bundle::verify_files`] does, and [`Bundle::read_file`] checks each file it reads.
#[derive(Debug)]
pub struct Bundle {
    root: PathBuf,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    digest: Sha256Digest,
    // Keeps an unpacked archive alive as long as the bundle is.
    _unpacked: Option<tempfile::TempDir>,
}

impl Bundle {
    /// Opens a bundle folder or archive (an archive is unpacked, with every safety check, to a
    /// temporary folder that lives as long as the returned value).
    pub fn open(path: &Path) -> Result<Bundle> {
        let meta = fs::metadata(path).map_err(io_err(path))?;
        if meta.is_dir() {
            return Self::open_dir(path.to_owned(), None);
        }
        if !is_archive(path)? {
            return Err(Error::NotABundle {
                path: path.to_owned(),
            });
        }
        let tmp = tempfile::Builder::new()
            .prefix("vigil-bundle-")
            .tempdir()
            .map_err(io_err(std::env::temp_dir()))?;
        unpack(path, tmp.path())?;
        Self::open_dir(tmp.path().to_owned(), Some(tmp))
    }

    fn open_dir(root: PathBuf, unpacked: Option<tempfile::TempDir>) -> Result<Bundle> {
        let manifest_path = root.join(MANIFEST_FILE);
        if !manifest_path.is_file() {
            return Err(Error::NotABundle { path: root });
        }
        let manifest_bytes = fs::read(&manifest_path).map_err(io_err(&manifest_path))?;
        let text = std::str::from_utf8(&manifest_bytes).map_err(|_| Error::ManifestParse {
            message: "not UTF-8 text".into(),
        })?;
        let manifest = Manifest::parse(text)?;
        Ok(Bundle {
            digest: Sha256Digest::of(&manifest_bytes),
            root,
            manifest,
            manifest_bytes,
            _unpacked: unpacked,
        })
    }

    /// The validated manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest's exact bytes (what a signature covers).
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The bundle's identity: SHA-256 of the manifest bytes.
    pub fn digest(&self) -> Sha256Digest {
        self.digest
    }

    /// The folder holding the bundle's files.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads a listed file and checks it against its manifest hash.
    pub fn read_file(&self, rel: &str) -> Result<Vec<u8>> {
        let expected = *self
            .manifest
            .files
            .get(rel)
            .ok_or_else(|| Error::FileMissing {
                path: rel.to_owned(),
            })?;
        let path = self.root.join(rel);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::FileMissing {
                    path: rel.to_owned(),
                });
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        if !meta.is_file() {
            return Err(Error::UnsafePath {
                path: rel.to_owned(),
                reason: "not a regular file (symbolic links are not allowed)",
            });
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(Error::UnsafePath {
                path: rel.to_owned(),
                reason: "larger than the 1 GiB limit for one file",
            });
        }
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let actual = Sha256Digest::of(&bytes);
        if actual != expected {
            return Err(Error::Checksum {
                path: rel.to_owned(),
                expected,
                actual,
            });
        }
        Ok(bytes)
    }

    /// Hashes every listed file and refuses files that are not listed. Returns the files'
    /// contents by path, so that a caller that verifies then stores reads each file once.
    pub fn verify_files(&self) -> Result<BTreeMap<String, Vec<u8>>> {
        let mut out = BTreeMap::new();
        for rel in self.manifest.files.keys() {
            out.insert(rel.clone(), self.read_file(rel)?);
        }
        for rel in list_files(&self.root)? {
            if rel != MANIFEST_FILE
                && rel != SIGNATURE_FILE
                && !self.manifest.files.contains_key(&rel)
            {
                return Err(Error::UnlistedFile { path: rel });
            }
        }
        // The model must be what the manifest says it is.
        let info = crate::onnx::inspect(&out[MODEL_FILE])?;
        check_model_matches(&self.manifest, &info)?;
        Ok(out)
    }

    /// The detached signature, if the bundle has one.
    pub fn signature(&self) -> Result<Option<Signature>> {
        let path = self.root.join(SIGNATURE_FILE);
        match fs::read(&path) {
            Ok(bytes) => Signature::parse(&bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Checks the signature, if any, over the manifest bytes.
    pub fn check_signature(&self, trusted: &[PublicKey]) -> Result<SignatureCheck> {
        match self.signature()? {
            None => Ok(SignatureCheck::Unsigned),
            Some(sig) => sig.check(&self.manifest_bytes, trusted),
        }
    }

    /// Writes a detached signature over the manifest into the bundle folder.
    pub fn sign(&self, key: &SecretKey, signed_by: &str) -> Result<Signature> {
        let sig = key.sign(&self.manifest_bytes, signed_by);
        let path = self.root.join(SIGNATURE_FILE);
        write::write_atomic(&path, &sig.to_bytes())?;
        Ok(sig)
    }

    /// The golden cases, if the bundle has any.
    pub fn golden(&self) -> Result<Option<GoldenSet>> {
        if !self.manifest.files.contains_key(GOLDEN_EXPECTED_FILE) {
            return Ok(None);
        }
        GoldenSet::parse(&self.read_file(GOLDEN_EXPECTED_FILE)?).map(Some)
    }
}

/// Checks that a model file's signature agrees with what a manifest declares.
pub fn check_model_matches(manifest: &Manifest, info: &crate::onnx::OnnxInfo) -> Result<()> {
    if info.ir_version != manifest.engine.ir_version || info.opsets != manifest.engine.opsets {
        return Err(Error::ModelMismatch(format!(
            "the manifest declares IR {} with opsets {:?}, the file has IR {} with opsets {:?}",
            manifest.engine.ir_version, manifest.engine.opsets, info.ir_version, info.opsets
        )));
    }
    if info.inputs != manifest.inputs || info.outputs != manifest.outputs {
        return Err(Error::ModelMismatch(
            "the declared inputs/outputs differ from the graph's".into(),
        ));
    }
    Ok(())
}

/// Every regular file under `root`, as sorted `/`-separated relative paths. Anything that is
/// neither a regular file nor a folder (a symbolic link, a socket) is refused.
pub fn list_files(root: &Path) -> Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let path = entry.path();
            let ty = entry.file_type().map_err(io_err(&path))?;
            let rel = path
                .strip_prefix(root)
                .expect("walked paths lie under the root; this is a bug")
                .to_string_lossy()
                .replace('\\', "/");
            if ty.is_dir() {
                walk(root, &path, out)?;
            } else if ty.is_file() {
                out.push(rel);
            } else {
                return Err(Error::UnsafePath {
                    path: rel,
                    reason: "not a regular file (symbolic links are not allowed)",
                });
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}
