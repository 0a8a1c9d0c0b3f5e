//! The two-sample Kolmogorov-Smirnov test: has the distribution of one per-image statistic
//! changed in any way?

use serde::Serialize;

use super::{Result, check_sample, sorted};

/// The outcome of a two-sample Kolmogorov-Smirnov test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KsResult {
    /// `D = sup_x |F_ref(x) - F_cur(x)|`, in `[0, 1]`.
    pub statistic: f64,
    /// Asymptotic p-value of `D` under "same distribution" (see [`ks_two_sample`]).
    pub p_value: f64,
    /// Size of the reference sample.
    pub n_reference: usize,
    /// Size of the current sample.
    pub n_current: usize,
}

/// The two-sample Kolmogorov-Smirnov statistic and its asymptotic p-value.
///
/// Definition: `D = sup_x |F_ref(x) - F_cur(x)|` over the two empirical CDFs. Ties (within
/// or across the samples, common for integer-valued statistics such as bit depth or
/// saturated-pixel counts) are handled exactly: both ECDFs step past *all* copies of a
/// value before they are compared, as in `scipy.stats.ks_2samp`.
///
/// p-value: Numerical Recipes (Press et al., 3rd ed., section 14.3.3), with the effective
/// size `en = n m / (n + m)` and `p = Q_KS((sqrt(en) + 0.12 + 0.11 / sqrt(en)) D)`, where
/// `Q_KS` is [`kolmogorov_q`]. The approximation is good from `en` of about 4; for tiny
/// samples it is rough, and with ties it is conservative (too large). It differs slightly
/// from scipy's `method="asymp"`, which has no `0.12 + 0.11/sqrt(en)` correction.
///
/// Edge cases: an empty sample gives [`DriftError::EmptySample`](super::DriftError), a NaN
/// or infinite value [`DriftError::NonFinite`](super::DriftError). Identical samples give
/// `D = 0`, `p = 1`.
pub fn ks_two_sample(reference: &[f64], current: &[f64]) -> Result<KsResult> {
    check_sample("reference", reference)?;
    check_sample("current", current)?;
    let a = sorted(reference);
    let b = sorted(current);
    let statistic = ks_statistic_sorted(&a, &b);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let en = (n * m / (n + m)).sqrt();
    let p_value = kolmogorov_q((en + 0.12 + 0.11 / en) * statistic);
    Ok(KsResult {
        statistic,
        p_value,
        n_reference: a.len(),
        n_current: b.len(),
    })
}

/// `D` for two sorted, non-empty, finite samples: one merge pass, `O(n + m)`.
fn ks_statistic_sorted(a: &[f64], b: &[f64]) -> f64 {
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0, 0);
    let mut d: f64 = 0.0;
    while i < a.len() && j < b.len() {
        // Step both ECDFs past every copy of the smallest remaining value, then compare.
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    // Once one sample is exhausted its ECDF is 1 and the gap only shrinks from here.
    d
}

/// The Kolmogorov distribution's survival function
/// `Q_KS(λ) = 2 Σ_{j≥1} (-1)^{j-1} exp(-2 j² λ²)`, the limiting `P(sqrt(n) D > λ)`.
///
/// Evaluated as in Numerical Recipes (3rd ed., `KSdist::qks`): for `λ < 1.18` through the
/// equivalent theta-function form `1 - sqrt(2π)/λ Σ_{j≥1} exp(-(2j-1)² π² / (8 λ²))`, which
/// converges fast where the alternating series does not; otherwise the alternating series.
/// Both are truncated after four terms, which is exact to double precision on their ranges.
/// Well-known values: `Q_KS(1.0) = 0.26999967`, `Q_KS(1.3581) = 0.05`.
///
/// Edge cases: `λ <= 0` (and NaN) gives 1; the result is clamped to `[0, 1]`.
pub fn kolmogorov_q(lambda: f64) -> f64 {
    // NaN fails `> 0.0` and is read as "no evidence".
    if lambda.is_nan() || lambda <= 0.0 {
        return 1.0;
    }
    let q = if lambda < 1.18 {
        let y = (-std::f64::consts::PI.powi(2) / (8.0 * lambda * lambda)).exp();
        let series = y + y.powi(9) + y.powi(25) + y.powi(49);
        1.0 - (2.0 * std::f64::consts::PI).sqrt() / lambda * series
    } else {
        let x = (-2.0 * lambda * lambda).exp();
        2.0 * (x - x.powi(4) + x.powi(9) - x.powi(16))
    };
    q.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::DriftError;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn kolmogorov_q_well_known_values() {
        // Reference: the full alternating series summed to 1000 terms in Python (stdlib).
        for (l, want) in [
            (0.3, 0.9999906941986655),
            (0.5, 0.9639452436648751),
            (1.0, 0.26999967167735456),
            (1.1799, 0.12351204971188676),
            (1.18, 0.1234538094297657),
            (1.2, 0.11224966667072496),
            (1.3580986, 0.0500000106802808),
            (2.0, 0.0006709252557796953),
            (3.0, 3.045995948942526e-08),
        ] {
            let got = kolmogorov_q(l);
            assert!(
                close(got, want, 1e-14 + 1e-12 * want),
                "λ={l}: {got} vs {want}"
            );
        }
        assert_eq!(kolmogorov_q(0.0), 1.0);
        assert_eq!(kolmogorov_q(-1.0), 1.0);
        assert_eq!(kolmogorov_q(f64::NAN), 1.0);
        assert_eq!(kolmogorov_q(40.0), 0.0);
    }

    #[test]
    fn statistic_with_ties_matches_scipy() {
        // scipy.stats.ks_2samp([1,2,2,3,4,5], [2,2,3,6,7,8,9]).statistic = 4/7
        // (at x = 5: F_ref = 1, F_cur = 3/7). p from the NR formula, by hand in Python.
        let r = ks_two_sample(
            &[1.0, 2.0, 2.0, 3.0, 4.0, 5.0],
            &[2.0, 2.0, 3.0, 6.0, 7.0, 8.0, 9.0],
        )
        .unwrap();
        assert!(close(r.statistic, 4.0 / 7.0, 1e-15));
        assert!(
            close(r.p_value, 0.15504417912365287, 1e-12),
            "{}",
            r.p_value
        );
        assert_eq!((r.n_reference, r.n_current), (6, 7));
    }

    #[test]
    fn a_shift_by_half_a_step_gives_one_tenth() {
        // 1..=10 against 1.5..=10.5: the ECDFs differ by at most 1/10.
        let a: Vec<f64> = (1..=10).map(f64::from).collect();
        let b: Vec<f64> = a.iter().map(|x| x + 0.5).collect();
        let r = ks_two_sample(&a, &b).unwrap();
        assert!(close(r.statistic, 0.1, 1e-15));
        assert!(close(r.p_value, 0.9999999942894181, 1e-12));
    }

    #[test]
    fn identical_and_disjoint_samples() {
        let a = [3.0, 1.0, 2.0, 2.0];
        let r = ks_two_sample(&a, &a).unwrap();
        assert_eq!((r.statistic, r.p_value), (0.0, 1.0));
        let r = ks_two_sample(&[1.0, 2.0, 3.0], &[10.0, 11.0]).unwrap();
        assert_eq!(r.statistic, 1.0);
        // Every value tied across the samples: D = 0.
        let r = ks_two_sample(&[5.0; 4], &[5.0; 9]).unwrap();
        assert_eq!(r.statistic, 0.0);
    }

    #[test]
    fn large_shift_gives_small_p() {
        let a: Vec<f64> = (0..200).map(f64::from).collect();
        let b: Vec<f64> = a.iter().map(|x| x + 60.0).collect();
        let r = ks_two_sample(&a, &b).unwrap();
        assert!(close(r.statistic, 0.3, 1e-12));
        assert!(r.p_value < 1e-6, "{}", r.p_value);
    }

    #[test]
    fn empty_or_nan_input_is_an_error() {
        assert_eq!(
            ks_two_sample(&[], &[1.0]),
            Err(DriftError::EmptySample { which: "reference" })
        );
        assert_eq!(
            ks_two_sample(&[1.0], &[]),
            Err(DriftError::EmptySample { which: "current" })
        );
        assert_eq!(
            ks_two_sample(&[1.0], &[2.0, f64::NAN]),
            Err(DriftError::NonFinite {
                which: "current",
                index: 1
            })
        );
    }
}
