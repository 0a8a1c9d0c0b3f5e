//! Alerts end to end: `vigil serve` with a rule that fires on live traffic posts one
//! notification to a real local webhook, shows it on `GET /v1/alerts` and keeps it for
//! `vigil alerts list`; `vigil alerts export-prometheus` writes the rules for Prometheus; a
//! bad rule stops `vigil serve` at start with the configuration exit code.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::http::{http, start_with, stop};

type Received = Arc<Mutex<Vec<serde_json::Value>>>;

/// A JSON webhook on 127.0.0.1: answers 200 to every POST and keeps its body.
fn webhook() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Received = Arc::default();
    let sink = Arc::clone(&got);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let mut reader = BufReader::new(conn);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            sink.lock().unwrap().push(json);
            let mut conn = reader.into_inner();
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (format!("http://{addr}/hook"), got)
}

#[test]
fn a_rule_on_live_traffic_fires_once_to_the_webhook_and_is_kept() {
    let env = Env::new();
    let (url, received) = webhook();
    let config = env.path("vigil.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[alerts]
interval = "200ms"

[[alerts.rules]]
name = "weldnet_traffic_seen"
signal = "mean_confidence"
comparison = ">="
threshold = 0.0
window = "1m"
severity = "info"
description = "Fires on the first prediction."

[[alerts.webhooks]]
url = "{url}"
format = "json"
"#
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (server, addr) = start_with(&env, &[("VIGIL_CONFIG", config)]);
    let log = || std::fs::read_to_string(env.path("serve.log")).unwrap_or_default();

    let deadline = Instant::now() + Duration::from_secs(60);
    while http(&addr, "GET", "/readyz", "text/plain", b"").0 != 200 {
        assert!(Instant::now() < deadline, "never ready\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // No traffic yet: nothing fires.
    std::thread::sleep(Duration::from_millis(500));
    assert!(received.lock().unwrap().is_empty(), "{:?}", received);

    for tile in [
        "RRT-106R_x0064_y0227.png",
        "RRT-106R_x0000_y0035.png",
        "RRT-106R_x0128_y0227.png",
    ] {
        let png = std::fs::read(testdata().join("weld").join(tile)).unwrap();
        let (status, body) = http(
            &addr,
            "POST",
            "/v1/models/weldnet/predict",
            "image/png",
            &png,
        );
        assert_eq!(status, 200, "{body}");
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    while received.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the webhook got nothing\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Several more ticks: a firing alert notifies once, not every tick.
    std::thread::sleep(Duration::from_millis(1000));
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:#?}");
    let n = &got[0];
    assert_eq!(n["rule"], "weldnet_traffic_seen");
    assert_eq!(n["model"], "weldnet");
    assert_eq!(n["state"], "firing");
    assert_eq!(n["severity"], "info");
    let value = n["value"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&value), "{n}");

    let (status, body) = http(&addr, "GET", "/v1/alerts?limit=10", "text/plain", b"");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["enabled"], true, "{v:#}");
    let active = v["active"].as_array().unwrap();
    assert_eq!(active.len(), 1, "{v:#}");
    assert_eq!(active[0]["rule"], "weldnet_traffic_seen");
    assert_eq!(active[0]["status"], "firing");
    assert_eq!(v["recent"][0]["state"], "firing", "{v:#}");
    assert_eq!(v["deliveries"]["delivered"], 1, "{v:#}");
    let history = v["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{v:#}");
    assert_eq!(history[0]["rule"], "weldnet_traffic_seen");
    assert_eq!(history[0]["model"], "weldnet");
    assert_eq!(history[0]["state"], "firing");
    assert_eq!(history[0]["details"]["state"], "firing");
    let (status, _) = http(&addr, "GET", "/v1/alerts?limit=0", "text/plain", b"");
    assert_eq!(status, 400);

    stop(server, &env);

    // After shutdown, from the same data directory.
    let listed = env.run(&["alerts", "list"]).ok();
    assert!(
        listed.stdout.starts_with("AT"),
        "a table with a header: {}",
        listed.stdout
    );
    let row = listed
        .stdout
        .lines()
        .find(|l| l.contains("weldnet_traffic_seen"))
        .unwrap_or_else(|| panic!("no row: {}", listed.stdout));
    assert!(row.contains("firing") && row.contains("weldnet"), "{row}");
    let json = env.run(&["alerts", "list", "--json", "--limit", "5"]).ok();
    let rows: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows:#}");
    assert_eq!(rows[0]["state"], "firing");
}

fn two_rules(env: &Env) -> String {
    let path = env.path("rules.toml");
    std::fs::write(
        &path,
        r#"
[[alerts.rules]]
name = "weldnet_ood_high"
signal = "ood_share"
model = "weldnet"
comparison = ">"
threshold = 0.05
window = "15m"
for = "5m"
severity = "critical"
description = "Films unlike the training set."

[[alerts.rules]]
name = "latency_p99_slow"
signal = "latency_p99_seconds"
comparison = ">"
threshold = 0.5
"#,
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn export_prometheus_writes_both_rules_for_promtool() {
    let env = Env::new();
    let config = two_rules(&env);
    let out = env
        .run(&["--config", &config, "alerts", "export-prometheus"])
        .ok();
    for name in ["weldnet_ood_high", "latency_p99_slow"] {
        assert!(out.stdout.contains(name), "{name}: {}", out.stdout);
    }
    assert!(out.stdout.contains("groups:"), "{}", out.stdout);

    let file = env.path("vigil-rules.yml");
    env.run(&[
        "--config",
        &config,
        "alerts",
        "export-prometheus",
        "--out",
        file.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), out.stdout);

    // promtool, when installed, accepts the file.
    match std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
    {
        Ok(o) => assert!(
            o.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("promtool not run ({e}); skipping that check"),
    }
}

#[test]
fn a_bad_rule_is_a_configuration_error() {
    let env = Env::new();
    let path = env.path("bad.toml");
    std::fs::write(
        &path,
        r#"
[[alerts.rules]]
name = "ood_high"
signal = "ood_share"
comparison = ">"
threshold = 5
"#,
    )
    .unwrap();
    let config = path.to_str().unwrap();
    env.run(&["--config", config, "serve", "--port", "0"])
        .code(5)
        .says("ood_high");
    env.run(&["--config", config, "alerts", "export-prometheus"])
        .code(5)
        .says("0.05");
    // An empty history is said in words.
    env.run(&["alerts", "list"])
        .ok()
        .says("no alert notifications");
}
