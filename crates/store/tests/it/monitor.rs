//! The monitoring record: prediction log, drift windows, alert events.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use vigil_core::ErrorKind;
use vigil_core::monitor::{ImageStats, PredictionRecord};
use vigil_store::{
    AlertEventRow, AlertState, AppendOutcome, DriftWindowRow, Error, MonitorStore, OpenOptions,
    PredictionQuery,
};

use crate::common::Fixture;

async fn monitor(dir: &tempfile::TempDir) -> Arc<dyn MonitorStore> {
    vigil_store::open_monitor(&OpenOptions::new(dir.path()))
        .await
        .unwrap()
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap() + Duration::microseconds(123_456)
}

/// A full record: every optional field set, floats that JSON or REAL could round badly.
fn record(id: &str, model: &str, at: DateTime<Utc>) -> PredictionRecord {
    PredictionRecord {
        request_id: id.to_owned(),
        correlation_id: Some(format!("client {id}")),
        at,
        model: model.to_owned(),
        version: "1.2".to_owned(),
        bundle: "ab".repeat(32),
        source: "serve".to_owned(),
        label: "defect".to_owned(),
        confidence: 0.1f32 + 0.2f32,
        probabilities: vec![0.7, 1.0 / 3.0, f32::MIN_POSITIVE, 1e-45],
        flags: vec!["review_band".to_owned(), "out_of_distribution".to_owned()],
        stats: Some(ImageStats {
            mean: 0.1 + 0.2,
            contrast: 1.0 / 3.0,
            dynamic_range: 0.98,
            sharpness: 1e-300,
            noise: 0.012_345_678_901_234_5,
            saturated: 0.0,
            width: 4096,
            height: 1024,
            bit_depth: 16,
        }),
        embedding: Some(
            (0..128u16)
                .map(|i| f32::from(i) * 0.1 - 3.3)
                .chain([f32::MAX, -0.0, f32::EPSILON])
                .collect(),
        ),
        ood_distance: Some(12.345_678_901_234_567),
        preprocess_us: 1_234,
        queue_us: 56,
        inference_us: 7_890,
        total_us: u64::try_from(i64::MAX).unwrap(),
    }
}

/// A bare record: no stats, embedding or distance, no flags.
fn bare(id: &str, model: &str, at: DateTime<Utc>) -> PredictionRecord {
    PredictionRecord {
        stats: None,
        embedding: None,
        ood_distance: None,
        flags: Vec::new(),
        ..record(id, model, at)
    }
}

fn ids(records: &[PredictionRecord]) -> Vec<&str> {
    records.iter().map(|r| r.request_id.as_str()).collect()
}

#[tokio::test]
async fn a_full_record_round_trips_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(&dir).await;
    let full = record("req-1", "weldnet", t0());
    let plain = bare("req-2", "weldnet", t0());
    let out = m
        .append_predictions(&[full.clone(), plain.clone()])
        .await
        .unwrap();
    assert_eq!(
        out,
        AppendOutcome {
            inserted: 2,
            duplicates: 0
        }
    );
    let back = m.prediction("req-1").await.unwrap().unwrap();
    assert_eq!(back, full);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(back.embedding.as_deref().unwrap()),
        bits(full.embedding.as_deref().unwrap())
    );
    assert_eq!(bits(&back.probabilities), bits(&full.probabilities));
    assert_eq!(m.prediction("req-2").await.unwrap().unwrap(), plain);
    assert_eq!(m.prediction("nope").await.unwrap(), None);
}

#[tokio::test]
async fn times_are_kept_to_the_microsecond_and_nan_survives() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(&dir).await;
    let mut r = bare("nan", "weldnet", t0() + Duration::nanoseconds(789));
    r.confidence = f32::NAN;
    r.probabilities = vec![f32::NAN, 0.5];
    m.append_predictions(&[r]).await.unwrap();
    let back = m.prediction("nan").await.unwrap().unwrap();
    assert_eq!(back.at, t0());
    assert!(back.confidence.is_nan());
    assert!(back.probabilities[0].is_nan());
    assert_eq!(back.probabilities[1], 0.5);
}

#[tokio::test]
async fn a_batch_of_500_is_stored_in_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(&dir).await;
    let batch: Vec<_> = (0..500)
        .map(|i| {
            record(
                &format!("r{i:04}"),
                "weldnet",
                t0() + Duration::milliseconds(i),
            )
        })
        .collect();
    let out = m.append_predictions(&batch).await.unwrap();
    assert_eq!(out.inserted, 500);
    assert_eq!(out.duplicates, 0);
    assert_eq!(m.count_predictions(None).await.unwrap(), 500);
    assert_eq!(m.count_predictions(Some("weldnet")).await.unwrap(), 500);
    assert_eq!(m.count_predictions(Some("other")).await.unwrap(), 0);
    let all = m
        .predictions(&PredictionQuery::model("weldnet"))
        .await
        .unwrap();
    assert_eq!(all, batch);
    assert_eq!(
        m.append_predictions(&[]).await.unwrap(),
        AppendOutcome::default()
    );
}

#[tokio::test]
async fn a_duplicate_request_id_is_counted_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(&dir).await;
    let first = record("dup", "weldnet", t0());
    m.append_predictions(std::slice::from_ref(&first))
        .await
        .unwrap();

    let mut again = first.clone();
    again.label = "ok".into();
    again.confidence = 0.99;
    let batch = vec![
        bare("a", "weldnet", t0()),
        again,
        bare("b", "weldnet", t0()),
        bare("a", "weldnet", t0() + Duration::seconds(1)),
        bare("c", "weldnet", t0()),
    ];
    let out = m.append_predictions(&batch).await.unwrap();
    assert_eq!(
        out,
        AppendOutcome {
            inserted: 3,
            duplicates: 2
        }
    );
    assert_eq!(m.prediction("dup").await.unwrap().unwrap(), first);
    assert_eq!(m.prediction("a").await.unwrap().unwrap().at, t0());
    assert_eq!(m.count_predictions(None).await.unwrap(), 4);
}

#[tokio::test]
async fn range_queries_filter_by_model_version_and_time_with_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(&dir).await;
    let mut batch = Vec::new();
    // Appended newest first: reads must come back oldest first anyway.
    for i in (0..10).rev() {
        let mut r = bare(&format!("w{i}"), "weldnet", t0() + Duration::seconds(i));
        if i % 2 == 1 {
            r.version = "2.0".into();
        }
        batch.push(r);
        batch.push(bare(&format!("o{i}"), "other", t0() + Duration::seconds(i)));
    }
    // Same millisecond, one microsecond apart: the bound is exact, not per millisecond.
    batch.push(bare(
        "micro",
        "weldnet",
        t0() + Duration::microseconds(3_000_001),
    ));
    m.append_predictions(&batch).await.unwrap();

    let q = |since: Option<i64>, until: Option<i64>| PredictionQuery {
        since: since.map(|s| t0() + Duration::seconds(s)),
        until: until.map(|s| t0() + Duration::seconds(s)),
        ..PredictionQuery::model("weldnet")
    };
    let got = m.predictions(&q(Some(3), Some(6))).await.unwrap();
    assert_eq!(ids(&got), ["w3", "micro", "w4", "w5"]);
    let got = m.predictions(&q(None, Some(2))).await.unwrap();
    assert_eq!(ids(&got), ["w0", "w1"]);
    let got = m.predictions(&q(Some(8), None)).await.unwrap();
    assert_eq!(ids(&got), ["w8", "w9"]);

    let mut limited = q(Some(2), None);
    limited.limit = 3;
    assert_eq!(
        ids(&m.predictions(&limited).await.unwrap()),
        ["w2", "w3", "micro"]
    );
    limited.limit = 0;
    assert!(m.predictions(&limited).await.unwrap().is_empty());

    let mut v2 = q(None, None);
    v2.version = Some("2.0".into());
    assert_eq!(
        ids(&m.predictions(&v2).await.unwrap()),
        ["w1", "w3", "w5", "w7", "w9"]
    );
    let mut micro = q(None, None);
    micro.since = Some(t0() + Duration::microseconds(3_000_001));
    micro.until = Some(t0() + Duration::microseconds(3_000_002));
    assert_eq!(ids(&m.predictions(&micro).await.unwrap()), ["micro"]);
    assert!(
        m.predictions(&PredictionQuery::model("nobody"))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn retention_deletes_only_older_rows() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(&dir).await;
    let batch: Vec<_> = (0..30)
        .map(|i| {
            bare(
                &format!("r{i}"),
                if i % 3 == 0 { "other" } else { "weldnet" },
                t0() + Duration::minutes(i),
            )
        })
        .collect();
    m.append_predictions(&batch).await.unwrap();
    let deleted = m
        .delete_predictions_before(t0() + Duration::minutes(10))
        .await
        .unwrap();
    assert_eq!(deleted, 10);
    assert_eq!(m.count_predictions(None).await.unwrap(), 20);
    assert!(m.prediction("r9").await.unwrap().is_none());
    // The cutoff itself is kept.
    assert!(m.prediction("r10").await.unwrap().is_some());
    let left = m
        .predictions(&PredictionQuery::model("weldnet"))
        .await
        .unwrap();
    assert!(left.iter().all(|r| r.at >= t0() + Duration::minutes(10)));
    assert_eq!(
        m.delete_predictions_before(t0() + Duration::minutes(10))
            .await
            .unwrap(),
        0
    );
    // A deleted id can be logged again (retention is the only way an id leaves the log).
    let out = m.append_predictions(&batch[..1]).await.unwrap();
    assert_eq!(out.inserted, 1);
}

#[tokio::test]
async fn retention_of_more_than_one_chunk_deletes_everything_before_the_cutoff() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(&dir).await;
    let batch: Vec<_> = (0..25_000)
        .map(|i| {
            bare(
                &format!("r{i}"),
                "weldnet",
                t0() + Duration::milliseconds(i),
            )
        })
        .collect();
    m.append_predictions(&batch).await.unwrap();
    let deleted = m
        .delete_predictions_before(t0() + Duration::milliseconds(24_000))
        .await
        .unwrap();
    assert_eq!(deleted, 24_000);
    assert_eq!(m.count_predictions(None).await.unwrap(), 1_000);
}

fn window(model: &str, minute: i64, drift: bool) -> DriftWindowRow {
    DriftWindowRow {
        model: model.to_owned(),
        version: "1.2".to_owned(),
        ended_at: t0() + Duration::minutes(minute),
        images: 500,
        drift,
        report: serde_json::json!({
            "stats": {"mean": {"ks": 0.31, "p": 1e-9}},
            "minute": minute,
            "nested": [1, 2.5, null, "x"],
        }),
    }
}

#[tokio::test]
async fn drift_windows_round_trip_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(&dir).await;
    for minute in [3, 1, 2, 0] {
        m.append_drift_window(&window("weldnet", minute, minute == 2))
            .await
            .unwrap();
    }
    m.append_drift_window(&window("other", 1, false))
        .await
        .unwrap();
    let all = m.drift_windows("weldnet", None, None, 100).await.unwrap();
    assert_eq!(
        all,
        (0..4)
            .map(|i| window("weldnet", i, i == 2))
            .collect::<Vec<_>>()
    );
    let some = m
        .drift_windows(
            "weldnet",
            Some(t0() + Duration::minutes(1)),
            Some(t0() + Duration::minutes(3)),
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        some,
        [window("weldnet", 1, false), window("weldnet", 2, true)]
    );
    let first = m.drift_windows("weldnet", None, None, 1).await.unwrap();
    assert_eq!(first, [window("weldnet", 0, false)]);
    assert!(
        m.drift_windows("nobody", None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

fn alert(rule: &str, second: i64, state: AlertState) -> AlertEventRow {
    AlertEventRow {
        rule: rule.to_owned(),
        model: (rule != "disk").then(|| "weldnet".to_owned()),
        state,
        severity: "critical".to_owned(),
        at: t0() + Duration::seconds(second),
        value: 0.1 + 0.2,
        message: format!("{rule} {state}"),
        details: serde_json::json!({"threshold": 0.25, "window": second}),
    }
}

#[tokio::test]
async fn alert_events_round_trip_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(&dir).await;
    let events = [
        alert("drift", 0, AlertState::Firing),
        alert("disk", 5, AlertState::Firing),
        alert("drift", 10, AlertState::Resolved),
        // Same instant as the previous one, appended later: comes first.
        alert("disk", 10, AlertState::Resolved),
    ];
    for e in &events {
        m.append_alert_event(e).await.unwrap();
    }
    let back = m.alert_events(10).await.unwrap();
    assert_eq!(
        back,
        [
            events[3].clone(),
            events[2].clone(),
            events[1].clone(),
            events[0].clone()
        ]
    );
    assert_eq!(back[1].model, Some("weldnet".to_owned()));
    assert_eq!(back[0].model, None);
    assert_eq!(m.alert_events(2).await.unwrap(), back[..2]);
    assert!(m.alert_events(0).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_second_handle_on_the_same_directory_sees_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let first = monitor(&dir).await;
    first
        .append_predictions(&[record("x", "weldnet", t0())])
        .await
        .unwrap();
    first
        .append_alert_event(&alert("drift", 0, AlertState::Firing))
        .await
        .unwrap();
    let second = monitor(&dir).await;
    assert_eq!(
        second.prediction("x").await.unwrap().unwrap(),
        record("x", "weldnet", t0())
    );
    assert_eq!(second.alert_events(10).await.unwrap().len(), 1);
    // And the other way round.
    second
        .append_drift_window(&window("weldnet", 0, true))
        .await
        .unwrap();
    assert_eq!(
        first
            .drift_windows("weldnet", None, None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn the_registry_and_the_monitor_share_one_database() {
    let fx = Fixture::new().await;
    let m = monitor(&fx.dir).await;
    m.append_predictions(&[bare("x", "weldnet", t0())])
        .await
        .unwrap();
    crate::common::push(&fx.registry, &crate::common::bundle("weldnet", "1.0", b"w"))
        .await
        .unwrap();
    assert_eq!(fx.registry.list_models().await.unwrap().len(), 1);
    assert_eq!(m.count_predictions(None).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_two_handles_do_not_fail_with_busy() {
    let fx = Fixture::new().await;
    let a = monitor(&fx.dir).await;
    let b = monitor(&fx.dir).await;
    let mut tasks = Vec::new();
    for (w, m) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            for n in 0..20 {
                let batch: Vec<_> = (0..50)
                    .map(|i| bare(&format!("w{w}-{n}-{i}"), "weldnet", t0()))
                    .collect();
                m.append_predictions(&batch).await.unwrap();
                if n % 5 == 0 {
                    m.append_alert_event(&alert("drift", n, AlertState::Firing))
                        .await
                        .unwrap();
                    m.delete_predictions_before(t0() - Duration::days(1))
                        .await
                        .unwrap();
                }
            }
        }));
    }
    // The registry writes through a third pool at the same time.
    let registry = fx.registry.clone();
    tasks.push(tokio::spawn(async move {
        for v in 0..10 {
            let b = crate::common::bundle("weldnet", &format!("1.{v}"), &[v]);
            crate::common::push(&registry, &b).await.unwrap();
        }
    }));
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(a.count_predictions(None).await.unwrap(), 4 * 20 * 50);
    assert_eq!(b.alert_events(100).await.unwrap().len(), 16);
    assert_eq!(
        fx.registry
            .list_versions(&crate::common::name("weldnet"))
            .await
            .unwrap()
            .len(),
        10
    );
}

#[tokio::test]
async fn corrupt_rows_are_errors_naming_the_column() {
    let fx = Fixture::new().await;
    let m = monitor(&fx.dir).await;
    m.append_predictions(&[record("p", "weldnet", t0()), record("q", "weldnet", t0())])
        .await
        .unwrap();
    m.append_drift_window(&window("weldnet", 0, false))
        .await
        .unwrap();
    m.append_alert_event(&alert("drift", 0, AlertState::Firing))
        .await
        .unwrap();
    let raw = fx.raw_db().await;
    for sql in [
        "UPDATE predictions SET probabilities = '[0.5,' WHERE request_id = 'p'",
        "UPDATE predictions SET embedding = x'000000' WHERE request_id = 'q'",
        "UPDATE drift_windows SET report = '{not json'",
        "UPDATE alert_events SET details = 'nope'",
    ] {
        sqlx::query(sql).execute(&raw).await.unwrap();
    }

    let check = |err: Error, column: &str, row: &str| {
        match &err {
            Error::CorruptRow {
                column: c, row: r, ..
            } => {
                assert_eq!(*c, column);
                assert_eq!(r, row);
            }
            other => panic!("expected CorruptRow, got {other:?}"),
        }
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        let msg = err.to_string();
        assert!(msg.contains(column), "{msg}");
    };
    check(
        m.prediction("p").await.unwrap_err(),
        "predictions.probabilities",
        "request_id \"p\"",
    );
    check(
        m.prediction("q").await.unwrap_err(),
        "predictions.embedding",
        "request_id \"q\"",
    );
    check(
        m.predictions(&PredictionQuery::model("weldnet"))
            .await
            .unwrap_err(),
        "predictions.probabilities",
        "request_id \"p\"",
    );
    check(
        m.drift_windows("weldnet", None, None, 10)
            .await
            .unwrap_err(),
        "drift_windows.report",
        "id 1",
    );
    check(
        m.alert_events(10).await.unwrap_err(),
        "alert_events.details",
        "id 1",
    );
}

#[tokio::test]
async fn a_duration_too_large_to_store_refuses_the_batch_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(&dir).await;
    let mut bad = bare("bad", "weldnet", t0());
    bad.queue_us = u64::MAX;
    let err = m
        .append_predictions(&[bare("good", "weldnet", t0()), bad])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(err.to_string().contains("queue_us"), "{err}");
    assert_eq!(m.count_predictions(None).await.unwrap(), 0);
}

/// The writer's throughput: 10,000 full records (128-float embeddings, stats) in batches of
/// 256, on a fresh database with the store's durability settings. Run with
/// `cargo test -p vigil-store --release --test it -- --ignored --nocapture append_throughput`.
#[tokio::test]
#[ignore = "a measurement; run in release"]
async fn append_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let m = monitor(&dir).await;
    let records: Vec<_> = (0..10_000)
        .map(|i| {
            record(
                &format!("req-{i:05}"),
                "weldnet",
                t0() + Duration::milliseconds(i),
            )
        })
        .collect();
    let start = Instant::now();
    let mut slowest = std::time::Duration::ZERO;
    for batch in records.chunks(256) {
        let t = Instant::now();
        let out = m.append_predictions(batch).await.unwrap();
        slowest = slowest.max(t.elapsed());
        assert_eq!(out.duplicates, 0);
    }
    let took = start.elapsed();
    assert_eq!(m.count_predictions(None).await.unwrap(), 10_000);
    #[allow(clippy::cast_precision_loss)]
    let rate = 10_000.0 / took.as_secs_f64();
    println!(
        "appended 10000 records in batches of 256 in {:.1} ms: {rate:.0} records/s; slowest \
         batch {:.1} ms",
        took.as_secs_f64() * 1e3,
        slowest.as_secs_f64() * 1e3
    );
}

// A full disk used to leave the prediction log stuck for good, even once space was freed.
// `store.max_size` fills the database the way a full disk does (SQLITE_FULL, on the real write
// path): the write is refused whole, with an error that says what to do, and the next write
// after retention frees space succeeds without reopening anything.
#[tokio::test]
async fn a_full_database_refuses_writes_clearly_and_recovers_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let store = vigil_store::open_monitor(&OpenOptions {
        max_size: Some(1 << 20),
        ..OpenOptions::new(dir.path())
    })
    .await
    .unwrap();
    let batch = |n: usize, at: DateTime<Utc>| -> Vec<PredictionRecord> {
        (0..64)
            .map(|i| {
                let mut r = record(&format!("b{n}-{i}"), "weldnet", at);
                r.embedding = Some(vec![0.25; 512]);
                r
            })
            .collect()
    };
    let mut full = None;
    for n in 0..1000 {
        match store.append_predictions(&batch(n, t0())).await {
            Ok(_) => {}
            Err(e) => {
                full = Some((n, e));
                break;
            }
        }
    }
    let (n, err) = full.expect("a 1 MiB database never filled");
    assert!(matches!(err, Error::Full { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains("store.max_size"), "{err}");
    // The refused batch left nothing behind: whole batches only.
    let count = store.count_predictions(Some("weldnet")).await.unwrap();
    assert_eq!(count, (n * 64) as u64);
    // Still full: the same clear error, not a stuck connection.
    let again = store.append_predictions(&batch(n, t0())).await.unwrap_err();
    assert!(matches!(again, Error::Full { .. }), "{again:?}");
    // Retention frees space; the very next write succeeds, without reopening anything.
    let deleted = store
        .delete_predictions_before(t0() + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(deleted, count);
    let later = t0() + Duration::seconds(2);
    let out = store.append_predictions(&batch(n, later)).await.unwrap();
    assert_eq!(out.inserted, 64);
}

// The review gauges used to load up to 100,000 prediction rows every refresh to estimate
// performance (RSS climbed from 67 to 420 MB under load); the database now sums them.
#[tokio::test]
async fn probability_mass_is_summed_in_the_database_and_gives_the_rows_estimate() {
    use vigil_core::review::{estimate, estimate_from};
    let dir = tempfile::tempdir().unwrap();
    let store = monitor(&dir).await;
    let labels: Vec<String> = ["ok", "crack", "pore"].map(String::from).to_vec();
    let rows: Vec<(&str, usize, Vec<f32>)> = vec![
        ("1", 0, vec![0.7, 0.2, 0.1]),
        ("1", 0, vec![0.5, 0.25, 0.25]),
        ("1", 1, vec![0.1, 0.8, 0.1]),
        ("1", 2, vec![0.2, 0.2, 0.6]),
        ("1", 1, vec![f32::NAN, 0.5, 0.5]),
        ("1", 1, vec![0.5, 0.5]),
        ("2", 2, vec![0.05, 0.05, 0.9]),
    ];
    let records: Vec<PredictionRecord> = rows
        .iter()
        .enumerate()
        .map(|(i, (version, label, p))| {
            let mut r = bare(
                &format!("m{i}"),
                "weldnet",
                t0() + Duration::seconds(i as i64),
            );
            r.version = (*version).to_owned();
            r.label = labels[*label].clone();
            r.probabilities = p.clone();
            r
        })
        .collect();
    // Too old: outside the window.
    let mut old = bare("old", "weldnet", t0() - Duration::days(1));
    old.version = "1".into();
    old.label = "ok".into();
    old.probabilities = vec![1.0, 0.0, 0.0];
    store.append_predictions(&records).await.unwrap();
    store.append_predictions(&[old]).await.unwrap();

    let by_version = store.probability_mass("weldnet", t0(), 3).await.unwrap();
    assert_eq!(by_version.len(), 2);
    for version in ["1", "2"] {
        let from_rows = estimate(
            &labels,
            rows.iter()
                .filter(|(v, _, _)| *v == version)
                .map(|(_, l, p)| (*l, p.as_slice())),
        );
        let from_db = estimate_from(&labels, &by_version[version]);
        assert_eq!(from_db.predictions, from_rows.predictions, "{version}");
        let (a, b) = (from_rows.accuracy.unwrap(), from_db.accuracy.unwrap());
        assert!((a - b).abs() < 1e-6, "{version}: {a} vs {b}");
    }
    assert_eq!(estimate_from(&labels, &by_version["1"]).predictions, 4);
}
