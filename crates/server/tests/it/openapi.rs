//! `GET /openapi.json`: it parses, documents exactly the routes `app()` registers (the same
//! `routes::table()`), and its schemas match real answers.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use vigil_server::HttpLimits;

use crate::common::*;

/// Every (method, path) the router serves, from the one route table.
fn served_routes() -> BTreeSet<(String, String)> {
    vigil_server::routes::table()
        .iter()
        .map(|r| (r.method.as_openapi().to_owned(), r.path.to_owned()))
        .collect()
}

/// Every (method, path) the document describes.
fn documented_routes(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| methods.contains(&k.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect()
}

/// The schema named `name` under `components.schemas`.
fn schema<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let s = &doc["components"]["schemas"][name];
    assert!(s.is_object(), "no schema {name}");
    s
}

fn strings(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// Every `$ref` in the document resolves.
fn check_refs(doc: &serde_json::Value, v: &serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(r) = map.get("$ref") {
                let pointer = r.as_str().unwrap().strip_prefix('#').unwrap();
                assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
            }
            map.values().for_each(|v| check_refs(doc, v));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| check_refs(doc, v)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route_and_the_real_answers() {
    let (state, app) = served(HttpLimits::default()).await;
    let r = send(&app, get("/openapi.json")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc = json(r).await;
    assert_eq!(doc["openapi"], "3.1.0");
    check_refs(&doc, &doc);

    let served = served_routes();
    let documented = documented_routes(&doc);
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "served but not documented"
    );
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented but not served"
    );
    for (method, path) in &served {
        let op = &doc["paths"][path][method];
        assert!(op["operationId"].is_string(), "{method} {path}");
        let ok = op["responses"]
            .as_object()
            // 2xx, or 303: where a form post succeeds by sending the browser on.
            .is_some_and(|r| r.keys().any(|code| code.starts_with('2') || code == "303"));
        assert!(ok, "{method} {path} documents no success answer");
        // Every path parameter is declared.
        for param in path.split('/').filter_map(|s| s.strip_prefix('{')) {
            let param = param.trim_end_matches('}');
            let declared = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == param && p["in"] == "path");
            assert!(declared, "{method} {path}: {{{param}}} undeclared");
        }
    }
    // Who may call each route is documented as the route table guards it.
    for r in vigil_server::routes::table() {
        let op = &doc["paths"][r.path][r.method.as_openapi()];
        assert_eq!(
            op["x-vigil-access"],
            r.access.as_str(),
            "{} {}",
            r.method.as_openapi(),
            r.path
        );
    }

    // The native predict takes images and multipart forms.
    let predict = &doc["paths"]["/v1/models/{name}/predict"]["post"];
    let content = predict["requestBody"]["content"].as_object().unwrap();
    for t in [
        "image/png",
        "application/octet-stream",
        "multipart/form-data",
    ] {
        assert!(content.contains_key(t), "predict takes {t}");
    }
    for code in ["400", "404", "413", "415", "429"] {
        assert_eq!(
            predict["responses"][code]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error",
            "{code}"
        );
    }

    // The error body: its kinds are the shared vocabulary's, and a real one fits it.
    let error = schema(&doc, "Error");
    let kinds = strings(&error["properties"]["kind"]["enum"]);
    let expected: BTreeSet<String> = [
        vigil_core::ErrorKind::NotFound,
        vigil_core::ErrorKind::Invalid,
        vigil_core::ErrorKind::Conflict,
        vigil_core::ErrorKind::Overloaded,
        vigil_core::ErrorKind::Unavailable,
        vigil_core::ErrorKind::Unauthenticated,
        vigil_core::ErrorKind::Forbidden,
        vigil_core::ErrorKind::Internal,
    ]
    .iter()
    .map(|k| k.as_str().to_owned())
    .collect();
    assert_eq!(kinds, expected);
    let refusal = json(send(&app, get("/no/such/route")).await).await;
    fits(&doc, "Error", &refusal);

    // The native answer: a real one has every required field and nothing undocumented.
    let answer = json(
        send(
            &app,
            post("/v1/models/weldnet/predict", "image/png", tile()),
        )
        .await,
    )
    .await;
    fits(&doc, "PredictResponse", &answer);
    assert_eq!(
        schema(&doc, "PredictResponse")["additionalProperties"],
        false
    );
    let multi = schema(&doc, "MultiPredictResponse");
    assert_eq!(
        multi["properties"]["results"]["maxItems"],
        vigil_server::routes::multipart::MAX_PARTS
    );
    state.infer().shutdown().await;
}

/// `value` has every field `name` requires and only fields it lists.
fn fits(doc: &serde_json::Value, name: &str, value: &serde_json::Value) {
    let s = schema(doc, name);
    let properties: BTreeSet<String> = s["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let fields: BTreeSet<String> = value.as_object().unwrap().keys().cloned().collect();
    for required in strings(&s["required"]) {
        assert!(
            fields.contains(&required),
            "{name}: {required} missing in {value}"
        );
    }
    assert!(
        fields.is_subset(&properties),
        "{name}: undocumented fields in {value}"
    );
}
