//! `vigil drift report`: current data (a period of the prediction log, or a folder of new
//! images) against the bundle's reference profile, as an HTML page and its JSON twin
//! (DESIGN.md section 4). The comparison and the page are `vigil_core::monitor::report`;
//! this module gathers the observations and writes the files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use vigil_core::ErrorKind;
use vigil_core::bundle::{Bundle, MODEL_FILE, REFERENCE_FILE};
use vigil_core::monitor::report::{
    CurrentData, DriftReport, ReportInput, TimelinePoint, render_html,
};
use vigil_core::monitor::{Observation, PredictionRecord, ReferenceProfile, WindowReport};
use vigil_core::types::{AliasName, ModelRef, VersionSelector};
use vigil_engine::preprocess::{Limits, Pipeline};
use vigil_store::PredictionQuery;

use super::Context;
use super::common::{VerifyOptions, block_on, open_monitor_store, open_registry, verify_bundle};
use crate::score::inputs;

/// Most drift windows drawn on the timeline.
const MAX_WINDOWS: usize = 10_000;

/// Most engine rows per call (tiles of one film).
const MAX_BATCH: usize = 16;

/// `vigil drift ...`
#[derive(Debug, Subcommand)]
pub enum DriftCommand {
    /// Compare current images with the model's reference images and write an HTML page
    /// (plots of every image statistic, drift over time, out-of-distribution scores, class
    /// shares) and its JSON twin.
    ///
    /// The current images are either a period of the prediction log (--since/--until,
    /// default the last 24 hours) or a folder of new images (--input), which can be checked
    /// before they ever reach production. The model's bundle must carry a reference profile
    /// (reference.json).
    ///
    /// Exit code 0: no drift. Exit code 1: drift was found (like a check that found a
    /// problem); the page says which signals and how the images differ. Other codes: see
    /// `vigil --help`.
    Report(ReportArgs),
    /// Measure the bundle's drift monitoring on real images before go-live: false alarms
    /// per 10,000 in-distribution images (resampled in runs, as correlated as a real line)
    /// and how many images it takes to notice a simulated new detector (blur, noise, gain)
    /// and a simulated exposure change. Windows are evaluated exactly as `vigil serve` does.
    ///
    /// Example: vigil drift simulate --bundle models/weldnet.tar
    /// --data data/weld/manifest.csv --split val --json efficacy.json
    Simulate(super::simulate::SimulateArgs),
}

/// Arguments of `vigil drift report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The model from the registry: NAME (its `production` alias), NAME@ALIAS or
    /// NAME:VERSION.
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
    /// New images instead of the prediction log: folders (searched recursively), glob
    /// patterns, single files or CSV manifests with a `path` column.
    #[arg(long, value_name = "PATH", num_args = 1.., conflicts_with_all = ["since", "until"])]
    pub input: Vec<String>,
    /// Start of the period of logged predictions: RFC 3339 (2026-11-24T08:00:00Z) or a
    /// duration before now (24h, 7d). Default: 24h.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// End of the period (exclusive): RFC 3339 or a duration before now. Default: now.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// The HTML page to write; the JSON twin goes next to it with the extension `.json`.
    #[arg(long, short, value_name = "FILE", default_value = "drift-report.html")]
    pub out: PathBuf,
    /// The page's title (default: "Drift report: MODEL VERSION").
    #[arg(long)]
    pub title: Option<String>,
    /// Seed of the embedding test's permutation p-value.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Why a drift report cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum DriftCmdError {
    /// The bundle carries no reference profile.
    #[error(
        "{model} {version} has no reference profile ({REFERENCE_FILE}), so there is nothing to \
         compare with: add one with `vigil bundle create --reference FILE.json` (a profile \
         built from in-distribution images, e.g. the validation set) or train the model with \
         `vigil train`, which writes one"
    )]
    NoReference {
        /// The model.
        model: String,
        /// The version.
        version: String,
    },
    /// No prediction of the model in the period.
    #[error(
        "no predictions of {model} {version} were logged from {since} to {until}: widen the \
         period (--since 7d) or check a folder of images with --input"
    )]
    NoPredictions {
        /// The model.
        model: String,
        /// The version.
        version: String,
        /// Start of the period.
        since: String,
        /// End of the period.
        until: String,
    },
    /// No image could be observed.
    #[error("none of the {images} input image(s) could be read: nothing to compare")]
    NoImages {
        /// Images found.
        images: usize,
    },
    /// A bad `--since` / `--until` / `--out`.
    #[error("{0}")]
    Usage(String),
}

impl DriftCmdError {
    /// What kind of failure this is (for the exit code).
    pub fn kind(&self) -> ErrorKind {
        match self {
            DriftCmdError::NoPredictions { .. } => ErrorKind::NotFound,
            DriftCmdError::NoReference { .. }
            | DriftCmdError::NoImages { .. }
            | DriftCmdError::Usage(_) => ErrorKind::Invalid,
        }
    }
}

/// Runs `vigil drift ...`.
pub fn run(ctx: &Context, cmd: DriftCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DriftCommand::Report(a) => report(ctx, a),
        DriftCommand::Simulate(a) => super::simulate::run(ctx, &a),
    }
}

fn report(ctx: &Context, args: ReportArgs) -> anyhow::Result<ExitCode> {
    let json_path = args.out.with_extension("json");
    if json_path == args.out {
        return Err(DriftCmdError::Usage(format!(
            "--out {} would be overwritten by its JSON twin: name the HTML page, e.g. \
             drift-report.html",
            args.out.display()
        ))
        .into());
    }
    let now = Utc::now();
    // Check the period (and find the inputs) before loading anything.
    let period = if args.input.is_empty() {
        let since = parse_time(args.since.as_deref().unwrap_or("24h"), now, "--since")?;
        let until = args
            .until
            .as_deref()
            .map_or(Ok(now), |t| parse_time(t, now, "--until"))?;
        if since >= until {
            return Err(DriftCmdError::Usage(format!(
                "--since ({}) must be before --until ({})",
                since.to_rfc3339(),
                until.to_rfc3339()
            ))
            .into());
        }
        Some((since, until))
    } else {
        None
    };
    let images = if args.input.is_empty() {
        Vec::new()
    } else {
        inputs::collect(&args.input)?
    };

    let (bundle, _tmp) = load_bundle(ctx, &args)?;
    let manifest = bundle.manifest().clone();
    let (model, version) = (
        manifest.model.name.to_string(),
        manifest.model.version.to_string(),
    );
    if !manifest.files.contains_key(REFERENCE_FILE) {
        return Err(DriftCmdError::NoReference { model, version }.into());
    }
    let reference = ReferenceProfile::from_json(&bundle.read_file(REFERENCE_FILE)?)
        .context("the bundle's reference profile cannot be used")?;

    let (observations, current, timeline) = match period {
        None => {
            let (obs, skipped) = observe_images(ctx, &bundle, &images)?;
            if obs.is_empty() {
                return Err(DriftCmdError::NoImages {
                    images: images.len(),
                }
                .into());
            }
            let current = CurrentData::Folder {
                inputs: args.input.clone(),
                images: images.len(),
                skipped,
            };
            (obs, current, Vec::new())
        }
        Some((since, until)) => {
            let (records, windows) = block_on(async {
                let store = open_monitor_store(ctx).await?;
                let q = PredictionQuery {
                    version: Some(version.clone()),
                    since: Some(since),
                    until: Some(until),
                    ..PredictionQuery::model(model.clone())
                };
                let records = store.predictions(&q).await?;
                let windows = store
                    .drift_windows(&model, Some(since), Some(until), MAX_WINDOWS)
                    .await?;
                anyhow::Ok((records, windows))
            })??;
            if records.is_empty() {
                return Err(DriftCmdError::NoPredictions {
                    model,
                    version,
                    since: since.to_rfc3339(),
                    until: until.to_rfc3339(),
                }
                .into());
            }
            let total = records.len();
            let obs: Vec<Observation> = records
                .iter()
                .filter_map(|r| to_observation(r, &reference.labels))
                .collect();
            let skipped = total - obs.len();
            if skipped > 0 {
                tracing::warn!(
                    skipped,
                    "Some logged predictions name a label the reference does not know; left out."
                );
            }
            if obs.is_empty() {
                return Err(DriftCmdError::NoPredictions {
                    model,
                    version,
                    since: since.to_rfc3339(),
                    until: until.to_rfc3339(),
                }
                .into());
            }
            let timeline: Vec<TimelinePoint> = windows
                .iter()
                .filter_map(|w| {
                    match serde_json::from_value::<WindowReport>(w.report.clone()) {
                        Ok(r) => Some(TimelinePoint::from_report(w.ended_at, &w.version, &r)),
                        Err(e) => {
                            tracing::debug!(error = %e, "A stored drift window cannot be read; left out.");
                            None
                        }
                    }
                })
                .collect();
            let current = CurrentData::Period {
                since,
                until,
                predictions: total,
                skipped,
            };
            (obs, current, timeline)
        }
    };

    let input = ReportInput {
        title: args
            .title
            .clone()
            .unwrap_or_else(|| format!("Drift report: {model} {version}")),
        model: model.clone(),
        version: version.clone(),
        generated_at: now,
        current,
        timeline,
        seed: args.seed,
    };
    let report = DriftReport::build(&reference, observations, input)
        .context("cannot compare the current images with the reference")?;
    write_file(&args.out, render_html(&report).as_bytes())?;
    write_file(&json_path, report.to_json()?.as_bytes())?;

    println!("{}", report.headline);
    println!(
        "{} of {} signals drifted; {}.",
        report.overall.drifted.len(),
        report.overall.signals.len(),
        report.current.describe()
    );
    if let Some(o) = &report.ood {
        println!(
            "{} of {} images are unlike the training images (out of distribution).",
            o.flagged, o.scored
        );
    }
    println!("page: {}", args.out.display());
    println!("json: {}", json_path.display());
    Ok(if report.overall.drift {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `RFC 3339` or a duration before `now` (`24h`, `7d`, `90min`).
fn parse_time(text: &str, now: DateTime<Utc>, flag: &str) -> Result<DateTime<Utc>, DriftCmdError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = humantime::parse_duration(text).map_err(|_| {
        DriftCmdError::Usage(format!(
            "{flag} {text:?} is neither an RFC 3339 time (2026-11-24T08:00:00Z) nor a \
             duration before now (24h, 7d)"
        ))
    })?;
    let d = chrono::Duration::from_std(d)
        .map_err(|_| DriftCmdError::Usage(format!("{flag} {text:?} is too long ago")))?;
    now.checked_sub_signed(d)
        .ok_or_else(|| DriftCmdError::Usage(format!("{flag} {text:?} is too long ago")))
}

/// A logged prediction as the monitor sees it; `None` when its label is not one of the
/// reference's.
fn to_observation(r: &PredictionRecord, labels: &[String]) -> Option<Observation> {
    let predicted = labels.iter().position(|l| *l == r.label)?;
    (r.probabilities.len() == labels.len()).then(|| Observation {
        stats: r.stats,
        embedding: r.embedding.clone(),
        probabilities: r.probabilities.clone(),
        predicted,
        confidence: r.confidence,
        ood_distance: r.ood_distance,
        out_of_distribution: r.flags.iter().any(|f| f == "out_of_distribution"),
    })
}

/// Runs every image through the bundle as serving does; returns the observations and how
/// many images were skipped (each with a warning).
fn observe_images(
    ctx: &Context,
    bundle: &Bundle,
    images: &[inputs::Input],
) -> anyhow::Result<(Vec<Observation>, usize)> {
    let manifest = bundle.manifest();
    let pipeline = Pipeline::new(manifest, Limits::default()).observing();
    let model = bundle.read_file(MODEL_FILE)?;
    let mut backend = vigil_engine::load(&model, manifest, &ctx.config.engine())?;
    let bar = ProgressBar::new(images.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} ETA {eta} {msg}",
        )
        .expect("the template is valid"),
    );
    let mut out = Vec::with_capacity(images.len());
    let mut skipped = 0usize;
    for input in images {
        let result = std::fs::read(&input.path)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| {
                vigil_engine::observe::observe(
                    manifest,
                    &pipeline,
                    backend.as_mut(),
                    &bytes,
                    MAX_BATCH,
                )
                .map_err(anyhow::Error::from)
            });
        match result {
            Ok(o) => out.push(o),
            Err(e) => {
                skipped += 1;
                bar.suspend(|| {
                    tracing::warn!(image = %input.name, error = %format!("{e:#}"), "Skipped an image that cannot be observed.");
                });
                bar.set_message(format!("{skipped} skipped"));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((out, skipped))
}

/// The bundle to compare with, verified before use. A registry model is pulled into a
/// temporary folder first; a bare NAME means its `production` alias.
fn load_bundle(
    ctx: &Context,
    args: &ReportArgs,
) -> anyhow::Result<(Bundle, Option<tempfile::TempDir>)> {
    let opts = VerifyOptions::from_config(ctx, &[], false)?;
    if let Some(path) = &args.bundle {
        let b =
            Bundle::open(path).with_context(|| format!("cannot open bundle {}", path.display()))?;
        verify_bundle(ctx, &b, &opts)?;
        return Ok((b, None));
    }
    let mut reference = args
        .model
        .clone()
        .expect("clap requires --model or --bundle");
    if reference.selector == VersionSelector::Latest {
        reference.selector = VersionSelector::Alias("production".parse::<AliasName>()?);
    }
    let tmp = tempfile::tempdir().context("cannot make a temporary folder")?;
    let dir = tmp.path().join("bundle");
    block_on(async {
        let registry = open_registry(ctx).await?;
        let v = registry.resolve(&reference).await?;
        let files = registry.fetch(&v.name, &v.version).await?;
        super::models::write_pulled(&files, &dir)
    })??;
    let b = Bundle::open(&dir)?;
    verify_bundle(ctx, &b, &opts)?;
    Ok((b, Some(tmp)))
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot make folder {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
