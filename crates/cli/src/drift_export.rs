//! `vigil drift simulate --export DIR`: the embeddings of the windows the acceptance test
//! evaluates, with Vigil's verdict on each, so other drift tools can be run on exactly the
//! same data (`bench/drift-peers.sh`).
//!
//! Files written into DIR (which must be new or empty):
//! - `reference.f32`: the reference sample the MMD signal compares every window with
//!   (`mmd_reference()` of the bundle's embedding profile), row-major little-endian `f32`,
//!   `reference_rows` × `dim`.
//! - `windows.f32`: the embeddings of every exported window one after the other, each
//!   `rows` × `dim`, same encoding.
//! - `windows.json`: `dim`, `window`, `reference_rows`, `bundle` and per window its `kind`
//!   (`in_distribution` or the change in words), `offset_rows` (first row in `windows.f32`),
//!   `rows`, and `vigil`: the whole family's verdict (`drift`, `drifted`), the `embedding.mmd`
//!   signal alone (`mmd_statistic`, `mmd_threshold`, `mmd_drift`, `mmd_p_value`) and the
//!   wall time of the `evaluate` call (`evaluate_seconds`).
//!
//! Windows: the first `in_distribution` windows of the false-alarm stream, exactly as
//! `efficacy::false_alarms` evaluates them (same stream, same ends, same seeds), then per
//! simulated change `changed` windows made only of changed images, drawn in runs of `block`
//! as `efficacy::detection` draws its changed images.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;
use vigil_core::monitor::{Observation, ReferenceProfile, WindowReport, evaluate};

use crate::efficacy;

/// Default number of in-distribution windows exported.
pub const IN_DISTRIBUTION_WINDOWS: usize = 100;
/// Default number of windows exported per simulated change.
pub const CHANGED_WINDOWS: usize = 50;

/// The name of the MMD signal in a window report.
const MMD_SIGNAL: &str = "embedding.mmd";

/// What to export and how the streams are drawn (the acceptance test's settings).
pub struct ExportPlan<'a> {
    /// The folder to write.
    pub dir: &'a Path,
    /// `model:version`, for the record.
    pub bundle: String,
    /// In-distribution images streamed (`--stream`).
    pub stream: usize,
    /// Consecutive images kept together (`--block`).
    pub block: usize,
    /// Seed of the resampling (`--seed`).
    pub seed: u64,
    /// In-distribution windows to export (at most those of the stream).
    pub in_distribution: usize,
    /// Windows per change.
    pub changed: usize,
}

/// Vigil's verdict on one exported window.
#[derive(Debug, Serialize)]
struct Verdict {
    drift: bool,
    drifted: Vec<String>,
    mmd_statistic: Option<f64>,
    mmd_threshold: Option<f64>,
    mmd_drift: Option<bool>,
    mmd_p_value: Option<f64>,
    evaluate_seconds: f64,
}

#[derive(Debug, Serialize)]
struct WindowEntry {
    kind: String,
    offset_rows: usize,
    rows: usize,
    vigil: Verdict,
}

#[derive(Debug, Serialize)]
struct Index {
    dim: usize,
    window: usize,
    reference_rows: usize,
    bundle: String,
    windows: Vec<WindowEntry>,
}

/// Refuses a `dir` that exists and is not an empty folder (exit code 4, as other commands
/// that would overwrite a result). Call before the long work.
pub fn check_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        if entries.next().is_some() {
            return Err(vigil_store::Error::Conflict(format!(
                "{} exists and is not empty: choose a new folder",
                dir.display()
            ))
            .into());
        }
    }
    Ok(())
}

/// Writes `f32` rows little-endian and counts them.
struct Rows {
    out: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    rows: usize,
}

impl Rows {
    fn create(path: PathBuf) -> anyhow::Result<Rows> {
        let f = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Rows {
            out: std::io::BufWriter::new(f),
            path,
            rows: 0,
        })
    }

    fn push(&mut self, row: &[f32], dim: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            row.len() == dim,
            "an embedding of {} values, the reference's have {dim}",
            row.len()
        );
        let bytes: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.out
            .write_all(&bytes)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.rows += 1;
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<usize> {
        self.out
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok(self.rows)
    }
}

fn verdict(r: &WindowReport, seconds: f64) -> Verdict {
    let mmd = r.signals.iter().find(|s| s.name == MMD_SIGNAL);
    Verdict {
        drift: r.drift,
        drifted: r.drifted.clone(),
        mmd_statistic: mmd.map(|s| s.statistic),
        mmd_threshold: mmd.map(|s| s.threshold),
        mmd_drift: mmd.map(|s| s.drifted),
        mmd_p_value: mmd.and_then(|s| s.p_value),
        evaluate_seconds: seconds,
    }
}

/// Evaluates and writes the exported windows. `changes` are the simulated changes in words
/// with all their changed observations. Returns the number of windows written.
pub fn export(
    plan: &ExportPlan<'_>,
    reference: &ReferenceProfile,
    pool: &[Observation],
    changes: &[(String, &[Observation])],
) -> anyhow::Result<usize> {
    check_dir(plan.dir)?;
    let e = reference
        .embedding
        .as_ref()
        .context("the bundle's reference has no embedding profile: nothing to export")?;
    let (dim, w) = (e.dim, reference.drift.window);
    let staging = crate::cmd::common::staging_dir(plan.dir, ".vigil-export-")?;

    let mut reference_rows = Rows::create(staging.path().join("reference.f32"))?;
    for v in e.mmd_reference() {
        reference_rows.push(v, dim)?;
    }
    let reference_rows = reference_rows.finish()?;

    let mut rows = Rows::create(staging.path().join("windows.f32"))?;
    let mut entries = Vec::new();
    let mut add = |kind: &str, window: &[Observation], seed: u64| -> anyhow::Result<()> {
        let offset_rows = rows.rows;
        for o in window {
            let v = o
                .embedding
                .as_deref()
                .context("an image without an embedding: the model exposes none")?;
            rows.push(v, dim)?;
        }
        let t = Instant::now();
        let r = evaluate(reference, window, seed)?;
        let seconds = t.elapsed().as_secs_f64();
        entries.push(WindowEntry {
            kind: kind.to_owned(),
            offset_rows,
            rows: window.len(),
            vigil: verdict(&r, seconds),
        });
        Ok(())
    };

    let (stream, ends) =
        efficacy::in_distribution_stream(reference, pool, plan.stream, plan.block, plan.seed)?;
    for &end in ends.iter().take(plan.in_distribution) {
        add(
            "in_distribution",
            &stream[end - w..end],
            efficacy::in_distribution_seed(plan.seed, end),
        )?;
    }
    for (kind, changed) in changes {
        for (window, seed) in
            efficacy::changed_windows(changed, w, plan.changed, plan.block, plan.seed)
        {
            add(kind, &window, seed)?;
        }
    }
    rows.finish()?;

    let index = Index {
        dim,
        window: w,
        reference_rows,
        bundle: plan.bundle.clone(),
        windows: entries,
    };
    let n = index.windows.len();
    let json = staging.path().join("windows.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&index)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    // An empty `dir` is replaced by the finished folder in one rename.
    let staged = staging.keep();
    if let Err(e) = std::fs::rename(&staged, plan.dir) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e).with_context(|| format!("cannot write {}", plan.dir.display()));
    }
    Ok(n)
}
