//! The prediction log's promises, end to end on the real binary (`vigil serve --port 0`
//! over a fresh data directory serving the shipped weld model): a clean shutdown writes
//! every answered prediction; `kill -9` loses at most the last flush interval; the `reject`
//! policy answers 503 rather than answer an unlogged prediction; the monitoring API reads
//! what was logged; retention deletes old rows at start-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use vigil_core::monitor::PredictionRecord;

use crate::common::*;
use crate::http::{
    get, request, serve_log, signal, start_ready, start_with, stop, stop_with, try_request,
};

/// What the monitoring API says of the served bundle's reference profile.
fn reference(addr: &str) -> serde_json::Value {
    let (status, v) = get(addr, "/v1/models/weldnet/monitoring");
    assert_eq!(status, 200, "{v}");
    v["reference"].clone()
}

/// The weld tiles of the test data.
fn tiles() -> Vec<Vec<u8>> {
    let mut out: Vec<_> = std::fs::read_dir(testdata().join("weld"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    out.sort();
    assert!(!out.is_empty());
    out.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// One answered predict.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The server's request id (the log's key), from the answer; the client's id when the
    /// answer has none.
    pub(crate) id: String,
    /// The id the client sent (`x-request-id`): the log keeps it as the correlation id.
    sent_as: String,
    pub(crate) status: u16,
    pub(crate) body: String,
    /// When the answer had been read in full.
    at: Instant,
}

impl Answer {
    fn new(sent_as: String, status: u16, body: String) -> Answer {
        let id = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["request_id"].as_str().map(str::to_owned))
            .unwrap_or_else(|| sent_as.clone());
        Answer {
            id,
            sent_as,
            status,
            body,
            at: Instant::now(),
        }
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{}: {e}", self.body))
    }
}

pub(crate) fn predict(addr: &str, id: &str, tile: &[u8]) -> Answer {
    let (status, body) = request(
        addr,
        "POST",
        "/v1/models/weldnet/predict",
        &[("Content-Type", "image/png"), ("x-request-id", id)],
        tile,
    );
    Answer::new(id.to_owned(), status, body)
}

/// Sends `n` predictions with ids `{prefix}-{i}` from `clients` threads, as fast as they
/// answer; every one must answer 200. In order of id index.
fn send(addr: &str, prefix: &str, n: usize, clients: usize) -> Vec<Answer> {
    let tiles = tiles();
    let mut answers: Vec<Answer> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let tiles = &tiles;
                s.spawn(move || {
                    (c..n)
                        .step_by(clients)
                        .map(|i| predict(addr, &format!("{prefix}-{i}"), &tiles[i % tiles.len()]))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    answers.sort_by_key(|a| {
        a.sent_as
            .rsplit('-')
            .next()
            .unwrap()
            .parse::<usize>()
            .unwrap()
    });
    for a in &answers {
        assert_eq!(a.status, 200, "{}: {}", a.id, a.body);
    }
    answers
}

/// The data directory's prediction log, opened as the server opens it.
struct Store {
    store: Arc<dyn vigil_store::MonitorStore>,
    rt: tokio::runtime::Runtime,
}

impl Store {
    fn open(env: &Env) -> Store {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = rt
            .block_on(vigil_store::open_monitor(&vigil_store::OpenOptions::new(
                env.data_dir(),
            )))
            .unwrap();
        Store { store, rt }
    }
    fn count(&self) -> u64 {
        self.rt
            .block_on(self.store.count_predictions(None))
            .unwrap()
    }
    fn get(&self, id: &str) -> Option<PredictionRecord> {
        self.rt.block_on(self.store.prediction(id)).unwrap()
    }
    fn append(&self, records: &[PredictionRecord]) {
        self.rt
            .block_on(self.store.append_predictions(records))
            .unwrap();
    }
}

/// SQLite's write lock on the data directory's database, held by this (other) process: the
/// server's log writer waits for it (on busy_timeout) with its batch: a stalled store.
struct WriteLock {
    conn: sqlx::SqliteConnection,
    rt: tokio::runtime::Runtime,
}

impl WriteLock {
    fn take(env: &Env) -> WriteLock {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = format!("sqlite://{}", env.data_dir().join("vigil.db").display());
        let conn = rt.block_on(async {
            use sqlx::Connection as _;
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::raw_sql("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .unwrap();
            conn
        });
        WriteLock { conn, rt }
    }

    fn release(self) {
        let WriteLock { mut conn, rt } = self;
        rt.block_on(async {
            use sqlx::Connection as _;
            sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        });
    }
}

/// Checks that `r` is the record of the answer `a`; `reference` is the monitoring API's
/// summary of the bundle's reference profile (`null` without one).
fn check_record(a: &Answer, r: &PredictionRecord, reference: &serde_json::Value) {
    let v = a.json();
    let ctx = format!("{}\nrecord: {r:?}", a.body);
    assert_eq!(r.request_id, a.id, "{ctx}");
    // The client's id is kept beside the server's, never as the key.
    assert_ne!(r.request_id, a.sent_as, "{ctx}");
    assert_eq!(
        r.correlation_id.as_deref(),
        Some(a.sent_as.as_str()),
        "{ctx}"
    );
    assert_eq!(r.model, "weldnet", "{ctx}");
    assert_eq!(r.version, v["version"], "{ctx}");
    assert_eq!(r.bundle, v["bundle"], "{ctx}");
    assert_eq!(r.source, "serve", "{ctx}");
    assert_eq!(r.label, v["label"], "{ctx}");
    assert!(
        (f64::from(r.confidence) - v["confidence"].as_f64().unwrap()).abs() < 1e-5,
        "{ctx}"
    );
    // The record keeps the bundle's label order, the answer is keyed by label: the same
    // probabilities either way.
    let mut answered: Vec<f64> = v["probabilities"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_f64().unwrap())
        .collect();
    let mut logged: Vec<f64> = r.probabilities.iter().map(|p| f64::from(*p)).collect();
    answered.sort_by(f64::total_cmp);
    logged.sort_by(f64::total_cmp);
    assert_eq!(answered.len(), logged.len(), "{ctx}");
    for (x, y) in answered.iter().zip(&logged) {
        assert!((x - y).abs() < 1e-5, "{ctx}");
    }
    // With the review queue on (the default) the log keeps why the prediction went to an
    // inspector: the answer's `review` flags.
    let flags: Vec<String> = v["review"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(r.flags, flags, "{ctx}");
    // Image statistics (and the embedding) are measured when the bundle has a reference
    // profile to compare them with (`VersionMonitor::wants_stats`); the shipped bundle may
    // or may not carry one.
    if reference.is_null() {
        assert_eq!(r.stats, None, "{ctx}");
        assert_eq!(r.embedding, None, "{ctx}");
    } else {
        let stats = r
            .stats
            .as_ref()
            .unwrap_or_else(|| panic!("no image statistics: {ctx}"));
        assert!(stats.mean.is_finite() && stats.contrast >= 0.0, "{ctx}");
        assert_eq!(
            r.embedding.is_some(),
            reference["embeddings"] == true,
            "{ctx}"
        );
    }
    assert!(r.total_us > 0 && r.inference_us > 0, "{ctx}");
    assert!(r.total_us >= r.inference_us, "{ctx}");
    match v.get("ood") {
        Some(ood) => {
            let d = r
                .ood_distance
                .unwrap_or_else(|| panic!("no OOD distance: {ctx}"));
            assert!(
                (d - ood["distance"].as_f64().unwrap()).abs() < 1e-6,
                "{ctx}"
            );
        }
        None => assert_eq!(r.ood_distance, None, "{ctx}"),
    }
}

#[test]
fn a_clean_shutdown_writes_every_answered_prediction() {
    const N: usize = 200;
    let env = Env::new();
    let (server, addr) = start_ready(&env, &[]);
    let reference = reference(&addr);
    let t = Instant::now();
    let answers = send(&addr, "clean", N, 4);
    let sent = t.elapsed();
    // SIGTERM right after the last answer: the default flush interval (1 s) has not passed.
    let t = Instant::now();
    stop(server, &env);
    eprintln!(
        "{N} predictions in {sent:?}; SIGTERM to exit {:?}",
        t.elapsed()
    );

    let store = Store::open(&env);
    assert_eq!(store.count(), N as u64, "{}", serve_log(&env));
    for a in &answers {
        let r = store
            .get(&a.id)
            .unwrap_or_else(|| panic!("{} is not in the log", a.id));
        check_record(a, &r, &reference);
    }
}

// SIGHUP (a closed terminal, a reload by habit) used to kill the server without flushing: 242
// of 7,144 acknowledged predictions lost. It is logged and ignored; SIGQUIT drains like SIGTERM.
#[test]
fn sighup_is_ignored_and_sigquit_drains_every_answered_prediction() {
    let env = Env::new();
    let (mut server, addr) = start_ready(&env, &[]);
    let mut answers = send(&addr, "hup", 60, 4);
    signal(&server, "HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "SIGHUP stopped the server: {}",
        serve_log(&env)
    );
    answers.extend(send(&addr, "after-hup", 60, 4));
    stop_with(server, &env, "QUIT");
    let log = serve_log(&env);
    assert!(log.contains("SIGHUP received and ignored"), "{log}");
    let store = Store::open(&env);
    assert_eq!(store.count(), 120, "{log}");
    for a in &answers {
        assert!(store.get(&a.id).is_some(), "{} is not in the log", a.id);
    }
}

#[test]
fn sigterm_under_load_logs_every_answered_prediction() {
    const CLIENTS: usize = 4;
    let env = Env::new();
    let (server, addr) = start_ready(&env, &[]);
    let tiles = tiles();
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let stopping = std::sync::atomic::AtomicBool::new(false);
    let mut answers: Vec<Answer> = Vec::new();
    let mut sent = 0;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (tiles, answered, stopping, addr) = (&tiles, &answered, &stopping, &addr);
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut sent = 0;
                    // Until the server stops listening (or 10 s after SIGTERM at most).
                    for i in 0..2000 {
                        let id = format!("load-{c}-{i}");
                        sent += 1;
                        let Ok((status, body)) = try_request(
                            addr,
                            "POST",
                            "/v1/models/weldnet/predict",
                            &[("Content-Type", "image/png"), ("x-request-id", &id)],
                            &tiles[i % tiles.len()],
                        ) else {
                            break;
                        };
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        out.push(Answer::new(id, status, body));
                        if status != 200 && stopping.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                    }
                    (out, sent)
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while answered.load(std::sync::atomic::Ordering::Relaxed) < 60 {
            assert!(Instant::now() < deadline, "{}", serve_log(&env));
            std::thread::sleep(Duration::from_millis(5));
        }
        // SIGTERM with requests in flight; the process exits 0.
        stopping.store(true, std::sync::atomic::Ordering::Relaxed);
        stop(server, &env);
        for h in handles {
            let (out, n) = h.join().unwrap();
            answers.extend(out);
            sent += n;
        }
    });
    let ok: Vec<&Answer> = answers.iter().filter(|a| a.status == 200).collect();
    for a in &answers {
        assert!(
            a.status == 200 || a.status == 503 || a.status == 0,
            "{}: {} {}",
            a.id,
            a.status,
            a.body
        );
    }
    let store = Store::open(&env);
    let count = store.count();
    eprintln!(
        "SIGTERM under load: {sent} sent, {} answered 200, {count} logged",
        ok.len()
    );
    for a in &ok {
        assert!(
            store.get(&a.id).is_some(),
            "{} was answered and is not in the log",
            a.id
        );
    }
    assert!(count >= ok.len() as u64 && count <= sent as u64, "{count}");
}

#[test]
fn kill_9_loses_at_most_the_last_flush_interval() {
    const N: usize = 60;
    const M: usize = 120;
    let flush = Duration::from_millis(500);
    let vars = [("VIGIL__MONITORING__LOG__FLUSH_INTERVAL", "500ms")];
    let env = Env::new();

    // Quiet for two flush intervals before the kill: everything is written.
    let (mut server, addr) = start_ready(&env, &vars);
    let answers = send(&addr, "quiet", N, 4);
    std::thread::sleep(2 * flush + Duration::from_millis(200));
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    drop(server);
    {
        let store = Store::open(&env);
        assert_eq!(store.count(), N as u64, "{}", serve_log(&env));
        for a in &answers {
            assert!(store.get(&a.id).is_some(), "{} is not in the log", a.id);
        }
    }

    // Killed right after the last answer: only what was answered within the last flush
    // interval (plus the batch being written; a margin covers it) may be missing.
    let (mut server, addr) = start_ready(&env, &vars);
    // Continuous load for at least 3 s, so that some answers are older than the bound.
    let started = Instant::now();
    let mut answers = Vec::new();
    let mut round = 0;
    while answers.len() < M || started.elapsed() < Duration::from_secs(3) {
        answers.extend(send(&addr, &format!("busy{round}"), 30, 4));
        round += 1;
    }
    let m = answers.len();
    let killed_at = Instant::now();
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    drop(server);
    let store = Store::open(&env);
    let total = store.count();
    assert!(total >= N as u64, "{total}");
    // The batch being written (and a busy shared machine's fsync) on top of the interval.
    let margin = Duration::from_millis(1500);
    let mut survived = 0;
    let mut must = 0;
    for a in &answers {
        let present = store.get(&a.id).is_some();
        survived += usize::from(present);
        if killed_at.duration_since(a.at) > flush + margin {
            must += 1;
            assert!(
                present,
                "{} was answered {:?} before the kill and is not in the log",
                a.id,
                killed_at.duration_since(a.at)
            );
        }
    }
    assert_eq!(total, (N + survived) as u64);
    eprintln!(
        "kill -9 right after {m} predictions (sent over {:?}): {survived} of {m} in the log; \
         {must} were answered more than {:?} before the kill (all present)",
        answers.last().unwrap().at - answers.first().unwrap().at,
        flush + margin
    );
}

#[test]
fn the_reject_policy_answers_503_rather_than_an_unlogged_prediction() {
    let env = Env::new();
    let (server, addr) = start_ready(
        &env,
        &[
            ("VIGIL__MONITORING__LOG__ON_FULL", "reject"),
            ("VIGIL__MONITORING__LOG__CAPACITY", "1"),
            ("VIGIL__MONITORING__LOG__FLUSH_INTERVAL", "100ms"),
        ],
    );
    let tile = tiles().remove(0);
    // A slow store: the writer waits with its batch, and the channel (one record) fills.
    let lock = WriteLock::take(&env);
    let mut ok = Vec::new();
    let mut rejected = None;
    for i in 0..200 {
        let a = predict(&addr, &format!("rej-{i}"), &tile);
        match a.status {
            200 => ok.push(a),
            503 => {
                rejected = Some(a);
                break;
            }
            other => panic!("{other}: {}", a.body),
        }
    }
    let rejected = rejected.unwrap_or_else(|| {
        panic!(
            "200 predictions answered with the store locked and a log of one record\n{}",
            serve_log(&env)
        )
    });
    let v = rejected.json();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("the prediction could not be logged"),
        "{v}"
    );
    assert_eq!(v["request_id"], rejected.id.as_str(), "{v}");
    // Still full: the next ones are refused too. A 503 can also come from a moment when
    // the writer, still gathering its batch, had not yet taken the one queued record (a
    // loaded machine); then a request or two more get in, and are logged, until the writer
    // is stuck on the locked store and the channel stays full.
    let mut again = predict(&addr, "rej-again-0", &tile);
    for k in 1..50 {
        if again.status != 200 {
            break;
        }
        ok.push(again);
        again = predict(&addr, &format!("rej-again-{k}"), &tile);
    }
    assert_eq!(again.status, 503, "{}", again.body);
    let again_id = again.id.clone();

    // The store recovers: everything answered is written, nothing refused is.
    lock.release();
    stop(server, &env);
    eprintln!(
        "{} answered and logged before the first 503 (capacity 1)",
        ok.len()
    );
    let store = Store::open(&env);
    assert_eq!(store.count(), ok.len() as u64, "{}", serve_log(&env));
    for a in &ok {
        assert!(store.get(&a.id).is_some(), "{} is not in the log", a.id);
    }
    assert!(store.get(&rejected.id).is_none());
    assert!(store.get(&again_id).is_none());
}

#[test]
fn block_waits_for_a_stalled_store_no_longer_than_the_request_timeout() {
    let env = Env::new();
    let (server, addr) = start_ready(
        &env,
        &[
            ("VIGIL__MONITORING__LOG__ON_FULL", "block"),
            ("VIGIL__MONITORING__LOG__CAPACITY", "1"),
            ("VIGIL__MONITORING__LOG__FLUSH_INTERVAL", "100ms"),
            ("VIGIL__SERVER__REQUEST_TIMEOUT", "1s"),
        ],
    );
    let tile = tiles().remove(0);
    let lock = WriteLock::take(&env);
    let mut ok = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        let t = Instant::now();
        let a = predict(&addr, &format!("blk-{i}"), &tile);
        match a.status {
            200 => ok.push(a),
            503 => {
                refused = Some((a, t.elapsed()));
                break;
            }
            other => panic!("{other}: {}", a.body),
        }
    }
    let (refused, waited) = refused.unwrap_or_else(|| {
        panic!(
            "200 predictions answered with the store locked and a log of one record\n{}",
            serve_log(&env)
        )
    });
    // It waited for room (back-pressure), then gave up at the request's deadline.
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    let v = refused.json();
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("the prediction could not be logged") && error.contains("deadline"),
        "{v}"
    );
    lock.release();
    stop(server, &env);
    eprintln!(
        "block: {} answered and logged, then a 503 after {waited:?} (request_timeout 1s)",
        ok.len()
    );
    let store = Store::open(&env);
    assert_eq!(store.count(), ok.len() as u64, "{}", serve_log(&env));
    for a in &ok {
        assert!(store.get(&a.id).is_some(), "{} is not in the log", a.id);
    }
    assert!(store.get(&refused.id).is_none());
}

#[test]
fn the_monitoring_api_reads_the_log_and_the_live_window() {
    const N: usize = 20;
    let env = Env::new();
    let (server, addr) = start_ready(&env, &[("VIGIL__MONITORING__LOG__FLUSH_INTERVAL", "200ms")]);
    let reference = reference(&addr);
    let answers = send(&addr, "api", N, 2);

    let (status, v) = get(&addr, "/v1/models/weldnet/monitoring?window=5m");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["live"]["predictions"], N, "{v}");
    let shares: f64 = v["live"]["class_shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-9, "{v}");
    let (status, v) = get(&addr, "/v1/models/weldnet/monitoring?window=abc");
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("abc"), "{v}");

    // Each answer is readable once its flush interval has passed (polled: a loaded CI
    // machine may take longer than the interval itself).
    std::thread::sleep(Duration::from_millis(600));
    for a in &answers {
        let path = format!("/v1/predictions/{}", a.id);
        let mut tries = 0;
        while get(&addr, &path).0 == 404 && tries < 100 {
            std::thread::sleep(Duration::from_millis(100));
            tries += 1;
        }
        let (status, r) = get(&addr, &path);
        assert_eq!(status, 200, "{}: {r}", a.id);
        let r: PredictionRecord = serde_json::from_value(r).unwrap();
        check_record(a, &r, &reference);
    }
    let (status, v) = get(&addr, "/v1/predictions/no-such-request");
    assert_eq!(status, 404, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("no-such-request"),
        "{v}"
    );
    stop(server, &env);
}

/// A stored record `age` old.
fn record(id: &str, age: chrono::Duration) -> PredictionRecord {
    PredictionRecord {
        request_id: id.to_owned(),
        correlation_id: None,
        at: Utc::now() - age,
        model: "weldnet".into(),
        version: "1.0.0".into(),
        bundle: "sha256:0".into(),
        source: "serve".into(),
        label: "no_defect".into(),
        confidence: 0.9,
        probabilities: vec![0.9, 0.1],
        flags: vec![],
        stats: None,
        embedding: None,
        ood_distance: None,
        preprocess_us: 1,
        queue_us: 1,
        inference_us: 1,
        total_us: 3,
    }
}

#[test]
fn retention_deletes_old_predictions_at_start_up() {
    let env = Env::new();
    let old: Vec<String> = (0..3).map(|i| format!("old-{i}")).collect();
    let fresh: Vec<String> = (0..2).map(|i| format!("fresh-{i}")).collect();
    {
        let store = Store::open(&env);
        let mut records: Vec<_> = old
            .iter()
            .map(|id| record(id, chrono::Duration::days(100)))
            .collect();
        records.extend(fresh.iter().map(|id| record(id, chrono::Duration::days(1))));
        store.append(&records);
        assert_eq!(store.count(), 5);
    }
    let (server, _addr) = start_with(
        &env,
        &[
            ("VIGIL__SERVER__SERVE_SHIPPED_MODEL", "false"),
            ("VIGIL__MONITORING__LOG__RETENTION", "90days"),
        ],
    );
    let store = Store::open(&env);
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.count() != 2 {
        assert!(
            Instant::now() < deadline,
            "{} predictions left\n{}",
            store.count(),
            serve_log(&env)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for id in &old {
        assert!(store.get(id).is_none(), "{id}");
    }
    for id in &fresh {
        assert!(store.get(id).is_some(), "{id}");
    }
    stop(server, &env);
}
