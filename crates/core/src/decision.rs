//! Turning a model's probabilities into a decision, as the bundle's rule declares. One place,
//! so the server, batch scoring and evaluation can never disagree on what a prediction was.

use serde::Serialize;

use crate::bundle::DecisionRule;
use crate::types::Label;

/// The decision for one image (or one film).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The decided label.
    pub label: Label,
    /// How sure: the winning probability (argmax), or p(positive) / 1 - p(positive) for the
    /// side the threshold decided.
    pub confidence: f32,
    /// The probability the rule tested: p(positive) for a threshold rule, the top probability
    /// for argmax.
    pub score: f32,
    /// Whether the rule sends this prediction to a human (inside the review band, or less
    /// confident than the argmax rule accepts).
    pub review: bool,
}

/// Applies `rule` to `probabilities` (in the order of `labels`). `None` when the lengths
/// differ or a value is not finite: a broken model output is not a decision.
pub fn decide(rule: &DecisionRule, labels: &[Label], probabilities: &[f32]) -> Option<Decision> {
    if probabilities.len() != labels.len() || probabilities.iter().any(|p| !p.is_finite()) {
        return None;
    }
    match rule {
        DecisionRule::Argmax { review_below } => {
            let (i, &p) = probabilities
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))?;
            Some(Decision {
                label: labels[i].clone(),
                confidence: p,
                score: p,
                review: review_below.is_some_and(|b| p < b),
            })
        }
        DecisionRule::Threshold {
            positive,
            threshold,
            review_band,
        } => {
            let pi = labels.iter().position(|l| l == positive)?;
            let p = probabilities[pi];
            let is_positive = p >= *threshold;
            let label = if is_positive {
                positive.clone()
            } else {
                // The most probable of the other labels (the only one, for a binary model).
                let (j, _) = probabilities
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != pi)
                    .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))?;
                labels[j].clone()
            };
            Some(Decision {
                label,
                confidence: if is_positive { p } else { 1.0 - p },
                score: p,
                review: review_band.is_some_and(|[lo, hi]| (lo..=hi).contains(&p)),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<Label> {
        names.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn argmax_takes_the_top_label_and_flags_low_confidence() {
        let l = labels(&["a", "b", "c"]);
        let rule = DecisionRule::Argmax {
            review_below: Some(0.6),
        };
        let d = decide(&rule, &l, &[0.2, 0.5, 0.3]).unwrap();
        assert_eq!((d.label.as_str(), d.confidence, d.review), ("b", 0.5, true));
        let d = decide(&rule, &l, &[0.1, 0.8, 0.1]).unwrap();
        assert!(!d.review);
        // Ties go to the first label, so the answer never depends on float noise in ordering.
        assert_eq!(
            decide(&rule, &l, &[0.4, 0.4, 0.2]).unwrap().label.as_str(),
            "a"
        );
    }

    #[test]
    fn a_threshold_decides_on_the_positive_label_with_a_review_band() {
        let l = labels(&["defect", "no_defect"]);
        let rule = DecisionRule::Threshold {
            positive: "defect".parse().unwrap(),
            threshold: 0.3,
            review_band: Some([0.2, 0.5]),
        };
        let d = decide(&rule, &l, &[0.35, 0.65]).unwrap();
        assert_eq!(
            (d.label.as_str(), d.review, d.score),
            ("defect", true, 0.35)
        );
        let d = decide(&rule, &l, &[0.1, 0.9]).unwrap();
        assert_eq!(d.label.as_str(), "no_defect");
        assert!((d.confidence - 0.9).abs() < 1e-6 && !d.review);
        assert!(!decide(&rule, &l, &[0.9, 0.1]).unwrap().review);
    }

    #[test]
    fn broken_outputs_are_not_decisions() {
        let l = labels(&["a", "b"]);
        let rule = DecisionRule::Argmax { review_below: None };
        assert!(decide(&rule, &l, &[0.5]).is_none());
        assert!(decide(&rule, &l, &[f32::NAN, 0.5]).is_none());
    }
}
