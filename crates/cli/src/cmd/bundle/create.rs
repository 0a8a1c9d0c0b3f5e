//! `vigil bundle create`: a bundle from an ONNX model, its labels and its declared
//! preprocessing, with golden outputs recorded by running the model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use vigil_core::bundle::{
    self, Bundle, BundleWriter, DecisionRule, GOLDEN_EXPECTED_FILE, GoldenTolerance, Layout,
    MODEL_FILE, Manifest, OutputRoles, Provenance, REFERENCE_FILE, REPORT_FILE, ResizeFilter, Step,
};
use vigil_core::types::{Label, ModelName, ModelVersion, Sha256Digest};
use vigil_engine::preprocess::{Limits, Pipeline, synthetic_png};

use super::read_secret_key;
use super::reference::reference_bytes;
use crate::cmd::Context;

/// Arguments of `bundle create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The ONNX model file.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// The model's name (lower-case letters, digits, '-', '_', '.').
    #[arg(long)]
    pub name: ModelName,
    /// This version; versions are immutable once pushed.
    #[arg(long)]
    pub version: ModelVersion,
    /// Class labels in the order of the probabilities output, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub labels: Vec<Label>,
    /// A TOML file of `[[preprocess]]` steps. Default: decode, grey or rgb (from the input's
    /// channels), resize to the input size (bilinear), scale by 1/255, layout nchw.
    #[arg(long, value_name = "FILE")]
    pub preprocess: Option<PathBuf>,
    /// Decide on one label's probability instead of argmax: LABEL=THRESHOLD (e.g. defect=0.3).
    #[arg(long, value_name = "LABEL=P")]
    pub threshold: Option<String>,
    /// With --threshold: probabilities within LOW,HIGH go to human review.
    #[arg(
        long,
        value_name = "LOW,HIGH",
        value_delimiter = ',',
        requires = "threshold"
    )]
    pub review_band: Option<Vec<f32>>,
    /// With argmax: predictions whose confidence is below this go to human review.
    #[arg(long, value_name = "P", conflicts_with = "threshold")]
    pub review_below: Option<f32>,
    /// The output holding class probabilities.
    #[arg(long, default_value = "probabilities", value_name = "NAME")]
    pub probabilities_output: String,
    /// The output holding the embedding (default: `embedding` if the model has it).
    #[arg(long, value_name = "NAME")]
    pub embedding_output: Option<String>,
    /// Golden input images; their tensors and outputs are recorded and must reproduce
    /// wherever the bundle is loaded. Default: four synthetic images.
    #[arg(long, value_name = "IMAGE", num_args = 1..)]
    pub golden: Vec<PathBuf>,
    /// The reference profile for monitoring: a reference.json to include as is, or images to
    /// compute it from (folders, globs or CSV manifests, as `vigil score` takes them): each
    /// image runs through this bundle's own preprocessing and model, as `vigil serve` would,
    /// and the drift thresholds are calibrated on them. Use held-out (validation) images the
    /// model was not trained on. Repeatable.
    #[arg(long, value_name = "JSON|DATA")]
    pub reference: Vec<String>,
    /// With a CSV manifest as --reference: only rows whose `split` column is this (e.g. val).
    #[arg(long, value_name = "SPLIT")]
    pub reference_split: Option<String>,
    /// Images per drift window; the reference needs at least four windows of images
    /// (default: 200, or the largest multiple of 25 the images allow).
    #[arg(long, value_name = "N")]
    pub reference_window: Option<usize>,
    /// Images for the image-statistic signals and the out-of-distribution model, every row
    /// of a manifest whatever its split (as `bundle reference --stats-data`): every film
    /// there is, training films included. Default: --reference.
    #[arg(long, num_args = 1.., value_name = "DATA", requires = "reference")]
    pub reference_stats: Vec<String>,
    /// Consecutive reference images that are correlated (as `bundle reference
    /// --block-length`; default 25).
    #[arg(long, value_name = "N", requires = "reference")]
    pub reference_block_length: Option<usize>,
    /// Target false alarms per 10,000 in-distribution images (as `bundle reference
    /// --false-alarms`; default 1).
    #[arg(long, value_name = "RATE", requires = "reference")]
    pub reference_false_alarms: Option<f64>,
    /// An evaluation report (report.json) to include.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// A description for people.
    #[arg(long, default_value = "")]
    pub description: String,
    /// The trainer that made the model.
    #[arg(long, default_value = "external")]
    pub trainer: String,
    /// The trainer's version.
    #[arg(long, default_value = "")]
    pub trainer_version: String,
    /// The source commit of the training code.
    #[arg(long, default_value = "")]
    pub source_commit: String,
    /// The training data manifest; its SHA-256 is recorded as provenance.
    #[arg(long, value_name = "FILE")]
    pub training_data: Option<PathBuf>,
    /// Extra provenance, KEY=VALUE (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Golden tolerance: absolute.
    #[arg(long, default_value_t = GoldenTolerance::default().atol)]
    pub atol: f32,
    /// Golden tolerance: relative.
    #[arg(long, default_value_t = GoldenTolerance::default().rtol)]
    pub rtol: f32,
    /// Sign the new bundle with this secret key.
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
    /// Where to write: a new folder, or an archive (.tar, .tar.gz, .tgz).
    #[arg(long, short)]
    pub out: PathBuf,
}

/// The preprocessing file's shape.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PreprocessFile {
    preprocess: Vec<Step>,
}

/// Parses a preprocessing file's text (`[[preprocess]]` tables).
pub fn parse_preprocess(text: &str) -> Result<Vec<Step>, bundle::Error> {
    toml::from_str::<PreprocessFile>(text)
        .map(|f| f.preprocess)
        .map_err(|e| bundle::Error::ManifestInvalid {
            field: "preprocess".into(),
            reason: e.to_string(),
        })
}

/// Reads a preprocessing file (`[[preprocess]]` tables).
pub fn read_preprocess(path: &Path) -> anyhow::Result<Vec<Step>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_preprocess(&text).with_context(|| format!("preprocessing file {}", path.display()))
}

/// Makes a bundle as `args` describe; used by `bundle create` and the demo.
pub fn create(ctx: &Context, args: &CreateArgs) -> anyhow::Result<Bundle> {
    if args.out.exists() {
        return Err(bundle::Error::Exists {
            path: args.out.clone(),
        }
        .into());
    }
    let model = std::fs::read(&args.model)
        .with_context(|| format!("cannot read model {}", args.model.display()))?;
    let info = vigil_core::onnx::inspect(&model)
        .map_err(bundle::Error::from)
        .with_context(|| format!("{} cannot be packaged", args.model.display()))?;
    let input = info
        .inputs
        .first()
        .context("the model has no input")?
        .clone();
    let preprocess = match &args.preprocess {
        Some(path) => read_preprocess(path)?,
        None => default_preprocess(&input.shape),
    };
    let embedding = match &args.embedding_output {
        Some(e) => Some(e.clone()),
        None => info
            .outputs
            .iter()
            .any(|o| o.name == "embedding")
            .then(|| "embedding".to_owned()),
    };
    let decision = match &args.threshold {
        Some(spec) => {
            let (label, p) = spec
                .split_once('=')
                .context("--threshold takes LABEL=PROBABILITY")?;
            DecisionRule::Threshold {
                positive: label.parse()?,
                threshold: p
                    .parse()
                    .with_context(|| format!("--threshold: {p:?} is not a number"))?,
                review_band: match args.review_band.as_deref() {
                    None => None,
                    Some([lo, hi]) => Some([*lo, *hi]),
                    Some(_) => {
                        return Err(bundle::Error::ManifestInvalid {
                            field: "decision.review_band".into(),
                            reason: "takes two numbers: --review-band LOW,HIGH".into(),
                        }
                        .into());
                    }
                },
            }
        }
        None => DecisionRule::Argmax {
            review_below: args.review_below,
        },
    };
    let mut extra = BTreeMap::new();
    for kv in &args.meta {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--meta {kv:?}: expected KEY=VALUE"))?;
        extra.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    let training_data = match &args.training_data {
        Some(p) => Some(Sha256Digest::of(&std::fs::read(p).with_context(|| {
            format!("cannot read training data manifest {}", p.display())
        })?)),
        None => None,
    };
    let mut manifest =
        Manifest::for_model(&info, args.name.clone(), args.labels.clone(), preprocess);
    manifest.model.version = args.version.clone();
    manifest.model.description = args.description.clone();
    manifest.model.created_by = ctx.actor.clone();
    manifest.roles = OutputRoles {
        probabilities: args.probabilities_output.clone(),
        embedding,
    };
    manifest.decision = decision;
    manifest.provenance = Provenance {
        training_data,
        trainer: args.trainer.clone(),
        trainer_version: args.trainer_version.clone(),
        source_commit: args.source_commit.clone(),
        onnx_producer: info.producer.clone(),
        extra,
    };
    manifest.golden = GoldenTolerance {
        atol: args.atol,
        rtol: args.rtol,
    };
    let mut writer = BundleWriter::new(manifest);
    writer.add_file(MODEL_FILE, model.clone())?;
    if let Some(p) = &args.report {
        writer.add_file(REPORT_FILE, read_json_file(p)?)?;
    }
    // Golden inputs keep their extension so the decoder sees the same kind of file.
    let mut golden_inputs = Vec::new();
    if args.golden.is_empty() {
        let (c, h, w) = writer
            .manifest()
            .preprocess
            .last()
            .map_or((1, 128, 128), |s| match s {
                Step::Layout { order } => order.chw(&input.shape),
                _ => (1, 128, 128),
            });
        let (c, h, w) = (c.max(1) as u32, h.max(1) as u32, w.max(1) as u32);
        for i in 0..4u64 {
            golden_inputs.push((
                format!("golden/synthetic-{i}.png"),
                synthetic_png(w, h, c, i),
            ));
        }
    } else {
        for (i, p) in args.golden.iter().enumerate() {
            let bytes = std::fs::read(p)
                .with_context(|| format!("cannot read golden input {}", p.display()))?;
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("img")
                .to_ascii_lowercase();
            golden_inputs.push((format!("golden/input-{i:03}.{ext}"), bytes));
        }
    }
    for (name, bytes) in &golden_inputs {
        writer.add_file(name, bytes.clone())?;
    }
    // Fail on a bad manifest before loading the engine.
    writer.validate()?;
    let manifest = writer.manifest().clone();
    let mut backend = vigil_engine::load(&model, &manifest, &ctx.config.engine())?;
    let pipeline = Pipeline::new(&manifest, Limits::default());
    let golden = vigil_engine::golden::record(backend.as_mut(), &pipeline, &golden_inputs)?;
    writer.add_file(GOLDEN_EXPECTED_FILE, golden.to_json())?;
    tracing::info!(cases = golden.cases.len(), engine = %backend.describe(), "Golden outputs recorded.");
    drop(backend);
    if let Some(bytes) = reference_bytes(
        ctx,
        &manifest,
        &model,
        &crate::reference::ReferenceData {
            inputs: &args.reference,
            split: args.reference_split.as_deref(),
            window: args.reference_window,
            stats_from: &args.reference_stats,
            block_length: args.reference_block_length,
            alarms_per_10k: args.reference_false_alarms,
        },
    )? {
        writer.add_file(REFERENCE_FILE, bytes)?;
    }

    let Some(key_path) = &args.sign_key else {
        return Ok(writer.write(&args.out)?);
    };
    let key = read_secret_key(key_path)?;
    let name = args.out.to_string_lossy();
    let archive = name.ends_with(".tar") || name.ends_with(".tar.gz") || name.ends_with(".tgz");
    if !archive {
        let b = writer.write(&args.out)?;
        b.sign(&key, &ctx.actor)?;
        return Ok(b);
    }
    let staging = tempfile::tempdir().context("cannot make a temporary folder")?;
    let dir = staging.path().join("bundle");
    let b = writer.write(&dir)?;
    b.sign(&key, &ctx.actor)?;
    bundle::pack(&dir, &args.out)?;
    Ok(Bundle::open(&args.out)?)
}

fn read_json_file(p: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .with_context(|| format!("{} is not JSON", p.display()))?;
    Ok(bytes)
}

fn default_preprocess(shape: &[i64]) -> Vec<Step> {
    let (c, h, w) = if shape.len() == 4 {
        Layout::Nchw.chw(shape)
    } else {
        (1, 0, 0)
    };
    let mut steps = vec![Step::Decode, if c == 3 { Step::Rgb } else { Step::Grey }];
    if h > 0 && w > 0 {
        steps.push(Step::Resize {
            width: w as u32,
            height: h as u32,
            filter: ResizeFilter::Bilinear,
        });
    }
    steps.push(Step::Scale {
        factor: 1.0 / 255.0,
    });
    steps.push(Step::Layout {
        order: Layout::Nchw,
    });
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_pipeline_matches_the_input_shape() {
        let steps = default_preprocess(&[-1, 3, 224, 224]);
        assert_eq!(steps[1], Step::Rgb);
        assert!(matches!(
            steps[2],
            Step::Resize {
                width: 224,
                height: 224,
                ..
            }
        ));
    }

    #[test]
    fn unknown_preprocessing_fields_are_refused() {
        let err = toml::from_str::<PreprocessFile>("[[preprocess]]\nop = \"scale\"\nfactr = 2.0\n")
            .unwrap_err();
        assert!(err.to_string().contains("factr"), "{err}");
    }
}
