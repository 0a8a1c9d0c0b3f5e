//! The review queue end to end in process: predictions flagged by the policy are queued
//! with their images, inspectors claim (never the same item), give verdicts (bad ones
//! refused with nothing written), and realised performance and `/metrics` follow; feedback
//! reaches predictions that were never queued.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use vigil_core::review::{FlagPolicy, SecondOpinion};
use vigil_runtime::{DeployConfig, Infer, InferConfig, LogConfig, Metrics, PredictionLog};
use vigil_server::review::{ReviewConfig, ReviewState};
use vigil_server::{AppState, HttpLimits};

use super::common::*;

/// A server with a prediction log and a review queue in `dir`, serving weldnet 1.
pub(crate) async fn reviewing(
    dir: &std::path::Path,
    qa_share: f64,
    second_opinion: SecondOpinion,
) -> (AppState, Router) {
    let opts = vigil_store::OpenOptions::new(dir);
    let monitor = vigil_store::open_monitor(&opts).await.unwrap();
    let queue = vigil_store::open_review(&opts).await.unwrap();
    let metrics = Metrics::new();
    let log = PredictionLog::start(
        LogConfig {
            flush_interval: Duration::from_millis(20),
            ..LogConfig::default()
        },
        Arc::new(vigil_server::monitoring::StoreSink(monitor.clone())),
        &metrics,
    );
    let review = ReviewState::new(
        queue,
        ReviewConfig {
            flag: FlagPolicy {
                qa_share,
                ..FlagPolicy::default()
            },
            second_opinion,
            ..ReviewConfig::default()
        },
        metrics.registry(),
    )
    .unwrap();
    let infer = Infer::with_metrics(
        InferConfig {
            preprocess_threads: 2,
            ..InferConfig::default()
        },
        DeployConfig {
            engine: engine(),
            ..DeployConfig::default()
        },
        metrics,
    )
    .unwrap();
    let state = AppState::new(infer, HttpLimits::default())
        .with_monitoring(monitor, log)
        .with_review(review);
    vigil_server::deploy(&state, bundle("1")).await.unwrap();
    let app = vigil_server::app(state.clone());
    (state, app)
}

fn post_json(uri: &str, body: serde_json::Value) -> Request<Body> {
    post(uri, "application/json", body.to_string())
}

async fn predict(app: &Router, id: &str) -> serde_json::Value {
    let req = Request::post("/v1/models/weldnet/predict")
        .header("content-type", "image/png")
        .header("x-request-id", id)
        .body(Body::from(tile()))
        .unwrap();
    let r = send(app, req).await;
    assert_eq!(r.status(), StatusCode::OK);
    json(r).await
}

/// Polls the queue until it holds `n` open items (in its list and its summary, which are
/// read one after the other while items may still be arriving).
async fn queue_of(app: &Router, n: usize) -> serde_json::Value {
    for _ in 0..200 {
        let q = json(send(app, get("/v1/review/queue")).await).await;
        if q["items"].as_array().unwrap().len() == n && q["summary"]["by_state"]["open"] == n {
            return q;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the queue never held {n} items");
}

async fn claim(app: &Router, inspector: &str) -> Option<serde_json::Value> {
    let r = send(
        app,
        post_json(
            "/v1/review/claim",
            serde_json::json!({ "inspector": inspector }),
        ),
    )
    .await;
    match r.status() {
        StatusCode::NO_CONTENT => None,
        StatusCode::OK => Some(json(r).await),
        other => panic!("claim answered {other}"),
    }
}

async fn verdict(app: &Router, item: &serde_json::Value, inspector: &str, label: &str) -> u16 {
    let uri = format!("/v1/review/items/{}/verdict", item["id"]);
    let body = serde_json::json!({
        "token": item["claim"]["token"], "inspector": inspector, "label": label,
        "comment": "checked on the film", "time_spent_ms": 2100,
    });
    send(app, post_json(&uri, body)).await.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flagged_predictions_are_reviewed_and_measured() {
    let dir = tempfile::tempdir().unwrap();
    let (state, app) = reviewing(dir.path(), 1.0, SecondOpinion::Never).await;
    let mut predicted = Vec::new();
    let mut ids = Vec::new();
    for i in 0..4 {
        let body = predict(&app, &format!("tile-{i}")).await;
        let review: Vec<&str> = body["review"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert!(review.contains(&"qa_sample"), "{body}");
        predicted.push(body["label"].as_str().unwrap().to_owned());
        ids.push(body["request_id"].as_str().unwrap().to_owned());
    }
    let q = queue_of(&app, 4).await;
    assert_eq!(q["summary"]["by_state"]["open"], 4);
    assert_eq!(q["summary"]["open_by_flag"]["qa_sample"], 4);

    // Two inspectors claiming at once get different items.
    let (a, b) = tokio::join!(claim(&app, "ann"), claim(&app, "bob"));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a["id"], b["id"]);

    // The kept image comes back as sent, and as pixels for window/level.
    let r = send(&app, get(&format!("/v1/review/items/{}/image", a["id"]))).await;
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(bytes(r).await, tile());
    let r = send(&app, get(&format!("/v1/review/items/{}/pixels", a["id"]))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (w, h): (usize, usize) = (
        r.headers()["x-width"].to_str().unwrap().parse().unwrap(),
        r.headers()["x-height"].to_str().unwrap().parse().unwrap(),
    );
    assert_eq!(bytes(r).await.len(), w * h * 2);

    // Refusals change nothing: an unknown label, a token that is not the claim, another
    // inspector's claim, an unknown item.
    let label = a["label"].as_str().unwrap().to_owned();
    assert_eq!(verdict(&app, &a, "ann", "not-a-label").await, 400);
    let mut forged = a.clone();
    forged["claim"]["token"] = "forged".into();
    assert_eq!(verdict(&app, &forged, "ann", &label).await, 409);
    assert_eq!(verdict(&app, &a, "bob", &label).await, 409);
    let mut ghost = a.clone();
    ghost["id"] = 999_999.into();
    assert_eq!(verdict(&app, &ghost, "ann", &label).await, 404);
    let item = json(send(&app, get(&format!("/v1/review/items/{}", a["id"]))).await).await;
    assert!(item["verdicts"].as_array().unwrap().is_empty(), "{item}");

    // Ann agrees with the model; Bob overturns it.
    assert_eq!(verdict(&app, &a, "ann", &label).await, 200);
    let other = LABELS
        .iter()
        .find(|l| **l != b["label"].as_str().unwrap())
        .unwrap();
    assert_eq!(verdict(&app, &b, "bob", other).await, 200);
    // A second verdict under a spent claim is stale.
    assert_eq!(verdict(&app, &a, "ann", &label).await, 409);

    let perf = json(send(&app, get("/v1/models/weldnet/performance")).await).await;
    let v1 = &perf["versions"]["1"];
    assert_eq!(v1["realised"]["verdicts"], 2, "{perf}");
    assert_eq!(v1["realised"]["accuracy"], 0.5, "{perf}");
    // The estimate covers every logged prediction (the log flushes within 20 ms).
    let mut estimated = 0;
    for _ in 0..100 {
        let perf = json(send(&app, get("/v1/models/weldnet/performance")).await).await;
        estimated = perf["versions"]["1"]["estimated"]["predictions"]
            .as_u64()
            .unwrap_or(0);
        if estimated == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(estimated, 4);

    let text = state.infer().metrics().render();
    let mv = [("model", "weldnet"), ("version", "1")];
    let agree = [mv[0], mv[1], ("source", "queue"), ("agreement", "agree")];
    assert_eq!(sample(&text, "vigil_review_verdicts_total", &agree), 1.0);
    let over = [mv[0], mv[1], ("source", "queue"), ("agreement", "overturn")];
    assert_eq!(sample(&text, "vigil_review_verdicts_total", &over), 1.0);
    assert_eq!(sample(&text, "vigil_review_realised_accuracy", &mv), 0.5);
    assert_eq!(
        sample(&text, "vigil_review_queue_items", &[("state", "done")]),
        2.0
    );

    // Feedback: an unknown request id is 404, an unknown label 400, a good one 201.
    let fb = |id: &str, label: &str| {
        post_json(
            "/v1/feedback",
            serde_json::json!({"request_id": id, "label": label, "inspector": "line-mes"}),
        )
    };
    assert_eq!(send(&app, fb("no-such", &label)).await.status(), 404);
    assert_eq!(
        send(&app, fb("tile-3", &label)).await.status(),
        404,
        "the client's id"
    );
    assert_eq!(send(&app, fb(&ids[3], "rust")).await.status(), 400);
    let r = send(&app, fb(&ids[3], &predicted[3])).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let outcome = json(r).await;
    assert_eq!(outcome["verdict"]["source"], "feedback");
    assert_eq!(outcome["item"]["state"], "done");
    state.infer().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overturning_verdict_waits_for_a_second_inspector() {
    let dir = tempfile::tempdir().unwrap();
    let (state, app) = reviewing(dir.path(), 1.0, SecondOpinion::WhenOverturned).await;
    let body = predict(&app, "film-1").await;
    queue_of(&app, 1).await;
    let other = LABELS
        .iter()
        .find(|l| **l != body["label"].as_str().unwrap())
        .unwrap();
    let a = claim(&app, "ann").await.unwrap();
    assert_eq!(verdict(&app, &a, "ann", other).await, 200);
    let item = json(send(&app, get(&format!("/v1/review/items/{}", a["id"]))).await).await;
    assert_eq!(item["state"], "awaiting_second");
    assert!(
        claim(&app, "ann").await.is_none(),
        "not her own second opinion"
    );
    let b = claim(&app, "bob").await.unwrap();
    assert_eq!(b["id"], a["id"]);
    assert_eq!(verdict(&app, &b, "bob", other).await, 200);
    let item = json(send(&app, get(&format!("/v1/review/items/{}", a["id"]))).await).await;
    assert_eq!(item["state"], "done");
    assert_eq!(item["resolved_label"], *other);
    state.infer().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_reaches_predictions_that_were_never_queued() {
    let dir = tempfile::tempdir().unwrap();
    let (state, app) = reviewing(dir.path(), 0.0, SecondOpinion::Never).await;
    let body = predict(&app, "unflagged-1").await;
    // Feedback joins by the server's id, from the answer (the client's own id is only its
    // correlation id).
    let id = body["request_id"].as_str().unwrap().to_owned();
    assert_ne!(id, "unflagged-1");
    // The prediction is logged within the flush interval.
    for _ in 0..100 {
        if send(&app, get(&format!("/v1/predictions/{id}")))
            .await
            .status()
            == StatusCode::OK
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queued = body["review"].as_array().unwrap();
    if queued.is_empty() {
        let q = json(send(&app, get("/v1/review/queue?state=all")).await).await;
        assert!(q["items"].as_array().unwrap().is_empty(), "{q}");
    }
    let r = send(
        &app,
        post_json(
            "/v1/feedback",
            serde_json::json!({"request_id": id, "label": body["label"],
                "inspector": "line-mes", "comment": "radiographic film re-read"}),
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let perf = json(send(&app, get("/v1/models/weldnet/performance")).await).await;
    assert_eq!(perf["versions"]["1"]["realised"]["verdicts"], 1, "{perf}");
    assert_eq!(perf["versions"]["1"]["realised"]["accuracy"], 1.0);
    state.infer().shutdown().await;
}
