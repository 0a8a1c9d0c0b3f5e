//! The live deployment table: which version of each model answers requests.
//!
//! [`Deployments`] is an `ArcSwap<HashMap<ModelName, Arc<Deployment>>>`. Loading builds a
//! [`Deployment`] off to the side (prepares the engine, runs the bundle's golden cases
//! through the same pipeline and backend that will serve, *before* the model thread starts),
//! and only then swaps it in atomically. A request holds the `Arc<Deployment>` it started on
//! and finishes on that version; the replaced deployment's queue drains and its model thread
//! is joined when the last `Arc` drops. Rollback is the same swap ([`Deployments::install`]
//! with the deployment that a swap returned). This module does not read a registry: callers
//! hand it verified bundle files.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vigil_core::bundle::{
    Bundle, GOLDEN_EXPECTED_FILE, GoldenSet, MODEL_FILE, Manifest, REFERENCE_FILE,
};
use vigil_core::monitor::ReferenceProfile;
use vigil_core::types::{ModelName, ModelVersion, Sha256Digest};
use vigil_engine::preprocess::{Limits, Pipeline};
use vigil_engine::{Backend, EngineConfig};

use crate::metrics::{DeploymentMetrics, Metrics};
use crate::model::{ModelContext, ModelHandle};
use crate::monitor::{MonitorConfig, VersionMonitor};
use crate::queue::{self, QueueHandle};
use crate::{BatchConfig, Error, Result};

/// How deployments are built: batching, engine and preprocessing limits.
#[derive(Debug, Clone)]
pub struct DeployConfig {
    /// How each version's queue forms batches (default: [`BatchConfig::default`]).
    pub batch: BatchConfig,
    /// Which engine prepares models (default: ONNX Runtime on the CPU).
    pub engine: EngineConfig,
    /// Limits on each input image (default: [`Limits::default`]: 64 MiB, 100 megapixels).
    pub limits: Limits,
    /// Monitoring of each deployed version (default: on, nothing logged).
    pub monitor: MonitorConfig,
    /// Engine instances per deployed version, each on its own thread with the engine's
    /// threads (default 1). Two single-threaded instances on two cores is Triton's instance
    /// group; one instance with two threads halves the latency of a lone request.
    pub instances: usize,
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            batch: BatchConfig::default(),
            engine: EngineConfig::default(),
            limits: Limits::default(),
            monitor: MonitorConfig::default(),
            instances: 1,
        }
    }
}

/// A verified bundle: its manifest, identity and every listed file (from
/// [`BundleFiles::from_bundle`], or from a registry that checked the hashes).
#[derive(Debug, Clone)]
pub struct BundleFiles {
    /// The validated manifest.
    pub manifest: Manifest,
    /// The bundle's identity (SHA-256 of the manifest bytes).
    pub digest: Sha256Digest,
    /// Every listed file by relative path, hash-checked.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl BundleFiles {
    /// Reads and verifies every file of an opened bundle.
    pub fn from_bundle(bundle: &Bundle) -> Result<BundleFiles> {
        Ok(BundleFiles {
            files: bundle.verify_files()?,
            manifest: bundle.manifest().clone(),
            digest: bundle.digest(),
        })
    }

    /// The bundle's reference profile, when it carries one.
    fn reference(&self) -> Result<Option<ReferenceProfile>> {
        self.files
            .get(REFERENCE_FILE)
            .map(|bytes| {
                ReferenceProfile::from_json(bytes).map_err(|e| {
                    Error::Invalid(format!("the bundle's {REFERENCE_FILE} is unusable: {e}"))
                })
            })
            .transpose()
    }

    fn golden(&self) -> Result<Option<GoldenSet>> {
        self.files
            .get(GOLDEN_EXPECTED_FILE)
            .map(|bytes| GoldenSet::parse(bytes))
            .transpose()
            .map_err(Error::from)
    }
}

/// One deployed model version: its manifest, its preprocessing, and the sending side of its
/// queue. Dropping the last `Arc` lets the queue drain and joins the model thread.
#[derive(Debug)]
pub struct Deployment {
    manifest: Arc<Manifest>,
    digest: Sha256Digest,
    pipeline: Arc<Pipeline>,
    engine: String,
    queue: QueueHandle,
    metrics: DeploymentMetrics,
    monitor: VersionMonitor,
}

impl Deployment {
    /// The model's name.
    pub fn name(&self) -> &ModelName {
        &self.manifest.model.name
    }

    /// The deployed version.
    pub fn version(&self) -> &ModelVersion {
        &self.manifest.model.version
    }

    /// The bundle's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The bundle's identity.
    pub fn digest(&self) -> Sha256Digest {
        self.digest
    }

    /// Which engine runs it (`Backend::describe`).
    pub fn engine(&self) -> &str {
        &self.engine
    }

    pub(crate) fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    pub(crate) fn queue(&self) -> &QueueHandle {
        &self.queue
    }

    pub(crate) fn metrics(&self) -> &DeploymentMetrics {
        &self.metrics
    }

    /// This version's monitoring: live shares, OOD scorer, drift windows.
    pub fn monitor(&self) -> &VersionMonitor {
        &self.monitor
    }
}

/// The live table of deployed models. Reads are lock-free; changes swap the whole table.
#[derive(Debug)]
pub struct Deployments {
    table: ArcSwap<HashMap<ModelName, Arc<Deployment>>>,
    cfg: DeployConfig,
    metrics: Metrics,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Deployments {
    pub(crate) fn new(
        cfg: DeployConfig,
        metrics: Metrics,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Deployments {
        Deployments {
            table: ArcSwap::from_pointee(HashMap::new()),
            cfg,
            metrics,
            tracker,
            shutdown,
        }
    }

    /// The deployment that answers requests for `model` now.
    pub fn get(&self, model: &ModelName) -> Option<Arc<Deployment>> {
        self.table.load().get(model).cloned()
    }

    /// Every live deployment, by model name.
    pub fn list(&self) -> Vec<Arc<Deployment>> {
        let mut all: Vec<_> = self.table.load().values().cloned().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// Prepares the bundle's model on the configured engine, checks its golden cases, then
    /// swaps it in (see [`Deployments::load_with_backend`]).
    pub async fn load(&self, bundle: BundleFiles) -> Result<Arc<Deployment>> {
        let deployment = self.prepare(bundle).await?;
        self.install_logged(deployment)
    }

    /// Prepares the bundle's model on the configured engine, checks its golden cases and
    /// starts its model thread and queue, *without* swapping it in: the caller decides when
    /// (or whether) to [`Deployments::install`] it. Dropping the result stops it again.
    pub async fn prepare(&self, bundle: BundleFiles) -> Result<Arc<Deployment>> {
        self.refuse_after_shutdown()?;
        let engine = self.cfg.engine.clone();
        let instances = self.cfg.instances.max(1);
        let (bundle, backends) = tokio::task::spawn_blocking(move || {
            let model = bundle
                .files
                .get(MODEL_FILE)
                .ok_or_else(|| Error::Invalid(format!("the bundle has no {MODEL_FILE}")))?;
            let backends = (0..instances)
                .map(|_| vigil_engine::load(model, &bundle.manifest, &engine))
                .collect::<vigil_engine::Result<Vec<_>>>()?;
            Ok::<_, Error>((bundle, backends))
        })
        .await
        .map_err(|e| Error::Internal(format!("loading the engine panicked: {e}")))??;
        self.prepare_with_backends(bundle, backends).await
    }

    /// Deploys `bundle` on an already prepared `backend`: runs the bundle's golden cases
    /// through it (a bundle without golden cases is deployed unchecked, with a warning),
    /// starts its model thread and queue, and swaps it in atomically. On any failure the
    /// table is unchanged and the previous version keeps serving.
    pub async fn load_with_backend(
        &self,
        bundle: BundleFiles,
        backend: Box<dyn Backend>,
    ) -> Result<Arc<Deployment>> {
        let deployment = self.prepare_with_backend(bundle, backend).await?;
        self.install_logged(deployment)
    }

    /// [`Deployments::prepare`] on an already prepared `backend`: golden check, model thread
    /// and queue; not installed.
    pub async fn prepare_with_backend(
        &self,
        bundle: BundleFiles,
        backend: Box<dyn Backend>,
    ) -> Result<Arc<Deployment>> {
        self.prepare_with_backends(bundle, vec![backend]).await
    }

    /// [`Deployments::prepare_with_backend`] with one backend per instance; every instance
    /// is golden-checked.
    pub async fn prepare_with_backends(
        &self,
        bundle: BundleFiles,
        mut backends: Vec<Box<dyn Backend>>,
    ) -> Result<Arc<Deployment>> {
        self.refuse_after_shutdown()?;
        let limits = self.cfg.limits;
        let (bundle, backends, pipeline) = tokio::task::spawn_blocking(move || {
            let pipeline = Pipeline::new(&bundle.manifest, limits);
            for backend in &mut backends {
                check_golden(&bundle, backend.as_mut(), &pipeline)?;
            }
            Ok::<_, Error>((bundle, backends, pipeline))
        })
        .await
        .map_err(|e| Error::Internal(format!("the golden check panicked: {e}")))??;
        Ok(Arc::new(self.start(bundle, backends, pipeline)?))
    }

    /// Installs `deployment` and logs the swap.
    fn install_logged(&self, deployment: Arc<Deployment>) -> Result<Arc<Deployment>> {
        let previous = self.install(deployment.clone())?;
        tracing::info!(
            model = %deployment.name(),
            version = %deployment.version(),
            bundle = %deployment.digest().short(),
            engine = %deployment.engine(),
            previous = %previous.as_ref().map_or("none", |p| p.version().as_str()),
            "Model deployed."
        );
        Ok(deployment)
    }

    /// Makes `deployment` the one that answers its model's requests, atomically, and gives
    /// back the one it replaced (keep it to roll back: installing it again is instant).
    pub fn install(&self, deployment: Arc<Deployment>) -> Result<Option<Arc<Deployment>>> {
        self.refuse_after_shutdown()?;
        let name = deployment.name().clone();
        let previous = self.table.rcu(|table| {
            let mut table = HashMap::clone(table);
            table.insert(name.clone(), deployment.clone());
            table
        });
        Ok(previous.get(&name).cloned())
    }

    /// Stops serving `model`; requests in flight finish on the removed deployment.
    pub fn remove(&self, model: &ModelName) -> Option<Arc<Deployment>> {
        let previous = self.table.rcu(|table| {
            let mut table = HashMap::clone(table);
            table.remove(model);
            table
        });
        previous.get(model).cloned()
    }

    /// Empties the table (shutdown).
    pub(crate) fn clear(&self) {
        self.table.store(Arc::new(HashMap::new()));
    }

    fn refuse_after_shutdown(&self) -> Result<()> {
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        Ok(())
    }

    fn start(
        &self,
        bundle: BundleFiles,
        backends: Vec<Box<dyn Backend>>,
        pipeline: Pipeline,
    ) -> Result<Deployment> {
        let m = &bundle.manifest;
        let metrics = self
            .metrics
            .deployment(&m.model.name, &m.model.version, &m.model.labels);
        let monitor = VersionMonitor::new(
            m.model.name.clone(),
            m.model.version.clone(),
            m.model.labels.clone(),
            m.roles.embedding.clone(),
            bundle.reference()?,
            self.cfg.monitor.clone(),
            self.metrics
                .monitor(&m.model.name, &m.model.version, &m.model.labels),
        );
        let pipeline = if monitor.wants_stats() {
            pipeline.observing()
        } else {
            pipeline
        };
        let engine = backends
            .first()
            .map(|b| b.describe())
            .ok_or_else(|| Error::Internal("a deployment needs an engine instance".into()))?;
        let model = ModelHandle::start(
            backends,
            ModelContext {
                label: format!("{} {}", m.model.name, m.model.version),
                max_batch_size: self.cfg.batch.max_batch_size,
                metrics: metrics.clone(),
            },
        )?;
        let queue = queue::start(
            &self.tracker,
            model,
            self.cfg.batch,
            metrics.clone(),
            self.shutdown.clone(),
        );
        Ok(Deployment {
            manifest: Arc::new(bundle.manifest),
            digest: bundle.digest,
            pipeline: Arc::new(pipeline),
            engine,
            queue,
            metrics,
            monitor,
        })
    }
}

/// Runs the bundle's golden cases through `backend`; a bundle without any is accepted with
/// a warning (it cannot prove that serving matches how it was built).
fn check_golden(
    bundle: &BundleFiles,
    backend: &mut dyn Backend,
    pipeline: &Pipeline,
) -> Result<()> {
    let m = &bundle.manifest;
    let Some(set) = bundle.golden()? else {
        tracing::warn!(
            model = %m.model.name,
            version = %m.model.version,
            "The bundle has no golden cases; deploying it unchecked."
        );
        return Ok(());
    };
    let cases = set
        .cases
        .iter()
        .map(|c| {
            let bytes = bundle.files.get(&c.input).cloned().ok_or_else(|| {
                Error::Invalid(format!("golden input {} is not in the bundle", c.input))
            })?;
            Ok((c, bytes))
        })
        .collect::<Result<Vec<_>>>()?;
    let report =
        vigil_engine::golden::check(backend, pipeline, &cases, m.golden).map_err(|source| {
            Error::GoldenCheck {
                model: m.model.name.clone(),
                version: m.model.version.clone(),
                source,
            }
        })?;
    tracing::info!(
        model = %m.model.name,
        version = %m.model.version,
        cases = report.cases,
        max_abs_diff = report.max_abs_diff,
        "Golden cases reproduce."
    );
    Ok(())
}
