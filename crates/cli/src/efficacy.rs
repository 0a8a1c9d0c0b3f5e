//! How well a bundle's monitoring works on real images, before it goes live: the false
//! alarms on in-distribution traffic and the images it takes to notice a simulated change
//! of the imaging chain (`vigil drift simulate`).
//!
//! Every image runs through the bundle's pipeline and model as serving runs it
//! (`vigil_engine::observe`); the drift windows are evaluated exactly as `vigil serve`
//! evaluates them (`vigil_core::monitor::evaluate`, a window of the reference's size every
//! `every` images).
//!
//! - False alarms: a stream of `stream` in-distribution images drawn from the given images in
//!   runs of `block` consecutive ones (tiles of one film stay together, so the stream is as
//!   correlated as a real line); an alarm is an evaluation that drifts, an alert is a run of
//!   alarming evaluations (what a deduplicated alert would send). Reported per 10,000 images.
//! - Detection: a full window of in-distribution images, then changed images; the number of
//!   changed images until the first alarm, over several random starting points.

use serde::Serialize;
use vigil_core::drift::rng::SplitMix64;
use vigil_core::monitor::{Observation, OodScorer, ReferenceProfile, evaluate};

/// One simulated change's detection.
#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    /// The change, in words.
    pub change: String,
    /// Trials run (different in-distribution windows before the change).
    pub trials: usize,
    /// Trials where an alarm came before the changed images ran out.
    pub detected: usize,
    /// Changed images until the first alarm: median and worst over detected trials.
    pub images_to_alarm_median: Option<usize>,
    /// The worst trial.
    pub images_to_alarm_max: Option<usize>,
    /// The signals that alarmed first (most common first).
    pub signals: Vec<(String, usize)>,
    /// Share of the changed images flagged out of distribution one by one.
    pub ood_share: Option<f64>,
}

/// False alarms on in-distribution traffic.
#[derive(Debug, Clone, Serialize)]
pub struct FalseAlarms {
    /// In-distribution images streamed.
    pub images: usize,
    /// Windows evaluated.
    pub evaluations: usize,
    /// Evaluations that drifted.
    pub alarming_evaluations: usize,
    /// Runs of alarming evaluations (one alert each, deduplicated).
    pub alerts: usize,
    /// `alerts` per 10,000 images.
    pub alerts_per_10k: f64,
    /// Which signals alarmed, with counts.
    pub signals: Vec<(String, usize)>,
    /// Share of in-distribution images flagged out of distribution.
    pub ood_share: Option<f64>,
}

/// Scores each observation's OOD distance and flag, as the server does.
pub fn score_ood(reference: &ReferenceProfile, obs: &mut [Observation]) -> anyhow::Result<()> {
    let Some(scorer) = reference.ood_scorer()? else {
        return Ok(());
    };
    for o in obs {
        if let Some(e) = &o.embedding
            && let Ok(s) = OodScorer::score(&scorer, e)
        {
            o.ood_distance = Some(s.distance);
            o.out_of_distribution = s.out_of_distribution;
        }
    }
    Ok(())
}

fn ood_share(obs: &[Observation]) -> Option<f64> {
    obs.iter()
        .any(|o| o.ood_distance.is_some())
        .then(|| obs.iter().filter(|o| o.out_of_distribution).count() as f64 / obs.len() as f64)
}

/// `n` observations in runs of `block` consecutive ones from `pool`, runs chosen at random
/// (the start by a modulo draw, as when the figures in `bench/README.md` were measured).
fn block_stream(
    pool: &[Observation],
    n: usize,
    block: usize,
    rng: &mut SplitMix64,
) -> Vec<Observation> {
    let block = block.clamp(1, pool.len().max(1));
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let start = (rng.next_u64() % (pool.len() - block + 1) as u64) as usize;
        let take = block.min(n - out.len());
        out.extend_from_slice(&pool[start..start + take]);
    }
    out
}

fn tally(names: impl IntoIterator<Item = String>) -> Vec<(String, usize)> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for n in names {
        *counts.entry(n).or_default() += 1;
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// The in-distribution stream of [`false_alarms`]: `images` observations of `pool` in runs
/// of `block`, and the end (exclusive) of every window evaluated on it, a window of
/// `reference.drift.window` every `reference.drift.every` images.
pub(crate) fn in_distribution_stream(
    reference: &ReferenceProfile,
    pool: &[Observation],
    images: usize,
    block: usize,
    seed: u64,
) -> anyhow::Result<(Vec<Observation>, Vec<usize>)> {
    let (w, every) = (reference.drift.window, reference.drift.every.max(1));
    if pool.len() < w {
        return crate::exit::fail(
            vigil_core::ErrorKind::Invalid,
            format!("{} images are fewer than one window ({w})", pool.len()),
        );
    }
    let mut rng = SplitMix64::new(seed);
    let stream = block_stream(pool, images, block, &mut rng);
    let ends = (w..=stream.len()).step_by(every).collect();
    Ok((stream, ends))
}

/// The seed [`false_alarms`] evaluates the window ending at `end` with.
pub(crate) fn in_distribution_seed(seed: u64, end: usize) -> u64 {
    seed ^ end as u64
}

/// Streams `images` in-distribution observations and counts alarms.
pub fn false_alarms(
    reference: &ReferenceProfile,
    pool: &[Observation],
    images: usize,
    block: usize,
    seed: u64,
    progress: &dyn Fn(usize, usize),
) -> anyhow::Result<FalseAlarms> {
    let w = reference.drift.window;
    let (stream, ends) = in_distribution_stream(reference, pool, images, block, seed)?;
    let (mut evaluations, mut alarming, mut alerts, mut in_alert) = (0, 0, 0, false);
    let mut signals = Vec::new();
    for (i, &end) in ends.iter().enumerate() {
        progress(i, ends.len());
        let r = evaluate(
            reference,
            &stream[end - w..end],
            in_distribution_seed(seed, end),
        )?;
        evaluations += 1;
        if r.drift {
            alarming += 1;
            signals.extend(r.drifted.iter().cloned());
            if !in_alert {
                alerts += 1;
            }
        }
        in_alert = r.drift;
    }
    Ok(FalseAlarms {
        images: stream.len(),
        evaluations,
        alarming_evaluations: alarming,
        alerts,
        alerts_per_10k: alerts as f64 * 10_000.0 / stream.len() as f64,
        signals: tally(signals),
        ood_share: ood_share(&stream),
    })
}

/// `count` windows of `window` changed observations each, drawn as [`detection`] draws the
/// changed part of its streams (runs of `block` consecutive ones from random starts, the
/// generator seeded as there), each with the seed to evaluate it with.
pub(crate) fn changed_windows(
    changed: &[Observation],
    window: usize,
    count: usize,
    block: usize,
    seed: u64,
) -> Vec<(Vec<Observation>, u64)> {
    let mut rng = SplitMix64::new(detection_rng_seed(seed));
    (0..count)
        .map(|k| {
            (
                block_stream(changed, window, block, &mut rng),
                seed ^ (k * 7919 + window) as u64,
            )
        })
        .collect()
}

fn detection_rng_seed(seed: u64) -> u64 {
    seed ^ 0x5DEE_CE66
}

/// Changed images until the first alarm, over `trials` starting windows.
pub fn detection(
    reference: &ReferenceProfile,
    pool: &[Observation],
    changed: &[Observation],
    change: &str,
    trials: usize,
    block: usize,
    seed: u64,
) -> anyhow::Result<Detection> {
    let (w, every) = (reference.drift.window, reference.drift.every.max(1));
    let mut rng = SplitMix64::new(detection_rng_seed(seed));
    let mut found = Vec::new();
    let mut first_signals = Vec::new();
    for t in 0..trials {
        let before = block_stream(pool, w, block, &mut rng);
        // The changed images in runs as well, from a random start.
        let after = block_stream(changed, changed.len(), block, &mut rng);
        let stream: Vec<Observation> = before.into_iter().chain(after).collect();
        // Evaluations continue the in-distribution cadence: every `every` images.
        let mut end = w + every;
        while end <= stream.len() {
            let r = evaluate(
                reference,
                &stream[end - w..end],
                seed ^ (t * 7919 + end) as u64,
            )?;
            if r.drift {
                found.push(end - w);
                first_signals.extend(r.drifted.iter().cloned());
                break;
            }
            end += every;
        }
    }
    found.sort_unstable();
    Ok(Detection {
        change: change.to_owned(),
        trials,
        detected: found.len(),
        images_to_alarm_median: (!found.is_empty()).then(|| found[found.len() / 2]),
        images_to_alarm_max: found.last().copied(),
        signals: tally(first_signals),
        ood_share: ood_share(changed),
    })
}
