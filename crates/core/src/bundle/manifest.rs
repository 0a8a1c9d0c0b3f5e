//! The manifest, `vigil.toml`: what a bundle is, what it needs and how its outputs are read.
//!
//! Parsing is strict: unknown fields are errors (a typo in a threshold must not be silently
//! ignored) and [`Manifest::validate`] checks every cross-field rule once, so code that holds a
//! `Manifest` never re-checks it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::preprocess::Step;
use super::{Error, Result};
use crate::types::{Label, ModelName, ModelVersion, Sha256Digest};

/// The bundle format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Bundle format version; a reader refuses formats it does not know.
    pub format: u32,
    /// Identity and description.
    pub model: ModelSection,
    /// Tensor inputs of the model graph (one image input).
    pub inputs: Vec<TensorSpec>,
    /// Tensor outputs of the model graph.
    pub outputs: Vec<TensorSpec>,
    /// Which outputs mean what.
    pub roles: OutputRoles,
    /// The declared preprocessing pipeline, from encoded image bytes to the input tensor.
    pub preprocess: Vec<Step>,
    /// How probabilities become a decision, and which ones go to a human.
    pub decision: DecisionRule,
    /// Where the model came from.
    pub provenance: Provenance,
    /// What an engine must support to run the model.
    pub engine: EngineRequirements,
    /// How closely golden outputs must be reproduced.
    pub golden: GoldenTolerance,
    /// SHA-256 of every other file in the bundle, by relative path (`/`-separated).
    pub files: BTreeMap<String, Sha256Digest>,
}

/// Identity and description of the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// The model's name.
    pub name: ModelName,
    /// This version; immutable once pushed.
    pub version: ModelVersion,
    /// What the model does.
    pub task: Task,
    /// Class labels, in the order of the probabilities output.
    pub labels: Vec<Label>,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// When the bundle was made.
    pub created_at: DateTime<Utc>,
    /// Who made it.
    pub created_by: String,
}

/// The kinds of model Vigil serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// One label per image (or per tile).
    Classification,
}

/// Element types of tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum DType {
    Float32,
    Float16,
    Float64,
    Int8,
    Int16,
    Int32,
    Int64,
    Uint8,
    Uint16,
    Bool,
    String,
}

impl DType {
    /// Maps ONNX's `TensorProto.DataType` code.
    pub fn from_onnx(code: i32) -> Option<Self> {
        Some(match code {
            1 => DType::Float32,
            2 => DType::Uint8,
            3 => DType::Int8,
            4 => DType::Uint16,
            5 => DType::Int16,
            6 => DType::Int32,
            7 => DType::Int64,
            8 => DType::String,
            9 => DType::Bool,
            10 => DType::Float16,
            11 => DType::Float64,
            _ => return None,
        })
    }
}

/// A named tensor with its element type and shape; `-1` is a dynamic dimension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    /// The graph's name for it.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions; `-1` where the graph leaves one open (usually the batch).
    pub shape: Vec<i64>,
}

/// Which output holds what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputRoles {
    /// The output holding class probabilities, shape `[N, labels]`.
    pub probabilities: String,
    /// The output holding an embedding, shape `[N, D]`, used for drift and OOD scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<String>,
}

/// How probabilities become a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum DecisionRule {
    /// The most probable label wins.
    Argmax {
        /// Predictions whose confidence is below this go to a human.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        review_below: Option<f32>,
    },
    /// Binary decision on one label's probability.
    Threshold {
        /// The label tested, such as `defect`.
        positive: Label,
        /// `p(positive) >= threshold` decides `positive`.
        threshold: f32,
        /// Probabilities in `[low, high]` go to a human.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        review_band: Option<[f32; 2]>,
    },
}

/// Where the model came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// SHA-256 of the training data manifest, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_data: Option<Sha256Digest>,
    /// The trainer (`vigil-train`, `pytorch`, `external`, ...).
    pub trainer: String,
    /// The trainer's version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trainer_version: String,
    /// Source commit of the training code.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_commit: String,
    /// The ONNX producer recorded in the model file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub onnx_producer: String,
    /// Free-form key/value facts (hyper-parameters, trigger id, parent bundle digest, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

/// What an engine must support.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineRequirements {
    /// The model format; only `onnx` today.
    pub model_format: String,
    /// ONNX IR version of `model.onnx`.
    pub ir_version: i64,
    /// Operator set versions by domain (`""` is the default ONNX domain).
    pub opsets: BTreeMap<String, i64>,
}

/// How closely an engine must reproduce the golden outputs: `|a - b| <= atol + rtol * |b|`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenTolerance {
    /// Absolute tolerance.
    pub atol: f32,
    /// Relative tolerance.
    pub rtol: f32,
}

impl Default for GoldenTolerance {
    /// Engines differ in summation order (and GPUs in fused kernels); 1e-4 absolute plus 1e-3
    /// relative accepts that and still catches a changed weight or preprocessing step.
    fn default() -> Self {
        GoldenTolerance {
            atol: 1e-4,
            rtol: 1e-3,
        }
    }
}

impl GoldenTolerance {
    /// Whether `actual` is close enough to `expected`.
    pub fn accepts(&self, actual: f32, expected: f32) -> bool {
        (actual - expected).abs() <= self.atol + self.rtol * expected.abs()
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::ManifestInvalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

impl Manifest {
    /// A manifest describing `info`'s model with the given labels and preprocessing, and
    /// defaults for the rest: version `0`, argmax decision, the outputs named `probabilities`
    /// and (if present) `embedding`, default golden tolerance, no files yet. `bundle create`
    /// starts from it; checks and benchmarks that run a bare ONNX file use it as it is.
    pub fn for_model(
        info: &crate::onnx::OnnxInfo,
        name: ModelName,
        labels: Vec<Label>,
        preprocess: Vec<Step>,
    ) -> Manifest {
        Manifest {
            format: FORMAT_VERSION,
            model: ModelSection {
                name,
                version: ModelVersion::initial(),
                task: Task::Classification,
                labels,
                description: String::new(),
                created_at: Utc::now(),
                created_by: String::new(),
            },
            inputs: info.inputs.clone(),
            outputs: info.outputs.clone(),
            roles: OutputRoles {
                probabilities: "probabilities".into(),
                embedding: info
                    .outputs
                    .iter()
                    .any(|o| o.name == "embedding")
                    .then(|| "embedding".to_owned()),
            },
            preprocess,
            decision: DecisionRule::Argmax { review_below: None },
            provenance: Provenance {
                onnx_producer: info.producer.clone(),
                ..Provenance::default()
            },
            engine: EngineRequirements {
                model_format: "onnx".into(),
                ir_version: info.ir_version,
                opsets: info.opsets.clone(),
            },
            golden: GoldenTolerance::default(),
            files: BTreeMap::new(),
        }
    }

    /// Parses and validates `vigil.toml` text.
    pub fn parse(text: &str) -> Result<Manifest> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| Error::ManifestParse {
            message: e.to_string(),
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Renders the manifest as TOML; the exact bytes are the bundle's identity.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::ManifestParse {
            message: format!("cannot render the manifest: {e}"),
        })
    }

    /// The output holding probabilities.
    pub fn probabilities_output(&self) -> &TensorSpec {
        self.outputs
            .iter()
            .find(|o| o.name == self.roles.probabilities)
            .expect("validate() checked that the probabilities output exists; this is a bug")
    }

    /// The image input.
    pub fn image_input(&self) -> &TensorSpec {
        self.inputs
            .first()
            .expect("validate() checked that there is one input; this is a bug")
    }

    /// Checks every rule that types alone cannot.
    pub fn validate(&self) -> Result<()> {
        if self.format != FORMAT_VERSION {
            return Err(invalid(
                "format",
                format!(
                    "bundle format {} is not supported by this build (it reads format {FORMAT_VERSION})",
                    self.format
                ),
            ));
        }
        let labels = &self.model.labels;
        if labels.len() < 2 {
            return Err(invalid(
                "model.labels",
                "a classifier needs at least two labels",
            ));
        }
        let unique: BTreeSet<_> = labels.iter().collect();
        if unique.len() != labels.len() {
            return Err(invalid("model.labels", "labels must be unique"));
        }
        if self.inputs.len() != 1 {
            return Err(invalid(
                "inputs",
                format!(
                    "exactly one image input is supported, found {}",
                    self.inputs.len()
                ),
            ));
        }
        let input = &self.inputs[0];
        if input.dtype != DType::Float32 || input.shape.len() != 4 {
            return Err(invalid(
                "inputs",
                format!(
                    "input {:?} must be a float32 tensor of rank 4 (N, C, H, W or N, H, W, C)",
                    input.name
                ),
            ));
        }
        let probs = self
            .outputs
            .iter()
            .find(|o| o.name == self.roles.probabilities)
            .ok_or_else(|| {
                invalid(
                    "roles.probabilities",
                    format!("no output is named {:?}", self.roles.probabilities),
                )
            })?;
        if probs.shape.len() != 2 {
            return Err(invalid(
                "roles.probabilities",
                format!("output {:?} must have shape [N, labels]", probs.name),
            ));
        }
        if probs.shape[1] > 0 && probs.shape[1] as usize != labels.len() {
            return Err(invalid(
                "model.labels",
                format!(
                    "{} labels declared but output {:?} has {} classes",
                    labels.len(),
                    probs.name,
                    probs.shape[1]
                ),
            ));
        }
        if let Some(emb) = &self.roles.embedding {
            let spec = self
                .outputs
                .iter()
                .find(|o| &o.name == emb)
                .ok_or_else(|| invalid("roles.embedding", format!("no output is named {emb:?}")))?;
            if spec.shape.len() != 2 {
                return Err(invalid(
                    "roles.embedding",
                    format!("output {emb:?} must have shape [N, D]"),
                ));
            }
        }
        self.validate_decision()?;
        super::preprocess::validate(&self.preprocess, input)?;
        if self.engine.model_format != "onnx" {
            return Err(invalid(
                "engine.model_format",
                format!(
                    "model format {:?} is not supported (only \"onnx\")",
                    self.engine.model_format
                ),
            ));
        }
        let t = self.golden;
        if !(t.atol.is_finite() && t.rtol.is_finite() && t.atol >= 0.0 && t.rtol >= 0.0) {
            return Err(invalid(
                "golden",
                "tolerances must be finite and not negative",
            ));
        }
        if !self.files.contains_key(super::MODEL_FILE) {
            return Err(invalid(
                "files",
                format!("{:?} is not listed", super::MODEL_FILE),
            ));
        }
        for path in self.files.keys() {
            super::check_relative_path(path)?;
            if path == super::MANIFEST_FILE || path == super::SIGNATURE_FILE {
                return Err(invalid(
                    "files",
                    format!("{path:?} may not be listed in itself"),
                ));
            }
        }
        Ok(())
    }

    fn validate_decision(&self) -> Result<()> {
        let in_unit = |x: f32| (0.0..=1.0).contains(&x);
        match &self.decision {
            DecisionRule::Argmax { review_below } => {
                if let Some(b) = review_below
                    && !in_unit(*b)
                {
                    return Err(invalid("decision.review_below", "must be within [0, 1]"));
                }
            }
            DecisionRule::Threshold {
                positive,
                threshold,
                review_band,
            } => {
                if !self.model.labels.contains(positive) {
                    return Err(invalid(
                        "decision.positive",
                        format!("{positive:?} is not one of the labels"),
                    ));
                }
                if !in_unit(*threshold) {
                    return Err(invalid("decision.threshold", "must be within [0, 1]"));
                }
                if let Some([lo, hi]) = review_band
                    && !(in_unit(*lo) && in_unit(*hi) && lo <= threshold && threshold <= hi)
                {
                    return Err(invalid(
                        "decision.review_band",
                        "must be [low, high] within [0, 1] with low <= threshold <= high",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
format = 1

[model]
name = "weldnet"
version = "1.0.0"
task = "classification"
labels = ["defect", "no_defect"]
created_at = "2026-11-25T10:00:00Z"
created_by = "alice"

[[inputs]]
name = "image"
dtype = "float32"
shape = [-1, 1, 128, 128]

[[outputs]]
name = "probabilities"
dtype = "float32"
shape = [-1, 2]

[roles]
probabilities = "probabilities"

[[preprocess]]
op = "decode"

[[preprocess]]
op = "grey"

[[preprocess]]
op = "resize"
width = 128
height = 128
filter = "bilinear"

[[preprocess]]
op = "standardize"

[[preprocess]]
op = "layout"
order = "nchw"

[decision]
rule = "threshold"
positive = "defect"
threshold = 0.3
review_band = [0.2, 0.5]

[provenance]
trainer = "vigil-train"

[engine]
model_format = "onnx"
ir_version = 8

[engine.opsets]
"" = 17

[golden]
atol = 1e-4
rtol = 1e-3

[files]
"model.onnx" = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
"#;

    fn with(from: &str, to: &str) -> Result<Manifest> {
        assert!(VALID.contains(from), "fixture lacks {from:?}");
        Manifest::parse(&VALID.replacen(from, to, 1))
    }

    #[test]
    fn a_valid_manifest_parses_and_round_trips() {
        let m = Manifest::parse(VALID).unwrap();
        assert_eq!(m.model.labels.len(), 2);
        assert!(
            matches!(m.decision, DecisionRule::Threshold { threshold, .. } if threshold == 0.3)
        );
        assert_eq!(Manifest::parse(&m.to_toml().unwrap()).unwrap(), m);
    }

    #[test]
    fn unknown_fields_are_errors_everywhere() {
        for (from, to) in [
            ("format = 1", "format = 1\ncolour = \"red\""),
            (
                "task = \"classification\"",
                "task = \"classification\"\nowner = \"x\"",
            ),
            ("threshold = 0.3", "threshold = 0.3\nthreshhold = 0.4"),
            (
                "op = \"standardize\"",
                "op = \"standardize\"\nepsilon = 1.0",
            ),
        ] {
            let err = with(from, to).unwrap_err();
            assert!(matches!(err, Error::ManifestParse { .. }), "{from}: {err}");
        }
    }

    #[test]
    fn a_missing_field_is_named() {
        let err = with("created_by = \"alice\"\n", "").unwrap_err();
        assert!(err.to_string().contains("created_by"), "{err}");
    }

    #[test]
    fn cross_field_rules_are_checked() {
        let cases = [
            (
                "labels = [\"defect\", \"no_defect\"]",
                "labels = [\"defect\", \"no_defect\", \"other\"]",
                "3 labels declared",
            ),
            (
                "labels = [\"defect\", \"no_defect\"]",
                "labels = [\"defect\", \"defect\"]",
                "unique",
            ),
            (
                "positive = \"defect\"",
                "positive = \"crack\"",
                "not one of the labels",
            ),
            ("threshold = 0.3", "threshold = 1.3", "within [0, 1]"),
            (
                "review_band = [0.2, 0.5]",
                "review_band = [0.4, 0.5]",
                "low <= threshold",
            ),
            (
                "probabilities = \"probabilities\"",
                "probabilities = \"logits\"",
                "no output is named",
            ),
            ("format = 1", "format = 2", "not supported"),
            ("op = \"grey\"", "op = \"rgb\"", "3 channel(s)"),
            ("width = 128", "width = 64", "64x128"),
            (
                "\"model.onnx\" =",
                "\"../model.onnx\" = \"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"\n\"model.onnx\" =",
                "escape",
            ),
        ];
        for (from, to, message) in cases {
            let err = with(from, to).unwrap_err();
            assert!(
                err.to_string().contains(message),
                "{to}: expected {message:?} in {err}"
            );
        }
    }

    #[test]
    fn golden_tolerance_is_absolute_plus_relative() {
        let t = GoldenTolerance::default();
        assert!(t.accepts(0.50005, 0.5));
        assert!(!t.accepts(0.502, 0.5));
        assert!(t.accepts(100.05, 100.0));
    }
}
