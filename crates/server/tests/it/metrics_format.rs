//! `/metrics` passes Prometheus' own checker: `promtool check metrics` on the text rendered
//! after successful and failed predictions. promtool is required, not optional: without it
//! this test fails and says how to install it (`.ci/run` installs it).
//!
//! The Triton-compatible counters (`nv_*`, `vigil_runtime::metrics`) keep Triton's exact
//! names on purpose, so that Triton dashboards work unchanged; promtool's naming lint flags
//! them (no `_total`, `_count` on a counter, `_us`). Those complaints, and only those, are
//! allowed; everything else must pass with no complaint at all.

use std::io::Write as _;
use std::process::{Command, Stdio};

use axum::http::StatusCode;
use vigil_runtime::metrics;
use vigil_server::HttpLimits;

use crate::common::*;

/// Triton's names, kept exactly (see the module docs).
const TRITON_NAMES: [&str; 6] = [
    metrics::NV_INFERENCE_REQUEST_SUCCESS,
    metrics::NV_INFERENCE_REQUEST_FAILURE,
    metrics::NV_INFERENCE_COUNT,
    metrics::NV_INFERENCE_EXEC_COUNT,
    metrics::NV_INFERENCE_QUEUE_DURATION_US,
    metrics::NV_INFERENCE_COMPUTE_INFER_DURATION_US,
];

/// The naming lints promtool applies to Triton's names.
const TRITON_LINTS: [&str; 3] = [
    "counter metrics should have \"_total\" suffix",
    "non-histogram and non-summary metrics should not have \"_count\" suffix",
    "metric names should not contain abbreviated units",
];

/// The metric family a line of the text format belongs to.
fn family(line: &str) -> &str {
    let line = line
        .strip_prefix("# HELP ")
        .or_else(|| line.strip_prefix("# TYPE "))
        .unwrap_or(line);
    line.split(['{', ' ']).next().unwrap_or("")
}

/// What promtool says about `text`: (exit status success, its complaints).
fn promtool_check(text: &str) -> (bool, String) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot run promtool ({e}); it checks the /metrics format. Install it with \
             `apt-get install prometheus` (Debian; .ci/run does this) or put Prometheus' \
             `promtool` on PATH"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_after_successes_and_failures() {
    let (state, app) = served(HttpLimits::default()).await;
    for _ in 0..2 {
        let r = send(
            &app,
            post("/v1/models/weldnet/predict", "image/png", tile()),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = send(
        &app,
        post(
            "/v1/models/weldnet/predict",
            "image/png",
            &b"not an image"[..],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = send(&app, post("/v1/models/nosuch/predict", "image/png", tile())).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let r = send(&app, get("/metrics")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = String::from_utf8(bytes(r).await.to_vec()).unwrap();
    assert!(text.contains("outcome=\"invalid\""), "{text}");
    for name in TRITON_NAMES {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} rendered");
    }

    // Everything: the only complaints are naming lints on Triton's names (a parse error,
    // or any other lint, fails).
    let (_, said) = promtool_check(&text);
    for complaint in said.lines().filter(|l| !l.trim().is_empty()) {
        let name = complaint.split(' ').next().unwrap_or("");
        assert!(
            TRITON_NAMES.contains(&name) && TRITON_LINTS.iter().any(|l| complaint.ends_with(l)),
            "promtool check metrics: {complaint}\n--- all it said ---\n{said}\n--- the metrics ---\n{text}"
        );
    }

    // Without Triton's families: no complaint at all.
    let ours: String = text
        .lines()
        .filter(|l| !TRITON_NAMES.contains(&family(l)))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(ours.contains(metrics::INFER_REQUESTS_TOTAL));
    let (ok, said) = promtool_check(&ours);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics:\n{said}\n--- the metrics ---\n{ours}"
    );
    state.infer().shutdown().await;
}
