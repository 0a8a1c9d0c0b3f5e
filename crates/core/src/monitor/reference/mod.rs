//! The bundle's reference profile (`reference.json`): what in-distribution data looks like to
//! the monitor, and alarm thresholds calibrated on it so that the false-alarm rate on
//! in-distribution traffic is known and small (DESIGN.md section 4).
//!
//! # How a profile is built
//!
//! [`ReferenceProfile::build`] takes observations of in-distribution images (typically the
//! validation set run through the bundle) **in their natural order**: tiles of one film, films
//! of one batch are adjacent, so neighbours are correlated.
//!
//! 1. **Split.** The observations are cut into stretches of one window (`window` images);
//!    even stretches form the *reference part*, odd ones the *held-out part* (at most
//!    `max_holdout` images, whole stretches evenly spread). Both parts span the whole
//!    acquisition period, and a window of the held-out part is never compared with itself.
//! 2. **Reference samples** from the reference part, evenly thinned: per image statistic a
//!    sorted sample (`stat_sample`), the embeddings (`embedding_sample` vectors, their mean,
//!    a Gaussian-kernel bandwidth by the median heuristic), the predicted-class shares and a
//!    confidence sample. The Mahalanobis out-of-distribution model is fitted on the
//!    embeddings of every image given (both parts, or every film's images below), its
//!    threshold taken from cross-fitted distances.
//! 3. **Calibration.** In-distribution windows of `window` images are resampled from the
//!    held-out part with [`calibrate`](crate::drift::calibrate::calibrate) and [`Resampling::Blocks`](crate::drift::calibrate::Resampling::Blocks) (runs of `block_length`
//!    consecutive images, about one film's tiles, so that the windows vary as much as
//!    correlated live windows do). Each signal's statistic is computed on those windows
//!    against the stored reference sample, exactly as [`super::window::evaluate`] computes it
//!    on live windows, and its threshold is set at level `alpha / m` for `m` calibrated
//!    signals (Bonferroni): `P(any signal alarms on an in-distribution window) <= Σ alpha/m
//!    = alpha`. The threshold is the larger of [`calibrate`](crate::drift::calibrate::calibrate)'s conformal one and an
//!    exponential-tail extrapolation from the top 10% of the calibration statistics
//!    (`tail_threshold`): windows resampled from a finite held-out part cannot show events
//!    rarer than its own block combinations, and the levels here are small (`5.6e-4`).
//!    Fresh resampled windows (`validation_windows`) then measure the family's false-alarm
//!    rate, stored as [`DriftSettings::false_alarm_rate`].
//!
//! **Image statistics from other images.** [`ReferenceProfile::build_with_image_stats`] takes
//! the image statistics' samples and held-out part from a second, larger set of images (every
//! film, training films included) and the embedding and prediction signals from the
//! observations: steps 1 to 3 run on each set for its own signals.
//!
//! # How well the false-alarm rate holds
//!
//! The thresholds are conditional on one finite reference: its sample deviates from the
//! population by a fixed offset that every live window inherits, so the realised rate on
//! live in-distribution traffic scatters around `alpha` from one reference to the next, and
//! more above than below. On the synthetic films of the tests (800 observations, windows of
//! 40, `alpha` 0.05) five references gave 4% to 11% (mean 7%) on 1,000 fresh windows each,
//! while their resampled validation windows said 0% to 4.5%:
//! [`DriftSettings::false_alarm_rate`] is optimistic. More reference data (ten windows or
//! more) narrows the scatter; halving `alpha` buys a safety factor of two.
//!
//! # Signals
//!
//! | name | test | statistic |
//! |---|---|---|
//! | `stat.<name>` for each of [`STAT_NAMES`] | `ks` | two-sample Kolmogorov-Smirnov `D` against the reference sample |
//! | `embedding.mmd` | `mmd` | unbiased MMD² of the window's embeddings against at most `mmd_vectors` reference vectors, bandwidth fixed by the reference |
//! | `predictions.classes` | `chi2` | Pearson's chi-square of predicted-class counts against the reference shares (two labels or more) |
//! | `predictions.confidence` | `ks` | KS `D` of the decisions' confidence |
//!
//! A statistic with a single value over **all** reference observations (width, height, bit
//! depth of a fixed detector) is a *fixed* signal: threshold 0 on its KS `D`, which is above 0
//! as soon as one image of a window has another value. It never alarmed on the reference
//! data, so it takes no share of `alpha` (`calibrated: false`).
//!
//! # The default alpha
//!
//! With windows of 200 images evaluated every 50 images, 10,000 in-distribution images give
//! `10,000 / 50 = 200` evaluations. The expected number of alarming evaluations is
//! `200 × alpha` whatever the overlap between windows (expectation is linear), so
//! `alpha = 0.005` keeps it at 1 per 10,000 images; overlapping windows alarm in runs, so the
//! number of distinct alarm episodes is smaller still. Per signal, with `m` calibrated signals
//! (9 for a typical bundle: 6 image statistics, embedding, classes, confidence), the level
//! is `0.005 / 9 ≈ 5.6e-4`, and the conformal rank of [`calibrate`](crate::drift::calibrate::calibrate) needs at least
//! `m / alpha - 1` windows (1,799 for 9 signals, 2,399 for all 12): the default of 4,000
//! windows covers up to 20 signals.

use serde::{Deserialize, Serialize};

mod calibrate;

use self::calibrate::{Parted, calibrate_thresholds};
use super::{MonitorError, Observation, STAT_NAMES};
use crate::drift::mahalanobis::{
    MahalanobisConfig, MahalanobisFit, MahalanobisModel, OodScore, ThresholdFrom,
};
use crate::drift::mmd::{MmdConfig, mmd_test};
use crate::drift::quantile_sorted;

/// The file a bundle keeps its reference profile in.
pub use crate::bundle::REFERENCE_FILE;

/// The profile format written by this version.
pub const FORMAT: u32 = 1;

/// The out-of-distribution threshold's cross-fitting ([`ThresholdFrom::CrossFit`]): runs of
/// 25 consecutive images dealt to five folds, each scored by a model of the other four.
const OOD_CROSS_FIT: ThresholdFrom = ThresholdFrom::CrossFit {
    folds: 5,
    block: 25,
};

/// Settings of [`ReferenceProfile::build`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceConfig {
    /// Images per drift window (default 200: enough for KS to see a shift of about a
    /// third of a standard deviation, few enough to react within a shift of a line).
    pub window: usize,
    /// Images between two window evaluations (default 50); stored for the monitor, and the
    /// basis of the `alpha` arithmetic (see the module documentation).
    pub every: usize,
    /// Target probability that an in-distribution window raises any alarm (default 0.005:
    /// at most 1 expected alarming evaluation per 10,000 in-distribution images with the
    /// default window and step).
    pub alpha: f64,
    /// Run length of the block resampling (default 25, about the tiles of one film): the
    /// span over which neighbouring observations are correlated.
    pub block_length: usize,
    /// Resampled windows per signal that set its threshold (default 4,000); at least
    /// `m / alpha - 1` for `m` calibrated signals.
    pub calibration_windows: usize,
    /// Further resampled windows that measure the family's false-alarm rate (default 1,000).
    pub validation_windows: usize,
    /// Most values kept per statistic, and of confidence (default 5,000).
    pub stat_sample: usize,
    /// Most embedding vectors kept (default 1,000).
    pub embedding_sample: usize,
    /// Most reference vectors each window's MMD² is computed against (default 500: about
    /// 10-30 ms per 200-image window of 128-dimensional embeddings in a release build).
    pub mmd_vectors: usize,
    /// Quantile of held-out Mahalanobis distances used as the per-image out-of-distribution
    /// threshold (default 0.99: about 1% of in-distribution images are flagged).
    pub ood_quantile: f64,
    /// Most held-out observations used for calibration (default 2,000; calibration keeps
    /// their `n × n` kernel matrix, 16 MB at 2,000).
    pub max_holdout: usize,
    /// Seed of the resampling: the same observations and seed give the same profile.
    pub seed: u64,
}

impl Default for ReferenceConfig {
    fn default() -> Self {
        ReferenceConfig {
            window: 200,
            every: 50,
            alpha: 0.005,
            block_length: 25,
            calibration_windows: 4000,
            validation_windows: 1000,
            stat_sample: 5000,
            embedding_sample: 1000,
            mmd_vectors: 500,
            ood_quantile: 0.99,
            max_holdout: 2000,
            seed: 0,
        }
    }
}

impl ReferenceConfig {
    /// The default settings with the largest window `images` observations allow (each
    /// reference needs four windows: two kept, two to calibrate): the default 200 when there
    /// are enough, else a multiple of 25 down to 25; `None` below 100 images, too few to
    /// calibrate anything.
    pub fn for_images(images: usize) -> Option<ReferenceConfig> {
        let default = ReferenceConfig::default();
        let fit = (images / 4 / 25 * 25).min(default.window);
        (fit >= 25).then(|| ReferenceConfig {
            window: fit,
            every: default.every.min(fit / 2).max(1),
            ..default
        })
    }

    /// The same settings with `alpha` set from a target of alarming window evaluations per
    /// 10,000 in-distribution images (`alpha = rate × every / 10,000`; the default 0.005 is 1
    /// per 10,000 with a window every 50 images), and enough calibration windows for up to
    /// 20 signals at that level. The realised rate on live traffic scatters above the target
    /// (see the module documentation): a target of half the rate that may not be exceeded
    /// buys a safety factor of two.
    pub fn with_alarms_per_10k(self, rate: f64) -> Result<ReferenceConfig, MonitorError> {
        let alpha = rate * self.every as f64 / 10_000.0;
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(MonitorError::InvalidConfig {
                name: "false alarms per 10,000 images",
                reason: format!(
                    "must be above 0 and below {} (one alarm per evaluation), got {rate}",
                    10_000 / self.every.max(1)
                ),
            });
        }
        let needed = (20.0 / alpha).ceil() as usize;
        Ok(ReferenceConfig {
            alpha,
            calibration_windows: self.calibration_windows.max(needed),
            ..self
        })
    }

    /// The fewest observations [`ReferenceProfile::build`] accepts: four windows (two kept
    /// as the reference sample, two to resample calibration windows from). Ten windows or
    /// more give steadier thresholds.
    pub fn min_observations(&self) -> usize {
        4 * self.window
    }

    fn validate(&self) -> Result<(), MonitorError> {
        let bad =
            |name: &'static str, reason: String| Err(MonitorError::InvalidConfig { name, reason });
        if self.window < 2 {
            return bad("window", format!("must be at least 2, got {}", self.window));
        }
        if self.every == 0 {
            return bad("every", "must be at least 1".into());
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return bad("alpha", format!("must lie in (0, 1), got {}", self.alpha));
        }
        if self.block_length == 0 || self.block_length > self.window {
            return bad(
                "block_length",
                format!("must lie in 1..={}, got {}", self.window, self.block_length),
            );
        }
        if self.stat_sample < 2 || self.embedding_sample < 4 || self.mmd_vectors < 2 {
            return bad(
                "stat_sample",
                "stat_sample and mmd_vectors must be at least 2, embedding_sample at least 4"
                    .into(),
            );
        }
        if !(0.0..=1.0).contains(&self.ood_quantile) {
            return bad(
                "ood_quantile",
                format!("must lie in [0, 1], got {}", self.ood_quantile),
            );
        }
        if self.max_holdout < 2 * self.window {
            return bad(
                "max_holdout",
                format!(
                    "must be at least two windows ({}), got {}",
                    2 * self.window,
                    self.max_holdout
                ),
            );
        }
        Ok(())
    }
}

/// The reference profile of a bundle, serialised as [`REFERENCE_FILE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceProfile {
    /// The format version, [`FORMAT`].
    pub format: u32,
    /// Where the observations came from (data set, split, date), for people.
    pub source: String,
    /// Observations the profile was built from (reference and held-out parts together).
    pub images: usize,
    /// Images the image-statistic samples and thresholds came from, when they are not the
    /// same as the model's observations (see [`ReferenceProfile::build_with_image_stats`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_images: Option<usize>,
    /// The bundle's labels, in its order.
    pub labels: Vec<String>,
    /// One sample per statistic, in the order of [`STAT_NAMES`]; `None` when the
    /// observations had no image statistics.
    pub stats: Option<Vec<StatSample>>,
    /// The embedding part; `None` when the observations had no embeddings.
    pub embedding: Option<EmbeddingProfile>,
    /// What the model predicted on the reference.
    pub predictions: PredictionProfile,
    /// Window, alarm level and calibrated thresholds.
    pub drift: DriftSettings,
}

/// The reference values of one image statistic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatSample {
    /// The statistic's name, one of [`STAT_NAMES`].
    pub name: String,
    /// Its values on the reference part, sorted ascending.
    pub sample: Vec<f64>,
}

impl StatSample {
    /// The median of the sample.
    pub fn median(&self) -> f64 {
        median_sorted(&self.sample)
    }
}

/// The reference embeddings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingProfile {
    /// Embedding length.
    pub dim: usize,
    /// Embeddings of the reference part, evenly thinned, in acquisition order.
    pub sample: Vec<Vec<f32>>,
    /// Mean of `sample`.
    pub mean: Vec<f64>,
    /// Gaussian-kernel `σ` for MMD: the median pairwise distance within `sample`.
    pub bandwidth: f64,
    /// Vectors of `sample` each window is compared with (evenly spread, see
    /// [`EmbeddingProfile::mmd_reference`]).
    pub mmd_vectors: usize,
    /// Mahalanobis distance above which one image is out of distribution.
    pub ood_threshold: f64,
    /// The quantile of held-out distances `ood_threshold` was taken at.
    pub ood_quantile: f64,
    /// The out-of-distribution model, its threshold taken from cross-fitted distances
    /// ([`ThresholdFrom::CrossFit`]). It is fitted on the embeddings of every image the
    /// profile was built from: the image-statistic images (every film) when they carry
    /// embeddings, else all the observations. Absent in profiles built before 2026-11-27:
    /// their model is refitted from the first half of `sample`, their threshold having been
    /// taken from the second ([`MahalanobisModel::with_threshold`] refits them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ood_model: Option<MahalanobisFit>,
}

impl EmbeddingProfile {
    /// The reference side of the MMD: `mmd_vectors` vectors of `sample`, evenly spread.
    pub fn mmd_reference(&self) -> Vec<&[f32]> {
        thin(&self.sample, self.mmd_vectors)
            .into_iter()
            .map(Vec::as_slice)
            .collect()
    }
}

/// What the model predicted on the reference part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictionProfile {
    /// Share of each predicted class, in label order.
    pub class_shares: Vec<f64>,
    /// The decisions' confidence, sorted ascending.
    pub confidence: Vec<f64>,
}

/// The monitor's window, alarm level and per-signal thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSettings {
    /// Images per window; the thresholds hold for windows of this size.
    pub window: usize,
    /// Images between two evaluations.
    pub every: usize,
    /// Target probability that an in-distribution window raises any alarm.
    pub alpha: f64,
    /// Level of each calibrated signal, `alpha / m` (Bonferroni).
    pub signal_alpha: f64,
    /// Run length of the block resampling.
    pub block_length: usize,
    /// Windows each threshold was calibrated on.
    pub calibration_windows: usize,
    /// Fresh windows `false_alarm_rate` was measured on.
    pub validation_windows: usize,
    /// Held-out observations the windows were resampled from.
    pub holdout: usize,
    /// Held-out images the image-statistic windows were resampled from, when the statistics
    /// came from other images than the model's observations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_holdout: Option<usize>,
    /// The resampling seed.
    pub seed: u64,
    /// Share of validation windows on which any signal alarmed (the family-wise rate; 0 when
    /// there were no validation windows). Resampled from the same held-out part, so it
    /// checks the Bonferroni split and the thresholds' noise, not the reference's coverage:
    /// it is optimistic (see the module documentation).
    pub false_alarm_rate: f64,
    /// One threshold per signal, in evaluation order.
    pub thresholds: Vec<SignalThreshold>,
}

/// The alarm level of one signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalThreshold {
    /// The signal (`stat.sharpness`, `embedding.mmd`, `predictions.classes`, ...).
    pub signal: String,
    /// Its test (`ks`, `mmd`, `chi2`).
    pub test: String,
    /// Alarm when the statistic is strictly above this.
    pub threshold: f64,
    /// Whether the threshold was calibrated (`false`: a fixed statistic, threshold 0).
    pub calibrated: bool,
    /// Share of validation windows above the threshold.
    pub false_alarm_rate: f64,
}

/// A drift signal, parsed from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// KS on the image statistic at this index of [`STAT_NAMES`].
    Stat(usize),
    /// MMD² of embeddings.
    Embedding,
    /// Chi-square of predicted-class counts.
    Classes,
    /// KS of confidence.
    Confidence,
}

impl Signal {
    pub(crate) fn name(self) -> String {
        match self {
            Signal::Stat(i) => format!("stat.{}", STAT_NAMES[i]),
            Signal::Embedding => "embedding.mmd".into(),
            Signal::Classes => "predictions.classes".into(),
            Signal::Confidence => "predictions.confidence".into(),
        }
    }

    pub(crate) fn test(self) -> &'static str {
        match self {
            Signal::Stat(_) | Signal::Confidence => "ks",
            Signal::Embedding => "mmd",
            Signal::Classes => "chi2",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Signal> {
        match name {
            "embedding.mmd" => Some(Signal::Embedding),
            "predictions.classes" => Some(Signal::Classes),
            "predictions.confidence" => Some(Signal::Confidence),
            _ => {
                let stat = name.strip_prefix("stat.")?;
                STAT_NAMES.iter().position(|&s| s == stat).map(Signal::Stat)
            }
        }
    }
}

impl ReferenceProfile {
    /// Builds the profile of in-distribution `observations` (in acquisition order) for a
    /// bundle with `labels`; `source` says where they came from. See the module
    /// documentation for the split, the samples and the calibration.
    ///
    /// Image statistics and embeddings must be on every observation or on none (a part on
    /// none is left out of the profile). Cost, release build, 3,000 observations with
    /// 128-dimensional embeddings and the default settings: see the ignored test
    /// `build_and_evaluate_cost` in this module.
    ///
    /// Errors: no observations or labels; fewer than [`ReferenceConfig::min_observations`];
    /// probabilities that do not match the labels, a predicted index past them; embeddings of
    /// different lengths or a part on some observations only; non-finite values; settings
    /// out of range, including too few calibration windows for `alpha`; and the drift
    /// statistics' errors (for example [`DriftError::NotPositiveDefinite`](crate::drift::DriftError::NotPositiveDefinite) when every
    /// embedding is the same).
    pub fn build(
        observations: &[Observation],
        labels: &[String],
        source: &str,
        cfg: &ReferenceConfig,
    ) -> Result<ReferenceProfile, MonitorError> {
        Self::build_parts(observations, None, labels, source, cfg)
    }

    /// Like [`ReferenceProfile::build`], with the image statistics' samples and thresholds
    /// taken from `images` (also in acquisition order) instead of `observations`; the
    /// embedding and prediction signals still come from `observations`.
    ///
    /// Image statistics (brightness, contrast, sharpness, noise, ...) do not depend on the
    /// model, so they can be calibrated on every film there is, the training films
    /// included, while the model's signals need images the model did not learn from. The
    /// statistics vary from film to film, and a validation split of two or three films
    /// shows too little of that variation: thresholds calibrated on it alarm whenever a
    /// window holds mostly one film. Only `stats` of `images` is used; every image must
    /// carry it, and at least [`ReferenceConfig::min_observations`] are needed.
    ///
    /// The family's validated false-alarm rate then combines the two parts' resampled
    /// windows index by index, as if they were independent.
    ///
    /// Errors: those of [`ReferenceProfile::build`]; `images` without statistics
    /// ([`MonitorError::Incomplete`]), too few of them, or non-finite values; `observations`
    /// without statistics.
    pub fn build_with_image_stats(
        observations: &[Observation],
        images: &[Observation],
        labels: &[String],
        source: &str,
        cfg: &ReferenceConfig,
    ) -> Result<ReferenceProfile, MonitorError> {
        Self::build_parts(observations, Some(images), labels, source, cfg)
    }

    fn build_parts(
        observations: &[Observation],
        images: Option<&[Observation]>,
        labels: &[String],
        source: &str,
        cfg: &ReferenceConfig,
    ) -> Result<ReferenceProfile, MonitorError> {
        cfg.validate()?;
        if observations.is_empty() {
            return Err(MonitorError::Empty {
                what: "observations",
            });
        }
        if labels.is_empty() {
            return Err(MonitorError::Empty { what: "labels" });
        }
        let parts = check_observations(observations, labels.len())?;
        if observations.len() < cfg.min_observations() {
            return Err(MonitorError::TooFewObservations {
                needed: cfg.min_observations(),
                got: observations.len(),
                window: cfg.window,
            });
        }
        if let Some(images) = images {
            check_stat_images(images, parts.stats, cfg)?;
        }
        let stat_source = images.unwrap_or(observations);
        let (reference, holdout) = split(observations, cfg.window, cfg.max_holdout);
        let (stat_reference, stat_holdout) = match images {
            Some(images) => split(images, cfg.window, cfg.max_holdout),
            None => (reference.clone(), holdout.clone()),
        };
        let stats = parts
            .stats
            .then(|| stat_samples(&stat_reference, cfg.stat_sample));
        let embedding = parts
            .dim
            .map(|dim| {
                let ood_vectors = ood_vectors(observations, images, dim)?;
                embedding_profile(&reference, &ood_vectors, dim, cfg)
            })
            .transpose()?;
        let mut profile = ReferenceProfile {
            format: FORMAT,
            source: source.to_string(),
            images: observations.len(),
            stat_images: images.map(<[Observation]>::len),
            labels: labels.to_vec(),
            stats,
            embedding,
            predictions: prediction_profile(&reference, labels.len(), cfg.stat_sample),
            drift: DriftSettings {
                window: cfg.window,
                every: cfg.every,
                alpha: cfg.alpha,
                signal_alpha: cfg.alpha,
                block_length: cfg.block_length,
                calibration_windows: cfg.calibration_windows,
                validation_windows: cfg.validation_windows,
                holdout: holdout.len(),
                stat_holdout: images.map(|_| stat_holdout.len()),
                seed: cfg.seed,
                false_alarm_rate: 0.0,
                thresholds: Vec::new(),
            },
        };
        calibrate_thresholds(
            &mut profile,
            stat_source,
            &Parted {
                model: &holdout,
                stats: &stat_holdout,
            },
            cfg,
        )?;
        profile.validate()?;
        Ok(profile)
    }

    /// The profile as compact JSON (the bytes of [`REFERENCE_FILE`]).
    pub fn to_json(&self) -> Result<Vec<u8>, MonitorError> {
        serde_json::to_vec(self).map_err(|e| MonitorError::Internal(e.to_string()))
    }

    /// Reads and checks a profile: unknown fields, another format version, samples that are
    /// empty, unsorted or not finite, parts that do not fit together and unknown signals are
    /// errors.
    pub fn from_json(bytes: &[u8]) -> Result<ReferenceProfile, MonitorError> {
        let profile: ReferenceProfile =
            serde_json::from_slice(bytes).map_err(|e| MonitorError::Json(e.to_string()))?;
        profile.validate()?;
        Ok(profile)
    }

    /// The per-image out-of-distribution scorer, built once (when a bundle is loaded) and
    /// then called per request; `None` when the profile has no embedding part.
    pub fn ood_scorer(&self) -> Result<Option<OodScorer>, MonitorError> {
        self.embedding.as_ref().map(OodScorer::new).transpose()
    }

    /// The signals the thresholds name, in order (checked by `validate`).
    pub(crate) fn signals(&self) -> Result<Vec<(Signal, &SignalThreshold)>, MonitorError> {
        self.drift
            .thresholds
            .iter()
            .map(|t| {
                Signal::parse(&t.signal)
                    .map(|s| (s, t))
                    .ok_or_else(|| invalid(format!("unknown signal `{}`", t.signal)))
            })
            .collect()
    }

    /// Every cross-field rule of the format.
    fn validate(&self) -> Result<(), MonitorError> {
        if self.format != FORMAT {
            return Err(invalid(format!(
                "format {} is not supported (this version reads {FORMAT})",
                self.format
            )));
        }
        if self.labels.is_empty() {
            return Err(invalid("no labels".into()));
        }
        self.validate_stats()?;
        if let Some(e) = &self.embedding {
            e.validate()?;
        }
        self.validate_predictions()?;
        self.validate_drift()
    }

    fn validate_stats(&self) -> Result<(), MonitorError> {
        let Some(stats) = &self.stats else {
            return Ok(());
        };
        if stats.len() != STAT_NAMES.len() {
            return Err(invalid(format!(
                "{} statistics; expected {}",
                stats.len(),
                STAT_NAMES.len()
            )));
        }
        for (s, name) in stats.iter().zip(STAT_NAMES) {
            if s.name != name {
                return Err(invalid(format!(
                    "statistic `{}` where `{name}` belongs",
                    s.name
                )));
            }
            check_sorted_sample(&s.sample, name)?;
        }
        Ok(())
    }

    fn validate_predictions(&self) -> Result<(), MonitorError> {
        let p = &self.predictions;
        if p.class_shares.len() != self.labels.len() {
            return Err(invalid(format!(
                "{} class shares for {} labels",
                p.class_shares.len(),
                self.labels.len()
            )));
        }
        if p.class_shares.iter().any(|s| !(s.is_finite() && *s >= 0.0)) {
            return Err(invalid(
                "class shares must be finite and not negative".into(),
            ));
        }
        check_sorted_sample(&p.confidence, "confidence")
    }

    fn validate_drift(&self) -> Result<(), MonitorError> {
        let d = &self.drift;
        if d.window < 2 || d.every == 0 {
            return Err(invalid(
                "window must be at least 2 and every at least 1".into(),
            ));
        }
        for (name, a) in [("alpha", d.alpha), ("signal_alpha", d.signal_alpha)] {
            if !(a > 0.0 && a < 1.0) {
                return Err(invalid(format!("{name} must lie in (0, 1), got {a}")));
            }
        }
        for (signal, t) in self.signals()? {
            if t.test != signal.test() || !t.threshold.is_finite() {
                return Err(invalid(format!(
                    "signal `{}`: test must be `{}` and the threshold finite",
                    t.signal,
                    signal.test()
                )));
            }
            let present = match signal {
                Signal::Stat(_) => self.stats.is_some(),
                Signal::Embedding => self.embedding.is_some(),
                Signal::Classes => self.labels.len() >= 2,
                Signal::Confidence => true,
            };
            if !present {
                return Err(invalid(format!(
                    "signal `{}` has no reference data in the profile",
                    t.signal
                )));
            }
        }
        Ok(())
    }
}

impl EmbeddingProfile {
    fn validate(&self) -> Result<(), MonitorError> {
        if self.dim == 0 || self.sample.len() < 4 {
            return Err(invalid(
                "the embedding part needs a dimension and at least 4 vectors".into(),
            ));
        }
        if let Some(v) = self.sample.iter().find(|v| v.len() != self.dim) {
            return Err(invalid(format!(
                "an embedding of length {} in a profile of dimension {}",
                v.len(),
                self.dim
            )));
        }
        if self.sample.iter().flatten().any(|x| !x.is_finite()) {
            return Err(invalid("non-finite value in the embedding sample".into()));
        }
        if self.mean.len() != self.dim || self.mean.iter().any(|x| !x.is_finite()) {
            return Err(invalid(
                "the embedding mean must be finite, of length dim".into(),
            ));
        }
        if !(self.bandwidth.is_finite() && self.bandwidth > 0.0) {
            return Err(invalid("the bandwidth must be finite and positive".into()));
        }
        if self.mmd_vectors < 2 || self.mmd_vectors > self.sample.len() {
            return Err(invalid(format!(
                "mmd_vectors must lie in 2..={}, got {}",
                self.sample.len(),
                self.mmd_vectors
            )));
        }
        if !(self.ood_threshold.is_finite() && (0.0..=1.0).contains(&self.ood_quantile)) {
            return Err(invalid(
                "the OOD threshold must be finite and its quantile in [0, 1]".into(),
            ));
        }
        if let Some(fit) = &self.ood_model {
            if fit.mean.len() != self.dim {
                return Err(invalid(format!(
                    "an out-of-distribution model of dimension {} in a profile of dimension {}",
                    fit.mean.len(),
                    self.dim
                )));
            }
            MahalanobisModel::from_fit(fit, self.ood_threshold, self.ood_quantile)
                .map_err(|e| invalid(format!("the out-of-distribution model: {e}")))?;
        }
        Ok(())
    }
}

/// The per-image out-of-distribution scorer of a profile: the Mahalanobis model fitted once
/// on the profile's embedding sample, and the profile's threshold.
///
/// Fitting is deterministic, so the model equals the one [`ReferenceProfile::build`] took
/// the threshold from. Scoring one embedding is one triangular solve, `O(d²)` (about 8,000
/// multiply-adds at `d = 128`).
#[derive(Debug, Clone)]
pub struct OodScorer {
    model: MahalanobisModel,
}

impl OodScorer {
    /// The profile's scorer: its kept model, or for an older profile the model refitted from
    /// the first half of the sample (Ledoit-Wolf and Cholesky: milliseconds at 1,000 × 128).
    pub fn new(embedding: &EmbeddingProfile) -> Result<OodScorer, MonitorError> {
        let (threshold, quantile) = (embedding.ood_threshold, embedding.ood_quantile);
        let model = match &embedding.ood_model {
            Some(fit) => MahalanobisModel::from_fit(fit, threshold, quantile)?,
            None => {
                let half = embedding.sample.len().div_ceil(2);
                MahalanobisModel::with_threshold(&embedding.sample[..half], threshold, quantile)?
            }
        };
        Ok(OodScorer { model })
    }

    /// The distance of one embedding and whether it is past the threshold. Errors: a wrong
    /// length or non-finite values.
    pub fn score(&self, embedding: &[f32]) -> Result<OodScore, MonitorError> {
        Ok(self.model.score(embedding)?)
    }

    /// The distance above which an image is out of distribution.
    pub fn threshold(&self) -> f64 {
        self.model.threshold()
    }

    /// The embedding length the scorer expects.
    pub fn dim(&self) -> usize {
        self.model.dim()
    }
}

fn invalid(reason: String) -> MonitorError {
    MonitorError::InvalidProfile(reason)
}

fn check_sorted_sample(sample: &[f64], name: &str) -> Result<(), MonitorError> {
    if sample.is_empty() {
        return Err(invalid(format!("the `{name}` sample is empty")));
    }
    if sample.iter().any(|x| !x.is_finite()) {
        return Err(invalid(format!(
            "the `{name}` sample holds a non-finite value"
        )));
    }
    if sample.windows(2).any(|w| w[0] > w[1]) {
        return Err(invalid(format!("the `{name}` sample is not sorted")));
    }
    Ok(())
}

/// The median of a sorted, non-empty sample (0 for an empty one).
pub(crate) fn median_sorted(sorted: &[f64]) -> f64 {
    if sorted.is_empty() {
        0.0
    } else {
        quantile_sorted(sorted, 0.5)
    }
}

/// At most `cap` items, evenly spread over `items` (all of them when they fit).
pub(crate) fn thin<T>(items: &[T], cap: usize) -> Vec<&T> {
    let n = items.len();
    if n <= cap {
        return items.iter().collect();
    }
    (0..cap).map(|i| &items[i * n / cap]).collect()
}

/// Which parts the observations carry.
struct Parts {
    stats: bool,
    dim: Option<usize>,
}

fn check_observations(observations: &[Observation], labels: usize) -> Result<Parts, MonitorError> {
    let first = &observations[0];
    let parts = Parts {
        stats: first.stats.is_some(),
        dim: first.embedding.as_ref().map(Vec::len),
    };
    if parts.dim == Some(0) {
        return Err(MonitorError::EmbeddingDimension {
            index: 0,
            expected: 1,
            actual: 0,
        });
    }
    for (index, o) in observations.iter().enumerate() {
        check_prediction(index, o, labels)?;
        if o.stats.is_some() != parts.stats {
            return Err(MonitorError::Incomplete {
                index,
                part: "stats",
            });
        }
        if let Some(s) = &o.stats
            && s.values().iter().any(|v| !v.is_finite())
        {
            return Err(MonitorError::NonFinite {
                index,
                what: "image statistic",
            });
        }
        match (&o.embedding, parts.dim) {
            (None, None) => {}
            (Some(e), Some(dim)) => check_embedding(index, e, dim)?,
            _ => {
                return Err(MonitorError::Incomplete {
                    index,
                    part: "embedding",
                });
            }
        }
    }
    Ok(parts)
}

/// Images for the image statistics alone: every one carries finite statistics, and there
/// are enough of them to split and calibrate.
fn check_stat_images(
    images: &[Observation],
    observations_have_stats: bool,
    cfg: &ReferenceConfig,
) -> Result<(), MonitorError> {
    if !observations_have_stats {
        return Err(MonitorError::Incomplete {
            index: 0,
            part: "stats",
        });
    }
    if images.len() < cfg.min_observations() {
        return Err(MonitorError::TooFewObservations {
            needed: cfg.min_observations(),
            got: images.len(),
            window: cfg.window,
        });
    }
    for (index, o) in images.iter().enumerate() {
        let Some(s) = &o.stats else {
            return Err(MonitorError::Incomplete {
                index,
                part: "stats",
            });
        };
        if s.values().iter().any(|v| !v.is_finite()) {
            return Err(MonitorError::NonFinite {
                index,
                what: "image statistic",
            });
        }
    }
    Ok(())
}

/// The embeddings the out-of-distribution model is fitted on: those of the image-statistic
/// images when they carry any (then every one must, of length `dim`), else those of all the
/// observations. More images, and more films, show more of what in-distribution looks like;
/// the images the model was trained on are what "resembles the training images" means.
fn ood_vectors<'a>(
    observations: &'a [Observation],
    images: Option<&'a [Observation]>,
    dim: usize,
) -> Result<Vec<&'a [f32]>, MonitorError> {
    let Some(images) = images.filter(|i| i.iter().any(|o| o.embedding.is_some())) else {
        return Ok(observations
            .iter()
            .filter_map(|o| o.embedding.as_deref())
            .collect());
    };
    images
        .iter()
        .enumerate()
        .map(|(index, o)| {
            let e = o.embedding.as_deref().ok_or(MonitorError::Incomplete {
                index,
                part: "embedding",
            })?;
            check_embedding(index, e, dim)?;
            Ok(e)
        })
        .collect()
}

/// Probabilities match the labels, the predicted index is a label, confidence is finite.
pub(crate) fn check_prediction(
    index: usize,
    o: &Observation,
    labels: usize,
) -> Result<(), MonitorError> {
    if o.probabilities.len() != labels {
        return Err(MonitorError::LabelMismatch {
            index,
            expected: labels,
            actual: o.probabilities.len(),
        });
    }
    if o.predicted >= labels {
        return Err(MonitorError::PredictedOutOfRange {
            index,
            predicted: o.predicted,
            labels,
        });
    }
    if !o.confidence.is_finite() {
        return Err(MonitorError::NonFinite {
            index,
            what: "confidence",
        });
    }
    Ok(())
}

/// An embedding of length `dim` with finite values.
pub(crate) fn check_embedding(index: usize, e: &[f32], dim: usize) -> Result<(), MonitorError> {
    if e.len() != dim {
        return Err(MonitorError::EmbeddingDimension {
            index,
            expected: dim,
            actual: e.len(),
        });
    }
    if e.iter().any(|x| !x.is_finite()) {
        return Err(MonitorError::NonFinite {
            index,
            what: "embedding value",
        });
    }
    Ok(())
}

/// Even stretches of `window` observations form the reference part, odd ones the held-out
/// part (at most `max_holdout` observations: whole stretches, evenly spread).
fn split(
    observations: &[Observation],
    window: usize,
    max_holdout: usize,
) -> (Vec<&Observation>, Vec<&Observation>) {
    let chunks: Vec<&[Observation]> = observations.chunks(window).collect();
    let reference = chunks.iter().step_by(2).flat_map(|c| c.iter()).collect();
    let odd: Vec<&[Observation]> = chunks.iter().skip(1).step_by(2).copied().collect();
    let holdout = thin(&odd, max_holdout / window)
        .into_iter()
        .flat_map(|c| c.iter())
        .collect();
    (reference, holdout)
}

fn stat_samples(reference: &[&Observation], cap: usize) -> Vec<StatSample> {
    let values: Vec<[f64; 9]> = reference
        .iter()
        .filter_map(|o| o.stats.map(|s| s.values()))
        .collect();
    let kept = thin(&values, cap);
    STAT_NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut sample: Vec<f64> = kept.iter().map(|v| v[i]).collect();
            sample.sort_by(f64::total_cmp);
            StatSample {
                name: (*name).to_string(),
                sample,
            }
        })
        .collect()
}

/// The embedding part: the sample, its mean and MMD bandwidth from the reference part, and
/// the out-of-distribution model fitted on `ood_vectors` (in their given order, so that the
/// cross-fitting's contiguous folds keep one film's images together).
fn embedding_profile(
    reference: &[&Observation],
    ood_vectors: &[&[f32]],
    dim: usize,
    cfg: &ReferenceConfig,
) -> Result<EmbeddingProfile, MonitorError> {
    let all: Vec<&Vec<f32>> = reference
        .iter()
        .filter_map(|o| o.embedding.as_ref())
        .collect();
    let sample: Vec<Vec<f32>> = thin(&all, cfg.embedding_sample)
        .into_iter()
        .map(|v| (*v).clone())
        .collect();
    let mut mean = vec![0.0f64; dim];
    for v in &sample {
        for (m, &x) in mean.iter_mut().zip(v) {
            *m += f64::from(x);
        }
    }
    let count = sample.len().max(1) as f64;
    mean.iter_mut().for_each(|m| *m /= count);
    // The median heuristic over all pairs of the sample: mmd_test pools its two inputs.
    let half = sample.len() / 2;
    let bandwidth = mmd_test(
        &sample[..half],
        &sample[half..],
        &MmdConfig {
            permutations: 0,
            seed: 0,
            bandwidth: None,
        },
    )?
    .bandwidth;
    let ood = MahalanobisModel::fit(
        ood_vectors,
        &MahalanobisConfig {
            quantile: cfg.ood_quantile,
            threshold_from: OOD_CROSS_FIT,
        },
    )?;
    Ok(EmbeddingProfile {
        dim,
        mmd_vectors: cfg.mmd_vectors.min(sample.len()),
        sample,
        mean,
        bandwidth,
        ood_threshold: ood.threshold(),
        ood_quantile: cfg.ood_quantile,
        ood_model: Some(ood.to_fit()),
    })
}

fn prediction_profile(reference: &[&Observation], labels: usize, cap: usize) -> PredictionProfile {
    let mut counts = vec![0usize; labels];
    for o in reference {
        counts[o.predicted] += 1;
    }
    let n = reference.len().max(1) as f64;
    let all: Vec<f64> = reference.iter().map(|o| f64::from(o.confidence)).collect();
    let mut confidence: Vec<f64> = thin(&all, cap).into_iter().copied().collect();
    confidence.sort_by(f64::total_cmp);
    PredictionProfile {
        class_shares: counts.iter().map(|&c| c as f64 / n).collect(),
        confidence,
    }
}

/// Class counts of the observations at `positions` (predicted indices already checked).
pub(crate) fn class_counts<'a>(
    predicted: impl Iterator<Item = &'a usize>,
    labels: usize,
) -> Vec<u64> {
    let mut counts = vec![0u64; labels];
    for &p in predicted {
        if let Some(c) = counts.get_mut(p) {
            *c += 1;
        }
    }
    counts
}

#[cfg(test)]
mod window_choice_tests {
    use super::ReferenceConfig;

    #[test]
    fn the_window_shrinks_to_what_the_images_allow() {
        assert_eq!(
            ReferenceConfig::for_images(5_000).map(|c| c.window),
            Some(200)
        );
        assert_eq!(
            ReferenceConfig::for_images(509).map(|c| (c.window, c.every)),
            Some((125, 50))
        );
        assert_eq!(
            ReferenceConfig::for_images(120).map(|c| (c.window, c.every)),
            Some((25, 12))
        );
        assert!(ReferenceConfig::for_images(99).is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::super::synthetic::{DIM, Shift, config, labels, observations, profile};
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn a_false_alarm_target_per_10k_images_sets_alpha_and_enough_calibration_windows() {
        let cfg = ReferenceConfig::default().with_alarms_per_10k(0.5).unwrap();
        // a window every 50 images: 200 evaluations per 10,000 images
        assert!((cfg.alpha - 0.0025).abs() < 1e-15);
        assert_eq!(cfg.calibration_windows, 8000);
        let one = ReferenceConfig::default().with_alarms_per_10k(1.0).unwrap();
        assert_eq!(one, ReferenceConfig::default());
        for bad in [0.0, -1.0, f64::NAN, 200.0, f64::INFINITY] {
            assert!(
                matches!(
                    ReferenceConfig::default().with_alarms_per_10k(bad),
                    Err(MonitorError::InvalidConfig { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn profile_has_every_part_and_calibrated_thresholds() {
        let p = profile();
        assert_eq!(p.format, FORMAT);
        assert_eq!(p.images, 800);
        let stats = p.stats.as_ref().unwrap();
        assert_eq!(stats.len(), 9);
        assert!(stats.iter().all(|s| s.sample.len() == 400));
        let e = p.embedding.as_ref().unwrap();
        assert_eq!((e.dim, e.sample.len(), e.mmd_vectors), (DIM, 200, 100));
        assert!(e.bandwidth > 0.0 && e.ood_threshold > 0.0);
        assert_eq!(p.drift.holdout, 400);
        // width, height and bit depth never change: fixed, not calibrated.
        let names: Vec<(&str, bool)> = p
            .drift
            .thresholds
            .iter()
            .map(|t| (t.signal.as_str(), t.calibrated))
            .collect();
        assert_eq!(names.len(), 12);
        assert!(names.contains(&("stat.width", false)));
        assert!(names.contains(&("stat.sharpness", true)));
        assert!(names.contains(&("embedding.mmd", true)));
        assert!((p.drift.signal_alpha - 0.05 / 9.0).abs() < 1e-12);
        assert!(
            p.drift
                .thresholds
                .iter()
                .all(|t| t.calibrated == (t.threshold > 0.0))
        );
        assert!(
            p.drift.false_alarm_rate <= 0.05 + 0.05,
            "{}",
            p.drift.false_alarm_rate
        );
    }

    #[test]
    fn json_round_trip_and_strict_parsing() {
        let p = profile();
        let bytes = p.to_json().unwrap();
        let back = ReferenceProfile::from_json(&bytes).unwrap();
        assert_eq!(back, p);

        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["junk"] = serde_json::json!(1);
        let e = ReferenceProfile::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("junk"), "{e}");
        assert_eq!(e.kind(), ErrorKind::Invalid);

        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["drift"]["extra"] = serde_json::json!(true);
        assert!(ReferenceProfile::from_json(&serde_json::to_vec(&v).unwrap()).is_err());

        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["format"] = serde_json::json!(2);
        let e = ReferenceProfile::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("format 2"), "{e}");

        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["drift"]["thresholds"][0]["signal"] = serde_json::json!("stat.colour");
        let e = ReferenceProfile::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("stat.colour"), "{e}");

        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["stats"][0]["sample"] = serde_json::json!([0.3, 0.1]);
        assert!(ReferenceProfile::from_json(&serde_json::to_vec(&v).unwrap()).is_err());

        let e = ReferenceProfile::from_json(b"not json").unwrap_err();
        assert!(matches!(e, MonitorError::Json(_)), "{e}");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let cfg = config();
        let labels = labels();
        let build = |obs: &[Observation], labels: &[String]| {
            ReferenceProfile::build(obs, labels, "t", &cfg).unwrap_err()
        };
        assert!(matches!(build(&[], &labels), MonitorError::Empty { .. }));
        let obs = observations(3, 800, DIM, Shift::NONE);
        assert!(matches!(build(&obs, &[]), MonitorError::Empty { .. }));
        assert!(matches!(
            build(&obs[..100], &labels),
            MonitorError::TooFewObservations {
                needed: 160,
                got: 100,
                ..
            }
        ));
        let three = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        assert!(matches!(
            build(&obs, &three),
            MonitorError::LabelMismatch {
                index: 0,
                expected: 3,
                actual: 2
            }
        ));
        let mut short = obs.clone();
        short[17].embedding = Some(vec![0.0; DIM - 1]);
        assert!(matches!(
            build(&short, &labels),
            MonitorError::EmbeddingDimension { index: 17, .. }
        ));
        let mut missing = obs.clone();
        missing[5].stats = None;
        assert!(matches!(
            build(&missing, &labels),
            MonitorError::Incomplete {
                index: 5,
                part: "stats"
            }
        ));
        let mut nan = obs.clone();
        nan[9].confidence = f32::NAN;
        assert!(matches!(
            build(&nan, &labels),
            MonitorError::NonFinite { index: 9, .. }
        ));
        let few = ReferenceConfig {
            calibration_windows: 50,
            ..config()
        };
        let e = ReferenceProfile::build(&obs, &labels, "t", &few).unwrap_err();
        assert!(e.to_string().contains("need at least 179"), "{e}");
        assert_eq!(e.kind(), ErrorKind::Invalid);
    }

    #[test]
    fn observations_without_embeddings_or_stats_give_a_smaller_profile() {
        let mut obs = observations(3, 800, DIM, Shift::NONE);
        for o in &mut obs {
            o.embedding = None;
            o.stats = None;
        }
        let p = ReferenceProfile::build(&obs, &labels(), "t", &config()).unwrap();
        assert!(p.stats.is_none() && p.embedding.is_none());
        assert!(p.ood_scorer().unwrap().is_none());
        let names: Vec<&str> = p
            .drift
            .thresholds
            .iter()
            .map(|t| t.signal.as_str())
            .collect();
        assert_eq!(names, ["predictions.classes", "predictions.confidence"]);
        assert!((p.drift.signal_alpha - 0.025).abs() < 1e-12);
    }

    #[test]
    fn image_statistics_can_come_from_other_images() {
        let obs = observations(7, 800, DIM, Shift::NONE);
        // More films, brighter ones: the statistics follow them, the model's signals do not.
        let brighter = Shift {
            brightness: 0.2,
            ..Shift::NONE
        };
        let images = observations(11, 1200, DIM, brighter);
        let p = ReferenceProfile::build_with_image_stats(&obs, &images, &labels(), "t", &config())
            .unwrap();
        let plain = profile();
        assert_eq!(p.stat_images, Some(1200));
        assert_eq!(p.images, 800);
        assert_eq!(p.drift.stat_holdout, Some(600));
        assert_eq!(p.drift.holdout, plain.drift.holdout);
        let mean = |p: &ReferenceProfile| p.stats.as_ref().unwrap()[0].median();
        assert!((mean(&p) - 0.7).abs() < 0.03, "{}", mean(&p));
        assert!((mean(&plain) - 0.5).abs() < 0.03, "{}", mean(&plain));
        // The model's signals are the observations'; the out-of-distribution model is
        // fitted on every image's embedding.
        let (e, plain_e) = (
            p.embedding.as_ref().unwrap(),
            plain.embedding.as_ref().unwrap(),
        );
        assert_eq!(
            (&e.sample, e.bandwidth),
            (&plain_e.sample, plain_e.bandwidth)
        );
        assert_eq!(e.ood_model.as_ref().unwrap().n_fit, 1200);
        assert_eq!(plain_e.ood_model.as_ref().unwrap().n_fit, 800);
        assert_eq!(p.predictions, plain.predictions);
        let threshold = |p: &ReferenceProfile, name: &str| {
            p.drift
                .thresholds
                .iter()
                .find(|t| t.signal == name)
                .unwrap()
                .threshold
        };
        assert_eq!(
            threshold(&p, "embedding.mmd"),
            threshold(&plain, "embedding.mmd")
        );
        // A window of the model's (darker) observations now drifts on brightness alone.
        let window = observations(21, 40, DIM, Shift::NONE);
        let r = super::super::evaluate(&p, &window, 1).unwrap();
        assert!(r.drifted.contains(&"stat.mean".to_string()), "{r:?}");
        assert!(!r.drifted.contains(&"embedding.mmd".to_string()), "{r:?}");
        // The new fields round-trip; a profile without them still parses.
        let back = ReferenceProfile::from_json(&p.to_json().unwrap()).unwrap();
        assert_eq!(back, p);
        let old = plain.to_json().unwrap();
        assert!(!String::from_utf8_lossy(&old).contains("stat_images"));
        assert_eq!(ReferenceProfile::from_json(&old).unwrap().stat_images, None);
    }

    #[test]
    fn image_statistics_from_other_images_are_checked() {
        let obs = observations(7, 800, DIM, Shift::NONE);
        let mut images = observations(11, 800, DIM, Shift::NONE);
        images[5].stats = None;
        let e = ReferenceProfile::build_with_image_stats(&obs, &images, &labels(), "t", &config())
            .unwrap_err();
        assert!(e.to_string().contains("stats"), "{e}");
        assert_eq!(e.kind(), ErrorKind::Invalid);
        let few = &observations(11, 100, DIM, Shift::NONE);
        let e = ReferenceProfile::build_with_image_stats(&obs, few, &labels(), "t", &config())
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        let mut bare = obs.clone();
        bare.iter_mut().for_each(|o| o.stats = None);
        let images = observations(11, 800, DIM, Shift::NONE);
        let e = ReferenceProfile::build_with_image_stats(&bare, &images, &labels(), "t", &config())
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
    }

    #[test]
    fn ood_scorer_flags_far_embeddings_and_few_typical_ones() {
        let p = profile();
        let scorer = p.ood_scorer().unwrap().unwrap();
        assert_eq!(scorer.dim(), DIM);
        assert_eq!(
            scorer.threshold(),
            p.embedding.as_ref().unwrap().ood_threshold
        );
        let far = scorer.score(&[8.0; DIM]).unwrap();
        assert!(far.out_of_distribution, "{far:?}");
        let fresh = observations(11, 500, DIM, Shift::NONE);
        let flagged = fresh
            .iter()
            .filter(|o| {
                scorer
                    .score(o.embedding.as_ref().unwrap())
                    .unwrap()
                    .out_of_distribution
            })
            .count();
        // The 0.99 quantile of 100 held-out distances: about 1% flagged, noisy.
        assert!(flagged <= 25, "{flagged} of 500 typical embeddings flagged");
        assert!(scorer.score(&[0.0; DIM - 1]).is_err());
        // Loading the profile back gives the same scorer.
        let back = ReferenceProfile::from_json(&p.to_json().unwrap()).unwrap();
        let again = back.ood_scorer().unwrap().unwrap();
        assert_eq!(
            again.score(&[1.0; DIM]).unwrap(),
            scorer.score(&[1.0; DIM]).unwrap()
        );
    }

    #[test]
    fn the_ood_model_is_fitted_on_every_observation_and_older_profiles_refit_half_the_sample() {
        let p = profile();
        let e = p.embedding.as_ref().unwrap();
        let fit = e.ood_model.as_ref().unwrap();
        assert_eq!((fit.n_fit, fit.mean.len()), (p.images, DIM));
        assert_eq!(fit.factor.len(), DIM * (DIM + 1) / 2);
        // A profile from before the kept model: the first half of the sample, as it was.
        let mut old = p.clone();
        old.embedding.as_mut().unwrap().ood_model = None;
        let json = old.to_json().unwrap();
        assert!(!String::from_utf8_lossy(&json).contains("ood_model"));
        let old = ReferenceProfile::from_json(&json).unwrap();
        let scorer = old.ood_scorer().unwrap().unwrap();
        let half = e.sample.len().div_ceil(2);
        let by_hand =
            MahalanobisModel::with_threshold(&e.sample[..half], e.ood_threshold, e.ood_quantile)
                .unwrap();
        let x = [0.5f32; DIM];
        assert_eq!(scorer.score(&x).unwrap(), by_hand.score(&x).unwrap());
        // A kept model that does not fit the profile is refused on load.
        let load_broken = |breaks: fn(&mut MahalanobisFit)| {
            let mut bad = p.clone();
            breaks(bad.embedding.as_mut().unwrap().ood_model.as_mut().unwrap());
            ReferenceProfile::from_json(&bad.to_json().unwrap()).unwrap_err()
        };
        let err = load_broken(|fit| {
            fit.mean.pop();
        });
        assert!(
            err.to_string().contains("out-of-distribution model"),
            "{err}"
        );
        load_broken(|fit| fit.factor[0] = -1.0);
    }

    #[test]
    fn signal_names_round_trip() {
        for s in
            (0..9)
                .map(Signal::Stat)
                .chain([Signal::Embedding, Signal::Classes, Signal::Confidence])
        {
            assert_eq!(Signal::parse(&s.name()), Some(s));
        }
        assert_eq!(Signal::parse("stat.colour"), None);
        assert_eq!(thin(&[1, 2, 3, 4], 2), [&1, &3]);
    }

    /// Cost at the default settings: `cargo test -p vigil-core --release --lib
    /// build_and_evaluate_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn build_and_evaluate_cost() {
        let obs = observations(1, 3000, 128, Shift::NONE);
        let cfg = ReferenceConfig::default();
        let t = std::time::Instant::now();
        let p = ReferenceProfile::build(&obs, &labels(), "cost", &cfg).unwrap();
        let build = t.elapsed();
        let live = observations(2, 200 * 20, 128, Shift::NONE);
        let t = std::time::Instant::now();
        let mut alarms = 0;
        for (k, w) in live.chunks(200).enumerate() {
            alarms += usize::from(
                super::super::window::evaluate(&p, w, k as u64)
                    .unwrap()
                    .drift,
            );
        }
        let per_window = t.elapsed() / 20;
        let t = std::time::Instant::now();
        let scorer = p.ood_scorer().unwrap().unwrap();
        let fit = t.elapsed();
        let t = std::time::Instant::now();
        for o in &live {
            scorer.score(o.embedding.as_ref().unwrap()).unwrap();
        }
        let score = t.elapsed() / live.len() as u32;
        println!(
            "build {build:?} ({} signals, family false-alarm rate {:.4}, {} KB JSON); evaluate \
             {per_window:?} per 200-image window ({alarms}/20 alarms); OOD scorer fit {fit:?}, \
             score {score:?} per image",
            p.drift.thresholds.len(),
            p.drift.false_alarm_rate,
            p.to_json().unwrap().len() / 1024
        );
    }
}
