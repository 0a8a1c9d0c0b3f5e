//! The training loop: AdamW with a cosine learning rate, class-weighted cross-entropy,
//! augmentation through the bundle's own preprocessing, validation every epoch, early
//! stopping on validation ROC-AUC, and the best epoch kept. Cooperative stop (Ctrl-C) ends
//! the current step and keeps the best model so far.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Serialize;
use vigil_core::eval::curves::pr_auc;
use vigil_core::eval::{EpochRecord, Scored, roc_auc};
use vigil_engine::preprocess::Pipeline;

use crate::arch::{Arch, Net};
use crate::augment::Augment;
use crate::data::{Dataset, Sample};
use crate::rng::Rng;
use crate::{Error, Result};

/// Hyper-parameters of one run (all recorded in the bundle's provenance).
#[derive(Debug, Clone, Serialize)]
pub struct TrainConfig {
    /// Passes over the training split at most.
    pub epochs: u32,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate (cosine decay to 5% of it over the epochs).
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f32,
    /// Seed of initialisation, shuffling and augmentation.
    pub seed: u64,
    /// Stop after this many epochs without a better validation ROC-AUC.
    pub patience: u32,
    /// Weight the loss by inverse class frequency (defects are the minority).
    pub class_weights: bool,
    /// Augmentation of training images.
    pub augment: Augment,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 14,
            batch_size: 32,
            lr: 2e-3,
            weight_decay: 1e-4,
            seed: 42,
            patience: 6,
            class_weights: true,
            augment: Augment::default(),
        }
    }
}

impl TrainConfig {
    /// Refuses settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::Config("--epochs must be at least 1".into()));
        }
        if self.batch_size == 0 || self.batch_size > 4096 {
            return Err(Error::Config(
                "--batch-size must be between 1 and 4096".into(),
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr < 1.0) {
            return Err(Error::Config("--lr must be in (0, 1)".into()));
        }
        Ok(())
    }
}

/// Reports progress; the CLI draws bars, tests and library callers may ignore it.
pub trait Progress {
    /// An epoch of `steps` steps begins.
    fn epoch_started(&self, _epoch: u32, _epochs: u32, _steps: u64) {}
    /// A step finished with this running mean loss.
    fn step(&self, _done: u64, _mean_loss: f64) {}
    /// An epoch ended (with validation).
    fn epoch_finished(&self, _record: &EpochRecord, _best: bool) {}
}

/// Progress that shows nothing.
#[derive(Debug, Default)]
pub struct Quiet;
impl Progress for Quiet {}

/// Why training ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// All epochs ran.
    Completed,
    /// Validation stopped improving for `patience` epochs.
    EarlyStopped,
    /// Interrupted (Ctrl-C); the best epoch so far was kept.
    Interrupted,
}

/// A trained network and how it got there.
#[derive(Debug)]
pub struct Fitted {
    /// The best epoch's network (inference mode).
    pub net: Net,
    /// The best epoch (1-based; 0 when interrupted before the first epoch ended).
    pub best_epoch: u32,
    /// The best network's class probabilities for each validation image, as computed when
    /// that epoch was validated (the reference the export is checked against).
    pub val_probabilities: Vec<Vec<f32>>,
    /// Every epoch's record.
    pub history: Vec<EpochRecord>,
    /// Why it ended.
    pub stop: Stop,
    /// Training images per second over the whole run.
    pub images_per_second: f64,
    /// Wall time of the loop, seconds.
    pub seconds: f64,
}

/// The validation images, preprocessed once.
struct Validation {
    inputs: Vec<f32>,
    shape: [usize; 3],
    labels: Vec<usize>,
}

/// Trains `net` (fresh or from `--init`) on `data`. `positive` is the index of the label
/// whose ROC-AUC drives early stopping.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    data: &Dataset,
    pipeline: &Pipeline,
    arch: &Arch,
    init: Option<Net>,
    positive: usize,
    cfg: &TrainConfig,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<Fitted> {
    cfg.validate()?;
    let device = Device::flex().autodiff();
    device.seed(cfg.seed);
    let val = preprocess_all(pipeline, &data.val)?;
    let [c, _, _] = val.shape;
    let classes = data.labels.len();
    let mut model = match init {
        Some(net) => net.fork(&device),
        None => arch.init(c, classes, &device, cfg.seed),
    };
    let mut optim = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay)
        .init();
    let loss_fn = CrossEntropyLossConfig::new()
        .with_weights(cfg.class_weights.then(|| class_weights(data)))
        .init(&device);
    let steps_per_epoch = data.train.len().div_ceil(cfg.batch_size) as u64;
    let total_steps = (steps_per_epoch * u64::from(cfg.epochs)).max(1);
    let mut history = Vec::new();
    let mut best: Option<(f64, u32, Net, Vec<Vec<f32>>)> = None;
    let mut stop_reason = Stop::Completed;
    let started = Instant::now();
    let mut trained_images = 0usize;
    let mut step = 0u64;
    'epochs: for epoch in 1..=cfg.epochs {
        let epoch_started = Instant::now();
        progress.epoch_started(epoch, cfg.epochs, steps_per_epoch);
        let mut order: Vec<usize> = (0..data.train.len()).collect();
        Rng::derive(cfg.seed, &[u64::from(epoch)]).shuffle(&mut order);
        let (mut loss_sum, mut loss_n) = (0.0f64, 0usize);
        for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
            if stop.load(Ordering::Relaxed) {
                stop_reason = Stop::Interrupted;
                break 'epochs;
            }
            let (x, y) = train_batch(pipeline, data, chunk, cfg, epoch, &device)?;
            let logits = model.forward(x);
            let loss = loss_fn.forward(logits, y);
            let value = f64::from(loss.clone().into_scalar::<f32>());
            if !value.is_finite() {
                return Err(Error::Diverged { epoch, loss: value });
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr_at(cfg.lr, step, total_steps), model, grads);
            step += 1;
            trained_images += chunk.len();
            loss_sum += value * chunk.len() as f64;
            loss_n += chunk.len();
            progress.step(b as u64 + 1, loss_sum / loss_n as f64);
        }
        let net = model.valid();
        let (val_loss, scored, probs) = evaluate(&net, &val, positive)?;
        let auc = roc_auc_of(&scored);
        let seconds = epoch_started.elapsed().as_secs_f64();
        let record = EpochRecord {
            epoch,
            train_loss: loss_sum / loss_n.max(1) as f64,
            val_loss,
            val_roc_auc: auc,
            val_pr_auc: pr_auc(&scored).unwrap_or(0.0),
            images_per_second: loss_n as f64 / seconds.max(1e-9),
            seconds,
        };
        let improved = best.as_ref().is_none_or(|(b, ..)| auc > *b);
        progress.epoch_finished(&record, improved);
        history.push(record);
        if improved {
            best = Some((auc, epoch, net, probs));
        } else if best
            .as_ref()
            .is_some_and(|(_, e, ..)| epoch - e >= cfg.patience)
        {
            stop_reason = Stop::EarlyStopped;
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let (best_epoch, net, val_probabilities) = match best {
        Some((_, e, net, probs)) => (e, net, probs),
        None => {
            let net = model.valid();
            let (_, _, probs) = evaluate(&net, &val, positive)?;
            (0, net, probs)
        }
    };
    Ok(Fitted {
        net,
        best_epoch,
        val_probabilities,
        history,
        stop: stop_reason,
        images_per_second: trained_images as f64 / seconds.max(1e-9),
        seconds,
    })
}

/// Cosine decay from `peak` to 5% of it.
fn lr_at(peak: f64, step: u64, total: u64) -> f64 {
    let t = step as f64 / total as f64;
    peak * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

/// Inverse class frequency, normalised so that the weights average 1 over the samples.
fn class_weights(data: &Dataset) -> Vec<f32> {
    let counts = Dataset::counts(&data.train, data.labels.len());
    let n = data.train.len() as f32;
    let k = counts.iter().filter(|c| **c > 0).count().max(1) as f32;
    counts
        .iter()
        .map(|&c| if c == 0 { 0.0 } else { n / (k * c as f32) })
        .collect()
}

fn train_batch(
    pipeline: &Pipeline,
    data: &Dataset,
    chunk: &[usize],
    cfg: &TrainConfig,
    epoch: u32,
    device: &Device,
) -> Result<(Tensor<4>, Tensor<1, Int>)> {
    let mut inputs = Vec::new();
    let mut labels = Vec::with_capacity(chunk.len());
    let mut shape = [0usize; 3];
    for &i in chunk {
        let sample = &data.train[i];
        let mut rng = Rng::derive(cfg.seed, &[u64::from(epoch), i as u64, 1]);
        let t = pipeline
            .run_augmented(&sample.bytes, &mut |p| cfg.augment.apply(p, &mut rng))
            .map_err(|e| sample_error(sample, e))?;
        shape = [t.shape[1], t.shape[2], t.shape[3]];
        inputs.extend_from_slice(&t.data);
        labels.push(sample.label as i64);
    }
    let [c, h, w] = shape;
    let x = Tensor::<4>::from_data(TensorData::new(inputs, [chunk.len(), c, h, w]), device);
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [chunk.len()]), device);
    Ok((x, y))
}

fn sample_error(sample: &Sample, e: vigil_engine::Error) -> Error {
    Error::Data {
        path: sample.path.clone().into(),
        problems: vec![e.to_string()],
    }
}

fn preprocess_all(pipeline: &Pipeline, samples: &[Sample]) -> Result<Validation> {
    let mut inputs = Vec::new();
    let mut shape = [0usize; 3];
    for s in samples {
        let t = pipeline.run(&s.bytes).map_err(|e| sample_error(s, e))?;
        if shape != [0; 3] && shape != [t.shape[1], t.shape[2], t.shape[3]] {
            return Err(sample_error(
                s,
                vigil_engine::Error::Preprocess("tensors of different sizes".into()),
            ));
        }
        shape = [t.shape[1], t.shape[2], t.shape[3]];
        inputs.extend_from_slice(&t.data);
    }
    Ok(Validation {
        inputs,
        shape,
        labels: samples.iter().map(|s| s.label).collect(),
    })
}

/// Class probabilities `[N][classes]` for preprocessed inputs, in batches.
pub fn predict(net: &Net, inputs: &[f32], shape: [usize; 3]) -> Result<Vec<Vec<f32>>> {
    let device = Device::flex();
    let per = shape.iter().product::<usize>();
    let mut out = Vec::new();
    if per == 0 {
        return Ok(out);
    }
    for chunk in inputs.chunks(per * 64) {
        let n = chunk.len() / per;
        let x = Tensor::<4>::from_data(
            TensorData::new(chunk.to_vec(), [n, shape[0], shape[1], shape[2]]),
            &device,
        );
        let probs = softmax(net.forward(x), 1);
        let [_, k] = probs.dims();
        let values = probs
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Config(format!("reading probabilities: {e:?}")))?;
        out.extend(values.chunks_exact(k).map(<[f32]>::to_vec));
    }
    Ok(out)
}

/// Validation loss (unweighted mean cross-entropy), the scores for `positive`, and the
/// probabilities they came from.
fn evaluate(
    net: &Net,
    val: &Validation,
    positive: usize,
) -> Result<(f64, Vec<Scored>, Vec<Vec<f32>>)> {
    let probs = predict(net, &val.inputs, val.shape)?;
    let mut loss = 0.0f64;
    let mut scored = Vec::with_capacity(probs.len());
    for (p, &label) in probs.iter().zip(&val.labels) {
        loss -= f64::from(p[label].max(1e-7)).ln();
        scored.push(Scored {
            score: p[positive],
            positive: label == positive,
            group: String::new(),
        });
    }
    Ok((loss / probs.len().max(1) as f64, scored, probs))
}

fn roc_auc_of(scored: &[Scored]) -> f64 {
    let scores: Vec<f32> = scored.iter().map(|s| s.score).collect();
    let positive: Vec<bool> = scored.iter().map(|s| s.positive).collect();
    roc_auc(&scores, &positive).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_learning_rate_decays_from_peak_to_five_percent() {
        assert!((lr_at(1.0, 0, 100) - 1.0).abs() < 1e-12);
        assert!((lr_at(1.0, 100, 100) - 0.05).abs() < 1e-12);
        assert!(lr_at(1.0, 30, 100) > lr_at(1.0, 60, 100));
    }
}
