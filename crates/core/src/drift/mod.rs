//! Drift statistics: pure functions that say whether live data still looks like the
//! reference the model was validated on (DESIGN.md section 4).
//!
//! This module owns the maths only. It does no I/O, starts no threads, keeps no state between
//! calls and never runs a model; windowing, storage, metrics and alerting live elsewhere.
//! Every function is deterministic: the randomised ones (permutation tests, calibration)
//! take a caller-given seed and use the small generator in `rng`, so the same inputs and
//! seed give the same answer on every machine.
//!
//! # Which test answers what
//!
//! | question | module | use it for |
//! |---|---|---|
//! | has the distribution of one number changed at all? | [`ks`] | per-image statistics (brightness, contrast, noise…); sensitive to any change in shape, gives a p-value |
//! | how much has it moved, in a scale people know? | [`psi`] | the same statistics, reported with the industry reading (<0.1 stable, 0.1-0.25 moderate, >0.25 major); no p-value |
//! | how far has it moved, in the statistic's own units? | [`wasserstein`] | the same statistics, when the size of the shift matters (a 3-grey-level brightening is not a 30-level one); normalised by the reference's spread to compare statistics |
//! | have the predicted-class shares changed? | [`categorical`] | prediction drift: chi-square test against reference shares, and PSI on shares |
//! | has the model's view of the images changed? | [`mmd`] | embeddings: multivariate two-sample test with a permutation p-value |
//! | does this one image resemble the training set? | [`mahalanobis`] | per-image out-of-distribution score in embedding space, with a reference threshold |
//! | many tests at once: which alarms survive? | [`correction`] | Holm-Bonferroni over the per-statistic KS p-values of one window |
//! | where to put a threshold so false alarms are rare and known? | [`calibrate`] | any windowed statistic (PSI, Wasserstein, MMD², …): resampled in-distribution windows, block resampling for correlated lines |
//!
//! p-values from [`ks`], [`categorical`] and [`mmd`] assume independent images. Images on a
//! line are not independent (overlapping tiles, films in batches), so on real traffic they
//! come out too small; thresholds from [`calibrate`] with block resampling are the honest
//! way to set alarm levels.
//!
//! ```
//! use vigil_core::drift::{correction::holm, ks::ks_two_sample, psi::psi};
//!
//! // Brightness of reference films against the current window: shifted by 30 grey levels.
//! let reference: Vec<f64> = (0..500).map(|i| 100.0 + f64::from(i % 100)).collect();
//! let current: Vec<f64> = (0..100).map(|i| 130.0 + f64::from(i)).collect();
//! let ks = ks_two_sample(&reference, &current).unwrap();
//! assert!((ks.statistic - 0.3).abs() < 1e-12 && ks.p_value < 1e-4);
//! assert!(psi(&reference, &current, 10).unwrap().statistic > 0.25);
//!
//! // One KS test per image statistic: correct the family before alarming.
//! let adjusted = holm(&[ks.p_value, 0.04, 0.6]).unwrap();
//! assert!(adjusted[0] < 0.01 && adjusted[1] > 0.05);
//! ```

use serde::Serialize;

use crate::ErrorKind;

pub mod calibrate;
pub mod categorical;
pub mod correction;
pub mod ks;
pub mod mahalanobis;
pub mod mmd;
pub mod psi;
pub mod rng;
pub mod wasserstein;

/// What can be wrong with the input of a drift statistic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriftError {
    /// A sample that must hold values holds none.
    #[error("the {which} sample is empty")]
    EmptySample {
        /// Which sample (`"reference"`, `"current"`, …).
        which: &'static str,
    },
    /// A sample holds fewer values than the statistic needs.
    #[error("the {which} sample has {got} values; this statistic needs at least {needed}")]
    TooFewSamples {
        /// Which sample.
        which: &'static str,
        /// The least the statistic accepts.
        needed: usize,
        /// What it got.
        got: usize,
    },
    /// A value is NaN or infinite.
    #[error("the {which} sample holds a non-finite value at index {index}")]
    NonFinite {
        /// Which sample.
        which: &'static str,
        /// Position of the first offending value.
        index: usize,
    },
    /// Vectors (or count and share lists) of different lengths.
    #[error("dimension mismatch: expected {expected}, got {actual}")]
    DimensionMismatch {
        /// The length fixed by the reference.
        expected: usize,
        /// The length found.
        actual: usize,
    },
    /// The covariance matrix cannot be inverted (for example a constant reference).
    #[error(
        "the covariance matrix is not positive definite (pivot {pivot}); the reference embeddings are degenerate"
    )]
    NotPositiveDefinite {
        /// The Cholesky step that failed.
        pivot: usize,
    },
    /// A parameter outside its domain.
    #[error("`{name}` {reason}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A numerical routine did not converge: a bug or an input far outside the tested range.
    #[error("internal error: {0}")]
    Internal(String),
}

impl DriftError {
    /// What a caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DriftError::EmptySample { .. }
            | DriftError::TooFewSamples { .. }
            | DriftError::NonFinite { .. }
            | DriftError::DimensionMismatch { .. }
            | DriftError::NotPositiveDefinite { .. }
            | DriftError::InvalidParameter { .. } => ErrorKind::Invalid,
            DriftError::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// The result type of this module.
pub type Result<T> = std::result::Result<T, DriftError>;

/// The usual reading of a PSI value (also used for PSI on class shares).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PsiLevel {
    /// PSI < 0.1: no meaningful shift.
    Stable,
    /// 0.1 <= PSI <= 0.25: a shift worth a look.
    Moderate,
    /// PSI > 0.25: a major shift.
    Major,
}

impl PsiLevel {
    /// Reads a PSI value with the conventional cut-offs 0.1 and 0.25 (credit-scoring
    /// practice, e.g. Siddiqi, *Credit Risk Scorecards*, 2006). They are rules of thumb, not
    /// calibrated levels: use [`calibrate`] for alarm thresholds.
    pub fn of(psi: f64) -> PsiLevel {
        if psi < 0.1 {
            PsiLevel::Stable
        } else if psi <= 0.25 {
            PsiLevel::Moderate
        } else {
            PsiLevel::Major
        }
    }
}

/// Fails with [`DriftError::EmptySample`] or [`DriftError::NonFinite`].
pub(crate) fn check_sample(which: &'static str, xs: &[f64]) -> Result<()> {
    if xs.is_empty() {
        return Err(DriftError::EmptySample { which });
    }
    if let Some(index) = xs.iter().position(|x| !x.is_finite()) {
        return Err(DriftError::NonFinite { which, index });
    }
    Ok(())
}

/// A sorted copy of a finite sample.
pub(crate) fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// The `q` quantile of a sorted, non-empty sample by linear interpolation between order
/// statistics (Hyndman & Fan type 7, the default of R, NumPy and Excel's `PERCENTILE.INC`):
/// position `h = (n - 1) q`, value `x[floor h] + (h - floor h) (x[floor h + 1] - x[floor h])`.
pub(crate) fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    debug_assert!(!sorted.is_empty() && (0.0..=1.0).contains(&q));
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_matches_numpy_linear() {
        // numpy.quantile([1, 2, 3, 4], [0, 0.25, 0.5, 0.9, 1]) = [1, 1.75, 2.5, 3.7, 4]
        let s = [1.0, 2.0, 3.0, 4.0];
        for (q, want) in [(0.0, 1.0), (0.25, 1.75), (0.5, 2.5), (0.9, 3.7), (1.0, 4.0)] {
            assert!((quantile_sorted(&s, q) - want).abs() < 1e-12, "q={q}");
        }
        assert_eq!(quantile_sorted(&[7.0], 0.3), 7.0);
    }

    #[test]
    fn psi_levels() {
        assert_eq!(PsiLevel::of(0.05), PsiLevel::Stable);
        assert_eq!(PsiLevel::of(0.1), PsiLevel::Moderate);
        assert_eq!(PsiLevel::of(0.25), PsiLevel::Moderate);
        assert_eq!(PsiLevel::of(0.3), PsiLevel::Major);
    }

    #[test]
    fn results_serialise_to_json() {
        let ks = ks::ks_two_sample(&[1.0, 2.0], &[1.0, 2.0]).unwrap();
        assert_eq!(
            serde_json::to_string(&ks).unwrap(),
            r#"{"statistic":0.0,"p_value":1.0,"n_reference":2,"n_current":2}"#
        );
        let blocks = calibrate::Resampling::Blocks { length: 50 };
        assert_eq!(
            serde_json::to_string(&blocks).unwrap(),
            r#"{"kind":"blocks","length":50}"#
        );
        assert_eq!(
            serde_json::to_string(&PsiLevel::Major).unwrap(),
            r#""major""#
        );
    }

    #[test]
    fn errors_are_invalid_except_internal() {
        assert_eq!(
            DriftError::EmptySample { which: "current" }.kind(),
            ErrorKind::Invalid
        );
        assert_eq!(
            DriftError::NotPositiveDefinite { pivot: 0 }.kind(),
            ErrorKind::Invalid
        );
        assert_eq!(DriftError::Internal("x".into()).kind(), ErrorKind::Internal);
    }
}
