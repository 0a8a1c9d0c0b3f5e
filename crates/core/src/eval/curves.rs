//! ROC and precision-recall curves, average precision, and the confusion counts at one
//! threshold, for a binary classifier's p(positive).
//!
//! Every function here decides "positive" with the same rule as
//! [`crate::decision::decide`]: a sample is predicted positive iff `score >= threshold`.
//! Non-finite scores are left out everywhere in this module (a broken model output is not
//! a prediction); callers that must not lose samples check for them first, as
//! [`super::EvalReport::build`] does.

use serde::{Deserialize, Serialize};

/// One labelled, scored validation sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// The model's p(positive), the probability the decision rule tests.
    pub score: f32,
    /// Whether the sample truly is positive (a defect).
    pub positive: bool,
    /// The group the sample belongs to, for per-group breakdowns: the film.
    pub group: String,
}

impl Scored {
    /// A scored sample.
    pub fn new(score: f32, positive: bool, group: impl Into<String>) -> Self {
        Self {
            score,
            positive,
            group: group.into(),
        }
    }
}

/// One point of a ROC curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RocPoint {
    /// Predicted positive iff `score >= threshold`.
    pub threshold: f32,
    /// True-positive rate (recall) at this threshold.
    pub tpr: f64,
    /// False-positive rate at this threshold.
    pub fpr: f64,
}

/// One point of a precision-recall curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrPoint {
    /// Predicted positive iff `score >= threshold`.
    pub threshold: f32,
    /// Share of the predicted positives that are positive.
    pub precision: f64,
    /// Share of the positives predicted positive.
    pub recall: f64,
}

/// The confusion matrix of a binary decision, and the rates derived from it. A rate is
/// `None` when its denominator is zero (no positives for recall, say).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Positives predicted positive.
    pub tp: u64,
    /// Negatives predicted positive.
    pub fp: u64,
    /// Negatives predicted negative.
    pub tn: u64,
    /// Positives predicted negative (missed defects). Serialised as `fn`.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// `tp / (tp + fn)`.
    pub recall: Option<f64>,
    /// `fp / (fp + tn)`.
    pub fpr: Option<f64>,
    /// `tp / (tp + fp)`.
    pub precision: Option<f64>,
    /// `tn / (tn + fp)`.
    pub specificity: Option<f64>,
}

impl Counts {
    /// The counts and rates for the four cells of a confusion matrix.
    pub fn from_cells(tp: u64, fp: u64, tn: u64, fn_: u64) -> Self {
        Self {
            tp,
            fp,
            tn,
            fn_,
            recall: ratio(tp, tp + fn_),
            fpr: ratio(fp, fp + tn),
            precision: ratio(tp, tp + fp),
            specificity: ratio(tn, tn + fp),
        }
    }

    /// All samples counted.
    pub fn total(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }
}

/// `num / den`, `None` when `den` is zero.
pub(crate) fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// The cumulative counts when the threshold is one distinct score.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub threshold: f32,
    pub tp: u64,
    pub fp: u64,
}

/// One step per distinct finite score, highest threshold first, with the positives and
/// negatives scoring at or above it.
pub(crate) fn steps(scored: &[Scored]) -> Vec<Step> {
    let mut v: Vec<(f32, bool)> = scored
        .iter()
        .filter(|s| s.score.is_finite())
        .map(|s| (s.score, s.positive))
        .collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out = Vec::new();
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut i = 0;
    while i < v.len() {
        let t = v[i].0;
        while i < v.len() && v[i].0 == t {
            if v[i].1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        out.push(Step {
            threshold: t,
            tp,
            fp,
        });
    }
    out
}

/// The ROC curve: a first point `(fpr 0, tpr 0)` at a threshold just above the highest
/// score (the next representable `f32`, so nothing is predicted positive), then one point
/// per distinct score from the highest down; the last point is `(1, 1)`. Empty without
/// both classes.
pub fn roc_curve(scored: &[Scored]) -> Vec<RocPoint> {
    let steps = steps(scored);
    let Some(last) = steps.last() else {
        return Vec::new();
    };
    let (p, n) = (last.tp, last.fp);
    if p == 0 || n == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(steps.len() + 1);
    out.push(RocPoint {
        threshold: steps[0].threshold.next_up(),
        tpr: 0.0,
        fpr: 0.0,
    });
    out.extend(steps.iter().map(|s| RocPoint {
        threshold: s.threshold,
        tpr: s.tp as f64 / p as f64,
        fpr: s.fp as f64 / n as f64,
    }));
    out
}

/// The precision-recall curve: one point per distinct score, highest threshold (lowest
/// recall) first; the last point has recall 1. Empty without positives.
pub fn pr_curve(scored: &[Scored]) -> Vec<PrPoint> {
    let steps = steps(scored);
    let p = steps.last().map_or(0, |s| s.tp);
    if p == 0 {
        return Vec::new();
    }
    steps
        .iter()
        .map(|s| PrPoint {
            threshold: s.threshold,
            precision: s.tp as f64 / (s.tp + s.fp) as f64,
            recall: s.tp as f64 / p as f64,
        })
        .collect()
}

/// Area under the precision-recall curve as average precision (scikit-learn's
/// definition): `Σ (R_n − R_{n−1}) · P_n` over the distinct thresholds from the highest
/// down, with `R_0 = 0`. No interpolation, so it is not optimistic. `None` without
/// positives.
pub fn pr_auc(scored: &[Scored]) -> Option<f64> {
    let curve = pr_curve(scored);
    if curve.is_empty() {
        return None;
    }
    let mut prev_recall = 0.0;
    let mut ap = 0.0;
    for pt in &curve {
        ap += (pt.recall - prev_recall) * pt.precision;
        prev_recall = pt.recall;
    }
    Some(ap)
}

/// The confusion counts when a sample is predicted positive iff `score >= threshold`.
pub fn at_threshold(scored: &[Scored], threshold: f32) -> Counts {
    let (mut tp, mut fp, mut tn, mut fn_) = (0, 0, 0, 0);
    for s in scored.iter().filter(|s| s.score.is_finite()) {
        match (s.positive, s.score >= threshold) {
            (true, true) => tp += 1,
            (true, false) => fn_ += 1,
            (false, true) => fp += 1,
            (false, false) => tn += 1,
        }
    }
    Counts::from_cells(tp, fp, tn, fn_)
}

/// Scored samples from parallel score and label slices, all in one group (test helper).
#[cfg(test)]
pub(crate) fn toy(scores: &[f32], labels: &[u8]) -> Vec<Scored> {
    scores
        .iter()
        .zip(labels)
        .map(|(&s, &l)| Scored::new(s, l == 1, "film"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn roc_of_a_perfect_ranking_goes_through_the_top_left_corner() {
        let s = toy(&[0.1, 0.2, 0.8, 0.9], &[0, 0, 1, 1]);
        let roc = roc_curve(&s);
        let pts: Vec<(f64, f64)> = roc.iter().map(|p| (p.fpr, p.tpr)).collect();
        assert_eq!(
            pts,
            vec![(0.0, 0.0), (0.0, 0.5), (0.0, 1.0), (0.5, 1.0), (1.0, 1.0)]
        );
        // The first threshold is above every score, so nothing is positive there.
        assert!(roc[0].threshold > 0.9);
        assert_eq!(at_threshold(&s, roc[0].threshold).tp, 0);
        assert_eq!(roc[1].threshold, 0.9);
        assert_eq!(roc[4].threshold, 0.1);
    }

    #[test]
    fn roc_of_an_inverted_ranking_goes_along_the_bottom() {
        let s = toy(&[0.9, 0.8, 0.2, 0.1], &[0, 0, 1, 1]);
        let pts: Vec<(f64, f64)> = roc_curve(&s).iter().map(|p| (p.fpr, p.tpr)).collect();
        assert_eq!(
            pts,
            vec![(0.0, 0.0), (0.5, 0.0), (1.0, 0.0), (1.0, 0.5), (1.0, 1.0)]
        );
    }

    #[test]
    fn ties_make_one_point_per_distinct_score() {
        let s = toy(&[0.5, 0.5, 0.5, 0.2], &[1, 0, 1, 0]);
        let roc = roc_curve(&s);
        assert_eq!(roc.len(), 3);
        assert_eq!((roc[1].threshold, roc[1].tpr, roc[1].fpr), (0.5, 1.0, 0.5));
        let pr = pr_curve(&s);
        assert_eq!(pr.len(), 2);
        assert!(close(pr[0].precision, 2.0 / 3.0) && close(pr[0].recall, 1.0));
        // All positives come in at once, at precision 2/3.
        assert!(close(pr_auc(&s).unwrap(), 2.0 / 3.0));
    }

    #[test]
    fn a_missing_class_gives_no_curve() {
        assert!(roc_curve(&toy(&[0.1, 0.2], &[1, 1])).is_empty());
        assert!(roc_curve(&toy(&[0.1, 0.2], &[0, 0])).is_empty());
        assert!(roc_curve(&[]).is_empty());
        assert!(pr_curve(&toy(&[0.1, 0.2], &[0, 0])).is_empty());
        assert_eq!(pr_auc(&toy(&[0.1, 0.2], &[0, 0])), None);
        assert_eq!(pr_auc(&[]), None);
        // Only positives: precision 1 everywhere.
        assert_eq!(pr_auc(&toy(&[0.1, 0.2], &[1, 1])), Some(1.0));
    }

    #[test]
    fn average_precision_matches_the_sklearn_example() {
        let s = toy(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]);
        let ap = pr_auc(&s).unwrap();
        assert!((ap - 0.833_333_333).abs() < 1e-6, "{ap}");
        let pr = pr_curve(&s);
        let pts: Vec<(f32, f64, f64)> = pr
            .iter()
            .map(|p| (p.threshold, p.precision, p.recall))
            .collect();
        assert_eq!(pts[0], (0.8, 1.0, 0.5));
        assert_eq!(pts[1], (0.4, 0.5, 0.5));
        assert!(close(pts[2].1, 2.0 / 3.0) && pts[2].2 == 1.0);
        assert_eq!(pts[3], (0.1, 0.5, 1.0));
        // Perfect and inverted rankings.
        assert_eq!(
            pr_auc(&toy(&[0.1, 0.2, 0.8, 0.9], &[0, 0, 1, 1])),
            Some(1.0)
        );
        let inv = pr_auc(&toy(&[0.9, 0.8, 0.2, 0.1], &[0, 0, 1, 1])).unwrap();
        // Positives at ranks 3 and 4: 0.5 * 1/3 + 0.5 * 2/4.
        assert!(close(inv, 0.5 / 3.0 + 0.25));
    }

    #[test]
    fn counts_use_score_at_or_above_the_threshold() {
        let s = toy(&[0.1, 0.4, 0.35, 0.8, f32::NAN], &[0, 0, 1, 1, 1]);
        let c = at_threshold(&s, 0.35);
        assert_eq!((c.tp, c.fp, c.tn, c.fn_), (2, 1, 1, 0));
        assert_eq!(c.recall, Some(1.0));
        assert_eq!(c.fpr, Some(0.5));
        assert!(close(c.precision.unwrap(), 2.0 / 3.0));
        assert_eq!(c.specificity, Some(0.5));
        assert_eq!(c.total(), 4);
        let c = at_threshold(&s, 0.9);
        assert_eq!((c.tp, c.fp, c.tn, c.fn_), (0, 0, 2, 2));
        assert_eq!((c.recall, c.precision), (Some(0.0), None));
        let empty = at_threshold(&[], 0.5);
        assert_eq!((empty.recall, empty.fpr), (None, None));
    }

    #[test]
    fn counts_serialise_the_missed_cell_as_fn() {
        let json = serde_json::to_value(Counts::from_cells(1, 2, 3, 4)).unwrap();
        assert_eq!(json["fn"], 4);
        assert_eq!(json["tn"], 3);
    }
}
