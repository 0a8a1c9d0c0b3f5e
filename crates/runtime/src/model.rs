//! The model threads: a dedicated `std::thread` per model instance owns an engine's
//! [`Backend`], takes batches with `blocking_recv()`, stacks them, runs them, splits the
//! outputs per entry and answers each entry's oneshot with its rows and timings.
//!
//! The instances of one version (Triton's instance group: several engines of the same model,
//! each with its own threads) share one channel of capacity one: whichever instance is free
//! takes the one batch the queue formed, and the queue forms the next as soon as it is taken,
//! so a batch never waits behind a busy instance while another is idle.
//!
//! An engine error fans out to every entry of the batch (`engine::Error` is `Clone`); a
//! panic in the engine is caught and answered as [`Error::Internal`], never a hang. The
//! thread is joined when its `ModelHandle` drops. It never touches tokio's runtime (only
//! its channels), so it keeps working while the runtime shuts down.

use std::any::Any;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry as MapEntry;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::mpsc;
use vigil_engine::preprocess::Tensor;
use vigil_engine::{Backend, Batch, OutputTensor, Outputs};

use crate::metrics::DeploymentMetrics;
use crate::queue::{Entry, Output};
use crate::{Error, Result};

/// What the model thread needs besides its backend.
#[derive(Debug)]
pub(crate) struct ModelContext {
    /// `name version`, for logs and the thread's name.
    pub label: String,
    /// Most images per engine call (a larger entry runs in several calls).
    pub max_batch_size: usize,
    pub metrics: DeploymentMetrics,
}

/// The sending side of a version's model threads; dropping it lets the threads finish the
/// batches they were given and joins them.
#[derive(Debug)]
pub(crate) struct ModelHandle {
    tx: Option<mpsc::Sender<Vec<Entry>>>,
    threads: Vec<JoinHandle<()>>,
    label: String,
}

impl ModelHandle {
    /// Starts one thread per backend (instance), all taking batches from one channel.
    pub(crate) fn start(backends: Vec<Box<dyn Backend>>, ctx: ModelContext) -> Result<ModelHandle> {
        // One batch prefetched while the instances run: the queue forms the next batch as
        // late as possible, so it is as full as possible.
        let (tx, rx) = mpsc::channel(1);
        let rx = Arc::new(Mutex::new(rx));
        let ctx = Arc::new(ctx);
        let label = ctx.label.clone();
        let instances = backends.len();
        let mut handle = ModelHandle {
            tx: Some(tx),
            threads: Vec::with_capacity(instances),
            label: label.clone(),
        };
        for (i, backend) in backends.into_iter().enumerate() {
            let (rx, ctx) = (Arc::clone(&rx), Arc::clone(&ctx));
            let name = if instances == 1 {
                format!("vigil-model {label}")
            } else {
                format!("vigil-model {label} #{i}")
            };
            let thread = std::thread::Builder::new()
                .name(name)
                .spawn(move || serve(backend, &rx, &ctx))
                .map_err(|e| Error::Internal(format!("cannot start a model thread: {e}")))?;
            handle.threads.push(thread);
        }
        Ok(handle)
    }

    /// Waits until the thread can take a batch; `None` when it has stopped.
    ///
    /// # Cancel safety
    /// Cancel-safe: a dropped reservation takes nothing.
    pub(crate) async fn reserve(&self) -> Option<mpsc::Permit<'_, Vec<Entry>>> {
        self.tx.as_ref()?.reserve().await.ok()
    }
}

impl Drop for ModelHandle {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once it has run what it was given.
        self.tx.take();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!(model = %self.label, "A model thread panicked outside the engine.");
            }
        }
    }
}

fn serve(
    mut backend: Box<dyn Backend>,
    rx: &Mutex<mpsc::Receiver<Vec<Entry>>>,
    ctx: &ModelContext,
) {
    tracing::debug!(model = %ctx.label, engine = %backend.describe(), "Model thread started.");
    loop {
        // The free instance holding the lock waits for the next batch; the others wait for
        // the lock. A poisoned lock only means another instance panicked outside the engine.
        let batch = rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .blocking_recv();
        let Some(batch) = batch else { break };
        run_batch(backend.as_mut(), batch, ctx);
    }
    tracing::debug!(model = %ctx.label, "Model thread stopped.");
}

/// Runs one batch and answers every entry in it.
pub(crate) fn run_batch(backend: &mut dyn Backend, entries: Vec<Entry>, ctx: &ModelContext) {
    let started = Instant::now();
    // Callers that went away while the batch waited for the engine are not run.
    let (live, gone): (Vec<Entry>, Vec<Entry>) =
        entries.into_iter().partition(|e| !e.respond.is_closed());
    if !gone.is_empty() {
        ctx.metrics.skipped(gone.len(), 0);
    }
    if live.is_empty() {
        return;
    }
    let tensors: Vec<&Tensor> = live.iter().flat_map(|e| e.tiles.iter()).collect();
    let images = tensors.len();
    let result = catch_unwind(AssertUnwindSafe(|| {
        run_chunks(backend, &tensors, ctx.max_batch_size)
    }));
    let inference = started.elapsed();
    let result = match result {
        Ok(r) => r.map_err(Error::Engine),
        Err(panic) => Err(Error::Internal(format!(
            "the engine panicked: {}",
            panic_message(panic.as_ref())
        ))),
    };
    let (outputs, execs) = match result {
        Ok(ok) => ok,
        Err(e) => {
            tracing::error!(model = %ctx.label, images, error = %e, "A batch failed.");
            for entry in live {
                let _ = entry.respond.send(Err(e.clone()));
            }
            return;
        }
    };
    ctx.metrics.batch(images, execs, inference);
    let mut offset = 0;
    for entry in live {
        let rows = entry.tiles.len();
        let answer = rows_of(&outputs, offset, rows).map(|outputs| Output {
            outputs,
            queue: started.saturating_duration_since(entry.enqueued_at),
            inference,
            batch_size: images,
        });
        offset += rows;
        // The caller may have gone away meanwhile; its answer is simply dropped.
        let _ = entry.respond.send(answer);
    }
}

/// Runs `tensors` in engine calls of at most `max` images; gives every output with one row
/// per tensor, and the number of engine calls.
fn run_chunks(
    backend: &mut dyn Backend,
    tensors: &[&Tensor],
    max: usize,
) -> vigil_engine::Result<(Outputs, usize)> {
    let mut merged: Outputs = BTreeMap::new();
    let mut execs = 0;
    for chunk in tensors.chunks(max.max(1)) {
        let out = backend.run(&Batch::stack(chunk)?)?;
        execs += 1;
        for (name, t) in out {
            if t.shape.first() != Some(&chunk.len())
                || t.shape.iter().product::<usize>() != t.data.len()
            {
                return Err(vigil_engine::Error::Run(format!(
                    "output {name:?} has shape {:?} ({} values) for a batch of {}",
                    t.shape,
                    t.data.len(),
                    chunk.len()
                )));
            }
            match merged.entry(name) {
                MapEntry::Vacant(v) => {
                    v.insert(t);
                }
                MapEntry::Occupied(mut o) => {
                    let o = o.get_mut();
                    if o.shape[1..] != t.shape[1..] {
                        return Err(vigil_engine::Error::Run(format!(
                            "output {:?} changed shape between engine calls",
                            o.shape
                        )));
                    }
                    o.shape[0] += t.shape[0];
                    o.data.extend_from_slice(&t.data);
                }
            }
        }
    }
    Ok((merged, execs))
}

/// Rows `offset..offset + rows` of every output.
fn rows_of(outputs: &Outputs, offset: usize, rows: usize) -> Result<Outputs> {
    outputs
        .iter()
        .map(|(name, t)| {
            let per: usize = t.shape.iter().skip(1).product();
            let data = t
                .data
                .get(offset * per..(offset + rows) * per)
                .ok_or_else(|| {
                    Error::Internal(format!(
                        "output {name:?} has fewer rows than the batch; this is a bug"
                    ))
                })?
                .to_vec();
            let mut shape = t.shape.clone();
            shape[0] = rows;
            Ok((name.clone(), OutputTensor { shape, data }))
        })
        .collect()
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}
