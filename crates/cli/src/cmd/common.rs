//! Steps several commands share: verifying a bundle end to end and opening the registry.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use vigil_core::bundle::{Bundle, MODEL_FILE, PublicKey, SignatureCheck};
use vigil_engine::preprocess::{Limits, Pipeline};

use vigil_store::Registry;

use super::Context;
use crate::exit::CheckFailed;

/// Runs a future on a small runtime: the CLI's commands are short-lived and mostly wait on
/// one database.
pub fn block_on<F: Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(rt.block_on(f))
}

/// A temporary folder beside `out` (same file system, so the finished result is renamed
/// into place at once and an interrupted command leaves nothing half-written at `out`).
pub fn staging_dir(out: &std::path::Path, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .with_context(|| format!("cannot write in {}", parent.display()))
}

/// Opens the registry in the configured data directory.
pub async fn open_registry(ctx: &Context) -> anyhow::Result<Arc<dyn Registry>> {
    let data_dir = ctx.config.data_dir()?;
    let registry = vigil_store::open(&ctx.config.store.open_options(data_dir.clone()))
        .await
        .with_context(|| format!("cannot open the registry in {}", data_dir.display()))?;
    Ok(registry)
}

/// The configured data directory, which must already hold a store: for commands that only
/// read or change what is there, and must never create an empty store by mistake (a typo in
/// the path would otherwise "succeed" on nothing). Not found (exit 3) names the path.
pub fn existing_data_dir(ctx: &Context) -> anyhow::Result<std::path::PathBuf> {
    let data_dir = ctx.config.data_dir()?;
    let db = data_dir.join(vigil_store::DB_FILE);
    if !db.is_file() {
        return crate::exit::fail(
            vigil_core::ErrorKind::NotFound,
            format!(
                "no store at {} (looked for {}); set store.data_dir (VIGIL__STORE__DATA_DIR) \
                 to the server's data directory",
                data_dir.display(),
                db.display()
            ),
        );
    }
    Ok(data_dir)
}

/// Opens the registry in the configured data directory, which must already hold a store
/// ([`existing_data_dir`]): for read-only commands, which must never create state.
pub async fn open_existing_registry(ctx: &Context) -> anyhow::Result<Arc<dyn Registry>> {
    let data_dir = existing_data_dir(ctx)?;
    vigil_store::open(&ctx.config.store.open_options(data_dir.clone()))
        .await
        .with_context(|| format!("cannot open the registry in {}", data_dir.display()))
}

/// Opens every side of the store in the configured data directory on one connection pool
/// (for `vigil serve`, which uses them all for its whole life).
pub async fn open_stores(ctx: &Context) -> anyhow::Result<vigil_store::Stores> {
    let data_dir = ctx.config.data_dir()?;
    vigil_store::open_stores(&ctx.config.store.open_options(data_dir.clone()))
        .await
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))
}

/// Opens the store's monitoring side (the prediction log, drift windows, alert history) in
/// the configured data directory.
pub async fn open_monitor_store(
    ctx: &Context,
) -> anyhow::Result<Arc<dyn vigil_store::MonitorStore>> {
    let data_dir = ctx.config.data_dir()?;
    vigil_store::open_monitor(&ctx.config.store.open_options(data_dir.clone()))
        .await
        .with_context(|| format!("cannot open the prediction log in {}", data_dir.display()))
}

/// What to check when verifying a bundle.
#[derive(Debug)]
pub struct VerifyOptions {
    /// Keys whose signatures are trusted.
    pub trusted: Vec<PublicKey>,
    /// Refuse unsigned bundles and bundles signed by untrusted keys.
    pub require_signature: bool,
    /// Run the model on the golden inputs.
    pub golden: bool,
}

impl VerifyOptions {
    /// The policy from the configuration, plus extra trusted keys given on the command line.
    pub fn from_config(
        ctx: &Context,
        extra_keys: &[std::path::PathBuf],
        require: bool,
    ) -> anyhow::Result<Self> {
        let mut trusted = ctx.config.trusted_keys()?;
        for p in extra_keys {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read key {}", p.display()))?;
            trusted.push(PublicKey::parse(&text).with_context(|| format!("key {}", p.display()))?);
        }
        Ok(VerifyOptions {
            trusted,
            require_signature: require || ctx.config.bundle.require_signature,
            golden: true,
        })
    }
}

/// A bundle that passed every check.
#[derive(Debug)]
pub struct Verified {
    /// Every listed file, by path, already hash-checked.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// One line of a check report: `  [ok  ] files        8 files match their SHA-256`.
pub fn check_line(ok: bool, what: &str, detail: &str) -> String {
    let mark = if ok { "ok  " } else { "FAIL" };
    format!("  [{mark}] {what:<12} {detail}")
}

/// One line of a verification report, on standard error (standard output carries the result).
pub fn report_line(ok: bool, what: &str, detail: &str) {
    eprintln!("{}", check_line(ok, what, detail));
}

/// Checks a bundle end to end: manifest, every file's hash, the signature policy, the
/// engine's requirements and the golden outputs. Prints one line per check to stderr.
pub fn verify_bundle(
    ctx: &Context,
    bundle: &Bundle,
    opts: &VerifyOptions,
) -> anyhow::Result<Verified> {
    let m = bundle.manifest();
    report_line(
        true,
        "manifest",
        &format!(
            "{}:{} (sha256 {})",
            m.model.name,
            m.model.version,
            bundle.digest().short()
        ),
    );
    let files = match bundle.verify_files() {
        Ok(f) => f,
        Err(e) => {
            report_line(false, "files", &e.to_string());
            return Err(e).context("bundle verification failed");
        }
    };
    report_line(
        true,
        "files",
        &format!("{} files match their SHA-256", files.len()),
    );

    let signature = match bundle.check_signature(&opts.trusted) {
        Ok(s) => s,
        Err(e) => {
            report_line(false, "signature", &e.to_string());
            return Err(e).context("bundle verification failed");
        }
    };
    match &signature {
        SignatureCheck::Unsigned if opts.require_signature => {
            report_line(false, "signature", "unsigned, and a signature is required");
            return Err(
                CheckFailed("the bundle is not signed and signatures are required".into()).into(),
            );
        }
        SignatureCheck::Unsigned => report_line(true, "signature", "unsigned (not required)"),
        SignatureCheck::Valid {
            key_id,
            trusted,
            signed_by,
        } => {
            if !trusted && opts.require_signature {
                report_line(
                    false,
                    "signature",
                    &format!("valid, but key {key_id} is not trusted"),
                );
                return Err(
                    CheckFailed(format!("the bundle is signed by untrusted key {key_id}")).into(),
                );
            }
            let trust = if *trusted { "trusted" } else { "untrusted" };
            report_line(
                true,
                "signature",
                &format!("valid, key {key_id} ({trust}), signed by {signed_by}"),
            );
        }
    }

    if let Err(e) = vigil_engine::check_requirements(m, ctx.config.engine().kind) {
        report_line(false, "engine", &e.to_string());
        return Err(e).context("bundle verification failed");
    }
    let opsets: Vec<String> = m
        .engine
        .opsets
        .iter()
        .map(|(d, v)| format!("{}{v}", if d.is_empty() { "onnx " } else { d }))
        .collect();
    report_line(
        true,
        "engine",
        &format!(
            "IR {}, opset {} supported",
            m.engine.ir_version,
            opsets.join(", ")
        ),
    );

    if opts.golden {
        match bundle.golden()? {
            None => report_line(true, "golden", "no golden cases in this bundle"),
            Some(set) => {
                let mut backend = vigil_engine::load(&files[MODEL_FILE], m, &ctx.config.engine())?;
                let pipeline = Pipeline::new(m, Limits::default());
                let cases = set
                    .cases
                    .iter()
                    .map(|c| {
                        Ok((
                            c,
                            files
                                .get(&c.input)
                                .cloned()
                                .context("golden input not listed")?,
                        ))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                match vigil_engine::golden::check(backend.as_mut(), &pipeline, &cases, m.golden) {
                    Ok(r) => {
                        report_line(
                            true,
                            "golden",
                            &format!(
                                "{} cases reproduce on {} (max |diff| {:.2e}, atol {:.0e}, rtol {:.0e})",
                                r.cases,
                                backend.describe(),
                                r.max_abs_diff,
                                m.golden.atol,
                                m.golden.rtol
                            ),
                        );
                    }
                    Err(e) => {
                        report_line(false, "golden", &e.to_string());
                        return Err(e).context("bundle verification failed");
                    }
                }
            }
        }
    }
    Ok(Verified { files })
}
