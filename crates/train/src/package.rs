//! Turns a trained ONNX model into a complete bundle: the threshold chosen on validation for
//! the declared recall target, the review band, golden outputs, `report.json` and
//! `report.html`, and provenance. Used by the built-in trainer and the external hook alike,
//! so both are evaluated the same way: on the engine that will serve the model, through the
//! bundle's own preprocessing.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use vigil_core::bundle::{
    Bundle, BundleWriter, DecisionRule, GOLDEN_EXPECTED_FILE, MODEL_FILE, Manifest, Provenance,
    REFERENCE_FILE, REPORT_FILE, Step,
};
use vigil_core::eval::threshold::{choose_threshold, review_band};
use vigil_core::eval::{EpochRecord, EvalReport, Scored};
use vigil_core::monitor::{ReferenceConfig, ReferenceProfile};
use vigil_core::types::{Label, ModelName, ModelVersion};
use vigil_engine::EngineConfig;
use vigil_engine::backend::Batch;
use vigil_engine::preprocess::{Limits, Pipeline};

use crate::data::{Dataset, Sample};
use crate::{Error, Result};

/// The HTML report's file name in the bundle.
pub const REPORT_HTML_FILE: &str = "report.html";

/// Golden inputs taken from each label of the validation split.
const GOLDEN_PER_LABEL: usize = 2;

/// What `report.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    /// Model name and version.
    pub model: String,
    /// The trainer (`vigil-train weldnet-s`, or the external command).
    pub trainer: String,
    /// The data: source, digest, counts per split, label and film.
    pub dataset: DatasetSummary,
    /// Hyper-parameters and run facts (seed, epochs, lr, best epoch, why it stopped...).
    pub training: BTreeMap<String, String>,
    /// Every epoch (empty for an external trainer).
    pub history: Vec<EpochRecord>,
    /// Validation at the chosen threshold, on the serving engine.
    pub validation: EvalReport,
    /// Largest difference between the trainer's probabilities and the exported model's on
    /// the serving engine, over the validation set (built-in trainer only).
    pub export_max_abs_diff: Option<f64>,
}

/// The data a model was trained on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetSummary {
    /// Manifest or folder.
    pub source: String,
    /// Digest of the canonical listing (see [`Dataset::digest`]).
    pub digest: String,
    /// Labels in output order.
    pub labels: Vec<String>,
    /// Training images per label.
    pub train_counts: Vec<usize>,
    /// Validation images per label.
    pub val_counts: Vec<usize>,
    /// Training films.
    pub train_films: Vec<String>,
    /// Validation films.
    pub val_films: Vec<String>,
}

impl DatasetSummary {
    /// Summarises a loaded dataset.
    pub fn of(data: &Dataset) -> Self {
        DatasetSummary {
            source: data.source.display().to_string(),
            digest: data.digest.to_string(),
            labels: data.labels.iter().map(|l| l.as_str().to_owned()).collect(),
            train_counts: Dataset::counts(&data.train, data.labels.len()),
            val_counts: Dataset::counts(&data.val, data.labels.len()),
            train_films: Dataset::groups(&data.train),
            val_films: Dataset::groups(&data.val),
        }
    }
}

/// Everything packaging needs.
#[derive(Debug)]
pub struct PackageInput<'a> {
    /// The ONNX model.
    pub model: Vec<u8>,
    /// Name and version of the bundle.
    pub name: ModelName,
    /// Its version.
    pub version: ModelVersion,
    /// Who made it.
    pub actor: String,
    /// The preprocessing the model was trained with.
    pub preprocess: Vec<Step>,
    /// The data (validation decides the threshold).
    pub data: &'a Dataset,
    /// The label the threshold rule tests.
    pub positive: usize,
    /// Recall the threshold must reach on validation.
    pub target_recall: f64,
    /// The trainer's name and version.
    pub trainer: String,
    /// Facts about the run, recorded in provenance and the report.
    pub training: BTreeMap<String, String>,
    /// Every epoch.
    pub history: Vec<EpochRecord>,
    /// The trainer's own validation probabilities, to check the export against.
    pub reference_probabilities: Option<Vec<Vec<f32>>>,
    /// The engine that scores validation (the serving engine).
    pub engine: EngineConfig,
}

/// Writes the bundle to `out` and returns it with its report.
pub fn package(input: PackageInput<'_>, out: &Path) -> Result<(Bundle, TrainReport)> {
    let data = input.data;
    let labels: Vec<Label> = data.labels.clone();
    let info = vigil_core::onnx::inspect(&input.model).map_err(vigil_core::bundle::Error::from)?;
    let mut manifest = Manifest::for_model(
        &info,
        input.name.clone(),
        labels.clone(),
        input.preprocess.clone(),
    );
    manifest.model.version = input.version.clone();
    manifest.model.created_by = input.actor.clone();
    manifest.model.description = format!(
        "Trained by {} on {} ({} training and {} validation images).",
        input.trainer,
        data.source.display(),
        data.train.len(),
        data.val.len()
    );
    let mut backend = vigil_engine::load(&input.model, &manifest, &input.engine)?;
    let pipeline = Pipeline::new(&manifest, Limits::default());
    let probs = score(backend.as_mut(), &pipeline, &data.val)?;
    let export_max_abs_diff = input
        .reference_probabilities
        .as_ref()
        .map(|reference| max_abs_diff(reference, &probs));
    if let Some(d) = export_max_abs_diff {
        // The exported graph must compute what was trained; 1e-4 is far above float noise
        // and far below anything that moves a decision.
        if d > 1e-4 {
            return Err(Error::Config(format!(
                "the exported model differs from the trained one by {d:.2e} on validation; \
                 this is a bug in the exporter"
            )));
        }
    }
    let scored: Vec<Scored> = data
        .val
        .iter()
        .zip(&probs)
        .map(|(s, p)| Scored::new(p[input.positive], s.label == input.positive, &s.group))
        .collect();
    let choice = choose_threshold(&scored, input.target_recall).ok_or_else(|| {
        Error::Config("the validation split has no positive images to set a threshold".into())
    })?;
    let band = review_band(choice.threshold, &scored);
    let validation = EvalReport::build(&scored, input.target_recall, choice.threshold, band)
        .ok_or_else(|| Error::Config("validation needs both classes".into()))?;
    manifest.decision = DecisionRule::Threshold {
        positive: labels[input.positive].clone(),
        threshold: choice.threshold,
        review_band: Some(band),
    };
    let mut extra = input.training.clone();
    extra.insert("val_roc_auc".into(), format!("{:.4}", validation.roc_auc));
    extra.insert("target_recall".into(), input.target_recall.to_string());
    manifest.provenance = Provenance {
        training_data: Some(data.digest),
        trainer: input.trainer.clone(),
        trainer_version: env!("CARGO_PKG_VERSION").to_owned(),
        source_commit: crate::SOURCE_COMMIT.to_owned(),
        onnx_producer: info.producer.clone(),
        extra,
    };
    let report = TrainReport {
        model: format!("{}:{}", input.name, input.version),
        trainer: input.trainer.clone(),
        dataset: DatasetSummary::of(data),
        training: input.training.clone(),
        history: input.history.clone(),
        validation,
        export_max_abs_diff,
    };
    let mut writer = BundleWriter::new(manifest);
    writer.add_file(MODEL_FILE, input.model.clone())?;
    let report_json = serde_json::to_vec_pretty(&report)
        .map_err(|e| Error::Config(format!("cannot write the report: {e}")))?;
    writer.add_file(REPORT_FILE, report_json)?;
    writer.add_file(REPORT_HTML_FILE, render(&report).into_bytes())?;
    let golden_inputs = golden_inputs(data);
    for (name, bytes) in &golden_inputs {
        writer.add_file(name, bytes.clone())?;
    }
    writer.validate()?;
    let golden = vigil_engine::golden::record(backend.as_mut(), &pipeline, &golden_inputs)?;
    writer.add_file(GOLDEN_EXPECTED_FILE, golden.to_json())?;
    if let Some(profile) = reference(writer.manifest(), backend.as_mut(), data)? {
        let json = profile
            .to_json()
            .map_err(|e| Error::Config(format!("cannot write the reference profile: {e}")))?;
        writer.add_file(REFERENCE_FILE, json)?;
    }
    Ok((writer.write(out)?, report))
}

/// The reference profile for monitoring. The model's signals (embeddings, predictions,
/// confidence) come from the validation images, which the model did not learn from; the
/// image statistics from every image, training films included, since they do not depend on
/// the model and a few validation films show too little of how films differ. Tiles of one
/// film are correlated over the whole film, longer than a window, so the thresholds are
/// calibrated on contiguous windows (`block_length` = the window). Every image is observed
/// exactly as `vigil serve` observes live images. `None` (with a warning) when validation
/// is too small to calibrate drift windows.
fn reference(
    manifest: &Manifest,
    backend: &mut dyn vigil_engine::Backend,
    data: &Dataset,
) -> Result<Option<ReferenceProfile>> {
    let Some(cfg) = ReferenceConfig::for_images(data.val.len()) else {
        tracing::warn!(
            images = data.val.len(),
            "Too few validation images for a reference profile (at least 100): the bundle \
             has no drift monitoring; add one later with `vigil bundle reference`."
        );
        return Ok(None);
    };
    let cfg = ReferenceConfig {
        block_length: cfg.window,
        ..cfg
    };
    let pipeline = Pipeline::new(manifest, Limits::default()).observing();
    let mut observe = |samples: &[Sample]| {
        samples
            .iter()
            .map(|s| vigil_engine::observe::observe(manifest, &pipeline, backend, &s.bytes, 64))
            .collect::<vigil_engine::Result<Vec<_>>>()
    };
    let observations = observe(&data.val)?;
    let mut images = observe(&data.train)?;
    images.extend(observations.iter().cloned());
    let labels: Vec<String> = manifest
        .model
        .labels
        .iter()
        .map(ToString::to_string)
        .collect();
    let source = format!(
        "validation split of {} ({} images); image statistics from all its images ({})",
        data.source.display(),
        observations.len(),
        images.len()
    );
    ReferenceProfile::build_with_image_stats(&observations, &images, &labels, &source, &cfg)
        .map(Some)
        .map_err(|e| Error::Config(format!("cannot build the reference profile: {e}")))
}

/// The HTML page of a report.
pub fn render(report: &TrainReport) -> String {
    let d = &report.dataset;
    let mut facts = vec![
        ("Model".to_owned(), report.model.clone()),
        ("Trainer".to_owned(), report.trainer.clone()),
        ("Data".to_owned(), d.source.clone()),
        ("Data digest".to_owned(), d.digest.clone()),
        (
            "Training films".to_owned(),
            format!(
                "{} ({:?} per label {:?})",
                d.train_films.join(", "),
                d.train_counts,
                d.labels
            ),
        ),
        (
            "Validation films".to_owned(),
            format!("{} ({:?} per label)", d.val_films.join(", "), d.val_counts),
        ),
    ];
    facts.extend(report.training.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(diff) = report.export_max_abs_diff {
        facts.push(("Export check (max |Δp|)".to_owned(), format!("{diff:.2e}")));
    }
    vigil_core::eval::html::render_html(
        &format!("Training report: {}", report.model),
        &facts,
        &report.history,
        &report.validation,
    )
}

/// Probabilities of `samples` on `backend`, in batches of 64.
pub fn score(
    backend: &mut dyn vigil_engine::Backend,
    pipeline: &Pipeline,
    samples: &[Sample],
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(samples.len());
    for chunk in samples.chunks(64) {
        let tensors = chunk
            .iter()
            .map(|s| pipeline.run(&s.bytes))
            .collect::<vigil_engine::Result<Vec<_>>>()?;
        let refs: Vec<_> = tensors.iter().collect();
        let outputs = backend.run(&Batch::stack(&refs)?)?;
        let probs = outputs
            .get("probabilities")
            .ok_or_else(|| Error::Config("the model has no `probabilities` output".into()))?;
        let k = probs.shape.get(1).copied().unwrap_or(1).max(1);
        out.extend(probs.data.chunks_exact(k).map(<[f32]>::to_vec));
    }
    Ok(out)
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| f64::from((x - y).abs()))
        .fold(0.0, f64::max)
}

/// A few validation images of each label, in path order, as the bundle's golden inputs.
fn golden_inputs(data: &Dataset) -> Vec<(String, Vec<u8>)> {
    let mut inputs = Vec::new();
    for label in 0..data.labels.len() {
        let mut of_label: Vec<&Sample> = data.val.iter().filter(|s| s.label == label).collect();
        of_label.sort_by(|a, b| a.path.cmp(&b.path));
        for s in of_label.into_iter().take(GOLDEN_PER_LABEL) {
            let ext = Path::new(&s.path)
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("img")
                .to_ascii_lowercase();
            inputs.push((
                format!("golden/input-{:03}.{ext}", inputs.len()),
                s.bytes.clone(),
            ));
        }
    }
    inputs
}
