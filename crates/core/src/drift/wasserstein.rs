//! The 1-D Wasserstein-1 (earth mover's) distance: how far has the distribution of one
//! number moved, in that number's own units?

use serde::Serialize;

use super::{Result, check_sample, sorted};

/// A Wasserstein-1 distance, raw and scaled by the reference's spread.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WassersteinResult {
    /// `W1 = ∫ |F_ref(x) - F_cur(x)| dx`, in the statistic's units, `>= 0`.
    pub distance: f64,
    /// Sample standard deviation of the reference (`n - 1` denominator; 0 for one value).
    pub reference_std: f64,
    /// `distance / reference_std`: comparable across statistics with different units
    /// ("the window moved by 0.4 reference standard deviations"). `None` when the reference
    /// is constant.
    pub normalised: Option<f64>,
}

/// Wasserstein-1 distance between two empirical samples (equal weights).
///
/// Definition: the area between the two empirical CDFs, `W1 = ∫ |F_ref(x) - F_cur(x)| dx`,
/// which in one dimension equals the optimal-transport cost with cost `|x - y|` (Villani,
/// *Optimal Transport*, 2009, remark 2.19; the same computation as
/// `scipy.stats.wasserstein_distance` without weights). Computed exactly by one merge pass
/// over the sorted samples, `O((n + m) log(n + m))`.
///
/// Unlike KS it grows with the size of the shift, so a 3-grey-level brightening scores less
/// than a 30-level one; it has no p-value (calibrate a threshold with
/// [`super::calibrate`]). `normalised` divides by the reference's sample standard deviation.
///
/// Edge cases: empty or non-finite samples are errors; identical samples give 0; a constant
/// reference gives `normalised: None`.
pub fn wasserstein(reference: &[f64], current: &[f64]) -> Result<WassersteinResult> {
    check_sample("reference", reference)?;
    check_sample("current", current)?;
    let a = sorted(reference);
    let b = sorted(current);
    let distance = w1_sorted(&a, &b);
    let reference_std = std_dev(&a);
    let normalised = (reference_std > 0.0).then(|| distance / reference_std);
    Ok(WassersteinResult {
        distance,
        reference_std,
        normalised,
    })
}

/// `∫ |F_a - F_b|` for sorted, non-empty, finite samples.
fn w1_sorted(a: &[f64], b: &[f64]) -> f64 {
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0, 0);
    let mut total = 0.0;
    // Between consecutive pooled values both ECDFs are flat; add gap × height.
    while i < a.len() || j < b.len() {
        let x = match (a.get(i), b.get(j)) {
            (Some(&p), Some(&q)) => p.min(q),
            (Some(&p), None) => p,
            (None, Some(&q)) => q,
            (None, None) => break,
        };
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        let next = match (a.get(i), b.get(j)) {
            (Some(&p), Some(&q)) => p.min(q),
            (Some(&p), None) => p,
            (None, Some(&q)) => q,
            (None, None) => break,
        };
        total += (i as f64 / n - j as f64 / m).abs() * (next - x);
    }
    total
}

/// Sample standard deviation (`n - 1`), 0 for fewer than two values. Two-pass for accuracy.
fn std_dev(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let ss: f64 = xs.iter().map(|x| (x - mean).powi(2)).sum();
    (ss / (n - 1.0)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::DriftError;

    #[test]
    fn scipy_documentation_example() {
        // scipy.stats.wasserstein_distance([0, 1, 3], [5, 6, 8]) = 5.0
        let r = wasserstein(&[0.0, 1.0, 3.0], &[5.0, 6.0, 8.0]).unwrap();
        assert!((r.distance - 5.0).abs() < 1e-12);
    }

    #[test]
    fn ties_unequal_sizes_and_normalisation() {
        // By hand: |F - G| = 5/12, 1/6, 1/12, 1/3 on [1,2), [2,3), [3,4), [4,5): total 1.
        let r = wasserstein(&[1.0, 2.0, 3.0, 4.0], &[1.0, 1.0, 5.0]).unwrap();
        assert!((r.distance - 1.0).abs() < 1e-12);
        // statistics.stdev([1, 2, 3, 4]) = 1.2909944487358056
        assert!((r.reference_std - 1.2909944487358056).abs() < 1e-14);
        assert!((r.normalised.unwrap() - 0.7745966692414834).abs() < 1e-14);
    }

    #[test]
    fn a_shift_moves_by_the_shift_and_is_symmetric() {
        let a: Vec<f64> = (0..50).map(|i| f64::from(i) * 0.7).collect();
        let b: Vec<f64> = a.iter().map(|x| x + 3.0).collect();
        let ab = wasserstein(&a, &b).unwrap().distance;
        let ba = wasserstein(&b, &a).unwrap().distance;
        assert!((ab - 3.0).abs() < 1e-9, "{ab}");
        assert!((ab - ba).abs() < 1e-12);
        assert_eq!(wasserstein(&a, &a).unwrap().distance, 0.0);
    }

    #[test]
    fn edge_cases() {
        let r = wasserstein(&[2.0, 2.0], &[3.0]).unwrap();
        assert_eq!(r.distance, 1.0);
        assert_eq!(r.normalised, None);
        assert_eq!(
            wasserstein(&[1.0], &[]),
            Err(DriftError::EmptySample { which: "current" })
        );
        assert!(matches!(
            wasserstein(&[f64::INFINITY], &[1.0]),
            Err(DriftError::NonFinite { .. })
        ));
    }
}
