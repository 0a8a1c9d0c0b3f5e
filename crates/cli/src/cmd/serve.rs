//! `vigil serve`: the HTTP server. Builds the runtime from `[server]` and `[engine]`, reads
//! the `production` alias of every model from the registry, verifies each bundle (files,
//! signature policy, engine requirements; the runtime then runs its golden cases before it
//! serves), listens, and stops gracefully on SIGTERM or SIGINT: no new connections, requests
//! in flight finish, queues drain, threads join, exit 0.
//!
//! The server gets the registry, so the admin API (`PUT /v1/models/{name}/aliases/{alias}`)
//! can move aliases, and every `server.alias_poll_interval` a watcher follows `production`
//! moves made by other processes (`vigil models alias set`): the new version is loaded and
//! checked beside the old one, then swapped in (`vigil_server::promote`). Both check a
//! stored bundle as start-up does (files, signature policy, engine requirements).
//!
//! When `[alerts]` has rules, they are checked at start (a bad rule or webhook is a
//! configuration error, exit 5) and evaluated every `alerts.interval` over the live runtime
//! (`vigil_server::alert_source::LiveSignals`); notifications go to the webhooks and into the
//! store's alert history (`GET /v1/alerts`, `vigil alerts list`). Alerting stops with the
//! server.
//!
//! The HTTP routes live in `vigil-server`; this module only wires configuration, registry
//! and signals to it.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use vigil_core::bundle::{Bundle, Manifest};
use vigil_core::types::{AliasName, Sha256Digest};
use vigil_runtime::{BatchConfig, BundleFiles, DeployConfig, Infer, InferConfig};
use vigil_server::alert_source::{LiveSignals, StoreHistory};
use vigil_server::promote::BundleCheck;
use vigil_server::{AppState, HttpLimits, ModelStatus};

use super::Context;
use super::common::{VerifyOptions, open_stores, verify_bundle};
use crate::config::ConfigError;

/// The alias whose version is served.
const SERVED_ALIAS: &str = vigil_server::promote::SERVED_ALIAS;
/// How often the review gauges (queue, realised and estimated performance) are refreshed
/// besides after each verdict: the estimate moves with every prediction.
const REVIEW_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// `vigil serve`
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TCP port for this run (overrides server.port; 0 picks a free port, printed at start).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Address to listen on for this run (overrides server.bind), e.g. 0.0.0.0.
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<IpAddr>,
    /// Listen beyond this machine with auth off (server.insecure): refused without it, and
    /// logged as an error at every start with it.
    #[arg(long)]
    pub insecure: bool,
}

/// The address cannot be listened on (in use, not local, not permitted): exit code 6.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}")]
pub struct ListenError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why not.
    pub source: std::io::Error,
}

/// Runs the server until a signal stops it.
pub fn run(ctx: &Context, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let s = &ctx.config.server;
    if s.max_in_flight == 0 || s.max_batch_size == 0 {
        return Err(ConfigError::Invalid(
            "server.max_in_flight and server.max_batch_size must be at least 1".into(),
        )
        .into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vigil-http")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(serve(ctx, args, Stop::default()))
}

/// How an in-process server (the demo's) is told where it listens and when to stop; by
/// default it stops on SIGTERM or Ctrl-C.
#[derive(Default)]
pub struct Stop {
    /// Resolves when the server should shut down (instead of a signal).
    pub when: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Receives the address once the server listens.
    pub listening: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
}

/// Serves until `stop` says so (or a signal, by default).
pub async fn serve(ctx: &Context, args: ServeArgs, stop: Stop) -> anyhow::Result<ExitCode> {
    let s = &ctx.config.server;
    tracing::info!(config = ?s, "Server configuration.");
    let alerting = alerting(ctx)?;
    let (instances, engine) = ctx.config.engine_placement(Some(s.instances));
    tracing::info!(
        kind = ?engine.kind,
        device = ?engine.device,
        instances,
        threads = engine.intra_threads,
        "Engine selected."
    );
    let stores = open_stores(ctx).await?;
    let registry = stores.registry.clone();
    let metrics = vigil_runtime::Metrics::new();
    let monitoring = &ctx.config.monitoring;
    let mut monitor = monitoring.runtime();
    let mut log_store = None;
    if let Some(log_cfg) = monitoring.log_config()? {
        let store = stores.monitor.clone();
        let log = vigil_runtime::PredictionLog::start(
            log_cfg,
            Arc::new(vigil_server::monitoring::StoreSink(store.clone())),
            &metrics,
        );
        let purge = store.clone();
        spawn_retention(
            "monitoring.log.retention",
            monitoring.log.retention,
            move |cutoff| {
                let store = purge.clone();
                async move { store.delete_predictions_before(cutoff).await }
            },
        );
        monitor.log = Some(log.clone());
        log_store = Some((store, log));
    }
    let review = review_state(ctx, &metrics, stores.review.clone())?;
    let infer = Infer::with_metrics(
        InferConfig {
            max_in_flight: s.max_in_flight,
            preprocess_threads: s.preprocess_threads,
            request_timeout: s.request_timeout,
            memory_budget: s.memory_budget,
        },
        DeployConfig {
            batch: BatchConfig {
                max_batch_size: s.max_batch_size,
                max_queue_delay: s.max_queue_delay,
            },
            engine,
            monitor,
            instances,
            limits: vigil_engine::preprocess::Limits {
                max_encoded_bytes: s.max_body_bytes,
                max_pixels: s.max_image_pixels,
            },
        },
        metrics,
    )
    .context("cannot start the request path")?;
    let state = AppState::new(
        infer,
        HttpLimits {
            max_body_bytes: s.max_body_bytes,
            max_connections: s.max_connections,
            header_read_timeout: s.header_read_timeout,
            body_timeout: s.body_timeout,
        },
    )
    .with_registry(registry.clone())
    .with_bundle_check(bundle_check(ctx)?)
    .with_auth(auth(ctx, &stores).await?);
    let alert_store = match (&alerting, &log_store) {
        (None, _) => None,
        (Some(_), Some((store, _))) => Some(store.clone()),
        (Some(_), None) => Some(stores.monitor.clone()),
    };
    let state = match log_store {
        Some((store, log)) => state.with_monitoring(store, log),
        None => state,
    };
    let state = match review {
        Some(r) => state.with_review(r),
        None => state,
    };
    let alert_stop = tokio_util::sync::CancellationToken::new();
    let (state, alert_task) = match alerting {
        Some(alerting) => {
            let handle = alerting.handle();
            let source = Arc::new(LiveSignals::new(
                state.infer().clone(),
                &ctx.config.alerts.rules,
            ));
            let history = alert_store.map(|store| {
                Arc::new(StoreHistory(store)) as Arc<dyn vigil_server::alerting::AlertHistory>
            });
            let task = vigil_server::alerting::spawn_alerting(
                alerting,
                source,
                history,
                alert_stop.clone(),
            );
            (state.with_alerting(handle), Some(task))
        }
        None => (state, None),
    };

    let mut bundles = production_bundles(ctx, registry.as_ref(), &state).await?;
    if bundles.is_empty() && state.readiness().snapshot().is_empty() && s.serve_shipped_model {
        let b = shipped_bundle(ctx).context("the shipped weld model does not verify")?;
        tracing::info!(
            model = %b.manifest.model.name,
            version = %b.manifest.model.version,
            "No model has a {SERVED_ALIAS} alias: serving the weld model this build ships until \
             one does (server.serve_shipped_model = false turns this off)."
        );
        bundles.push(b);
    }
    if bundles.is_empty() && state.readiness().snapshot().is_empty() {
        tracing::warn!(
            "No model has a {SERVED_ALIAS} alias: serving nothing, and /readyz answers 503. \
             Set one with `vigil models alias set NAME {SERVED_ALIAS} VERSION`: it is picked \
             up within server.alias_poll_interval (or restart when that is \"0s\")."
        );
    }

    raise_open_files_limit(s.max_connections);
    let addr = SocketAddr::new(args.bind.unwrap_or(s.bind), args.port.unwrap_or(s.port));
    check_exposure(addr, state.auth_enabled(), args.insecure || s.insecure)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError { addr, source })?;
    let local = listener.local_addr().context("no local address")?;
    tracing::info!(address = %local, auth = state.auth_enabled(), "Listening.");
    // On stdout too, for scripts (and `--port 0`): the one line a caller needs.
    println!("listening on http://{local}");
    let _ = std::io::stdout().flush();
    if let Some(tx) = stop.listening {
        let _ = tx.send(local);
    }

    // Load after listening, so /healthz answers at once and /readyz says what is loading.
    let loader = {
        let state = state.clone();
        tokio::spawn(async move {
            for bundle in bundles {
                let name = bundle.manifest.model.name.clone();
                let version = bundle.manifest.model.version.clone();
                match vigil_server::deploy(&state, bundle).await {
                    Ok(d) => tracing::info!(
                        model = %name,
                        version = %version,
                        engine = %d.engine(),
                        "Model serving."
                    ),
                    Err(e) => tracing::error!(
                        model = %name,
                        version = %version,
                        error = %e,
                        "The model could not be deployed; /readyz answers 503."
                    ),
                }
            }
        })
    };
    // The watcher starts after the initial loads, and stops as soon as shutdown begins.
    let loader_abort = loader.abort_handle();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watcher = {
        let state = state.clone();
        let every = s.alias_poll_interval;
        let mut stop_rx = stop_rx;
        tokio::spawn(async move {
            let stop = async move {
                let _ = stop_rx.wait_for(|stopped| *stopped).await;
            };
            tokio::pin!(stop);
            tokio::select! {
                () = &mut stop => return,
                _ = loader => {}
            }
            vigil_server::promote::watch_production(state, registry, every, stop).await;
        })
    };
    let memory_release = tokio::spawn(release_free_memory_every(MEMORY_RELEASE));
    let review_refresh = state
        .review()
        .map(|_| vigil_server::review::spawn_refresh(state.clone(), REVIEW_REFRESH));
    let when = stop.when;
    let shutdown = async move {
        match when {
            Some(when) => when.await,
            None => shutdown_signal().await,
        }
        let _ = stop_tx.send(true);
    };
    vigil_server::serve(listener, state, shutdown)
        .await
        .context("the server failed")?;
    loader_abort.abort();
    if let Some(task) = review_refresh {
        task.abort();
    }
    memory_release.abort();
    watcher.abort();
    let _ = watcher.await;
    alert_stop.cancel();
    if let Some(task) = alert_task {
        let _ = task.await;
    }
    tracing::info!("Stopped.");
    Ok(ExitCode::SUCCESS)
}

/// Secure by default: beyond this machine (any address but loopback) the server needs auth,
/// else it refuses to start unless `insecure` says the operator accepts an open server, which
/// is then logged as an error at every start. (No TLS of its own yet: with auth on, off
/// loopback, a warning says tokens travel in clear unless a TLS proxy is in front.)
fn check_exposure(addr: SocketAddr, auth: bool, insecure: bool) -> anyhow::Result<()> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if !auth {
        if !insecure {
            return Err(ConfigError::Invalid(format!(
                "refusing to listen on {addr} with auth off: anyone who reaches it could move \
                 aliases and record verdicts. Turn on [auth] (`vigil tokens create --name NAME \
                 --role admin`, then auth.enabled = true), bind 127.0.0.1, or accept an open \
                 server with --insecure (server.insecure = true)"
            ))
            .into());
        }
        tracing::error!(
            address = %addr,
            "INSECURE: auth is off and the server listens beyond this machine (--insecure): \
             anyone who reaches it can move aliases and record verdicts."
        );
    } else {
        tracing::warn!(
            address = %addr,
            "The server listens beyond this machine over plain HTTP: tokens and session \
             cookies travel in clear unless a TLS-terminating proxy is in front of it."
        );
    }
    Ok(())
}

/// The server's auth, checked: on with no token usable (none in the config, none in the
/// store) is a configuration error, since nothing could be called.
async fn auth(
    ctx: &Context,
    stores: &vigil_store::Stores,
) -> anyhow::Result<Option<Arc<vigil_server::auth::Auth>>> {
    let auth = ctx.config.auth(stores)?;
    if let Some(a) = &auth
        && a.usable_tokens().await == 0
    {
        return Err(ConfigError::Invalid(
            "[auth] is on but no token can be used (none in auth.tokens, none active in the \
             store): make one with `vigil tokens create --name NAME --role admin`"
                .into(),
        )
        .into());
    }
    Ok(auth)
}

/// How often the allocator is asked to give freed memory back to the system.
const MEMORY_RELEASE: Duration = Duration::from_secs(10);

/// Gives the allocator's free memory back to the system every `every`, so that the server's
/// resident memory follows its load down after a burst instead of staying at the peak
/// (`vigil_runtime::memory::release_free_memory`).
async fn release_free_memory_every(every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = std::time::Instant::now();
        let released = tokio::task::spawn_blocking(vigil_runtime::memory::release_free_memory)
            .await
            .unwrap_or(false);
        tracing::debug!(released, took = ?started.elapsed(), "Released free memory.");
    }
}

/// The `[alerts]` section checked and built, when it has rules; a bad rule or webhook is a
/// configuration error.
fn alerting(ctx: &Context) -> anyhow::Result<Option<vigil_server::alerting::Alerting>> {
    let a = &ctx.config.alerts;
    let built = a
        .build()
        .map_err(|e| ConfigError::Invalid(format!("[alerts]: {e}")))?;
    if a.rules.is_empty() {
        if !a.webhooks.is_empty() {
            tracing::warn!(
                webhooks = a.webhooks.len(),
                "[alerts] has webhooks but no rules: alerting is off."
            );
        }
        return Ok(None);
    }
    let names: Vec<&str> = a.rules.iter().map(|r| r.name.as_str()).collect();
    tracing::info!(
        rules = a.rules.len(),
        webhooks = a.webhooks.len(),
        interval = %humantime::format_duration(a.interval),
        names = ?names,
        "Alert rules loaded."
    );
    Ok(Some(built))
}

/// Runs `purge(cutoff)` at start and every hour with `cutoff` = now - `retention` ("0s"
/// keeps everything): the prediction log's retention and the review images'.
fn spawn_retention<F, Fut>(setting: &'static str, retention: std::time::Duration, purge: F)
where
    F: Fn(chrono::DateTime<chrono::Utc>) -> Fut + Send + 'static,
    Fut: Future<Output = vigil_store::Result<u64>> + Send,
{
    if retention.is_zero() {
        return;
    }
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            every.tick().await;
            let Ok(span) = chrono::Duration::from_std(retention) else {
                return;
            };
            let cutoff = chrono::Utc::now() - span;
            match purge(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, %cutoff, setting, "Retention applied."),
                Err(e) => tracing::warn!(error = %e, setting, "Cannot apply the retention."),
            }
        }
    });
}

/// The review queue when `[review]` is enabled: the store opened, metrics registered, the
/// images' retention started.
fn review_state(
    ctx: &Context,
    metrics: &vigil_runtime::Metrics,
    store: Arc<dyn vigil_store::ReviewStore>,
) -> anyhow::Result<Option<vigil_server::review::ReviewState>> {
    let cfg = &ctx.config.review;
    if !cfg.enabled {
        return Ok(None);
    }
    cfg.validate()
        .map_err(|e| ConfigError::Invalid(format!("[review]: {e}")))?;
    let purge = store.clone();
    spawn_retention(
        "review.image_retention",
        cfg.image_retention,
        move |cutoff| {
            let store = purge.clone();
            async move { store.delete_review_images_before(cutoff).await }
        },
    );
    let review = vigil_server::review::ReviewState::new(store, cfg.clone(), metrics.registry())
        .context("cannot register the review metrics")?;
    Ok(Some(review))
}

/// The bundle behind every model's `production` alias, verified. A model whose bundle
/// cannot be read or fails verification is recorded as failed (so `/readyz` says why) and
/// the others are still served.
async fn production_bundles(
    ctx: &Context,
    registry: &dyn vigil_store::Registry,
    state: &AppState,
) -> anyhow::Result<Vec<BundleFiles>> {
    let alias: AliasName = SERVED_ALIAS.parse().context("the served alias")?;
    let opts = VerifyOptions {
        // The runtime runs the golden cases on the engine that will serve.
        golden: false,
        ..VerifyOptions::from_config(ctx, &[], false)?
    };
    let mut out = Vec::new();
    for model in registry.list_models().await? {
        let Some(version) = model.aliases.get(alias.as_str()) else {
            continue;
        };
        let name = model.name.clone();
        state.readiness().set(name.clone(), ModelStatus::Loading);
        let result = async {
            let files = registry.fetch(&name, version).await?;
            let bundle = verified(ctx, &opts, &files)?;
            Ok::<_, anyhow::Error>(bundle)
        }
        .await;
        match result {
            Ok(b) => out.push(b),
            Err(e) => {
                tracing::error!(model = %name, version = %version, error = %format!("{e:#}"),
                    "The production bundle does not verify; not serving it.");
                state
                    .readiness()
                    .set(name, ModelStatus::Failed(format!("{e:#}")));
            }
        }
    }
    Ok(out)
}

/// The weld model compiled into the binary, verified like a registry bundle.
fn shipped_bundle(ctx: &Context) -> anyhow::Result<BundleFiles> {
    let dir = tempfile::tempdir().context("cannot create a temporary folder")?;
    let archive = dir.path().join("weldnet.tar");
    std::fs::write(&archive, crate::assets::SHIPPED_WELD_MODEL)
        .context("cannot write the shipped model")?;
    let bundle = Bundle::open(&archive)?;
    let opts = VerifyOptions {
        golden: false,
        ..VerifyOptions::from_config(ctx, &[], false)?
    };
    verify_bundle(ctx, &bundle, &opts)?;
    Ok(BundleFiles::from_bundle(&bundle)?)
}

/// The check a bundle passes before a moved alias deploys it: the same as at start-up.
fn bundle_check(ctx: &Context) -> anyhow::Result<BundleCheck> {
    let opts = VerifyOptions {
        golden: false,
        ..VerifyOptions::from_config(ctx, &[], false)?
    };
    let ctx = Context {
        config: ctx.config.clone(),
        actor: ctx.actor.clone(),
    };
    Ok(BundleCheck(Arc::new(move |files| {
        verified(&ctx, &opts, files).map_err(|e| format!("{e:#}"))
    })))
}

/// Writes a stored bundle to a temporary folder and verifies it as `vigil bundle verify`
/// does (less the golden run), then hands its files to the runtime.
fn verified(
    ctx: &Context,
    opts: &VerifyOptions,
    files: &vigil_store::BundleFiles,
) -> anyhow::Result<BundleFiles> {
    let dir = tempfile::tempdir().context("cannot create a temporary folder")?;
    let root = dir.path().join("bundle");
    super::models::write_pulled(files, &root)?;
    let bundle = Bundle::open(&root)?;
    verify_bundle(ctx, &bundle, opts)?;
    let text = std::str::from_utf8(&files.manifest_bytes).context("the manifest is not UTF-8")?;
    let digest = Sha256Digest::of(&files.manifest_bytes);
    if digest != files.info.digest {
        return crate::exit::fail(
            vigil_core::ErrorKind::Unavailable,
            format!(
                "the manifest's digest {digest} differs from the registry's {}",
                files.info.digest
            ),
        );
    }
    Ok(BundleFiles {
        manifest: Manifest::parse(text)?,
        digest,
        files: files.files.clone(),
    })
}

/// Raises the soft limit on open files to the hard limit: each connection is a file, and the
/// connection loop holds up to twice `server.max_connections` of them. Warns when even the
/// hard limit is too low for that, since accepting then fails before the limit is reached.
fn raise_open_files_limit(max_connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "Cannot raise the open-files limit.");
        }
    }
    let now = getrlimit(Resource::Nofile).current;
    // Database connections, model files, log files and the listener: a few hundred at most.
    let needed = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(256);
    if let Some(now) = now
        && now < needed
    {
        tracing::warn!(
            open_files = now,
            needed,
            "The open-files limit is below twice server.max_connections: a flood of \
             connections would exhaust it. Raise it (ulimit -n, LimitNOFILE=) or lower \
             server.max_connections."
        );
    }
}

/// Resolves on SIGTERM, SIGINT (Ctrl-C) or SIGQUIT: each stops the server gracefully (no new
/// connections, the requests in flight answered, the queues drained, the prediction log
/// flushed). SIGHUP, whose default action would kill the process without flushing, is
/// caught and logged: the configuration is read once at start-up, so there is nothing to
/// reload, and a terminal that closes must not lose acknowledged predictions.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "Cannot listen for Ctrl-C.");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let others = async {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &'static str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, signal = name, "Cannot listen for a signal.");
                None
            }
        };
        let mut term = listen(SignalKind::terminate(), "SIGTERM");
        let mut quit = listen(SignalKind::quit(), "SIGQUIT");
        let mut hup = listen(SignalKind::hangup(), "SIGHUP");
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        loop {
            tokio::select! {
                () = next(&mut term) => return "SIGTERM",
                () = next(&mut quit) => return "SIGQUIT",
                () = next(&mut hup) => tracing::warn!(
                    "SIGHUP received and ignored: the configuration is read at start-up \
                     (restart to apply changes); stop the server with SIGTERM."
                ),
            }
        }
    };
    #[cfg(not(unix))]
    let others = std::future::pending::<&str>();
    let signal = tokio::select! {
        () = interrupt => "SIGINT",
        s = others => s,
    };
    tracing::info!(
        signal,
        "Stopping: no new connections; finishing the requests in flight."
    );
}
