//! A deterministic generator of observations for the monitor's tests: films of
//! [`FILM`] tiles, each film with its own random effect on every statistic and on the
//! embedding, so that neighbouring observations are correlated as on a real line.

use super::{ImageStats, Observation};
use crate::drift::rng::SplitMix64;

/// Tiles per film.
pub(crate) const FILM: usize = 5;

/// A change of the imaging chain or of the parts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shift {
    /// Added to the mean intensity.
    pub brightness: f64,
    /// Multiplies the sharpness.
    pub sharpness: f64,
    /// Added to the first half of the embedding's coordinates.
    pub embedding: f32,
    /// Replaces the width.
    pub width: u32,
}

impl Shift {
    pub(crate) const NONE: Shift = Shift {
        brightness: 0.0,
        sharpness: 1.0,
        embedding: 0.0,
        width: 256,
    };
}

struct Gen {
    rng: SplitMix64,
}

impl Gen {
    fn uniform(&mut self) -> f64 {
        ((self.rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Box-Muller.
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// `n` observations with `dim`-dimensional embeddings, two labels (`ok`, `defect`).
pub(crate) fn observations(seed: u64, n: usize, dim: usize, shift: Shift) -> Vec<Observation> {
    let mut g = Gen {
        rng: SplitMix64::new(seed),
    };
    let mut out = Vec::with_capacity(n);
    let mut film_effect = 0.0;
    let mut centre = vec![0.0f32; dim];
    for i in 0..n {
        if i % FILM == 0 {
            film_effect = g.normal();
            centre
                .iter_mut()
                .for_each(|c| *c = (0.7 * g.normal()) as f32);
        }
        out.push(tile(&mut g, film_effect, &centre, shift));
    }
    out
}

fn tile(g: &mut Gen, b: f64, centre: &[f32], shift: Shift) -> Observation {
    let stats = ImageStats {
        mean: 0.5 + 0.03 * b + 0.02 * g.normal() + shift.brightness,
        contrast: 0.2 + 0.02 * b + 0.01 * g.normal(),
        dynamic_range: 0.7 + 0.05 * b + 0.02 * g.normal(),
        sharpness: 0.01 * (0.2 * b + 0.1 * g.normal()).exp() * shift.sharpness,
        noise: 0.02 * (0.1 * b + 0.05 * g.normal()).exp(),
        saturated: 0.01 * g.uniform(),
        width: shift.width,
        height: 256,
        bit_depth: 16,
    };
    let half = centre.len() / 2;
    let embedding: Vec<f32> = centre
        .iter()
        .enumerate()
        .map(|(k, &c)| {
            let s = if k < half { shift.embedding } else { 0.0 };
            c + g.normal() as f32 + s
        })
        .collect();
    let z = f64::from(embedding[embedding.len() - 1]) * 1.5 - 1.0;
    let p = (1.0 / (1.0 + (-z).exp())) as f32;
    let predicted = usize::from(p > 0.5);
    Observation {
        stats: Some(stats),
        embedding: Some(embedding),
        probabilities: vec![1.0 - p, p],
        predicted,
        confidence: p.max(1.0 - p),
        ood_distance: None,
        out_of_distribution: false,
    }
}

/// Small settings for debug-build tests: windows of 40, runs of one film, alpha 0.05.
pub(crate) fn config() -> super::ReferenceConfig {
    super::ReferenceConfig {
        window: 40,
        every: 10,
        alpha: 0.05,
        block_length: FILM,
        calibration_windows: 400,
        validation_windows: 200,
        stat_sample: 5000,
        embedding_sample: 200,
        mmd_vectors: 100,
        ood_quantile: 0.99,
        max_holdout: 2000,
        seed: 1,
    }
}

/// The generator's labels.
pub(crate) fn labels() -> Vec<String> {
    vec!["ok".to_string(), "defect".to_string()]
}

/// Embedding length of the tests.
pub(crate) const DIM: usize = 8;

/// The profile of 800 in-distribution observations, built once per test binary.
pub(crate) fn profile() -> super::ReferenceProfile {
    static PROFILE: std::sync::OnceLock<super::ReferenceProfile> = std::sync::OnceLock::new();
    PROFILE
        .get_or_init(|| {
            let obs = observations(7, 800, DIM, Shift::NONE);
            super::ReferenceProfile::build(&obs, &labels(), "synthetic", &config())
                .expect("the synthetic reference builds")
        })
        .clone()
}
