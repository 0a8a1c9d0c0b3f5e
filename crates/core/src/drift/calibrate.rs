//! Threshold calibration for windowed drift statistics: where to put an alarm level so that
//! the false-alarm rate on in-distribution traffic is known.

use serde::Serialize;

use super::rng::SplitMix64;
use super::{DriftError, Result};

/// How in-distribution windows are drawn from the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Resampling {
    /// Each window is a uniform random subset of the reference (no repeats within a
    /// window). Right for independent images; optimistic on a real line.
    Random,
    /// Each window is made of whole runs of `length` consecutive reference images, in the
    /// reference's original order: the runs lie on a grid of `length` with a random offset,
    /// and `ceil(window / length)` distinct runs are chosen at random (the last one cut to
    /// fit). Set `length` to the span over which images are correlated (one film's tiles,
    /// one batch); `length >= window` makes every window one contiguous run.
    Blocks {
        /// Images per run.
        length: usize,
    },
}

/// Settings of [`calibrate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationConfig {
    /// Images per window (the monitor's window size).
    pub window: usize,
    /// Windows drawn to set the threshold; at least `1/alpha - 1`, and several hundred for
    /// a stable threshold.
    pub windows: usize,
    /// Target false-alarm rate per window.
    pub alpha: f64,
    /// Seed: the same seed, reference and statistic give the same threshold.
    pub seed: u64,
    /// How windows are drawn.
    pub resampling: Resampling,
    /// Fresh windows (continuing the same random stream) on which the false-alarm rate of
    /// the threshold is measured; 0 measures it on the calibration windows themselves.
    pub validation_windows: usize,
}

/// A calibrated threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Calibration {
    /// Alarm when the statistic is strictly above this.
    pub threshold: f64,
    /// The target false-alarm rate.
    pub alpha: f64,
    /// Images per window.
    pub window: usize,
    /// Windows the threshold came from.
    pub windows: usize,
    /// How they were drawn.
    pub resampling: Resampling,
    /// Share of windows above `threshold`: on the validation windows when there are any,
    /// else on the calibration windows (then it is at most `alpha` by construction).
    pub false_alarm_rate: f64,
    /// Binomial standard error of `false_alarm_rate`, `sqrt(r (1 - r) / windows)`.
    pub false_alarm_std_error: f64,
    /// Windows `false_alarm_rate` was measured on.
    pub measured_on: usize,
    /// Whether those were fresh validation windows.
    pub validated: bool,
}

/// Calibrates an alarm threshold for a windowed statistic on in-distribution windows
/// resampled from the reference.
///
/// `statistic(rest, window)` computes the statistic of `window` against the reference it
/// is compared with. Each in-distribution window is drawn from the reference and compared
/// against **the rest of the reference** (the reference without the window's images), not
/// the full reference: a live window is never part of its own reference, and comparing a
/// window with a reference that contains it shrinks every distance (for KS with
/// `w = n/10`, by about 10%), which would set the threshold too low. Precompute nothing from
/// the full reference inside `statistic` (PSI bins, an MMD bandwidth) for the same reason,
/// or accept that small optimism. For costly statistics on large references, subsample
/// `rest` inside the closure the same way the monitor will.
///
/// Threshold: with `K` calibration statistics sorted, the `k`-th smallest for
/// `k = ceil((1 - alpha)(K + 1))`. If a new window's statistic is exchangeable with the
/// calibration ones, `P(new > threshold) <= alpha` (the split-conformal argument; Vovk,
/// Gammerman & Shafer, *Algorithmic Learning in a Random World*, 2005). This needs
/// `K >= 1/alpha - 1`; fewer windows are an error.
///
/// **Correlation.** The guarantee only holds for windows like the resampled ones.
/// Neighbouring images on a line are correlated: tiles of one film overlap, films come in
/// batches of one part, one shift, one tube setting. A real in-distribution window of `w`
/// consecutive images therefore carries less information than `w` independent images and
/// its statistic varies more, so with [`Resampling::Random`] the true false-alarm rate is
/// higher than `alpha`, often several times. Use [`Resampling::Blocks`] with a run length
/// matching the correlation span (a moving-block scheme in the sense of Künsch, "The
/// jackknife and the bootstrap for general stationary observations", Ann. Statist. 1989),
/// on a reference kept in its original acquisition order; its windows vary like real ones.
///
/// Errors: `window` of 0 or not smaller than the reference, `alpha` outside `(0, 1)`, too
/// few windows for `alpha`, a block length of 0 or too long for the reference to hold
/// enough distinct runs, a NaN statistic ([`DriftError::NonFinite`]), and any error of
/// `statistic` (the first one is returned).
pub fn calibrate<T, F>(
    reference: &[T],
    config: &CalibrationConfig,
    mut statistic: F,
) -> Result<Calibration>
where
    T: Clone,
    F: FnMut(&[T], &[T]) -> Result<f64>,
{
    let n = reference.len();
    let w = config.window;
    if w == 0 || w >= n {
        return Err(DriftError::InvalidParameter {
            name: "window",
            reason: format!("must lie in 1..{n} (the reference has {n} images), got {w}"),
        });
    }
    if !(config.alpha > 0.0 && config.alpha < 1.0) {
        return Err(DriftError::InvalidParameter {
            name: "alpha",
            reason: format!("must lie in (0, 1), got {}", config.alpha),
        });
    }
    let k_windows = config.windows;
    // A small tolerance so that e.g. 0.9 × 20 = 18.000000000000004 still gives rank 18.
    let rank = ((1.0 - config.alpha) * (k_windows as f64 + 1.0) - 1e-9).ceil() as usize;
    if rank == 0 || rank > k_windows {
        return Err(DriftError::InvalidParameter {
            name: "windows",
            reason: format!(
                "{k_windows} windows are too few for alpha = {}; need at least {}",
                config.alpha,
                ((1.0 / config.alpha) - 1.0 - 1e-9).ceil().max(1.0)
            ),
        });
    }
    if let Resampling::Blocks { length } = config.resampling {
        let runs = w.div_ceil(length.max(1));
        // The worst grid offset (length - 1) must still leave `runs` whole runs.
        if length == 0 || n < length - 1 || (n - (length - 1)) / length < runs {
            return Err(DriftError::InvalidParameter {
                name: "length",
                reason: format!(
                    "runs of {length} cannot make windows of {w} from {n} reference images"
                ),
            });
        }
    }

    let mut sampler = WindowSampler {
        rng: SplitMix64::new(config.seed),
        order: (0..n).collect(),
        in_window: vec![false; n],
    };
    let mut draw = |sampler: &mut WindowSampler| -> Result<f64> {
        sampler.draw(n, w, config.resampling);
        let mut window = Vec::with_capacity(w);
        let mut rest = Vec::with_capacity(n - w);
        for (x, &inside) in reference.iter().zip(&sampler.in_window) {
            if inside {
                window.push(x.clone());
            } else {
                rest.push(x.clone());
            }
        }
        statistic(&rest, &window)
    };

    let mut stats = (0..k_windows)
        .map(|_| draw(&mut sampler))
        .collect::<Result<Vec<f64>>>()?;
    if let Some(index) = stats.iter().position(|s| s.is_nan()) {
        return Err(DriftError::NonFinite {
            which: "calibration statistics",
            index,
        });
    }
    stats.sort_by(f64::total_cmp);
    let threshold = stats[rank - 1];

    let validated = config.validation_windows > 0;
    let (alarms, measured_on) = if validated {
        let mut alarms = 0usize;
        for index in 0..config.validation_windows {
            let s = draw(&mut sampler)?;
            if s.is_nan() {
                return Err(DriftError::NonFinite {
                    which: "validation statistics",
                    index,
                });
            }
            if s > threshold {
                alarms += 1;
            }
        }
        (alarms, config.validation_windows)
    } else {
        (stats.iter().filter(|&&s| s > threshold).count(), k_windows)
    };
    let rate = alarms as f64 / measured_on as f64;
    Ok(Calibration {
        threshold,
        alpha: config.alpha,
        window: w,
        windows: k_windows,
        resampling: config.resampling,
        false_alarm_rate: rate,
        false_alarm_std_error: (rate * (1.0 - rate) / measured_on as f64).sqrt(),
        measured_on,
        validated,
    })
}

/// Draws window membership masks.
struct WindowSampler {
    rng: SplitMix64,
    /// A permutation of `0..n`, reshuffled in part by each random draw (unused by block
    /// draws).
    order: Vec<usize>,
    in_window: Vec<bool>,
}

impl WindowSampler {
    fn draw(&mut self, n: usize, w: usize, resampling: Resampling) {
        self.in_window.fill(false);
        match resampling {
            Resampling::Random => {
                // A partial Fisher-Yates from any permutation gives a uniform subset.
                self.rng.partial_shuffle(&mut self.order, w);
                for &i in &self.order[..w] {
                    self.in_window[i] = true;
                }
            }
            Resampling::Blocks { length } => {
                let offset = self.rng.below(length);
                let available = (n - offset) / length;
                let runs = w.div_ceil(length);
                let mut ids: Vec<usize> = (0..available).collect();
                self.rng.partial_shuffle(&mut ids, runs);
                let mut chosen = ids[..runs].to_vec();
                // In reference order, so that the cut run is the last one.
                chosen.sort_unstable();
                let mut left = w;
                for id in chosen {
                    let start = offset + id * length;
                    let take = left.min(length);
                    self.in_window[start..start + take].fill(true);
                    left -= take;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::ks::ks_two_sample;

    fn uniforms(seed: u64, n: usize) -> Vec<f64> {
        let mut r = SplitMix64::new(seed);
        (0..n)
            .map(|_| (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
            .collect()
    }

    fn ks_d(rest: &[f64], window: &[f64]) -> Result<f64> {
        Ok(ks_two_sample(rest, window)?.statistic)
    }

    fn config(resampling: Resampling) -> CalibrationConfig {
        CalibrationConfig {
            window: 50,
            windows: 400,
            alpha: 0.05,
            seed: 11,
            resampling,
            validation_windows: 400,
        }
    }

    #[test]
    fn threshold_is_the_conformal_rank() {
        // Statistic = 1, 2, 3, …: K = 19, alpha = 0.1 -> rank ceil(0.9 × 20) = 18.
        let reference: Vec<u8> = vec![0; 10];
        let mut counter = 0.0;
        let cfg = CalibrationConfig {
            window: 3,
            windows: 19,
            alpha: 0.1,
            seed: 0,
            resampling: Resampling::Random,
            validation_windows: 0,
        };
        let c = calibrate(&reference, &cfg, |rest, window| {
            assert_eq!((rest.len(), window.len()), (7, 3));
            counter += 1.0;
            Ok(counter)
        })
        .unwrap();
        assert_eq!(c.threshold, 18.0);
        assert!(!c.validated);
        assert_eq!(c.measured_on, 19);
        assert!((c.false_alarm_rate - 1.0 / 19.0).abs() < 1e-15);
    }

    #[test]
    fn ks_threshold_on_independent_data_matches_the_asymptotic_critical_value() {
        // D at 5% for w = 50 against 950: 1.358 × sqrt(1000 / (50 × 950)) = 0.197.
        let reference = uniforms(5, 1000);
        let c = calibrate(&reference, &config(Resampling::Random), ks_d).unwrap();
        assert!((c.threshold - 0.197).abs() < 0.03, "{c:?}");
        assert!(c.validated);
        assert!(
            c.false_alarm_rate < 0.05 + 3.0 * c.false_alarm_std_error + 0.01,
            "{c:?}"
        );
        // Deterministic.
        let again = calibrate(&reference, &config(Resampling::Random), ks_d).unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn blocks_see_batch_correlation_that_random_windows_miss() {
        // 20 batches of 50 images, each batch shifted by its own offset: a line where
        // films come in batches. Random windows mix all batches and look alike; block
        // windows are one or two batches and vary much more, as real windows would.
        let noise = uniforms(6, 1000);
        let offsets = uniforms(7, 20);
        let reference: Vec<f64> = noise
            .iter()
            .enumerate()
            .map(|(i, x)| x + 2.0 * offsets[i / 50])
            .collect();
        let random = calibrate(&reference, &config(Resampling::Random), ks_d).unwrap();
        let blocks =
            calibrate(&reference, &config(Resampling::Blocks { length: 50 }), ks_d).unwrap();
        assert!(
            blocks.threshold > 2.0 * random.threshold,
            "{random:?} {blocks:?}"
        );
        // Judged by block windows, the random-window threshold alarms far too often.
        let mut sampler = WindowSampler {
            rng: SplitMix64::new(99),
            order: (0..1000).collect(),
            in_window: vec![false; 1000],
        };
        let mut alarms = 0;
        for _ in 0..200 {
            sampler.draw(1000, 50, Resampling::Blocks { length: 50 });
            let (mut w, mut r) = (Vec::new(), Vec::new());
            for (&x, &inside) in reference.iter().zip(&sampler.in_window) {
                if inside { w.push(x) } else { r.push(x) }
            }
            if ks_d(&r, &w).unwrap() > random.threshold {
                alarms += 1;
            }
        }
        assert!(alarms > 100, "{alarms} of 200");
    }

    #[test]
    fn block_windows_are_whole_runs() {
        let mut s = WindowSampler {
            rng: SplitMix64::new(3),
            order: (0..100).collect(),
            in_window: vec![false; 100],
        };
        for _ in 0..50 {
            s.draw(100, 25, Resampling::Blocks { length: 10 });
            assert_eq!(s.in_window.iter().filter(|&&b| b).count(), 25);
            // At most three runs: count rising edges.
            let starts = (0..100)
                .filter(|&i| s.in_window[i] && (i == 0 || !s.in_window[i - 1]))
                .count();
            assert!((1..=3).contains(&starts));
        }
        // Runs at least as long as the window: one contiguous run.
        for _ in 0..50 {
            s.draw(100, 25, Resampling::Blocks { length: 40 });
            let first = s.in_window.iter().position(|&b| b).unwrap();
            assert!(s.in_window[first..first + 25].iter().all(|&b| b));
            assert_eq!(s.in_window.iter().filter(|&&b| b).count(), 25);
        }
    }

    #[test]
    fn bad_settings_are_errors() {
        let reference = uniforms(1, 100);
        let ok = CalibrationConfig {
            window: 10,
            windows: 100,
            alpha: 0.05,
            seed: 0,
            resampling: Resampling::Random,
            validation_windows: 0,
        };
        let run = |c: CalibrationConfig| calibrate(&reference, &c, ks_d);
        assert!(run(ok).is_ok());
        assert!(run(CalibrationConfig { window: 0, ..ok }).is_err());
        assert!(run(CalibrationConfig { window: 100, ..ok }).is_err());
        assert!(run(CalibrationConfig { alpha: 0.0, ..ok }).is_err());
        // alpha = 0.05 needs at least 19 windows.
        assert!(run(CalibrationConfig { windows: 18, ..ok }).is_err());
        assert!(run(CalibrationConfig { windows: 19, ..ok }).is_ok());
        let blocks = |length| CalibrationConfig {
            resampling: Resampling::Blocks { length },
            ..ok
        };
        assert!(run(blocks(0)).is_err());
        assert!(run(blocks(60)).is_err());
        assert!(run(blocks(45)).is_ok());
        let failing = calibrate(&reference, &ok, |_, _| {
            Err(DriftError::EmptySample { which: "current" })
        });
        assert_eq!(failing, Err(DriftError::EmptySample { which: "current" }));
    }
}
