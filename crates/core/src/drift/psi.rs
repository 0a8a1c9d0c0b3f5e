//! The Population Stability Index: how far has the distribution of one number moved, on the
//! scale the industry reads at a glance?

use serde::Serialize;

use super::{DriftError, PsiLevel, Result, check_sample, quantile_sorted, sorted};

/// Bins per statistic unless the caller says otherwise: deciles of the reference.
pub const DEFAULT_BINS: usize = 10;
/// Floor on a bin's share, so an empty bin costs a large but finite amount instead of an
/// infinity (`ln(0)`). 1e-4 is the common choice; with it one empty decile adds about 0.8.
pub const DEFAULT_EPSILON: f64 = 1e-4;

/// Bin edges fixed from the reference sample, reused for every window.
///
/// `edges` are the interior cut points `e_1 < … < e_{k-1}`; the bins are
/// `(-∞, e_1], (e_1, e_2], …, (e_{k-1}, +∞)`: right-closed, with open-ended outer bins so that
/// live values beyond the reference's range still land somewhere.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PsiBins {
    edges: Vec<f64>,
}

impl PsiBins {
    /// Quantile edges: `e_i` = the `i/bins` quantile of the reference (linear interpolation,
    /// NumPy's default), for `i = 1 … bins-1`.
    ///
    /// Repeated edges (a statistic with many ties, such as a saturated-pixel share that is
    /// mostly 0) are merged, so there may be fewer than `bins` bins; with right-closed bins a
    /// point mass at the minimum gets its own bin. A constant reference `c` gives the two bins
    /// `(-∞, c]` and `(c, ∞)`: values below `c` are not told apart from `c`, so check
    /// [`PsiBins::len`] when a statistic may be degenerate.
    ///
    /// Errors: empty or non-finite reference; `bins == 0`.
    pub fn from_reference(reference: &[f64], bins: usize) -> Result<Self> {
        check_sample("reference", reference)?;
        if bins == 0 {
            return Err(DriftError::InvalidParameter {
                name: "bins",
                reason: "must be at least 1".into(),
            });
        }
        let s = sorted(reference);
        let mut edges: Vec<f64> = (1..bins)
            .map(|i| quantile_sorted(&s, i as f64 / bins as f64))
            .collect();
        edges.dedup();
        Ok(PsiBins { edges })
    }

    /// The interior edges.
    pub fn edges(&self) -> &[f64] {
        &self.edges
    }

    /// Number of bins (`edges().len() + 1`).
    pub fn len(&self) -> usize {
        self.edges.len() + 1
    }

    /// Never true: there is always at least one bin.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The bin holding `x`: the number of edges strictly below it.
    pub fn bin_of(&self, x: f64) -> usize {
        self.edges.partition_point(|&e| e < x)
    }

    /// The share of `sample` in each bin (sums to 1). Errors: empty or non-finite sample.
    pub fn shares(&self, which: &'static str, sample: &[f64]) -> Result<Vec<f64>> {
        check_sample(which, sample)?;
        let mut counts = vec![0usize; self.len()];
        for &x in sample {
            counts[self.bin_of(x)] += 1;
        }
        let n = sample.len() as f64;
        Ok(counts.into_iter().map(|c| c as f64 / n).collect())
    }
}

/// A PSI value with the shares it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PsiResult {
    /// `Σ (a_i - e_i) ln(a_i / e_i)`, `>= 0`.
    pub statistic: f64,
    /// The conventional reading of `statistic`.
    pub level: PsiLevel,
    /// The interior bin edges (from the reference).
    pub edges: Vec<f64>,
    /// Reference share per bin, before flooring.
    pub reference_shares: Vec<f64>,
    /// Current share per bin, before flooring.
    pub current_shares: Vec<f64>,
}

/// PSI of `current` against `reference`, with `bins` quantile bins from the reference and
/// shares floored at [`DEFAULT_EPSILON`].
///
/// Definition: `PSI = Σ_i (a_i - e_i) ln(a_i / e_i)` with `e_i` the reference's and `a_i` the
/// current share of bin `i` (Siddiqi, *Credit Risk Scorecards*, 2006; Yurdakul, "Statistical
/// properties of population stability index", 2018). It is the symmetrised Kullback-Leibler
/// divergence of the binned distributions. Usual reading: < 0.1 stable, 0.1-0.25 moderate
/// shift, > 0.25 major shift (see [`PsiLevel`]); these are conventions, and PSI grows with the
/// number of bins and shrinks with window size only down to its sampling noise
/// (about `(bins - 1) (1/n + 1/m)` in expectation), so small windows need a calibrated
/// threshold ([`super::calibrate`]).
///
/// When a monitor compares many windows to the same reference, build [`PsiBins`] once and
/// call [`psi_with_bins`].
///
/// Errors: empty or non-finite samples; `bins == 0`.
pub fn psi(reference: &[f64], current: &[f64], bins: usize) -> Result<PsiResult> {
    let b = PsiBins::from_reference(reference, bins)?;
    let reference_shares = b.shares("reference", reference)?;
    psi_with_bins(&b, &reference_shares, current)
}

/// PSI of `current` against precomputed bins and reference shares (from
/// [`PsiBins::shares`] on the reference), floored at [`DEFAULT_EPSILON`].
pub fn psi_with_bins(
    bins: &PsiBins,
    reference_shares: &[f64],
    current: &[f64],
) -> Result<PsiResult> {
    let current_shares = bins.shares("current", current)?;
    let statistic = psi_from_shares(reference_shares, &current_shares, DEFAULT_EPSILON)?;
    Ok(PsiResult {
        statistic,
        level: PsiLevel::of(statistic),
        edges: bins.edges().to_vec(),
        reference_shares: reference_shares.to_vec(),
        current_shares,
    })
}

/// `Σ (a_i - e_i) ln(a_i / e_i)` over two share vectors, each share floored at `epsilon`
/// first (`max(share, epsilon)`, not renormalised: the floor only has to keep the sum finite).
///
/// Shares are used as given; they should each sum to 1. Errors: different lengths
/// ([`DriftError::DimensionMismatch`]), empty or non-finite shares, negative shares, or
/// `epsilon` not in `(0, 1)`.
pub fn psi_from_shares(expected: &[f64], actual: &[f64], epsilon: f64) -> Result<f64> {
    check_sample("expected shares", expected)?;
    check_sample("actual shares", actual)?;
    if expected.len() != actual.len() {
        return Err(DriftError::DimensionMismatch {
            expected: expected.len(),
            actual: actual.len(),
        });
    }
    if !(epsilon > 0.0 && epsilon < 1.0) {
        return Err(DriftError::InvalidParameter {
            name: "epsilon",
            reason: format!("must lie in (0, 1), got {epsilon}"),
        });
    }
    if expected.iter().chain(actual).any(|&s| s < 0.0) {
        return Err(DriftError::InvalidParameter {
            name: "shares",
            reason: "must not be negative".into(),
        });
    }
    Ok(expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let (e, a) = (e.max(epsilon), a.max(epsilon));
            (a - e) * (a / e).ln()
        })
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartile_edges_and_hand_computed_psi() {
        // Reference 1..=20: quartile edges 5.75, 10.5, 15.25 (numpy.quantile, linear).
        let reference: Vec<f64> = (1..=20).map(f64::from).collect();
        let mut current: Vec<f64> = (1..=12).map(f64::from).collect();
        current.extend((30..=37).map(f64::from));
        let r = psi(&reference, &current, 4).unwrap();
        assert_eq!(r.edges, vec![5.75, 10.5, 15.25]);
        assert_eq!(r.reference_shares, vec![0.25; 4]);
        assert_eq!(r.current_shares, vec![0.25, 0.25, 0.1, 0.4]);
        // By hand: (0.1 - 0.25) ln(0.4) + (0.4 - 0.25) ln(1.6) = 0.15 ln 4.
        assert!((r.statistic - 0.20794415416798362).abs() < 1e-14);
        assert_eq!(r.level, PsiLevel::Moderate);
    }

    #[test]
    fn empty_bins_are_floored_not_infinite() {
        let reference: Vec<f64> = (1..=20).map(f64::from).collect();
        let current: Vec<f64> = (1..=10).map(f64::from).collect();
        let r = psi(&reference, &current, 4).unwrap();
        assert_eq!(r.current_shares, vec![0.5, 0.5, 0.0, 0.0]);
        // Python: sum((max(a,1e-4)-e) * log(max(a,1e-4)/e)) = 4.257031786505947
        assert!((r.statistic - 4.257031786505947).abs() < 1e-12);
        assert_eq!(r.level, PsiLevel::Major);
    }

    #[test]
    fn same_sample_gives_zero_and_outer_bins_are_open() {
        let reference: Vec<f64> = (0..100).map(f64::from).collect();
        let r = psi(&reference, &reference, DEFAULT_BINS).unwrap();
        assert_eq!(r.statistic, 0.0);
        assert_eq!(r.edges.len(), 9);
        let b = PsiBins::from_reference(&reference, DEFAULT_BINS).unwrap();
        assert_eq!(b.bin_of(-1e9), 0);
        assert_eq!(b.bin_of(1e9), 9);
        // Right-closed: an edge value belongs to the bin below it.
        assert_eq!(b.bin_of(b.edges()[0]), 0);
    }

    #[test]
    fn ties_merge_edges() {
        // 95% zeros: every decile edge is 0 and they merge into one.
        let mut reference = vec![0.0; 95];
        reference.extend([1.0, 2.0, 3.0, 4.0, 5.0]);
        let b = PsiBins::from_reference(&reference, 10).unwrap();
        assert_eq!(b.edges(), &[0.0]);
        assert_eq!(b.shares("reference", &reference).unwrap(), vec![0.95, 0.05]);
        let constant = PsiBins::from_reference(&[2.0; 5], 10).unwrap();
        assert_eq!(constant.len(), 2);
        let r = psi(&[2.0; 5], &[3.0; 5], 10).unwrap();
        assert_eq!(r.level, PsiLevel::Major);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(
            psi(&[], &[1.0], 10),
            Err(DriftError::EmptySample { which: "reference" })
        );
        assert!(matches!(
            psi(&[1.0], &[1.0], 0),
            Err(DriftError::InvalidParameter { .. })
        ));
        assert_eq!(
            psi_from_shares(&[0.5, 0.5], &[1.0], 1e-4),
            Err(DriftError::DimensionMismatch {
                expected: 2,
                actual: 1
            })
        );
        assert!(psi_from_shares(&[0.5, 0.5], &[0.5, 0.5], 0.0).is_err());
        assert!(psi_from_shares(&[1.5, -0.5], &[0.5, 0.5], 1e-4).is_err());
    }
}
