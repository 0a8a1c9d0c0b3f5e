//! Choosing the decision threshold on validation data for a declared target recall, the
//! review band around it, and how stable that threshold is across groups (films).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::curves::{Counts, Scored, at_threshold};

/// The default declared target: defect recall of at least 0.95.
pub const DEFAULT_TARGET_RECALL: f64 = 0.95;

/// The share of validation samples the default review band holds around the threshold.
pub const REVIEW_BAND_FRACTION: f64 = 0.10;

/// Slack for comparing a recall with its target, so that `19 / 20 >= 0.95` holds despite
/// floating-point rounding.
const RECALL_EPS: f64 = 1e-9;

/// Whether `recall` reaches `target` (with [`RECALL_EPS`] of slack).
pub(crate) fn reaches(recall: f64, target: f64) -> bool {
    recall + RECALL_EPS >= target
}

/// A threshold chosen for a target recall, and what it does on the data it was chosen on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdChoice {
    /// The chosen threshold: predicted positive iff `score >= threshold`.
    pub threshold: f32,
    /// The declared target recall.
    pub target_recall: f64,
    /// The confusion counts at the threshold.
    pub counts: Counts,
}

/// The highest threshold whose recall reaches `target_recall`, so that the false-positive
/// rate is the lowest that meets the target. The threshold is always one of the positives'
/// scores: with `P` positives it is the score of the `k`-th highest-scoring positive,
/// `k = ceil(target · P)` (at least 1), so `score >= threshold` keeps that sample positive.
/// `None` without (finite-scored) positives or when `target_recall` is not in `[0, 1]`.
pub fn choose_threshold(scored: &[Scored], target_recall: f64) -> Option<ThresholdChoice> {
    if !(0.0..=1.0).contains(&target_recall) {
        return None;
    }
    let mut pos: Vec<f32> = scored
        .iter()
        .filter(|s| s.positive && s.score.is_finite())
        .map(|s| s.score)
        .collect();
    if pos.is_empty() {
        return None;
    }
    pos.sort_by(|a, b| b.total_cmp(a));
    let p = pos.len();
    let k = ((target_recall * p as f64 - RECALL_EPS).ceil().max(1.0) as usize).min(p);
    let threshold = pos[k - 1];
    Some(ThresholdChoice {
        threshold,
        target_recall,
        counts: at_threshold(scored, threshold),
    })
}

/// The default review band: [`review_band_with`] at [`REVIEW_BAND_FRACTION`] (10%).
pub fn review_band(threshold: f32, scored: &[Scored]) -> [f32; 2] {
    review_band_with(threshold, scored, REVIEW_BAND_FRACTION)
}

/// A review band `[lo, hi]` around `threshold`, holding about `fraction` of the validation
/// samples: those nearest the threshold by rank, half on each side.
///
/// The rule: let `k = ceil(fraction · n / 2)` (at least 1 when there are samples). `lo` is
/// the `k`-th highest score strictly below the threshold (the lowest such score if fewer
/// than `k`; the threshold itself if none), `hi` the `k`-th lowest score strictly above it
/// (likewise). So the band holds the `k` samples just below the threshold, the `k` just
/// above, and every sample tied with the threshold. The band is clamped to `[0, 1]` and
/// always contains the threshold; it is inclusive at both ends, as
/// [`crate::decision::decide`] reads it. Non-finite scores are left out; a non-finite
/// threshold gives `[0, 1]` (review everything).
pub fn review_band_with(threshold: f32, scored: &[Scored], fraction: f64) -> [f32; 2] {
    if !threshold.is_finite() {
        return [0.0, 1.0];
    }
    let t = threshold.clamp(0.0, 1.0);
    let finite = scored.iter().map(|s| s.score).filter(|s| s.is_finite());
    let mut below: Vec<f32> = finite.clone().filter(|&s| s < threshold).collect();
    let mut above: Vec<f32> = finite.filter(|&s| s > threshold).collect();
    let n = scored.iter().filter(|s| s.score.is_finite()).count();
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let k = ((fraction * n as f64 / 2.0).ceil() as usize).max(1);
    below.sort_by(|a, b| b.total_cmp(a));
    above.sort_by(|a, b| a.total_cmp(b));
    let pick = |v: &[f32]| (!v.is_empty()).then(|| v[k.min(v.len()) - 1]);
    let lo = pick(&below).unwrap_or(t).clamp(0.0, t);
    let hi = pick(&above).unwrap_or(t).clamp(t, 1.0);
    [lo, hi]
}

/// One group's (film's) view of the threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupThreshold {
    /// The group (film).
    pub group: String,
    /// Samples in the group.
    pub n: u64,
    /// Positives in the group.
    pub positives: u64,
    /// ROC-AUC within the group; `None` unless it holds both classes.
    pub roc_auc: Option<f64>,
    /// The threshold [`choose_threshold`] would pick on this group alone for the target;
    /// `None` without positives.
    pub threshold_for_target: Option<f32>,
    /// Recall at the global threshold; `None` without positives.
    pub recall_at_global: Option<f64>,
    /// False-positive rate at the global threshold; `None` without negatives.
    pub fpr_at_global: Option<f64>,
    /// Positives missed at the global threshold.
    pub missed_at_global: u64,
    /// Negatives flagged at the global threshold.
    pub false_alarms_at_global: u64,
}

/// Per-group (per-film) thresholds and rates at the global threshold, sorted by group.
/// This is the "how stable is the threshold across films" table.
pub fn stability_by_group(
    scored: &[Scored],
    target_recall: f64,
    global_threshold: f32,
) -> Vec<GroupThreshold> {
    let mut groups: BTreeMap<&str, Vec<Scored>> = BTreeMap::new();
    for s in scored.iter().filter(|s| s.score.is_finite()) {
        groups.entry(s.group.as_str()).or_default().push(s.clone());
    }
    groups
        .into_iter()
        .map(|(group, members)| {
            let counts = at_threshold(&members, global_threshold);
            let scores: Vec<f32> = members.iter().map(|s| s.score).collect();
            let labels: Vec<bool> = members.iter().map(|s| s.positive).collect();
            GroupThreshold {
                group: group.to_owned(),
                n: members.len() as u64,
                positives: labels.iter().filter(|p| **p).count() as u64,
                roc_auc: super::roc_auc(&scores, &labels),
                threshold_for_target: choose_threshold(&members, target_recall)
                    .map(|c| c.threshold),
                recall_at_global: counts.recall,
                fpr_at_global: counts.fpr,
                missed_at_global: counts.fn_,
                false_alarms_at_global: counts.fp,
            }
        })
        .collect()
}

/// A summary of [`stability_by_group`]: the spread of the per-group thresholds and the
/// worst group at the global threshold.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StabilitySummary {
    /// Groups in the data.
    pub groups: u64,
    /// Groups with at least one positive (the ones with a per-group threshold and recall).
    pub groups_with_positives: u64,
    /// The lowest per-group threshold for the target.
    pub min_threshold: Option<f32>,
    /// The group with the lowest per-group threshold.
    pub min_threshold_group: Option<String>,
    /// The highest per-group threshold for the target.
    pub max_threshold: Option<f32>,
    /// The group with the highest per-group threshold.
    pub max_threshold_group: Option<String>,
    /// The lowest per-group recall at the global threshold.
    pub worst_recall_at_global: Option<f64>,
    /// The group with the lowest recall at the global threshold (the first by name on ties).
    pub worst_recall_group: Option<String>,
    /// Groups whose recall at the global threshold is below the target, sorted.
    pub groups_below_target: Vec<String>,
}

/// Summarises per-group thresholds (from [`stability_by_group`]) against `target_recall`.
pub fn stability_summary(groups: &[GroupThreshold], target_recall: f64) -> StabilitySummary {
    let mut out = StabilitySummary {
        groups: groups.len() as u64,
        groups_with_positives: groups.iter().filter(|g| g.positives > 0).count() as u64,
        ..StabilitySummary::default()
    };
    for g in groups {
        if let Some(t) = g.threshold_for_target {
            if out.min_threshold.is_none_or(|m| t < m) {
                out.min_threshold = Some(t);
                out.min_threshold_group = Some(g.group.clone());
            }
            if out.max_threshold.is_none_or(|m| t > m) {
                out.max_threshold = Some(t);
                out.max_threshold_group = Some(g.group.clone());
            }
        }
        if let Some(r) = g.recall_at_global {
            if out.worst_recall_at_global.is_none_or(|w| r < w) {
                out.worst_recall_at_global = Some(r);
                out.worst_recall_group = Some(g.group.clone());
            }
            if !reaches(r, target_recall) {
                out.groups_below_target.push(g.group.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::curves::toy;
    use super::*;

    fn recall(s: &[Scored], t: f32) -> f64 {
        at_threshold(s, t).recall.unwrap()
    }

    #[test]
    fn the_chosen_threshold_is_the_highest_that_reaches_the_target() {
        // 20 positives at 0.50..0.69 and 20 negatives at 0.20..0.59 (overlapping).
        let pos: Vec<f32> = (0..20).map(|i| 0.50 + i as f32 * 0.01).collect();
        let mut s = Vec::new();
        for (i, &p) in pos.iter().enumerate() {
            s.push(Scored::new(p, true, "a"));
            s.push(Scored::new(0.20 + i as f32 * 0.02, false, "a"));
        }
        for target in [0.5, 0.8, 0.95, 1.0] {
            let c = choose_threshold(&s, target).unwrap();
            assert!(reaches(recall(&s, c.threshold), target), "{target}");
            assert_eq!(c.counts.recall, Some(recall(&s, c.threshold)));
            // Every higher candidate score misses the target.
            for x in s.iter().map(|x| x.score).filter(|&x| x > c.threshold) {
                assert!(!reaches(recall(&s, x), target), "{target} {x}");
            }
        }
        // 0.95 of 20 positives is 19: the second-lowest positive score.
        let c = choose_threshold(&s, 0.95).unwrap();
        assert_eq!(c.threshold, pos[1]);
        assert_eq!((c.counts.tp, c.counts.fn_), (19, 1));
        assert_eq!(choose_threshold(&s, 1.0).unwrap().threshold, pos[0]);
        // 0.8 of 20 is 16: the fifth-lowest positive score.
        assert_eq!(choose_threshold(&s, 0.8).unwrap().threshold, pos[4]);
    }

    #[test]
    fn threshold_choice_handles_ties_and_bad_input() {
        // Three positives tied at 0.4: taking 0.4 keeps all three.
        let s = toy(&[0.4, 0.4, 0.4, 0.9, 0.3], &[1, 1, 1, 1, 0]);
        let c = choose_threshold(&s, 0.95).unwrap();
        assert_eq!(c.threshold, 0.4);
        assert_eq!(c.counts.recall, Some(1.0));
        assert_eq!(choose_threshold(&s, 0.25).unwrap().threshold, 0.9);
        assert_eq!(choose_threshold(&s, 0.0).unwrap().threshold, 0.9);
        assert_eq!(choose_threshold(&toy(&[0.1], &[0]), 0.9), None);
        assert_eq!(choose_threshold(&[], 0.9), None);
        assert_eq!(choose_threshold(&s, 1.5), None);
        assert_eq!(choose_threshold(&s, f64::NAN), None);
    }

    #[test]
    fn the_review_band_holds_the_nearest_samples_and_the_threshold() {
        // 20 samples at 0.025, 0.075, ..., 0.975; threshold 0.5 between the 10th and 11th.
        let scores: Vec<f32> = (0..20).map(|i| 0.025 + i as f32 * 0.05).collect();
        let s = toy(&scores, &[0; 20]);
        // 10% of 20 is 2: one sample on each side.
        assert_eq!(review_band(0.5, &s), [scores[9], scores[10]]);
        // 30% of 20 is 6: three on each side.
        assert_eq!(review_band_with(0.5, &s, 0.3), [scores[7], scores[12]]);
        // At the edge of the data the band stops at the threshold on the empty side.
        assert_eq!(review_band(scores[19], &s), [scores[18], scores[19]]);
        assert_eq!(review_band_with(0.01, &s, 0.5), [0.01, scores[4]]);
        // A threshold on a sample: that sample is in the band, plus one on each side.
        assert_eq!(review_band(scores[5], &s), [scores[4], scores[6]]);
        // No data: the band is the threshold itself; a broken threshold reviews everything.
        assert_eq!(review_band(0.3, &[]), [0.3, 0.3]);
        assert_eq!(review_band(f32::NAN, &s), [0.0, 1.0]);
        for t in [0.0, 0.2, 0.5, 1.0] {
            let [lo, hi] = review_band(t, &s);
            assert!(lo <= t && t <= hi && lo >= 0.0 && hi <= 1.0);
        }
    }

    #[test]
    fn stability_splits_by_group() {
        let s = vec![
            // Film a: separable, positives at 0.6 and 0.8.
            Scored::new(0.6, true, "a"),
            Scored::new(0.8, true, "a"),
            Scored::new(0.1, false, "a"),
            // Film b: one positive scoring low, at 0.3.
            Scored::new(0.3, true, "b"),
            Scored::new(0.9, true, "b"),
            Scored::new(0.5, false, "b"),
            // Film c: negatives only.
            Scored::new(0.7, false, "c"),
            Scored::new(0.2, false, "c"),
        ];
        let groups = stability_by_group(&s, 0.95, 0.5);
        let names: Vec<&str> = groups.iter().map(|g| g.group.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let (a, b, c) = (&groups[0], &groups[1], &groups[2]);
        assert_eq!((a.n, a.positives), (3, 2));
        assert_eq!(a.threshold_for_target, Some(0.6));
        assert_eq!(
            (a.recall_at_global, a.fpr_at_global),
            (Some(1.0), Some(0.0))
        );
        assert_eq!(a.roc_auc, Some(1.0));
        assert_eq!(b.threshold_for_target, Some(0.3));
        assert_eq!(
            (b.recall_at_global, b.fpr_at_global),
            (Some(0.5), Some(1.0))
        );
        assert_eq!((b.missed_at_global, b.false_alarms_at_global), (1, 1));
        assert_eq!(b.roc_auc, Some(0.5));
        assert_eq!((c.positives, c.threshold_for_target), (0, None));
        assert_eq!((c.recall_at_global, c.fpr_at_global), (None, Some(0.5)));
        assert_eq!(c.roc_auc, None);

        let sum = stability_summary(&groups, 0.95);
        assert_eq!((sum.groups, sum.groups_with_positives), (3, 2));
        assert_eq!(sum.min_threshold, Some(0.3));
        assert_eq!(sum.min_threshold_group.as_deref(), Some("b"));
        assert_eq!(sum.max_threshold, Some(0.6));
        assert_eq!(sum.max_threshold_group.as_deref(), Some("a"));
        assert_eq!(sum.worst_recall_at_global, Some(0.5));
        assert_eq!(sum.worst_recall_group.as_deref(), Some("b"));
        assert_eq!(sum.groups_below_target, ["b"]);
    }
}
