//! The model registry and the audit log: the only crate that knows SQL or object storage.
//!
//! Metadata (models, versions, aliases, alias history, the hash-chained audit log) lives in a
//! database; bundle files live as content-addressed blobs in an artifact store. The embedded
//! default is one SQLite file plus a local folder reached through `object_store`, so S3 and
//! PostgreSQL can drop in behind the same [`Registry`] trait.
//!
//! The same database keeps the monitoring record behind the [`MonitorStore`] trait: the
//! prediction log, closed drift windows and alert events ([`open_monitor`]). It also holds
//! the human review queue behind the [`ReviewStore`] trait: flagged predictions waiting for
//! an inspector, claims, verdicts (appended, each one in the audit log) and the ground truth
//! they settle ([`open_review`]).
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

pub mod access;
mod blob;
mod error;
mod review;
mod sqlite;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vigil_core::audit::{AuditEntry, AuditRecord};
use vigil_core::bundle::Manifest;
use vigil_core::monitor::PredictionRecord;
use vigil_core::types::{AliasName, ModelName, ModelRef, ModelVersion, Sha256Digest};

pub use error::{Error, Result};
pub use review::{
    Claim, NewReviewItem, NewVerdict, QueueSummary, ReviewImage, ReviewItem, ReviewQuery,
    ReviewStore, Settled, StoredImage, VerdictOutcome, VerdictRow, VerdictSource,
};
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
    /// The most the database may grow to, in bytes (SQLite's `max_page_count` on every
    /// connection); `None`: as large as the disk allows. Reaching it fails writes exactly as
    /// a full disk does (`SQLITE_FULL`), so a store that shares a disk with other services can
    /// be kept from filling it.
    pub max_size: Option<u64>,
}

impl OpenOptions {
    /// Options for the embedded store in `data_dir`, with no size cap.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        OpenOptions {
            data_dir: data_dir.into(),
            max_size: None,
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

/// Opens (creating if missing) the monitoring store in `opts.data_dir`: the same `vigil.db`
/// as [`open`], schema brought up to date the same way. A second handle on the same directory
/// (in this process or another) sees the same rows; writers queue on SQLite's busy timeout.
///
/// A process that needs both traits can open one [`SqliteRegistry`] and use it as both.
pub async fn open_monitor(opts: &OpenOptions) -> Result<Arc<dyn MonitorStore>> {
    Ok(Arc::new(SqliteRegistry::open(opts).await?))
}

/// Opens (creating if missing) the review queue in `opts.data_dir`: the same `vigil.db` as
/// [`open`], schema brought up to date the same way, kept images in the same artifact store.
/// Any number of handles (in this process or others) may claim at once; SQLite's single
/// writer makes each claim atomic.
///
/// A process that needs several traits can open one [`SqliteRegistry`] and use it as all.
pub async fn open_review(opts: &OpenOptions) -> Result<Arc<dyn ReviewStore>> {
    Ok(Arc::new(SqliteRegistry::open(opts).await?))
}

/// Opens (creating if missing) the tokens and sessions in `opts.data_dir`: the same
/// `vigil.db` as [`open`], schema brought up to date the same way.
pub async fn open_access(opts: &OpenOptions) -> Result<Arc<dyn access::AccessStore>> {
    Ok(Arc::new(SqliteRegistry::open(opts).await?))
}

/// Every side of one store over one connection pool: what a long-running process (the
/// server) opens, so that its database connections, and the page cache each keeps, are
/// counted once rather than once per side.
#[derive(Debug, Clone)]
pub struct Stores {
    /// Models, versions, aliases, the audit log.
    pub registry: Arc<dyn Registry>,
    /// The prediction log, drift windows, alert events.
    pub monitor: Arc<dyn MonitorStore>,
    /// The review queue.
    pub review: Arc<dyn ReviewStore>,
    /// Tokens and sessions.
    pub access: Arc<dyn access::AccessStore>,
}

/// Opens (creating if missing) every side of the store in `opts.data_dir` on one pool.
pub async fn open_stores(opts: &OpenOptions) -> Result<Stores> {
    let store = Arc::new(SqliteRegistry::open(opts).await?);
    Ok(Stores {
        registry: store.clone(),
        monitor: store.clone(),
        review: store.clone(),
        access: store,
    })
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

/// What [`MonitorStore::append_predictions`] did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendOutcome {
    /// Records written.
    pub inserted: u64,
    /// Records skipped because their request id was already in the log (or earlier in the
    /// same batch); the stored row is kept as it was.
    pub duplicates: u64,
}

/// Which predictions to read back: one model, optionally one version, a time range, oldest
/// first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictionQuery {
    /// The model.
    pub model: String,
    /// Only this version, when set.
    pub version: Option<String>,
    /// Only predictions at or after this time (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Only predictions before this time (exclusive).
    pub until: Option<DateTime<Utc>>,
    /// At most this many rows (the oldest in the range).
    pub limit: usize,
}

impl PredictionQuery {
    /// Every prediction of `model`, no limit; narrow it with the fields.
    pub fn model(model: impl Into<String>) -> Self {
        PredictionQuery {
            model: model.into(),
            version: None,
            since: None,
            until: None,
            limit: usize::MAX,
        }
    }
}

/// One closed drift window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftWindowRow {
    /// The model.
    pub model: String,
    /// The version the window watched.
    pub version: String,
    /// When the window closed (kept to the microsecond).
    pub ended_at: DateTime<Utc>,
    /// Images in the window.
    pub images: u64,
    /// Whether the window found drift.
    pub drift: bool,
    /// The window's report as the runtime wrote it; opaque to the store.
    pub report: serde_json::Value,
}

/// Whether an alert started or stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The rule's condition became true.
    Firing,
    /// It is no longer true.
    Resolved,
}

impl AlertState {
    /// `firing` or `resolved`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

impl std::fmt::Display for AlertState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AlertState {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "firing" => Ok(AlertState::Firing),
            "resolved" => Ok(AlertState::Resolved),
            other => Err(format!(
                "{other:?} is not an alert state (firing, resolved)"
            )),
        }
    }
}

/// One alert state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEventRow {
    /// The rule's name.
    pub rule: String,
    /// The model it is about, if it is about one.
    pub model: Option<String>,
    /// Firing or resolved.
    pub state: AlertState,
    /// The rule's severity (`warning`, `critical`, ...).
    pub severity: String,
    /// When (kept to the microsecond).
    pub at: DateTime<Utc>,
    /// The value that crossed (or came back under) the threshold.
    pub value: f64,
    /// For people.
    pub message: String,
    /// For machines; opaque to the store.
    pub details: serde_json::Value,
}

/// The monitoring record: the prediction log, drift windows and alert events. Writes are
/// appends (retention aside), each one transaction.
///
/// Times are kept to the microsecond (like the registry's): a record written with
/// nanoseconds reads back truncated. Floats round-trip bit for bit except that a NaN
/// `ood_distance` reads back as `None` and a non-finite probability or statistic as NaN.
#[async_trait::async_trait]
pub trait MonitorStore: Send + Sync + std::fmt::Debug {
    /// Appends a batch in one transaction. A request id already in the log (or repeated in
    /// the batch) is skipped and counted in [`AppendOutcome::duplicates`]; the rest of the
    /// batch is stored. A record that cannot be stored at all (a duration over `i64::MAX`
    /// microseconds) refuses the whole batch with [`Error::Invalid`] before anything is
    /// written.
    async fn append_predictions(&self, records: &[PredictionRecord]) -> Result<AppendOutcome>;

    /// One prediction by request id.
    async fn prediction(&self, request_id: &str) -> Result<Option<PredictionRecord>>;

    /// Predictions matching `q`, oldest first (ties in append order).
    async fn predictions(&self, q: &PredictionQuery) -> Result<Vec<PredictionRecord>>;

    /// How many predictions the log holds, for one model or all.
    async fn count_predictions(&self, model: Option<&str>) -> Result<u64>;

    /// The inputs of the confidence-based performance estimate for `model`'s predictions at
    /// or after `since`, aggregated in the database, by version: per predicted label, how
    /// many and the sum of each label's normalised probability
    /// ([`vigil_core::review::ProbabilityMass`]). Rows whose probabilities are not `labels`
    /// long or hold a non-finite value are left out. Memory is bounded by versions x labels,
    /// whatever the number of rows (the review gauges used to load up to 100,000 rows).
    async fn probability_mass(
        &self,
        model: &str,
        since: DateTime<Utc>,
        labels: usize,
    ) -> Result<BTreeMap<String, Vec<vigil_core::review::ProbabilityMass>>>;

    /// Deletes every prediction before `cutoff` (exclusive) and returns how many. Deletes in
    /// chunks, each its own short transaction, so a large purge does not stall the writer.
    async fn delete_predictions_before(&self, cutoff: DateTime<Utc>) -> Result<u64>;

    /// Appends a closed drift window.
    async fn append_drift_window(&self, w: &DriftWindowRow) -> Result<()>;

    /// A model's drift windows that ended in `[since, until)`, oldest first, at most `limit`
    /// (the oldest in the range).
    async fn drift_windows(
        &self,
        model: &str,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Vec<DriftWindowRow>>;

    /// Appends an alert event.
    async fn append_alert_event(&self, e: &AlertEventRow) -> Result<()>;

    /// The latest `limit` alert events, newest first (ties: the later append first).
    async fn alert_events(&self, limit: usize) -> Result<Vec<AlertEventRow>>;
}
