//! `vigil train`: trains a small CNN on the CPU (or runs an external training command) and
//! writes a complete bundle with its evaluation report. A thin layer over `vigil-train`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use vigil_core::eval::EpochRecord;
use vigil_core::types::{Label, ModelName, ModelVersion};
use vigil_train::augment::Augment;
use vigil_train::{Progress, Request, Stop, TrainConfig, TrainReport};

use super::Context;
use crate::assets;
use crate::output;

/// Arguments of `vigil train`.
#[derive(Debug, Args)]
#[command(after_help = "\
Data: a CSV manifest with columns path,label,split (train or val) and optionally sha256 and
group (the source film), paths relative to the manifest; or a folder holding manifest.csv, or
train/<label>/* and val/<label>/*. Splits go by film: a film in both splits is refused.

Examples:
  vigil train --data data/weld/manifest.csv --out weldnet-2
  vigil train --data new-verdicts.csv --init weldnet-2 --out weldnet-3 --epochs 6
  vigil train --data data/weld --out ext --command 'python train.py'")]
pub struct TrainArgs {
    /// The dataset: a manifest CSV or a folder.
    #[arg(long, value_name = "MANIFEST_OR_FOLDER")]
    pub data: PathBuf,
    /// Where to write the bundle (a folder that must not exist).
    #[arg(long, value_name = "BUNDLE_DIR")]
    pub out: PathBuf,
    /// The architecture: weldnet-s (the weld model) or weldnet-xs (tiny, for tests).
    #[arg(long, default_value = "weldnet-s")]
    pub arch: String,
    /// Model name in the bundle.
    #[arg(long, default_value = "weldnet")]
    pub name: ModelName,
    /// Model version in the bundle.
    #[arg(
        long = "model-version",
        default_value = "1.0.0",
        value_name = "VERSION"
    )]
    pub version: ModelVersion,
    /// Epochs at most (early stopping may end sooner).
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    pub epochs: u32,
    /// Seed of initialisation, shuffling and augmentation.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    pub seed: u64,
    /// Images per step.
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    pub batch_size: usize,
    /// Peak learning rate (cosine decay over the run).
    #[arg(long, default_value_t = TrainConfig::default().lr)]
    pub lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = TrainConfig::default().weight_decay)]
    pub weight_decay: f32,
    /// Stop after this many epochs without a better validation ROC-AUC.
    #[arg(long, default_value_t = TrainConfig::default().patience)]
    pub patience: u32,
    /// Do not weight the loss by inverse class frequency.
    #[arg(long)]
    pub no_class_weights: bool,
    /// Do not augment training images.
    #[arg(long)]
    pub no_augment: bool,
    /// Fine-tune from this bundle's weights (made by vigil train); keeps its architecture,
    /// labels and preprocessing.
    #[arg(long, value_name = "BUNDLE")]
    pub init: Option<PathBuf>,
    /// The label the decision threshold tests.
    #[arg(long, default_value = "defect")]
    pub positive: Label,
    /// Recall of the positive label the threshold must reach on validation.
    #[arg(long, default_value_t = 0.95)]
    pub target_recall: f64,
    /// Preprocessing file ([[preprocess]] tables); default: the weld tiles' (grey, 128x128,
    /// each tile standardised).
    #[arg(long, value_name = "TOML")]
    pub preprocess: Option<PathBuf>,
    /// Training threads (default: every core). Results are reproducible for a given seed and
    /// thread count.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Run this external training command instead (through sh -c), then package and evaluate
    /// the ONNX file it writes to $VIGIL_OUTPUT. It gets $VIGIL_DATASET, $VIGIL_LABELS,
    /// $VIGIL_PREPROCESS, $VIGIL_INPUT_SHAPE and $VIGIL_SEED.
    #[arg(long, value_name = "CMD", conflicts_with = "init")]
    pub command: Option<String>,
    /// Print the report as JSON on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// Draws one bar per epoch and a line per finished epoch.
struct Bars {
    bar: std::cell::RefCell<Option<ProgressBar>>,
    quiet: bool,
}

impl Progress for Bars {
    fn epoch_started(&self, epoch: u32, epochs: u32, steps: u64) {
        if self.quiet {
            return;
        }
        let bar = ProgressBar::new(steps);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} steps ETA {eta} {msg}",
            )
            .expect("the template is valid"),
        );
        bar.set_prefix(format!("{epoch}/{epochs}"));
        *self.bar.borrow_mut() = Some(bar);
    }

    fn step(&self, done: u64, mean_loss: f64) {
        if let Some(bar) = self.bar.borrow().as_ref() {
            bar.set_position(done);
            bar.set_message(format!("loss {mean_loss:.4}"));
        }
    }

    fn epoch_finished(&self, r: &EpochRecord, best: bool) {
        if let Some(bar) = self.bar.borrow_mut().take() {
            bar.finish_and_clear();
        }
        if self.quiet {
            return;
        }
        eprintln!(
            "epoch {:>3}  loss {:.4}  val loss {:.4}  val ROC-AUC {:.4}  PR-AUC {:.4}  {:>5.1} img/s  {:>5.1} s{}",
            r.epoch,
            r.train_loss,
            r.val_loss,
            r.val_roc_auc,
            r.val_pr_auc,
            r.images_per_second,
            r.seconds,
            if best { "  * best" } else { "" }
        );
    }
}

/// Sets the flag on the first Ctrl-C; a second one exits at once.
fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "\nInterrupted: finishing this step and keeping the best epoch so far \
                     (Ctrl-C again aborts without a bundle)."
                );
                flag.store(true, Ordering::Relaxed);
            }
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        });
    });
    stop
}

/// Runs `vigil train`.
pub fn run(ctx: &Context, args: TrainArgs) -> anyhow::Result<ExitCode> {
    if let Some(n) = args.threads {
        rayon_pool(n)?;
    }
    let preprocess = match &args.preprocess {
        Some(p) => super::bundle::read_preprocess(p)?,
        None => super::bundle::parse_preprocess(assets::WELD_PREPROCESS)?,
    };
    let req = Request {
        data: args.data.clone(),
        arch: args.arch.clone(),
        out: args.out.clone(),
        name: args.name.clone(),
        version: args.version.clone(),
        preprocess,
        init: args.init.clone(),
        positive: Some(args.positive.clone()),
        target_recall: args.target_recall,
        train: TrainConfig {
            epochs: args.epochs,
            batch_size: args.batch_size,
            lr: args.lr,
            weight_decay: args.weight_decay,
            seed: args.seed,
            patience: args.patience,
            class_weights: !args.no_class_weights,
            augment: if args.no_augment {
                Augment::none()
            } else {
                Augment::default()
            },
        },
        engine: ctx.config.engine(),
        actor: ctx.actor.clone(),
    };
    let stop = stop_on_ctrl_c();
    let outcome = match &args.command {
        Some(command) => vigil_train::external::train_external(&req, command, &stop)?,
        None => {
            let bars = Bars {
                bar: std::cell::RefCell::new(None),
                quiet: args.json,
            };
            vigil_train::train(&req, &bars, &stop)?
        }
    };
    if args.json {
        output::json(&outcome.report)?;
    } else {
        print_summary(&outcome.report, &args.out);
    }
    Ok(match outcome.stop {
        Stop::Interrupted => {
            eprintln!(
                "Stopped by Ctrl-C: {} holds the best epoch so far.",
                args.out.display()
            );
            ExitCode::from(130)
        }
        Stop::Completed | Stop::EarlyStopped => ExitCode::SUCCESS,
    })
}

fn rayon_pool(n: usize) -> anyhow::Result<()> {
    if n < 1 {
        return crate::exit::fail(
            vigil_core::ErrorKind::Invalid,
            "--threads must be at least 1",
        );
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .context("cannot start the training threads")
}

fn print_summary(r: &TrainReport, out: &std::path::Path) {
    let v = &r.validation;
    let c = &v.counts;
    println!("Bundle {} written to {}", r.model, out.display());
    println!(
        "Validation ({} images, {} positive, films {}):",
        v.n,
        v.positives,
        r.dataset.val_films.join(", ")
    );
    println!(
        "  ROC-AUC {:.4}   PR-AUC {:.4}   ECE {:.4}",
        v.roc_auc, v.pr_auc, v.ece
    );
    let num = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.4}"));
    println!(
        "  threshold {:.4} (target recall {:.2}): recall {}, false-positive rate {}",
        v.threshold,
        v.target_recall,
        num(c.recall),
        num(c.fpr)
    );
    println!(
        "  review band [{:.4}, {:.4}] holds {} images",
        v.review_band[0], v.review_band[1], v.in_review_band
    );
    println!("Per film at the threshold:");
    let rows: Vec<Vec<String>> = v
        .per_group
        .iter()
        .map(|g| {
            vec![
                g.group.clone(),
                g.n.to_string(),
                g.positives.to_string(),
                num(g.roc_auc),
                num(g.recall_at_global),
                num(g.fpr_at_global),
                g.threshold_for_target
                    .map_or("-".to_owned(), |t| format!("{t:.4}")),
            ]
        })
        .collect();
    output::table(
        &[
            "FILM",
            "N",
            "POSITIVES",
            "ROC-AUC",
            "RECALL",
            "FPR",
            "OWN THRESHOLD",
        ],
        &rows,
    );
    println!(
        "Report: {}",
        out.join(vigil_train::package::REPORT_HTML_FILE).display()
    );
}
