//! Batch scoring: many images through one model, off the request path.
//!
//! Decoding and preprocessing run on `jobs` OS threads that read files in parallel and hand
//! tensors over a bounded channel; the calling thread forms batches (tiles of whole
//! radiographs included), runs the engine, decides each image with the bundle's rule, and
//! writes rows in input order. One bad file becomes a row with an error, never a stopped run.

pub mod heatmap;
pub mod inputs;
pub mod sink;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Instant;

use serde::Serialize;
use vigil_core::bundle::{DecisionRule, Manifest};
use vigil_core::decision::decide;
use vigil_core::eval::{Confusion, roc_auc};
use vigil_engine::preprocess::{Pipeline, Tensor, TileGrid, Tiled};
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

/// A decoded image on its way to an engine instance.
type Decoded = (usize, Result<Tiled, String>);

/// An image back from an engine instance: its tiles' probabilities, or why it failed.
struct Scored {
    index: usize,
    grid: Option<TileGrid>,
    probs: Result<Vec<Vec<f32>>, String>,
}

/// Runs the job on one engine instance per backend, writing each finished row to `sink` (in
/// input order) and calling `tick` per image.
///
/// Threads: `jobs` decoders → a bounded channel → one thread per backend, each taking whole
/// images until it has `batch_size` tiles, running them, and sending results → this thread,
/// which decides, writes and reports. Small models scale better as several single-threaded
/// instances than as one instance with several threads (as Triton's instance groups do).
pub fn run(
    job: Job<'_>,
    backends: Vec<Box<dyn Backend>>,
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
    let probs_name = job.manifest.roles.probabilities.as_str();
    let n = job.inputs.len();
    let next = AtomicUsize::new(0);
    // Two batches per instance of decoded images in flight keep the engines fed without
    // unbounded memory.
    let (tx, rx) = mpsc::sync_channel::<Decoded>(job.batch_size.max(1) * 2 * backends.len().max(1));
    let rx = Mutex::new(rx);
    let (done_tx, done_rx) = mpsc::sync_channel::<Scored>(job.batch_size.max(1) * 2);
    let mut summary = Summary::default();
    let mut scores: Vec<(Vec<f32>, Option<usize>)> = Vec::new();
    let tiles_run = AtomicUsize::new(0);

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
                        break; // the engines stopped
                    }
                }
            });
        }
        drop(tx);
        for mut backend in backends {
            let (rx, done_tx, tiles_run) = (&rx, done_tx.clone(), &tiles_run);
            let batch_size = job.batch_size.max(1);
            scope.spawn(move || {
                while let Some(images) = take_images(rx, batch_size) {
                    for scored in
                        score_images(backend.as_mut(), images, batch_size, probs_name, tiles_run)
                    {
                        if done_tx.send(scored).is_err() {
                            return; // the writer stopped
                        }
                    }
                }
            });
        }
        drop(done_tx);

        let mut ready: BTreeMap<usize, Row> = BTreeMap::new();
        let mut next_out = 0usize;
        for scored in done_rx.iter() {
            let input = &job.inputs[scored.index];
            let base = Row {
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
            let row = match scored.probs {
                Err(e) => Row {
                    error: Some(e),
                    ..base
                },
                Ok(probs) => {
                    if let (Some(dir), Some(grid), true) =
                        (&job.heatmap_dir, &scored.grid, probs.len() > 1)
                        && let Err(e) =
                            heatmap::write(dir, input, grid, &tile_scores(job.manifest, &probs))
                    {
                        tracing::warn!(path = %input.path.display(), error = %e, "Heat map not written.");
                    }
                    finish(job.manifest, &labels, &probs, base)
                }
            };
            ready.insert(scored.index, row);
            while let Some(row) = ready.remove(&next_out) {
                record(&mut summary, &mut scores, &labels, &row);
                sink.write(&row)?;
                tick(&row);
                next_out += 1;
            }
        }
        if next_out < n {
            anyhow::bail!("scoring stopped after {next_out} of {n} images; this is a bug");
        }
        Ok(())
    })?;
    summary.tiles = tiles_run.load(Ordering::Relaxed);
    summary.seconds = start.elapsed().as_secs_f64();
    summary.accuracy = summary.confusion.accuracy();
    summary.roc_auc = auc(&job.manifest.decision, &labels, &scores);
    Ok(summary)
}

/// Takes whole decoded images from the shared channel until they hold `batch_size` tiles:
/// blocks for the first, then takes only what is already there. `None` when all are done.
fn take_images(rx: &Mutex<mpsc::Receiver<Decoded>>, batch_size: usize) -> Option<Vec<Decoded>> {
    let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
    let first = rx.recv().ok()?;
    let mut tiles = first.1.as_ref().map_or(0, |t| t.tiles.len());
    let mut out = vec![first];
    while tiles < batch_size {
        match rx.try_recv() {
            Ok(item) => {
                tiles += item.1.as_ref().map_or(0, |t| t.tiles.len());
                out.push(item);
            }
            Err(_) => break,
        }
    }
    Some(out)
}

/// Runs every tile of `images` through the engine in batches of at most `batch_size` and
/// gives each image its tiles' probabilities (or the error that stopped it).
fn score_images(
    backend: &mut dyn Backend,
    images: Vec<Decoded>,
    batch_size: usize,
    probs_name: &str,
    tiles_run: &AtomicUsize,
) -> Vec<Scored> {
    let mut out = Vec::with_capacity(images.len());
    // (image position in `out`, tile) for every tile to run.
    let mut queue: Vec<(usize, &Tensor)> = Vec::new();
    for (index, result) in &images {
        match result {
            Err(e) => out.push(Scored {
                index: *index,
                grid: None,
                probs: Err(e.clone()),
            }),
            Ok(tiled) => {
                let at = out.len();
                out.push(Scored {
                    index: *index,
                    grid: Some(tiled.grid.clone()),
                    probs: Ok(Vec::new()),
                });
                queue.extend(tiled.tiles.iter().map(|t| (at, t)));
            }
        }
    }
    for chunk in queue.chunks(batch_size) {
        let tensors: Vec<&Tensor> = chunk.iter().map(|(_, t)| *t).collect();
        let result = Batch::stack(&tensors)
            .and_then(|b| backend.run(&b))
            .map_err(|e| e.to_string())
            .and_then(|mut outputs| {
                outputs
                    .remove(probs_name)
                    .ok_or_else(|| format!("the model gave no output {probs_name:?}"))
            });
        tiles_run.fetch_add(chunk.len(), Ordering::Relaxed);
        for (k, (at, _)) in chunk.iter().enumerate() {
            let scored = &mut out[*at];
            match (&result, &mut scored.probs) {
                (Ok(probs), Ok(list)) => list.push(probs.item(k).to_vec()),
                (Err(e), slot @ Ok(_)) => *slot = Err(e.clone()),
                (_, Err(_)) => {}
            }
        }
    }
    out
}

/// p(positive) per tile for a threshold rule; the top probability for argmax.
fn tile_scores(manifest: &Manifest, probs: &[Vec<f32>]) -> Vec<f32> {
    let labels = &manifest.model.labels;
    probs
        .iter()
        .map(|p| decide(&manifest.decision, labels, p).map_or(0.0, |d| d.score))
        .collect()
}

/// The row of a scored image: a film takes the tile the rule finds most positive.
fn finish(manifest: &Manifest, labels: &[String], tiles: &[Vec<f32>], base: Row) -> Row {
    let scores = tile_scores(manifest, tiles);
    let best = scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i);
    let probs = tiles.get(best).cloned().unwrap_or_default();
    let count = tiles.len() as u32;
    match decide(&manifest.decision, &manifest.model.labels, &probs) {
        Some(d) => Row {
            label: Some(d.label.to_string()),
            confidence: Some(d.confidence),
            probabilities: probs,
            flags: if d.review {
                vec!["review".into()]
            } else {
                Vec::new()
            },
            tiles: count,
            ..base
        },
        None => Row {
            error: Some(format!(
                "the model gave {} probabilities for {} labels, or a non-finite value",
                probs.len(),
                labels.len()
            )),
            tiles: count,
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
