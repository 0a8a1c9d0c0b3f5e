//! Calibration of p(positive): the reliability diagram over ten equal-width bins, the
//! expected calibration error and the Brier score. Non-finite scores are left out.

use serde::{Deserialize, Serialize};

use super::curves::Scored;

/// Bins in the reliability diagram.
pub const BINS: usize = 10;

/// One bin of the reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    /// Lower edge (inclusive).
    pub lo: f64,
    /// Upper edge (exclusive, but the last bin includes 1).
    pub hi: f64,
    /// Samples whose score falls in the bin.
    pub count: u64,
    /// Mean score in the bin (the predicted positive rate); `None` when empty.
    pub mean_score: Option<f64>,
    /// Share of positives in the bin (the observed positive rate); `None` when empty.
    pub positive_rate: Option<f64>,
}

/// The bin of a score: `floor(10 · score)` computed in `f32` (so `0.7f32` lands in
/// `[0.7, 0.8)` as one expects), with scores outside `[0, 1]` put in the end bins.
fn bin_of(score: f32) -> usize {
    ((score * BINS as f32).floor() as i64).clamp(0, BINS as i64 - 1) as usize
}

/// The reliability diagram: always [`BINS`] bins of width 0.1 from 0 to 1, empty ones
/// included (with `count` 0 and no rates).
pub fn reliability_diagram(scored: &[Scored]) -> Vec<Bin> {
    let mut sums = [(0u64, 0.0f64, 0u64); BINS];
    for s in scored.iter().filter(|s| s.score.is_finite()) {
        let b = &mut sums[bin_of(s.score)];
        b.0 += 1;
        b.1 += f64::from(s.score);
        b.2 += u64::from(s.positive);
    }
    sums.iter()
        .enumerate()
        .map(|(i, &(count, score_sum, positives))| Bin {
            lo: i as f64 / BINS as f64,
            hi: (i + 1) as f64 / BINS as f64,
            count,
            mean_score: (count > 0).then(|| score_sum / count as f64),
            positive_rate: (count > 0).then(|| positives as f64 / count as f64),
        })
        .collect()
}

/// Expected calibration error of a reliability diagram: the count-weighted mean of
/// `|mean_score − positive_rate|` over the bins. `None` when the bins are all empty.
pub fn ece_of_bins(bins: &[Bin]) -> Option<f64> {
    let total: u64 = bins.iter().map(|b| b.count).sum();
    if total == 0 {
        return None;
    }
    let weighted: f64 = bins
        .iter()
        .filter_map(|b| Some(b.count as f64 * (b.mean_score? - b.positive_rate?).abs()))
        .sum();
    Some(weighted / total as f64)
}

/// Expected calibration error over [`reliability_diagram`]'s ten bins. `None` on empty
/// input.
pub fn expected_calibration_error(scored: &[Scored]) -> Option<f64> {
    ece_of_bins(&reliability_diagram(scored))
}

/// Brier score: the mean of `(score − label)²`, label 1 for positives. 0 is perfect; always
/// scoring 0.5 gives 0.25. `None` on empty input.
pub fn brier_score(scored: &[Scored]) -> Option<f64> {
    let (n, sum) =
        scored
            .iter()
            .filter(|s| s.score.is_finite())
            .fold((0u64, 0.0f64), |(n, sum), s| {
                let d = f64::from(s.score) - if s.positive { 1.0 } else { 0.0 };
                (n + 1, sum + d * d)
            });
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::super::curves::toy;
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn a_perfectly_calibrated_set_has_zero_ece() {
        // Four at 0.25 with one positive, four at 0.75 with three.
        let s = toy(
            &[0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75],
            &[1, 0, 0, 0, 1, 1, 1, 0],
        );
        let bins = reliability_diagram(&s);
        assert_eq!(bins.len(), 10);
        assert_eq!((bins[2].count, bins[7].count), (4, 4));
        assert_eq!(bins[2].positive_rate, Some(0.25));
        assert_eq!(bins[7].mean_score, Some(0.75));
        assert_eq!((bins[0].count, bins[0].mean_score), (0, None));
        assert!(close(expected_calibration_error(&s).unwrap(), 0.0));
        // Each bin: one sample off by 0.75 and three off by 0.25: (2 · 0.5625 + 6 · 0.0625) / 8.
        assert!(close(brier_score(&s).unwrap(), 0.1875));
    }

    #[test]
    fn an_overconfident_set_has_the_expected_ece_and_brier() {
        // Five at 0.2, none positive (gap 0.2); five at 0.9, two positive (gap 0.5).
        let s = toy(
            &[0.2, 0.2, 0.2, 0.2, 0.2, 0.9, 0.9, 0.9, 0.9, 0.9],
            &[0, 0, 0, 0, 0, 1, 1, 0, 0, 0],
        );
        assert!(close(expected_calibration_error(&s).unwrap(), 0.35));
        // (5 · 0.04 + 2 · 0.01 + 3 · 0.81) / 10.
        assert!(close(brier_score(&s).unwrap(), 0.265));
    }

    #[test]
    fn bin_edges_and_out_of_range_scores() {
        let s = toy(&[0.0, 0.1, 0.7, 1.0, -0.5, 1.5, f32::NAN], &[0; 7]);
        let counts: Vec<u64> = reliability_diagram(&s).iter().map(|b| b.count).collect();
        assert_eq!(counts, [2, 1, 0, 0, 0, 0, 0, 1, 0, 2]);
        let bins = reliability_diagram(&[]);
        assert_eq!(bins.len(), 10);
        assert!(close(bins[9].lo, 0.9) && close(bins[9].hi, 1.0));
        assert_eq!(expected_calibration_error(&[]), None);
        assert_eq!(brier_score(&[]), None);
    }
}
