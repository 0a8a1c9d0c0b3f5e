//! Calibration of a profile's drift thresholds: each signal's statistic on resampled
//! in-distribution windows of the held-out part, its threshold at level `alpha / m`, and the
//! family's false-alarm rate on fresh windows (the module docs of [`super`], step 3).

use super::{ReferenceConfig, ReferenceProfile, Signal, SignalThreshold, class_counts};
use crate::drift::calibrate::{CalibrationConfig, Resampling, calibrate};
use crate::drift::categorical::chi_square;
use crate::drift::ks::ks_two_sample;
use crate::drift::{DriftError, quantile_sorted};
use crate::monitor::{MonitorError, Observation, STAT_NAMES};

/// The held-out part in the shape calibration needs: per signal, a value per observation.
struct Holdout {
    stats: Vec<[f64; 9]>,
    confidence: Vec<f64>,
    predicted: Vec<usize>,
    mmd: Option<MmdCache>,
}

impl Holdout {
    /// The statistic of `signal` on the held-out observations at `window`.
    fn statistic(
        &self,
        profile: &ReferenceProfile,
        signal: Signal,
        window: &[usize],
    ) -> Result<f64, DriftError> {
        match signal {
            Signal::Stat(i) => {
                let reference = profile
                    .stats
                    .as_ref()
                    .map_or(&[][..], |s| s[i].sample.as_slice());
                let values: Vec<f64> = window.iter().map(|&p| self.stats[p][i]).collect();
                Ok(ks_two_sample(reference, &values)?.statistic)
            }
            Signal::Confidence => {
                let values: Vec<f64> = window.iter().map(|&p| self.confidence[p]).collect();
                Ok(ks_two_sample(&profile.predictions.confidence, &values)?.statistic)
            }
            Signal::Classes => {
                let counts = class_counts(
                    window.iter().map(|&p| &self.predicted[p]),
                    profile.labels.len(),
                );
                Ok(chi_square(&counts, &profile.predictions.class_shares)?.statistic)
            }
            Signal::Embedding => self
                .mmd
                .as_ref()
                .map(|m| m.mmd2(window))
                .ok_or_else(|| DriftError::Internal("no held-out embeddings".into())),
        }
    }
}

/// The signals of a profile, with whether each is calibrated (fixed statistics are not).
fn signals_of(profile: &ReferenceProfile, observations: &[Observation]) -> Vec<(Signal, bool)> {
    let mut signals = Vec::new();
    if profile.stats.is_some() {
        for i in 0..STAT_NAMES.len() {
            signals.push((Signal::Stat(i), !is_fixed(observations, i)));
        }
    }
    if profile.embedding.is_some() {
        signals.push((Signal::Embedding, true));
    }
    if profile.labels.len() >= 2 {
        signals.push((Signal::Classes, true));
    }
    signals.push((Signal::Confidence, true));
    signals
}

/// Whether statistic `i` has one value over all observations.
fn is_fixed(observations: &[Observation], i: usize) -> bool {
    let mut values = observations
        .iter()
        .filter_map(|o| o.stats.map(|s| s.values()[i]));
    match values.next() {
        Some(first) => values.all(|v| v == first),
        None => false,
    }
}

/// The held-out parts: the model's observations, and the images the statistics came from
/// (the same ones unless the profile took its statistics from other images).
pub(super) struct Parted<'a> {
    /// The held-out part of the observations, for the model's signals.
    pub(super) model: &'a [&'a Observation],
    /// The held-out part of the image-statistic images.
    pub(super) stats: &'a [&'a Observation],
}

pub(super) fn calibrate_thresholds(
    profile: &mut ReferenceProfile,
    stat_source: &[Observation],
    holdout: &Parted<'_>,
    cfg: &ReferenceConfig,
) -> Result<(), MonitorError> {
    let signals = signals_of(profile, stat_source);
    let m = signals.iter().filter(|(_, c)| *c).count().max(1);
    let signal_alpha = cfg.alpha / m as f64;
    let needed = (1.0 / signal_alpha - 1.0 - 1e-9).ceil() as usize;
    if cfg.calibration_windows < needed {
        return Err(MonitorError::InvalidConfig {
            name: "calibration_windows",
            reason: format!(
                "{} windows are too few for {m} signals at alpha = {}: need at least {needed}",
                cfg.calibration_windows, cfg.alpha
            ),
        });
    }
    let data = Holdout {
        stats: holdout
            .stats
            .iter()
            .map(|o| o.stats.map_or([0.0; 9], |s| s.values()))
            .collect(),
        confidence: holdout
            .model
            .iter()
            .map(|o| f64::from(o.confidence))
            .collect(),
        predicted: holdout.model.iter().map(|o| o.predicted).collect(),
        mmd: profile.embedding.as_ref().map(|e| {
            let held: Vec<&[f32]> = holdout
                .model
                .iter()
                .filter_map(|o| o.embedding.as_deref())
                .collect();
            MmdCache::new(&e.mmd_reference(), &held, e.bandwidth)
        }),
    };
    let config = CalibrationConfig {
        window: cfg.window,
        windows: cfg.calibration_windows,
        alpha: signal_alpha,
        seed: cfg.seed,
        resampling: Resampling::Blocks {
            length: cfg.block_length,
        },
        validation_windows: cfg.validation_windows,
    };
    let positions: Vec<usize> = (0..holdout.model.len()).collect();
    let stat_positions: Vec<usize> = (0..holdout.stats.len()).collect();
    let mut thresholds = Vec::with_capacity(signals.len());
    // Per validation window: whether any signal alarmed. The same seed draws the same
    // windows for every signal, so the flags line up.
    let mut any_alarm = vec![false; cfg.validation_windows];
    for (signal, calibrated) in signals {
        if !calibrated {
            thresholds.push(SignalThreshold {
                signal: signal.name(),
                test: signal.test().into(),
                threshold: 0.0,
                calibrated: false,
                false_alarm_rate: 0.0,
            });
            continue;
        }
        let mut seen = Vec::with_capacity(cfg.calibration_windows + cfg.validation_windows);
        let drawn_from = match signal {
            Signal::Stat(_) => &stat_positions,
            _ => &positions,
        };
        let c = calibrate(drawn_from, &config, |_rest, window| {
            let s = data.statistic(profile, signal, window)?;
            seen.push(s);
            Ok(s)
        })?;
        let (calibration, validation) = seen.split_at(cfg.calibration_windows.min(seen.len()));
        let threshold = c.threshold.max(tail_threshold(calibration, signal_alpha));
        let mut alarms = 0usize;
        for (flag, s) in any_alarm.iter_mut().zip(validation) {
            *flag |= *s > threshold;
            alarms += usize::from(*s > threshold);
        }
        thresholds.push(SignalThreshold {
            signal: signal.name(),
            test: signal.test().into(),
            threshold,
            calibrated: true,
            false_alarm_rate: alarms as f64 / validation.len().max(1) as f64,
        });
    }
    let alarms = any_alarm.iter().filter(|&&a| a).count();
    profile.drift.signal_alpha = signal_alpha;
    profile.drift.false_alarm_rate = alarms as f64 / cfg.validation_windows.max(1) as f64;
    profile.drift.thresholds = thresholds;
    Ok(())
}

/// Share of calibration statistics whose excesses fit the exponential tail.
const TAIL: f64 = 0.1;

/// The level that an exponential tail fitted to the top [`TAIL`] of the calibration
/// statistics puts at probability `alpha` (peaks over threshold with a generalised Pareto
/// shape of 0; Davison & Smith, "Models for exceedances over high thresholds", JRSS B 1990):
/// with `u` their `1 - TAIL` quantile and `β` the mean excess over it,
/// `P(X > u + t) ≈ TAIL · exp(-t / β)`, so the level is `u + β ln(TAIL / alpha)`.
fn tail_threshold(stats: &[f64], alpha: f64) -> f64 {
    if stats.is_empty() || alpha >= TAIL {
        return f64::NEG_INFINITY;
    }
    let mut s = stats.to_vec();
    s.sort_by(f64::total_cmp);
    let u = quantile_sorted(&s, 1.0 - TAIL);
    let excess: Vec<f64> = s.iter().filter(|&&x| x > u).map(|&x| x - u).collect();
    let beta = excess.iter().sum::<f64>() / excess.len().max(1) as f64;
    u + beta * (TAIL / alpha).ln()
}

/// MMD² of many windows of the held-out part against one reference set, in `O(w²)` additions
/// per window: the reference's own kernel term, each held-out vector's kernel sum against the
/// reference, and the held-out kernel matrix are computed once. Gives the same value as
/// [`mmd_test`] with that bandwidth (up to the `f32` storage of the held-out kernel matrix,
/// about `1e-7` relative).
pub(crate) struct MmdCache {
    /// `k(h_i, h_j)` over the held-out vectors, row-major.
    gram: Vec<f32>,
    /// `Σ_r k(h_i, r)` per held-out vector.
    cross: Vec<f64>,
    /// `Σ_{r≠s} k(r, s) / (m (m - 1))`.
    reference_term: f64,
    m: usize,
    h: usize,
}

impl MmdCache {
    pub(crate) fn new(reference: &[&[f32]], holdout: &[&[f32]], bandwidth: f64) -> MmdCache {
        let scale = 1.0 / (2.0 * bandwidth * bandwidth);
        let kernel = |a: &[f32], b: &[f32]| (-squared_distance(a, b) * scale).exp();
        let (m, h) = (reference.len(), holdout.len());
        let mut in_reference = 0.0;
        for i in 0..m {
            for j in (i + 1)..m {
                in_reference += 2.0 * kernel(reference[i], reference[j]);
            }
        }
        let cross = holdout
            .iter()
            .map(|x| reference.iter().map(|r| kernel(x, r)).sum())
            .collect();
        let mut gram = vec![1.0f32; h * h];
        for i in 0..h {
            for j in (i + 1)..h {
                let k = kernel(holdout[i], holdout[j]) as f32;
                gram[i * h + j] = k;
                gram[j * h + i] = k;
            }
        }
        let mf = m as f64;
        MmdCache {
            gram,
            cross,
            reference_term: in_reference / (mf * (mf - 1.0)).max(1.0),
            m,
            h,
        }
    }

    /// `MMD²_u` of the held-out vectors at `window` (at least 2) against the reference.
    pub(crate) fn mmd2(&self, window: &[usize]) -> f64 {
        let n = window.len() as f64;
        let mut within = 0.0f64;
        let mut cross = 0.0f64;
        for (a, &i) in window.iter().enumerate() {
            let row = &self.gram[i * self.h..(i + 1) * self.h];
            within += window[a + 1..]
                .iter()
                .map(|&j| f64::from(row[j]))
                .sum::<f64>();
            cross += self.cross[i];
        }
        let mf = self.m as f64;
        self.reference_term + 2.0 * within / (n * (n - 1.0)).max(1.0) - 2.0 * cross / (mf * n)
    }
}

/// `|a - b|²` in `f64`, with eight accumulators so that it vectorises.
fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
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

#[cfg(test)]
mod tests {
    use super::super::super::synthetic::{DIM, Shift, observations};
    use super::*;
    use crate::drift::mmd::{MmdConfig, mmd_test};

    #[test]
    fn cached_mmd_matches_mmd_test() {
        let obs = observations(5, 120, DIM, Shift::NONE);
        let vs: Vec<&[f32]> = obs
            .iter()
            .map(|o| o.embedding.as_deref().unwrap())
            .collect();
        let (reference, holdout) = vs.split_at(50);
        let cache = MmdCache::new(reference, holdout, 2.5);
        let window: Vec<usize> = (10..40).chain(50..60).collect();
        let current: Vec<&[f32]> = window.iter().map(|&i| holdout[i]).collect();
        let cfg = MmdConfig {
            permutations: 0,
            seed: 0,
            bandwidth: Some(2.5),
        };
        let want = mmd_test(reference, &current, &cfg).unwrap().mmd2;
        let got = cache.mmd2(&window);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
}
