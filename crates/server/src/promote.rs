//! Moving an alias and, for `production`, the deployment with it, without a failed request.
//!
//! [`promote`] is the one sequence the admin API (`PUT /v1/models/{name}/aliases/{alias}`)
//! and the alias watcher of `vigil serve` ([`watch_production`]) share. The order matters:
//!
//! 1. fetch the version's files from the registry (unknown model or version: not found,
//!    nothing changes) and check them ([`BundleCheck`]);
//! 2. prepare the new version *beside* the old one: engine, golden cases, model thread
//!    ([`vigil_runtime::Deployments::prepare`]); the old version keeps serving meanwhile;
//! 3. only then move the alias in the registry (`set_alias`: alias event and audit entry), so
//!    a version that cannot serve never becomes `production`, and the record never names a
//!    version that is not running;
//! 4. install the prepared deployment atomically. Requests in flight finish on the version
//!    they started on; the old deployment drains when its last request drops it.
//!
//! Promotions are serialised (one at a time per server), so two concurrent moves cannot
//! install out of order with the registry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use vigil_core::bundle::Manifest;
use vigil_core::types::{AliasName, ModelName, ModelRef, ModelVersion, Sha256Digest};
use vigil_runtime::BundleFiles;
use vigil_store::{AliasChange, AliasOutcome, Registry};

use crate::{ApiError, AppState, ModelStatus};

/// The alias whose version is served.
pub const SERVED_ALIAS: &str = "production";

/// Turns a stored bundle into the verified files the runtime deploys; `Err` is a message for
/// the caller (an invalid bundle). `vigil serve` adds its signature policy this way.
pub type BundleCheckFn =
    dyn Fn(&vigil_store::BundleFiles) -> Result<BundleFiles, String> + Send + Sync;

/// A shared [`BundleCheckFn`].
#[derive(Clone)]
pub struct BundleCheck(pub Arc<BundleCheckFn>);

impl std::fmt::Debug for BundleCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BundleCheck")
    }
}

impl BundleCheck {
    /// The default check: the manifest parses and validates, and its digest is the one the
    /// registry recorded (the registry re-hashed every file on read).
    pub fn basic() -> BundleCheck {
        BundleCheck(Arc::new(basic_check))
    }
}

fn basic_check(files: &vigil_store::BundleFiles) -> Result<BundleFiles, String> {
    let text = std::str::from_utf8(&files.manifest_bytes)
        .map_err(|_| "the manifest is not UTF-8".to_owned())?;
    let digest = Sha256Digest::of(&files.manifest_bytes);
    if digest != files.info.digest {
        return Err(format!(
            "the manifest's digest {digest} differs from the registry's {}",
            files.info.digest
        ));
    }
    let manifest = Manifest::parse(text).map_err(|e| e.to_string())?;
    Ok(BundleFiles {
        manifest,
        digest,
        files: files.files.clone(),
    })
}

/// One alias move to make.
#[derive(Debug, Clone, Copy)]
pub struct Promotion<'a> {
    /// The model.
    pub name: &'a ModelName,
    /// The alias to move.
    pub alias: &'a AliasName,
    /// Where it should point.
    pub version: &'a ModelVersion,
    /// Who (audit log).
    pub actor: &'a str,
    /// Why (audit log).
    pub reason: &'a str,
}

/// What [`promote`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promoted {
    /// Where the alias pointed before (`None`: it was new).
    pub from: Option<ModelVersion>,
    /// Whether the registry changed (false: the alias already pointed there).
    pub moved: bool,
    /// The version deployed now, when the alias is the served one.
    pub deployed: Option<ModelVersion>,
}

/// Moves an alias; for the served alias, loads and checks the version beside the current
/// one first and installs it atomically after the move (see the module documentation for
/// the order). On any error before the move, nothing changed.
pub async fn promote(
    state: &AppState,
    registry: &dyn Registry,
    p: Promotion<'_>,
) -> Result<Promoted, ApiError> {
    let _one_at_a_time = state.promotions.lock().await;
    let served = p.alias.as_str() == SERVED_ALIAS;
    let prepared = if served {
        prepare(state, registry, p.name, p.version).await?
    } else {
        None
    };
    let outcome = registry
        .set_alias(AliasChange {
            name: p.name,
            alias: p.alias,
            version: p.version,
            actor: p.actor,
            reason: p.reason,
        })
        .await?;
    let (from, moved) = match outcome {
        AliasOutcome::Moved { from } => (from, true),
        AliasOutcome::Unchanged => (Some(p.version.clone()), false),
    };
    let mut deployed = None;
    if served {
        if let Some(d) = prepared {
            let previous = state.infer().deployments().install(d)?;
            tracing::info!(
                model = %p.name,
                from = %previous.as_ref().map_or("none", |d| d.version().as_str()),
                to = %p.version,
                "Deployment swapped."
            );
        }
        state.readiness().set(p.name.clone(), ModelStatus::Ready);
        deployed = Some(p.version.clone());
    }
    Ok(Promoted {
        from,
        moved,
        deployed,
    })
}

/// Fetches, checks and prepares `version` of `name` without installing it; `None` when that
/// exact bundle already serves.
async fn prepare(
    state: &AppState,
    registry: &dyn Registry,
    name: &ModelName,
    version: &ModelVersion,
) -> Result<Option<Arc<vigil_runtime::Deployment>>, ApiError> {
    let stored = registry.fetch(name, version).await?;
    let current = state.infer().deployments().get(name);
    if current.is_some_and(|d| d.digest() == stored.info.digest) {
        return Ok(None);
    }
    let check = state.bundle_check.clone();
    let bundle = tokio::task::spawn_blocking(move || (check.0)(&stored))
        .await
        .map_err(|e| ApiError::Kind {
            kind: vigil_core::ErrorKind::Internal,
            message: format!("checking the bundle panicked: {e}"),
        })?
        .map_err(|e| ApiError::invalid(format!("{name}:{version} does not verify: {e}")))?;
    Ok(Some(state.infer().deployments().prepare(bundle).await?))
}

/// Reads the served alias of every model in the registry and deploys the version it points
/// at where that differs from the one serving (a move made by another process, such as the
/// CLI). A version that fails is logged and not retried until the alias moves again; the
/// old version keeps serving.
pub async fn sync_production(
    state: &AppState,
    registry: &dyn Registry,
    failed: &mut HashMap<ModelName, ModelVersion>,
) {
    let models = match registry.list_models().await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot read the registry to follow alias moves.");
            return;
        }
    };
    for model in models {
        let Some(target) = model.aliases.get(SERVED_ALIAS) else {
            continue;
        };
        let name = &model.name;
        let current = state.infer().deployments().get(name);
        let from = current.as_ref().map(|d| d.version().clone());
        if from.as_ref() == Some(target) || failed.get(name) == Some(target) {
            continue;
        }
        let result = async {
            let _one_at_a_time = state.promotions.lock().await;
            // Read the alias again under the lock: another promotion may have moved it (and
            // deployed its version) since the list was read.
            let served: ModelRef = format!("{name}@{SERVED_ALIAS}")
                .parse()
                .map_err(|e: vigil_core::types::ParseError| ApiError::invalid(e.to_string()))?;
            let target = registry.resolve(&served).await?.version;
            if state
                .infer()
                .deployments()
                .get(name)
                .is_some_and(|d| *d.version() == target)
            {
                return Ok(None);
            }
            if let Some(d) = prepare(state, registry, name, &target).await? {
                state.infer().deployments().install(d)?;
            }
            state.readiness().set(name.clone(), ModelStatus::Ready);
            Ok::<_, ApiError>(Some(target))
        }
        .await;
        match result {
            Ok(swapped) => {
                failed.remove(name);
                if let Some(to) = swapped {
                    tracing::info!(
                        model = %name,
                        from = %from.as_ref().map_or("none", ModelVersion::as_str),
                        to = %to,
                        "Deployment swapped."
                    );
                }
            }
            Err(e) => {
                failed.insert(name.clone(), target.clone());
                tracing::warn!(
                    model = %name,
                    from = %from.as_ref().map_or("none", ModelVersion::as_str),
                    to = %target,
                    error = %e,
                    "The new production version cannot be deployed; the old one keeps serving."
                );
            }
        }
    }
}

/// Calls [`sync_production`] every `every` until `stop` resolves. A zero interval returns at
/// once (the watcher is off).
pub async fn watch_production(
    state: AppState,
    registry: Arc<dyn Registry>,
    every: Duration,
    stop: impl Future<Output = ()> + Send,
) {
    if every.is_zero() {
        return;
    }
    let mut failed = HashMap::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {}
        }
        tokio::select! {
            () = &mut stop => break,
            () = sync_production(&state, registry.as_ref(), &mut failed) => {}
        }
    }
    tracing::debug!("The alias watcher stopped.");
}
