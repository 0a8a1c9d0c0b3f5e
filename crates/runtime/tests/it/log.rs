//! The prediction log's writer against a sink that records (and can refuse or stall) what
//! it is given: batching, flush on close, and each overload policy.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;
use vigil_core::monitor::PredictionRecord;
use vigil_runtime::{
    DriftWindow, LogConfig, Metrics, MonitorSink, OnFull, OnStoreError, PredictionLog,
};

#[derive(Debug, Default)]
struct Recorder {
    batches: Mutex<Vec<Vec<String>>>,
    /// Fail this many writes first.
    failures: Mutex<usize>,
    /// When set, each write waits for a permit (a stalled store).
    gate: Option<Arc<Semaphore>>,
}

#[async_trait]
impl MonitorSink for Recorder {
    async fn append_predictions(&self, records: &[PredictionRecord]) -> Result<usize, String> {
        if let Some(g) = &self.gate {
            g.acquire().await.map_err(|e| e.to_string())?.forget();
        }
        {
            let mut f = self.failures.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                return Err("database is locked".into());
            }
        }
        let mut seen: Vec<String> = self.batches.lock().unwrap().concat();
        let mut ids = Vec::new();
        for r in records {
            if !seen.contains(&r.request_id) {
                seen.push(r.request_id.clone());
                ids.push(r.request_id.clone());
            }
        }
        let n = ids.len();
        self.batches.lock().unwrap().push(ids);
        Ok(n)
    }
    async fn append_window(&self, _: &DriftWindow) -> Result<(), String> {
        Ok(())
    }
}

fn record(id: &str) -> PredictionRecord {
    PredictionRecord {
        request_id: id.into(),
        correlation_id: None,
        at: chrono::Utc::now(),
        model: "weldnet".into(),
        version: "1.0.0".into(),
        bundle: "0".repeat(64),
        source: "test".into(),
        label: "defect".into(),
        confidence: 0.9,
        probabilities: vec![0.9, 0.1],
        flags: vec![],
        stats: None,
        embedding: Some(vec![0.5; 8]),
        ood_distance: None,
        preprocess_us: 1,
        queue_us: 2,
        inference_us: 3,
        total_us: 6,
    }
}

fn cfg(capacity: usize, on_full: OnFull) -> LogConfig {
    LogConfig {
        capacity,
        batch_size: 64,
        flush_interval: Duration::from_millis(50),
        on_full,
        on_store_error: OnStoreError::Serve,
    }
}

#[tokio::test]
async fn records_are_written_in_batches_and_close_flushes_everything() {
    let sink = Arc::new(Recorder::default());
    let metrics = Metrics::new();
    let log = PredictionLog::start(cfg(1000, OnFull::Block), sink.clone(), &metrics);
    for i in 0..300 {
        log.submit(record(&format!("r{i}"))).await.unwrap();
    }
    assert_eq!(log.close().await, 0, "everything was written");
    let batches = sink.batches.lock().unwrap().clone();
    let all: Vec<String> = batches.concat();
    assert_eq!(all.len(), 300, "every record is written by close");
    assert_eq!(all[0], "r0");
    assert_eq!(all[299], "r299", "in order");
    assert!(
        batches.len() >= 5,
        "at most 64 per batch: {}",
        batches.len()
    );
    assert!(batches.iter().all(|b| b.len() <= 64));
    let text = metrics.render();
    assert!(
        text.contains("vigil_prediction_log_written_total 300"),
        "{text}"
    );
    // After close, nothing more is accepted.
    assert!(matches!(
        log.submit(record("late")).await,
        Err(vigil_runtime::Error::ShuttingDown)
    ));
}

#[tokio::test]
async fn a_record_is_written_within_the_flush_interval_without_close() {
    let sink = Arc::new(Recorder::default());
    let log = PredictionLog::start(cfg(1000, OnFull::Block), sink.clone(), &Metrics::new());
    log.submit(record("alone")).await.unwrap();
    for _ in 0..100 {
        if !sink.batches.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        sink.batches.lock().unwrap().concat(),
        vec!["alone".to_owned()]
    );
    log.close().await;
}

#[tokio::test]
async fn a_failing_store_is_retried_and_nothing_is_lost() {
    let sink = Arc::new(Recorder {
        failures: Mutex::new(2),
        ..Recorder::default()
    });
    let metrics = Metrics::new();
    let log = PredictionLog::start(cfg(1000, OnFull::Block), sink.clone(), &metrics);
    for i in 0..10 {
        log.submit(record(&format!("r{i}"))).await.unwrap();
    }
    log.close().await;
    assert_eq!(sink.batches.lock().unwrap().concat().len(), 10);
    assert!(
        metrics
            .render()
            .contains("vigil_prediction_log_write_errors_total 2")
    );
}

// A full disk used to leave the writer failing while predictions were still answered
// (acknowledged, never logged) and /readyz said ready.
#[tokio::test]
async fn while_the_store_refuses_writes_new_predictions_are_refused_and_the_log_recovers() {
    let sink = Arc::new(Recorder {
        failures: Mutex::new(3),
        ..Recorder::default()
    });
    let metrics = Metrics::new();
    let log = PredictionLog::start(
        LogConfig {
            on_store_error: OnStoreError::Refuse,
            ..cfg(1000, OnFull::Block)
        },
        sink.clone(),
        &metrics,
    );
    assert_eq!(log.health(), None);
    log.submit(record("acknowledged")).await.unwrap();
    let until = |want_healthy: bool| {
        let log = log.clone();
        async move {
            for _ in 0..1000 {
                if log.health().is_none() == want_healthy {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!(
                "the log never became {}",
                if want_healthy { "healthy" } else { "unhealthy" }
            );
        }
    };
    until(false).await;
    assert_eq!(log.health().as_deref(), Some("database is locked"));
    match log.submit(record("refused")).await {
        Err(e @ vigil_runtime::Error::LogUnavailable { .. }) => {
            assert_eq!(e.kind(), vigil_core::ErrorKind::Unavailable);
            assert!(e.to_string().contains("database is locked"), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The store comes back: the retried batch is written and the log is healthy again,
    // without a restart.
    until(true).await;
    log.submit(record("after")).await.unwrap();
    log.close().await;
    assert_eq!(
        sink.batches.lock().unwrap().concat(),
        vec!["acknowledged".to_owned(), "after".to_owned()],
        "the acknowledged record is written, the refused one is not"
    );
    assert!(
        metrics
            .render()
            .contains("vigil_prediction_log_lost_total{reason=\"store_down\"} 1")
    );
}

#[tokio::test]
async fn a_duplicate_request_id_is_counted_not_written_twice() {
    let sink = Arc::new(Recorder::default());
    let metrics = Metrics::new();
    let log = PredictionLog::start(cfg(1000, OnFull::Block), sink.clone(), &metrics);
    log.submit(record("same")).await.unwrap();
    log.submit(record("same")).await.unwrap();
    log.close().await;
    assert_eq!(
        sink.batches.lock().unwrap().concat(),
        vec!["same".to_owned()]
    );
    assert!(
        metrics
            .render()
            .contains("vigil_prediction_log_lost_total{reason=\"duplicate\"} 1")
    );
}

/// A stalled store fills the channel; each policy then does what it says.
async fn stalled(on_full: OnFull) -> (Arc<Semaphore>, Arc<Recorder>, PredictionLog, Metrics) {
    let gate = Arc::new(Semaphore::new(0));
    let sink = Arc::new(Recorder {
        gate: Some(gate.clone()),
        ..Recorder::default()
    });
    let metrics = Metrics::new();
    let log = PredictionLog::start(
        LogConfig {
            batch_size: 1,
            ..cfg(2, on_full)
        },
        sink.clone(),
        &metrics,
    );
    // One record is taken by the (stalled) writer, two fill the channel.
    for i in 0..3 {
        log.submit(record(&format!("r{i}"))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (gate, sink, log, metrics)
}

#[tokio::test]
async fn when_full_reject_refuses_and_drop_counts_and_block_waits() {
    let (gate, sink, log, metrics) = stalled(OnFull::Reject).await;
    let err = log.submit(record("refused")).await.unwrap_err();
    assert_eq!(err.kind(), vigil_core::ErrorKind::Overloaded);
    assert!(metrics.render().contains("reason=\"rejected\"} 1"));
    gate.add_permits(100);
    log.close().await;
    assert_eq!(sink.batches.lock().unwrap().concat().len(), 3);

    let (gate, sink, log, metrics) = stalled(OnFull::Drop).await;
    log.submit(record("dropped")).await.unwrap();
    assert!(metrics.render().contains("reason=\"dropped\"} 1"));
    gate.add_permits(100);
    log.close().await;
    assert!(
        !sink
            .batches
            .lock()
            .unwrap()
            .concat()
            .contains(&"dropped".to_owned())
    );

    let (gate, sink, log, _) = stalled(OnFull::Block).await;
    let waiting = {
        let log = log.clone();
        tokio::spawn(async move { log.submit(record("waited")).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "block waits for room");
    gate.add_permits(100);
    waiting.await.unwrap().unwrap();
    log.close().await;
    assert!(
        sink.batches
            .lock()
            .unwrap()
            .concat()
            .contains(&"waited".to_owned())
    );
}

#[tokio::test]
async fn block_waits_no_longer_than_the_deadline_given() {
    let (gate, sink, log, metrics) = stalled(OnFull::Block).await;
    let t = std::time::Instant::now();
    let err = log
        .submit_within(record("late"), Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            vigil_runtime::Error::DeadlineExceeded { stage: "logging" }
        ),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        metrics
            .render()
            .contains("vigil_prediction_log_lost_total{reason=\"deadline\"} 1")
    );
    // Once the store moves, a record queued within its limit is written.
    gate.add_permits(100);
    log.submit_within(record("in-time"), Duration::from_secs(5))
        .await
        .unwrap_or_else(|_| panic!("room was there"));
    log.close().await;
    let written = sink.batches.lock().unwrap().concat();
    assert!(!written.contains(&"late".to_owned()), "{written:?}");
    assert!(written.contains(&"in-time".to_owned()), "{written:?}");
    assert_eq!(written.len(), 4, "{written:?}");
}

#[tokio::test]
async fn close_gives_up_on_a_dead_store_even_mid_retry() {
    // The store refuses every write; the writer is already retrying when shutdown begins.
    let sink = Arc::new(Recorder {
        failures: Mutex::new(usize::MAX),
        ..Recorder::default()
    });
    let metrics = Metrics::new();
    let log = PredictionLog::start(cfg(1000, OnFull::Block), sink.clone(), &metrics);
    log.submit(record("doomed")).await.unwrap();
    let errors = |m: &Metrics| {
        m.render()
            .lines()
            .find_map(|l| l.strip_prefix("vigil_prediction_log_write_errors_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    for _ in 0..200 {
        if errors(&metrics) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(errors(&metrics) >= 2, "the writer never retried");
    let t = std::time::Instant::now();
    let unlogged = tokio::time::timeout(Duration::from_secs(20), log.close())
        .await
        .expect("close hangs on a dead store");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(unlogged, 1, "close must say how many it could not write");
    assert!(sink.batches.lock().unwrap().is_empty());
    assert!(
        metrics
            .render()
            .contains("vigil_prediction_log_lost_total{reason=\"store_error\"} 1"),
        "{}",
        metrics.render()
    );
}
