//! Vigil's trainer: small CNNs trained on the CPU in Rust, exported to ONNX, evaluated on the
//! engine that will serve them, and written as complete bundles.
//!
//! A library first (retraining calls [`train`] on inspectors' verdicts); `vigil train` is a
//! thin CLI over it. The flow:
//!
//! 1. [`data::load`] checks the whole dataset through the bundle's own preprocessing before
//!    anything trains (missing files, unreadable images, one class, films in both splits).
//! 2. [`fit::fit`] trains with burn's `flex` CPU backend: class-weighted cross-entropy,
//!    radiograph-safe augmentation, AdamW with cosine decay, early stopping on validation
//!    ROC-AUC, the best epoch kept, Ctrl-C honoured between steps.
//! 3. [`export::to_onnx`] writes the graph; [`package::package`] runs it on the serving
//!    engine, checks it matches the trained network, picks the threshold for the declared
//!    recall target, records golden outputs and writes `report.json` and `report.html`.
//!
//! [`external`] runs a team's own training command and packages what it writes the same way.

pub mod arch;
pub mod augment;
pub mod data;
mod error;
pub mod export;
pub mod external;
pub mod fit;
pub mod package;
pub mod rng;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use vigil_core::bundle::{Bundle, Step};
use vigil_core::types::{Label, ModelName, ModelVersion};
use vigil_engine::EngineConfig;
use vigil_engine::preprocess::{Limits, Pipeline};

pub use arch::{ARCHS, Arch};
pub use error::{Error, Result};
pub use fit::{Progress, Quiet, Stop, TrainConfig};
pub use package::TrainReport;

/// The commit the trainer was built from (`unknown` outside a git checkout).
pub const SOURCE_COMMIT: &str = env!("VIGIL_SOURCE_COMMIT");

/// One training run.
#[derive(Debug, Clone)]
pub struct Request {
    /// Manifest CSV or folder.
    pub data: PathBuf,
    /// Architecture name (see [`ARCHS`]).
    pub arch: String,
    /// Where the bundle goes (must not exist).
    pub out: PathBuf,
    /// Model name.
    pub name: ModelName,
    /// Model version.
    pub version: ModelVersion,
    /// Preprocessing, unless fine-tuning (which keeps the bundle's own).
    pub preprocess: Vec<Step>,
    /// Fine-tune from this bundle's weights.
    pub init: Option<PathBuf>,
    /// The label the threshold tests; `defect` by default when present.
    pub positive: Option<Label>,
    /// Recall the threshold must reach on validation.
    pub target_recall: f64,
    /// Hyper-parameters.
    pub train: TrainConfig,
    /// The serving engine, for evaluation and golden outputs.
    pub engine: EngineConfig,
    /// Who runs it.
    pub actor: String,
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The bundle written.
    pub bundle: Bundle,
    /// Its report.
    pub report: TrainReport,
    /// Why training ended.
    pub stop: Stop,
}

/// The fine-tuning starting point: a bundle made by this trainer.
struct Init {
    arch: &'static Arch,
    labels: Vec<Label>,
    preprocess: Vec<Step>,
    model: Vec<u8>,
    digest: String,
}

fn open_init(path: &Path) -> Result<Init> {
    let init_error = |reason: String| Error::Init {
        path: path.to_path_buf(),
        reason,
    };
    let bundle = Bundle::open(path).map_err(|e| init_error(e.to_string()))?;
    bundle
        .verify_files()
        .map_err(|e| init_error(e.to_string()))?;
    let m = bundle.manifest();
    let arch_name = m.provenance.extra.get("arch").ok_or_else(|| {
        init_error("it was not made by `vigil train` (no provenance.extra.arch)".into())
    })?;
    let arch = Arch::by_name(arch_name).map_err(|e| init_error(e.to_string()))?;
    Ok(Init {
        arch,
        labels: m.model.labels.clone(),
        preprocess: m.preprocess.clone(),
        model: bundle
            .read_file(vigil_core::bundle::MODEL_FILE)
            .map_err(|e| init_error(e.to_string()))?,
        digest: bundle.digest().to_string(),
    })
}

/// Checks the outcome directory and settings without training.
fn preflight(req: &Request) -> Result<()> {
    if req.out.exists() {
        return Err(Error::Exists(req.out.clone()));
    }
    req.train.validate()?;
    if !(0.0 < req.target_recall && req.target_recall <= 1.0) {
        return Err(Error::Config("--target-recall must be in (0, 1]".into()));
    }
    Ok(())
}

/// Resolves the positive label: the one asked for, else `defect`, else the only other label
/// of a binary model is not guessed: the caller must say.
fn positive_index(labels: &[Label], asked: Option<&Label>) -> Result<usize> {
    let want = asked.map_or("defect", Label::as_str);
    labels
        .iter()
        .position(|l| l.as_str() == want)
        .ok_or_else(|| {
            Error::Config(format!(
                "the positive label {want:?} is not among the labels ({}); pass --positive",
                labels
                    .iter()
                    .map(Label::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// Trains, exports, evaluates and packages. Stops early, keeping the best epoch, when `stop`
/// becomes true.
pub fn train(req: &Request, progress: &dyn Progress, stop: &AtomicBool) -> Result<Outcome> {
    preflight(req)?;
    let init = req.init.as_deref().map(open_init).transpose()?;
    let arch = match &init {
        Some(i) => i.arch,
        None => Arch::by_name(&req.arch)?,
    };
    let preprocess = init
        .as_ref()
        .map_or_else(|| req.preprocess.clone(), |i| i.preprocess.clone());
    let pipeline = Pipeline::from_steps(preprocess.clone(), Limits::default());
    let data = data::load(
        &req.data,
        &pipeline,
        init.as_ref().map(|i| i.labels.as_slice()),
    )?;
    let positive = positive_index(&data.labels, req.positive.as_ref())?;
    tracing::info!(
        train = data.train.len(),
        val = data.val.len(),
        digest = %data.digest,
        arch = arch.name,
        "Dataset checked."
    );
    let channels = pipeline
        .run(&data.train[0].bytes)
        .map(|t| [t.shape[1], t.shape[2], t.shape[3]])?;
    let start = match &init {
        Some(i) => {
            let device = burn::tensor::Device::flex().autodiff();
            let fresh = arch.init(channels[0], data.labels.len(), &device, 0);
            Some(export::load_weights(fresh, &i.model, &device)?)
        }
        None => None,
    };
    let fitted = fit::fit(
        &data, &pipeline, arch, start, positive, &req.train, progress, stop,
    )?;
    let label_names: Vec<String> = data.labels.iter().map(|l| l.as_str().to_owned()).collect();
    let model = export::to_onnx(&fitted.net, arch, channels, &label_names)?;
    let mut training = run_facts(&req.train, arch, &fitted);
    if let Some(i) = &init {
        training.insert("init".into(), i.digest.clone());
    }
    finish(
        req,
        &data,
        positive,
        Trained {
            model,
            preprocess,
            trainer: format!("vigil-train {}", arch.name),
            training,
            history: fitted.history.clone(),
            reference: Some(fitted.val_probabilities.clone()),
            stop: fitted.stop,
        },
    )
}

/// What a trainer (built-in or external) made, before packaging.
struct Trained {
    model: Vec<u8>,
    preprocess: Vec<Step>,
    trainer: String,
    training: BTreeMap<String, String>,
    history: Vec<vigil_core::eval::EpochRecord>,
    reference: Option<Vec<Vec<f32>>>,
    stop: Stop,
}

/// Evaluates and packages what a trainer made, as `req` asks.
fn finish(req: &Request, data: &data::Dataset, positive: usize, t: Trained) -> Result<Outcome> {
    let (bundle, report) = package::package(
        package::PackageInput {
            model: t.model,
            name: req.name.clone(),
            version: req.version.clone(),
            actor: req.actor.clone(),
            preprocess: t.preprocess,
            data,
            positive,
            target_recall: req.target_recall,
            trainer: t.trainer,
            training: t.training,
            history: t.history,
            reference_probabilities: t.reference,
            engine: req.engine.clone(),
        },
        &req.out,
    )?;
    Ok(Outcome {
        bundle,
        report,
        stop: t.stop,
    })
}

fn run_facts(cfg: &TrainConfig, arch: &Arch, fitted: &fit::Fitted) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("arch".into(), arch.name.to_owned());
    m.insert("seed".into(), cfg.seed.to_string());
    m.insert("epochs".into(), cfg.epochs.to_string());
    m.insert("epochs_run".into(), fitted.history.len().to_string());
    m.insert("best_epoch".into(), fitted.best_epoch.to_string());
    m.insert("batch_size".into(), cfg.batch_size.to_string());
    m.insert("lr".into(), cfg.lr.to_string());
    m.insert("weight_decay".into(), cfg.weight_decay.to_string());
    m.insert("patience".into(), cfg.patience.to_string());
    m.insert("class_weights".into(), cfg.class_weights.to_string());
    m.insert(
        "augment".into(),
        serde_json::to_string(&cfg.augment).unwrap_or_default(),
    );
    m.insert("threads".into(), rayon_threads().to_string());
    m.insert("stop".into(), format!("{:?}", fitted.stop).to_lowercase());
    m.insert(
        "images_per_second".into(),
        format!("{:.1}", fitted.images_per_second),
    );
    m.insert("train_seconds".into(), format!("{:.1}", fitted.seconds));
    m
}

/// Threads of the pool burn's CPU backend runs on.
fn rayon_threads() -> usize {
    rayon::current_num_threads()
}
