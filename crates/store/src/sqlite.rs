//! The embedded backend: metadata in one SQLite file, blobs in a local folder.
//!
//! This module owns every SQL statement for SQLite and the write protocol: each write is one
//! `BEGIN IMMEDIATE` transaction (which serialises writers across processes) that also appends
//! to the audit chain. It must not hold SQL for other databases or reach the artifact folder
//! except through [`BlobStore`]. The monitoring tables' SQL is in [`monitor`], the review
//! queue's in [`review`].

mod access;
mod monitor;
mod review;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::local::LocalFileSystem;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, SqlitePool, Transaction};
use tracing::{debug, info, warn};
use vigil_core::audit::{self, AuditEntry, AuditRecord};
use vigil_core::types::{
    AliasName, ModelName, ModelRef, ModelVersion, Sha256Digest, VersionSelector,
};

use crate::blob::BlobStore;
use crate::{
    ARTIFACTS_DIR, AliasChange, AliasEvent, AliasOutcome, BundleFiles, DB_FILE, Error, FileInfo,
    ModelSummary, OpenOptions, PushOutcome, PushRequest, Registry, Result, VersionInfo,
};

/// How long a writer waits for another writer's transaction. Transactions are short (blobs are
/// written before the transaction starts, a prediction batch is a few milliseconds, retention
/// deletes in chunks), so a long wait means a stuck process, not load. Every write, the
/// registry's and the monitor's, starts with `BEGIN IMMEDIATE` and so waits here instead of
/// failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// SQLite allows one writer at a time anyway; a few connections let readers run beside it.
const MAX_CONNECTIONS: u32 = 8;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Makes write-probe names unique when one process opens the same directory twice at once.
static PROBE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The registry on SQLite plus a local artifact folder.
#[derive(Debug)]
pub struct SqliteRegistry {
    pool: SqlitePool,
    blobs: BlobStore,
    db_path: PathBuf,
}

/// A version row with what [`VersionInfo`] leaves out.
struct StoredVersion {
    info: VersionInfo,
    signature: Option<Sha256Digest>,
}

/// Whether a pooled connection may be handed out again. A statement that fails with
/// `SQLITE_FULL` or `SQLITE_IOERR` inside a transaction makes SQLite roll the transaction back
/// by itself; sqlx's rollback on drop then fails ("no transaction is active") and the
/// connection comes back to the pool still counting a transaction, so every later `BEGIN
/// IMMEDIATE` on it was refused ("begin_with at non-zero transaction depth") and the
/// prediction log stayed stuck after a full disk even once space returned. Such a connection
/// is closed and a fresh one opened. The ping first lets a rollback still queued on the
/// connection's worker (from a dropped transaction) finish before the check. (The tests
/// reach SQLITE_FULL through `store.max_size`, where SQLite rolls back only the statement;
/// this guards the whole-transaction rollback of a really full disk, read from sqlx's worker.)
async fn usable(conn: &mut SqliteConnection) -> std::result::Result<bool, sqlx::Error> {
    use sqlx::Connection as _;
    conn.ping().await?;
    if conn.is_in_transaction() {
        warn!("A database connection came back inside a failed transaction; replacing it.");
        return Ok(false);
    }
    Ok(true)
}

/// Maps a driver error, recognising a damaged or foreign database file.
fn db_error(path: &Path, context: &'static str, source: sqlx::Error) -> Error {
    if let sqlx::Error::Database(e) = &source {
        // Primary result codes live in the low byte of SQLite's extended codes:
        // 11 = SQLITE_CORRUPT ("database disk image is malformed"),
        // 26 = SQLITE_NOTADB ("file is not a database").
        let code = e.code().and_then(|c| c.parse::<i32>().ok());
        match code.map(|c| c & 0xff) {
            Some(11 | 26) => {
                return Error::Corrupt {
                    path: path.to_owned(),
                    detail: e.message().to_owned(),
                };
            }
            // 13 = SQLITE_FULL: the disk, or max_page_count (store.max_size).
            Some(13) => {
                return Error::Full {
                    path: path.to_owned(),
                    context,
                };
            }
            _ => {}
        }
    }
    Error::Database { context, source }
}

fn migrate_error(path: &Path, source: sqlx::migrate::MigrateError) -> Error {
    match source {
        sqlx::migrate::MigrateError::Execute(e)
        | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => {
            db_error(path, "updating the database schema", e)
        }
        other => Error::Schema {
            path: path.to_owned(),
            source: other,
        },
    }
}

/// Parses a stored text column; `column` is `table.column`.
fn parse<T>(column: &'static str, text: &str) -> Result<T>
where
    T: FromStr,
    T::Err: Display,
{
    text.parse().map_err(|e| {
        Error::Invalid(format!(
            "the database holds {text:?} in {column}, which cannot be read: {e}"
        ))
    })
}

fn parse_time(column: &'static str, text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            Error::Invalid(format!(
                "the database holds {text:?} in {column}, which is not an RFC 3339 time: {e}"
            ))
        })
}

fn to_i64(what: &str, n: usize) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::Invalid(format!("{what} is too large: {n}")))
}

/// Creates the directory and proves it writable with a probe file, so a read-only or
/// misplaced directory is reported as such rather than as an obscure SQLite error.
async fn check_writable(dir: &Path) -> Result<()> {
    let data_dir_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::DataDir { path, source }
    };
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(data_dir_err(dir))?;
    let n = PROBE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let probe = dir.join(format!(".vigil-write-probe-{}-{n}", std::process::id()));
    tokio::fs::write(&probe, b"")
        .await
        .map_err(data_dir_err(&probe))?;
    tokio::fs::remove_file(&probe)
        .await
        .map_err(data_dir_err(&probe))?;
    Ok(())
}

/// Every file of a push checked against the manifest: `(path, digest, bytes)`.
fn check_files<'r>(req: &PushRequest<'r>) -> Result<Vec<(&'r str, Sha256Digest, &'r [u8])>> {
    let mut out = Vec::with_capacity(req.manifest.files.len());
    for (path, expected) in &req.manifest.files {
        vigil_core::bundle::check_relative_path(path).map_err(|e| Error::Invalid(e.to_string()))?;
        let Some((path, data)) = req.files.get_key_value(path) else {
            return Err(Error::Invalid(format!(
                "{path}: listed in the manifest but missing from the push"
            )));
        };
        let actual = Sha256Digest::of(data);
        if actual != *expected {
            return Err(Error::Invalid(format!(
                "{path}: checksum mismatch (manifest says sha256 {expected}, file has {actual})"
            )));
        }
        out.push((path.as_str(), actual, data.as_slice()));
    }
    if let Some(extra) = req
        .files
        .keys()
        .find(|p| !req.manifest.files.contains_key(*p))
    {
        return Err(Error::Invalid(format!(
            "{extra}: not listed in the manifest; only listed files can be stored"
        )));
    }
    Ok(out)
}

/// A `versions` row as stored.
#[derive(sqlx::FromRow)]
struct VersionRow {
    id: i64,
    version: String,
    digest: String,
    created_at: String,
    pushed_at: String,
    pushed_by: String,
    signature_digest: Option<String>,
}

/// An `alias_events` row as stored.
#[derive(sqlx::FromRow)]
struct AliasEventRow {
    alias: String,
    from_version: Option<String>,
    to_version: Option<String>,
    at: String,
    actor: String,
    reason: String,
    audit_seq: i64,
}

/// A push checked and hashed, with what its blob writes did.
struct Prepared<'r> {
    /// SHA-256 of the manifest bytes.
    digest: Sha256Digest,
    /// `(path, digest, bytes)` of every listed file.
    files: Vec<(&'r str, Sha256Digest, &'r [u8])>,
    /// SHA-256 of the signature, if any.
    signature: Option<Sha256Digest>,
    /// Blobs this push wrote (and must delete if it fails).
    created: Vec<Sha256Digest>,
    /// Blobs that were already stored, with their bytes in case they vanish.
    existed: Vec<(Sha256Digest, &'r [u8])>,
}

type AuditRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

const AUDIT_COLUMNS: &str = "seq, at, actor, action, subject, reason, details, prev_hash, hash";

fn audit_entry(row: AuditRow) -> Result<AuditEntry> {
    let (seq, at, actor, action, subject, reason, details, prev_hash, hash) = row;
    Ok(AuditEntry {
        seq,
        at,
        record: AuditRecord {
            actor,
            action,
            subject,
            reason,
            details,
        },
        prev_hash: parse("audit_log.prev_hash", &prev_hash)?,
        hash: parse("audit_log.hash", &hash)?,
    })
}

impl SqliteRegistry {
    /// Opens (creating if missing) `vigil.db` and `artifacts/` in `opts.data_dir` and brings
    /// the schema up to date.
    pub async fn open(opts: &OpenOptions) -> Result<SqliteRegistry> {
        let dir = &opts.data_dir;
        check_writable(dir).await?;
        let artifacts = dir.join(ARTIFACTS_DIR);
        tokio::fs::create_dir_all(&artifacts)
            .await
            .map_err(|source| Error::DataDir {
                path: artifacts.clone(),
                source,
            })?;
        // Automatic cleanup removes fan-out folders emptied by a failed push, so the folder
        // is left exactly as it was.
        let local = LocalFileSystem::new_with_prefix(&artifacts)
            .map_err(|source| Error::Blob {
                path: artifacts.display().to_string(),
                source,
            })?
            .with_automatic_cleanup(true);

        let db_path = dir.join(DB_FILE);
        let mut connect = SqliteConnectOptions::new()
            .filename(&db_path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // The audit log must survive a power cut, and writes are rare: pay for FULL.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        if let Some(bytes) = opts.max_size {
            // SQLite's default page size; a cap below the current size stops all growth.
            let pages = (bytes / 4096).max(1);
            connect = connect.pragma("max_page_count", pages.to_string());
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .before_acquire(|conn, _meta| Box::pin(async move { usable(conn).await }))
            .connect_with(connect)
            .await
            .map_err(|e| db_error(&db_path, "opening the database", e))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| migrate_error(&db_path, e))?;
        debug!(path = %db_path.display(), "Registry opened.");
        Ok(SqliteRegistry {
            pool,
            blobs: BlobStore::new(Arc::new(local)),
            db_path,
        })
    }

    fn db(&self, context: &'static str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
        move |e| db_error(&self.db_path, context, e)
    }

    /// A write transaction. `BEGIN IMMEDIATE` takes the write lock up front, so two writers
    /// (in this process or another) queue on `busy_timeout` instead of failing on upgrade.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(self.db("starting a write transaction"))
    }

    /// A read transaction: one consistent snapshot for several queries.
    async fn begin_read(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool
            .begin()
            .await
            .map_err(self.db("starting a read transaction"))
    }

    async fn finish_write(&self, tx: Transaction<'static, Sqlite>) -> Result<()> {
        tx.commit()
            .await
            .map_err(self.db("committing a write transaction"))
    }

    async fn model_id(&self, conn: &mut SqliteConnection, name: &ModelName) -> Result<i64> {
        sqlx::query_scalar::<_, i64>("SELECT id FROM models WHERE name = ?1")
            .bind(name.as_str())
            .fetch_optional(conn)
            .await
            .map_err(self.db("looking up a model"))?
            .ok_or_else(|| Error::not_found(format!("model {:?}", name.as_str())))
    }

    async fn version_id(
        &self,
        conn: &mut SqliteConnection,
        name: &ModelName,
        model_id: i64,
        version: &ModelVersion,
    ) -> Result<i64> {
        sqlx::query_scalar::<_, i64>("SELECT id FROM versions WHERE model_id = ?1 AND version = ?2")
            .bind(model_id)
            .bind(version.as_str())
            .fetch_optional(conn)
            .await
            .map_err(self.db("looking up a version"))?
            .ok_or_else(|| Error::not_found(format!("version {name}:{version}")))
    }

    /// A model's versions in push order (or only the version with id `only`).
    async fn load_versions(
        &self,
        conn: &mut SqliteConnection,
        name: &ModelName,
        model_id: i64,
        only: Option<i64>,
    ) -> Result<Vec<StoredVersion>> {
        let rows: Vec<VersionRow> = sqlx::query_as(
            "SELECT id, version, digest, created_at, pushed_at, pushed_by, signature_digest \
             FROM versions WHERE model_id = ?1 AND (?2 IS NULL OR id = ?2) ORDER BY id",
        )
        .bind(model_id)
        .bind(only)
        .fetch_all(&mut *conn)
        .await
        .map_err(self.db("reading versions"))?;
        let file_rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
            "SELECT f.version_id, f.path, f.digest, f.size FROM files f \
             JOIN versions v ON v.id = f.version_id \
             WHERE v.model_id = ?1 AND (?2 IS NULL OR v.id = ?2) ORDER BY f.version_id, f.path",
        )
        .bind(model_id)
        .bind(only)
        .fetch_all(&mut *conn)
        .await
        .map_err(self.db("reading version files"))?;
        let alias_rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT alias, version_id FROM aliases WHERE model_id = ?1 ORDER BY alias",
        )
        .bind(model_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(self.db("reading aliases"))?;

        let mut files: BTreeMap<i64, Vec<FileInfo>> = BTreeMap::new();
        for (version_id, path, digest, size) in file_rows {
            files.entry(version_id).or_default().push(FileInfo {
                path,
                digest: parse("files.digest", &digest)?,
                size: u64::try_from(size).map_err(|_| {
                    Error::Invalid(format!("the database holds size {size} in files.size"))
                })?,
            });
        }
        let mut aliases: BTreeMap<i64, Vec<AliasName>> = BTreeMap::new();
        for (alias, version_id) in alias_rows {
            aliases
                .entry(version_id)
                .or_default()
                .push(parse("aliases.alias", &alias)?);
        }
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let signature = row
                .signature_digest
                .map(|s| parse("versions.signature_digest", &s))
                .transpose()?;
            out.push(StoredVersion {
                info: VersionInfo {
                    name: name.clone(),
                    version: parse("versions.version", &row.version)?,
                    digest: parse("versions.digest", &row.digest)?,
                    created_at: parse_time("versions.created_at", &row.created_at)?,
                    pushed_at: parse_time("versions.pushed_at", &row.pushed_at)?,
                    pushed_by: row.pushed_by,
                    aliases: aliases.remove(&row.id).unwrap_or_default(),
                    signed: signature.is_some(),
                    files: files.remove(&row.id).unwrap_or_default(),
                },
                signature,
            });
        }
        Ok(out)
    }

    /// One version by id; the id came from a query in the same transaction.
    async fn load_version(
        &self,
        conn: &mut SqliteConnection,
        name: &ModelName,
        model_id: i64,
        version_id: i64,
    ) -> Result<StoredVersion> {
        self.load_versions(conn, name, model_id, Some(version_id))
            .await?
            .pop()
            .ok_or_else(|| Error::not_found(format!("a version of model {:?}", name.as_str())))
    }

    /// What an earlier push of the same name and version means for this one: `None` if
    /// there was none, `Unchanged` if it had the same digest, a conflict otherwise.
    async fn existing_version(
        &self,
        conn: &mut SqliteConnection,
        name: &ModelName,
        version: &ModelVersion,
        digest: &Sha256Digest,
    ) -> Result<Option<PushOutcome>> {
        let row: Option<(i64, i64, String)> = sqlx::query_as(
            "SELECT v.model_id, v.id, v.digest FROM versions v \
             JOIN models m ON m.id = v.model_id WHERE m.name = ?1 AND v.version = ?2",
        )
        .bind(name.as_str())
        .bind(version.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(self.db("looking up a version"))?;
        let Some((model_id, version_id, existing)) = row else {
            return Ok(None);
        };
        let existing: Sha256Digest = parse("versions.digest", &existing)?;
        if existing != *digest {
            return Err(Error::VersionConflict {
                name: name.clone(),
                version: version.clone(),
                existing,
                pushed: *digest,
            });
        }
        let stored = self.load_version(conn, name, model_id, version_id).await?;
        Ok(Some(PushOutcome::Unchanged(stored.info)))
    }

    /// The last audit entry and the time for the next one. The time never goes before the
    /// last entry's, so text order stays time order even if the clock steps back.
    async fn audit_tail(
        &self,
        conn: &mut SqliteConnection,
    ) -> Result<(Option<AuditEntry>, String)> {
        let row: Option<AuditRow> = sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT 1"
        ))
        .fetch_optional(conn)
        .await
        .map_err(self.db("reading the last audit entry"))?;
        let last = row.map(audit_entry).transpose()?;
        let mut now = Utc::now();
        if let Some(last) = &last {
            now = now.max(parse_time("audit_log.at", &last.at)?);
        }
        Ok((last, audit::format_time(now)))
    }

    async fn insert_audit(&self, conn: &mut SqliteConnection, e: &AuditEntry) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        ))
        .bind(e.seq)
        .bind(&e.at)
        .bind(&e.record.actor)
        .bind(&e.record.action)
        .bind(&e.record.subject)
        .bind(&e.record.reason)
        .bind(&e.record.details)
        .bind(e.prev_hash.to_hex())
        .bind(e.hash.to_hex())
        .execute(conn)
        .await
        .map_err(self.db("appending to the audit log"))?;
        Ok(())
    }

    /// Whether any committed row names this blob: a version's file, manifest or signature, or
    /// a review item's kept image.
    async fn blob_referenced(
        &self,
        conn: &mut SqliteConnection,
        digest: &Sha256Digest,
    ) -> Result<bool> {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM files WHERE digest = ?1) \
             OR EXISTS (SELECT 1 FROM versions WHERE digest = ?1 OR signature_digest = ?1) \
             OR EXISTS (SELECT 1 FROM review_items WHERE image_sha256 = ?1)",
        )
        .bind(digest.to_hex())
        .fetch_one(conn)
        .await
        .map_err(self.db("checking blob references"))
    }

    /// Deletes blobs this push created, except any that a row now names (another push may
    /// have found them present and committed meanwhile). Runs under the write lock: `tx` if
    /// the caller holds one, else a fresh one. Failures are logged, not returned: the push
    /// already failed, and an unreferenced blob is harmless.
    async fn discard_blobs(&self, tx: Option<&mut SqliteConnection>, created: &[Sha256Digest]) {
        if created.is_empty() {
            return;
        }
        let mut own;
        let conn: &mut SqliteConnection = match tx {
            Some(conn) => conn,
            None => match self.begin_write().await {
                Ok(tx) => {
                    own = tx;
                    &mut own
                }
                Err(e) => {
                    warn!(error = %e, blobs = created.len(), "Cannot clean up the blobs of a failed push; they stay unreferenced.");
                    return;
                }
            },
        };
        for digest in created {
            match self.blob_referenced(conn, digest).await {
                Ok(false) => {
                    if let Err(e) = self.blobs.delete(digest).await {
                        warn!(digest = %digest, error = %e, "Cannot delete a blob of a failed push; it stays unreferenced.");
                    }
                }
                Ok(true) => {}
                Err(e) => {
                    warn!(digest = %digest, error = %e, "Cannot check a blob of a failed push; it stays.");
                }
            }
        }
    }

    /// The transactional half of a push: re-checks the version under the write lock, makes
    /// sure every blob it relies on is present, then writes the rows and the audit entry.
    async fn push_rows(
        &self,
        conn: &mut SqliteConnection,
        req: &PushRequest<'_>,
        p: &mut Prepared<'_>,
    ) -> Result<PushOutcome> {
        let name = &req.manifest.model.name;
        let version = &req.manifest.model.version;
        let (digest, signature) = (&p.digest, p.signature);
        if let Some(outcome) = self.existing_version(conn, name, version, digest).await? {
            return Ok(outcome);
        }
        // A blob found present before the lock may since have been deleted by a failed push
        // that created it; that push checks references under this same lock, so checking
        // here closes the race.
        for (d, data) in &p.existed {
            if !self.blobs.exists(d).await? && self.blobs.put_if_absent(d, data).await? {
                p.created.push(*d);
            }
        }

        let (prev, at) = self.audit_tail(conn).await?;
        let model_id: i64 = sqlx::query_scalar(
            "INSERT INTO models (name, created_at, updated_at) VALUES (?1, ?2, ?2) \
             ON CONFLICT (name) DO UPDATE SET updated_at = excluded.updated_at RETURNING id",
        )
        .bind(name.as_str())
        .bind(&at)
        .fetch_one(&mut *conn)
        .await
        .map_err(self.db("recording the model"))?;
        let version_id: i64 = sqlx::query_scalar(
            "INSERT INTO versions \
             (model_id, version, digest, created_at, pushed_at, pushed_by, signature_digest) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
        )
        .bind(model_id)
        .bind(version.as_str())
        .bind(digest.to_hex())
        .bind(audit::format_time(req.manifest.model.created_at))
        .bind(&at)
        .bind(req.actor)
        .bind(signature.map(|s| s.to_hex()))
        .fetch_one(&mut *conn)
        .await
        .map_err(self.db("recording the version"))?;
        for (path, file_digest, data) in &p.files {
            sqlx::query(
                "INSERT INTO files (version_id, path, digest, size) VALUES (?1, ?2, ?3, ?4)",
            )
            .bind(version_id)
            .bind(*path)
            .bind(file_digest.to_hex())
            .bind(to_i64("file size", data.len())?)
            .execute(&mut *conn)
            .await
            .map_err(self.db("recording the version's files"))?;
        }
        let record = AuditRecord {
            actor: req.actor.to_owned(),
            action: "model.push".into(),
            subject: format!("{name}:{version}"),
            reason: req.reason.to_owned(),
            details: serde_json::json!({
                "digest": digest.to_hex(),
                "signed": signature.is_some(),
            })
            .to_string(),
        };
        let entry = audit::chain(prev.as_ref(), at, record);
        self.insert_audit(conn, &entry).await?;
        let stored = self.load_version(conn, name, model_id, version_id).await?;
        Ok(PushOutcome::Created(stored.info))
    }

    /// The transactional half of an alias change; `to = None` removes the alias. Returns
    /// where the alias pointed before, or `None` when there was nothing to do.
    async fn alias_rows(
        &self,
        conn: &mut SqliteConnection,
        name: &ModelName,
        alias: &AliasName,
        to: Option<&ModelVersion>,
        actor: &str,
        reason: &str,
    ) -> Result<Option<Option<ModelVersion>>> {
        let model_id = self.model_id(conn, name).await?;
        let target = match to {
            Some(v) => Some(self.version_id(conn, name, model_id, v).await?),
            None => None,
        };
        let current: Option<(i64, String)> = sqlx::query_as(
            "SELECT a.version_id, v.version FROM aliases a JOIN versions v ON v.id = a.version_id \
             WHERE a.model_id = ?1 AND a.alias = ?2",
        )
        .bind(model_id)
        .bind(alias.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(self.db("reading an alias"))?;
        if current.as_ref().map(|c| c.0) == target {
            return Ok(None);
        }
        let from = current
            .map(|(_, v)| parse::<ModelVersion>("versions.version", &v))
            .transpose()?;

        let (prev, at) = self.audit_tail(conn).await?;
        match target {
            Some(version_id) => {
                sqlx::query(
                    "INSERT INTO aliases (model_id, alias, version_id, updated_at) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (model_id, alias) \
                     DO UPDATE SET version_id = excluded.version_id, updated_at = excluded.updated_at",
                )
                .bind(model_id)
                .bind(alias.as_str())
                .bind(version_id)
                .bind(&at)
                .execute(&mut *conn)
                .await
                .map_err(self.db("setting an alias"))?;
            }
            None => {
                sqlx::query("DELETE FROM aliases WHERE model_id = ?1 AND alias = ?2")
                    .bind(model_id)
                    .bind(alias.as_str())
                    .execute(&mut *conn)
                    .await
                    .map_err(self.db("removing an alias"))?;
            }
        }
        sqlx::query("UPDATE models SET updated_at = ?2 WHERE id = ?1")
            .bind(model_id)
            .bind(&at)
            .execute(&mut *conn)
            .await
            .map_err(self.db("recording the model"))?;

        let record = AuditRecord {
            actor: actor.to_owned(),
            action: if to.is_some() {
                "alias.set"
            } else {
                "alias.remove"
            }
            .into(),
            subject: format!("{name}@{alias}"),
            reason: reason.to_owned(),
            details: serde_json::json!({ "from": from, "to": to }).to_string(),
        };
        let entry = audit::chain(prev.as_ref(), at, record);
        self.insert_audit(conn, &entry).await?;
        sqlx::query(
            "INSERT INTO alias_events \
             (model_id, alias, from_version, to_version, at, actor, reason, audit_seq) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(model_id)
        .bind(alias.as_str())
        .bind(from.as_ref().map(ModelVersion::as_str))
        .bind(to.map(ModelVersion::as_str))
        .bind(&entry.at)
        .bind(actor)
        .bind(reason)
        .bind(entry.seq)
        .execute(&mut *conn)
        .await
        .map_err(self.db("recording an alias event"))?;
        Ok(Some(from))
    }
}

#[async_trait::async_trait]
impl Registry for SqliteRegistry {
    async fn push(&self, req: PushRequest<'_>) -> Result<PushOutcome> {
        let name = &req.manifest.model.name;
        let version = &req.manifest.model.version;
        let digest = Sha256Digest::of(req.manifest_bytes);
        let files = check_files(&req)?;
        let signature = req.signature.map(Sha256Digest::of);

        // A cheap look before touching the artifact store: most re-pushes and conflicts end
        // here. The transaction checks again under the lock.
        {
            let mut conn = self
                .pool
                .acquire()
                .await
                .map_err(self.db("connecting to the database"))?;
            if let Some(outcome) = self
                .existing_version(&mut conn, name, version, &digest)
                .await?
            {
                return Ok(outcome);
            }
        }

        let mut blobs: BTreeMap<Sha256Digest, &[u8]> = BTreeMap::new();
        blobs.insert(digest, req.manifest_bytes);
        if let (Some(d), Some(data)) = (signature, req.signature) {
            blobs.insert(d, data);
        }
        for (_, d, data) in &files {
            blobs.insert(*d, data);
        }
        let mut p = Prepared {
            digest,
            files,
            signature,
            created: Vec::new(),
            existed: Vec::new(),
        };
        for (d, data) in blobs {
            match self.blobs.put_if_absent(&d, data).await {
                Ok(true) => p.created.push(d),
                Ok(false) => p.existed.push((d, data)),
                Err(e) => {
                    self.discard_blobs(None, &p.created).await;
                    return Err(e);
                }
            }
        }

        let mut tx = match self.begin_write().await {
            Ok(tx) => tx,
            Err(e) => {
                self.discard_blobs(None, &p.created).await;
                return Err(e);
            }
        };
        match self.push_rows(&mut tx, &req, &mut p).await {
            Ok(PushOutcome::Created(info)) => {
                if let Err(e) = self.finish_write(tx).await {
                    self.discard_blobs(None, &p.created).await;
                    return Err(e);
                }
                info!(
                    model = %name,
                    version = %version,
                    digest = %digest,
                    actor = req.actor,
                    "Version pushed."
                );
                Ok(PushOutcome::Created(info))
            }
            other => {
                // Unchanged (an identical push won the race) or failed: leave nothing behind.
                self.discard_blobs(Some(&mut *tx), &p.created).await;
                if let Err(e) = tx.rollback().await {
                    warn!(error = %e, "Cannot roll back a push transaction.");
                }
                other
            }
        }
    }

    async fn list_models(&self) -> Result<Vec<ModelSummary>> {
        let mut tx = self.begin_read().await?;
        let rows: Vec<(i64, String, String, i64, Option<String>)> = sqlx::query_as(
            "SELECT m.id, m.name, m.updated_at, \
             (SELECT COUNT(*) FROM versions v WHERE v.model_id = m.id), \
             (SELECT v.version FROM versions v WHERE v.model_id = m.id ORDER BY v.id DESC LIMIT 1) \
             FROM models m ORDER BY m.name",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(self.db("listing models"))?;
        let alias_rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT a.model_id, a.alias, v.version FROM aliases a \
             JOIN versions v ON v.id = a.version_id",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(self.db("listing aliases"))?;
        drop(tx);

        let mut aliases: BTreeMap<i64, BTreeMap<String, ModelVersion>> = BTreeMap::new();
        for (model_id, alias, version) in alias_rows {
            aliases
                .entry(model_id)
                .or_default()
                .insert(alias, parse("versions.version", &version)?);
        }
        rows.into_iter()
            .map(|(id, name, updated_at, versions, latest)| {
                Ok(ModelSummary {
                    name: parse("models.name", &name)?,
                    versions: u64::try_from(versions).map_err(|_| {
                        Error::Invalid(format!("the database counts {versions} versions"))
                    })?,
                    latest: latest.map(|v| parse("versions.version", &v)).transpose()?,
                    aliases: aliases.remove(&id).unwrap_or_default(),
                    updated_at: parse_time("models.updated_at", &updated_at)?,
                })
            })
            .collect()
    }

    async fn list_versions(&self, name: &ModelName) -> Result<Vec<VersionInfo>> {
        let mut tx = self.begin_read().await?;
        let model_id = self.model_id(&mut tx, name).await?;
        let versions = self.load_versions(&mut tx, name, model_id, None).await?;
        Ok(versions.into_iter().map(|v| v.info).collect())
    }

    async fn resolve(&self, r: &ModelRef) -> Result<VersionInfo> {
        let name = &r.name;
        let mut tx = self.begin_read().await?;
        let model_id = self.model_id(&mut tx, name).await?;
        let version_id = match &r.selector {
            VersionSelector::Latest => sqlx::query_scalar::<_, i64>(
                "SELECT id FROM versions WHERE model_id = ?1 ORDER BY id DESC LIMIT 1",
            )
            .bind(model_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(self.db("looking up the latest version"))?
            .ok_or_else(|| Error::not_found(format!("a version of model {:?}", name.as_str())))?,
            VersionSelector::Version(v) => self.version_id(&mut tx, name, model_id, v).await?,
            VersionSelector::Alias(a) => sqlx::query_scalar::<_, i64>(
                "SELECT version_id FROM aliases WHERE model_id = ?1 AND alias = ?2",
            )
            .bind(model_id)
            .bind(a.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(self.db("looking up an alias"))?
            .ok_or_else(|| Error::not_found(format!("alias {name}@{a}")))?,
        };
        Ok(self
            .load_version(&mut tx, name, model_id, version_id)
            .await?
            .info)
    }

    async fn fetch(&self, name: &ModelName, version: &ModelVersion) -> Result<BundleFiles> {
        let stored = {
            let mut tx = self.begin_read().await?;
            let model_id = self.model_id(&mut tx, name).await?;
            let version_id = self.version_id(&mut tx, name, model_id, version).await?;
            self.load_version(&mut tx, name, model_id, version_id)
                .await?
        };
        let manifest_bytes = self.blobs.get(&stored.info.digest).await?;
        let signature = match &stored.signature {
            Some(d) => Some(self.blobs.get(d).await?),
            None => None,
        };
        let mut files = BTreeMap::new();
        for f in &stored.info.files {
            files.insert(f.path.clone(), self.blobs.get(&f.digest).await?);
        }
        Ok(BundleFiles {
            info: stored.info,
            manifest_bytes,
            signature,
            files,
        })
    }

    async fn set_alias(&self, change: AliasChange<'_>) -> Result<AliasOutcome> {
        let mut tx = self.begin_write().await?;
        let from = self
            .alias_rows(
                &mut tx,
                change.name,
                change.alias,
                Some(change.version),
                change.actor,
                change.reason,
            )
            .await?;
        let Some(from) = from else {
            return Ok(AliasOutcome::Unchanged);
        };
        self.finish_write(tx).await?;
        info!(
            model = %change.name,
            alias = %change.alias,
            from = from.as_ref().map(ModelVersion::as_str),
            to = %change.version,
            actor = change.actor,
            "Alias moved."
        );
        Ok(AliasOutcome::Moved { from })
    }

    async fn remove_alias(
        &self,
        name: &ModelName,
        alias: &AliasName,
        actor: &str,
        reason: &str,
    ) -> Result<ModelVersion> {
        let mut tx = self.begin_write().await?;
        let from = self
            .alias_rows(&mut tx, name, alias, None, actor, reason)
            .await?
            .flatten()
            .ok_or_else(|| Error::not_found(format!("alias {name}@{alias}")))?;
        self.finish_write(tx).await?;
        info!(model = %name, alias = %alias, from = %from, actor, "Alias removed.");
        Ok(from)
    }

    async fn alias_history(
        &self,
        name: &ModelName,
        alias: Option<&AliasName>,
    ) -> Result<Vec<AliasEvent>> {
        let mut tx = self.begin_read().await?;
        let model_id = self.model_id(&mut tx, name).await?;
        let rows: Vec<AliasEventRow> = sqlx::query_as(
            "SELECT alias, from_version, to_version, at, actor, reason, audit_seq \
             FROM alias_events WHERE model_id = ?1 AND (?2 IS NULL OR alias = ?2) ORDER BY id",
        )
        .bind(model_id)
        .bind(alias.map(AliasName::as_str))
        .fetch_all(&mut *tx)
        .await
        .map_err(self.db("reading alias history"))?;
        rows.into_iter()
            .map(|row| {
                Ok(AliasEvent {
                    at: parse_time("alias_events.at", &row.at)?,
                    alias: parse("alias_events.alias", &row.alias)?,
                    from: row
                        .from_version
                        .map(|v| parse("alias_events.from_version", &v))
                        .transpose()?,
                    to: row
                        .to_version
                        .map(|v| parse("alias_events.to_version", &v))
                        .transpose()?,
                    actor: row.actor,
                    reason: row.reason,
                    audit_seq: row.audit_seq,
                })
            })
            .collect()
    }

    async fn alias_at(
        &self,
        name: &ModelName,
        alias: &AliasName,
        at: DateTime<Utc>,
    ) -> Result<Option<ModelVersion>> {
        // The last move at or before `at` says where the alias pointed; its `to_version` is
        // NULL if that move removed it, and no move at all also means "did not exist".
        let row: Option<(i64, Option<String>)> = sqlx::query_as(
            "SELECT m.id, (SELECT e.to_version FROM alias_events e \
               WHERE e.model_id = m.id AND e.alias = ?2 AND e.at <= ?3 \
               ORDER BY e.at DESC, e.id DESC LIMIT 1) \
             FROM models m WHERE m.name = ?1",
        )
        .bind(name.as_str())
        .bind(alias.as_str())
        .bind(audit::format_time(at))
        .fetch_optional(&self.pool)
        .await
        .map_err(self.db("reading alias history"))?;
        let (_, version) =
            row.ok_or_else(|| Error::not_found(format!("model {:?}", name.as_str())))?;
        version
            .map(|v| parse("alias_events.to_version", &v))
            .transpose()
    }

    async fn append_audit(&self, record: AuditRecord) -> Result<AuditEntry> {
        let mut tx = self.begin_write().await?;
        let (prev, at) = self.audit_tail(&mut tx).await?;
        let entry = audit::chain(prev.as_ref(), at, record);
        self.insert_audit(&mut tx, &entry).await?;
        self.finish_write(tx).await?;
        debug!(seq = entry.seq, action = %entry.record.action, "Audit entry appended.");
        Ok(entry)
    }

    async fn audit_log(&self) -> Result<Vec<AuditEntry>> {
        let rows: Vec<AuditRow> = sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY seq"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(self.db("reading the audit log"))?;
        rows.into_iter().map(audit_entry).collect()
    }
}
