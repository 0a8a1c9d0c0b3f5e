//! Per-image statistics: cheap numbers that move when the imaging chain changes (a new
//! detector panel, tube setting, digitiser or material), computed on the decoded pixels
//! before the bundle maps their values, so that a window/level or standardisation step in
//! the preprocessing cannot hide the change.

use serde::{Deserialize, Serialize};

/// Statistics of one decoded image, intensities scaled to `[0, 1]` of its bit depth's range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImageStats {
    /// Mean intensity.
    pub mean: f64,
    /// Standard deviation of the intensity (global contrast).
    pub contrast: f64,
    /// 99th minus 1st percentile of the intensity.
    pub dynamic_range: f64,
    /// Variance of the 4-neighbour Laplacian: falls when the image blurs.
    pub sharpness: f64,
    /// Noise standard deviation by Immerkær's method ("Fast noise variance estimation",
    /// CVIU 1996): the Laplacian-difference mask cancels structure up to second order.
    pub noise: f64,
    /// Share of pixels at either end of the range (clipped black or white).
    pub saturated: f64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bits per sample of the decoded image (8 or 16).
    pub bit_depth: u8,
}

/// The statistics' names, in the order of [`ImageStats::values`].
pub const STAT_NAMES: [&str; 9] = [
    "mean",
    "contrast",
    "dynamic_range",
    "sharpness",
    "noise",
    "saturated",
    "width",
    "height",
    "bit_depth",
];

/// What each statistic means, for reports written for people who never heard of a KS test.
pub const STAT_DESCRIPTIONS: [&str; 9] = [
    "mean brightness (0 black, 1 white)",
    "contrast: spread of the grey levels",
    "dynamic range: grey levels between the darkest and brightest 1%",
    "sharpness: falls when the image blurs",
    "noise: grain of the detector or film",
    "share of clipped (pure black or white) pixels",
    "width in pixels",
    "height in pixels",
    "bits per pixel",
];

/// Most pixels looked at: larger images are sampled on a regular grid of rows and columns,
/// which keeps a whole film under a few milliseconds.
const MAX_SAMPLED_PIXELS: usize = 1 << 20;

impl ImageStats {
    /// The statistics as numbers, in the order of [`STAT_NAMES`].
    pub fn values(&self) -> [f64; 9] {
        [
            self.mean,
            self.contrast,
            self.dynamic_range,
            self.sharpness,
            self.noise,
            self.saturated,
            f64::from(self.width),
            f64::from(self.height),
            f64::from(self.bit_depth),
        ]
    }

    /// Computes the statistics of a grey plane (`width × height` values, row-major, in the
    /// decoded range `0..=max_value`; a colour image passes its mean over channels).
    /// Images over a million pixels are sampled on a grid (every `s`-th row and column), so
    /// the cost is bounded; an empty image gives zeros.
    pub fn compute(
        grey: &[f32],
        width: usize,
        height: usize,
        bit_depth: u8,
        max_value: f32,
    ) -> ImageStats {
        let dims = (
            u32::try_from(width).unwrap_or(u32::MAX),
            u32::try_from(height).unwrap_or(u32::MAX),
        );
        let empty = ImageStats {
            mean: 0.0,
            contrast: 0.0,
            dynamic_range: 0.0,
            sharpness: 0.0,
            noise: 0.0,
            saturated: 0.0,
            width: dims.0,
            height: dims.1,
            bit_depth,
        };
        if width == 0 || height == 0 || grey.len() < width * height || max_value <= 0.0 {
            return empty;
        }
        let step = sampling_step(width, height);
        let (sw, sh) = (width.div_ceil(step), height.div_ceil(step));
        // The sampled grid as contiguous rows: the image itself when every pixel is read.
        let sampled: Vec<f32>;
        let grid: &[f32] = if step == 1 {
            &grey[..width * height]
        } else {
            sampled = (0..sh)
                .flat_map(|y| (0..sw).map(move |x| grey[y * step * width + x * step]))
                .collect();
            &sampled
        };
        let Levels { values, hist, top } = Levels::of(grid, max_value);
        let inv = 1.0 / f64::from(top);
        let n = values.len() as f64;

        // Moments and clipped pixels from the histogram, in exact integer sums.
        let (mut sum, mut sum2) = (0i64, 0i64);
        for (level, &count) in (0i64..).zip(&hist) {
            sum += level * i64::from(count);
            sum2 += level * level * i64::from(count);
        }
        let clipped = hist[0] + if top > 0 { hist[top as usize] } else { 0 };
        let mean = sum as f64 / n * inv;
        let contrast = variance(sum, sum2, values.len()).sqrt() * inv;
        // The percentiles are read on a 1024-bin grid of [0, 1] (nearest bin), whatever the
        // bit depth, so that references of 8- and 16-bit images compare alike. A level's bin
        // only grows with the level, so the first level that reaches the count is in the
        // first bin that does.
        const BINS: f64 = 1023.0;
        let percentile = |p: f64| {
            let target = (p * n).ceil().max(1.0) as u64;
            let mut seen = 0u64;
            for (level, &c) in hist.iter().enumerate() {
                seen += u64::from(c);
                if seen >= target {
                    let v = (level as f64 * inv).clamp(0.0, 1.0);
                    return ((v * BINS + 0.5) as usize).min(BINS as usize) as f64 / BINS;
                }
            }
            1.0
        };
        let dynamic_range = percentile(0.99) - percentile(0.01);

        // Second-order filters on the interior of the sampled grid, three rows at a time.
        let (lap_sum, lap_sum2, noise_abs, interior) = if top <= 255 {
            filters::<true>(&values, sw, sh)
        } else {
            filters::<false>(&values, sw, sh)
        };
        let (sharpness, noise) = if interior > 0 {
            (
                variance(lap_sum, lap_sum2, interior) * inv * inv,
                (std::f64::consts::PI / 2.0).sqrt() * noise_abs as f64 / (6.0 * interior as f64)
                    * inv,
            )
        } else {
            (0.0, 0.0)
        };
        ImageStats {
            mean,
            contrast,
            dynamic_range,
            sharpness,
            noise,
            saturated: clipped as f64 / n,
            ..empty
        }
    }
}

/// The sampled pixels as whole grey levels `0..=top` and their histogram: every sum is then
/// exact, and the moments come from the histogram instead of a pass over the pixels (the
/// statistics run on every request).
struct Levels {
    values: Vec<i32>,
    hist: Vec<u32>,
    top: u32,
}

/// The largest level: keeps the Laplacian's square (`(4 top)²`) summed over a million
/// pixels inside an `i64`.
const MAX_TOP: f32 = (1u32 << 18) as f32;

impl Levels {
    /// Decoded 8- and 16-bit grey values are whole numbers and are kept as they are (`top` is
    /// `max_value`); anything else (a float image, a range past [`MAX_TOP`]) is scaled so
    /// that `top` is [`MAX_TOP`] and rounded to the nearest level, a step of under four
    /// millionths of the range. Values outside `0..=max_value` are clamped to it.
    fn of(grid: &[f32], max_value: f32) -> Levels {
        if max_value <= MAX_TOP && max_value.fract() == 0.0 {
            let (levels, whole) = Levels::rounded(grid, 1.0, max_value as u32);
            if whole {
                return levels;
            }
        }
        Levels::rounded(grid, MAX_TOP / max_value, MAX_TOP as u32).0
    }

    /// `grid × scale` rounded to levels, and whether every value was a level already.
    fn rounded(grid: &[f32], scale: f32, top: u32) -> (Levels, bool) {
        // Adding 2^23 to a number in [0, 2^23) rounds it to the nearest whole number (ties
        // to even) and leaves that number in the low mantissa bits: a rounding the compiler
        // vectorises, where a cast is a branchy saturating conversion per pixel.
        const MAGIC: f32 = 8_388_608.0;
        let top_f = top as f32;
        let mut values = vec![0i32; grid.len()];
        let mut whole = true;
        for (level, &v) in values.iter_mut().zip(grid) {
            let v = (v * scale).max(0.0).min(top_f); // NaN gives 0
            let r = v + MAGIC;
            *level = r.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
            whole &= r - MAGIC == v;
        }
        let hist = histogram(&values, top);
        (Levels { values, hist, top }, whole)
    }
}

/// How many of each level `0..=top`. Up to 1,024 levels it counts into four interleaved
/// histograms, so that runs of equal neighbours (most of a smooth radiograph) do not wait on
/// one counter's previous increment.
fn histogram(levels: &[i32], top: u32) -> Vec<u32> {
    let bins = top as usize + 1;
    let mut hist = vec![0u32; bins];
    if bins > 1024 {
        for &l in levels {
            hist[l as usize] += 1;
        }
        return hist;
    }
    let mut ways = [[0u32; 1024]; 4];
    let quads = levels.chunks_exact(4);
    for &l in quads.remainder() {
        ways[0][l as usize] += 1;
    }
    for q in quads {
        for (way, &l) in ways.iter_mut().zip(q) {
            way[l as usize] += 1;
        }
    }
    for (i, h) in hist.iter_mut().enumerate() {
        *h = ways.iter().map(|w| w[i]).sum();
    }
    hist
}

/// Sums of the 4-neighbour Laplacian, of its square and of Immerkær's noise mask over the
/// interior of a `sw × sh` grid of levels, and the number of interior pixels. `EIGHT_BIT`:
/// the levels are at most 255, so runs of [`RUN`] pixels sum in 32 bits, which the compiler
/// vectorises four lanes wide instead of two.
fn filters<const EIGHT_BIT: bool>(levels: &[i32], sw: usize, sh: usize) -> (i64, i64, i64, usize) {
    if sw < 3 || sh < 3 {
        return (0, 0, 0, 0);
    }
    let (mut lap_sum, mut lap_sum2, mut noise_abs) = (0i64, 0i64, 0i64);
    for y in 1..sh - 1 {
        let up = &levels[(y - 1) * sw..][..sw];
        let mid = &levels[y * sw..][..sw];
        let down = &levels[(y + 1) * sw..][..sw];
        if EIGHT_BIT {
            for start in (1..sw - 1).step_by(RUN) {
                let (mut l1, mut l2, mut na) = (0i32, 0i32, 0i32);
                for x in start..(start + RUN).min(sw - 1) {
                    let (lap, mask) = masks(up, mid, down, x);
                    l1 += lap;
                    l2 += lap * lap;
                    na += mask.abs();
                }
                lap_sum += i64::from(l1);
                lap_sum2 += i64::from(l2);
                noise_abs += i64::from(na);
            }
        } else {
            for x in 1..sw - 1 {
                let (lap, mask) = masks(up, mid, down, x);
                lap_sum += i64::from(lap);
                lap_sum2 += i64::from(lap) * i64::from(lap);
                noise_abs += i64::from(mask.abs());
            }
        }
    }
    (lap_sum, lap_sum2, noise_abs, (sw - 2) * (sh - 2))
}

/// Pixels summed in 32 bits for 8-bit levels: `RUN × 1020²` stays below `i32::MAX`.
const RUN: usize = 1024;

/// The 4-neighbour Laplacian and Immerkær's mask [1 -2 1; -2 4 -2; 1 -2 1] at column `x` of
/// the middle row.
#[inline(always)]
fn masks(up: &[i32], mid: &[i32], down: &[i32], x: usize) -> (i32, i32) {
    let c = mid[x];
    let four = up[x] + down[x] + mid[x - 1] + mid[x + 1];
    let corners = up[x - 1] + up[x + 1] + down[x - 1] + down[x + 1];
    (four - 4 * c, corners - 2 * four + 4 * c)
}

/// The variance of `n` numbers from their exact sum and sum of squares, in one rounding.
fn variance(sum: i64, sum2: i64, n: usize) -> f64 {
    let n = n as i128;
    let spread = n * i128::from(sum2) - i128::from(sum) * i128::from(sum);
    (spread.max(0) as f64) / (n * n) as f64
}

/// Every `step`-th row and column, so at most [`MAX_SAMPLED_PIXELS`] are read.
fn sampling_step(width: usize, height: usize) -> usize {
    let mut step = 1;
    while width.div_ceil(step) * height.div_ceil(step) > MAX_SAMPLED_PIXELS {
        step += 1;
    }
    step
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statistics as first written, pixel by pixel through an index function: the row
    /// slices and the histogram's rounding of `compute` must give the same numbers.
    fn naive(grey: &[f32], width: usize, height: usize, max_value: f32) -> [f64; 5] {
        let step = sampling_step(width, height);
        let (sw, sh) = (width.div_ceil(step), height.div_ceil(step));
        let inv = 1.0 / f64::from(max_value);
        let at = |x: usize, y: usize| f64::from(grey[y * step * width + x * step]) * inv;
        let mut hist = [0u32; 1024];
        let (mut sum, mut sum2) = (0.0, 0.0);
        for y in 0..sh {
            for x in 0..sw {
                let v = at(x, y);
                sum += v;
                sum2 += v * v;
                hist[(v.clamp(0.0, 1.0) * 1023.0).round() as usize] += 1;
            }
        }
        let n = (sw * sh) as f64;
        let pct = |p: f64| {
            let target = (p * n).ceil().max(1.0) as u64;
            let mut seen = 0u64;
            for (i, &c) in hist.iter().enumerate() {
                seen += u64::from(c);
                if seen >= target {
                    return i as f64 / 1023.0;
                }
            }
            1.0
        };
        let (mut l1, mut l2, mut na, mut k) = (0.0, 0.0, 0.0, 0.0);
        for y in 1..sh - 1 {
            for x in 1..sw - 1 {
                let c = at(x, y);
                let four = at(x, y - 1) + at(x, y + 1) + at(x - 1, y) + at(x + 1, y);
                let lap = four - 4.0 * c;
                l1 += lap;
                l2 += lap * lap;
                let corners =
                    at(x - 1, y - 1) + at(x + 1, y - 1) + at(x - 1, y + 1) + at(x + 1, y + 1);
                na += (corners - 2.0 * four + 4.0 * c).abs();
                k += 1.0;
            }
        }
        let mean = sum / n;
        [
            mean,
            (sum2 / n - mean * mean).max(0.0).sqrt(),
            pct(0.99) - pct(0.01),
            l2 / k - (l1 / k) * (l1 / k),
            (std::f64::consts::PI / 2.0).sqrt() * na / (6.0 * k),
        ]
    }

    #[test]
    fn row_slices_give_the_pixel_by_pixel_numbers() {
        let mut state = 12345u64;
        for (w, h, max) in [(128, 128, 255.0f32), (37, 5, 65535.0), (1500, 800, 255.0)] {
            let img: Vec<f32> = (0..w * h)
                .map(|i| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1);
                    let noise = (state >> 40) as f32 / (1u64 << 24) as f32;
                    ((0.2 + 0.5 * (i % w) as f32 / w as f32 + 0.3 * noise) * max).round()
                })
                .collect();
            let s = ImageStats::compute(&img, w, h, 8, max);
            let expected = naive(&img, w, h, max);
            let got = [s.mean, s.contrast, s.dynamic_range, s.sharpness, s.noise];
            for (g, e) in got.iter().zip(expected) {
                assert!(
                    (g - e).abs() <= 1e-12 * e.abs().max(1.0),
                    "{w}x{h}: {got:?} vs {expected:?}"
                );
            }
        }
    }

    #[test]
    fn values_between_levels_are_rounded_to_a_fine_grid() {
        // A float image (range 0..1) and a channel mean (thirds of a level): not whole
        // numbers, so they are scaled to 2^18 levels; the numbers stay within that step.
        for (max, denominator) in [(1.0f32, 1.0e4f32), (255.0, 3.0)] {
            let img = image(96, 64, |x, y| {
                let v = 0.3 + 0.4 * (x as f32 / 96.0) + 0.05 * hash_noise(x, y);
                (v * max * denominator).round() / denominator
            });
            let s = ImageStats::compute(&img, 96, 64, 32, max);
            let expected = naive(&img, 96, 64, max);
            let got = [s.mean, s.contrast, s.dynamic_range, s.sharpness, s.noise];
            for (i, (g, e)) in got.iter().zip(expected).enumerate() {
                // The percentiles' 1,024 bins can flip at a boundary; the rest move by
                // under a millionth.
                let tolerance = if i == 2 {
                    1.01 / 1023.0
                } else {
                    1e-4 * e.abs() + 1e-6
                };
                assert!(
                    (g - e).abs() <= tolerance,
                    "max {max}: {got:?} vs {expected:?}"
                );
            }
        }
    }

    fn image(w: usize, h: usize, f: impl Fn(usize, usize) -> f32) -> Vec<f32> {
        (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .map(|(x, y)| f(x, y))
            .collect()
    }

    /// Deterministic pseudo-noise in [-1, 1].
    fn hash_noise(x: usize, y: usize) -> f32 {
        let mut v = (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (y as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        v ^= v >> 29;
        v = v.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        v ^= v >> 32;
        (v % 2001) as f32 / 1000.0 - 1.0
    }

    #[test]
    fn flat_grey_has_no_contrast_sharpness_or_noise() {
        let img = image(64, 48, |_, _| 128.0);
        let s = ImageStats::compute(&img, 64, 48, 8, 255.0);
        assert!((s.mean - 128.0 / 255.0).abs() < 1e-9);
        assert_eq!(
            (s.contrast, s.sharpness, s.noise, s.saturated),
            (0.0, 0.0, 0.0, 0.0)
        );
        assert!(s.dynamic_range.abs() < 1e-9);
        assert_eq!((s.width, s.height, s.bit_depth), (64, 48, 8));
    }

    #[test]
    fn noise_estimate_recovers_added_noise_and_ignores_a_smooth_ramp() {
        // A ramp (zero second derivative) plus noise of known spread.
        let sigma = 0.02f32;
        let img = image(256, 256, |x, y| {
            (0.2 + 0.5 * (x + y) as f32 / 512.0 + sigma * 1.7 * hash_noise(x, y)) * 255.0
        });
        let s = ImageStats::compute(&img, 256, 256, 8, 255.0);
        // uniform on [-1.7σ, 1.7σ] has std 1.7σ/√3 ≈ 0.98σ
        let expected = f64::from(sigma) * 1.7 / 3f64.sqrt();
        assert!(
            (s.noise - expected).abs() / expected < 0.15,
            "{} vs {expected}",
            s.noise
        );
        let smooth = image(256, 256, |x, y| {
            (0.2 + 0.5 * (x + y) as f32 / 512.0) * 255.0
        });
        assert!(ImageStats::compute(&smooth, 256, 256, 8, 255.0).noise < 1e-3);
    }

    #[test]
    fn blurring_lowers_sharpness_and_gain_raises_the_mean() {
        let sharp = image(128, 128, |x, y| {
            if (x / 4 + y / 4) % 2 == 0 {
                60.0
            } else {
                190.0
            }
        });
        let blurred: Vec<f32> = image(128, 128, |x, y| {
            let mut acc = 0.0;
            for dy in 0..3 {
                for dx in 0..3 {
                    let (xx, yy) = ((x + dx).min(127), (y + dy).min(127));
                    acc += if (xx / 4 + yy / 4) % 2 == 0 {
                        60.0
                    } else {
                        190.0
                    };
                }
            }
            acc / 9.0
        });
        let a = ImageStats::compute(&sharp, 128, 128, 8, 255.0);
        let b = ImageStats::compute(&blurred, 128, 128, 8, 255.0);
        assert!(
            b.sharpness < a.sharpness * 0.5,
            "{} vs {}",
            b.sharpness,
            a.sharpness
        );
        let brighter: Vec<f32> = sharp.iter().map(|v| (v * 1.4).min(255.0)).collect();
        let c = ImageStats::compute(&brighter, 128, 128, 8, 255.0);
        assert!(c.mean > a.mean + 0.1);
        assert!(c.saturated > 0.4, "clipped share {}", c.saturated);
    }

    #[test]
    fn sixteen_bit_images_scale_by_their_own_range_and_large_ones_are_sampled() {
        let img = image(2048, 1024, |x, _| if x < 1024 { 0.0 } else { 65535.0 });
        let s = ImageStats::compute(&img, 2048, 1024, 16, 65535.0);
        assert!((s.mean - 0.5).abs() < 0.01);
        assert!((s.saturated - 1.0).abs() < 1e-9);
        assert!((s.dynamic_range - 1.0).abs() < 1e-9);
        assert_eq!(sampling_step(2048, 1024), 2);
        assert_eq!(s.values()[8], 16.0);
    }

    #[test]
    fn empty_or_short_input_gives_zeros_not_a_panic() {
        let s = ImageStats::compute(&[], 0, 0, 8, 255.0);
        assert_eq!(s.mean, 0.0);
        let s = ImageStats::compute(&[1.0, 2.0], 4, 4, 8, 255.0);
        assert_eq!(s.contrast, 0.0);
        let s = ImageStats::compute(&[1.0, 2.0], 2, 1, 8, 255.0);
        assert_eq!(s.sharpness, 0.0);
        // Not-a-number and values outside the range count as the nearest end of it.
        let odd = [
            f32::NAN,
            -5.0,
            300.0,
            f32::INFINITY,
            128.0,
            128.0,
            0.0,
            255.0,
            64.0,
        ];
        let s = ImageStats::compute(&odd, 3, 3, 8, 255.0);
        let clamped = [0.0, 0.0, 255.0, 255.0, 128.0, 128.0, 0.0, 255.0, 64.0];
        assert_eq!(s, ImageStats::compute(&clamped, 3, 3, 8, 255.0));
        assert!((s.saturated - 6.0 / 9.0).abs() < 1e-12);
    }
}
