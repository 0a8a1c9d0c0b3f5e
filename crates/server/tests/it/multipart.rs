//! The native predict with several images as `multipart/form-data`.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use vigil_runtime::metrics;
use vigil_server::HttpLimits;
use vigil_server::routes::multipart::MAX_PARTS;

use crate::common::*;

const BOUNDARY: &str = "vigil-test-boundary-7MA4YWxkTrZu0gW";

/// One part: its file name, its content type (none: no header) and its bytes.
type Part<'a> = (&'a str, Option<&'a str>, Bytes);

/// A `multipart/form-data` body with one `image` field per part.
fn form(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for (file, content_type, bytes) in parts {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{file}\"\r\n"
            )
            .as_bytes(),
        );
        if let Some(t) = content_type {
            body.extend_from_slice(format!("Content-Type: {t}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn form_request(uri: &str, body: Vec<u8>) -> Request<Body> {
    Request::post(uri)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header("x-request-id", "strip-9")
        .body(Body::from(body))
        .unwrap()
}

fn weld(file: &str) -> Bytes {
    Bytes::from(std::fs::read(testdata().join("weld").join(file)).unwrap())
}

/// The single-image answer for `image`.
async fn single(app: &axum::Router, image: Bytes) -> serde_json::Value {
    let r = send(app, post("/v1/models/weldnet/predict", "image/png", image)).await;
    assert_eq!(r.status(), StatusCode::OK);
    json(r).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_real_tiles_in_one_request_give_two_results_in_order() {
    let (state, app) = served(HttpLimits::default()).await;
    let (a, b) = (
        weld("RRT-106R_x0000_y0035.png"),
        weld("RRT-106R_x0192_y0227.png"),
    );
    let body = form(&[
        ("a.png", Some("image/png"), a.clone()),
        // No content type: taken as octet-stream and sniffed.
        ("b.png", None, b.clone()),
    ]);
    for uri in [
        "/v1/models/weldnet/predict",
        "/v1/models/weldnet/versions/1/predict",
    ] {
        let r = send(&app, form_request(uri, body.clone())).await;
        assert_eq!(r.status(), StatusCode::OK, "{uri}");
        assert_eq!(r.headers()["x-correlation-id"], "strip-9");
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        let answer = json(r).await;
        assert_eq!(answer["request_id"], id.as_str());
        let results = answer["results"].as_array().unwrap();
        assert_eq!(results.len(), 2, "{answer}");
        for (i, (result, image)) in results.iter().zip([&a, &b]).enumerate() {
            let alone = single(&app, image.clone()).await;
            // Each part is its own prediction in the log: `<request id>.<part>`.
            assert_eq!(result["request_id"], format!("{id}.{i}"));
            assert_eq!(result["model"], "weldnet");
            assert_eq!(result["version"], "1");
            assert_eq!(result["label"], alone["label"], "{result} vs {alone}");
            for (label, p) in alone["probabilities"].as_object().unwrap() {
                let q = result["probabilities"][label].as_f64().unwrap();
                assert!(
                    (q - p.as_f64().unwrap()).abs() < 1e-5,
                    "{label}: {q} vs {p}"
                );
            }
            // The same shape as the single-image answer.
            let keys = |v: &serde_json::Value| {
                let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
                k.sort();
                k
            };
            assert_eq!(keys(result), keys(&alone));
        }
        assert_ne!(
            results[0]["probabilities"], results[1]["probabilities"],
            "two different tiles, in order"
        );
    }
    state.infer().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_part_gets_its_own_error_and_the_others_succeed() {
    let (state, app) = served(HttpLimits::default()).await;
    let body = form(&[
        ("good-1.png", Some("image/png"), tile()),
        (
            "broken.png",
            Some("image/png"),
            Bytes::from_static(b"\x89PNG but not really"),
        ),
        (
            "notes.txt",
            Some("text/plain"),
            Bytes::from_static(b"hello"),
        ),
        (
            "good-2.png",
            Some("application/octet-stream"),
            weld("RRT-106R_x0128_y0227.png"),
        ),
    ]);
    let r = send(&app, form_request("/v1/models/weldnet/predict", body)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let answer = json(r).await;
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{answer}");
    assert!(results[0]["label"].is_string(), "{answer}");
    assert!(results[3]["label"].is_string(), "{answer}");
    assert_eq!(results[1]["kind"], "invalid", "{answer}");
    assert!(
        results[1]["error"]
            .as_str()
            .unwrap()
            .contains("cannot decode"),
        "{answer}"
    );
    assert!(results[1].get("label").is_none());
    assert_eq!(results[2]["kind"], "invalid");
    let why = results[2]["error"].as_str().unwrap();
    assert!(
        why.contains("text/plain") && why.contains("notes.txt"),
        "{why}"
    );

    // Each part is a request of the model: two successes, one undecodable; the part refused
    // for its content type never reached the runtime.
    let text = state.infer().metrics().render();
    let count = |outcome| {
        sample(
            &text,
            metrics::INFER_REQUESTS_TOTAL,
            &[("outcome", outcome)],
        )
    };
    assert_eq!(count("success"), 2.0, "{text}");
    assert_eq!(count("invalid"), 1.0, "{text}");
    state.infer().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_parts_an_oversized_form_and_malformed_forms_are_refused() {
    let limits = HttpLimits {
        max_body_bytes: 256 * 1024,
        ..HttpLimits::default()
    };
    let (state, app) = served(limits).await;
    let uri = "/v1/models/weldnet/predict";

    let small = Bytes::from_static(b"x");
    let parts: Vec<Part<'_>> = (0..=MAX_PARTS)
        .map(|_| ("x.png", Some("image/png"), small.clone()))
        .collect();
    let r = send(&app, form_request(uri, form(&parts))).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = json(r).await;
    assert_eq!(body["kind"], "invalid");
    assert_eq!(body["request_id"], id.as_str());
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(&MAX_PARTS.to_string()),
        "{body}"
    );

    // The body limit covers the whole form.
    let big = Bytes::from(vec![0u8; limits.max_body_bytes / 2]);
    let parts = [
        ("a.png", Some("image/png"), big.clone()),
        ("b.png", Some("image/png"), big.clone()),
        ("c.png", Some("image/png"), big),
    ];
    let r = send(&app, form_request(uri, form(&parts))).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json(r).await["kind"], "invalid");

    // No parts, a form that never ends, no boundary: 400 with a JSON body, no panic.
    let malformed = [
        format!("--{BOUNDARY}--\r\n").into_bytes(),
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nabc")
            .into_bytes(),
        b"not a form at all".to_vec(),
    ];
    for body in malformed {
        let r = send(&app, form_request(uri, body)).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(json(r).await["kind"], "invalid");
    }
    let r = send(
        &app,
        post(uri, "multipart/form-data", form(&[("a.png", None, tile())])),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "no boundary");
    assert_eq!(json(r).await["kind"], "invalid");

    // A model that is not deployed is refused before its parts are read.
    let r = send(
        &app,
        form_request(
            "/v1/models/nosuch/predict",
            form(&[("a.png", None, tile())]),
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let text = state.infer().metrics().render();
    assert_eq!(
        sample(&text, metrics::INFER_REQUESTS_TOTAL, &[]),
        0.0,
        "nothing refused here reached the runtime: {text}"
    );
    state.infer().shutdown().await;
}
