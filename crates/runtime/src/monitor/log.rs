//! The prediction log's writer: every answered prediction (and every drift window) goes
//! through one bounded channel to a task that writes batches to a [`MonitorSink`] (the
//! store), off the request path.
//!
//! - **Batches**: up to `batch_size` records, or whatever arrived within `flush_interval` of
//!   the first one, in one store transaction.
//! - **Overload** (the channel is full because the store is slower than the traffic), by
//!   [`OnFull`]: `block` (default) makes the request wait for room, so serving slows to the
//!   store's pace; a request that finds no room by its deadline fails with 503
//!   ([`PredictionLog::submit_within`]): nothing is answered that is not logged. (Admission
//!   counts a request until it is classified, not while it waits for the log.) `reject`
//!   fails the request at once (503) instead of waiting. `drop` answers anyway and counts the record in
//!   `vigil_prediction_log_lost_total{reason="dropped"}` with a warning: for lines that
//!   value availability over a complete log. Loss is never silent.
//! - **Store errors** (a full disk, a dead database): a batch that fails to write is kept and
//!   retried with backoff until it is written, counted in
//!   `vigil_prediction_log_write_errors_total`. Until a write succeeds again the log is
//!   *unhealthy* ([`PredictionLog::health`], which `/readyz` reports) and [`OnStoreError`]
//!   decides what new predictions get: `refuse` (default) fails them at once with 503, since
//!   every decision must be traceable; `serve` queues them (answered, written once the store
//!   is back, lost only if the process dies first). Recovery needs no restart: the first
//!   write that succeeds makes the log healthy again.
//! - **Shutdown**: [`PredictionLog::close`] stops accepting, drains the channel and writes
//!   everything. After `kill -9` at most the records of one flush interval (plus the batch
//!   being written) are lost.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vigil_core::monitor::{PredictionRecord, WindowReport};

use crate::metrics::{LogMetrics, Metrics};
use crate::{Error, Result};

/// What happens to a prediction when the log's channel is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFull {
    /// The request waits for room (back-pressure; bounded by the request's deadline).
    #[default]
    Block,
    /// The request fails at once with 503; nothing unlogged is answered.
    Reject,
    /// The answer goes out and the record is dropped, counted and warned about.
    Drop,
}

impl std::str::FromStr for OnFull {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "block" => Ok(OnFull::Block),
            "reject" => Ok(OnFull::Reject),
            "drop" => Ok(OnFull::Drop),
            other => Err(format!(
                "unknown overload policy {other:?} (expected block, reject or drop)"
            )),
        }
    }
}

/// What a new prediction gets while the store refuses writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStoreError {
    /// Fail it at once (503): nothing is answered that cannot be logged.
    #[default]
    Refuse,
    /// Answer it and keep its record queued until the store takes it (up to the log's
    /// capacity; then the overload policy applies).
    Serve,
}

impl std::str::FromStr for OnStoreError {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "refuse" => Ok(OnStoreError::Refuse),
            "serve" => Ok(OnStoreError::Serve),
            other => Err(format!(
                "unknown store-error policy {other:?} (expected refuse or serve)"
            )),
        }
    }
}

/// How the prediction log writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Records the channel holds before the overload policy applies. Default 10,000 (about
    /// 3 s of peak traffic on a 2-core machine; 10 MB).
    pub capacity: usize,
    /// Most records per store transaction. Default 256.
    pub batch_size: usize,
    /// The longest a record waits for its batch to fill. Default 1 s: after `kill -9`, at
    /// most about this much is lost.
    pub flush_interval: Duration,
    /// What a full channel does to a request.
    pub on_full: OnFull,
    /// What a request gets while the store refuses writes.
    pub on_store_error: OnStoreError,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            capacity: 10_000,
            batch_size: 256,
            flush_interval: Duration::from_secs(1),
            on_full: OnFull::Block,
            on_store_error: OnStoreError::Refuse,
        }
    }
}

/// One evaluated drift window, as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DriftWindow {
    /// The model.
    pub model: String,
    /// The version monitored.
    pub version: String,
    /// When the window was evaluated.
    pub ended_at: DateTime<Utc>,
    /// What the tests found.
    pub report: WindowReport,
}

/// Where the log writes: the store, behind its monitoring interface.
#[async_trait]
pub trait MonitorSink: Send + Sync + std::fmt::Debug {
    /// Writes a batch of predictions in one transaction; returns how many were new (a
    /// request id already logged is skipped, not overwritten).
    async fn append_predictions(
        &self,
        records: &[PredictionRecord],
    ) -> std::result::Result<usize, String>;
    /// Writes one drift window.
    async fn append_window(&self, window: &DriftWindow) -> std::result::Result<(), String>;
}

#[derive(Debug)]
enum Item {
    Prediction(Box<PredictionRecord>),
    Window(Arc<DriftWindow>),
}

/// Why the log cannot write now; `None` while the last write succeeded.
#[derive(Debug, Default)]
struct Health(Mutex<Option<String>>);

impl Health {
    fn set(&self, problem: Option<String>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = problem;
    }
    fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The sending side of the prediction log. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PredictionLog {
    tx: mpsc::Sender<Item>,
    health: Arc<Health>,
    cfg: LogConfig,
    metrics: LogMetrics,
    stop: CancellationToken,
    writer: Arc<Mutex<Option<JoinHandle<usize>>>>,
}

impl PredictionLog {
    /// Starts the writer task on the current Tokio runtime.
    pub fn start(cfg: LogConfig, sink: Arc<dyn MonitorSink>, metrics: &Metrics) -> PredictionLog {
        let (tx, rx) = mpsc::channel(cfg.capacity.max(1));
        let stop = CancellationToken::new();
        let metrics = metrics.log();
        let health = Arc::new(Health::default());
        let writer = tokio::spawn(write_loop(
            rx,
            Writer {
                sink,
                metrics: metrics.clone(),
                stop: stop.clone(),
                health: health.clone(),
            },
            cfg,
        ));
        PredictionLog {
            tx,
            health,
            cfg,
            metrics,
            stop,
            writer: Arc::new(Mutex::new(Some(writer))),
        }
    }

    /// Why the log cannot write now (the store's last error), or `None` when its last write
    /// succeeded.
    pub fn health(&self) -> Option<String> {
        self.health.get()
    }

    /// Queues one prediction under the overload policy. Errors: [`Error::Overloaded`]
    /// (`reject` with a full channel), [`Error::ShuttingDown`] (the log is closed),
    /// [`Error::LogUnavailable`] (the store refuses writes and the policy is `refuse`).
    pub async fn submit(&self, record: PredictionRecord) -> Result<()> {
        if self.cfg.on_store_error == OnStoreError::Refuse
            && let Some(reason) = self.health.get()
        {
            self.metrics.lost("store_down", 1);
            return Err(Error::LogUnavailable { reason });
        }
        let item = Item::Prediction(Box::new(record));
        let sent = match self.cfg.on_full {
            OnFull::Block => self.tx.send(item).await.map_err(|_| Error::ShuttingDown),
            OnFull::Reject | OnFull::Drop => match self.tx.try_send(item) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::ShuttingDown),
                Err(mpsc::error::TrySendError::Full(_)) if self.cfg.on_full == OnFull::Drop => {
                    self.metrics.lost("dropped", 1);
                    tracing::warn!(
                        capacity = self.cfg.capacity,
                        "The prediction log is full; a record was dropped (policy: drop)."
                    );
                    Ok(())
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.metrics.lost("rejected", 1);
                    Err(Error::Overloaded {
                        max_in_flight: self.cfg.capacity,
                    })
                }
            },
        };
        self.metrics.pending(self.pending());
        sent
    }

    /// [`PredictionLog::submit`], waiting at most `limit` for room under the `block`
    /// policy: the request's deadline bounds its wait for the log, so a stalled store turns
    /// requests away instead of holding them (and a graceful shutdown) forever. Past it:
    /// [`Error::DeadlineExceeded`] (stage `logging`), counted in
    /// `vigil_prediction_log_lost_total{reason="deadline"}`; the record is not queued.
    pub async fn submit_within(&self, record: PredictionRecord, limit: Duration) -> Result<()> {
        // `Sender::send` is cancel-safe: a timed-out record was never queued.
        if let Ok(sent) = tokio::time::timeout(limit, self.submit(record)).await {
            return sent;
        }
        self.metrics.lost("deadline", 1);
        self.metrics.pending(self.pending());
        tracing::warn!(
            capacity = self.cfg.capacity,
            waited = ?limit,
            "The prediction log stayed full until the request's deadline; the request fails."
        );
        Err(Error::DeadlineExceeded { stage: "logging" })
    }

    /// Queues one drift window; never dropped (it waits for room on a task of its own).
    pub(crate) fn submit_window(&self, window: Arc<DriftWindow>) {
        let tx = self.tx.clone();
        match tx.try_send(Item::Window(window)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(item)) => {
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move {
                        let _ = tx.send(item).await;
                    });
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!("A drift window came after the prediction log closed.");
            }
        }
    }

    /// Records queued and not yet taken by the writer.
    pub fn pending(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Stops accepting, writes everything queued, and waits for the writer. Idempotent.
    /// Returns how many predictions could not be written because the store still refused
    /// writes (each was written to this process's log instead, as an "Unlogged prediction"
    /// error with the whole record): 0 unless the store is down at shutdown.
    pub async fn close(&self) -> usize {
        self.stop.cancel();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match writer {
            Some(w) => w.await.unwrap_or_else(|_| {
                tracing::error!("The prediction-log writer panicked.");
                0
            }),
            None => 0,
        }
    }
}

/// What the writer task holds.
struct Writer {
    sink: Arc<dyn MonitorSink>,
    metrics: LogMetrics,
    stop: CancellationToken,
    health: Arc<Health>,
}

/// Returns the number of predictions given up at shutdown ([`Writer::write`]).
async fn write_loop(mut rx: mpsc::Receiver<Item>, w: Writer, cfg: LogConfig) -> usize {
    let stop = w.stop.clone();
    let mut closing = false;
    let mut given_up = 0;
    loop {
        let first = if closing {
            rx.recv().await
        } else {
            tokio::select! {
                item = rx.recv() => item,
                () = stop.cancelled() => {
                    closing = true;
                    rx.close();
                    continue;
                }
            }
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        let until = Instant::now() + cfg.flush_interval;
        while batch.len() < cfg.batch_size.max(1) {
            if closing {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
                continue;
            }
            tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => batch.push(item),
                    None => break,
                },
                () = tokio::time::sleep_until(until) => break,
                () = stop.cancelled() => {
                    closing = true;
                    rx.close();
                }
            }
        }
        w.metrics.pending(rx.len());
        given_up += w.write(batch).await;
    }
    tracing::debug!("The prediction log is flushed and closed.");
    given_up
}

impl Writer {
    /// Writes one batch, retrying with backoff until it is stored; the log is unhealthy from
    /// the first failure to the next success. Once closing (`stop` cancelled, also while a
    /// retry is under way), it gives up after a few more tries, at most half a second apart,
    /// so that shutdown cannot hang on a dead store. What it gives up is counted, and each
    /// prediction is written whole to this process's log as an error ("Unlogged
    /// prediction"), which usually lives on another disk (the journal): the record of an
    /// acknowledged decision survives there. Returns how many it gave up.
    async fn write(&self, batch: Vec<Item>) -> usize {
        let (sink, metrics, stop) = (&*self.sink, &self.metrics, &self.stop);
        let mut predictions = Vec::with_capacity(batch.len());
        let mut windows = Vec::new();
        for item in batch {
            match item {
                Item::Prediction(p) => predictions.push(*p),
                Item::Window(w) => windows.push(w),
            }
        }
        let mut backoff = Duration::from_millis(50);
        // Failed tries since closing began.
        let mut tries = 0u32;
        loop {
            let t = std::time::Instant::now();
            let result = async {
                let mut inserted = 0;
                if !predictions.is_empty() {
                    inserted = sink.append_predictions(&predictions).await?;
                }
                for w in &windows {
                    sink.append_window(w).await?;
                }
                Ok::<_, String>(inserted)
            }
            .await;
            match result {
                Ok(inserted) => {
                    if let Some(was) = self.health.get() {
                        tracing::info!(after = %was, "The prediction log writes again.");
                        self.health.set(None);
                    }
                    metrics.flush(t.elapsed());
                    metrics.written(inserted);
                    if inserted < predictions.len() {
                        metrics.lost("duplicate", predictions.len() - inserted);
                        tracing::warn!(
                            duplicates = predictions.len() - inserted,
                            "Predictions with a request id already in the log were not written again."
                        );
                    }
                    return 0;
                }
                Err(e) => {
                    self.health.set(Some(e.clone()));
                    let closing = stop.is_cancelled();
                    tries += u32::from(closing);
                    metrics.write_error();
                    if closing && tries >= 5 {
                        metrics.lost("store_error", predictions.len());
                        tracing::error!(
                            error = %e,
                            records = predictions.len(),
                            "Shutting down with a store that refuses writes: these predictions are not in the prediction log; each follows as an \"Unlogged prediction\" error."
                        );
                        for p in &predictions {
                            let record = serde_json::to_string(p)
                                .unwrap_or_else(|e| format!("(not serialisable: {e})"));
                            tracing::error!(
                                request_id = %p.request_id,
                                record = %record,
                                "Unlogged prediction."
                            );
                        }
                        return predictions.len();
                    }
                    tracing::warn!(error = %e, records = predictions.len(), retry_in = ?backoff, "Cannot write the prediction log; retrying.");
                    if closing {
                        tokio::time::sleep(backoff.min(Duration::from_millis(500))).await;
                    } else {
                        // Shutdown cuts the wait short: the next try counts towards giving up.
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = stop.cancelled() => {}
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    // Windows already written on a failed try are written again: the store keeps
                    // both; predictions are deduplicated by request id.
                }
            }
        }
    }
}
