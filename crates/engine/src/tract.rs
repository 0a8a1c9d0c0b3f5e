//! The pure-Rust engine: tract (`tract-onnx`), compiled in with the `tract` feature. It needs
//! no native library, so a binary with it runs where ONNX Runtime cannot be installed (one
//! static binary for edge boxes), and the conformance tests run the same golden cases through
//! it and ONNX Runtime. CPU only.
//!
//! The model is parsed once, at load. tract optimises for concrete shapes, so each batch shape
//! gets its own plan (input fact fixed, `into_optimized()`, then a runnable plan and its
//! state), built the first time that shape runs and kept. The manifest fixes C, H and W, so in
//! practice that is one plan per batch size, as many as the serving batch limit allows. The
//! batch-1 plan is built at load, so a model tract cannot run is refused there, not at the
//! first request.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use tracing::debug;
use tract_linalg::multithread::Executor;
use tract_onnx::prelude::{
    DatumExt, Framework, InferenceModel, InferenceModelExt, Tensor, TractError, TypedSimpleState,
    tvec,
};
use tract_onnx::tract_core::ops::unimpl::UnimplementedOp;
use tract_onnx::tract_core::runtime::RunOptions;
use vigil_core::bundle::Manifest;

use crate::backend::{Backend, Batch, OutputTensor, Outputs, check_batch};
use crate::{Device, EngineConfig, Error, Result};

/// The tract release this build is made and tested against (pinned in the workspace).
pub const TRACT_VERSION: &str = "0.23.9";

/// The highest default-domain opset this engine accepts: tract's own suite covers opsets 9 to
/// 18 (it only warns above), and the reference model is opset 17. Operators whose meaning
/// changed in later opsets could run with the old one, so a newer model is refused rather than
/// trusted to its golden cases.
pub const MAX_OPSET: i64 = 18;

/// Operator domains tract implements operators of. tract looks operators up by name, so an
/// operator it lacks in any domain is refused at load.
const DOMAINS: &[&str] = &["", "ai.onnx", "ai.onnx.ml", "com.microsoft"];

/// Checks that tract supports what the manifest requires, before loading anything.
pub fn check_requirements(manifest: &Manifest) -> Result<()> {
    for (domain, version) in &manifest.engine.opsets {
        if !DOMAINS.contains(&domain.as_str()) {
            return Err(Error::Unsupported(format!(
                "operator domain {domain:?} is not implemented by tract"
            )));
        }
        if (domain.is_empty() || domain == "ai.onnx") && *version > MAX_OPSET {
            return Err(Error::Unsupported(format!(
                "the model needs ONNX opset {version}; tract supports up to {MAX_OPSET}"
            )));
        }
    }
    Ok(())
}

/// A model prepared in tract.
pub struct TractBackend {
    /// The parsed model, inputs and outputs selected, input shape not yet fixed.
    model: InferenceModel,
    /// The input's declared shape (`-1` where open).
    input_shape: Vec<i64>,
    /// Output names, in the order the plans produce them.
    outputs: Vec<String>,
    /// One prepared plan (with its state) per batch shape seen.
    plans: HashMap<[usize; 4], TypedSimpleState>,
    /// The thread pool every plan runs on; `None` runs on the calling thread.
    executor: Option<Executor>,
    threads: usize,
}

impl fmt::Debug for TractBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shapes: Vec<_> = self.plans.keys().collect();
        shapes.sort();
        f.debug_struct("TractBackend")
            .field("input_shape", &self.input_shape)
            .field("outputs", &self.outputs)
            .field("plans", &shapes)
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl TractBackend {
    /// Parses `model` (the bytes of `model.onnx`) and prepares it as the manifest describes
    /// it, with the first plan built when the manifest fixes C, H and W.
    pub fn load(model: &[u8], manifest: &Manifest, cfg: &EngineConfig) -> Result<TractBackend> {
        check_requirements(manifest)?;
        if let Device::Cuda { device_id } = cfg.device {
            return Err(Error::Unsupported(format!(
                "device cuda:{device_id} was asked for, but tract runs on the CPU only; use engine.kind = \"onnxruntime\" or engine.device = \"cpu\""
            )));
        }
        let input = &manifest.image_input().name;
        let outputs: Vec<String> = manifest.outputs.iter().map(|o| o.name.clone()).collect();
        let parsed = tract_onnx::onnx()
            .model_for_read(&mut &model[..])
            .map_err(|e| Error::Load(chain(&e)))?;
        refuse_unimplemented(&parsed)?;
        if !parsed
            .input_outlets()
            .map_err(|e| Error::Load(chain(&e)))?
            .iter()
            .any(|o| parsed.node(o.node).name == *input)
        {
            return Err(Error::Load(format!(
                "the model has no input named {input:?}"
            )));
        }
        let parsed = parsed
            .with_input_names([input])
            .and_then(|m| m.with_outputs_by_name(&outputs))
            .map_err(|e| Error::Load(chain(&e)))?;
        let threads = match cfg.intra_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let executor = if threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("vigil-tract-{i}"))
                .build()
                .map_err(|e| Error::Load(format!("cannot start {threads} tract threads: {e}")))?;
            Some(Executor::MultiThread(Arc::new(pool)))
        } else {
            None
        };
        let mut backend = TractBackend {
            model: parsed,
            input_shape: manifest.image_input().shape.clone(),
            outputs,
            plans: HashMap::new(),
            executor,
            threads,
        };
        // The first plan, for batches of one (or of the model's fixed batch size).
        if let [n, rest @ ..] = backend.input_shape.as_slice()
            && let Ok(rest) = rest
                .iter()
                .map(|&d| usize::try_from(d))
                .collect::<Result<Vec<usize>, _>>()
            && let [a, b, c] = rest[..]
        {
            let n = usize::try_from(*n).ok().filter(|&n| n > 0).unwrap_or(1);
            backend.plan([n, a, b, c]).map_err(|e| match e {
                Error::Run(m) => Error::Load(m),
                e => e,
            })?;
        }
        Ok(backend)
    }

    /// The prepared plan for `shape`, built and kept the first time.
    fn plan(&mut self, shape: [usize; 4]) -> Result<&mut TypedSimpleState> {
        if !self.plans.contains_key(&shape) {
            let started = std::time::Instant::now();
            let options = RunOptions {
                executor: self.executor.clone(),
                ..RunOptions::default()
            };
            let state = self
                .model
                .clone()
                .with_input_fact(0, f32::fact(shape).into())
                .and_then(|m| m.into_optimized())
                .and_then(|m| m.into_runnable_with_options(&options))
                .and_then(|plan| plan.spawn())
                .map_err(|e| {
                    Error::Run(format!(
                        "cannot prepare a plan for {shape:?}: {}",
                        chain(&e)
                    ))
                })?;
            debug!(?shape, took = ?started.elapsed(), "tract plan prepared.");
            self.plans.insert(shape, state);
        }
        Ok(self
            .plans
            .get_mut(&shape)
            .expect("the plan was inserted above; this is a bug"))
    }
}

impl Backend for TractBackend {
    fn run(&mut self, batch: &Batch) -> Result<Outputs> {
        check_batch(batch, &self.input_shape)?;
        let input =
            Tensor::from_shape(&batch.shape, &batch.data).map_err(|e| Error::Shape(chain(&e)))?;
        let results = self
            .plan(batch.shape)?
            .run(tvec![input.into()])
            .map_err(|e| Error::Run(chain(&e)))?;
        if results.len() != self.outputs.len() {
            return Err(Error::Run(format!(
                "the model gave {} outputs, expected {}",
                results.len(),
                self.outputs.len()
            )));
        }
        let mut out = Outputs::new();
        for (name, value) in self.outputs.iter().zip(results) {
            let fail = |e: TractError| Error::Run(format!("output {name:?}: {}", chain(&e)));
            let tensor = value.cast_to::<f32>().map_err(fail)?;
            let data = tensor
                .to_plain_array_view::<f32>()
                .map_err(fail)?
                .iter()
                .copied()
                .collect();
            out.insert(
                name.clone(),
                OutputTensor {
                    shape: tensor.shape().to_vec(),
                    data,
                },
            );
        }
        Ok(out)
    }

    fn describe(&self) -> String {
        let threads = match self.threads {
            1 => "1 thread".to_owned(),
            n => format!("{n} threads"),
        };
        format!("tract {TRACT_VERSION} (CPU, {threads})")
    }
}

/// Refuses a model with an operator tract does not implement, naming the operators; tract
/// itself would fail later with a less direct message.
fn refuse_unimplemented(model: &InferenceModel) -> Result<()> {
    let mut missing: Vec<String> = model
        .nodes()
        .iter()
        .filter(|n| n.op.as_op().downcast_ref::<UnimplementedOp>().is_some())
        .map(|n| {
            n.op.name()
                .trim_start_matches("Unimplemented(")
                .trim_end_matches(')')
                .to_owned()
        })
        .collect();
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Unsupported(format!(
            "tract does not implement the operator(s) {}",
            missing.join(", ")
        )))
    }
}

/// A tract error with its causes, outermost first, on one line.
fn chain(e: &TractError) -> String {
    format!("{e:#}")
}
