//! `vigil drift simulate`: a monitoring acceptance test before go-live. On real images it
//! measures the false alarms of the bundle's drift windows on in-distribution traffic, and
//! how many images it takes to notice a simulated new detector (blur, noise, gain) and a
//! simulated exposure change (see `crate::efficacy`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use vigil_core::bundle::{Bundle, MODEL_FILE, REFERENCE_FILE};
use vigil_core::monitor::{Observation, ReferenceProfile};
use vigil_engine::preprocess::{Limits, Pipeline};

use super::Context;
use crate::drift_export;
use crate::efficacy::{self, Detection, FalseAlarms};
use crate::simulate::Change;

/// Arguments of `vigil drift simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The bundle (folder or archive); it must carry a reference profile.
    #[arg(long, value_name = "PATH")]
    pub bundle: PathBuf,
    /// In-distribution images: folders, globs or CSV manifests. Use images that were not
    /// used to build the reference, or the false-alarm figure is optimistic.
    #[arg(long, required = true, num_args = 1.., value_name = "DATA")]
    pub data: Vec<String>,
    /// With a CSV manifest: only rows whose `split` column is this.
    #[arg(long, value_name = "SPLIT")]
    pub split: Option<String>,
    /// In-distribution images to stream for the false-alarm count.
    #[arg(long, default_value_t = 10_000)]
    pub stream: usize,
    /// Detection trials per change.
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
    /// Consecutive images kept together when resampling (tiles of one film are correlated).
    #[arg(long, default_value_t = 25)]
    pub block: usize,
    /// Seed of the resampling and the simulated noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write the embeddings of evaluated windows and Vigil's verdict on each into this
    /// new or empty folder (`reference.f32`, `windows.f32`, `windows.json`), to run other
    /// drift tools on the same data (`bench/drift-peers.sh`).
    #[arg(long, value_name = "DIR")]
    pub export: Option<PathBuf>,
    /// With --export: the first this many windows of the in-distribution stream.
    #[arg(long, default_value_t = drift_export::IN_DISTRIBUTION_WINDOWS, requires = "export")]
    pub export_windows: usize,
    /// With --export: windows of changed images only, per simulated change.
    #[arg(long, default_value_t = drift_export::CHANGED_WINDOWS, requires = "export")]
    pub export_changed: usize,
}

/// What `vigil drift simulate` measured.
#[derive(Debug, serde::Serialize)]
struct Results {
    bundle: String,
    reference: String,
    window: usize,
    every: usize,
    alpha: f64,
    in_distribution_images: usize,
    false_alarms: FalseAlarms,
    detections: Vec<Detection>,
}

/// Runs the acceptance test.
pub fn run(ctx: &Context, args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.export {
        drift_export::check_dir(dir)?;
    }
    let b = Bundle::open(&args.bundle)
        .with_context(|| format!("cannot open bundle {}", args.bundle.display()))?;
    let files = b.verify_files()?;
    let reference = ReferenceProfile::from_json(files.get(REFERENCE_FILE).with_context(|| {
        format!(
            "the bundle has no {REFERENCE_FILE}: add one with `vigil bundle reference {} --data DATA --out NEW`",
            args.bundle.display()
        )
    })?)?;
    let model = files.get(MODEL_FILE).context("the bundle has no model")?;
    let manifest = b.manifest();
    let images = crate::reference::select(&crate::reference::ReferenceData {
        inputs: &args.data,
        split: args.split.as_deref(),
        window: None,
        stats_from: &[],
        block_length: None,
        alarms_per_10k: None,
    })?;
    if images.len() < reference.drift.window {
        return crate::exit::fail(
            vigil_core::ErrorKind::Invalid,
            format!(
                "{} images are fewer than one drift window ({})",
                images.len(),
                reference.drift.window
            ),
        );
    }
    let bytes: Vec<Vec<u8>> = images
        .iter()
        .map(|i| std::fs::read(&i.path).with_context(|| format!("cannot read {}", i.name)))
        .collect::<anyhow::Result<_>>()?;
    let mut backend = vigil_engine::load(model, manifest, &ctx.config.engine())?;
    let pipeline = Pipeline::new(manifest, Limits::default()).observing();
    let mut observe_all =
        |label: &str, change: Option<Change>| -> anyhow::Result<Vec<Observation>> {
            let bar = bar(bytes.len(), label);
            let mut out = Vec::with_capacity(bytes.len());
            for (i, img) in bytes.iter().enumerate() {
                bar.inc(1);
                let img = match change {
                    Some(c) => crate::simulate::apply(img, c, args.seed.wrapping_add(i as u64))?,
                    None => img.clone(),
                };
                out.push(vigil_engine::observe::observe(
                    manifest,
                    &pipeline,
                    backend.as_mut(),
                    &img,
                    16,
                )?);
            }
            bar.finish_and_clear();
            efficacy::score_ood(&reference, &mut out)?;
            Ok(out)
        };
    let pool = observe_all("in-distribution", None)?;
    let changes = [Change::NEW_DETECTOR, Change::NEW_EXPOSURE];
    let changed: Vec<(Change, Vec<Observation>)> = changes
        .iter()
        .map(|c| Ok((*c, observe_all(&c.describe(), Some(*c))?)))
        .collect::<anyhow::Result<_>>()?;

    let fa_bar = bar(0, "false alarms");
    let false_alarms = efficacy::false_alarms(
        &reference,
        &pool,
        args.stream,
        args.block,
        args.seed,
        &|i, n| {
            fa_bar.set_length(n as u64);
            fa_bar.set_position(i as u64);
        },
    )?;
    fa_bar.finish_and_clear();
    let detections = changed
        .iter()
        .map(|(c, obs)| {
            efficacy::detection(
                &reference,
                &pool,
                obs,
                &c.describe(),
                args.trials,
                args.block,
                args.seed,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let results = Results {
        bundle: format!("{}:{}", manifest.model.name, manifest.model.version),
        reference: reference.source.clone(),
        window: reference.drift.window,
        every: reference.drift.every,
        alpha: reference.drift.alpha,
        in_distribution_images: pool.len(),
        false_alarms,
        detections,
    };
    print_results(&results);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_vec_pretty(&results)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
        println!("results: {}", p.display());
    }
    if let Some(dir) = &args.export {
        let changes: Vec<(String, &[Observation])> = changed
            .iter()
            .map(|(c, obs)| (c.describe(), obs.as_slice()))
            .collect();
        let n = drift_export::export(
            &drift_export::ExportPlan {
                dir,
                bundle: results.bundle.clone(),
                stream: args.stream,
                block: args.block,
                seed: args.seed,
                in_distribution: args.export_windows,
                changed: args.export_changed,
            },
            &reference,
            &pool,
            &changes,
        )?;
        println!("exported {n} windows: {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn bar(n: usize, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{label:>16} {{bar:30}} {{pos}}/{{len}}  eta {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn print_results(r: &Results) {
    let fa = &r.false_alarms;
    println!(
        "{}: windows of {} images every {}, family false-alarm target {} per window",
        r.bundle, r.window, r.every, r.alpha
    );
    println!("reference: {}", r.reference);
    println!(
        "false alarms: {} alerts in {} in-distribution images ({:.1} per 10,000); {} of {} windows alarmed{}",
        fa.alerts,
        fa.images,
        fa.alerts_per_10k,
        fa.alarming_evaluations,
        fa.evaluations,
        if fa.signals.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                fa.signals
                    .iter()
                    .map(|(s, n)| format!("{s} ×{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    if let Some(s) = fa.ood_share {
        println!(
            "  out-of-distribution share of in-distribution images: {:.1}%",
            s * 100.0
        );
    }
    for d in &r.detections {
        println!(
            "{}: detected in {}/{} trials; images until the alarm: median {}, worst {}; first signals: {}{}",
            d.change,
            d.detected,
            d.trials,
            d.images_to_alarm_median
                .map_or("-".to_owned(), |n| n.to_string()),
            d.images_to_alarm_max
                .map_or("-".to_owned(), |n| n.to_string()),
            d.signals
                .iter()
                .take(4)
                .map(|(s, n)| format!("{s} ×{n}"))
                .collect::<Vec<_>>()
                .join(", "),
            d.ood_share.map_or(String::new(), |s| format!(
                "; {:.1}% flagged out of distribution",
                s * 100.0
            ))
        );
    }
}
