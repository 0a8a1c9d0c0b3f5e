//! `vigil score`: batch scoring of folders, globs and CSV manifests into CSV, JSON Lines or
//! Parquet, with a progress bar, `--resume`, a summary, and heat maps for whole radiographs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use vigil_core::bundle::{Bundle, DecisionRule, MODEL_FILE};
use vigil_core::types::ModelRef;
use vigil_engine::preprocess::{Limits, Pipeline};

use super::Context;
use super::common::{VerifyOptions, block_on, open_registry, verify_bundle};
use crate::output;
use crate::score::{self, inputs, sink};

/// Arguments of `vigil score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Images to score: folders (searched recursively for .png .jpg .bmp .tif .dcm), glob
    /// patterns ("films/*.png"), single files, or CSV manifests with a `path` column and an
    /// optional `label` column (paths relative to the manifest).
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<String>,
    /// The model from the registry: NAME (latest), NAME:VERSION or NAME@ALIAS.
    #[arg(
        long,
        short,
        value_name = "REF",
        conflicts_with = "bundle",
        required_unless_present = "bundle"
    )]
    pub model: Option<ModelRef>,
    /// A bundle folder or archive instead of a registry model.
    #[arg(long, value_name = "PATH")]
    pub bundle: Option<PathBuf>,
    /// Where to write one row per image; the extension picks the format: .csv, .jsonl or
    /// .parquet.
    #[arg(long, short, value_name = "FILE")]
    pub out: PathBuf,
    /// Continue an interrupted run: keep the rows already in --out and score only the rest
    /// (rows with errors are retried). CSV and JSON Lines only.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Replace --out if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Most images (or tiles) per engine call.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub batch_size: u32,
    /// Decode and preprocessing threads (default: one per core).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Engine instances, each running batches on its own thread (default: as many as fit the
    /// cores with engine.threads threads each; with engine.threads = 0, one single-threaded
    /// instance per core, which gives the most images per second; given with
    /// engine.threads = 0, the cores are split among them).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub instances: Option<u32>,
    /// For bundles that tile whole radiographs: write one heat-map PNG per film here.
    #[arg(long, value_name = "DIR")]
    pub heatmap: Option<PathBuf>,
    /// Print the summary as JSON on standard output.
    #[arg(long)]
    pub json: bool,
}

/// Runs `vigil score`.
pub fn run(ctx: &Context, args: ScoreArgs) -> anyhow::Result<ExitCode> {
    // Refuse an unknown output format before any work.
    sink::Format::from_path(&args.out)?;
    let all = inputs::collect(&args.inputs)?;
    let (bundle, _tmp) = load_bundle(ctx, &args)?;
    let manifest = bundle.manifest().clone();
    let pipeline = Pipeline::new(&manifest, Limits::default());
    if pipeline.tiles() && matches!(manifest.decision, DecisionRule::Argmax { .. }) {
        return crate::exit::fail(
            vigil_core::ErrorKind::Invalid,
            "this bundle tiles whole radiographs but decides by argmax; a film's verdict needs a \
             threshold rule naming the defect label",
        );
    }
    if args.heatmap.is_some() && !pipeline.tiles() {
        tracing::warn!("--heatmap has no effect: this bundle does not tile images");
    }
    let labels: Vec<String> = manifest
        .model
        .labels
        .iter()
        .map(|l| l.to_string())
        .collect();
    let (mut out, done) = sink::open(
        &args.out,
        &labels,
        sink::OpenMode {
            resume: args.resume,
            overwrite: args.overwrite,
        },
    )?;
    let total = all.len();
    let todo: Vec<inputs::Input> = all
        .into_iter()
        .filter(|i| !done.contains(&i.name))
        .collect();
    let skipped = total - todo.len();
    if skipped > 0 {
        eprintln!(
            "resuming: {skipped} of {total} images are already in {}",
            args.out.display()
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (instances, engine) = ctx
        .config
        .engine_placement(args.instances.map(|n| n as usize));
    // Decode threads share the cores with the engines: idle engine threads must sleep, not
    // spin (measured: see bench/README.md).
    let engine = vigil_engine::EngineConfig {
        spin_wait: false,
        ..engine
    };
    let model = bundle.read_file(MODEL_FILE)?;
    let backends = (0..instances)
        .map(|_| vigil_engine::load(&model, &manifest, &engine))
        .collect::<Result<Vec<_>, _>>()?;
    let jobs = args.jobs.unwrap_or(cores);
    tracing::info!(
        model = %manifest.model.name, version = %manifest.model.version, images = todo.len(), jobs, instances,
        batch = args.batch_size, engine = %backends[0].describe(), "Scoring."
    );

    let bar = ProgressBar::new(todo.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} ETA {eta} {msg}",
        )
        .expect("the template is valid"),
    );
    let failures = std::cell::Cell::new(0usize);
    let tick = |row: &sink::Row| {
        if row.error.is_some() {
            failures.set(failures.get() + 1);
            bar.set_message(format!("{} failed", failures.get()));
        }
        bar.inc(1);
    };
    let job = score::Job {
        manifest: &manifest,
        version: manifest.model.version.to_string(),
        pipeline: &pipeline,
        inputs: todo,
        batch_size: args.batch_size as usize,
        jobs,
        heatmap_dir: args.heatmap.clone(),
    };
    let summary = score::run(job, backends, out.as_mut(), &tick);
    bar.finish_and_clear();
    let summary = summary?;
    out.finish()?;
    print_summary(&args, &summary, skipped)?;
    Ok(ExitCode::SUCCESS)
}

/// Opens the bundle to score with, verified (hashes, signature policy, golden outputs) before
/// any image is scored. A registry model is pulled into a temporary folder first.
fn load_bundle(
    ctx: &Context,
    args: &ScoreArgs,
) -> anyhow::Result<(Bundle, Option<tempfile::TempDir>)> {
    let opts = VerifyOptions::from_config(ctx, &[], false)?;
    if let Some(path) = &args.bundle {
        let b =
            Bundle::open(path).with_context(|| format!("cannot open bundle {}", path.display()))?;
        verify_bundle(ctx, &b, &opts)?;
        return Ok((b, None));
    }
    let reference = args
        .model
        .as_ref()
        .expect("clap requires --model or --bundle");
    let tmp = tempfile::tempdir().context("cannot make a temporary folder")?;
    let dir = tmp.path().join("bundle");
    block_on(async {
        let registry = open_registry(ctx).await?;
        let v = registry.resolve(reference).await?;
        let files = registry.fetch(&v.name, &v.version).await?;
        super::models::write_pulled(&files, &dir)
    })??;
    let b = Bundle::open(&dir)?;
    verify_bundle(ctx, &b, &opts)?;
    Ok((b, Some(tmp)))
}

fn print_summary(args: &ScoreArgs, s: &score::Summary, skipped: usize) -> anyhow::Result<()> {
    if args.json {
        return output::json(s);
    }
    let rate = if s.seconds > 0.0 {
        (s.scored + s.failed) as f64 / s.seconds
    } else {
        0.0
    };
    println!(
        "scored {} image(s) in {:.1}s ({rate:.1} images/s), {} failed, {skipped} already done; rows in {}",
        s.scored,
        s.seconds,
        s.failed,
        args.out.display()
    );
    if s.tiles > s.scored + s.failed {
        println!("  {} tiles through the engine", s.tiles);
    }
    for (label, n) in &s.by_label {
        println!("  {label:<16} {n}");
    }
    if s.review > 0 {
        println!("  {} prediction(s) flagged for review", s.review);
    }
    if let Some(acc) = s.accuracy {
        println!(
            "against the expected labels ({} images):",
            s.confusion.total()
        );
        println!(
            "  accuracy {acc:.3}{}",
            s.roc_auc
                .map(|a| format!(", ROC-AUC {a:.3}"))
                .unwrap_or_default()
        );
        let labels = s.confusion.labels();
        let mut rows = Vec::new();
        for e in &labels {
            let mut r = vec![e.clone()];
            for p in &labels {
                r.push(
                    s.confusion
                        .counts
                        .get(e)
                        .and_then(|row| row.get(p))
                        .copied()
                        .unwrap_or(0)
                        .to_string(),
                );
            }
            rows.push(r);
        }
        let header: Vec<String> = std::iter::once("expected \\ predicted".to_owned())
            .chain(labels.iter().cloned())
            .collect();
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        output::table(&header, &rows);
    }
    Ok(())
}
