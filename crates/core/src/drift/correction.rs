//! Multiple-testing correction: when one window runs a KS test per image statistic, which
//! alarms survive the fact that some test is bound to look significant by chance?

use super::{DriftError, Result};

/// Holm-Bonferroni adjusted p-values, in input order.
///
/// Definition (Holm, "A simple sequentially rejective multiple test procedure", Scand. J.
/// Statist. 1979): sort the `m` p-values ascending, `p_(1) <= … <= p_(m)`; the adjusted value
/// of the `i`-th smallest is `max_{j <= i} min(1, (m - j + 1) p_(j))`. Rejecting every
/// hypothesis whose adjusted p-value is `<= α` controls the family-wise error rate (the
/// chance of *any* false alarm in the family) at `α` under any dependence between the tests,
/// which is what per-statistic KS tests on the same images need (brightness and contrast are
/// correlated). It is uniformly more powerful than plain Bonferroni. Same as
/// `statsmodels.stats.multitest.multipletests(p, method="holm")[1]`.
///
/// Ties keep their input order (a stable sort), which does not change the result.
///
/// Edge cases: an empty family gives an empty vector. Errors: a p-value that is NaN or
/// outside `[0, 1]` ([`DriftError::InvalidParameter`]).
pub fn holm(p_values: &[f64]) -> Result<Vec<f64>> {
    if let Some(&p) = p_values.iter().find(|p| !(0.0..=1.0).contains(*p)) {
        return Err(DriftError::InvalidParameter {
            name: "p_values",
            reason: format!("must lie in [0, 1], got {p}"),
        });
    }
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let mut adjusted = vec![0.0; m];
    let mut running_max: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        let a = ((m - rank) as f64 * p_values[i]).min(1.0);
        running_max = running_max.max(a);
        adjusted[i] = running_max;
    }
    Ok(adjusted)
}

/// Which hypotheses Holm's procedure rejects at family-wise level `alpha`: `adjusted <= alpha`,
/// in input order. Errors: as [`holm`], and `alpha` outside `(0, 1)`.
pub fn holm_reject(p_values: &[f64], alpha: f64) -> Result<Vec<bool>> {
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(DriftError::InvalidParameter {
            name: "alpha",
            reason: format!("must lie in (0, 1), got {alpha}"),
        });
    }
    Ok(holm(p_values)?.into_iter().map(|p| p <= alpha).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_all_close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn hand_computed_family() {
        // Sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04;
        // the running maximum lifts the last to 0.06. Back in input order:
        let adj = holm(&[0.01, 0.04, 0.03, 0.005]).unwrap();
        assert_all_close(&adj, &[0.03, 0.06, 0.06, 0.02]);
        assert_eq!(
            holm_reject(&[0.01, 0.04, 0.03, 0.005], 0.05).unwrap(),
            vec![true, false, false, true]
        );
    }

    #[test]
    fn capped_at_one_ties_and_trivial_families() {
        assert_all_close(&holm(&[0.5, 0.9, 0.2]).unwrap(), &[1.0, 1.0, 0.6]);
        assert_all_close(&holm(&[0.02, 0.02]).unwrap(), &[0.04, 0.04]);
        assert_all_close(&holm(&[0.3]).unwrap(), &[0.3]);
        assert!(holm(&[]).unwrap().is_empty());
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(holm(&[0.1, f64::NAN]).is_err());
        assert!(holm(&[1.5]).is_err());
        assert!(holm(&[-0.1]).is_err());
        assert!(holm_reject(&[0.1], 0.0).is_err());
    }
}
