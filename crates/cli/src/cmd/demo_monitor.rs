//! The demo's monitoring chapter: `vigil serve` in process on the shipped weld model, the
//! validation tiles streamed to it as a line would send them, then the same tiles as a new
//! detector and a new exposure would make them; the drift windows, out-of-distribution flags
//! and the prediction log are read back through the API and the store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

use super::Context;
use super::serve::{ServeArgs, Stop};
use crate::simulate::Change;

/// The repository's weld validation tiles (GDXray; see data/weld/README.md) with their true
/// labels, when this binary runs from a checkout.
fn validation_tiles() -> Option<Vec<(PathBuf, String)>> {
    let candidates = [
        PathBuf::from("data/weld"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/weld"),
    ];
    let dir = candidates
        .iter()
        .find(|d| d.join("manifest.csv").is_file())?;
    let text = std::fs::read_to_string(dir.join("manifest.csv")).ok()?;
    let tiles: Vec<(PathBuf, String)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(',');
            let (path, label, split) = (f.next()?, f.next()?, f.next()?);
            (split == "val").then(|| (dir.join(path), label.to_owned()))
        })
        .collect();
    (!tiles.is_empty()).then_some(tiles)
}

/// A local webhook receiver (what a plant's alerting endpoint or Slack would be): keeps
/// every JSON body it is sent.
fn webhook_receiver() -> anyhow::Result<(
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
)> {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the head, then the body by Content-Length.
            let body = loop {
                let Ok(n) = stream.read(&mut chunk) else {
                    break None;
                };
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break Some(buf[end + 4..end + 4 + len].to_vec());
                    }
                }
            };
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if let Some(v) = body.and_then(|b| serde_json::from_slice::<Value>(&b).ok()) {
                sink.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(v);
            }
        }
    });
    Ok((addr, got))
}

/// Prints the webhook notifications received since `seen`.
fn print_alerts(got: &std::sync::Mutex<Vec<Value>>, seen: &mut usize) {
    let all = got
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for n in all.iter().skip(*seen) {
        println!(
            "   ALERT {} ({}) to the webhook: {}",
            n["state"].as_str().unwrap_or("?").to_uppercase(),
            n["severity"].as_str().unwrap_or("?"),
            n["message"].as_str().unwrap_or("")
        );
    }
    *seen = all.len();
}

/// What one phase of traffic showed.
struct Phase {
    sent: usize,
    flagged_ood: Vec<String>,
    /// The server's request id of each tile, in order.
    ids: Vec<String>,
}

/// Sends each tile (changed by `change`) to the server, its correlation id (`x-request-id`)
/// prefixed by `phase`; the server answers with its own request id.
fn stream(
    agent: &ureq::Agent,
    base: &str,
    tiles: &[Vec<u8>],
    change: Option<Change>,
    phase: &str,
) -> anyhow::Result<Phase> {
    let mut flagged_ood = Vec::new();
    let mut ids = Vec::with_capacity(tiles.len());
    for (i, t) in tiles.iter().enumerate() {
        let body = match change {
            Some(c) => crate::simulate::apply(t, c, i as u64)?,
            None => t.clone(),
        };
        let id = format!("{phase}-{i:04}");
        let answer: Value = agent
            .post(&format!("{base}/v1/models/weldnet/predict"))
            .header("content-type", "image/png")
            .header("x-request-id", &id)
            .send(&body[..])
            .context("the prediction request failed")?
            .body_mut()
            .read_json()?;
        ids.push(
            answer["request_id"]
                .as_str()
                .context("the answer has no request id")?
                .to_owned(),
        );
        if answer["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "out_of_distribution"))
        {
            flagged_ood.push(id);
        }
    }
    Ok(Phase {
        sent: tiles.len(),
        flagged_ood,
        ids,
    })
}

/// Prints the live picture and the latest drift window of the weld model.
fn show(agent: &ureq::Agent, base: &str, phase: &Phase) -> anyhow::Result<bool> {
    let m: Value = agent
        .get(&format!(
            "{base}/v1/models/weldnet/monitoring?window={}",
            phase.sent
        ))
        .call()?
        .body_mut()
        .read_json()?;
    let live = &m["live"];
    let shares: Vec<String> = live["class_shares"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    format!(
                        "{} {:.0}%",
                        p[0].as_str().unwrap_or("?"),
                        p[1].as_f64().unwrap_or(0.0) * 100.0
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    println!(
        "   {} tiles: {}; mean confidence {:.2}; flagged for review {:.0}%; out of distribution {:.0}%",
        phase.sent,
        shares.join(", "),
        live["confidence_mean"].as_f64().unwrap_or(0.0),
        live["flagged_share"].as_f64().unwrap_or(0.0) * 100.0,
        live["ood_share"].as_f64().unwrap_or(0.0) * 100.0,
    );
    let Some(w) = m["latest_drift"].as_object() else {
        println!("   no drift window evaluated yet");
        return Ok(false);
    };
    let r = &w["report"];
    let drift = r["drift"].as_bool().unwrap_or(false);
    println!(
        "   latest drift window ({} images): {}",
        r["images"],
        if drift { "DRIFT" } else { "no drift" }
    );
    println!("   \"{}\"", r["summary"].as_str().unwrap_or(""));
    if drift && let Some(signals) = r["signals"].as_array() {
        for s in signals.iter().filter(|s| s["drifted"] == true).take(5) {
            println!(
                "     {:<24} {:>9.4} over its threshold {:.4}  ({})",
                s["name"].as_str().unwrap_or("?"),
                s["statistic"].as_f64().unwrap_or(0.0),
                s["threshold"].as_f64().unwrap_or(0.0),
                s["description"].as_str().unwrap_or("")
            );
        }
    }
    if !phase.flagged_ood.is_empty() {
        println!(
            "   flagged \"does not resemble the training images\": {} tiles, e.g. {}",
            phase.flagged_ood.len(),
            phase
                .flagged_ood
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(drift)
}

/// Verdicts the demo's simulated inspector gives.
const DEMO_SHIFT: usize = 300;

/// Chapter 11: the review queue the streaming filled, worked by a simulated inspector who
/// gives each tile its true label (the validation manifest's), and what the verdicts say.
fn review(
    agent: &ureq::Agent,
    base: &str,
    truth: &[&str],
    sent: &std::collections::HashMap<String, usize>,
    section: &dyn Fn(&str, &str),
) -> anyhow::Result<()> {
    section(
        "11. Human review: the inspectors' queue (vigil serve: /review, /review/queue)",
        "Unsure predictions, images unlike the training images, images answered while drift was\n\
         firing and a 2% random sample went to the review queue, each with its image. An\n\
         inspector works it at /review (one key per label); here a simulated inspector gives\n\
         every tile its true label. The verdicts are the ground truth that measures the model.",
    );
    let q: Value = agent
        .get(&format!("{base}/v1/review/queue?limit=1"))
        .call()?
        .body_mut()
        .read_json()?;
    let by_flag = &q["summary"]["open_by_flag"];
    println!(
        "   queued: {} items (out of distribution {}, unsure {}, drift {}, QA sample {}); most \
         urgent first",
        q["summary"]["by_state"]["open"],
        by_flag["out_of_distribution"],
        by_flag["review"],
        by_flag["drift"],
        by_flag["qa_sample"],
    );
    let started = std::time::Instant::now();
    let mut done = 0usize;
    // One shift's worth, most urgent first; the rest waits for the next inspector.
    while done < DEMO_SHIFT {
        let mut r = agent
            .post(&format!("{base}/v1/review/claim"))
            .send_json(serde_json::json!({ "inspector": "demo-inspector" }))?;
        if r.status() == 204 {
            break;
        }
        let item: Value = r.body_mut().read_json()?;
        let id = item["request_id"].as_str().unwrap_or("");
        let label = sent
            .get(id)
            .and_then(|&i| truth.get(i))
            .context("a queued request id the demo did not send")?;
        agent
            .post(&format!("{base}/v1/review/items/{}/verdict", item["id"]))
            .send_json(serde_json::json!({
                "token": item["claim"]["token"], "inspector": "demo-inspector",
                "label": label, "time_spent_ms": 1500,
            }))?;
        done += 1;
    }
    let left: Value = agent
        .get(&format!("{base}/v1/review/queue?limit=1"))
        .call()?
        .body_mut()
        .read_json()?;
    println!(
        "   the inspector gave {done} verdicts, most urgent first ({:.1} s through the API); \
         {} items wait for the next shift",
        started.elapsed().as_secs_f64(),
        left["summary"]["by_state"]["open"]
    );
    let p: Value = agent
        .get(&format!("{base}/v1/models/weldnet/performance"))
        .call()?
        .body_mut()
        .read_json()?;
    if let Some(versions) = p["versions"].as_object() {
        for (v, perf) in versions {
            let pct = |x: &Value| {
                x.as_f64()
                    .map_or("-".into(), |a| format!("{:.1}%", a * 100.0))
            };
            println!(
                "   weldnet {v}: realised accuracy {} from {} verdicts; estimated from the \
                 model's own confidence {} over {} predictions",
                pct(&perf["realised"]["accuracy"]),
                perf["realised"]["verdicts"],
                pct(&perf["estimated"]["accuracy"]),
                perf["estimated"]["predictions"],
            );
            println!(
                "     (the most urgent items are the images unlike the training images, most of\n\
                 them from the simulated new detector: exactly where the model goes wrong, and\n\
                 where its own confidence, the estimate, does not know it)"
            );
        }
    }
    println!(
        "   realised accuracy, precision and recall per label are on /metrics \
         (vigil_review_*) and the dashboard (/dashboard)"
    );
    Ok(())
}

/// Runs the monitoring chapter against an in-process `vigil serve`.
pub fn run(ctx: &Context, work: &Path, section: &dyn Fn(&str, &str)) -> anyhow::Result<()> {
    let Some(paths) = validation_tiles() else {
        section(
            "10. Monitoring (skipped)",
            "The weld validation tiles (data/weld in the repository) are not here; run the demo\n\
             from a checkout to see drift detection on real films.",
        );
        return Ok(());
    };
    section(
        "10. Monitoring: drift and out-of-distribution images (vigil serve)",
        "The shipped model carries a reference profile: statistics of its validation films\n\
         (brightness, contrast, sharpness, noise...), its own view of them (embeddings), its\n\
         predictions, and alarm thresholds calibrated so in-distribution windows rarely alarm.\n\
         The server compares every window of live images with it. We stream the 509 validation\n\
         tiles, then the same tiles as a new detector and a new exposure would make them.\n\
         (Its own data folder, so it serves the trained weld model of section 9.)",
    );
    let tiles: Vec<Vec<u8>> = paths
        .iter()
        .map(|(p, _)| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
        .collect::<anyhow::Result<_>>()?;
    let truth: Vec<&str> = paths.iter().map(|(_, l)| l.as_str()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let mut config = ctx.config.clone();
    // A data directory of its own: no registry model has a `production` alias there, so the
    // server serves the trained weld model this build ships (with its reference profile).
    config.store.data_dir = work.join("monitoring");
    config.server.alias_poll_interval = Duration::ZERO;
    config.monitoring.log.flush_interval = Duration::from_millis(200);
    // The demo streams a film's worth of tiles in seconds: evaluate every window the
    // reference asks for, as a line at its real pace would.
    config.monitoring.drift_min_interval = Duration::ZERO;
    let (hook, received) = webhook_receiver()?;
    config.alerts = toml::from_str(&format!(
        r#"
interval = "250ms"
[[rules]]
name = "weld_drift"
signal = "drift"
comparison = ">="
threshold = 1.0
severity = "critical"
description = "The films no longer look like the validation films: check the detector, exposure and digitiser."
[[webhooks]]
url = "http://{hook}/vigil"
format = "json"
"#
    ))
    .context("the demo's alert rule")?;
    let server_ctx = Context {
        config,
        actor: ctx.actor.clone(),
    };
    let result = std::thread::scope(|scope| -> anyhow::Result<()> {
        let server = scope.spawn(|| {
            rt.block_on(super::serve::serve(
                &server_ctx,
                ServeArgs {
                    port: Some(0),
                    bind: Some([127, 0, 0, 1].into()),
                    insecure: false,
                },
                Stop {
                    when: Some(Box::pin(async move {
                        let _ = stop_rx.await;
                    })),
                    listening: Some(addr_tx),
                },
            ))
        });
        let outcome = (|| -> anyhow::Result<()> {
            let addr = addr_rx
                .blocking_recv()
                .context("the server did not start")?;
            let base = format!("http://{addr}");
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into();
            for _ in 0..600 {
                if agent.get(&format!("{base}/readyz")).call().is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            println!(
                "   serving on {base}, with one alert rule (weld_drift: the latest drift window \
                 drifted) and a webhook at http://{hook}/vigil;\n   streaming the validation \
                 tiles (in distribution):"
            );
            let mut seen = 0;
            let p = stream(&agent, &base, &tiles, None, "line")?;
            show(&agent, &base, &p)?;
            // Which tile each answered request was, by the server's request id.
            let mut sent: std::collections::HashMap<String, usize> =
                p.ids.iter().cloned().zip(0..).collect();
            let mut first_changed = None;
            std::thread::sleep(Duration::from_millis(600));
            print_alerts(&received, &mut seen);
            for (change, phase) in [
                (Change::NEW_DETECTOR, "detector"),
                (Change::NEW_EXPOSURE, "exposure"),
            ] {
                println!("\n   now the same tiles through a {}:", change.describe());
                let p = stream(&agent, &base, &tiles, Some(change), phase)?;
                show(&agent, &base, &p)?;
                sent.extend(p.ids.iter().cloned().zip(0..));
                first_changed = first_changed.or_else(|| p.ids.first().cloned());
                std::thread::sleep(Duration::from_millis(600));
                print_alerts(&received, &mut seen);
            }
            // Let the log flush, then read it back.
            std::thread::sleep(Duration::from_millis(600));
            let id = first_changed.context("no tile was sent")?;
            let logged: Value = agent
                .get(&format!("{base}/v1/predictions/{id}"))
                .call()?
                .body_mut()
                .read_json()?;
            println!(
                "\n   every prediction is in the log; the first new-detector tile (request {id}): {} \
                 ({:.2}), flags {}, OOD distance {}, sharpness {:.4}, served by {} {}",
                logged["label"].as_str().unwrap_or("?"),
                logged["confidence"].as_f64().unwrap_or(0.0),
                logged["flags"],
                logged["ood_distance"]
                    .as_f64()
                    .map_or("-".into(), |d| format!("{d:.1}")),
                logged["stats"]["sharpness"].as_f64().unwrap_or(0.0),
                logged["model"].as_str().unwrap_or("?"),
                logged["version"].as_str().unwrap_or("?"),
            );
            let drift: Value = agent
                .get(&format!("{base}/v1/models/weldnet/drift?limit=10000"))
                .call()?
                .body_mut()
                .read_json()?;
            let windows = drift["windows"].as_array().map_or(0, Vec::len);
            let drifted = drift["windows"]
                .as_array()
                .map_or(0, |w| w.iter().filter(|w| w["drift"] == true).count());
            println!(
                "   {windows} drift windows were stored, {drifted} of them drifted \
                 (GET /v1/models/weldnet/drift, and vigil_drift_* on /metrics);\n   alert \
                 history: GET /v1/alerts, `vigil alerts list`; as Prometheus rules: \
                 `vigil alerts export-prometheus`"
            );
            review(&agent, &base, &truth, &sent, section)
        })();
        let _ = stop_tx.send(());
        let served = server
            .join()
            .map_err(|_| anyhow::anyhow!("the server thread panicked"))?;
        outcome?;
        served?;
        Ok(())
    });
    result?;
    let reviewed = work.join("reviewed");
    super::review::run(
        &server_ctx,
        super::review::ReviewCommand::Export {
            out: reviewed.clone(),
            model: None,
            val_share: 0.2,
        },
    )?;
    println!(
        "   the reviewed tiles as a training set: {} (vigil review export; train on it with \
         `vigil train --data {}`)",
        reviewed.display(),
        reviewed.join("manifest.csv").display()
    );
    println!(
        "   to work the rest of the queue yourself: run the demo with --keep DIR, then\n   \
         VIGIL__STORE__DATA_DIR=DIR/monitoring vigil serve, and open \
         http://127.0.0.1:8080/review (and /review/queue, /dashboard)"
    );
    section(
        "12. The drift report (vigil drift report)",
        "One page an engineer can read without knowing what MMD is: the verdict in words, each\n\
         signal against its threshold, reference-against-current plots of every image\n\
         statistic, drift over time, out-of-distribution distances, class shares.",
    );
    let shipped = work.join("weldnet-shipped.tar");
    std::fs::write(&shipped, crate::assets::SHIPPED_WELD_MODEL)?;
    let out = work.join("drift-report.html");
    super::drift::run(
        &server_ctx,
        super::drift::DriftCommand::Report(super::drift::ReportArgs {
            model: None,
            bundle: Some(shipped),
            input: Vec::new(),
            since: Some("1h".into()),
            until: None,
            out: out.clone(),
            title: Some("Weld line: the last hour".into()),
            seed: 0,
        }),
    )?;
    println!(
        "   the page: {} (and its JSON twin beside it)",
        out.display()
    );
    Ok(())
}
