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
/// (the other two blocks follow from the row sums and the grand total). Labellings are
/// scored 64 at a time in one pass over the matrix, so each row is read from memory once per
/// batch rather than once per labelling; the labellings drawn and each one's sum are the
/// same as one at a time, so the p-value does not depend on the batching.
///
/// Precision: squared distances are `|x|² + |y|² - 2 x·y` in `f32` (a tiled, vectorised
/// dot-product kernel; negatives from rounding clamped to 0) and kernel values are stored in
/// `f32`; every sum over the matrix (row sums, blocks, MMD²) is in `f64`. Against an all-`f64`
/// evaluation MMD² differs by about 1e-8 absolute, far below the permutation spread. The
/// median is exact (the middle order statistics of all pairs, found by a radix bucket pass and
/// a selection in one bucket, not estimated from a subsample).
///
/// Cost, single-threaded, release build, for the drift anchors' sizes (`m = 5000`,
/// `n = 1000`, `d = 128`, 100 permutations, median bandwidth): 0.67 s wall for the whole test
/// (0.44-0.60 s CPU: distances 0.27-0.38 s, median 0.05-0.07 s, kernel values and row sums
/// 0.07-0.10 s, permutations 0.04-0.06 s), measured with `bench/drift.sh`
/// (`cargo bench -p vigil-core --bench drift`) on the 2-core AMD EPYC VM shared with other
/// builds, at the same raised priority as the Alibi Detect runs it is compared with (21.6 s;
/// see `bench/README.md`). The cost grows as `(m+n)² d / 2` for the matrix and
/// `permutations · min(m, n)² / 2` for the p-value. Memory: the strict upper triangle of the
/// kernel matrix in `f32`, `2 (m+n)²` bytes (72 MB at 6,000 vectors; 0.3 MB at 400), plus
/// two `f32` copies of the vectors (6 MB at 6,000 × 128) and a 512 KB histogram.
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
    let tri = Triangle::new(big_n);
    // Squared distances of every pair i < j, then kernel values in place: one packed buffer.
    let mut k = squared_distances(&pooled, tri);
    let bandwidth = match config.bandwidth {
        Some(b) => b,
        None => median_heuristic(&k),
    };
    let row_sums = kernel_in_place(&mut k, tri, bandwidth);
    let sums = KernelSums {
        k: &k,
        tri,
        total: row_sums.iter().sum(),
        row_sums: &row_sums,
        m,
        n,
    };
    // Each labelling is scored through the smaller group only: O(min(m, n)²) adds.
    let small = m.min(n);
    let small_is_reference = m <= n;
    let observed: Vec<usize> = if small_is_reference {
        (0..m).collect()
    } else {
        (m..big_n).collect()
    };
    let mmd2 = sums.mmd2(&[observed], small_is_reference)[0];

    let p_value = (config.permutations > 0).then(|| {
        let mut rng = SplitMix64::new(config.seed);
        let mut idx: Vec<usize> = (0..big_n).collect();
        let mut exceed = 0usize;
        let mut done = 0;
        while done < config.permutations {
            // A batch of labellings is scored in one pass over the matrix (see `mmd2`).
            let batch = PERMUTATION_BATCH.min(config.permutations - done);
            let groups: Vec<Vec<usize>> = (0..batch)
                .map(|_| {
                    rng.partial_shuffle(&mut idx, small);
                    let mut group = idx[..small].to_vec();
                    // Sorted, so that a labelling's score does not depend on the draw order.
                    group.sort_unstable();
                    group
                })
                .collect();
            exceed += sums
                .mmd2(&groups, small_is_reference)
                .iter()
                .filter(|&&v| v >= mmd2)
                .count();
            done += batch;
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

/// Labellings scored together in one pass over the kernel matrix (see [`KernelSums::mmd2`]).
const PERMUTATION_BATCH: usize = 64;
/// Rows and columns of one tile of the distance kernel ([`tile`]): 4 × 8 accumulators fill
/// 8 SSE registers.
const TILE_ROWS: usize = 4;
const TILE_COLS: usize = 8;
/// Floats of column vectors per cache block of the distance pass (64 KiB, inside L2).
const BLOCK_FLOATS: usize = 16 * 1024;

/// Layout of the strict upper triangle of a symmetric `n × n` matrix, packed row by row: row
/// `i` holds columns `i + 1..n`. The diagonal (`k(x, x) = 1`) and the lower half are implied.
#[derive(Debug, Clone, Copy)]
struct Triangle {
    n: usize,
}

impl Triangle {
    fn new(n: usize) -> Self {
        Triangle { n }
    }

    fn len(self) -> usize {
        self.n * (self.n - 1) / 2
    }

    /// Position of entry `(i, i + 1)`: the rows above hold `n - 1, n - 2, …` entries.
    fn start(self, i: usize) -> usize {
        i * (2 * self.n - 1 - i) / 2
    }

    /// Positions of row `i` (columns `i + 1..n`).
    fn row(self, i: usize) -> std::ops::Range<usize> {
        let s = self.start(i);
        s..s + (self.n - 1 - i)
    }
}

/// `|x_i - x_j|²` for every pair `i < j`, packed as [`Triangle`], in `f32`.
///
/// Computed as `|x_i|² + |x_j|² - 2 x_i·x_j` (clamped at `+0`), the dot products by a
/// register-tiled kernel ([`tile`]) over column blocks that stay in cache: a small matrix
/// product the compiler vectorises, instead of `N²/2` separate difference loops. Norms are
/// summed in the same order as the kernel's dot products, so identical vectors give exactly 0.
fn squared_distances(pooled: &[&[f32]], tri: Triangle) -> Vec<f32> {
    let n = pooled.len();
    let d = pooled[0].len();
    let rows = n.div_ceil(TILE_COLS) * TILE_COLS;
    let mut xs = vec![0.0f32; rows * d];
    for (dst, v) in xs.chunks_exact_mut(d).zip(pooled) {
        dst.copy_from_slice(v);
    }
    // Column panels: TILE_COLS vectors interleaved, coordinate-major.
    let mut panels = vec![0.0f32; rows * d];
    for (p, panel) in panels.chunks_exact_mut(TILE_COLS * d).enumerate() {
        for (k, lanes) in panel.chunks_exact_mut(TILE_COLS).enumerate() {
            for (c, lane) in lanes.iter_mut().enumerate() {
                *lane = xs[(p * TILE_COLS + c) * d + k];
            }
        }
    }
    let norms: Vec<f32> = xs
        .chunks_exact(d)
        .map(|v| v.iter().fold(0.0f32, |s, &x| s + x * x))
        .collect();
    let mut out = vec![0.0f32; tri.len()];
    let block = (BLOCK_FLOATS / d / TILE_COLS).max(1) * TILE_COLS;
    for j_start in (0..n).step_by(block) {
        let j_end = (j_start + block).min(n);
        for i0 in (0..j_end - 1).step_by(TILE_ROWS) {
            let a: [&[f32]; TILE_ROWS] = std::array::from_fn(|r| {
                let i = (i0 + r).min(n - 1);
                &xs[i * d..(i + 1) * d]
            });
            let first_panel = (j_start.max(i0 + 1)) / TILE_COLS;
            for p in first_panel..j_end.div_ceil(TILE_COLS) {
                let dot = tile(&a, &panels[p * TILE_COLS * d..(p + 1) * TILE_COLS * d]);
                for (r, dot_r) in dot.iter().enumerate() {
                    let i = i0 + r;
                    let lo = (p * TILE_COLS).max(i + 1);
                    let hi = ((p + 1) * TILE_COLS).min(j_end);
                    if lo >= hi {
                        continue;
                    }
                    let base = tri.start(i) + lo - i - 1;
                    for (dst, jj) in out[base..base + (hi - lo)].iter_mut().zip(lo..hi) {
                        let d2 = (norms[i] + norms[jj]) - 2.0 * dot_r[jj - p * TILE_COLS];
                        *dst = if d2 > 0.0 { d2 } else { 0.0 };
                    }
                }
            }
        }
    }
    out
}

/// Dot products of `TILE_ROWS` row vectors with the `TILE_COLS` vectors of one panel (the
/// vectors interleaved coordinate by coordinate): each step broadcasts one coordinate of a
/// row against a contiguous lane of the panel, so the inner loop is a plain SIMD
/// multiply-add with no horizontal sums. Each pair's sum runs over the coordinates in order.
#[inline(always)]
fn tile(a: &[&[f32]; TILE_ROWS], panel: &[f32]) -> [[f32; TILE_COLS]; TILE_ROWS] {
    let d = a[0].len();
    let a: [&[f32]; TILE_ROWS] = a.map(|v| &v[..d]);
    let b = &panel.as_chunks::<TILE_COLS>().0[..d];
    let mut acc = [[0.0f32; TILE_COLS]; TILE_ROWS];
    for (k, bk) in b.iter().enumerate() {
        for (acc_r, a_r) in acc.iter_mut().zip(&a) {
            let x = a_r[k];
            for (s, &y) in acc_r.iter_mut().zip(bk) {
                *s += x * y;
            }
        }
    }
    acc
}

/// Median pairwise Euclidean distance from the packed squared distances (see [`mmd_test`]
/// for the fallbacks). Exact: the middle order statistics are selected, not estimated.
fn median_heuristic(d2: &[f32]) -> f64 {
    let len = d2.len();
    let upper = f64::from(select(d2, len / 2)).sqrt();
    let median = if len % 2 == 1 {
        upper
    } else {
        (f64::from(select(d2, len / 2 - 1)).sqrt() + upper) / 2.0
    };
    if median > 0.0 {
        return median;
    }
    let (sum, count) = d2
        .iter()
        .filter(|&&v| v > 0.0)
        .fold((0.0, 0usize), |(s, c), &v| (s + f64::from(v).sqrt(), c + 1));
    if count > 0 { sum / count as f64 } else { 1.0 }
}

/// The `rank`-th smallest (from 0) of non-negative floats, without copying them all: the bit
/// patterns of non-negative floats sort like the numbers, so one pass counts the top 16 bits,
/// and only the values in the bucket that holds `rank` are copied and selected.
fn select(values: &[f32], rank: usize) -> f32 {
    let mut counts = vec![0usize; 1 << 16];
    for v in values {
        counts[(v.to_bits() >> 16) as usize] += 1;
    }
    let mut below = 0;
    let mut bucket = 0;
    for (b, &c) in counts.iter().enumerate() {
        if below + c > rank {
            bucket = b;
            break;
        }
        below += c;
    }
    let mut candidates: Vec<u32> = values
        .iter()
        .map(|v| v.to_bits())
        .filter(|&bits| (bits >> 16) as usize == bucket)
        .collect();
    let (_, &mut bits, _) = candidates.select_nth_unstable(rank - below);
    f32::from_bits(bits)
}

/// Turns the packed squared distances into kernel values `exp(-d² / (2σ²))` in place and
/// returns the row sums of the full matrix (diagonal of ones included), in `f64`.
fn kernel_in_place(k: &mut [f32], tri: Triangle, bandwidth: f64) -> Vec<f64> {
    let scale = -1.0 / (2.0 * bandwidth * bandwidth);
    let mut row_sums = vec![1.0f64; tri.n];
    for i in 0..tri.n {
        let row = &mut k[tri.row(i)];
        for v in row.iter_mut() {
            *v = ((f64::from(*v) * scale) as f32).exp();
        }
        let (own, later) = row_sums[i..].split_at_mut(1);
        let mut acc = [0.0f64; 4];
        let chunks = row.as_chunks::<4>();
        let (later_chunks, later_rest) = later.as_chunks_mut::<4>();
        for (vs, cols) in chunks.0.iter().zip(later_chunks.iter_mut()) {
            for l in 0..4 {
                let v = f64::from(vs[l]);
                acc[l] += v;
                cols[l] += v;
            }
        }
        let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        for (&v, col) in chunks.1.iter().zip(later_rest) {
            s += f64::from(v);
            *col += f64::from(v);
        }
        own[0] += s;
    }
    row_sums
}

/// The pooled kernel matrix (packed upper triangle, `f32`) with its row sums and grand
/// total, from which the MMD² of any labelling follows by summing one group's block.
struct KernelSums<'a> {
    k: &'a [f32],
    tri: Triangle,
    row_sums: &'a [f64],
    total: f64,
    m: usize,
    n: usize,
}

impl KernelSums<'_> {
    /// `MMD²_u` of each labelling, where each sorted index list of `groups` forms the
    /// reference side (`is_reference`) or the current side. With `G` the group,
    /// `S_GG = Σ_{i,j∈G} k_ij` (diagonal included: `k(x, x) = 1`) and
    /// `S_G· = Σ_{i∈G} rowsum_i`, the cross sum is `S_G· - S_GG` and the other group's block
    /// is `total - S_GG - 2 (S_G· - S_GG)`.
    ///
    /// The blocks are summed in one pass over the rows: a row is read by every labelling of
    /// the batch that holds it while it is in cache, instead of once per labelling from
    /// memory. Sums are in `f64`, in a fixed order.
    fn mmd2(&self, groups: &[Vec<usize>], is_reference: bool) -> Vec<f64> {
        let mut in_g: Vec<f64> = groups.iter().map(|g| g.len() as f64).collect();
        let mut cursor = vec![0usize; groups.len()];
        for i in 0..self.tri.n {
            let row = &self.k[self.tri.row(i)];
            for ((g, a), s) in groups.iter().zip(&mut cursor).zip(&mut in_g) {
                if g.get(*a) == Some(&i) {
                    *a += 1;
                    *s += 2.0 * gather_sum(row, &g[*a..], i + 1);
                }
            }
        }
        let (mf, nf) = (self.m as f64, self.n as f64);
        groups
            .iter()
            .zip(in_g)
            .map(|(g, in_g)| {
                let all_g: f64 = g.iter().map(|&i| self.row_sums[i]).sum();
                let cross = all_g - in_g;
                let in_other = self.total - in_g - 2.0 * cross;
                let (in_x, in_y) = if is_reference {
                    (in_g, in_other)
                } else {
                    (in_other, in_g)
                };
                (in_x - mf) / (mf * (mf - 1.0)) + (in_y - nf) / (nf * (nf - 1.0))
                    - 2.0 * cross / (mf * nf)
            })
            .collect()
    }
}

/// `Σ_{j ∈ cols} row[j - first]` in `f64`, four independent accumulators.
fn gather_sum(row: &[f32], cols: &[usize], first: usize) -> f64 {
    let mut acc = [0.0f64; 4];
    let (chunks, rest) = cols.as_chunks::<4>();
    for c in chunks {
        for l in 0..4 {
            acc[l] += f64::from(row[c[l] - first]);
        }
    }
    rest.iter()
        .fold((acc[0] + acc[1]) + (acc[2] + acc[3]), |s, &j| {
            s + f64::from(row[j - first])
        })
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
        // The kernel matrix is stored in f32 (relative rounding 6e-8 per value).
        assert!((r.mmd2 - 0.5434255807846111).abs() < 1e-7, "{}", r.mmd2);
        assert_eq!(r.p_value, None);
        let cfg = MmdConfig {
            permutations: 0,
            bandwidth: Some(1.0),
            ..MmdConfig::default()
        };
        let r = mmd_test(&x(), &y(), &cfg).unwrap();
        assert!((r.mmd2 - 0.4417998533758668).abs() < 1e-7, "{}", r.mmd2);
    }

    /// Direct `f64` evaluation of the definition: differences, every pair, full sums.
    fn direct_mmd2(x: &[Vec<f32>], y: &[Vec<f32>], bandwidth: f64) -> f64 {
        let k = |a: &[f32], b: &[f32]| {
            let d2: f64 = a
                .iter()
                .zip(b)
                .map(|(&p, &q)| (f64::from(p) - f64::from(q)).powi(2))
                .sum();
            (-d2 / (2.0 * bandwidth * bandwidth)).exp()
        };
        let within = |s: &[Vec<f32>]| {
            let mut t = 0.0;
            for (i, a) in s.iter().enumerate() {
                for (j, b) in s.iter().enumerate() {
                    if i != j {
                        t += k(a, b);
                    }
                }
            }
            t / (s.len() * (s.len() - 1)) as f64
        };
        let cross: f64 = x.iter().flat_map(|a| y.iter().map(|b| k(a, b))).sum();
        within(x) + within(y) - 2.0 * cross / (x.len() * y.len()) as f64
    }

    #[test]
    fn tiled_f32_kernel_matches_the_direct_definition() {
        // Sizes that exercise partial tiles (353 vectors), several column blocks and a
        // dimension that is not a multiple of 4 (130).
        let mut rng = SplitMix64::new(5);
        let a = gaussian_cloud(&mut rng, 203, 130, 0.0);
        let b = gaussian_cloud(&mut rng, 150, 130, 0.1);
        let cfg = MmdConfig {
            permutations: 0,
            ..MmdConfig::default()
        };
        let r = mmd_test(&a, &b, &cfg).unwrap();
        let mut dists: Vec<f64> = Vec::new();
        let pooled: Vec<&Vec<f32>> = a.iter().chain(&b).collect();
        for i in 0..pooled.len() {
            for j in (i + 1)..pooled.len() {
                let d2: f64 = pooled[i]
                    .iter()
                    .zip(pooled[j])
                    .map(|(&p, &q)| (f64::from(p) - f64::from(q)).powi(2))
                    .sum();
                dists.push(d2.sqrt());
            }
        }
        dists.sort_by(f64::total_cmp);
        let mid = dists.len() / 2;
        let median = if dists.len() % 2 == 1 {
            dists[mid]
        } else {
            (dists[mid - 1] + dists[mid]) / 2.0
        };
        assert!(
            (r.bandwidth / median - 1.0).abs() < 1e-6,
            "{} {median}",
            r.bandwidth
        );
        let want = direct_mmd2(&a, &b, r.bandwidth);
        assert!((r.mmd2 - want).abs() < 1e-6, "{} {want}", r.mmd2);
        // The estimate is far above the rounding: the comparison is not vacuous.
        assert!(want > 1e-3, "{want}");
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
