//! Alias moves through the admin API: the new version is loaded and checked beside the old
//! one and swapped in under load without a failed request; refusals change nothing.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt as _;
use vigil_core::types::{AliasName, ModelName, ModelRef};
use vigil_server::HttpLimits;

use crate::common::*;

/// A registry in `dir` holding weldnet 1.0.0 and 2.0.0 (and 3.0.0 whose golden check fails),
/// with `production` on 1.0.0.
pub(crate) async fn registry(dir: &std::path::Path) -> Arc<dyn vigil_store::Registry> {
    let registry = vigil_store::open(&vigil_store::OpenOptions::new(dir.join("data")))
        .await
        .unwrap();
    for (version, broken) in [("1.0.0", false), ("2.0.0", false), ("3.0.0", true)] {
        let out = dir.join(version);
        let bundle = written_bundle(version, &out, broken);
        let files = bundle.verify_files().unwrap();
        registry
            .push(vigil_store::PushRequest {
                manifest: bundle.manifest(),
                manifest_bytes: bundle.manifest_bytes(),
                files: &files,
                signature: None,
                actor: "test",
                reason: "fixture",
            })
            .await
            .unwrap();
    }
    registry
        .set_alias(vigil_store::AliasChange {
            name: &name(),
            alias: &production(),
            version: &"1.0.0".parse().unwrap(),
            actor: "test",
            reason: "first",
        })
        .await
        .unwrap();
    registry
}

fn name() -> ModelName {
    "weldnet".parse().unwrap()
}

fn production() -> AliasName {
    "production".parse().unwrap()
}

async fn production_version(registry: &dyn vigil_store::Registry) -> String {
    let r: ModelRef = "weldnet@production".parse().unwrap();
    registry.resolve(&r).await.unwrap().version.to_string()
}

fn put_alias(alias: &str, body: &serde_json::Value) -> Request<Body> {
    Request::put(format!("/v1/models/weldnet/aliases/{alias}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// A state over `registry` serving its `production` version (1.0.0), and its router.
pub(crate) async fn served_from(
    registry: Arc<dyn vigil_store::Registry>,
) -> (vigil_server::AppState, axum::Router) {
    let state = empty_state(HttpLimits::default()).with_registry(registry.clone());
    let stored = registry
        .fetch(&name(), &"1.0.0".parse().unwrap())
        .await
        .unwrap();
    let bundle = (vigil_server::promote::BundleCheck::basic().0)(&stored).unwrap();
    vigil_server::deploy(&state, bundle).await.unwrap();
    let app = vigil_server::app(state.clone());
    (state, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moving_production_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry(dir.path()).await;
    let (state, app) = served_from(registry.clone()).await;

    // Each task sends requests until it has had 10 answers from 2.0.0 (at most MAX_REQUESTS),
    // so the swap happens while all of them are sending.
    const TASKS: usize = 4;
    const MAX_REQUESTS: usize = 2_000;
    let started = Arc::new(tokio::sync::Barrier::new(TASKS + 1));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let app = app.clone();
        let started = started.clone();
        tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            let mut failures = Vec::new();
            for i in 0..MAX_REQUESTS {
                let req = post("/v1/models/weldnet/predict", "image/png", tile());
                let r = app.clone().oneshot(req).await.unwrap();
                let status = r.status();
                let body = json(r).await;
                if status == StatusCode::OK {
                    versions.push(body["version"].as_str().unwrap().to_owned());
                } else {
                    failures.push(format!("{status}: {body}"));
                }
                if i == 5 {
                    started.wait().await;
                }
                if versions.iter().filter(|v| *v == "2.0.0").count() >= 10 {
                    break;
                }
            }
            (versions, failures)
        }));
    }
    // Move the alias once every task has answered a few requests on 1.0.0.
    started.wait().await;
    let r = send(
        &app,
        put_alias(
            "production",
            &serde_json::json!({"version": "2.0.0", "reason": "better recall", "actor": "ops"}),
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = json(r).await;
    assert_eq!(body["from"], "1.0.0");
    assert_eq!(body["to"], "2.0.0");
    assert_eq!(body["moved"], true);
    assert_eq!(body["deployed"], "2.0.0");

    for t in tasks {
        let (versions, failures) = t.await.unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        assert!(versions[..6].iter().all(|v| v == "1.0.0"), "{versions:?}");
        // Never backwards: once a task saw 2.0.0, it only sees 2.0.0.
        let first_new = versions.iter().position(|v| v == "2.0.0");
        let first_new = first_new.expect("every task is answered by 2.0.0 in the end");
        assert!(
            versions[first_new..].iter().all(|v| v == "2.0.0"),
            "{versions:?}"
        );
    }
    // Every request after the move is answered by 2.0.0.
    let r = send(
        &app,
        post("/v1/models/weldnet/predict", "image/png", tile()),
    )
    .await;
    assert_eq!(json(r).await["version"], "2.0.0");
    let deployed = state.infer().deployments().get(&name()).unwrap();
    assert_eq!(deployed.version().as_str(), "2.0.0");

    assert_eq!(production_version(registry.as_ref()).await, "2.0.0");
    let history = registry
        .alias_history(&name(), Some(&production()))
        .await
        .unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.from.as_ref().unwrap().as_str(), "1.0.0");
    assert_eq!(last.to.as_ref().unwrap().as_str(), "2.0.0");
    assert_eq!(last.reason, "better recall");
    assert_eq!(last.actor, "ops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_moves_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry(dir.path()).await;
    let (state, app) = served_from(registry.clone()).await;
    let events = registry.alias_history(&name(), None).await.unwrap().len();
    let audit = registry.audit_log().await.unwrap().len();

    // A version that does not exist: 404.
    let r = send(
        &app,
        put_alias(
            "production",
            &serde_json::json!({"version": "9.9.9", "reason": "typo"}),
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(json(r).await["kind"], "not_found");

    // A version whose golden cases do not reproduce: refused before the alias moves.
    let r = send(
        &app,
        put_alias(
            "production",
            &serde_json::json!({"version": "3.0.0", "reason": "broken"}),
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body = json(r).await;
    assert_eq!(body["kind"], "invalid", "{body}");

    // An unknown model: 404.
    let r = send(
        &app,
        Request::put("/v1/models/nosuch/aliases/production")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"version": "1.0.0", "reason": "x"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    assert_eq!(production_version(registry.as_ref()).await, "1.0.0");
    assert_eq!(
        registry.alias_history(&name(), None).await.unwrap().len(),
        events
    );
    assert_eq!(registry.audit_log().await.unwrap().len(), audit);
    let deployed = state.infer().deployments().get(&name()).unwrap();
    assert_eq!(deployed.version().as_str(), "1.0.0");

    // Another alias moves in the registry only; the default actor is "api".
    let r = send(
        &app,
        put_alias(
            "staging",
            &serde_json::json!({"version": "2.0.0", "reason": "try it"}),
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = json(r).await;
    assert_eq!(body["deployed"], serde_json::Value::Null);
    let history = registry
        .alias_history(&name(), Some(&"staging".parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(history.last().unwrap().actor, "api");
    let deployed = state.infer().deployments().get(&name()).unwrap();
    assert_eq!(deployed.version().as_str(), "1.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_registry_alias_moves_are_unavailable() {
    let (_state, app) = served(HttpLimits::default()).await;
    let r = send(
        &app,
        put_alias(
            "production",
            &serde_json::json!({"version": "2", "reason": "x"}),
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = json(r).await;
    assert_eq!(body["kind"], "unavailable");
    assert!(
        body["error"].as_str().unwrap().contains("no registry"),
        "{body}"
    );
}
