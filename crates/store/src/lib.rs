//! The model registry and the audit log: the only crate that knows SQL or object storage.
//!
//! Metadata (models, versions, aliases, alias history, the hash-chained audit log) lives in a
//! database; bundle files live as content-addressed blobs in an artifact store. The embedded
//! default is one SQLite file plus a local folder reached through `object_store`, so S3 and
//! PostgreSQL can drop in behind the same [`Registry`] trait.
//!
//! This crate stores and retrieves; it does not parse ONNX, validate manifests beyond what
//! storage needs, or check signatures (that is `vigil-core`'s and its callers' job).
//!
//! ```no_run
//! # async fn demo() -> vigil_store::Result<()> {
//! let registry = vigil_store::open(&vigil_store::OpenOptions::new("vigil-data")).await?;
//! for model in registry.list_models().await? {
//!     println!("{} ({} versions)", model.name, model.versions);
//! }
//! # Ok(())
//! # }
//! ```

mod blob;
mod error;
mod sqlite;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vigil_core::audit::{AuditEntry, AuditRecord};
use vigil_core::bundle::Manifest;
use vigil_core::types::{AliasName, ModelName, ModelRef, ModelVersion, Sha256Digest};

pub use error::{Error, Result};
pub use sqlite::SqliteRegistry;

/// The SQLite file's name inside the data directory.
pub const DB_FILE: &str = "vigil.db";
/// The artifact folder's name inside the data directory.
pub const ARTIFACTS_DIR: &str = "artifacts";

/// Where the embedded store keeps its data.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// The data directory: the database is `<data_dir>/vigil.db`, blobs go under
    /// `<data_dir>/artifacts/`. Created if missing.
    pub data_dir: PathBuf,
}

impl OpenOptions {
    /// Options for the embedded store in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        OpenOptions {
            data_dir: data_dir.into(),
        }
    }
}

/// Opens (creating if missing) the registry in `opts.data_dir` and brings its schema up to
/// date.
///
/// Fails with [`Error::DataDir`] when the directory cannot be created or written and with
/// [`Error::Corrupt`] when `vigil.db` is not a valid SQLite database.
pub async fn open(opts: &OpenOptions) -> Result<Arc<dyn Registry>> {
    Ok(Arc::new(SqliteRegistry::open(opts).await?))
}

/// A bundle to store: the parsed manifest, its exact bytes and every file it lists.
pub struct PushRequest<'a> {
    /// The manifest, parsed from `manifest_bytes` by the caller; it names the model and version.
    pub manifest: &'a Manifest,
    /// The manifest's exact bytes; their SHA-256 is the version's digest.
    pub manifest_bytes: &'a [u8],
    /// Every file listed in `manifest.files`, by relative path, and nothing else.
    pub files: &'a BTreeMap<String, Vec<u8>>,
    /// The detached signature over the manifest, stored as given (not checked here).
    pub signature: Option<&'a [u8]>,
    /// Who pushes (recorded in the audit log).
    pub actor: &'a str,
    /// Why (recorded in the audit log).
    pub reason: &'a str,
}

impl std::fmt::Debug for PushRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushRequest")
            .field("model", &self.manifest.model.name)
            .field("version", &self.manifest.model.version)
            .field("manifest_bytes", &self.manifest_bytes.len())
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .field("signed", &self.signature.is_some())
            .field("actor", &self.actor)
            .field("reason", &self.reason)
            .finish()
    }
}

/// What a push did.
#[derive(Debug, Clone)]
pub enum PushOutcome {
    /// The version is new and was stored.
    Created(VersionInfo),
    /// The version was already stored with the same digest; nothing changed.
    Unchanged(VersionInfo),
}

impl PushOutcome {
    /// The version, however it came to be stored.
    pub fn info(&self) -> &VersionInfo {
        match self {
            PushOutcome::Created(info) | PushOutcome::Unchanged(info) => info,
        }
    }
}

/// A stored version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The model.
    pub name: ModelName,
    /// The version.
    pub version: ModelVersion,
    /// SHA-256 of the manifest bytes: the bundle's identity.
    pub digest: Sha256Digest,
    /// When the bundle was made (`model.created_at` in the manifest, to the microsecond).
    pub created_at: DateTime<Utc>,
    /// When it was pushed.
    pub pushed_at: DateTime<Utc>,
    /// Who pushed it.
    pub pushed_by: String,
    /// The aliases that point at it now, sorted.
    pub aliases: Vec<AliasName>,
    /// Whether a detached signature was pushed with it.
    pub signed: bool,
    /// The files its manifest lists, sorted by path.
    pub files: Vec<FileInfo>,
}

/// One file of a stored version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Relative path in the bundle.
    pub path: String,
    /// SHA-256 of its content.
    pub digest: Sha256Digest,
    /// Size in bytes.
    pub size: u64,
}

/// One model at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// The model.
    pub name: ModelName,
    /// How many versions are stored.
    pub versions: u64,
    /// The most recently pushed version.
    pub latest: Option<ModelVersion>,
    /// Where each alias points now, by alias.
    pub aliases: BTreeMap<String, ModelVersion>,
    /// The last push or alias change.
    pub updated_at: DateTime<Utc>,
}

/// A stored bundle read back, every blob re-hashed.
pub struct BundleFiles {
    /// The version.
    pub info: VersionInfo,
    /// The manifest's exact bytes.
    pub manifest_bytes: Vec<u8>,
    /// The detached signature, if one was pushed.
    pub signature: Option<Vec<u8>>,
    /// Every listed file by relative path.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for BundleFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleFiles")
            .field("info", &self.info)
            .field("manifest_bytes", &self.manifest_bytes.len())
            .field("signature", &self.signature.as_ref().map(Vec::len))
            .field(
                "files",
                &self
                    .files
                    .iter()
                    .map(|(k, v)| (k, v.len()))
                    .collect::<BTreeMap<_, _>>(),
            )
            .finish()
    }
}

/// A request to point an alias at a version.
#[derive(Debug, Clone, Copy)]
pub struct AliasChange<'a> {
    /// The model.
    pub name: &'a ModelName,
    /// The alias to set or move.
    pub alias: &'a AliasName,
    /// The version it should point at; must exist.
    pub version: &'a ModelVersion,
    /// Who (recorded in the audit log).
    pub actor: &'a str,
    /// Why (recorded in the audit log).
    pub reason: &'a str,
}

/// What setting an alias did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasOutcome {
    /// The alias now points at the requested version; `from` is where it pointed before.
    Moved {
        /// The previous version, `None` if the alias is new.
        from: Option<ModelVersion>,
    },
    /// The alias already pointed there; nothing was written.
    Unchanged,
}

/// One alias move, from the alias history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasEvent {
    /// When.
    pub at: DateTime<Utc>,
    /// Which alias.
    pub alias: AliasName,
    /// Where it pointed before (`None`: it did not exist).
    pub from: Option<ModelVersion>,
    /// Where it points after (`None`: it was removed).
    pub to: Option<ModelVersion>,
    /// Who moved it.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// The audit entry written with it.
    pub audit_seq: i64,
}

/// The model registry and audit log. Implementations serialise writers (also across
/// processes) so the audit chain stays linear.
#[async_trait::async_trait]
pub trait Registry: Send + Sync + std::fmt::Debug {
    /// Stores a version atomically: blobs first, then one transaction with the rows and a
    /// `model.push` audit entry. A version already stored with the same digest is
    /// [`PushOutcome::Unchanged`] (no audit entry); with another digest it is
    /// [`Error::VersionConflict`] and nothing changes.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future never leaves rows without their blobs, but may leave blobs that no
    /// row refers to (harmless, and reused by a later push of the same content).
    async fn push(&self, req: PushRequest<'_>) -> Result<PushOutcome>;

    /// Every model, sorted by name.
    async fn list_models(&self) -> Result<Vec<ModelSummary>>;

    /// A model's versions in push order, oldest first; [`Error::NotFound`] if the model is
    /// unknown.
    async fn list_versions(&self, name: &ModelName) -> Result<Vec<VersionInfo>>;

    /// The version a reference points at; `NAME` alone means the most recently pushed version.
    async fn resolve(&self, r: &ModelRef) -> Result<VersionInfo>;

    /// A version's manifest, signature and files, each re-hashed on read
    /// ([`Error::BlobCorrupt`] on mismatch).
    async fn fetch(&self, name: &ModelName, version: &ModelVersion) -> Result<BundleFiles>;

    /// Points an alias at a version, recording an alias event and an `alias.set` audit entry.
    /// The version must exist ([`Error::NotFound`] otherwise; nothing changes). Pointing it
    /// where it already points is [`AliasOutcome::Unchanged`], with no audit entry.
    async fn set_alias(&self, change: AliasChange<'_>) -> Result<AliasOutcome>;

    /// Removes an alias, recording an alias event and an `alias.remove` audit entry, and
    /// returns the version it pointed at; [`Error::NotFound`] if it does not exist.
    async fn remove_alias(
        &self,
        name: &ModelName,
        alias: &AliasName,
        actor: &str,
        reason: &str,
    ) -> Result<ModelVersion>;

    /// A model's alias moves, oldest first, for one alias or all; [`Error::NotFound`] if the
    /// model is unknown.
    async fn alias_history(
        &self,
        name: &ModelName,
        alias: Option<&AliasName>,
    ) -> Result<Vec<AliasEvent>>;

    /// The version an alias pointed at, at time `at` (`None`: it did not exist then);
    /// [`Error::NotFound`] if the model is unknown.
    async fn alias_at(
        &self,
        name: &ModelName,
        alias: &AliasName,
        at: DateTime<Utc>,
    ) -> Result<Option<ModelVersion>>;

    /// Appends an entry to the audit log, for other subsystems (review verdicts, rollouts).
    async fn append_audit(&self, record: AuditRecord) -> Result<AuditEntry>;

    /// The whole audit log, in sequence order, exactly as stored (check it with
    /// [`vigil_core::audit::verify`]).
    async fn audit_log(&self) -> Result<Vec<AuditEntry>>;
}
