//! The server's integration tests: the router driven in process with
//! `tower::ServiceExt::oneshot` (no sockets) over a runtime that serves the real weld model
//! on ONNX Runtime. Every refusal is checked for its status and its JSON body.
#![allow(clippy::unwrap_used)]

mod alerts;
mod auth;
mod browser;
mod common;
mod connections;
mod logs;
mod metrics_format;
mod multipart;
mod openapi;
mod promote;
mod review;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use vigil_engine::preprocess::{Limits, Pipeline};
use vigil_runtime::metrics;
use vigil_server::HttpLimits;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_on_a_real_tile_answers_with_probabilities_and_the_request_id() {
    let (state, app) = served(HttpLimits::default()).await;
    let req = Request::post("/v1/models/weldnet/predict")
        .header("content-type", "image/png")
        .header("x-request-id", "film-7-tile-3")
        .body(Body::from(tile()))
        .unwrap();
    let r = send(&app, req).await;
    assert_eq!(r.status(), StatusCode::OK);
    // The id is the server's (a client's x-request-id used to become the log's key); the
    // client's id comes back as the correlation id.
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(r.headers()["x-correlation-id"], "film-7-tile-3");
    for h in [
        "x-vigil-preprocess-ms",
        "x-vigil-queue-ms",
        "x-vigil-inference-ms",
        "x-vigil-total-ms",
    ] {
        let v: f64 = r.headers()[h].to_str().unwrap().parse().unwrap();
        assert!(v >= 0.0, "{h}");
    }
    let body = json(r).await;
    assert_eq!(body["request_id"], id.as_str());
    assert_eq!(body["model"], "weldnet");
    assert_eq!(body["version"], "1");
    let probs = body["probabilities"].as_object().unwrap();
    assert_eq!(probs.len(), 4);
    let sum: f64 = probs.values().map(|p| p.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-4, "probabilities sum to {sum}");
    let label = body["label"].as_str().unwrap();
    assert!(LABELS.contains(&label), "{label}");
    let top = probs
        .iter()
        .max_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap()))
        .unwrap();
    assert_eq!(top.0, label, "argmax decides");
    assert!(body["flags"].is_array());
    assert!(body["timings"]["total"].as_f64().unwrap() >= 0.0);
    assert!(body.get("tiles").is_none(), "a single tile has no tile map");

    // The request moved the metrics.
    let r = send(&app, get("/metrics")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(bytes(r).await.to_vec()).unwrap();
    let success = [
        ("model", "weldnet"),
        ("version", "1"),
        ("outcome", "success"),
    ];
    assert_eq!(
        sample(&text, metrics::INFER_REQUESTS_TOTAL, &success),
        1.0,
        "{text}"
    );
    state.infer().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_request_id_is_echoed_in_the_header_and_the_error_body() {
    let (state, app) = served(HttpLimits::default()).await;
    let r = send(&app, post("/v1/models/nosuch/predict", "image/png", tile())).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let body = json(r).await;
    assert_eq!(body["kind"], "not_found");
    assert_eq!(body["request_id"], id.as_str());
    assert!(body["error"].as_str().unwrap().contains("nosuch"), "{body}");
    state.infer().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_deployed_version_is_served_by_version() {
    let (state, app) = served(HttpLimits::default()).await;
    let ok = send(
        &app,
        post("/v1/models/weldnet/versions/1/predict", "image/png", tile()),
    )
    .await;
    assert_eq!(ok.status(), StatusCode::OK);
    let r = send(
        &app,
        post("/v1/models/weldnet/versions/2/predict", "image/png", tile()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body = json(r).await;
    assert_eq!(body["kind"], "not_found");
    assert!(
        body["error"].as_str().unwrap().contains("version 2"),
        "{body}"
    );
    state.infer().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_with_the_right_status() {
    let limits = HttpLimits {
        max_body_bytes: 64 * 1024,
        ..HttpLimits::default()
    };
    let (state, app) = served(limits).await;

    let r = send(
        &app,
        post("/v1/models/weldnet/predict", "text/plain", tile()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body = json(r).await;
    assert_eq!(body["kind"], "invalid");
    assert!(
        body["error"].as_str().unwrap().contains("text/plain"),
        "{body}"
    );

    let r = send(
        &app,
        post(
            "/v1/models/weldnet/predict",
            "image/png",
            &b"not an image at all"[..],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body = json(r).await;
    assert_eq!(body["kind"], "invalid");
    assert!(
        body["error"].as_str().unwrap().contains("cannot decode"),
        "{body}"
    );

    let big = vec![0u8; limits.max_body_bytes + 1];
    let r = send(&app, post("/v1/models/weldnet/predict", "image/png", big)).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = json(r).await;
    assert_eq!(body["kind"], "invalid");
    assert!(body["request_id"].is_string());

    let r = send(&app, get("/no/such/route")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(json(r).await["kind"], "not_found");

    // Refusals before admission are not requests of the model; the undecodable one is.
    let text = state.infer().metrics().render();
    assert_eq!(
        sample(
            &text,
            metrics::INFER_REQUESTS_TOTAL,
            &[("outcome", "success")]
        ),
        0.0
    );
    state.infer().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_deployment() {
    let state = empty_state(HttpLimits::default());
    let app = vigil_server::app(state.clone());
    assert_eq!(send(&app, get("/healthz")).await.status(), StatusCode::OK);
    let r = send(&app, get("/readyz")).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = json(r).await;
    assert!(
        body["reason"].as_str().unwrap().contains("production"),
        "{body}"
    );
    assert_eq!(
        send(&app, get("/v2/health/ready")).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    vigil_server::deploy(&state, bundle("1")).await.unwrap();
    let r = send(&app, get("/readyz")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(json(r).await["models"]["weldnet"], "ready");
    assert_eq!(
        send(&app, get("/v2/health/ready")).await.status(),
        StatusCode::OK
    );
    let models = json(send(&app, get("/v1/models")).await).await;
    assert_eq!(models["models"][0]["name"], "weldnet");
    assert_eq!(models["models"][0]["version"], "1");
    assert_eq!(models["models"][0]["bundle"].as_str().unwrap().len(), 64);

    state.infer().shutdown().await;
    let r = send(&app, get("/readyz")).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_metadata_comes_from_the_manifest() {
    let (state, app) = served(HttpLimits::default()).await;
    let m = manifest("1");
    assert_eq!(
        send(&app, get("/v2/health/live")).await.status(),
        StatusCode::OK
    );
    assert_eq!(json(send(&app, get("/v2")).await).await["name"], "vigil");
    for uri in ["/v2/models/weldnet", "/v2/models/weldnet/versions/1"] {
        let r = send(&app, get(uri)).await;
        assert_eq!(r.status(), StatusCode::OK, "{uri}");
        let body = json(r).await;
        assert_eq!(body["name"], "weldnet");
        assert_eq!(body["versions"], serde_json::json!(["1"]));
        let input = &body["inputs"][0];
        assert_eq!(input["name"], m.image_input().name.as_str());
        assert_eq!(input["datatype"], "FP32");
        assert_eq!(input["shape"], serde_json::json!(m.image_input().shape));
        assert_eq!(body["outputs"].as_array().unwrap().len(), m.outputs.len());
    }
    assert_eq!(
        send(&app, get("/v2/models/weldnet/versions/9"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&app, get("/v2/models/weldnet/ready")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get("/v2/models/other/ready")).await.status(),
        StatusCode::NOT_FOUND
    );
    state.infer().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_infer_on_a_tensor_matches_the_native_predict_of_the_image() {
    let (state, app) = served(HttpLimits::default()).await;
    let m = manifest("1");
    let png = tile();
    let native = json(
        send(
            &app,
            post("/v1/models/weldnet/predict", "image/png", png.clone()),
        )
        .await,
    )
    .await;

    let t = Pipeline::new(&m, Limits::default()).run(&png).unwrap();
    let request = serde_json::json!({
        "id": "t-1",
        "inputs": [{
            "name": m.image_input().name,
            "shape": t.shape,
            "datatype": "FP32",
            "data": t.data,
        }],
        "outputs": [{ "name": m.roles.probabilities }],
    });
    let r = send(
        &app,
        post(
            "/v2/models/weldnet/infer",
            "application/json",
            request.to_string(),
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = json(r).await;
    assert_eq!(body["model_name"], "weldnet");
    assert_eq!(body["model_version"], "1");
    assert_eq!(body["id"], "t-1");
    let outputs = body["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1, "only the output asked for");
    let out = &outputs[0];
    assert_eq!(out["datatype"], "FP32");
    assert_eq!(out["shape"], serde_json::json!([1, 4]));
    for (i, label) in m.model.labels.iter().enumerate() {
        let v2 = out["data"][i].as_f64().unwrap();
        let v1 = native["probabilities"][label.as_str()].as_f64().unwrap();
        assert!((v1 - v2).abs() < 1e-6, "{label}: {v1} vs {v2}");
    }

    // A tensor of the wrong shape, of the wrong type, or not matching its data: 400.
    let mut wrong_shape = t.shape;
    wrong_shape[2] /= 2;
    wrong_shape[3] *= 2;
    let bad = [
        serde_json::json!({"inputs": [{"name": m.image_input().name, "shape": wrong_shape,
            "datatype": "FP32", "data": t.data}]}),
        serde_json::json!({"inputs": [{"name": m.image_input().name, "shape": t.shape,
            "datatype": "INT64", "data": t.data}]}),
        serde_json::json!({"inputs": [{"name": m.image_input().name, "shape": [1, 1, 2, 2],
            "datatype": "FP32", "data": [1.0]}]}),
        serde_json::json!({"inputs": []}),
    ];
    for b in bad {
        let r = send(
            &app,
            post(
                "/v2/models/weldnet/infer",
                "application/json",
                b.to_string(),
            ),
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body = json(r).await;
        assert_eq!(body["kind"], "invalid", "{body}");
    }
    let r = send(
        &app,
        post("/v2/models/weldnet/infer", "application/json", "{not json"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Triton-style statistics count both successful requests (native and v2).
    let stats = json(send(&app, get("/v2/models/weldnet/stats")).await).await;
    let model = &stats["model_stats"][0];
    assert_eq!(model["version"], "1");
    assert_eq!(model["inference_count"], 2, "{stats}");
    assert_eq!(model["inference_stats"]["success"]["count"], 2, "{stats}");
    assert!(model["execution_count"].as_u64().unwrap() >= 1);
    state.infer().shutdown().await;
}

/// A body in the binary tensor extension: the JSON header, then `binary`.
fn binary_request(uri: &str, header: &serde_json::Value, binary: &[u8]) -> Request<Body> {
    let json = header.to_string();
    let mut body = json.clone().into_bytes();
    body.extend_from_slice(binary);
    Request::post(uri)
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", json.len())
        .body(Body::from(body))
        .unwrap()
}

/// Splits a binary-extension answer into its JSON header and the binary part.
async fn binary_answer(r: axum::http::Response<Body>) -> (serde_json::Value, Vec<u8>) {
    let n: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let all = bytes(r).await;
    (
        serde_json::from_slice(&all[..n]).unwrap(),
        all[n..].to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_infer_takes_encoded_images_and_binary_tensors_through_the_binary_extension() {
    let (state, app) = served(HttpLimits::default()).await;
    let m = manifest("1");
    let png = tile();
    let native = json(
        send(
            &app,
            post("/v1/models/weldnet/predict", "image/png", png.clone()),
        )
        .await,
    )
    .await;
    let expected: Vec<f64> = m
        .model
        .labels
        .iter()
        .map(|l| native["probabilities"][l.as_str()].as_f64().unwrap())
        .collect();
    let probs = m.roles.probabilities.clone();

    // Two encoded images as BYTES, outputs as JSON.
    let mut binary = Vec::new();
    for _ in 0..2 {
        binary.extend_from_slice(&u32::try_from(png.len()).unwrap().to_le_bytes());
        binary.extend_from_slice(&png);
    }
    let header = serde_json::json!({
        "inputs": [{ "name": m.image_input().name, "shape": [2], "datatype": "BYTES",
            "parameters": { "binary_data_size": binary.len() } }],
        "outputs": [{ "name": probs }],
    });
    let r = send(
        &app,
        binary_request("/v2/models/weldnet/infer", &header, &binary),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = json(r).await;
    let out = &body["outputs"][0];
    assert_eq!(out["shape"], serde_json::json!([2, 4]));
    for row in 0..2 {
        for (i, e) in expected.iter().enumerate() {
            let v = out["data"][row * 4 + i].as_f64().unwrap();
            assert!((v - e).abs() < 1e-6, "row {row} label {i}: {v} vs {e}");
        }
    }

    // The preprocessed tensor as binary FP32, the output asked for in binary.
    let t = Pipeline::new(&m, Limits::default()).run(&png).unwrap();
    let binary: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = serde_json::json!({
        "inputs": [{ "name": m.image_input().name, "shape": t.shape, "datatype": "FP32",
            "parameters": { "binary_data_size": binary.len() } }],
        "outputs": [{ "name": probs, "parameters": { "binary_data": true } }],
    });
    let r = send(
        &app,
        binary_request("/v2/models/weldnet/infer", &header, &binary),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (head, data) = binary_answer(r).await;
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 16);
    let values: Vec<f32> = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for (v, e) in values.iter().zip(&expected) {
        assert!((f64::from(*v) - e).abs() < 1e-6, "{v} vs {e}");
    }

    // Encoded images as JSON strings are refused: JSON is not binary-safe.
    let header = serde_json::json!({
        "inputs": [{ "name": m.image_input().name, "shape": [1], "datatype": "BYTES",
            "data": ["not binary safe"] }],
    });
    let r = send(
        &app,
        post(
            "/v2/models/weldnet/infer",
            "application/json",
            header.to_string(),
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        json(r).await["error"]
            .as_str()
            .unwrap()
            .contains("binary tensor extension")
    );
    state.infer().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_refuses_with_429_and_retry_after() {
    let (state, gate, mut entered) = gated_state().await;
    let app = vigil_server::app(state.clone());
    let first = {
        let app = app.clone();
        tokio::spawn(async move {
            send(
                &app,
                post("/v1/models/weldnet/predict", "image/png", tile()),
            )
            .await
        })
    };
    // The first request is running on the engine, holding the only admission permit.
    assert_eq!(entered.recv().await, Some(1));
    let r = send(
        &app,
        post("/v1/models/weldnet/predict", "image/png", tile()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "1");
    let body = json(r).await;
    assert_eq!(body["kind"], "overloaded");
    assert!(body["request_id"].is_string());

    gate.send(()).unwrap();
    let r = first.await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(json(r).await["label"], "crack");
    let text = state.infer().metrics().render();
    let mv = [("model", "weldnet"), ("version", "1")];
    assert_eq!(
        sample(
            &text,
            metrics::INFER_REQUESTS_TOTAL,
            &[mv[0], mv[1], ("outcome", "success")]
        ),
        1.0
    );
    assert_eq!(
        sample(&text, metrics::NV_INFERENCE_REQUEST_FAILURE, &mv),
        1.0,
        "{text}"
    );
    drop(gate);
    state.infer().shutdown().await;
}

// One unauthenticated request used to abort the process: an FP32 input declaring
// [67108864, 1, 128, 128] with a few bytes of data made the server reserve 4 TiB first. A
// shape whose product overflows panicked in the batch split; NaN gave 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_v2_tensors_are_refused_with_400_and_the_server_keeps_serving() {
    let (_state, app) = served(HttpLimits::default()).await;
    let m = manifest("1");
    let input = m.image_input().name.clone();
    let uri = "/v2/models/weldnet/infer";
    let fp32 = |shape: serde_json::Value, values: &[f32]| {
        let binary: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let header = serde_json::json!({
            "inputs": [{ "name": input, "shape": shape, "datatype": "FP32",
                "parameters": { "binary_data_size": binary.len() } }],
        });
        binary_request(uri, &header, &binary)
    };
    let cases = [
        (
            serde_json::json!([67_108_864, 1, 128, 128]),
            vec![0.0f32; 4],
            "were sent",
        ),
        (
            serde_json::json!([i64::MAX, i64::MAX, 128, 128]),
            vec![0.0; 4],
            "more than can be addressed",
        ),
        (
            serde_json::json!([1, 1, 1, 2]),
            vec![0.5, f32::NAN],
            "finite",
        ),
        (
            serde_json::json!([1, 1, 1, 1]),
            vec![f32::INFINITY],
            "finite",
        ),
    ];
    for (shape, values, says) in cases {
        let r = send(&app, fp32(shape.clone(), &values)).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{shape}");
        let body = json(r).await;
        let msg = body["error"].as_str().unwrap();
        assert!(msg.contains(says) && msg.contains(&input), "{shape}: {msg}");
    }
    // The same through JSON data.
    let header = serde_json::json!({
        "inputs": [{ "name": input, "shape": [67_108_864, 1, 128, 128], "datatype": "FP32",
            "data": [1, 2, 3] }],
    });
    let r = send(&app, post(uri, "application/json", header.to_string())).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Still serving.
    let r = send(
        &app,
        post("/v1/models/weldnet/predict", "image/png", tile()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
}
