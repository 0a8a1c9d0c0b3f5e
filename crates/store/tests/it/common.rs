//! Fixtures: a registry in a temporary directory, a tiny bundle builder, and snapshots of the
//! database rows and the artifact folder for "nothing changed" checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use vigil_core::bundle::Manifest;
use vigil_core::types::{AliasName, ModelName, ModelVersion, Sha256Digest};
use vigil_store::{
    AliasChange, AliasOutcome, OpenOptions, PushOutcome, PushRequest, Registry, Result,
};

/// A registry on a fresh temporary data directory.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub registry: Arc<dyn Registry>,
}

impl Fixture {
    pub async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let registry = vigil_store::open(&OpenOptions::new(dir.path()))
            .await
            .unwrap();
        Fixture { dir, registry }
    }

    /// A second, independent handle on the same directory (as another process would have).
    pub async fn another_handle(&self) -> Arc<dyn Registry> {
        vigil_store::open(&OpenOptions::new(self.dir.path()))
            .await
            .unwrap()
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join(vigil_store::DB_FILE)
    }

    pub fn artifacts(&self) -> PathBuf {
        self.dir.path().join(vigil_store::ARTIFACTS_DIR)
    }

    /// A direct connection to the SQLite file, bypassing the registry.
    pub async fn raw_db(&self) -> SqlitePool {
        SqlitePool::connect_with(SqliteConnectOptions::new().filename(self.db_path()))
            .await
            .unwrap()
    }
}

/// A bundle in memory, as a caller of `push` holds it.
#[derive(Clone)]
pub struct TestBundle {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub files: BTreeMap<String, Vec<u8>>,
    pub signature: Option<Vec<u8>>,
}

impl TestBundle {
    pub fn name(&self) -> &ModelName {
        &self.manifest.model.name
    }

    pub fn version(&self) -> &ModelVersion {
        &self.manifest.model.version
    }

    pub fn digest(&self) -> Sha256Digest {
        Sha256Digest::of(&self.manifest_bytes)
    }

    pub fn signed(mut self, signature: &[u8]) -> Self {
        self.signature = Some(signature.to_vec());
        self
    }

    pub fn request<'a>(&'a self, actor: &'a str, reason: &'a str) -> PushRequest<'a> {
        PushRequest {
            manifest: &self.manifest,
            manifest_bytes: &self.manifest_bytes,
            files: &self.files,
            signature: self.signature.as_deref(),
            actor,
            reason,
        }
    }
}

/// A valid bundle for `name:version` whose `model.onnx` holds `model` (the registry does not
/// parse ONNX) plus a shared `labels.txt`.
pub fn bundle(name: &str, version: &str, model: &[u8]) -> TestBundle {
    let mut files = BTreeMap::new();
    files.insert("model.onnx".to_owned(), model.to_vec());
    files.insert("labels.txt".to_owned(), b"ok\ndefect\n".to_vec());
    let listed: String = files
        .iter()
        .map(|(path, data)| format!("{path:?} = \"{}\"\n", Sha256Digest::of(data)))
        .collect();
    let text = format!(
        r#"format = 1

[model]
name = "{name}"
version = "{version}"
task = "classification"
labels = ["ok", "defect"]
created_at = "2026-01-02T03:04:05.123456Z"
created_by = "tests"

[[inputs]]
name = "input"
dtype = "float32"
shape = [-1, 1, 8, 8]

[[outputs]]
name = "probs"
dtype = "float32"
shape = [-1, 2]

[roles]
probabilities = "probs"

[[preprocess]]
op = "decode"

[[preprocess]]
op = "grey"

[[preprocess]]
op = "resize"
width = 8
height = 8
filter = "bilinear"

[[preprocess]]
op = "scale"
factor = 0.00392156862745098

[[preprocess]]
op = "layout"
order = "nchw"

[decision]
rule = "argmax"

[provenance]
trainer = "tests"

[engine]
model_format = "onnx"
ir_version = 8
opsets = {{ "" = 13 }}

[golden]
atol = 0.0001
rtol = 0.001

[files]
{listed}"#
    );
    let manifest = Manifest::parse(&text).unwrap();
    TestBundle {
        manifest,
        manifest_bytes: text.into_bytes(),
        files,
        signature: None,
    }
}

pub async fn push(registry: &Arc<dyn Registry>, b: &TestBundle) -> Result<PushOutcome> {
    registry.push(b.request("alice", "test push")).await
}

pub async fn set_alias(
    registry: &Arc<dyn Registry>,
    name: &str,
    alias: &str,
    version: &str,
) -> Result<AliasOutcome> {
    registry
        .set_alias(AliasChange {
            name: &name.parse().unwrap(),
            alias: &alias.parse().unwrap(),
            version: &version.parse().unwrap(),
            actor: "bob",
            reason: "test alias",
        })
        .await
}

pub fn name(s: &str) -> ModelName {
    s.parse().unwrap()
}

pub fn version(s: &str) -> ModelVersion {
    s.parse().unwrap()
}

pub fn alias(s: &str) -> AliasName {
    s.parse().unwrap()
}

/// Every file and folder under `root` with its content (folders map to `None`).
pub fn snapshot_dir(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                out.insert(rel, None);
                walk(root, &path, out);
            } else {
                out.insert(rel, Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Every row of every registry table, as JSON text per table.
pub async fn snapshot_db(pool: &SqlitePool) -> BTreeMap<String, String> {
    let tables = [
        "models",
        "versions",
        "files",
        "aliases",
        "alias_events",
        "audit_log",
    ];
    let mut out = BTreeMap::new();
    for table in tables {
        let columns: String = sqlx::query_scalar(&format!(
            "SELECT group_concat(name, ', ') FROM pragma_table_info('{table}')"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        let row = sqlx::query(&format!(
            "SELECT json_group_array(json_array({columns})) FROM (SELECT * FROM {table} ORDER BY rowid)"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        out.insert(table.to_owned(), row.get::<String, _>(0));
    }
    out
}
