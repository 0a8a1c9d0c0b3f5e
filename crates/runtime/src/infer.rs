//! The [`Infer`] handle: the request path from encoded bytes (or an FP32 tensor) to a
//! decision. Admission (a semaphore, never an unbounded wait) → preprocessing on a pool of
//! OS threads fed by a bounded channel → the deployed version's queue → the answer, with the
//! time each stage took. It knows nothing of HTTP: the server maps [`crate::Error::kind`] to
//! status codes and [`Timings`] to headers.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vigil_core::decision::{Decision, decide};
use vigil_core::drift::mahalanobis::OodScore;
use vigil_core::monitor::{ImageStats, Observation, PredictionRecord};
use vigil_core::types::{ModelName, ModelVersion, Sha256Digest};
use vigil_engine::preprocess::{Pipeline, Tensor, TileGrid, Tiled};
use vigil_engine::{Batch, Outputs};

use crate::deploy::{DeployConfig, Deployment, Deployments};
use crate::memory::MemoryBudget;
use crate::metrics::{Metrics, Outcome, RequestTimes};
use crate::queue::{Entry, Output};
use crate::{Error, InferConfig, Result};

/// How long each stage of a request took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Decode and preprocessing, including the wait for a preprocess thread (zero for a
    /// tensor request).
    pub preprocess: Duration,
    /// From entering the model's queue until its batch started running.
    pub queue: Duration,
    /// Engine time of the batch the request ran in.
    pub inference: Duration,
    /// Admission to answer.
    pub total: Duration,
}

/// The answer to one request.
#[derive(Debug, Clone)]
pub struct Classified {
    /// The model.
    pub model: ModelName,
    /// The version that answered: the one deployed when the request was admitted.
    pub version: ModelVersion,
    /// That version's bundle identity.
    pub bundle: Sha256Digest,
    /// Every model output, one row per image run: the image, each tile of a whole
    /// radiograph (in the grid's order), or each image of a tensor request.
    pub outputs: Outputs,
    /// The bundle's decision for each row.
    pub decisions: Vec<Decision>,
    /// The verdict: the row the rule finds most positive (the highest
    /// [`Decision::score`]); for a single image, its decision. A film takes its most
    /// positive tile. A tensor request of several images reads `decisions` per row instead.
    pub verdict: Decision,
    /// The row the verdict came from.
    pub verdict_row: usize,
    /// Where the tiles lie, for a tiling bundle (the per-tile heat map).
    pub grid: Option<TileGrid>,
    /// Images in the engine batch this request ran in.
    pub batch_size: usize,
    /// Stage times.
    pub timings: Timings,
    /// What monitoring saw: the image's statistics, the verdict row's embedding and
    /// probabilities, and its out-of-distribution score.
    pub observation: Observation,
    /// The out-of-distribution score of the verdict row's embedding, when the bundle has a
    /// reference profile.
    pub ood: Option<OodScore>,
}

impl Classified {
    /// Why the prediction goes to a person: `review` (the bundle's rule: inside the review
    /// band or not confident enough), `out_of_distribution` (the image does not resemble the
    /// training images). Empty when neither.
    pub fn flags(&self) -> Vec<&'static str> {
        let mut flags = Vec::new();
        if self.verdict.review {
            flags.push("review");
        }
        if self.ood.is_some_and(|o| o.out_of_distribution) {
            flags.push("out_of_distribution");
        }
        flags
    }

    /// The prediction log's record of this answer.
    pub fn record(&self, request_id: &str, source: &str) -> PredictionRecord {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        PredictionRecord {
            request_id: request_id.to_owned(),
            correlation_id: None,
            at: chrono::Utc::now(),
            model: self.model.to_string(),
            version: self.version.to_string(),
            bundle: self.bundle.to_string(),
            source: source.to_owned(),
            label: self.verdict.label.to_string(),
            confidence: self.verdict.confidence,
            probabilities: self.observation.probabilities.clone(),
            flags: self.flags().into_iter().map(str::to_owned).collect(),
            stats: self.observation.stats,
            embedding: self.observation.embedding.clone(),
            ood_distance: self.observation.ood_distance,
            preprocess_us: micros(self.timings.preprocess),
            queue_us: micros(self.timings.queue),
            inference_us: micros(self.timings.inference),
            total_us: micros(self.timings.total),
        }
    }
}

/// The request path's handle: cheap to clone, shared by every request.
#[derive(Debug, Clone)]
pub struct Infer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: InferConfig,
    admission: Arc<Semaphore>,
    memory: MemoryBudget,
    pool: PreprocessPool,
    deployments: Deployments,
    metrics: Metrics,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Infer {
    /// Starts the preprocess threads; models are added with [`Infer::deployments`].
    pub fn new(cfg: InferConfig, deploy: DeployConfig) -> Result<Infer> {
        Self::with_metrics(cfg, deploy, Metrics::new())
    }

    /// [`Infer::new`] recording into `metrics`, a registry shared with what was started
    /// before the runtime (the prediction log).
    pub fn with_metrics(cfg: InferConfig, deploy: DeployConfig, metrics: Metrics) -> Result<Infer> {
        if cfg.max_in_flight == 0 || u32::try_from(cfg.max_in_flight).is_err() {
            return Err(Error::Invalid(format!(
                "max_in_flight must be between 1 and {}, got {}",
                u32::MAX,
                cfg.max_in_flight
            )));
        }
        let threads = match cfg.preprocess_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let deployments =
            Deployments::new(deploy, metrics.clone(), tracker.clone(), shutdown.clone());
        let memory = MemoryBudget::new(cfg.memory_budget);
        Ok(Infer {
            inner: Arc::new(Inner {
                admission: Arc::new(Semaphore::new(cfg.max_in_flight)),
                pool: PreprocessPool::start(threads, &memory)?,
                memory,
                cfg,
                deployments,
                metrics,
                shutdown,
                tracker,
            }),
        })
    }

    /// The live deployment table.
    pub fn deployments(&self) -> &Deployments {
        &self.inner.deployments
    }

    /// The memory budget that request bodies and decoded images share.
    pub fn memory(&self) -> &MemoryBudget {
        &self.inner.memory
    }

    /// The runtime's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The longest a request may take (`InferConfig::request_timeout`), from admission to
    /// answer.
    pub fn request_timeout(&self) -> Duration {
        self.inner.cfg.request_timeout
    }

    /// Requests admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.inner.cfg.max_in_flight - self.inner.admission.available_permits()
    }

    /// Whether [`Infer::shutdown`] has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// Classifies one encoded image (PNG, JPEG, BMP, TIFF or DICOM; a whole radiograph for a
    /// tiling bundle) on the version of `model` deployed now. `deadline` (or, if earlier or
    /// absent, `request_timeout` from now) bounds the whole request.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request: a queued entry is skipped, not run, and it
    /// is counted with outcome `cancelled`.
    pub async fn classify(
        &self,
        model: &ModelName,
        encoded: Bytes,
        deadline: Option<Instant>,
    ) -> Result<Classified> {
        let mut req = self.admit(model, deadline)?;
        let deadline = req.deadline;
        let work = async {
            let t = Instant::now();
            let tiled = self
                .inner
                .pool
                .run(req.deployment.pipeline().clone(), encoded)
                .await?;
            req.times.preprocess = Some(t.elapsed());
            let Tiled { tiles, grid, stats } = tiled;
            req.stats = stats;
            let out = run_entry(&req.deployment, tiles, deadline).await?;
            req.times.queue = Some(out.queue);
            Ok::<_, Error>((out, Some(grid)))
        };
        let result = within(deadline, work).await;
        req.finish(result)
    }

    /// Classifies images that are already FP32 tensors (the Open Inference Protocol path):
    /// `tensor` holds N images laid out as the model input, and must match the manifest's
    /// input shape, else [`Error::Invalid`]. Each image counts toward the batch size.
    pub async fn classify_tensor(
        &self,
        model: &ModelName,
        tensor: Batch,
        deadline: Option<Instant>,
    ) -> Result<Classified> {
        let mut req = self.admit(model, deadline)?;
        let deadline = req.deadline;
        let work = async {
            let tiles = split_tensor(req.deployment.manifest(), tensor)?;
            let out = run_entry(&req.deployment, tiles, deadline).await?;
            req.times.queue = Some(out.queue);
            Ok::<_, Error>((out, None))
        };
        let result = within(deadline, work).await;
        req.finish(result)
    }

    /// Stops admission (new requests get [`Error::ShuttingDown`]), waits for every admitted
    /// request to be answered, drains and stops the queues, then joins the model and
    /// preprocess threads. Idempotent.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.shutdown.cancel();
        tracing::info!(
            in_flight = self.in_flight(),
            "Shutting down: admission stopped."
        );
        let all = u32::try_from(inner.cfg.max_in_flight).unwrap_or(u32::MAX);
        // Every permit back means every admitted request has been answered; a closed
        // semaphore means another call already got that far.
        if let Ok(permits) = inner.admission.acquire_many(all).await {
            permits.forget();
            inner.admission.close();
        }
        inner.deployments.clear();
        inner.tracker.close();
        inner.tracker.wait().await;
        let threads = inner.pool.stop();
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                if t.join().is_err() {
                    tracing::error!("A preprocess thread panicked outside a job.");
                }
            }
        })
        .await;
        if joined.is_err() {
            tracing::error!("Joining the preprocess threads panicked.");
        }
        tracing::info!("Shut down: queues drained, threads joined.");
    }

    /// Finds the deployment and admits the request, or says why not.
    fn admit(&self, model: &ModelName, deadline: Option<Instant>) -> Result<InFlight> {
        let inner = &self.inner;
        let started = Instant::now();
        if inner.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        // Unknown names are not counted per model: they came from the caller.
        let deployment = inner
            .deployments
            .get(model)
            .ok_or_else(|| Error::ModelNotFound {
                model: model.clone(),
            })?;
        let refuse = |e: Error| {
            deployment.metrics().request(
                Outcome::Failed(e.kind()),
                RequestTimes {
                    total: started.elapsed(),
                    ..RequestTimes::default()
                },
            );
            Err(e)
        };
        let permit = match inner.admission.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => return refuse(Error::ShuttingDown),
            Err(TryAcquireError::NoPermits) if inner.shutdown.is_cancelled() => {
                return refuse(Error::ShuttingDown);
            }
            Err(TryAcquireError::NoPermits) => {
                return refuse(Error::Overloaded {
                    max_in_flight: inner.cfg.max_in_flight,
                });
            }
        };
        // Shutdown may have begun between the check above and the permit.
        if inner.shutdown.is_cancelled() {
            drop(permit);
            return refuse(Error::ShuttingDown);
        }
        let limit = started + inner.cfg.request_timeout;
        inner.metrics.in_flight().inc();
        Ok(InFlight {
            deployment,
            started,
            deadline: deadline.map_or(limit, |d| d.min(limit)),
            times: RequestTimes::default(),
            stats: None,
            outcome: Outcome::Cancelled,
            metrics: inner.metrics.clone(),
            _permit: permit,
        })
    }
}

/// An admitted request. Dropping it records the request once, whatever happened: a future
/// dropped mid-way is counted as `cancelled`.
struct InFlight {
    deployment: Arc<Deployment>,
    started: Instant,
    deadline: Instant,
    times: RequestTimes,
    stats: Option<ImageStats>,
    outcome: Outcome,
    metrics: Metrics,
    _permit: OwnedSemaphorePermit,
}

impl InFlight {
    /// Turns the engine's answer into the request's, and records its outcome.
    fn finish(mut self, result: Result<(Output, Option<TileGrid>)>) -> Result<Classified> {
        let result = result.and_then(|(out, grid)| {
            let pre = self.times.preprocess.unwrap_or_default();
            classified(&self.deployment, out, grid, pre, self.started, self.stats)
        });
        match &result {
            Ok(c) => {
                self.outcome = Outcome::Success;
                self.deployment
                    .metrics()
                    .prediction(c.observation.predicted, c.verdict.confidence);
                self.deployment
                    .monitor()
                    .observe(c.observation.clone(), c.verdict.review);
            }
            Err(e) => {
                self.outcome = Outcome::Failed(e.kind());
                tracing::debug!(
                    model = %self.deployment.name(),
                    version = %self.deployment.version(),
                    error = %e,
                    "A request failed."
                );
            }
        }
        result
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.times.total = self.started.elapsed();
        self.deployment.metrics().request(self.outcome, self.times);
        self.metrics.in_flight().dec();
    }
}

/// Runs `work`, or fails with [`Error::DeadlineExceeded`] when `deadline` passes first.
async fn within<T>(deadline: Instant, work: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout_at(deadline.into(), work)
        .await
        .unwrap_or(Err(Error::DeadlineExceeded { stage: "waiting" }))
}

/// Queues `tiles` on `deployment` and waits for the engine's answer.
async fn run_entry(
    deployment: &Deployment,
    tiles: Vec<Tensor>,
    deadline: Instant,
) -> Result<Output> {
    let (respond, answer) = oneshot::channel();
    deployment
        .queue()
        .enqueue(Entry {
            tiles,
            respond,
            enqueued_at: Instant::now(),
            deadline: Some(deadline),
            span: tracing::Span::current(),
        })
        .await?;
    answer.await.map_err(|_| {
        Error::Internal(
            "the request was dropped without an answer (the model thread is gone)".into(),
        )
    })?
}

/// Checks a tensor request against the manifest's input and cuts it into one tensor per
/// image.
fn split_tensor(manifest: &vigil_core::bundle::Manifest, tensor: Batch) -> Result<Vec<Tensor>> {
    let input = manifest.image_input();
    vigil_engine::backend::check_batch(&tensor, &input.shape).map_err(|e| {
        Error::Invalid(format!(
            "input {:?} takes shape {:?} (-1: any): {e}",
            input.name, input.shape
        ))
    })?;
    let mut shape = tensor.shape;
    let n = shape[0];
    shape[0] = 1;
    let per = tensor.data.len() / n;
    Ok(tensor
        .data
        .chunks_exact(per)
        .map(|data| Tensor {
            shape,
            data: data.to_vec(),
        })
        .collect())
}

/// Decides every row and picks the verdict.
fn classified(
    deployment: &Deployment,
    out: Output,
    grid: Option<TileGrid>,
    preprocess: Duration,
    started: Instant,
    stats: Option<ImageStats>,
) -> Result<Classified> {
    let m = deployment.manifest();
    let name = &m.roles.probabilities;
    let probs = out
        .outputs
        .get(name)
        .ok_or_else(|| Error::BadOutput(format!("the model gave no output {name:?}")))?;
    let rows = probs.shape.first().copied().unwrap_or(0);
    let decisions = (0..rows)
        .map(|i| {
            let p = probs.item(i);
            decide(&m.decision, &m.model.labels, p).ok_or_else(|| {
                Error::BadOutput(format!(
                    "row {i} of {name:?} is {p:?}, for {} labels",
                    m.model.labels.len()
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // The first of the highest scores, so ties never depend on float noise in ordering.
    let (verdict_row, verdict) = decisions
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.score.total_cmp(&b.1.score).then(b.0.cmp(&a.0)))
        .map(|(i, d)| (i, d.clone()))
        .ok_or_else(|| Error::BadOutput("the request had no image to decide".into()))?;
    let monitor = deployment.monitor();
    let embedding = monitor
        .embedding_output()
        .and_then(|e| out.outputs.get(e))
        .filter(|t| t.shape.first() == Some(&rows))
        .map(|t| t.item(verdict_row).to_vec());
    let ood = embedding.as_deref().and_then(|e| monitor.score_ood(e));
    let observation = Observation {
        stats,
        embedding,
        probabilities: probs.item(verdict_row).to_vec(),
        predicted: m
            .model
            .labels
            .iter()
            .position(|l| *l == verdict.label)
            .unwrap_or(0),
        confidence: verdict.confidence,
        ood_distance: ood.map(|o| o.distance),
        out_of_distribution: ood.is_some_and(|o| o.out_of_distribution),
    };
    Ok(Classified {
        observation,
        ood,
        model: deployment.name().clone(),
        version: deployment.version().clone(),
        bundle: deployment.digest(),
        outputs: out.outputs,
        decisions,
        verdict,
        verdict_row,
        grid,
        batch_size: out.batch_size,
        timings: Timings {
            preprocess,
            queue: out.queue,
            inference: out.inference,
            total: started.elapsed(),
        },
    })
}

/// Images waiting for a preprocess thread, per thread: enough to keep each busy while the
/// next job is handed over; more would only hide a queue that admission already bounds.
const PREPROCESS_BACKLOG_PER_THREAD: usize = 2;

/// N OS threads that decode and preprocess, fed by one bounded channel (decoding is
/// CPU-heavy and must not stall the async runtime).
#[derive(Debug)]
struct PreprocessPool {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

struct Job {
    pipeline: Arc<Pipeline>,
    encoded: Bytes,
    reply: oneshot::Sender<Result<Tiled>>,
}

impl PreprocessPool {
    /// `n` threads, each reserving from `memory` before it decodes.
    fn start(n: usize, memory: &MemoryBudget) -> Result<PreprocessPool> {
        let (tx, rx) = mpsc::channel(n * PREPROCESS_BACKLOG_PER_THREAD);
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..n)
            .map(|i| {
                let (rx, memory) = (rx.clone(), memory.clone());
                std::thread::Builder::new()
                    .name(format!("vigil-preprocess-{i}"))
                    .spawn(move || preprocess_worker(&rx, &memory))
                    .map_err(|e| Error::Internal(format!("cannot start a preprocess thread: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PreprocessPool {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
        })
    }

    /// Preprocesses `encoded` on a pool thread.
    async fn run(&self, pipeline: Arc<Pipeline>, encoded: Bytes) -> Result<Tiled> {
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(Error::ShuttingDown)?;
        let (reply, answer) = oneshot::channel();
        tx.send(Job {
            pipeline,
            encoded,
            reply,
        })
        .await
        .map_err(|_| Error::ShuttingDown)?;
        answer
            .await
            .map_err(|_| Error::Internal("a preprocess thread stopped".into()))?
    }

    /// Closes the channel; gives the threads to join.
    fn stop(&self) -> Vec<JoinHandle<()>> {
        self.tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for PreprocessPool {
    fn drop(&mut self) {
        for t in self.stop() {
            let _ = t.join();
        }
    }
}

/// Reserves the image's peak memory from the budget (from its header alone), then decodes and
/// preprocesses it; the reservation is given back when the tensors are made.
fn preprocess(job: &Job, memory: &MemoryBudget) -> Result<Tiled> {
    let peak = job.pipeline.peak_bytes(&job.encoded)?;
    let _reserved = memory.try_reserve(peak, "the image")?;
    Ok(job.pipeline.run_tiles(&job.encoded)?)
}

fn preprocess_worker(rx: &Mutex<mpsc::Receiver<Job>>, memory: &MemoryBudget) {
    loop {
        // One thread waits on the channel at a time; the others wait for the lock.
        let job = rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .blocking_recv();
        let Some(job) = job else { break };
        if job.reply.is_closed() {
            continue;
        }
        let result = match catch_unwind(AssertUnwindSafe(|| preprocess(&job, memory))) {
            Ok(r) => r,
            Err(_) => {
                tracing::error!("Preprocessing panicked; the decoder has a bug.");
                Err(Error::Internal(
                    "preprocessing panicked on this image".into(),
                ))
            }
        };
        let _ = job.reply.send(result);
    }
}
