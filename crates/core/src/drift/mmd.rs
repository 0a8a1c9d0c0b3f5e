//! Maximum Mean Discrepancy with a permutation test: has the model's view of the images (its
//! embeddings) changed, as a whole and in any direction?

use serde::Serialize;

use super::rng::SplitMix64;
use super::{DriftError, Result};

/// Settings of [`mmd_test`].
#[derive(Debug, Clone, PartialEq)]
pub struct MmdConfig {
    /// Random relabellings for the p-value; 0 skips the test (`p_value: None`). 200 resolves
    /// p-values down to 1/201 ≈ 0.005, enough for a 1% alarm level after calibration.
    pub permutations: usize,
    /// Seed of the relabellings: the same seed and inputs give the same p-value.
    pub seed: u64,
    /// Kernel bandwidth `σ`; `None` uses the median heuristic on the pooled sample. Fix it
    /// (from the reference, once) when MMD² values of different windows are compared.
    pub bandwidth: Option<f64>,
}

impl Default for MmdConfig {
    fn default() -> Self {
        MmdConfig {
            permutations: 200,
            seed: 0,
            bandwidth: None,
        }
    }
}

/// The outcome of an MMD two-sample test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MmdResult {
    /// The unbiased estimate `MMD²_u` (may be slightly negative when the samples agree).
    pub mmd2: f64,
    /// The Gaussian kernel's `σ`.
    pub bandwidth: f64,
    /// Permutation p-value `(1 + #{b: MMD²_b >= MMD²}) / (1 + permutations)`; `None` when no
    /// permutations were asked for.
    pub p_value: Option<f64>,
    /// Permutations run.
    pub permutations: usize,
    /// Reference vectors.
    pub n_reference: usize,
    /// Current vectors.
    pub n_current: usize,
}

/// Unbiased MMD² between two sets of embedding vectors with a Gaussian kernel, and its
/// permutation p-value.
///
/// Definition (Gretton et al., "A kernel two-sample test", JMLR 2012, eq. 3): with
/// `k(x, y) = exp(-|x - y|² / (2σ²))`, `m` reference vectors `x` and `n` current vectors `y`,
/// `MMD²_u = Σ_{i≠j} k(x_i, x_j) / (m(m-1)) + Σ_{i≠j} k(y_i, y_j) / (n(n-1))
///         - 2 Σ_{i,j} k(x_i, y_j) / (mn)`.
/// It is 0 in expectation when both samples come from the same distribution, and the
/// Gaussian kernel is characteristic, so any difference in distribution is eventually seen.
///
/// Bandwidth: the median heuristic (Gretton et al. 2012, section 8): `σ` = median Euclidean
/// distance over all pairs of the pooled sample (mean of the two middle values for an even
/// count). If that median is 0 (over half the pairs are duplicates) the mean of the non-zero
/// distances is used; if every vector is identical, `σ = 1` (MMD² is then 0).
///
/// p-value: the pooled labels are shuffled `permutations` times (a uniform random choice of
/// which `m` vectors are "reference", SplitMix64 seeded with `seed`), and
/// `p = (1 + #{MMD²_b >= MMD²}) / (1 + permutations)`, which is a valid p-value (never 0;
/// Phipson & Smyth, 2010). The pooled kernel matrix and its row sums are computed once
/// (`(m+n)²/2` kernel evaluations of cost `d`); each permutation then only adds up the
/// kernel block of the smaller group, `min(m, n)²/2` additions and no kernel evaluations
/// (the other two blocks follow from the row sums and the grand total).
///
/// Cost: for `m = n = 200`, `d = 128`, 200 permutations, 7 to 12 ms per call in a release
/// build, of which 4 to 5 ms is the kernel matrix and bandwidth (measured with the ignored
/// test `cost_n200_d128_p200`, `cargo test -p vigil-core --release -- --ignored
/// --nocapture`, on a 2-core AMD EPYC VM shared with other builds). Single-threaded.
/// Memory: one `(m+n)²` matrix of `f64` (1.3 MB at 400).
///
/// Like every test here the p-value assumes independent images; correlated windows make it
/// too small. Calibrate the alarm threshold on MMD² itself with [`super::calibrate`].
///
/// Errors: fewer than 2 vectors in either sample ([`DriftError::TooFewSamples`]), vectors
/// of length 0 or of different lengths ([`DriftError::DimensionMismatch`], against the first
/// reference vector), non-finite values, a given bandwidth that is not finite and positive.
pub fn mmd_test<R: AsRef<[f32]>, C: AsRef<[f32]>>(
    reference: &[R],
    current: &[C],
    config: &MmdConfig,
) -> Result<MmdResult> {
    let (m, n) = (reference.len(), current.len());
    for (which, got) in [("reference", m), ("current", n)] {
        if got < 2 {
            return Err(DriftError::TooFewSamples {
                which,
                needed: 2,
                got,
            });
        }
    }
    let pooled: Vec<&[f32]> = reference
        .iter()
        .map(AsRef::as_ref)
        .chain(current.iter().map(AsRef::as_ref))
        .collect();
    check_vectors(&pooled, m)?;
    if let Some(b) = config.bandwidth
        && !(b.is_finite() && b > 0.0)
    {
        return Err(DriftError::InvalidParameter {
            name: "bandwidth",
            reason: format!("must be finite and positive, got {b}"),
        });
    }

    let big_n = m + n;
    // Squared distances, then kernel values in place: one N×N buffer.
    let mut k = vec![0.0f64; big_n * big_n];
    for i in 0..big_n {
        for j in (i + 1)..big_n {
            let d2 = squared_distance(pooled[i], pooled[j]);
            k[i * big_n + j] = d2;
            k[j * big_n + i] = d2;
        }
    }
    let bandwidth = match config.bandwidth {
        Some(b) => b,
        None => median_heuristic(&k, big_n),
    };
    let scale = -1.0 / (2.0 * bandwidth * bandwidth);
    for i in 0..big_n {
        k[i * big_n + i] = 1.0;
        for j in (i + 1)..big_n {
            let v = (k[i * big_n + j] * scale).exp();
            k[i * big_n + j] = v;
            k[j * big_n + i] = v;
        }
    }
    let row_sums: Vec<f64> = k.chunks_exact(big_n).map(|r| r.iter().sum()).collect();
    let sums = KernelSums {
        k: &k,
        row_sums: &row_sums,
        total: row_sums.iter().sum(),
        m,
        n,
    };
    // Each labelling is scored through the smaller group only: O(min(m, n)²) adds.
    let small = m.min(n);
    let small_is_reference = m <= n;
    let mut group: Vec<usize> = if small_is_reference {
        (0..m).collect()
    } else {
        (m..big_n).collect()
    };
    let mmd2 = sums.mmd2(&group, small_is_reference);

    let p_value = (config.permutations > 0).then(|| {
        let mut rng = SplitMix64::new(config.seed);
        let mut idx: Vec<usize> = (0..big_n).collect();
        let mut exceed = 0usize;
        for _ in 0..config.permutations {
            rng.partial_shuffle(&mut idx, small);
            group.clear();
            group.extend_from_slice(&idx[..small]);
            // Sorted, so that a labelling's score does not depend on the draw order.
            group.sort_unstable();
            if sums.mmd2(&group, small_is_reference) >= mmd2 {
                exceed += 1;
            }
        }
        (1 + exceed) as f64 / (1 + config.permutations) as f64
    });

    Ok(MmdResult {
        mmd2,
        bandwidth,
        p_value,
        permutations: config.permutations,
        n_reference: m,
        n_current: n,
    })
}

/// Every vector the same non-zero length and finite; `m` splits reference from current.
fn check_vectors(pooled: &[&[f32]], m: usize) -> Result<()> {
    let d = pooled[0].len();
    if d == 0 {
        return Err(DriftError::DimensionMismatch {
            expected: 1,
            actual: 0,
        });
    }
    for (i, v) in pooled.iter().enumerate() {
        let (which, index) = if i < m {
            ("reference", i)
        } else {
            ("current", i - m)
        };
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
    Ok(())
}

fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
    // Eight independent f64 accumulators: the compiler vectorises this (a single running
    // sum would be a serial dependency chain); the order of additions is still fixed.
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            let d = f64::from(x[l]) - f64::from(y[l]);
            acc[l] += d * d;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Median pairwise Euclidean distance from the matrix of squared distances (see
/// [`mmd_test`] for the fallbacks).
fn median_heuristic(d2: &[f64], big_n: usize) -> f64 {
    let mut dists: Vec<f64> = (0..big_n)
        .flat_map(|i| ((i + 1)..big_n).map(move |j| (i, j)))
        .map(|(i, j)| d2[i * big_n + j].sqrt())
        .collect();
    let len = dists.len();
    let (left, &mut upper, _) = dists.select_nth_unstable_by(len / 2, f64::total_cmp);
    let median = if len % 2 == 1 {
        upper
    } else {
        let lower = left.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + upper) / 2.0
    };
    if median > 0.0 {
        return median;
    }
    let (sum, count) = dists
        .iter()
        .filter(|&&d| d > 0.0)
        .fold((0.0, 0usize), |(s, c), &d| (s + d, c + 1));
    if count > 0 { sum / count as f64 } else { 1.0 }
}

/// The pooled kernel matrix with its row sums and grand total, from which the MMD² of any
/// labelling follows by summing one group's block.
struct KernelSums<'a> {
    k: &'a [f64],
    row_sums: &'a [f64],
    total: f64,
    m: usize,
    n: usize,
}

impl KernelSums<'_> {
    /// `MMD²_u` when the sorted indices `group` form the reference side (`is_reference`) or
    /// the current side. With `G` the group, `S_GG = Σ_{i,j∈G} k_ij` (diagonal included:
    /// `k(x, x) = 1`) and `S_G· = Σ_{i∈G} rowsum_i`, the cross sum is `S_G· - S_GG` and the
    /// other group's block is `total - S_GG - 2 (S_G· - S_GG)`.
    fn mmd2(&self, group: &[usize], is_reference: bool) -> f64 {
        let big_n = self.m + self.n;
        let mut in_g = group.len() as f64;
        for (a, &i) in group.iter().enumerate() {
            let row = &self.k[i * big_n..(i + 1) * big_n];
            in_g += 2.0 * group[a + 1..].iter().map(|&j| row[j]).sum::<f64>();
        }
        let all_g: f64 = group.iter().map(|&i| self.row_sums[i]).sum();
        let cross = all_g - in_g;
        let in_other = self.total - in_g - 2.0 * cross;
        let (in_x, in_y) = if is_reference {
            (in_g, in_other)
        } else {
            (in_other, in_g)
        };
        let (mf, nf) = (self.m as f64, self.n as f64);
        (in_x - mf) / (mf * (mf - 1.0)) + (in_y - nf) / (nf * (nf - 1.0)) - 2.0 * cross / (mf * nf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x() -> Vec<Vec<f32>> {
        vec![vec![0.0, 0.0], vec![1.0, 0.0], vec![0.0, 1.0]]
    }
    fn y() -> Vec<Vec<f32>> {
        vec![
            vec![2.0, 2.0],
            vec![3.0, 2.0],
            vec![2.0, 4.0],
            vec![1.0, 1.0],
        ]
    }

    fn gaussian_cloud(rng: &mut SplitMix64, n: usize, d: usize, shift: f32) -> Vec<Vec<f32>> {
        // Sum of 4 uniforms: close enough to normal for a test, and deterministic.
        (0..n)
            .map(|_| {
                (0..d)
                    .map(|_| {
                        let s: f64 = (0..4)
                            .map(|_| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
                            .sum();
                        (s - 2.0) as f32 + shift
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn matches_a_direct_python_computation() {
        // Python (stdlib): median of the 21 pairwise distances = sqrt(5); the three sums of
        // the unbiased estimator give 0.5434255807846111 (0.4417998533758668 with σ = 1).
        let cfg = MmdConfig {
            permutations: 0,
            ..MmdConfig::default()
        };
        let r = mmd_test(&x(), &y(), &cfg).unwrap();
        assert!((r.bandwidth - 5f64.sqrt()).abs() < 1e-12);
        assert!((r.mmd2 - 0.5434255807846111).abs() < 1e-12, "{}", r.mmd2);
        assert_eq!(r.p_value, None);
        let cfg = MmdConfig {
            permutations: 0,
            bandwidth: Some(1.0),
            ..MmdConfig::default()
        };
        let r = mmd_test(&x(), &y(), &cfg).unwrap();
        assert!((r.mmd2 - 0.4417998533758668).abs() < 1e-12);
    }

    #[test]
    fn permutation_p_value_approaches_the_exact_one() {
        // Enumerating all C(7, 3) = 35 labellings in Python: 2 reach the observed MMD², so
        // the exact permutation p-value is 2/35 = 0.0571.
        let cfg = MmdConfig {
            permutations: 20_000,
            seed: 42,
            bandwidth: None,
        };
        let p = mmd_test(&x(), &y(), &cfg).unwrap().p_value.unwrap();
        assert!((p - 2.0 / 35.0).abs() < 0.01, "{p}");
    }

    #[test]
    fn same_seed_same_p_and_shift_detected() {
        let mut rng = SplitMix64::new(1);
        let a = gaussian_cloud(&mut rng, 40, 8, 0.0);
        let b = gaussian_cloud(&mut rng, 40, 8, 0.0);
        let c = gaussian_cloud(&mut rng, 40, 8, 0.5);
        let cfg = MmdConfig {
            permutations: 200,
            seed: 9,
            bandwidth: None,
        };
        let same1 = mmd_test(&a, &b, &cfg).unwrap();
        let same2 = mmd_test(&a, &b, &cfg).unwrap();
        assert_eq!(same1, same2);
        assert!(same1.p_value.unwrap() > 0.01, "{same1:?}");
        let shifted = mmd_test(&a, &c, &cfg).unwrap();
        assert_eq!(shifted.p_value, Some(1.0 / 201.0), "{shifted:?}");
        assert!(shifted.mmd2 > same1.mmd2);
    }

    #[test]
    fn identical_vectors_give_zero() {
        let v = vec![vec![1.0f32, 2.0]; 4];
        let r = mmd_test(&v, &v, &MmdConfig::default()).unwrap();
        assert_eq!(r.bandwidth, 1.0);
        assert!(r.mmd2.abs() < 1e-12);
        assert_eq!(r.p_value, Some(1.0));
    }

    #[test]
    fn bad_input_is_an_error() {
        let cfg = MmdConfig::default();
        assert_eq!(
            mmd_test(&x()[..1], &y(), &cfg),
            Err(DriftError::TooFewSamples {
                which: "reference",
                needed: 2,
                got: 1
            })
        );
        let bad = vec![vec![0.0f32, 0.0, 0.0], vec![1.0, 1.0, 1.0]];
        assert_eq!(
            mmd_test(&x(), &bad, &cfg),
            Err(DriftError::DimensionMismatch {
                expected: 2,
                actual: 3
            })
        );
        let nan = vec![vec![0.0f32, 0.0], vec![f32::NAN, 1.0]];
        assert_eq!(
            mmd_test(&x(), &nan, &cfg),
            Err(DriftError::NonFinite {
                which: "current",
                index: 1
            })
        );
        let cfg = MmdConfig {
            bandwidth: Some(0.0),
            ..cfg
        };
        assert!(mmd_test(&x(), &y(), &cfg).is_err());
    }

    /// Prints the cost of one window at the sizes the docs quote; no timed assertion.
    #[test]
    #[ignore = "timing only: run with --release --ignored --nocapture"]
    fn cost_n200_d128_p200() {
        let mut rng = SplitMix64::new(3);
        let a = gaussian_cloud(&mut rng, 200, 128, 0.0);
        let b = gaussian_cloud(&mut rng, 200, 128, 0.0);
        let cfg = MmdConfig {
            permutations: 200,
            seed: 1,
            bandwidth: None,
        };
        let start = std::time::Instant::now();
        let runs = 10;
        for _ in 0..runs {
            std::hint::black_box(mmd_test(&a, &b, &cfg).unwrap());
        }
        println!(
            "mmd_test n=m=200 d=128 P=200: {:?} per call",
            start.elapsed() / runs
        );
        let cfg = MmdConfig {
            permutations: 0,
            ..cfg
        };
        let start = std::time::Instant::now();
        for _ in 0..runs {
            std::hint::black_box(mmd_test(&a, &b, &cfg).unwrap());
        }
        println!(
            "  of which kernel matrix and median (P=0): {:?}",
            start.elapsed() / runs
        );
    }
}
