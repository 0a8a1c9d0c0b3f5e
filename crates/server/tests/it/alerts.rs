//! `LiveSignals` over a real runtime: the request signals come from the metrics registry's
//! counters over the window, the live ones from the monitor; `GET /v1/alerts` without
//! alerting or store says so.

use std::time::Duration;

use axum::http::StatusCode;
use vigil_core::monitor::alert::{AlertRule, Comparison, Severity, Signal};
use vigil_server::HttpLimits;
use vigil_server::alert_source::LiveSignals;
use vigil_server::alerting::AlertSource;

use crate::common::*;

fn rule(signal: Signal) -> AlertRule {
    AlertRule {
        name: "r".to_owned(),
        signal,
        model: None,
        comparison: Comparison::Above,
        threshold: 0.5,
        window: Duration::from_secs(60),
        for_duration: Duration::ZERO,
        severity: Severity::Warning,
        cooldown: Duration::ZERO,
        description: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_signals_read_the_request_counters_and_the_monitor() {
    let (state, app) = served(HttpLimits::default()).await;
    let rules = [
        rule(Signal::ErrorRate),
        rule(Signal::LatencyP99Seconds),
        rule(Signal::MeanConfidence),
        rule(Signal::FlaggedShare),
        rule(Signal::Drift),
    ];
    let source = LiveSignals::new(state.infer().clone(), &rules);
    // Nothing happened yet: no value.
    assert_eq!(source.models(), vec!["weldnet".to_owned()]);
    for r in &rules {
        assert_eq!(source.value(r, "weldnet"), None, "{}", r.signal);
    }

    for _ in 0..3 {
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

    source.models(); // the tick's snapshot
    let error_rate = source.value(&rules[0], "weldnet").unwrap();
    assert!((error_rate - 0.25).abs() < 1e-12, "{error_rate}");
    let p99 = source.value(&rules[1], "weldnet").unwrap();
    assert!(p99 > 0.0 && p99 <= 30.0, "{p99}");
    let confidence = source.value(&rules[2], "weldnet").unwrap();
    assert!((0.0..=1.0).contains(&confidence), "{confidence}");
    let flagged = source.value(&rules[3], "weldnet").unwrap();
    assert!((0.0..=1.0).contains(&flagged), "{flagged}");
    assert_eq!(
        source.value(&rules[4], "weldnet"),
        None,
        "no drift window yet"
    );
    assert_eq!(source.value(&rules[0], "other"), None);

    // Without alerting and store the API says so.
    let v = json(send(&app, get("/v1/alerts")).await).await;
    assert_eq!(v["enabled"], false, "{v}");
    assert_eq!(v["active"], serde_json::json!([]));
    assert!(v["history"].is_null(), "{v}");
    let r = send(&app, get("/v1/alerts?limit=0")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    state.infer().shutdown().await;
}
