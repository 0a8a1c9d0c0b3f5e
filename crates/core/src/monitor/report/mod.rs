//! The drift report (`vigil drift report`, DESIGN.md section 4): a set of current images
//! (a period of the prediction log, or a folder of new images) compared with the bundle's
//! reference profile, as one standalone HTML page for people and a JSON twin for machines.
//!
//! [`DriftReport`] *is* the JSON twin: everything the page draws is in it (samples capped
//! and evenly thinned, so that the file stays small), and [`render_html`] draws the page
//! from it alone. Pure, like the rest of this crate: the caller runs the model, reads the
//! log and passes the clock's time.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::window::{STAT_SHORT, summarise};
use super::{MonitorError, Observation, ReferenceProfile, STAT_DESCRIPTIONS, STAT_NAMES};
use super::{WindowReport, evaluate};

mod html;

pub use self::html::render_html;

/// The report format written by this version.
pub const REPORT_FORMAT: u32 = 1;

/// Most current observations the overall evaluation runs on (evenly thinned beyond).
pub const MAX_EVALUATED: usize = 2000;

/// Most values kept per drawn sample (reference or current, per statistic; OOD distances).
pub const MAX_DRAWN: usize = 2000;

/// Bins of the histograms.
const BINS: usize = 20;

/// What the current data is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CurrentData {
    /// Predictions of the model read from the prediction log.
    Period {
        /// Start of the period (inclusive).
        since: DateTime<Utc>,
        /// End of the period (exclusive).
        until: DateTime<Utc>,
        /// Logged predictions found in it.
        predictions: usize,
        /// Of those, left out (a label the reference does not know, a malformed record).
        skipped: usize,
    },
    /// New images that have not (necessarily) reached production.
    Folder {
        /// The inputs as given (folders, globs, manifests).
        inputs: Vec<String>,
        /// Images found.
        images: usize,
        /// Of those, unreadable (skipped with a warning).
        skipped: usize,
    },
}

impl CurrentData {
    /// One line for people: "predictions logged from ... to ..." or "images in ...".
    pub fn describe(&self) -> String {
        match self {
            CurrentData::Period {
                since,
                until,
                predictions,
                skipped,
            } => format!(
                "{predictions} predictions logged from {} to {}{}",
                since.format("%Y-%m-%d %H:%M UTC"),
                until.format("%Y-%m-%d %H:%M UTC"),
                skipped_note(*skipped)
            ),
            CurrentData::Folder {
                inputs,
                images,
                skipped,
            } => format!(
                "{images} images from {}{}",
                inputs.join(", "),
                skipped_note(*skipped)
            ),
        }
    }
}

fn skipped_note(skipped: usize) -> String {
    if skipped == 0 {
        String::new()
    } else {
        format!(" ({skipped} skipped)")
    }
}

/// Where the reference came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceSummary {
    /// Observations the profile was built from.
    pub images: usize,
    /// Its source, as recorded in the profile.
    pub source: String,
    /// The window size the thresholds were calibrated for.
    pub window: usize,
    /// The target probability that an in-distribution window alarms.
    pub alpha: f64,
}

/// One image statistic: the reference sample and the current values, for drawing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatComparison {
    /// The statistic (one of [`STAT_NAMES`]).
    pub name: String,
    /// Its short name for people ("brightness").
    pub label: String,
    /// What it measures.
    pub description: String,
    /// Reference values, sorted, at most [`MAX_DRAWN`].
    pub reference: Vec<f64>,
    /// Current values, sorted, at most [`MAX_DRAWN`].
    pub current: Vec<f64>,
}

/// Out-of-distribution scores of the current images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OodSummary {
    /// Distance above which one image does not resemble the reference.
    pub threshold: f64,
    /// The quantile of in-distribution distances the threshold sits at (0.99: about 1% of
    /// in-distribution images are flagged).
    pub quantile: f64,
    /// Images scored.
    pub scored: usize,
    /// Of those, past the threshold.
    pub flagged: usize,
    /// Distances, sorted, at most [`MAX_DRAWN`].
    pub distances: Vec<f64>,
}

/// Predicted-class shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassShares {
    /// The labels, in the bundle's order.
    pub labels: Vec<String>,
    /// Shares on the reference.
    pub reference: Vec<f64>,
    /// Shares on the current images (all of them, not only the evaluated ones).
    pub current: Vec<f64>,
}

/// One stored drift window, for the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// When the window closed.
    pub ended_at: DateTime<Utc>,
    /// The version it watched.
    pub version: String,
    /// Images in it.
    pub images: usize,
    /// Whether it found drift.
    pub drift: bool,
    /// Per signal, the statistic divided by its threshold (above 1 = alarm); `None` for a
    /// signal with threshold 0 (a fixed statistic such as the image width).
    pub signals: Vec<SignalRatio>,
}

/// One signal of one timeline window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalRatio {
    /// The signal.
    pub name: String,
    /// Statistic / threshold.
    pub ratio: Option<f64>,
    /// Whether it alarmed.
    pub drifted: bool,
}

impl TimelinePoint {
    /// The point of a stored window's report.
    pub fn from_report(
        ended_at: DateTime<Utc>,
        version: &str,
        report: &WindowReport,
    ) -> TimelinePoint {
        TimelinePoint {
            ended_at,
            version: version.to_string(),
            images: report.images,
            drift: report.drift,
            signals: report
                .signals
                .iter()
                .map(|s| SignalRatio {
                    name: s.name.clone(),
                    ratio: (s.threshold > 0.0 && s.statistic.is_finite())
                        .then(|| s.statistic / s.threshold),
                    drifted: s.drifted,
                })
                .collect(),
        }
    }
}

/// What [`DriftReport::build`] needs besides the observations.
#[derive(Debug, Clone)]
pub struct ReportInput {
    /// The page's title.
    pub title: String,
    /// The model.
    pub model: String,
    /// The version whose reference is used.
    pub version: String,
    /// When the report is made (the caller's clock).
    pub generated_at: DateTime<Utc>,
    /// What the observations are.
    pub current: CurrentData,
    /// Stored drift windows, oldest first (empty for a folder).
    pub timeline: Vec<TimelinePoint>,
    /// Seed of the MMD permutation p-value.
    pub seed: u64,
}

/// A drift report; serialised, it is the JSON twin of the HTML page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    /// [`REPORT_FORMAT`].
    pub format: u32,
    /// The page's title.
    pub title: String,
    /// The model.
    pub model: String,
    /// The version whose reference the current data is compared with.
    pub version: String,
    /// When the report was made.
    pub generated_at: DateTime<Utc>,
    /// What the current data is.
    pub current: CurrentData,
    /// Where the reference came from.
    pub reference: ReferenceSummary,
    /// Current observations.
    pub images: usize,
    /// Of those, evaluated (all, or [`MAX_EVALUATED`] evenly spread).
    pub evaluated: usize,
    /// The whole current set (or its even subsample) against the reference, as one window.
    pub overall: WindowReport,
    /// The headline, in plain words.
    pub headline: String,
    /// Per image statistic, the values to draw (empty when there are no statistics).
    pub stats: Vec<StatComparison>,
    /// Out-of-distribution scores (when the reference has embeddings).
    pub ood: Option<OodSummary>,
    /// Predicted-class shares.
    pub classes: ClassShares,
    /// Stored drift windows, oldest first.
    pub timeline: Vec<TimelinePoint>,
}

impl DriftReport {
    /// Compares `observations` with `reference`: scores each one's out-of-distribution
    /// distance (when the reference has embeddings and the observation one), evaluates the
    /// set as one window (evenly thinned to [`MAX_EVALUATED`]), and keeps what the page
    /// draws. Errors: no observations, and [`evaluate`]'s (labels or embedding lengths that
    /// do not match the reference).
    ///
    /// The thresholds were calibrated for windows of `reference.drift.window` images; a
    /// larger set alarms less often than that on in-distribution data (and sees smaller
    /// shifts), a smaller one more often.
    pub fn build(
        reference: &ReferenceProfile,
        mut observations: Vec<Observation>,
        input: ReportInput,
    ) -> Result<DriftReport, MonitorError> {
        if observations.is_empty() {
            return Err(MonitorError::Empty {
                what: "observations",
            });
        }
        let ood = match reference.ood_scorer()? {
            Some(scorer) => {
                let mut distances = Vec::new();
                for o in &mut observations {
                    let Some(e) = o.embedding.as_deref() else {
                        continue;
                    };
                    if e.len() != scorer.dim() {
                        continue;
                    }
                    let s = scorer.score(e)?;
                    o.ood_distance = Some(s.distance);
                    o.out_of_distribution = s.out_of_distribution;
                    distances.push(s.distance);
                }
                let flagged = distances
                    .iter()
                    .filter(|&&d| d > scorer.threshold())
                    .count();
                (!distances.is_empty()).then(|| OodSummary {
                    threshold: scorer.threshold(),
                    quantile: reference.embedding.as_ref().map_or(0.0, |e| e.ood_quantile),
                    scored: distances.len(),
                    flagged,
                    distances: sorted_thin(distances),
                })
            }
            None => None,
        };
        let evaluated = thin(&observations, MAX_EVALUATED);
        let mut overall = evaluate(reference, &evaluated, input.seed)?;
        scale_class_signal(reference, &mut overall);
        let stats = match &reference.stats {
            Some(samples) => samples
                .iter()
                .enumerate()
                .map(|(i, s)| StatComparison {
                    name: STAT_NAMES[i].to_string(),
                    label: STAT_SHORT[i].to_string(),
                    description: STAT_DESCRIPTIONS[i].to_string(),
                    reference: sorted_thin(s.sample.clone()),
                    current: sorted_thin(
                        observations
                            .iter()
                            .filter_map(|o| o.stats.map(|st| st.values()[i]))
                            .collect(),
                    ),
                })
                .collect(),
            None => Vec::new(),
        };
        let n_labels = reference.labels.len();
        let mut counts = vec![0usize; n_labels];
        for o in &observations {
            if let Some(c) = counts.get_mut(o.predicted) {
                *c += 1;
            }
        }
        let classes = ClassShares {
            labels: reference.labels.clone(),
            reference: reference.predictions.class_shares.clone(),
            current: counts
                .iter()
                .map(|&c| c as f64 / observations.len() as f64)
                .collect(),
        };
        let headline = headline(&overall, &input.current, observations.len());
        Ok(DriftReport {
            format: REPORT_FORMAT,
            title: input.title,
            model: input.model,
            version: input.version,
            generated_at: input.generated_at,
            current: input.current,
            reference: ReferenceSummary {
                images: reference.images,
                source: reference.source.clone(),
                window: reference.drift.window,
                alpha: reference.drift.alpha,
            },
            images: observations.len(),
            evaluated: evaluated.len(),
            headline,
            overall,
            stats,
            ood,
            classes,
            timeline: input.timeline,
        })
    }

    /// The JSON twin, pretty-printed.
    pub fn to_json(&self) -> Result<String, MonitorError> {
        serde_json::to_string_pretty(self).map_err(|e| MonitorError::Internal(e.to_string()))
    }

    /// Reads a JSON twin back.
    pub fn from_json(text: &str) -> Result<DriftReport, MonitorError> {
        serde_json::from_str(text).map_err(|e| MonitorError::Json(e.to_string()))
    }
}

/// Pearson's `X²` grows with the number of images for any fixed difference in shares, so
/// on a set larger than the calibrated window it is scaled to that window
/// (`X² × window / n`): the class signal alarms when the shares differ as much as an
/// alarming window's would, not on a tiny difference that many images make significant.
/// KS `D` and MMD² do not grow with the set, and are left as computed.
fn scale_class_signal(reference: &ReferenceProfile, overall: &mut WindowReport) {
    let window = reference.drift.window as f64;
    let mut changed = false;
    for s in &mut overall.signals {
        let n = s.images as f64;
        if s.name == CLASS_SIGNAL && n > window {
            s.statistic *= window / n;
            s.drifted = s.statistic > s.threshold;
            changed = true;
        }
    }
    if !changed {
        return;
    }
    overall.drifted = overall
        .signals
        .iter()
        .filter(|s| s.drifted)
        .map(|s| s.name.clone())
        .collect();
    overall.drift = !overall.drifted.is_empty();
    overall.summary = summarise(
        reference,
        &overall.signals,
        &overall.class_shares,
        overall.mean_confidence,
        overall.images,
    );
}

/// The predicted-class signal's name.
const CLASS_SIGNAL: &str = "predictions.classes";

/// `n` items of `items`, evenly spread (all when there are fewer), in order.
fn thin<T: Clone>(items: &[T], n: usize) -> Vec<T> {
    if items.len() <= n {
        return items.to_vec();
    }
    (0..n).map(|k| items[k * items.len() / n].clone()).collect()
}

/// Sorted, then evenly thinned to [`MAX_DRAWN`] (quantiles kept); non-finite values dropped.
fn sorted_thin(mut values: Vec<f64>) -> Vec<f64> {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    thin(&values, MAX_DRAWN)
}

/// The verdict in plain words.
fn headline(overall: &WindowReport, current: &CurrentData, images: usize) -> String {
    let what = match current {
        CurrentData::Period { .. } => "these predictions' images",
        CurrentData::Folder { .. } => "these images",
    };
    if !overall.drift {
        return format!(
            "No drift: {what} ({images}) look like the training images the model was checked \
             on ({} signals checked).",
            overall.signals.len()
        );
    }
    let stats_drifted = overall.drifted.iter().any(|s| s.starts_with("stat."));
    let advice = if stats_drifted {
        "check the detector, exposure and digitiser settings before trusting the model's \
         verdicts on them"
    } else {
        "the images look alike but the model sees them differently: check what is being \
         inspected and review a sample of the verdicts"
    };
    let summary = overall.summary.trim_end_matches('.');
    format!("Drift: {summary} — {advice}.")
}

/// What each signal is called for people.
fn signal_name(name: &str) -> String {
    if let Some(i) = name
        .strip_prefix("stat.")
        .and_then(|stat| STAT_NAMES.iter().position(|&s| s == stat))
    {
        return capitalise(STAT_SHORT[i]);
    }
    match name {
        "embedding.mmd" => "What the model sees".into(),
        "predictions.classes" => "Predicted classes".into(),
        "predictions.confidence" => "Model confidence".into(),
        other => other.to_string(),
    }
}

/// How each test's statistic reads.
fn test_name(test: &str) -> &'static str {
    match test {
        "ks" => "largest gap between the two cumulative distributions (KS)",
        "mmd" => "distance between the two clouds of embeddings (MMD²)",
        "chi2" => "chi-square of the class counts",
        _ => "statistic",
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => format!("{}{}", f.to_uppercase(), c.as_str()),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::synthetic::{DIM, Shift, observations, profile};
    use super::*;

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + h * 3600, 0).expect("a valid time")
    }

    fn input(current: CurrentData, timeline: Vec<TimelinePoint>) -> ReportInput {
        ReportInput {
            title: "Drift <report> & \"weld\"".into(),
            model: "weld<net>".into(),
            version: "1.0.0".into(),
            generated_at: at(30),
            current,
            timeline,
            seed: 3,
        }
    }

    fn folder(n: usize) -> CurrentData {
        CurrentData::Folder {
            inputs: vec!["films/<new>".into()],
            images: n,
            skipped: 0,
        }
    }

    fn timeline() -> Vec<TimelinePoint> {
        let reference = profile();
        (0..6)
            .map(|k| {
                let shift = if k < 4 {
                    Shift::NONE
                } else {
                    Shift {
                        sharpness: 0.4,
                        ..Shift::NONE
                    }
                };
                let obs = observations(100 + k, 40, DIM, shift);
                let w = evaluate(&reference, &obs, 1).expect("evaluates");
                TimelinePoint::from_report(at(k as i64), "1.0.0", &w)
            })
            .collect()
    }

    #[test]
    fn in_distribution_images_give_no_drift_and_every_section() {
        let obs = observations(11, 120, DIM, Shift::NONE);
        let r =
            DriftReport::build(&profile(), obs, input(folder(120), timeline())).expect("builds");
        assert!(!r.overall.drift, "{:?}", r.overall.drifted);
        assert!(r.headline.starts_with("No drift"), "{}", r.headline);
        assert_eq!(r.images, 120);
        assert_eq!(r.stats.len(), STAT_NAMES.len());
        let ood = r.ood.as_ref().expect("the profile has embeddings");
        assert_eq!(ood.scored, 120);
        assert_eq!(r.classes.current.len(), 2);
        assert!(r.timeline.iter().any(|w| w.drift));
        let page = render_html(&r);
        for id in [
            "id=\"verdict\"",
            "id=\"how-to-read\"",
            "id=\"signals\"",
            "id=\"statistics\"",
            "id=\"timeline\"",
            "id=\"ood\"",
            "id=\"classes\"",
        ] {
            assert!(page.contains(id), "{id}");
        }
        assert!(page.contains("verdict ok"));
        // Six varying statistics, the timeline and the OOD histogram; width, height and bit
        // depth are the same everywhere.
        assert_eq!(page.matches("<svg").count(), 8);
        assert!(page.contains("The same for every image"));
        for external in ["src=", "href=", "<link", "@import", "<script"] {
            assert!(!page.contains(external), "{external}");
        }
        assert!(!page.contains("NaN") && !page.contains(">inf"));
    }

    #[test]
    fn blurred_images_drift_in_plain_words() {
        let obs = observations(
            12,
            120,
            DIM,
            Shift {
                sharpness: 0.3,
                brightness: 0.1,
                ..Shift::NONE
            },
        );
        let r =
            DriftReport::build(&profile(), obs, input(folder(120), Vec::new())).expect("builds");
        assert!(r.overall.drift);
        assert!(r.overall.drifted.contains(&"stat.sharpness".to_string()));
        assert!(r.headline.starts_with("Drift: "), "{}", r.headline);
        assert!(r.headline.contains("blurrier"), "{}", r.headline);
        assert!(r.headline.contains("check the detector"), "{}", r.headline);
        let page = render_html(&r);
        assert!(page.contains("verdict drift"));
        assert!(page.contains("<tr class=\"drifted\"><td>Sharpness</td>"));
        assert!(page.contains("A folder of images has no history"));
    }

    #[test]
    fn text_from_the_data_is_escaped() {
        let obs = observations(13, 60, DIM, Shift::NONE);
        let r = DriftReport::build(&profile(), obs, input(folder(60), Vec::new())).expect("builds");
        let page = render_html(&r);
        assert!(page.contains("<title>Drift &lt;report&gt; &amp; &quot;weld&quot;</title>"));
        assert!(page.contains("weld&lt;net&gt;"));
        assert!(page.contains("films/&lt;new&gt;"));
        assert!(!page.contains("<report>") && !page.contains("<new>"));
    }

    #[test]
    fn the_json_twin_round_trips() {
        let obs = observations(14, 3000, DIM, Shift::NONE);
        let period = CurrentData::Period {
            since: at(0),
            until: at(24),
            predictions: 3001,
            skipped: 1,
        };
        let r = DriftReport::build(&profile(), obs, input(period, timeline())).expect("builds");
        // Large sets are thinned: the evaluation and every drawn sample.
        assert_eq!(r.images, 3000);
        assert_eq!(r.evaluated, MAX_EVALUATED);
        assert!(r.stats.iter().all(|s| s.current.len() == MAX_DRAWN));
        assert!(r.stats.iter().all(|s| s.current.is_sorted()));
        let json = r.to_json().expect("serialises");
        let back = DriftReport::from_json(&json).expect("parses");
        assert_eq!(back, r);
        let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(v["current"]["kind"], "period");
        assert_eq!(
            v["overall"]["drift"], false,
            "{:?} {}",
            r.overall.drifted, r.overall.summary
        );
        assert!(render_html(&back).contains("3001 predictions logged"));
    }

    #[test]
    fn timeline_ratios_leave_out_fixed_signals() {
        let t = timeline();
        let w = &t[0];
        let width = w
            .signals
            .iter()
            .find(|s| s.name == "stat.width")
            .expect("width is a signal");
        assert_eq!(width.ratio, None);
        assert!(
            w.signals
                .iter()
                .filter(|s| s.name != "stat.width"
                    && s.name != "stat.height"
                    && s.name != "stat.bit_depth")
                .all(|s| s.ratio.is_some())
        );
    }
}
