//! Human review's domain (DESIGN.md section 5): why a prediction goes to an inspector, in
//! which order the queue is worked, when a verdict settles an item (and when it needs a
//! second inspector), and what the verdicts say about the model: realised accuracy from the
//! verdicts and, until they arrive, an estimate from the probabilities alone.
//!
//! Pure data and decisions. The queue lives in `vigil-store` (`ReviewStore`), the flags are
//! applied on the request path by `vigil-server`, the pages are the server's.
//!
//! ```
//! use vigil_core::review::{Flag, FlagPolicy};
//!
//! let policy = FlagPolicy { qa_share: 0.0, ..FlagPolicy::default() };
//! let flags = policy.flags("weldnet", "req-1", true, false, false);
//! assert_eq!(flags, vec![Flag::Review]);
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::eval::Confusion;

/// Why a prediction went to an inspector. More than one may apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// The bundle's decision rule sends it to a person: the score lies inside the review
    /// band (near the threshold), or the top class is not confident enough.
    Review,
    /// The image does not resemble the training images (its embedding is past the
    /// reference's out-of-distribution threshold).
    OutOfDistribution,
    /// Answered while the model's latest drift window found drift.
    Drift,
    /// Drawn for the random quality-assurance sample.
    QaSample,
}

impl Flag {
    /// Every flag, in priority order.
    pub const ALL: [Flag; 4] = [
        Flag::OutOfDistribution,
        Flag::Review,
        Flag::Drift,
        Flag::QaSample,
    ];

    /// The name in logs, the API and the config: `review`, `out_of_distribution`, `drift`,
    /// `qa_sample`.
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::Review => "review",
            Flag::OutOfDistribution => "out_of_distribution",
            Flag::Drift => "drift",
            Flag::QaSample => "qa_sample",
        }
    }

    /// For an inspector: why this item is in front of them.
    pub fn describe(self) -> &'static str {
        match self {
            Flag::Review => "the model is unsure (near its decision threshold)",
            Flag::OutOfDistribution => "the image does not resemble the training images",
            Flag::Drift => "answered while the images were drifting from the training images",
            Flag::QaSample => "random quality-assurance sample",
        }
    }

    /// Queue priority, lower first: out-of-distribution and near-threshold items (where the
    /// model is most likely wrong), then drift, then the QA sample.
    pub fn priority(self) -> u8 {
        match self {
            Flag::OutOfDistribution | Flag::Review => 0,
            Flag::Drift => 1,
            Flag::QaSample => 2,
        }
    }
}

impl std::fmt::Display for Flag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Flag {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Flag::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a review flag (review, out_of_distribution, drift, qa_sample)"
                )
            })
    }
}

/// The priority of an item with `flags`: the most urgent flag's ([`Flag::priority`]);
/// `None` when there is no flag.
pub fn priority(flags: &[Flag]) -> Option<u8> {
    flags.iter().map(|f| f.priority()).min()
}

/// Which predictions go to the review queue (`[review.flag]` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlagPolicy {
    /// Predictions the bundle's rule sends to review (inside the review band).
    pub review_band: bool,
    /// Out-of-distribution images.
    pub out_of_distribution: bool,
    /// Predictions answered while drift is firing for the answering version.
    pub drift: bool,
    /// Share of all predictions drawn at random for quality assurance, in `[0, 1]`.
    pub qa_share: f64,
    /// Per-model QA share, overriding `qa_share`.
    pub qa_share_by_model: BTreeMap<String, f64>,
}

impl Default for FlagPolicy {
    fn default() -> Self {
        FlagPolicy {
            review_band: true,
            out_of_distribution: true,
            drift: true,
            qa_share: 0.02,
            qa_share_by_model: BTreeMap::new(),
        }
    }
}

impl FlagPolicy {
    /// Checks the shares; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let check = |name: String, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} must lie in [0, 1], got {v}"))
            }
        };
        check("review.flag.qa_share".into(), self.qa_share)?;
        for (m, &v) in &self.qa_share_by_model {
            check(format!("review.flag.qa_share_by_model.{m}"), v)?;
        }
        Ok(())
    }

    /// The QA share for `model`.
    pub fn qa_share(&self, model: &str) -> f64 {
        self.qa_share_by_model
            .get(model)
            .copied()
            .unwrap_or(self.qa_share)
    }

    /// The flags of one prediction: `review` (the rule's review band), `ood`, `drifting`
    /// (the version's latest drift window found drift) as the request path saw them. The QA
    /// draw is a hash of the request id, so the same request id is always drawn the same
    /// way (a retried request does not get a second chance) and the share holds over any
    /// stream of distinct ids. Sorted by priority.
    pub fn flags(
        &self,
        model: &str,
        request_id: &str,
        review: bool,
        ood: bool,
        drifting: bool,
    ) -> Vec<Flag> {
        let mut flags = Vec::new();
        if ood && self.out_of_distribution {
            flags.push(Flag::OutOfDistribution);
        }
        if review && self.review_band {
            flags.push(Flag::Review);
        }
        if drifting && self.drift {
            flags.push(Flag::Drift);
        }
        if unit_hash(request_id) < self.qa_share(model) {
            flags.push(Flag::QaSample);
        }
        flags
    }
}

/// A request id mapped to `[0, 1)`: FNV-1a, then SplitMix64's finaliser for good low bits.
fn unit_hash(s: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// When a verdict needs a second inspector (`review.second_opinion`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecondOpinion {
    /// One verdict settles an item.
    #[default]
    Never,
    /// A verdict that overturns the model needs a second inspector who agrees (two-person
    /// review of every correction).
    WhenOverturned,
    /// Every item needs two inspectors who agree.
    Always,
}

impl std::str::FromStr for SecondOpinion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "never" => Ok(SecondOpinion::Never),
            "when_overturned" => Ok(SecondOpinion::WhenOverturned),
            "always" => Ok(SecondOpinion::Always),
            other => Err(format!(
                "{other:?} is not a second-opinion policy (never, when_overturned, always)"
            )),
        }
    }
}

/// Where a queue item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    /// No verdict yet.
    Open,
    /// One verdict overturned the model and the policy wants a second inspector.
    AwaitingSecond,
    /// Inspectors disagree and no label has two of them: another inspector decides.
    Disputed,
    /// Settled: [`Resolution::label`] is the ground truth.
    Done,
}

impl ItemState {
    /// Every state.
    pub const ALL: [ItemState; 4] = [
        ItemState::Open,
        ItemState::AwaitingSecond,
        ItemState::Disputed,
        ItemState::Done,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Open => "open",
            ItemState::AwaitingSecond => "awaiting_second",
            ItemState::Disputed => "disputed",
            ItemState::Done => "done",
        }
    }

    /// Whether the item still needs an inspector.
    pub fn needs_inspector(self) -> bool {
        self != ItemState::Done
    }

    /// The states a listing filter names: `needs_inspector` (all but done), `all` (empty:
    /// no filter), or one state's name.
    pub fn filter(name: &str) -> Result<Vec<ItemState>, String> {
        match name {
            "needs_inspector" => Ok(ItemState::ALL
                .into_iter()
                .filter(|s| s.needs_inspector())
                .collect()),
            "all" => Ok(Vec::new()),
            other => Ok(vec![other.parse::<ItemState>()?]),
        }
    }
}

impl std::fmt::Display for ItemState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ItemState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ItemState::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                format!("{s:?} is not an item state (open, awaiting_second, disputed, done)")
            })
    }
}

/// An item's state and settled label after its verdicts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// The state.
    pub state: ItemState,
    /// The ground truth once [`ItemState::Done`].
    pub label: Option<String>,
}

/// Settles an item from its verdicts: `verdicts` holds `(inspector, label)` in the order
/// they were given, a changed verdict later than the one it replaces; only each inspector's
/// latest counts. `predicted` is the model's label.
///
/// - [`SecondOpinion::Never`]: the latest verdict settles it.
/// - [`SecondOpinion::WhenOverturned`]: a first verdict that agrees with the model settles
///   it; one that overturns it waits for a second inspector; after that a label needs two
///   inspectors, and until one has them the item is disputed.
/// - [`SecondOpinion::Always`]: a label needs two inspectors.
pub fn resolve(
    predicted: &str,
    verdicts: &[(String, String)],
    policy: SecondOpinion,
) -> Resolution {
    let mut latest: Vec<(&str, &str)> = Vec::new();
    for (inspector, label) in verdicts {
        match latest.iter_mut().find(|(i, _)| i == inspector) {
            Some(slot) => slot.1 = label,
            None => latest.push((inspector, label)),
        }
    }
    let open = |state| Resolution { state, label: None };
    let done = |label: &str| Resolution {
        state: ItemState::Done,
        label: Some(label.to_owned()),
    };
    let Some(&(_, first)) = latest.first() else {
        return open(ItemState::Open);
    };
    if policy == SecondOpinion::Never {
        let last = verdicts.last().map_or(first, |(_, l)| l.as_str());
        return done(last);
    }
    if policy == SecondOpinion::WhenOverturned && latest.len() == 1 && first == predicted {
        return done(first);
    }
    // A label two inspectors agree on; the earliest such label if (rarely) several.
    let mut votes: Vec<(&str, usize)> = Vec::new();
    for &(_, l) in &latest {
        match votes.iter_mut().find(|(v, _)| *v == l) {
            Some(v) => v.1 += 1,
            None => votes.push((l, 1)),
        }
    }
    if let Some(&(label, _)) = votes.iter().find(|(_, n)| *n >= 2) {
        return done(label);
    }
    if latest.len() == 1 {
        open(ItemState::AwaitingSecond)
    } else {
        open(ItemState::Disputed)
    }
}

/// Realised performance from settled verdicts: the model's label against the inspectors'.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Realised {
    /// Verdicts counted.
    pub verdicts: u64,
    /// Share where the model was right; `None` without verdicts.
    pub accuracy: Option<f64>,
    /// Per label: precision (of the predictions of this label, the share right) and recall
    /// (of the images inspectors gave this label, the share the model found).
    pub per_label: BTreeMap<String, LabelMetrics>,
    /// `counts[actual][predicted]`.
    pub confusion: Confusion,
}

/// Precision and recall of one label, each `None` when undefined (nothing to divide by).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LabelMetrics {
    /// Of the predictions of this label, the share that were right.
    pub precision: Option<f64>,
    /// Of the images that are this label, the share predicted as it.
    pub recall: Option<f64>,
}

/// [`Realised`] from `(predicted, actual)` pairs; `labels` lists every label (those never
/// seen still get a row).
pub fn realised<'a>(
    labels: &[String],
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Realised {
    let mut confusion = Confusion::default();
    for (predicted, actual) in pairs {
        confusion.add(actual, predicted);
    }
    let cell = |a: &str, p: &str| -> f64 {
        confusion
            .counts
            .get(a)
            .and_then(|r| r.get(p))
            .copied()
            .unwrap_or(0) as f64
    };
    let mut all: Vec<String> = labels.to_vec();
    for l in confusion.labels() {
        if !all.contains(&l) {
            all.push(l);
        }
    }
    let per_label = all
        .iter()
        .map(|l| {
            let predicted: f64 = all.iter().map(|a| cell(a, l)).sum();
            let actual: f64 = all.iter().map(|p| cell(l, p)).sum();
            let right = cell(l, l);
            let m = LabelMetrics {
                precision: (predicted > 0.0).then(|| right / predicted),
                recall: (actual > 0.0).then(|| right / actual),
            };
            (l.clone(), m)
        })
        .collect();
    Realised {
        verdicts: confusion.total(),
        accuracy: confusion.accuracy(),
        per_label,
        confusion,
    }
}

/// Performance estimated from the probabilities alone, before (or without) verdicts:
/// confidence-based performance estimation (CBPE, as NannyML does). If the probabilities
/// are calibrated, an image predicted `i` with probabilities `p` is of class `j` with
/// probability `p_j`, so the expected confusion matrix is the sum of the probability rows
/// by predicted class, and accuracy, precision and recall follow from it. It is only as
/// good as the calibration: an overconfident model overestimates its accuracy.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Estimated {
    /// Predictions counted.
    pub predictions: u64,
    /// Expected share right; `None` without predictions.
    pub accuracy: Option<f64>,
    /// Expected precision and recall per label.
    pub per_label: BTreeMap<String, LabelMetrics>,
    /// `expected[actual][predicted]`, fractional counts.
    pub expected: BTreeMap<String, BTreeMap<String, f64>>,
}

/// [`Estimated`] from `(predicted index, probabilities)` rows in the order of `labels`;
/// rows whose length differs from `labels`, or with a predicted index out of range or a
/// non-finite probability, are skipped.
pub fn estimate<'a>(
    labels: &[String],
    rows: impl IntoIterator<Item = (usize, &'a [f32])>,
) -> Estimated {
    let n = labels.len();
    let mut m = vec![vec![0.0f64; n]; n]; // m[actual][predicted]
    let mut count = 0u64;
    for (predicted, probs) in rows {
        if probs.len() != n || predicted >= n || probs.iter().any(|p| !p.is_finite()) {
            continue;
        }
        let sum: f64 = probs.iter().map(|&p| f64::from(p.max(0.0))).sum();
        if sum <= 0.0 {
            continue;
        }
        for (actual, &p) in probs.iter().enumerate() {
            m[actual][predicted] += f64::from(p.max(0.0)) / sum;
        }
        count += 1;
    }
    estimate_from_mass(labels, &m, count)
}

/// Probability mass by predicted label, as a store aggregates it: for the predictions of one
/// label, how many there were and the sum of each label's normalised probability.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbabilityMass {
    /// The predicted label.
    pub predicted: String,
    /// Predictions with that label.
    pub count: u64,
    /// Per label (in the model's order), the sum over those predictions of its
    /// probability divided by the row's sum.
    pub mass: Vec<f64>,
}

/// [`Estimated`] from probability mass aggregated by predicted label (see
/// [`ProbabilityMass`]): the same numbers as [`estimate`] over the rows it summed, without
/// holding the rows. Masses of a label not in `labels`, or of another length, are skipped.
pub fn estimate_from(labels: &[String], masses: &[ProbabilityMass]) -> Estimated {
    let n = labels.len();
    let mut m = vec![vec![0.0f64; n]; n];
    let mut count = 0u64;
    for pm in masses {
        let Some(predicted) = labels.iter().position(|l| *l == pm.predicted) else {
            continue;
        };
        if pm.mass.len() != n {
            continue;
        }
        for (actual, &p) in pm.mass.iter().enumerate() {
            m[actual][predicted] += p;
        }
        count += pm.count;
    }
    estimate_from_mass(labels, &m, count)
}

/// The estimate from `m[actual][predicted]` (fractional counts) over `count` predictions.
fn estimate_from_mass(labels: &[String], m: &[Vec<f64>], count: u64) -> Estimated {
    let n = labels.len();
    let right: f64 = (0..n).map(|i| m[i][i]).sum();
    let per_label = labels
        .iter()
        .enumerate()
        .map(|(l, name)| {
            let predicted: f64 = (0..n).map(|a| m[a][l]).sum();
            let actual: f64 = m[l].iter().sum();
            let metrics = LabelMetrics {
                precision: (predicted > 0.0).then(|| m[l][l] / predicted),
                recall: (actual > 0.0).then(|| m[l][l] / actual),
            };
            (name.clone(), metrics)
        })
        .collect();
    let expected = labels
        .iter()
        .enumerate()
        .map(|(a, an)| {
            let row = labels
                .iter()
                .enumerate()
                .map(|(p, pn)| (pn.clone(), m[a][p]))
                .collect();
            (an.clone(), row)
        })
        .collect();
    Estimated {
        predictions: count,
        accuracy: (count > 0).then(|| right / count as f64),
        per_label,
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn the_estimate_from_aggregated_mass_equals_the_estimate_from_rows() {
        let labels: Vec<String> = ["ok", "crack", "pore"].map(String::from).to_vec();
        let rows: Vec<(usize, Vec<f32>)> = vec![
            (0, vec![0.7, 0.2, 0.1]),
            (0, vec![0.5, 0.25, 0.25]),
            (1, vec![0.1, 0.8, 0.1]),
            (2, vec![0.2, 0.2, 0.6]),
            (1, vec![f32::NAN, 0.5, 0.5]),
        ];
        let by_rows = estimate(&labels, rows.iter().map(|(i, p)| (*i, p.as_slice())));
        let mut masses: Vec<ProbabilityMass> = Vec::new();
        for (i, p) in &rows {
            if p.iter().any(|x| !x.is_finite()) {
                continue;
            }
            let sum: f64 = p.iter().map(|&x| f64::from(x)).sum();
            let pm = match masses.iter_mut().find(|m| m.predicted == labels[*i]) {
                Some(pm) => pm,
                None => {
                    masses.push(ProbabilityMass {
                        predicted: labels[*i].clone(),
                        count: 0,
                        mass: vec![0.0; 3],
                    });
                    masses.last_mut().unwrap()
                }
            };
            pm.count += 1;
            for (k, &x) in p.iter().enumerate() {
                pm.mass[k] += f64::from(x) / sum;
            }
        }
        let by_mass = estimate_from(&labels, &masses);
        assert_eq!(by_mass.predictions, 4);
        assert_eq!(by_rows.predictions, by_mass.predictions);
        let (a, b) = (by_rows.accuracy.unwrap(), by_mass.accuracy.unwrap());
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn flags_follow_the_policy_and_sort_by_priority() {
        let p = FlagPolicy {
            qa_share: 0.0,
            ..FlagPolicy::default()
        };
        assert_eq!(
            p.flags("m", "r", true, true, true),
            vec![Flag::OutOfDistribution, Flag::Review, Flag::Drift]
        );
        assert!(p.flags("m", "r", false, false, false).is_empty());
        let off = FlagPolicy {
            review_band: false,
            out_of_distribution: false,
            drift: false,
            qa_share: 0.0,
            ..FlagPolicy::default()
        };
        assert!(off.flags("m", "r", true, true, true).is_empty());
        assert_eq!(priority(&[Flag::QaSample, Flag::Drift]), Some(1));
        assert_eq!(priority(&[]), None);
    }

    #[test]
    fn the_qa_sample_holds_its_share_and_is_stable_per_request() {
        let mut by_model = BTreeMap::new();
        by_model.insert("other".to_owned(), 1.0);
        let p = FlagPolicy {
            qa_share: 0.1,
            qa_share_by_model: by_model,
            ..FlagPolicy::default()
        };
        let drawn = (0..20_000)
            .filter(|i| p.flags("m", &format!("req-{i}"), false, false, false) == [Flag::QaSample])
            .count();
        assert!(
            (1_800..=2_200).contains(&drawn),
            "{drawn} of 20000 drawn at 10%"
        );
        let id = "0193f3a0-7c1e-7d2a-9c55-1b2f0e7a9d10";
        assert_eq!(
            p.flags("m", id, false, false, false),
            p.flags("m", id, false, false, false)
        );
        assert_eq!(
            p.flags("other", "x", false, false, false),
            vec![Flag::QaSample]
        );
        assert!(p.validate().is_ok());
        let bad = FlagPolicy {
            qa_share: 1.5,
            ..FlagPolicy::default()
        };
        assert!(bad.validate().unwrap_err().contains("qa_share"));
    }

    #[test]
    fn flag_and_state_names_round_trip() {
        for f in Flag::ALL {
            assert_eq!(f.as_str().parse::<Flag>().unwrap(), f);
        }
        for s in ItemState::ALL {
            assert_eq!(s.as_str().parse::<ItemState>().unwrap(), s);
        }
        assert!("nope".parse::<Flag>().is_err());
        assert_eq!(ItemState::filter("needs_inspector").unwrap().len(), 3);
        assert!(ItemState::filter("all").unwrap().is_empty());
        assert_eq!(ItemState::filter("done").unwrap(), vec![ItemState::Done]);
        assert!(ItemState::filter("closed").is_err());
        assert!("when_overturned".parse::<SecondOpinion>().is_ok());
    }

    #[test]
    fn one_verdict_settles_without_a_second_opinion_and_the_latest_counts() {
        let r = resolve("ok", &v(&[("ann", "defect")]), SecondOpinion::Never);
        assert_eq!(
            (r.state, r.label.as_deref()),
            (ItemState::Done, Some("defect"))
        );
        let r = resolve(
            "ok",
            &v(&[("ann", "defect"), ("ann", "ok")]),
            SecondOpinion::Never,
        );
        assert_eq!(r.label.as_deref(), Some("ok"));
        assert_eq!(
            resolve("ok", &[], SecondOpinion::Never).state,
            ItemState::Open
        );
    }

    #[test]
    fn an_overturning_verdict_waits_for_a_second_inspector() {
        let p = SecondOpinion::WhenOverturned;
        let agree = resolve("ok", &v(&[("ann", "ok")]), p);
        assert_eq!(agree.state, ItemState::Done);
        let over = resolve("ok", &v(&[("ann", "defect")]), p);
        assert_eq!((over.state, over.label), (ItemState::AwaitingSecond, None));
        // The same inspector changing her mind is not a second opinion.
        let same = resolve("ok", &v(&[("ann", "defect"), ("ann", "crack")]), p);
        assert_eq!(same.state, ItemState::AwaitingSecond);
        let confirmed = resolve("ok", &v(&[("ann", "defect"), ("bob", "defect")]), p);
        assert_eq!(confirmed.label.as_deref(), Some("defect"));
        let disputed = resolve("ok", &v(&[("ann", "defect"), ("bob", "ok")]), p);
        assert_eq!(disputed.state, ItemState::Disputed);
        let third = resolve(
            "ok",
            &v(&[("ann", "defect"), ("bob", "ok"), ("cy", "ok")]),
            p,
        );
        assert_eq!(third.label.as_deref(), Some("ok"));
        let always = resolve("ok", &v(&[("ann", "ok")]), SecondOpinion::Always);
        assert_eq!(always.state, ItemState::AwaitingSecond);
    }

    #[test]
    fn realised_metrics_count_the_verdicts() {
        let labels = vec!["ok".to_owned(), "defect".to_owned()];
        let r = realised(
            &labels,
            [
                ("ok", "ok"),
                ("ok", "defect"),
                ("defect", "defect"),
                ("defect", "ok"),
            ],
        );
        assert_eq!(r.verdicts, 4);
        assert_eq!(r.accuracy, Some(0.5));
        assert_eq!(r.per_label["defect"].recall, Some(0.5));
        assert_eq!(r.per_label["defect"].precision, Some(0.5));
        let one = realised(&labels, [("defect", "defect")]);
        assert_eq!(one.per_label["ok"].recall, None);
        assert_eq!(one.accuracy, Some(1.0));
        assert_eq!(realised(&labels, []).accuracy, None);
    }

    #[test]
    fn the_estimate_is_the_expected_confusion_of_the_probabilities() {
        let labels = vec!["ok".to_owned(), "defect".to_owned()];
        let rows: Vec<(usize, Vec<f32>)> = vec![(0, vec![0.9, 0.1]), (1, vec![0.3, 0.7])];
        let e = estimate(&labels, rows.iter().map(|(p, r)| (*p, r.as_slice())));
        assert_eq!(e.predictions, 2);
        assert!((e.accuracy.unwrap() - 0.8).abs() < 1e-6);
        assert!((e.expected["ok"]["defect"] - 0.3).abs() < 1e-6);
        // recall(defect) = 0.7 / (0.1 + 0.7)
        assert!((e.per_label["defect"].recall.unwrap() - 0.875).abs() < 1e-6);
        // A broken row is skipped, not counted.
        let bad = [
            (0usize, [f32::NAN, 0.5].as_slice()),
            (5, [0.5, 0.5].as_slice()),
        ];
        assert_eq!(estimate(&labels, bad).predictions, 0);
        // Calibrated probabilities: the estimate approaches the realised accuracy.
        let mut pairs = Vec::new();
        let mut probs = Vec::new();
        for i in 0..1000u32 {
            let p = 0.55 + 0.4 * f64::from(i % 10) / 10.0;
            let right = f64::from((i * 7919) % 1000) / 1000.0 < p;
            probs.push((0usize, vec![p as f32, 1.0 - p as f32]));
            pairs.push(("ok", if right { "ok" } else { "defect" }));
        }
        let est = estimate(&labels, probs.iter().map(|(p, r)| (*p, r.as_slice())));
        let real = realised(&labels, pairs);
        assert!((est.accuracy.unwrap() - real.accuracy.unwrap()).abs() < 0.05);
    }
}
