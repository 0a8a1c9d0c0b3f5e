//! Drift-test speed at the sizes of the peers' drift anchors (`shared/bench/peers/drift_data.py`):
//! a 5,000 × 128 reference against three 1,000 × 128 windows, `same` (a fresh N(0, 1) draw),
//! `shift0.1` (+0.1 on dimensions 0-9) and `shift0.5` (+0.5 on dimensions 0-9).
//!
//! For each window it times `mmd_test` with 100 permutations and the median bandwidth (the
//! whole test: distances, bandwidth, kernel matrix, permutations) and the per-dimension
//! alternative (128 `ks_two_sample` calls and `holm`), median and minimum of 3 runs, and
//! prints them beside Alibi Detect 0.13's figures measured on the same machine
//! (`shared/bench/peers/RESULTS.md`, "Drift-tool anchors").
//!
//! Run it with `bench/drift.sh` or `cargo bench -p vigil-core --bench drift`. Not a test: no
//! timing is asserted. The data are the same shapes and distributions as the Python
//! generator's, not the same numbers (NumPy's generator is not reproduced here).

use std::hint::black_box;
use std::time::{Duration, Instant};

use vigil_core::drift::correction::holm;
use vigil_core::drift::ks::ks_two_sample;
use vigil_core::drift::mmd::{MmdConfig, mmd_test};
use vigil_core::drift::rng::SplitMix64;

const N_REF: usize = 5000;
const N_TEST: usize = 1000;
const D: usize = 128;
const PERMUTATIONS: usize = 100;
const REPEATS: usize = 3;
/// Alibi Detect 0.13 `MMDDrift(backend='pytorch', n_permutations=100)` predict, seconds.
const ALIBI_MMD_S: [f64; 3] = [21.6, 22.9, 20.3];
/// Alibi Detect 0.13 `KSDrift(correction='bonferroni')` predict, seconds (median of 3).
const ALIBI_KS_S: [f64; 3] = [0.1005, 0.1019, 0.1031];

/// Standard normal pairs by Box-Muller, on uniforms in (0, 1].
fn normal_pair(rng: &mut SplitMix64) -> (f64, f64) {
    let mut unit = || rng.unit() + 1.0 / (1u64 << 53) as f64;
    let r = (-2.0 * unit().ln()).sqrt();
    let t = 2.0 * std::f64::consts::PI * unit();
    (r * t.cos(), r * t.sin())
}

/// `n` vectors of `D` standard normals, `shift` added to dimensions 0-9.
fn sample(seed: u64, n: usize, shift: f32) -> Vec<Vec<f32>> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let mut v = Vec::with_capacity(D);
            while v.len() < D {
                let (a, b) = normal_pair(&mut rng);
                v.push(a as f32);
                v.push(b as f32);
            }
            for x in &mut v[..10] {
                *x += shift;
            }
            v
        })
        .collect()
}

/// CPU time of this thread so far (Linux `/proc/thread-self/schedstat`), if readable. The
/// machine is shared: wall time includes waiting for a core, CPU time does not.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Wall and CPU seconds of one run.
#[derive(Clone, Copy)]
struct Timing {
    wall: f64,
    cpu: Option<f64>,
}

/// Median and minimum wall time of `REPEATS` runs of `f` (and the CPU time of the median run),
/// and its last result.
fn time<T>(mut f: impl FnMut() -> T) -> (Timing, f64, T) {
    let mut times = Vec::with_capacity(REPEATS);
    let mut last = None;
    for _ in 0..REPEATS {
        let cpu_start = cpu_time();
        let start = Instant::now();
        let out = black_box(f());
        let wall = start.elapsed().as_secs_f64();
        let cpu = cpu_start
            .zip(cpu_time())
            .map(|(a, b)| b.saturating_sub(a).as_secs_f64());
        times.push(Timing { wall, cpu });
        last = Some(out);
    }
    times.sort_by(|a, b| a.wall.total_cmp(&b.wall));
    let out = last.expect("REPEATS > 0");
    (times[REPEATS / 2], times[0].wall, out)
}

/// `"1.234"` or `"-"` when CPU time is not available.
fn cpu(t: Timing) -> String {
    t.cpu.map_or_else(|| "-".to_string(), |c| format!("{c:.3}"))
}

fn main() {
    let reference = sample(1, N_REF, 0.0);
    let windows = [
        ("same", sample(2, N_TEST, 0.0)),
        ("shift0.1", sample(3, N_TEST, 0.1)),
        ("shift0.5", sample(3, N_TEST, 0.5)),
    ];
    let columns = |rows: &[Vec<f32>]| -> Vec<Vec<f64>> {
        (0..D)
            .map(|j| rows.iter().map(|r| f64::from(r[j])).collect())
            .collect()
    };
    let reference_columns = columns(&reference);
    let config = MmdConfig {
        permutations: PERMUTATIONS,
        seed: 0,
        bandwidth: None,
    };

    println!(
        "MMD, {N_REF} x {D} reference vs {N_TEST} x {D} window, {PERMUTATIONS} permutations, \
         median bandwidth; median (min) of {REPEATS} runs, one thread"
    );
    println!(
        "{:<9} {:>11} {:>9} {:>6} {:>6} {:>15} {:>7} {:>8} {:>9}",
        "window",
        "MMD²",
        "bandwidth",
        "p",
        "drift?",
        "Vigil s (min)",
        "CPU s",
        "Alibi s",
        "speed-up"
    );
    for ((name, window), alibi) in windows.iter().zip(ALIBI_MMD_S) {
        let (median, min, r) = time(|| mmd_test(&reference, window, &config).expect("valid input"));
        let p = r.p_value.expect("permutations > 0");
        println!(
            "{name:<9} {:>11.3e} {:>9.4} {:>6.3} {:>6} {:>7.3} ({:.3}) {:>7} {:>8.1} {:>8.1}x",
            r.mmd2,
            r.bandwidth,
            p,
            if p <= 0.05 { "yes" } else { "no" },
            median.wall,
            min,
            cpu(median),
            alibi,
            alibi / median.wall
        );
    }

    // Phases, on the shift0.1 window: the same call with fewer parts switched on.
    let window = &windows[1].1;
    let fixed = MmdConfig {
        permutations: 0,
        bandwidth: Some(16.0),
        ..config.clone()
    };
    let (kernel, _, _) = time(|| mmd_test(&reference, window, &fixed).expect("valid input"));
    let no_perm = MmdConfig {
        permutations: 0,
        ..config.clone()
    };
    let (with_median, _, _) = time(|| mmd_test(&reference, window, &no_perm).expect("valid input"));
    let (whole, _, _) = time(|| mmd_test(&reference, window, &config).expect("valid input"));
    let phase = |a: Timing, b: Timing| {
        format!(
            "{:.3} s wall, {} s CPU",
            a.wall - b.wall,
            a.cpu
                .zip(b.cpu)
                .map_or_else(|| "-".to_string(), |(x, y)| format!("{:.3}", x - y))
        )
    };
    let zero = Timing {
        wall: 0.0,
        cpu: Some(0.0),
    };
    println!("phases (shift0.1 window, differences of medians):");
    println!("  distances, kernel, row sums: {}", phase(kernel, zero));
    println!(
        "  median bandwidth:            {}",
        phase(with_median, kernel)
    );
    println!(
        "  {PERMUTATIONS} permutations:            {}",
        phase(whole, with_median)
    );
    println!("  whole test:                  {}", phase(whole, zero));

    println!();
    println!(
        "KS per dimension ({D} ks_two_sample + holm, drift if any adjusted p <= 0.05); \
         median (min) of {REPEATS} runs"
    );
    println!(
        "{:<9} {:>8} {:>10} {:>15} {:>7} {:>8} {:>9}",
        "window", "flagged", "min adj p", "Vigil s (min)", "CPU s", "Alibi s", "speed-up"
    );
    for ((name, window), alibi) in windows.iter().zip(ALIBI_KS_S) {
        let window_columns = columns(window);
        let (median, min, adjusted) = time(|| {
            let p: Vec<f64> = reference_columns
                .iter()
                .zip(&window_columns)
                .map(|(r, c)| ks_two_sample(r, c).expect("valid input").p_value)
                .collect();
            holm(&p).expect("valid p-values")
        });
        let flagged = adjusted.iter().filter(|&&p| p <= 0.05).count();
        let min_p = adjusted.iter().copied().fold(1.0, f64::min);
        println!(
            "{name:<9} {flagged:>8} {min_p:>10.2e} {:>7.4} ({:.4}) {:>7} {:>8.3} {:>8.1}x",
            median.wall,
            min,
            cpu(median),
            alibi,
            alibi / median.wall
        );
    }
}
