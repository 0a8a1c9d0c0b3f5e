//! The monitoring work `vigil serve` adds to each request, measured per call: the per-image
//! statistics of a 128 × 128 8-bit tile (the weld tiles' size) and of a 2,048 × 2,048 16-bit
//! film (sampled on a grid past a million pixels), and the Mahalanobis out-of-distribution
//! distance of a 128-dimensional embedding. Median over 15 rounds of many calls.
//!
//! `cargo bench -p vigil-core --bench request`. Not a test: no timing is asserted.

use std::hint::black_box;
use std::time::Instant;

use vigil_core::drift::mahalanobis::{MahalanobisConfig, MahalanobisModel};
use vigil_core::monitor::ImageStats;

/// A deterministic radiograph-like plane: a smooth gradient with a weld bead and grain.
fn plane(w: usize, h: usize, max: f32) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..w * h)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let (x, y) = ((i % w) as f32 / w as f32, (i / w) as f32 / h as f32);
            let bead = (-((y - 0.5) * 8.0).powi(2)).exp();
            let grain = (state % 1000) as f32 / 1000.0 * 0.05;
            ((0.3 + 0.2 * x + 0.3 * bead + grain).min(1.0) * max).round()
        })
        .collect()
}

/// Median microseconds per call of `f`, over 15 rounds of `calls` calls.
fn time(calls: usize, mut f: impl FnMut()) -> f64 {
    let mut rounds: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calls {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / calls as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

fn main() {
    let tile = plane(128, 128, 255.0);
    let us = time(2000, || {
        black_box(ImageStats::compute(black_box(&tile), 128, 128, 8, 255.0));
    });
    println!("image statistics, 128 x 128 8-bit tile: {us:.1} µs");
    let film = plane(2048, 2048, 65535.0);
    let us = time(5, || {
        black_box(ImageStats::compute(
            black_box(&film),
            2048,
            2048,
            16,
            65535.0,
        ));
    });
    println!("image statistics, 2048 x 2048 16-bit film (sampled): {us:.0} µs");

    let dim = 128;
    let mut state = 1u64;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    let sample: Vec<Vec<f32>> = (0..400)
        .map(|_| (0..dim).map(|_| next()).collect())
        .collect();
    let model =
        MahalanobisModel::fit(&sample, &MahalanobisConfig::default()).expect("the sample fits");
    let x = sample[7].clone();
    let us = time(20_000, || {
        black_box(model.distance(black_box(&x)).expect("same dimension"));
    });
    println!("out-of-distribution distance, 128 dimensions: {us:.2} µs");
}
