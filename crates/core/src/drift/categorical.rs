//! Prediction drift: have the shares of predicted classes moved away from the reference?
//! Chi-square goodness-of-fit with its p-value, PSI on class shares, and the special
//! functions they need (log-gamma, regularised incomplete gamma).

use serde::Serialize;

use super::psi::{DEFAULT_EPSILON, psi_from_shares};
use super::{DriftError, PsiLevel, Result};

/// A zero reference share is raised to this before the test (then the shares are
/// renormalised): a class the reference never predicted must still give a finite statistic.
/// With it, one such prediction in a window adds about `1 / (n · 1e-4)` to the statistic:
/// a strong, but finite, signal.
pub const SHARE_FLOOR: f64 = 1e-4;

/// The outcome of a chi-square goodness-of-fit test on class counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChiSquareResult {
    /// Pearson's `X² = Σ (O_i - E_i)² / E_i`.
    pub statistic: f64,
    /// Degrees of freedom, `k - 1`.
    pub dof: usize,
    /// `P(χ²_dof >= X²)`.
    pub p_value: f64,
    /// Predictions in the window.
    pub n: u64,
    /// The smallest expected count `E_i`; the chi-square approximation wants it `>= 5`.
    pub min_expected: f64,
}

/// Pearson's chi-square test of observed class counts against reference shares.
///
/// Definition: with `n = Σ O_i` and `E_i = n p_i`, `X² = Σ (O_i - E_i)² / E_i`, compared with
/// a chi-square distribution with `k - 1` degrees of freedom: `p = Q((k-1)/2, X²/2)`
/// ([`gamma_q`]). Same as `scipy.stats.chisquare(counts, n * shares)`.
///
/// `reference_shares` are normalised to sum to 1; zero shares are first raised to
/// [`SHARE_FLOOR`]. The approximation is poor when expected counts are below about 5
/// (see `min_expected`): merge rare classes or use larger windows. The p-value assumes
/// independent predictions, which neighbouring tiles are not.
///
/// Errors: fewer than two classes, lengths that differ, no predictions (`n = 0`), negative
/// or non-finite shares, shares summing to 0.
pub fn chi_square(counts: &[u64], reference_shares: &[f64]) -> Result<ChiSquareResult> {
    let p = normalised_shares(counts, reference_shares)?;
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return Err(DriftError::EmptySample { which: "current" });
    }
    let nf = n as f64;
    let mut statistic = 0.0;
    let mut min_expected = f64::INFINITY;
    for (&o, &pi) in counts.iter().zip(&p) {
        let e = nf * pi;
        min_expected = min_expected.min(e);
        statistic += (o as f64 - e).powi(2) / e;
    }
    let dof = counts.len() - 1;
    let p_value = chi2_sf(statistic, dof as f64)?;
    Ok(ChiSquareResult {
        statistic,
        dof,
        p_value,
        n,
        min_expected,
    })
}

/// PSI of class shares.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassPsiResult {
    /// `Σ (a_i - e_i) ln(a_i / e_i)` over classes, shares floored at 1e-4.
    pub statistic: f64,
    /// The conventional reading.
    pub level: PsiLevel,
    /// The window's class shares, before flooring.
    pub current_shares: Vec<f64>,
}

/// PSI between reference class shares and the shares of `counts`: the same formula as
/// [`super::psi::psi_from_shares`] with the classes as bins and floor
/// [`super::psi::DEFAULT_EPSILON`]; `reference_shares` are normalised to sum to 1 first.
/// Read it like any PSI (< 0.1 stable, 0.1-0.25 moderate, > 0.25 major).
///
/// Errors: as [`chi_square`].
pub fn class_psi(counts: &[u64], reference_shares: &[f64]) -> Result<ClassPsiResult> {
    let total: f64 = reference_shares.iter().sum();
    let _ = normalised_shares(counts, reference_shares)?;
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return Err(DriftError::EmptySample { which: "current" });
    }
    let expected: Vec<f64> = reference_shares.iter().map(|s| s / total).collect();
    let current_shares: Vec<f64> = counts.iter().map(|&c| c as f64 / n as f64).collect();
    let statistic = psi_from_shares(&expected, &current_shares, DEFAULT_EPSILON)?;
    Ok(ClassPsiResult {
        statistic,
        level: PsiLevel::of(statistic),
        current_shares,
    })
}

/// Validates the inputs and returns shares floored at [`SHARE_FLOOR`] and summing to 1.
fn normalised_shares(counts: &[u64], shares: &[f64]) -> Result<Vec<f64>> {
    if counts.len() != shares.len() {
        return Err(DriftError::DimensionMismatch {
            expected: shares.len(),
            actual: counts.len(),
        });
    }
    if shares.len() < 2 {
        return Err(DriftError::InvalidParameter {
            name: "reference_shares",
            reason: "needs at least two classes".into(),
        });
    }
    super::check_sample("reference shares", shares)?;
    let total: f64 = shares.iter().sum();
    if shares.iter().any(|&s| s < 0.0) || total <= 0.0 {
        return Err(DriftError::InvalidParameter {
            name: "reference_shares",
            reason: "must be non-negative with a positive sum".into(),
        });
    }
    let floored: Vec<f64> = shares
        .iter()
        .map(|s| (s / total).max(SHARE_FLOOR))
        .collect();
    let sum: f64 = floored.iter().sum();
    Ok(floored.into_iter().map(|s| s / sum).collect())
}

/// Survival function of the chi-square distribution: `P(χ²_k >= x) = Q(k/2, x/2)`.
///
/// Errors: `k <= 0`, `x < 0` or non-finite arguments.
pub fn chi2_sf(x: f64, k: f64) -> Result<f64> {
    gamma_q(k / 2.0, x / 2.0)
}

/// Most iterations of the series or continued fraction; both need about `sqrt(a)` terms
/// near `x ≈ a`, so this covers `a` far beyond any class count.
const MAX_ITER: usize = 100_000;
/// Relative accuracy target of the series and continued fraction.
const EPS: f64 = 1e-16;
/// Guard against division by zero in the modified Lentz algorithm.
const FPMIN: f64 = 1e-300;

/// The regularised upper incomplete gamma function `Q(a, x) = Γ(a, x) / Γ(a)
/// = 1/Γ(a) ∫_x^∞ t^{a-1} e^{-t} dt`.
///
/// Numerical Recipes (3rd ed., section 6.2, `Gamma::gammq`): for `x < a + 1` the series
/// `P(a, x) = e^{-x} x^a Σ_n x^n / Γ(a + n + 1)` and `Q = 1 - P`; otherwise Legendre's
/// continued fraction evaluated with the modified Lentz method. (NR's quadrature branch
/// for `a > 100` is left out: it only saves iterations.) Accurate to about 1e-14 relative.
/// Checks: `Q(1, x) = e^{-x}`, `Q(1/2, x) = erfc(sqrt(x))`.
///
/// Edge cases: `Q(a, 0) = 1`. Errors: `a <= 0`, `x < 0` or non-finite arguments
/// ([`DriftError::InvalidParameter`]); no convergence ([`DriftError::Internal`]).
pub fn gamma_q(a: f64, x: f64) -> Result<f64> {
    check_gamma_args(a, x)?;
    if x == 0.0 {
        return Ok(1.0);
    }
    if x < a + 1.0 {
        Ok((1.0 - gamma_p_series(a, x)?).clamp(0.0, 1.0))
    } else {
        Ok(gamma_q_continued_fraction(a, x)?.clamp(0.0, 1.0))
    }
}

/// The regularised lower incomplete gamma function `P(a, x) = 1 - Q(a, x)`, computed
/// directly on whichever side is accurate. Same domain and errors as [`gamma_q`].
pub fn gamma_p(a: f64, x: f64) -> Result<f64> {
    check_gamma_args(a, x)?;
    if x == 0.0 {
        return Ok(0.0);
    }
    if x < a + 1.0 {
        Ok(gamma_p_series(a, x)?.clamp(0.0, 1.0))
    } else {
        Ok((1.0 - gamma_q_continued_fraction(a, x)?).clamp(0.0, 1.0))
    }
}

fn check_gamma_args(a: f64, x: f64) -> Result<()> {
    if !(a.is_finite() && a > 0.0) {
        return Err(DriftError::InvalidParameter {
            name: "a",
            reason: format!("must be finite and positive, got {a}"),
        });
    }
    if !(x.is_finite() && x >= 0.0) {
        return Err(DriftError::InvalidParameter {
            name: "x",
            reason: format!("must be finite and non-negative, got {x}"),
        });
    }
    Ok(())
}

fn gamma_p_series(a: f64, x: f64) -> Result<f64> {
    let mut ap = a;
    let mut del = 1.0 / a;
    let mut sum = del;
    for _ in 0..MAX_ITER {
        ap += 1.0;
        del *= x / ap;
        sum += del;
        if del.abs() < sum.abs() * EPS {
            return Ok(sum * (-x + a * x.ln() - ln_gamma(a)).exp());
        }
    }
    Err(DriftError::Internal(format!(
        "incomplete gamma series did not converge for a={a}, x={x}"
    )))
}

fn gamma_q_continued_fraction(a: f64, x: f64) -> Result<f64> {
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / FPMIN;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..=MAX_ITER {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        if d.abs() < FPMIN {
            d = FPMIN;
        }
        c = b + an / c;
        if c.abs() < FPMIN {
            c = FPMIN;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() <= EPS {
            return Ok((-x + a * x.ln() - ln_gamma(a)).exp() * h);
        }
    }
    Err(DriftError::Internal(format!(
        "incomplete gamma continued fraction did not converge for a={a}, x={x}"
    )))
}

/// `ln Γ(x)` for `x > 0`: the Lanczos approximation with `g = 671/128` and 14 terms of
/// Numerical Recipes (3rd ed., section 6.1, `gammln`), accurate to about 1e-15.
// The constants keep the digits as published, for checking against the book.
#[allow(clippy::excessive_precision)]
pub fn ln_gamma(x: f64) -> f64 {
    const COF: [f64; 14] = [
        57.156_235_665_862_923_5,
        -59.597_960_355_475_491_2,
        14.136_097_974_741_747_1,
        -0.491_913_816_097_620_199,
        0.339_946_499_848_118_887e-4,
        0.465_236_289_270_485_756e-4,
        -0.983_744_753_048_795_646e-4,
        0.158_088_703_224_912_494e-3,
        -0.210_264_441_724_104_883e-3,
        0.217_439_618_115_212_643e-3,
        -0.164_318_106_536_763_890e-3,
        0.844_182_239_838_527_433e-4,
        -0.261_908_384_015_814_087e-4,
        0.368_991_826_595_316_234e-5,
    ];
    debug_assert!(x > 0.0);
    let mut y = x;
    let tmp = x + 5.242_187_5;
    let tmp = (x + 0.5) * tmp.ln() - tmp;
    let mut ser = 0.999_999_999_999_997_092;
    for c in COF {
        y += 1.0;
        ser += c / y;
    }
    tmp + (2.506_628_274_631_000_5 * ser / x).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel_close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
    }

    #[test]
    fn ln_gamma_matches_python() {
        // math.lgamma
        for (x, want) in [
            (0.5, 0.5723649429247004),
            (10.5, 13.940625219403763),
            (100.0, 359.1342053695754),
            (1e-3, 6.907178885383854),
            (1.0, 0.0),
            (2.0, 0.0),
        ] {
            let got = ln_gamma(x);
            assert!(
                (got - want).abs() < 1e-13 * want.abs().max(1.0),
                "x={x}: {got}"
            );
        }
    }

    #[test]
    fn gamma_q_closed_forms() {
        // Q(1/2, x) = erfc(sqrt x); Q(n, x) = e^{-x} Σ_{i<n} x^i/i!; Q(n + 1/2, x) by the
        // erfc recurrence. Values from Python's math module.
        for (a, x, want) in [
            (0.5, 0.1, 0.654720846018577),
            (0.5, 2.0, 0.045500263896358396),
            (1.0, 3.0, 0.049787068367863944),
            (3.0, 2.0, 0.6766764161830635),
            (3.0, 10.0, 0.0027693957155115762),
            (10.5, 5.0, 0.9789118556924739),
            (10.5, 20.0, 0.0074367772978047066),
            (50.0, 40.0, 0.9296649333406052),
            (50.0, 70.0, 0.005140502458505895),
            (0.5, 30.0, 9.485737571073843e-15),
        ] {
            let q = gamma_q(a, x).unwrap();
            assert!(rel_close(q, want, 1e-12), "Q({a}, {x}) = {q}, want {want}");
            let p = gamma_p(a, x).unwrap();
            assert!((p + q - 1.0).abs() < 1e-14, "P + Q != 1 at ({a}, {x})");
        }
        assert_eq!(gamma_q(2.0, 0.0).unwrap(), 1.0);
        assert!(gamma_q(0.0, 1.0).is_err());
        assert!(gamma_q(1.0, -1.0).is_err());
        assert!(gamma_q(1.0, f64::NAN).is_err());
    }

    #[test]
    fn chi_square_matches_scipy_docs() {
        // scipy.stats.chisquare([16, 18, 16, 14, 12, 12]) -> (2.0, 0.84914503608460956)
        let r = chi_square(&[16, 18, 16, 14, 12, 12], &[1.0; 6]).unwrap();
        assert!((r.statistic - 2.0).abs() < 1e-12);
        assert!(rel_close(r.p_value, 0.849_145_036_084_609_6, 1e-12));
        assert_eq!((r.dof, r.n), (5, 88));
        // scipy.stats.chisquare([16, 18, 16, 14, 12, 12], f_exp=[16, 16, 16, 16, 16, 8])
        //   -> (3.5, 0.62338762774958223); shares need not sum to 1.
        let r = chi_square(
            &[16, 18, 16, 14, 12, 12],
            &[16.0, 16.0, 16.0, 16.0, 16.0, 8.0],
        )
        .unwrap();
        assert!((r.statistic - 3.5).abs() < 1e-12);
        assert!(rel_close(r.p_value, 0.623_387_627_749_582_2, 1e-12));
        assert!((r.min_expected - 8.0).abs() < 1e-12);
    }

    #[test]
    fn unseen_class_gives_a_finite_strong_signal() {
        let r = chi_square(&[50, 50, 5], &[0.5, 0.5, 0.0]).unwrap();
        assert!(r.statistic.is_finite() && r.statistic > 1000.0);
        assert!(r.p_value < 1e-10);
    }

    #[test]
    fn class_psi_hand_computed() {
        // Shares 0.5/0.5 -> 0.8/0.2: 0.3 ln 1.6 - 0.3 ln 0.4 = 0.3 ln 4 = 0.41588830833596715.
        let r = class_psi(&[80, 20], &[0.5, 0.5]).unwrap();
        assert!((r.statistic - 0.415_888_308_335_967_1).abs() < 1e-14);
        assert_eq!(r.level, PsiLevel::Major);
        assert_eq!(r.current_shares, vec![0.8, 0.2]);
        assert_eq!(class_psi(&[10, 10], &[1.0, 1.0]).unwrap().statistic, 0.0);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(
            chi_square(&[0, 0], &[0.5, 0.5]),
            Err(DriftError::EmptySample { which: "current" })
        );
        assert_eq!(
            chi_square(&[1, 2, 3], &[0.5, 0.5]),
            Err(DriftError::DimensionMismatch {
                expected: 2,
                actual: 3
            })
        );
        assert!(chi_square(&[5], &[1.0]).is_err());
        assert!(chi_square(&[5, 5], &[0.0, 0.0]).is_err());
        assert!(chi_square(&[5, 5], &[-0.5, 1.5]).is_err());
        assert!(class_psi(&[5, 5], &[f64::NAN, 1.0]).is_err());
    }
}
