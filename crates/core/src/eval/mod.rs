//! Evaluation metrics on labelled data: accuracy, the confusion matrix and ROC-AUC. Pure
//! functions shared by batch scoring, training reports and (later) realised accuracy from
//! inspectors' verdicts.
//!
//! The submodules build the trainer's evaluation report for a binary classifier's
//! p(positive): [`curves`] (ROC and PR curves, average precision, counts at a threshold),
//! [`threshold`] (choosing the decision threshold for a target recall, the review band and
//! the per-film stability of the threshold), [`calibration`] (reliability diagram, ECE,
//! Brier score), [`report`] (the serialisable [`EvalReport`]) and [`html`] (the
//! standalone HTML page).

use std::collections::BTreeMap;

pub mod calibration;
pub mod curves;
pub mod html;
pub mod report;
pub mod threshold;

pub use curves::Scored;
pub use report::{EpochRecord, EvalReport};

use serde::Serialize;

/// Counts of (expected, predicted) label pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Confusion {
    /// `counts[expected][predicted]`.
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Confusion {
    /// Counts one prediction.
    pub fn add(&mut self, expected: &str, predicted: &str) {
        *self
            .counts
            .entry(expected.to_owned())
            .or_default()
            .entry(predicted.to_owned())
            .or_default() += 1;
    }

    /// All predictions counted.
    pub fn total(&self) -> u64 {
        self.counts.values().flat_map(|r| r.values()).sum()
    }

    /// Share of predictions equal to the expected label (`None` when empty).
    pub fn accuracy(&self) -> Option<f64> {
        let total = self.total();
        let right: u64 = self
            .counts
            .iter()
            .map(|(e, row)| row.get(e).copied().unwrap_or(0))
            .sum();
        (total > 0).then(|| right as f64 / total as f64)
    }

    /// Recall of one label: of the images that are `label`, the share predicted `label`.
    pub fn recall(&self, label: &str) -> Option<f64> {
        let row = self.counts.get(label)?;
        let total: u64 = row.values().sum();
        (total > 0).then(|| row.get(label).copied().unwrap_or(0) as f64 / total as f64)
    }

    /// Every label seen as expected or predicted, sorted.
    pub fn labels(&self) -> Vec<String> {
        let mut all: Vec<String> = self.counts.keys().cloned().collect();
        for row in self.counts.values() {
            all.extend(row.keys().cloned());
        }
        all.sort();
        all.dedup();
        all
    }
}

/// Area under the ROC curve of `scores` for the positives marked in `positive`: the
/// probability that a random positive scores above a random negative, ties counting half
/// (the Mann-Whitney U statistic). `None` without both classes.
pub fn roc_auc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let n_pos = positive.iter().filter(|p| **p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 || scores.len() != positive.len() {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Average ranks over ties.
    let mut rank_sum_pos = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if positive[k] {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_is_one_for_a_perfect_ranking_and_half_for_ties() {
        assert_eq!(
            roc_auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            Some(1.0)
        );
        assert_eq!(
            roc_auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]),
            Some(0.0)
        );
        assert_eq!(
            roc_auc(&[0.5, 0.5, 0.5, 0.5], &[false, true, false, true]),
            Some(0.5)
        );
        // One inversion out of four pairs.
        assert_eq!(
            roc_auc(&[0.1, 0.6, 0.5, 0.9], &[false, false, true, true]),
            Some(0.75)
        );
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
    }

    #[test]
    fn confusion_counts_accuracy_and_recall() {
        let mut c = Confusion::default();
        c.add("defect", "defect");
        c.add("defect", "no_defect");
        c.add("no_defect", "no_defect");
        c.add("no_defect", "no_defect");
        assert_eq!(c.total(), 4);
        assert_eq!(c.accuracy(), Some(0.75));
        assert_eq!(c.recall("defect"), Some(0.5));
        assert_eq!(
            c.labels(),
            vec!["defect".to_owned(), "no_defect".to_owned()]
        );
    }
}
