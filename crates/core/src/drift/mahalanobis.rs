//! Per-image out-of-distribution score: the Mahalanobis distance of an image's embedding
//! from the reference embeddings, with a threshold taken from the reference.

use serde::{Deserialize, Serialize};

use super::{DriftError, Result, quantile_sorted, sorted};

/// Settings of [`MahalanobisModel::fit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MahalanobisConfig {
    /// Quantile of reference distances used as the threshold: an in-distribution image is
    /// flagged with probability about `1 - quantile`.
    pub quantile: f64,
    /// Which distances the threshold is taken from.
    pub threshold_from: ThresholdFrom,
}

impl Default for MahalanobisConfig {
    fn default() -> Self {
        MahalanobisConfig {
            quantile: 0.99,
            threshold_from: ThresholdFrom::CrossFit {
                folds: 5,
                block: 25,
            },
        }
    }
}

/// Where [`MahalanobisModel::fit`] takes the distances its threshold is a quantile of.
///
/// Distances of the vectors a model was fitted on are systematically smaller than those of
/// new images (the fit has adapted to them, markedly so when `d` is not small against
/// `n`), so a threshold from them flags more than `1 - quantile` of new in-distribution
/// images. Cross-fitting takes it from vectors the model did not see. (Profiles built before
/// 2026-11-27 fitted the first half of their sample and took the threshold from the second;
/// [`MahalanobisModel::with_threshold`] refits them.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdFrom {
    /// Fit on every vector and take the threshold from the same vectors: optimistic.
    InSample,
    /// Fit on every vector; the threshold comes from out-of-fold distances: the reference
    /// is cut, in its given order, into runs of `block` vectors, the runs are dealt to
    /// `folds` folds in turn, and each fold is scored by a model fitted on the others.
    /// Every vector gives a held-out distance, and the final model is fitted on all of
    /// them. Runs keep neighbouring (correlated) images together, so a held-out image's
    /// near-twin is not in the fit that scores it; dealing them out keeps every fold a
    /// mix of the whole reference, so a fold is not one class or one batch that the
    /// others never show. The fold models see `(folds - 1) / folds` of the data, so their
    /// distances are, if anything, a little larger than the final model's: the threshold
    /// errs on the side of fewer flags.
    CrossFit {
        /// Number of folds, at least 2.
        folds: usize,
        /// Consecutive vectors kept in one fold, at least 1 (fewer when the reference is
        /// shorter than `folds × block`).
        block: usize,
    },
}

/// A Ledoit-Wolf shrunk covariance estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShrunkCovariance {
    /// The sample mean.
    pub mean: Vec<f64>,
    /// `(1 - δ) S + δ μ I`, `d × d`, row-major.
    pub covariance: Vec<f64>,
    /// The shrinkage intensity `δ` in `[0, 1]`.
    pub shrinkage: f64,
    /// `μ = tr(S) / d`, the average variance (the target's scale).
    pub mu: f64,
}

/// Mean and Ledoit-Wolf shrunk covariance of a set of vectors.
///
/// Formula (Ledoit & Wolf, "A well-conditioned estimator for large-dimensional covariance
/// matrices", J. Multivariate Anal. 2004, lemma 3.2 and theorem 3.1; the same estimate as
/// scikit-learn's `ledoit_wolf`): with centred rows `x_k` (`n` of them, dimension `d`),
/// `S = Σ x_k x_kᵀ / n`, `μ = tr(S) / d`, `⟨A, B⟩ = tr(A Bᵀ) / d`,
/// - `δ² = ‖S - μI‖²`, the distance of `S` from the target `μI`;
/// - `b̄² = Σ_k ‖x_k x_kᵀ - S‖² / n² = (Σ_k |x_k|⁴ / n - ‖S‖²_F) / (d n)`, the estimation
///   noise in `S`; `b² = min(b̄², δ²)`;
/// - shrinkage `b² / δ²`, and `Σ = (1 - b²/δ²) S + (b²/δ²) μ I`.
///
/// `Σ` is positive definite whenever `μ > 0` and the shrinkage is positive, even with fewer
/// images than dimensions, which a plain sample covariance is not. When `S` already equals
/// `μI` the shrinkage is 1 (the two coincide).
///
/// Cost: `n d² / 2` multiply-adds and `d²` floats of memory (d = 512: 2 MB). Measured with
/// the ignored test `cost_fit_n2000_d512` (release build, 2-core AMD EPYC VM): a
/// [`MahalanobisModel::fit`] on 2000 vectors of dimension 512 (this, a Cholesky factor and
/// 1000 held-out distances) takes about 150 ms; one distance about 0.1 ms.
///
/// Errors: fewer than 2 vectors, length 0 or mismatched lengths, non-finite values.
pub fn ledoit_wolf<R: AsRef<[f32]>>(samples: &[R]) -> Result<ShrunkCovariance> {
    let n = samples.len();
    if n < 2 {
        return Err(DriftError::TooFewSamples {
            which: "reference",
            needed: 2,
            got: n,
        });
    }
    let d = check_vectors("reference", samples)?;
    let nf = n as f64;
    let mut mean = vec![0.0; d];
    for s in samples {
        for (m, &x) in mean.iter_mut().zip(s.as_ref()) {
            *m += f64::from(x);
        }
    }
    mean.iter_mut().for_each(|m| *m /= nf);

    // Upper triangle of Σ x xᵀ, and Σ |x|⁴, in one pass.
    let mut s_mat = vec![0.0; d * d];
    let mut sum_norm4 = 0.0;
    let mut c = vec![0.0; d];
    for s in samples {
        for ((ci, &x), m) in c.iter_mut().zip(s.as_ref()).zip(&mean) {
            *ci = f64::from(x) - m;
        }
        sum_norm4 += c.iter().map(|v| v * v).sum::<f64>().powi(2);
        for i in 0..d {
            let ci = c[i];
            let row = &mut s_mat[i * d..(i + 1) * d];
            for j in i..d {
                row[j] += ci * c[j];
            }
        }
    }
    for i in 0..d {
        for j in i..d {
            let v = s_mat[i * d + j] / nf;
            s_mat[i * d + j] = v;
            s_mat[j * d + i] = v;
        }
    }
    let df = d as f64;
    let mu = (0..d).map(|i| s_mat[i * d + i]).sum::<f64>() / df;
    let fro2: f64 = s_mat.iter().map(|v| v * v).sum();
    let delta2 = (fro2 - df * mu * mu) / df;
    let b_bar2 = (sum_norm4 / nf - fro2) / (df * nf);
    let shrinkage = if delta2 > 0.0 {
        (b_bar2.min(delta2) / delta2).clamp(0.0, 1.0)
    } else {
        1.0
    };
    for v in &mut s_mat {
        *v *= 1.0 - shrinkage;
    }
    for i in 0..d {
        s_mat[i * d + i] += shrinkage * mu;
    }
    Ok(ShrunkCovariance {
        mean,
        covariance: s_mat,
        shrinkage,
        mu,
    })
}

/// The score of one embedding.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OodScore {
    /// Mahalanobis distance `sqrt((x - m)ᵀ Σ⁻¹ (x - m))`.
    pub distance: f64,
    /// The model's threshold.
    pub threshold: f64,
    /// `distance > threshold`: the image does not resemble the reference.
    pub out_of_distribution: bool,
}

/// A fitted model's mean and covariance factor, as a reference profile keeps them: enough to
/// score without the vectors it was fitted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MahalanobisFit {
    /// Vectors the mean and covariance were fitted on.
    pub n_fit: usize,
    /// The Ledoit-Wolf shrinkage intensity.
    pub shrinkage: f64,
    /// The fitted mean.
    pub mean: Vec<f64>,
    /// The lower Cholesky factor of the shrunk covariance, packed row by row (row `i` holds
    /// its first `i + 1` entries): `d (d + 1) / 2` values.
    pub factor: Vec<f64>,
}

/// A fitted Mahalanobis out-of-distribution scorer.
#[derive(Debug, Clone, PartialEq)]
pub struct MahalanobisModel {
    mean: Vec<f64>,
    /// Lower Cholesky factor `L` of the shrunk covariance (`Σ = L Lᵀ`), row-major.
    chol: Vec<f64>,
    shrinkage: f64,
    threshold: f64,
    quantile: f64,
    n_fit: usize,
    n_threshold: usize,
}

impl MahalanobisModel {
    /// Fits mean and Ledoit-Wolf covariance ([`ledoit_wolf`]), factors it (Cholesky), and
    /// sets the threshold to the `quantile` of reference distances (linear interpolation),
    /// taken as `config.threshold_from` says. The quantile needs enough distances to mean
    /// something: at 0.99, several hundred.
    ///
    /// Errors: too few vectors (2 in sample; `folds` and at least 4 for cross-fitting),
    /// fewer than 2 folds, a block of 0, mismatched or empty vectors, non-finite values,
    /// `quantile` outside `[0, 1]`, and [`DriftError::NotPositiveDefinite`] when the
    /// covariance cannot be factored (a reference whose embeddings are all identical, so
    /// `μ = 0`).
    pub fn fit<R: AsRef<[f32]>>(reference: &[R], config: &MahalanobisConfig) -> Result<Self> {
        if !(0.0..=1.0).contains(&config.quantile) {
            return Err(DriftError::InvalidParameter {
                name: "quantile",
                reason: format!("must lie in [0, 1], got {}", config.quantile),
            });
        }
        let needed = match config.threshold_from {
            ThresholdFrom::InSample => 2,
            ThresholdFrom::CrossFit { folds, .. } if folds < 2 => {
                return Err(DriftError::InvalidParameter {
                    name: "folds",
                    reason: format!("must be at least 2, got {folds}"),
                });
            }
            ThresholdFrom::CrossFit { block: 0, .. } => {
                return Err(DriftError::InvalidParameter {
                    name: "block",
                    reason: "must be at least 1".into(),
                });
            }
            ThresholdFrom::CrossFit { folds, .. } => folds.max(4),
        };
        check_reference(reference, needed)?;
        let (model, distances) = match config.threshold_from {
            ThresholdFrom::InSample => {
                let model = Self::fit_unthresholded(reference, config.quantile)?;
                let distances = model.distances(reference)?;
                (model, distances)
            }
            ThresholdFrom::CrossFit { folds, block } => {
                // Short references get shorter runs, so that every fold holds vectors.
                let block = block.min(reference.len() / folds).max(1);
                let fold_of = |i: usize| (i / block) % folds;
                let mut distances = Vec::with_capacity(reference.len());
                for f in 0..folds {
                    let (mut held, mut fit) = (Vec::new(), Vec::new());
                    for (i, v) in reference.iter().enumerate() {
                        let part = if fold_of(i) == f { &mut held } else { &mut fit };
                        part.push(v.as_ref());
                    }
                    let fold_model = Self::fit_unthresholded(&fit, config.quantile)?;
                    distances.extend(fold_model.distances(&held)?);
                }
                (
                    Self::fit_unthresholded(reference, config.quantile)?,
                    distances,
                )
            }
        };
        let threshold = quantile_sorted(&sorted(&distances), config.quantile);
        Ok(MahalanobisModel {
            threshold,
            n_threshold: distances.len(),
            ..model
        })
    }

    /// Refits a model whose threshold is already known (one kept in a reference profile):
    /// mean and covariance of `fit`, the given `threshold` and the `quantile` it was taken
    /// at. Errors: fewer than 2 vectors, bad vectors as [`MahalanobisModel::fit`], and a
    /// threshold that is not a positive number.
    pub fn with_threshold<R: AsRef<[f32]>>(
        fit: &[R],
        threshold: f64,
        quantile: f64,
    ) -> Result<Self> {
        check_threshold(threshold)?;
        check_reference(fit, 2)?;
        Ok(MahalanobisModel {
            threshold,
            ..Self::fit_unthresholded(fit, quantile)?
        })
    }

    /// The fitted mean and factor, to keep (see [`MahalanobisModel::from_fit`]).
    pub fn to_fit(&self) -> MahalanobisFit {
        let d = self.mean.len();
        MahalanobisFit {
            n_fit: self.n_fit,
            shrinkage: self.shrinkage,
            mean: self.mean.clone(),
            factor: (0..d)
                .flat_map(|i| self.chol[i * d..=i * d + i].iter().copied())
                .collect(),
        }
    }

    /// A kept fit ([`MahalanobisModel::to_fit`]) with its `threshold` and `quantile`.
    /// Errors: an empty mean, a factor of the wrong length, non-finite values, a diagonal
    /// entry that is not positive, and a threshold that is not a positive number.
    pub fn from_fit(fit: &MahalanobisFit, threshold: f64, quantile: f64) -> Result<Self> {
        let d = fit.mean.len();
        let invalid = |reason: String| DriftError::InvalidParameter {
            name: "fit",
            reason,
        };
        if d == 0 || fit.factor.len() != d * (d + 1) / 2 {
            return Err(invalid(format!(
                "a factor of {} values for a mean of {d} (needs d(d+1)/2 = {})",
                fit.factor.len(),
                d * (d + 1) / 2
            )));
        }
        if fit.mean.iter().chain(&fit.factor).any(|v| !v.is_finite()) {
            return Err(invalid("non-finite values".into()));
        }
        check_threshold(threshold)?;
        let mut chol = vec![0.0; d * d];
        let mut packed = fit.factor.iter();
        for i in 0..d {
            for j in 0..=i {
                chol[i * d + j] = *packed.next().expect("length checked above");
            }
            if chol[i * d + i] <= 0.0 {
                return Err(DriftError::NotPositiveDefinite { pivot: i });
            }
        }
        Ok(MahalanobisModel {
            mean: fit.mean.clone(),
            chol,
            shrinkage: fit.shrinkage,
            threshold,
            quantile,
            n_fit: fit.n_fit,
            n_threshold: 0,
        })
    }

    /// Mean, covariance and factor of `fit` (checked by the caller); no threshold yet.
    fn fit_unthresholded<R: AsRef<[f32]>>(fit: &[R], quantile: f64) -> Result<Self> {
        let cov = ledoit_wolf(fit)?;
        let d = cov.mean.len();
        let mut chol = cov.covariance;
        cholesky_in_place(&mut chol, d)?;
        Ok(MahalanobisModel {
            mean: cov.mean,
            chol,
            shrinkage: cov.shrinkage,
            threshold: f64::INFINITY,
            quantile,
            n_fit: fit.len(),
            n_threshold: 0,
        })
    }

    fn distances<R: AsRef<[f32]>>(&self, vectors: &[R]) -> Result<Vec<f64>> {
        vectors.iter().map(|v| self.distance(v.as_ref())).collect()
    }

    /// Mahalanobis distance `sqrt((x - m)ᵀ Σ⁻¹ (x - m))`, computed as `|L⁻¹ (x - m)|` by
    /// forward substitution, `O(d²)`. Errors: wrong length, non-finite values.
    pub fn distance(&self, x: &[f32]) -> Result<f64> {
        let d = self.mean.len();
        if x.len() != d {
            return Err(DriftError::DimensionMismatch {
                expected: d,
                actual: x.len(),
            });
        }
        if let Some(index) = x.iter().position(|v| !v.is_finite()) {
            return Err(DriftError::NonFinite {
                which: "current",
                index,
            });
        }
        let mut z = vec![0.0; d];
        let mut sum2 = 0.0;
        for i in 0..d {
            let row = &self.chol[i * d..(i + 1) * d];
            let partial: f64 = row[..i].iter().zip(&z[..i]).map(|(l, zj)| l * zj).sum();
            z[i] = (f64::from(x[i]) - self.mean[i] - partial) / row[i];
            sum2 += z[i] * z[i];
        }
        Ok(sum2.sqrt())
    }

    /// The distance of `x` with the verdict against the threshold.
    pub fn score(&self, x: &[f32]) -> Result<OodScore> {
        let distance = self.distance(x)?;
        Ok(OodScore {
            distance,
            threshold: self.threshold,
            out_of_distribution: distance > self.threshold,
        })
    }

    /// The distance above which an image is out of distribution.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The quantile the threshold was taken at.
    pub fn quantile(&self) -> f64 {
        self.quantile
    }

    /// The Ledoit-Wolf shrinkage intensity of the fit.
    pub fn shrinkage(&self) -> f64 {
        self.shrinkage
    }

    /// The embedding dimension.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// The fitted mean.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// Vectors the mean and covariance were fitted on.
    pub fn n_fit(&self) -> usize {
        self.n_fit
    }

    /// Vectors the threshold was taken from.
    pub fn n_threshold(&self) -> usize {
        self.n_threshold
    }
}

/// At least `needed` vectors, all of one length and finite.
fn check_reference<R: AsRef<[f32]>>(reference: &[R], needed: usize) -> Result<()> {
    if reference.len() < needed {
        return Err(DriftError::TooFewSamples {
            which: "reference",
            needed,
            got: reference.len(),
        });
    }
    check_vectors("reference", reference).map(|_| ())
}

/// A threshold kept apart from its fit must be a positive number.
fn check_threshold(threshold: f64) -> Result<()> {
    if threshold.is_finite() && threshold > 0.0 {
        Ok(())
    } else {
        Err(DriftError::InvalidParameter {
            name: "threshold",
            reason: format!("must be a positive number, got {threshold}"),
        })
    }
}

/// Replaces the symmetric `d × d` matrix `a` (row-major) by its lower Cholesky factor `L`
/// (`a = L Lᵀ`, upper part zeroed), Cholesky-Banachiewicz order. Fails with
/// [`DriftError::NotPositiveDefinite`] at the first pivot that is not positive.
fn cholesky_in_place(a: &mut [f64], d: usize) -> Result<()> {
    for i in 0..d {
        for j in 0..=i {
            let dot: f64 = (0..j).map(|k| a[i * d + k] * a[j * d + k]).sum();
            let v = a[i * d + j] - dot;
            if i == j {
                if !(v > 0.0 && v.is_finite()) {
                    return Err(DriftError::NotPositiveDefinite { pivot: i });
                }
                a[i * d + i] = v.sqrt();
            } else {
                a[i * d + j] = v / a[j * d + j];
            }
        }
        for j in (i + 1)..d {
            a[i * d + j] = 0.0;
        }
    }
    Ok(())
}

/// Common length of all vectors, which must be non-zero, equal and finite.
fn check_vectors<R: AsRef<[f32]>>(which: &'static str, vs: &[R]) -> Result<usize> {
    let d = vs.first().map_or(0, |v| v.as_ref().len());
    if d == 0 {
        return Err(DriftError::DimensionMismatch {
            expected: 1,
            actual: 0,
        });
    }
    for (index, v) in vs.iter().enumerate() {
        let v = v.as_ref();
        if v.len() != d {
            return Err(DriftError::DimensionMismatch {
                expected: d,
                actual: v.len(),
            });
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(DriftError::NonFinite { which, index });
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn six() -> Vec<Vec<f32>> {
        vec![
            vec![1.0, 2.0],
            vec![2.0, 1.0],
            vec![3.0, 4.0],
            vec![4.0, 3.0],
            vec![5.0, 7.0],
            vec![0.0, 1.0],
        ]
    }

    #[test]
    fn ledoit_wolf_matches_the_formula_by_hand() {
        // Python (stdlib), both the closed forms and the definitions of δ² and b̄²:
        // S = [[35/12, 3], [3, 13/3]], μ = 3.625, δ² = 9.5017…, b̄² = 5.0509…,
        // shrinkage = 0.5315792679213109.
        let c = ledoit_wolf(&six()).unwrap();
        assert_eq!(c.mean, vec![2.5, 3.0]);
        assert!((c.mu - 3.625).abs() < 1e-14);
        assert!((c.shrinkage - 0.5315792679213109).abs() < 1e-13);
        let want = [
            3.2932019814442617,
            1.4052621962360672,
            1.4052621962360672,
            3.9567980185557383,
        ];
        for (g, w) in c.covariance.iter().zip(want) {
            assert!((g - w).abs() < 1e-13, "{:?}", c.covariance);
        }
    }

    #[test]
    fn distances_match_the_explicit_inverse() {
        // 2×2 inverse by hand in Python: d([0,0]) = 1.7352478093195711, d([5,1]) =
        // 2.1678082183038248.
        let cfg = MahalanobisConfig {
            quantile: 1.0,
            threshold_from: ThresholdFrom::InSample,
        };
        let m = MahalanobisModel::fit(&six(), &cfg).unwrap();
        assert!((m.distance(&[0.0, 0.0]).unwrap() - 1.7352478093195711).abs() < 1e-12);
        assert!((m.distance(&[5.0, 1.0]).unwrap() - 2.1678082183038248).abs() < 1e-12);
        assert_eq!(m.distance(&[2.5, 3.0]).unwrap(), 0.0);
        // Quantile 1 without holdout: the largest in-sample distance.
        let max = six()
            .iter()
            .map(|v| m.distance(v).unwrap())
            .fold(0.0, f64::max);
        assert_eq!(m.threshold(), max);
        assert_eq!((m.n_fit(), m.n_threshold()), (6, 6));
    }

    #[test]
    fn cross_fitting_scores_each_fold_by_the_others_and_keeps_the_whole_fit() {
        let data: Vec<Vec<f32>> = (0..40)
            .map(|i| {
                let t = i as f32;
                vec![(t * 0.37).sin(), (t * 0.91).cos(), (t * 0.13).sin() * 2.0]
            })
            .collect();
        let in_sample = |fit: &[Vec<f32>]| {
            MahalanobisModel::fit(
                fit,
                &MahalanobisConfig {
                    quantile: 0.9,
                    threshold_from: ThresholdFrom::InSample,
                },
            )
            .unwrap()
        };
        let m = MahalanobisModel::fit(
            &data,
            &MahalanobisConfig {
                quantile: 0.9,
                threshold_from: ThresholdFrom::CrossFit { folds: 4, block: 5 },
            },
        )
        .unwrap();
        assert_eq!((m.n_fit(), m.n_threshold()), (40, 40));
        // The model itself is the fit on everything.
        let whole = in_sample(&data);
        assert_eq!(m.mean(), whole.mean());
        assert_eq!(
            m.distance(&[0.3, -0.2, 1.0]),
            whole.distance(&[0.3, -0.2, 1.0])
        );
        // The threshold: runs of five dealt to four folds (fold 0 holds 0..5 and 20..25),
        // each fold scored by a model of the other thirty.
        let mut held = Vec::new();
        for f in 0..4 {
            let in_fold = |i: &usize| (i / 5) % 4 == f;
            let fold: Vec<Vec<f32>> = (0..40).filter(in_fold).map(|i| data[i].clone()).collect();
            let others: Vec<Vec<f32>> = (0..40)
                .filter(|i| !in_fold(i))
                .map(|i| data[i].clone())
                .collect();
            assert_eq!((fold.len(), others.len()), (10, 30));
            let model = in_sample(&others);
            held.extend(fold.iter().map(|v| model.distance(v).unwrap()));
        }
        assert_eq!(m.threshold(), quantile_sorted(&sorted(&held), 0.9));
        // Held-out distances are the larger ones: in sample would flag more new images.
        assert!(m.threshold() > whole.threshold());
        let far = m.score(&[10.0, 10.0, 10.0]).unwrap();
        assert!(far.out_of_distribution && far.distance > far.threshold);
        assert!(!m.score(&data[5]).unwrap().out_of_distribution);
        // A kept threshold refits to the same model.
        let again = MahalanobisModel::with_threshold(&data, m.threshold(), 0.9).unwrap();
        assert_eq!((again.threshold(), again.n_fit()), (m.threshold(), 40));
        assert_eq!(again.score(&[0.3, -0.2, 1.0]), m.score(&[0.3, -0.2, 1.0]));
        // So does a kept fit, through JSON.
        let json = serde_json::to_string(&m.to_fit()).unwrap();
        let kept: MahalanobisFit = serde_json::from_str(&json).unwrap();
        assert_eq!(kept.factor.len(), 6);
        let back = MahalanobisModel::from_fit(&kept, m.threshold(), 0.9).unwrap();
        assert_eq!(back.score(&[0.3, -0.2, 1.0]), m.score(&[0.3, -0.2, 1.0]));
        assert_eq!(back.n_fit(), 40);
    }

    #[test]
    fn more_dimensions_than_images_still_factor() {
        // 5 images in 16 dimensions: S is singular, the shrunk Σ is not.
        let data: Vec<Vec<f32>> = (0..5)
            .map(|i| (0..16).map(|j| ((i * 16 + j) as f32 * 0.7).sin()).collect())
            .collect();
        let cfg = MahalanobisConfig {
            quantile: 0.5,
            threshold_from: ThresholdFrom::InSample,
        };
        let m = MahalanobisModel::fit(&data, &cfg).unwrap();
        assert!(m.shrinkage() > 0.0);
        assert!(m.distance(&data[0]).unwrap().is_finite());
    }

    #[test]
    fn degenerate_and_bad_input_are_errors() {
        let constant = vec![vec![1.0f32, 1.0]; 6];
        assert_eq!(
            MahalanobisModel::fit(&constant, &MahalanobisConfig::default()),
            Err(DriftError::NotPositiveDefinite { pivot: 0 })
        );
        assert!(matches!(
            MahalanobisModel::fit(&six()[..3], &MahalanobisConfig::default()),
            Err(DriftError::TooFewSamples {
                needed: 5,
                got: 3,
                ..
            })
        ));
        let cross_fit = |folds, block| MahalanobisConfig {
            threshold_from: ThresholdFrom::CrossFit { folds, block },
            ..MahalanobisConfig::default()
        };
        assert!(matches!(
            MahalanobisModel::fit(&six(), &cross_fit(1, 1)),
            Err(DriftError::InvalidParameter { name: "folds", .. })
        ));
        assert!(matches!(
            MahalanobisModel::fit(&six(), &cross_fit(2, 0)),
            Err(DriftError::InvalidParameter { name: "block", .. })
        ));
        for threshold in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                MahalanobisModel::with_threshold(&six(), threshold, 0.99),
                Err(DriftError::InvalidParameter {
                    name: "threshold",
                    ..
                })
            ));
        }
        assert!(MahalanobisModel::with_threshold(&six()[..1], 2.0, 0.99).is_err());
        let fit = MahalanobisModel::fit(&six(), &MahalanobisConfig::default())
            .unwrap()
            .to_fit();
        let broken = [
            MahalanobisFit {
                factor: vec![1.0, 0.5],
                ..fit.clone()
            },
            MahalanobisFit {
                mean: vec![f64::NAN, 0.0],
                ..fit.clone()
            },
            MahalanobisFit {
                factor: vec![1.0, 0.5, 0.0],
                ..fit.clone()
            },
        ];
        for b in &broken {
            assert!(MahalanobisModel::from_fit(b, 2.0, 0.99).is_err(), "{b:?}");
        }
        assert!(MahalanobisModel::from_fit(&fit, f64::NAN, 0.99).is_err());
        let cfg = MahalanobisConfig {
            quantile: 1.5,
            ..MahalanobisConfig::default()
        };
        assert!(MahalanobisModel::fit(&six(), &cfg).is_err());
        let m = MahalanobisModel::fit(&six(), &MahalanobisConfig::default()).unwrap();
        assert_eq!(
            m.distance(&[1.0]),
            Err(DriftError::DimensionMismatch {
                expected: 2,
                actual: 1
            })
        );
        assert!(m.distance(&[1.0, f32::NAN]).is_err());
        let mut bad = six();
        bad[2] = vec![1.0, 2.0, 3.0];
        assert!(ledoit_wolf(&bad).is_err());
    }

    /// Prints the cost of a fit at a realistic size; no timed assertion.
    #[test]
    #[ignore = "timing only: run with --release --ignored --nocapture"]
    fn cost_fit_n2000_d512() {
        let data: Vec<Vec<f32>> = (0..2000)
            .map(|i| {
                (0..512)
                    .map(|j| ((i * 512 + j) as f32 * 0.618).sin())
                    .collect()
            })
            .collect();
        let start = std::time::Instant::now();
        let m = MahalanobisModel::fit(&data, &MahalanobisConfig::default()).unwrap();
        let fit = start.elapsed();
        let start = std::time::Instant::now();
        for v in &data[..100] {
            std::hint::black_box(m.distance(v).unwrap());
        }
        println!(
            "fit n=2000 d=512 (five fold fits of 1600 and the fit of 2000): {fit:?}; distance: {:?}",
            start.elapsed() / 100
        );
    }

    #[test]
    fn cholesky_reconstructs() {
        let mut a = vec![4.0, 2.0, 2.0, 3.0];
        cholesky_in_place(&mut a, 2).unwrap();
        assert_eq!(a, vec![2.0, 0.0, 1.0, 2f64.sqrt()]);
        let mut not_pd = vec![1.0, 2.0, 2.0, 1.0];
        assert_eq!(
            cholesky_in_place(&mut not_pd, 2),
            Err(DriftError::NotPositiveDefinite { pivot: 1 })
        );
    }
}
