//! Structured logs: with the JSON formatter `vigil serve` uses (`log.format = "json"`), every
//! line emitted while a request is served carries its request id (the request-id
//! middleware's span field, which the formatter writes under `span` and `spans`).
//!
//! A global subscriber would see every other test's lines, so the test runs itself again in
//! a child process (same binary, this test only) that installs the subscriber globally (all
//! threads: tokio workers, preprocess pool, model thread) and logs to a file; the parent
//! reads the lines between two markers.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use vigil_server::HttpLimits;

use crate::common::*;

/// Set in the child: where it writes its JSON log.
const CHILD_LOG: &str = "VIGIL_TEST_JSON_LOG";
const TEST_NAME: &str = "logs::every_json_log_line_of_a_request_carries_its_id";
const BEGIN: &str = "test marker: requests begin";
const END: &str = "test marker: requests end";

/// Appends the subscriber's output to a file.
#[derive(Clone)]
struct FileWriter(Arc<Mutex<std::fs::File>>);

impl std::io::Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap().flush()
    }
}

#[test]
fn every_json_log_line_of_a_request_carries_its_id() {
    if let Some(path) = std::env::var_os(CHILD_LOG) {
        return child(PathBuf::from(path));
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.jsonl");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--test-threads=1"])
        .env(CHILD_LOG, &log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let message = |l: &serde_json::Value| l["fields"]["message"].as_str().unwrap_or("").to_owned();
    let begin = lines.iter().position(|l| message(l) == BEGIN).unwrap();
    let end = lines.iter().position(|l| message(l) == END).unwrap();
    let during = &lines[begin + 1..end];
    assert!(
        during
            .iter()
            .filter(|l| message(l) == "Request answered.")
            .count()
            == 2,
        "both requests logged their answer: {text}"
    );
    for line in during {
        // Every line carries the server's request id and the client's correlation id.
        let correlation = line["span"]["correlation_id"].as_str();
        assert!(
            correlation == Some("log-test-1") || correlation == Some("log-test-2"),
            "a line without the correlation id: {line}"
        );
        let id = line["span"]["request_id"].as_str();
        assert!(
            id.is_some_and(|id| id.len() == 36),
            "a line without the request id: {line}"
        );
        let in_list = line["spans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["request_id"] == id.unwrap());
        assert!(in_list, "{line}");
    }
}

/// The child: a JSON subscriber for every thread, a server, two requests between markers.
fn child(log: PathBuf) {
    let file = FileWriter(Arc::new(Mutex::new(std::fs::File::create(log).unwrap())));
    // As `vigil serve` with `log.format = "json"`, at debug for Vigil's crates.
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "info,vigil_server=debug,vigil_runtime=debug,vigil_engine=debug,it=debug",
        ))
        .with_writer(move || file.clone())
        .json()
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (state, app) = served(HttpLimits::default()).await;
        // The model thread logs its start on its own; a first request, answered by that
        // thread, keeps that lifecycle line out of the window below.
        let warm_up = post("/v1/models/weldnet/predict", "image/png", tile());
        assert_eq!(send(&app, warm_up).await.status(), StatusCode::OK);
        tracing::info!("{BEGIN}");
        let req = Request::post("/v1/models/weldnet/predict")
            .header("content-type", "image/png")
            .header("x-request-id", "log-test-1")
            .body(Body::from(tile()))
            .unwrap();
        assert_eq!(send(&app, req).await.status(), StatusCode::OK);
        let req = Request::post("/v1/models/weldnet/predict")
            .header("content-type", "image/png")
            .header("x-request-id", "log-test-2")
            .body(Body::from(&b"not an image"[..]))
            .unwrap();
        assert_eq!(send(&app, req).await.status(), StatusCode::BAD_REQUEST);
        tracing::info!("{END}");
        state.infer().shutdown().await;
    });
}
