//! Human review end to end on the real binary and the shipped weld model: streaming
//! validation tiles through `vigil serve` fills the queue with exactly the predictions the
//! policy flags (the review band as `vigil score` flags it, plus the QA sample); reviewing
//! every item with the tiles' true labels gives a realised accuracy equal to the one `vigil
//! score` computes from the same labels; `vigil review export` writes them as a training set.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;
use crate::http::stop;
use crate::http::{get, post_json, start_ready};
use crate::prediction_log::predict;

/// The first `n` validation tiles of the repository's weld data: (path, true label).
fn val_tiles(n: usize) -> Vec<(std::path::PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/weld");
    let text = std::fs::read_to_string(root.join("manifest.csv")).unwrap();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split(',').collect();
            (cols[2] == "val").then(|| (root.join(cols[0]), cols[1].to_owned()))
        })
        .step_by(7)
        .take(n)
        .collect()
}

#[test]
fn streamed_tiles_fill_the_queue_and_verdicts_match_vigil_score() {
    let env = Env::new();
    let tiles = val_tiles(40);
    // `vigil score` on the same tiles, with their labels: its accuracy and review flags.
    let mut manifest = String::from("path,label\n");
    for (p, l) in &tiles {
        manifest.push_str(&format!("{},{l}\n", p.display()));
    }
    std::fs::write(env.path("tiles.csv"), manifest).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/weldnet.tar");
    env.run(&[
        "score",
        "--bundle",
        shipped.to_str().unwrap(),
        env.path("tiles.csv").to_str().unwrap(),
        "--out",
        env.path("rows.jsonl").to_str().unwrap(),
    ])
    .ok();
    let rows: BTreeMap<String, serde_json::Value> = std::fs::read_to_string(env.path("rows.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let name = Path::new(v["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (name, v)
        })
        .collect();
    assert_eq!(rows.len(), tiles.len());

    // The QA sample is drawn from the server's (random) request id: half the tiles, so that
    // enough are queued whatever the draw.
    let (server, addr) = start_ready(&env, &[("VIGIL__REVIEW__FLAG__QA_SHARE", "0.5")]);
    let mut queued = BTreeMap::new();
    for (path, truth) in &tiles {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let a = predict(&addr, &name, &std::fs::read(path).unwrap());
        assert_eq!(a.status, 200, "{}", a.body);
        let body = a.json();
        let review: Vec<String> = body["review"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_owned())
            .collect();
        // Served and scored alike: the same label, and the review band flags the same tiles.
        let row = &rows[&name];
        assert_eq!(body["label"], row["label"], "{name}");
        let score_review = row["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "review");
        assert_eq!(review.iter().any(|f| f == "review"), score_review, "{name}");
        if !review.is_empty() {
            queued.insert(a.id.clone(), (name, truth.clone()));
        }
    }
    assert!(
        queued.len() >= 5,
        "{} of {} queued: the QA sample alone should give about half",
        queued.len(),
        tiles.len()
    );
    // Every flagged prediction is in the queue, and nothing else.
    let mut items = Vec::new();
    for _ in 0..200 {
        let (_, q) = get(&addr, "/v1/review/queue?limit=1000");
        items = q["items"].as_array().unwrap().clone();
        if items.len() == queued.len() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let in_queue: Vec<&str> = items
        .iter()
        .map(|i| i["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(in_queue.len(), queued.len());
    assert!(in_queue.iter().all(|id| queued.contains_key(*id)));

    // An inspector works the whole queue with the true labels.
    loop {
        let (status, body) = post_json(
            &addr,
            "/v1/review/claim",
            &serde_json::json!({ "inspector": "ann" }),
        );
        if status == 204 {
            break;
        }
        assert_eq!(status, 200, "{body}");
        let item: serde_json::Value = serde_json::from_str(&body).unwrap();
        let truth = &queued[item["request_id"].as_str().unwrap()].1;
        let (status, body) = post_json(
            &addr,
            &format!("/v1/review/items/{}/verdict", item["id"]),
            &serde_json::json!({ "token": item["claim"]["token"], "inspector": "ann",
                "label": truth }),
        );
        assert_eq!(status, 200, "{body}");
    }
    let right = queued
        .values()
        .filter(|(name, truth)| rows[name.as_str()]["label"] == truth.as_str())
        .count();
    let expected = right as f64 / queued.len() as f64;
    let (_, perf) = get(&addr, "/v1/models/weldnet/performance");
    let realised = &perf["versions"]["1.0.0"]["realised"];
    assert_eq!(realised["verdicts"], queued.len(), "{perf}");
    let got = realised["accuracy"].as_f64().unwrap();
    assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
    let (_, metrics) = crate::http::get_text(&addr, "/metrics");
    assert!(
        metrics.contains("vigil_review_realised_accuracy{model=\"weldnet\",version=\"1.0.0\"}"),
        "{metrics}"
    );
    stop(server, &env);

    // The reviewed tiles as a training set.
    let out = env.path("reviewed");
    env.run(&["review", "export", "--out", out.to_str().unwrap()])
        .ok()
        .says(&format!("{} reviewed image(s)", queued.len()));
    let exported = std::fs::read_to_string(out.join("manifest.csv")).unwrap();
    let lines: Vec<&str> = exported.lines().skip(1).collect();
    assert_eq!(lines.len(), queued.len());
    for l in &lines {
        let cols: Vec<&str> = l.split(',').collect();
        assert!(out.join(cols[0]).is_file(), "{l}");
        assert!(cols[0].starts_with(&format!("{}/", cols[1])), "{l}");
    }
    let labels: Vec<&str> = lines.iter().map(|l| l.split(',').nth(1).unwrap()).collect();
    let mut truths: Vec<&str> = queued.values().map(|(_, t)| t.as_str()).collect();
    let mut labels_sorted = labels.clone();
    labels_sorted.sort_unstable();
    truths.sort_unstable();
    assert_eq!(labels_sorted, truths);
    // A second export into the same folder is refused and changes nothing.
    env.run(&["review", "export", "--out", out.to_str().unwrap()])
        .code(4)
        .says("not empty");
    assert_eq!(
        std::fs::read_to_string(out.join("manifest.csv")).unwrap(),
        exported
    );
}
