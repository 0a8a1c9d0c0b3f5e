//! The evaluation report a training run writes as `report.json` (and renders with
//! [`super::html::render_html`]), and the per-epoch training history.

use serde::{Deserialize, Serialize};

use super::calibration::{Bin, brier_score, ece_of_bins, reliability_diagram};
use super::curves::{Counts, PrPoint, RocPoint, Scored, at_threshold, pr_auc, pr_curve, roc_curve};
use super::threshold::{GroupThreshold, StabilitySummary, stability_by_group, stability_summary};

/// The most points kept of each curve in the report.
pub const MAX_CURVE_POINTS: usize = 200;

/// The evaluation of a binary classifier's p(positive) on labelled (validation or test)
/// data, at the decision threshold the bundle's rule will use. Field names are part of the
/// `report.json` format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Samples evaluated.
    pub n: u64,
    /// Positives (defects) among them.
    pub positives: u64,
    /// Negatives among them.
    pub negatives: u64,
    /// Area under the ROC curve (ties count half).
    pub roc_auc: f64,
    /// Average precision (area under the precision-recall curve).
    pub pr_auc: f64,
    /// The decision threshold: positive iff `score >= threshold`.
    pub threshold: f32,
    /// The declared target recall the threshold was chosen for.
    pub target_recall: f64,
    /// The review band `[lo, hi]` (inclusive) around the threshold.
    pub review_band: [f32; 2],
    /// Samples whose score falls in the review band (they would go to a human).
    pub in_review_band: u64,
    /// The confusion matrix and rates at the threshold.
    pub counts: Counts,
    /// The ROC curve, downsampled to at most [`MAX_CURVE_POINTS`] points, endpoints kept.
    pub roc: Vec<RocPoint>,
    /// The precision-recall curve, downsampled likewise.
    pub pr: Vec<PrPoint>,
    /// The reliability diagram (ten equal-width bins).
    pub calibration: Vec<Bin>,
    /// Expected calibration error over those bins.
    pub ece: f64,
    /// Brier score.
    pub brier: f64,
    /// Per-group (per-film) breakdown at the threshold, sorted by group.
    pub per_group: Vec<GroupThreshold>,
    /// How stable the threshold is across groups.
    pub stability: StabilitySummary,
}

impl EvalReport {
    /// Evaluates `scored` at `threshold` with `review_band`, for `target_recall`. `None` when
    /// the data lacks a class (no positives or no negatives), or a score or the threshold is
    /// not finite.
    pub fn build(
        scored: &[Scored],
        target_recall: f64,
        threshold: f32,
        review_band: [f32; 2],
    ) -> Option<EvalReport> {
        if !threshold.is_finite() || scored.iter().any(|s| !s.score.is_finite()) {
            return None;
        }
        let scores: Vec<f32> = scored.iter().map(|s| s.score).collect();
        let labels: Vec<bool> = scored.iter().map(|s| s.positive).collect();
        let roc_auc = super::roc_auc(&scores, &labels)?;
        let pr_auc = pr_auc(scored)?;
        let positives = labels.iter().filter(|p| **p).count() as u64;
        let calibration = reliability_diagram(scored);
        let per_group = stability_by_group(scored, target_recall, threshold);
        let [lo, hi] = review_band;
        Some(EvalReport {
            n: scored.len() as u64,
            positives,
            negatives: scored.len() as u64 - positives,
            roc_auc,
            pr_auc,
            threshold,
            target_recall,
            review_band,
            in_review_band: scores.iter().filter(|s| (lo..=hi).contains(*s)).count() as u64,
            counts: at_threshold(scored, threshold),
            roc: downsample(&roc_curve(scored), MAX_CURVE_POINTS),
            pr: downsample(&pr_curve(scored), MAX_CURVE_POINTS),
            ece: ece_of_bins(&calibration)?,
            brier: brier_score(scored)?,
            calibration,
            stability: stability_summary(&per_group, target_recall),
            per_group,
        })
    }
}

/// At most `max` of `points`, evenly spaced by index, the first and last always kept.
pub fn downsample<T: Clone>(points: &[T], max: usize) -> Vec<T> {
    let n = points.len();
    if n <= max {
        return points.to_vec();
    }
    if max < 2 {
        return points.first().cloned().into_iter().take(max).collect();
    }
    (0..max)
        .map(|i| points[(i * (n - 1) + (max - 1) / 2) / (max - 1)].clone())
        .collect()
}

/// One epoch of the training history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number (from 1).
    pub epoch: u32,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Validation loss after the epoch.
    pub val_loss: f64,
    /// Validation ROC-AUC after the epoch.
    pub val_roc_auc: f64,
    /// Validation average precision after the epoch.
    pub val_pr_auc: f64,
    /// Training throughput.
    pub images_per_second: f64,
    /// Wall-clock seconds the epoch took (training and validation).
    pub seconds: f64,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Three films: "a" separable, "b" with a low-scoring defect, "c" without defects.
    pub(crate) fn sample() -> Vec<Scored> {
        let mut s = Vec::new();
        for i in 0..10 {
            s.push(Scored::new(0.55 + i as f32 * 0.04, true, "a"));
            s.push(Scored::new(0.05 + i as f32 * 0.04, false, "a"));
        }
        s.push(Scored::new(0.2, true, "b"));
        s.push(Scored::new(0.9, true, "b"));
        s.push(Scored::new(0.3, false, "b"));
        s.push(Scored::new(0.6, false, "c"));
        s.push(Scored::new(0.1, false, "c"));
        s
    }

    #[test]
    fn the_report_summarises_the_data_at_the_threshold() {
        let s = sample();
        let r = EvalReport::build(&s, 0.95, 0.5, [0.4, 0.6]).unwrap();
        assert_eq!((r.n, r.positives, r.negatives), (25, 12, 13));
        let c = r.counts;
        // Positives below 0.5: only b's 0.2. Negatives at or above 0.5: c's 0.6.
        assert_eq!((c.tp, c.fn_, c.fp, c.tn), (11, 1, 1, 12));
        assert_eq!(c.recall, Some(11.0 / 12.0));
        // a's scores 0.41, 0.55, 0.59 and c's 0.6 lie in [0.4, 0.6].
        assert_eq!(r.in_review_band, 4);
        assert_eq!(r.roc.first().map(|p| (p.fpr, p.tpr)), Some((0.0, 0.0)));
        assert_eq!(r.roc.last().map(|p| (p.fpr, p.tpr)), Some((1.0, 1.0)));
        assert_eq!(r.pr.last().map(|p| p.recall), Some(1.0));
        assert_eq!(r.calibration.len(), 10);
        assert!(r.roc_auc > 0.9 && r.roc_auc < 1.0);
        assert!(r.pr_auc > 0.9 && r.pr_auc < 1.0);
        assert_eq!(r.per_group.len(), 3);
        assert_eq!(r.stability.groups_below_target, ["b"]);
        assert_eq!(r.stability.worst_recall_at_global, Some(0.5));
    }

    #[test]
    fn the_report_needs_both_classes_and_finite_scores() {
        let only_pos = vec![Scored::new(0.9, true, "a"), Scored::new(0.8, true, "a")];
        assert_eq!(EvalReport::build(&only_pos, 0.95, 0.5, [0.4, 0.6]), None);
        assert_eq!(EvalReport::build(&[], 0.95, 0.5, [0.4, 0.6]), None);
        let mut s = sample();
        assert_eq!(EvalReport::build(&s, 0.95, f32::NAN, [0.4, 0.6]), None);
        s.push(Scored::new(f32::NAN, false, "a"));
        assert_eq!(EvalReport::build(&s, 0.95, 0.5, [0.4, 0.6]), None);
    }

    /// Equal JSON values, numbers within a relative 1e-12.
    fn approx_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1.0)
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| approx_eq(x, y))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .all(|(k, v)| y.get(k).is_some_and(|w| approx_eq(v, w)))
            }
            _ => a == b,
        }
    }

    #[test]
    fn the_report_round_trips_through_json() {
        let r = EvalReport::build(&sample(), 0.95, 0.5, [0.4, 0.6]).unwrap();
        let json = serde_json::to_string(&r).unwrap();
        let back: EvalReport = serde_json::from_str(&json).unwrap();
        // serde_json's default float parser may be one ulp off, so compare with a tolerance.
        let (want, got) = (
            serde_json::to_value(&r).unwrap(),
            serde_json::to_value(&back).unwrap(),
        );
        assert!(approx_eq(&want, &got), "{want}\n{got}");
        assert_eq!(back.counts.tp, r.counts.tp);
        assert_eq!(back.per_group.len(), 3);
        assert_eq!(back.stability.groups_below_target, ["b"]);
        // And the comparison is not vacuous.
        let mut changed = back.clone();
        changed.per_group[1].recall_at_global = Some(0.6);
        assert!(!approx_eq(&want, &serde_json::to_value(&changed).unwrap()));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        for key in [
            "roc_auc",
            "pr_auc",
            "threshold",
            "target_recall",
            "review_band",
            "counts",
            "per_group",
            "stability",
            "ece",
            "brier",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        let e = EpochRecord {
            epoch: 3,
            train_loss: 0.4,
            val_loss: 0.5,
            val_roc_auc: 0.9,
            val_pr_auc: 0.8,
            images_per_second: 120.0,
            seconds: 31.5,
        };
        let back: EpochRecord = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn downsampling_keeps_the_endpoints_and_the_limit() {
        let v: Vec<u32> = (0..1000).collect();
        let d = downsample(&v, 200);
        assert_eq!(d.len(), 200);
        assert_eq!((d[0], d[199]), (0, 999));
        assert!(d.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(downsample(&v[..5], 200), [0, 1, 2, 3, 4]);
        assert_eq!(downsample(&v, 2), [0, 999]);
        assert_eq!(downsample(&v, 1), [0]);
        assert!(downsample(&v, 0).is_empty());
        let long: Vec<u32> = (0..5000).collect();
        let r = EvalReport::build(
            &long
                .iter()
                .map(|&i| Scored::new(i as f32 / 5000.0, i % 3 == 0, "f"))
                .collect::<Vec<_>>(),
            0.95,
            0.5,
            [0.45, 0.55],
        )
        .unwrap();
        assert_eq!((r.roc.len(), r.pr.len()), (200, 200));
    }
}
