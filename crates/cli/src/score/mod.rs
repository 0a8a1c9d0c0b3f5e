//! Batch scoring: many images through one model, off the request path.
//!
//! Decoding and preprocessing run on `jobs` OS threads that read files in parallel and hand
//! tensors over a bounded channel; the calling thread forms batches (tiles of whole
//! radiographs included), runs the engine, decides each image with the bundle's rule, and
//! writes rows in input order. One bad file becomes a row with an error, never a stopped run.

pub mod heatmap;
pub mod inputs;
pub mod sink;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use serde::Serialize;
use vigil_core::bundle::{DecisionRule, Manifest};
use vigil_core::decision::decide;
use vigil_core::eval::{Confusion, roc_auc};
use vigil_engine::preprocess::{Pipeline, Tensor, TileGrid};
use vigil_engine::{Backend, Batch};

use self::inputs::Input;
use self::sink::{Row, Sink};

/// Everything a scoring run needs.
#[derive(Debug)]
pub struct Job<'a> {
    /// The model's manifest (labels, decision rule, outputs).
    pub manifest: &'a Manifest,
    /// The model's version, for the rows.
    pub version: String,
    /// The declared preprocessing.
    pub pipeline: &'a Pipeline,
    /// Images to score, in output order.
    pub inputs: Vec<Input>,
    /// Most tiles per engine call.
    pub batch_size: usize,
    /// Decode threads.
    pub jobs: usize,
    /// Where to write one heat-map PNG per film (tiling bundles only).
    pub heatmap_dir: Option<PathBuf>,
}

/// What a run did.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Images scored.
    pub scored: usize,
    /// Images that could not be scored (each has a row with its error).
    pub failed: usize,
    /// Predictions by label.
    pub by_label: BTreeMap<String, usize>,
    /// Predictions the decision rule sends to review.
    pub review: usize,
    /// Tiles run through the engine.
    pub tiles: usize,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Confusion matrix, when the inputs carry expected labels.
    pub confusion: Confusion,
    /// Accuracy against the expected labels.
    pub accuracy: Option<f64>,
    /// ROC-AUC: of p(positive) for a threshold rule; macro one-vs-rest for argmax.
    pub roc_auc: Option<f64>,
}

struct Pending {
    input: Input,
    grid: TileGrid,
    probs: Vec<Option<Vec<f32>>>,
    left: usize,
}

/// Runs the job, writing each finished row to `sink` and calling `tick` per image.
pub fn run(
    job: Job<'_>,
    backend: &mut dyn Backend,
    sink: &mut dyn Sink,
    tick: &dyn Fn(&Row),
) -> anyhow::Result<Summary> {
    let start = Instant::now();
    let labels: Vec<String> = job
        .manifest
        .model
        .labels
        .iter()
        .map(|l| l.to_string())
        .collect();
    let probs_name = job.manifest.roles.probabilities.clone();
    let n = job.inputs.len();
    let next = AtomicUsize::new(0);
    // Two batches of decoded images in flight keep the engine fed without unbounded memory.
    let (tx, rx) = mpsc::sync_channel::<(usize, Result<vigil_engine::preprocess::Tiled, String>)>(
        job.batch_size.max(1) * 2,
    );
    let mut summary = Summary::default();
    let mut scores: Vec<(Vec<f32>, Option<usize>)> = Vec::new();

    std::thread::scope(|scope| -> anyhow::Result<()> {
        for _ in 0..job.jobs.max(1) {
            let tx = tx.clone();
            let (next, inputs, pipeline) = (&next, &job.inputs, job.pipeline);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(input) = inputs.get(i) else { break };
                    let result = std::fs::read(&input.path)
                        .map_err(|e| format!("cannot read {}: {e}", input.path.display()))
                        .and_then(|bytes| pipeline.run_tiles(&bytes).map_err(|e| e.to_string()));
                    if tx.send((i, result)).is_err() {
                        break; // the engine side stopped
                    }
                }
            });
        }
        drop(tx);

        let mut pending: BTreeMap<usize, Pending> = BTreeMap::new();
        let mut ready: BTreeMap<usize, Row> = BTreeMap::new();
        let mut queue: VecDeque<(usize, usize, Tensor)> = VecDeque::new();
        let mut next_out = 0usize;
        let mut received = 0usize;
        let row_base = |input: &Input| Row {
            path: input.name.clone(),
            model: job.manifest.model.name.to_string(),
            version: job.version.clone(),
            label: None,
            confidence: None,
            probabilities: Vec::new(),
            flags: Vec::new(),
            error: None,
            expected: input.expected.clone(),
            tiles: 0,
        };
        while next_out < n {
            // Take what the decoders have ready; block only when there is nothing to run.
            while queue.len() < job.batch_size && received < n {
                let msg = if queue.is_empty() {
                    rx.recv().ok()
                } else {
                    rx.try_recv().ok()
                };
                let Some((i, result)) = msg else { break };
                received += 1;
                let input = job.inputs[i].clone();
                match result {
                    Ok(tiled) => {
                        let count = tiled.tiles.len();
                        for (t, tensor) in tiled.tiles.into_iter().enumerate() {
                            queue.push_back((i, t, tensor));
                        }
                        pending.insert(
                            i,
                            Pending {
                                input,
                                grid: tiled.grid,
                                probs: vec![None; count],
                                left: count,
                            },
                        );
                    }
                    Err(e) => {
                        ready.insert(
                            i,
                            Row {
                                error: Some(e),
                                ..row_base(&input)
                            },
                        );
                    }
                }
            }
            if !queue.is_empty() {
                let take = queue.len().min(job.batch_size);
                let batch: Vec<(usize, usize, Tensor)> = queue.drain(..take).collect();
                let tensors: Vec<&Tensor> = batch.iter().map(|(_, _, t)| t).collect();
                let result = Batch::stack(&tensors).and_then(|b| backend.run(&b));
                summary.tiles += batch.len();
                match result {
                    Ok(outputs) => {
                        let probs = outputs.get(&probs_name).ok_or_else(|| {
                            anyhow::anyhow!("the model gave no output {probs_name:?}")
                        })?;
                        for (k, (i, t, _)) in batch.iter().enumerate() {
                            if let Some(p) = pending.get_mut(i) {
                                p.probs[*t] = Some(probs.item(k).to_vec());
                                p.left -= 1;
                            }
                        }
                    }
                    Err(e) => {
                        for (i, _, _) in &batch {
                            if let Some(p) = pending.remove(i) {
                                ready.insert(
                                    *i,
                                    Row {
                                        error: Some(e.to_string()),
                                        ..row_base(&p.input)
                                    },
                                );
                            }
                        }
                    }
                }
                let done: Vec<usize> = pending
                    .iter()
                    .filter(|(_, p)| p.left == 0)
                    .map(|(i, _)| *i)
                    .collect();
                for i in done {
                    let p = pending.remove(&i).expect("listed just above");
                    let row = finish(&job, &labels, &p, row_base(&p.input));
                    if let (Some(dir), true) = (&job.heatmap_dir, p.probs.len() > 1)
                        && let Err(e) =
                            heatmap::write(dir, &p.input, &p.grid, &tile_scores(job.manifest, &p))
                    {
                        tracing::warn!(path = %p.input.path.display(), error = %e, "Heat map not written.");
                    }
                    ready.insert(i, row);
                }
            }
            while let Some(row) = ready.remove(&next_out) {
                record(&mut summary, &mut scores, &labels, &row);
                sink.write(&row)?;
                tick(&row);
                next_out += 1;
            }
            if received == n && queue.is_empty() && pending.is_empty() && ready.is_empty() {
                break;
            }
        }
        Ok(())
    })?;
    summary.seconds = start.elapsed().as_secs_f64();
    summary.accuracy = summary.confusion.accuracy();
    summary.roc_auc = auc(&job.manifest.decision, &labels, &scores);
    Ok(summary)
}

/// p(positive) per tile for a threshold rule; the top probability for argmax.
fn tile_scores(manifest: &Manifest, p: &Pending) -> Vec<f32> {
    let labels = &manifest.model.labels;
    p.probs
        .iter()
        .map(|probs| {
            let probs = probs.as_deref().unwrap_or(&[]);
            decide(&manifest.decision, labels, probs).map_or(0.0, |d| d.score)
        })
        .collect()
}

/// The row of a finished image: a film takes the tile the rule finds most positive.
fn finish(job: &Job<'_>, labels: &[String], p: &Pending, base: Row) -> Row {
    let scores = tile_scores(job.manifest, p);
    let best = scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i);
    let probs = p.probs.get(best).cloned().flatten().unwrap_or_default();
    match decide(&job.manifest.decision, &job.manifest.model.labels, &probs) {
        Some(d) => Row {
            label: Some(d.label.to_string()),
            confidence: Some(d.confidence),
            probabilities: probs,
            flags: if d.review {
                vec!["review".into()]
            } else {
                Vec::new()
            },
            tiles: p.probs.len() as u32,
            ..base
        },
        None => Row {
            error: Some(format!(
                "the model gave {} probabilities for {} labels, or a non-finite value",
                probs.len(),
                labels.len()
            )),
            tiles: p.probs.len() as u32,
            ..base
        },
    }
}

fn record(
    summary: &mut Summary,
    scores: &mut Vec<(Vec<f32>, Option<usize>)>,
    labels: &[String],
    row: &Row,
) {
    let Some(label) = &row.label else {
        summary.failed += 1;
        return;
    };
    summary.scored += 1;
    *summary.by_label.entry(label.clone()).or_default() += 1;
    if !row.flags.is_empty() {
        summary.review += 1;
    }
    if let Some(expected) = &row.expected {
        summary.confusion.add(expected, label);
        scores.push((
            row.probabilities.clone(),
            labels.iter().position(|l| l == expected),
        ));
    }
}

fn auc(
    rule: &DecisionRule,
    labels: &[String],
    scores: &[(Vec<f32>, Option<usize>)],
) -> Option<f64> {
    let per_label = |k: usize| {
        let s: Vec<f32> = scores
            .iter()
            .map(|(p, _)| p.get(k).copied().unwrap_or(0.0))
            .collect();
        let pos: Vec<bool> = scores.iter().map(|(_, e)| *e == Some(k)).collect();
        roc_auc(&s, &pos)
    };
    match rule {
        DecisionRule::Threshold { positive, .. } => {
            per_label(labels.iter().position(|l| l == positive.as_str())?)
        }
        DecisionRule::Argmax { .. } => {
            let aucs: Vec<f64> = (0..labels.len()).filter_map(per_label).collect();
            (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64)
        }
    }
}
