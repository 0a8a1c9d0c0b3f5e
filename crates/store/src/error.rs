//! The store's one error type and its mapping onto [`vigil_core::ErrorKind`].
//!
//! Backends build these; they must not leak driver-specific advice into other variants'
//! messages, and `kind` stays one exhaustive match so a new variant cannot be forgotten.

use std::path::PathBuf;

use vigil_core::ErrorKind;
use vigil_core::types::{ModelName, ModelVersion, Sha256Digest};

/// `Result` with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the registry, the audit log or the artifact store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model, version or alias does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for: `model "weldnet"`, `version weldnet:1.0`, `alias weldnet@production`.
        what: String,
    },
    /// The version exists with other contents.
    #[error(
        "{name}:{version} already exists with digest {existing}, but the pushed bundle has digest \
         {pushed}; versions are immutable, so bump the version and push again"
    )]
    VersionConflict {
        /// The model.
        name: ModelName,
        /// The version pushed twice.
        version: ModelVersion,
        /// The digest already stored.
        existing: Sha256Digest,
        /// The digest of the refused push.
        pushed: Sha256Digest,
    },
    /// The database file is damaged or is not SQLite at all.
    #[error(
        "{path} is not a valid Vigil database (corrupt or not SQLite): {detail}; restore it from a \
         backup or point store.data_dir elsewhere"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// The database cannot grow: its disk is full, or it reached `store.max_size`.
    #[error(
        "the database {path} is full while {context} (its disk is full or it reached \
         store.max_size); writes fail until space is freed (free the disk, raise store.max_size, \
         or shorten monitoring.log.retention)"
    )]
    Full {
        /// The database file.
        path: PathBuf,
        /// What was being written.
        context: &'static str,
    },
    /// The data directory cannot be created or written.
    #[error(
        "cannot use the data directory {path}: {source}; check that it can be created and is \
         writable by this user, or choose another one with store.data_dir \
         (VIGIL__STORE__DATA_DIR)"
    )]
    DataDir {
        /// The directory (or the file inside it that could not be written).
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The database schema cannot be brought up to date.
    #[error(
        "{path}: cannot bring the database schema up to date: {source}; if a newer Vigil wrote \
         this database, use that version"
    )]
    Schema {
        /// The database file.
        path: PathBuf,
        /// The migrator's error.
        source: sqlx::migrate::MigrateError,
    },
    /// A database operation failed.
    #[error("database error while {context}: {source}")]
    Database {
        /// What was being done, as a gerund phrase ("reading versions").
        context: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// An artifact store operation failed.
    #[error("artifact store error at {path}: {source}")]
    Blob {
        /// The object's path in the artifact store.
        path: String,
        /// The object store's error.
        source: object_store::Error,
    },
    /// A stored blob no longer hashes to its name: the artifact store was changed behind our back.
    #[error(
        "artifact sha256:{digest} is corrupt: its content now hashes to {actual}; the artifact \
         store was modified or damaged, restore it from a backup"
    )]
    BlobCorrupt {
        /// The digest the blob is stored under.
        digest: Sha256Digest,
        /// What its content hashes to now.
        actual: Sha256Digest,
    },
    /// The input breaks a rule, or a stored row cannot be read back.
    #[error("{0}")]
    Invalid(String),
    /// The request was valid but the state moved on: a review claim that expired or went to
    /// another inspector, an item already settled.
    #[error("{0}")]
    Conflict(String),
    /// A monitoring row holds what this store never writes (bad JSON, a truncated
    /// embedding): the database was changed outside Vigil or is damaged.
    #[error(
        "the database holds unreadable data in {column} of {row}: {detail}; the database was \
         changed outside Vigil or is damaged"
    )]
    CorruptRow {
        /// The column, as `table.column`.
        column: &'static str,
        /// Which row: `request_id "..."` or `id 42`.
        row: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl Error {
    /// What a caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::VersionConflict { .. } | Error::Conflict(_) => ErrorKind::Conflict,
            Error::Invalid(_) => ErrorKind::Invalid,
            Error::Database { source, .. } => match source {
                // The query and the schema disagree: a bug, not an outage.
                sqlx::Error::ColumnNotFound(_)
                | sqlx::Error::ColumnIndexOutOfBounds { .. }
                | sqlx::Error::ColumnDecode { .. }
                | sqlx::Error::TypeNotFound { .. }
                | sqlx::Error::Encode(_)
                | sqlx::Error::Decode(_) => ErrorKind::Internal,
                _ => ErrorKind::Unavailable,
            },
            Error::Corrupt { .. }
            | Error::Full { .. }
            | Error::CorruptRow { .. }
            | Error::DataDir { .. }
            | Error::Schema { .. }
            | Error::Blob { .. }
            | Error::BlobCorrupt { .. } => ErrorKind::Unavailable,
        }
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Error {
        Error::NotFound { what: what.into() }
    }
}
