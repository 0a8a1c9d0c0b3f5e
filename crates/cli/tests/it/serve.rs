//! `vigil serve` end to end: the real binary on a free port (`--port 0`, never a fixed one)
//! over a data directory with a pushed bundle aliased `production`; readiness, one predict,
//! then SIGTERM and a clean exit; and an alias moved by the CLI while the server runs is
//! picked up by its watcher.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::http::{Server, http, start_with, stop};

#[test]
fn serve_answers_a_predict_and_exits_cleanly_on_sigterm() {
    let env = Env::new();
    env.create("b1", "1.0.0", &[]).ok();
    env.run(&["models", "push", env.path("b1").to_str().unwrap()])
        .ok();
    env.run(&[
        "models",
        "alias",
        "set",
        "weldnet",
        "production",
        "1.0.0",
        "--reason",
        "e2e",
    ])
    .ok();

    let (server, addr) = start(&env);

    let started = Instant::now();
    loop {
        let (status, body) = http(&addr, "GET", "/readyz", "text/plain", b"");
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never ready: {status} {body}\n{}",
            std::fs::read_to_string(env.path("serve.log")).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let png = std::fs::read(testdata().join("weld/RRT-106R_x0064_y0035.png")).unwrap();
    let (status, body) = http(
        &addr,
        "POST",
        "/v1/models/weldnet/predict",
        "image/png",
        &png,
    );
    assert_eq!(status, 200, "{body}");
    // The request id is the server's; the client's x-request-id is only its correlation id.
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["request_id"].as_str().map(str::len), Some(36), "{body}");
    assert!(body.contains("\"version\":\"1.0.0\""), "{body}");

    stop(server, &env);
}

#[test]
fn serve_with_no_model_in_production_starts_and_says_why_it_is_not_ready() {
    let env = Env::new();
    let (server, addr) = start_with(&env, &[("VIGIL__SERVER__SERVE_SHIPPED_MODEL", "false")]);
    let (status, body) = http(&addr, "GET", "/readyz", "text/plain", b"");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("production"), "{body}");
    let (status, _) = http(&addr, "GET", "/healthz", "text/plain", b"");
    assert_eq!(status, 200);
    stop(server, &env);
}

#[test]
fn a_fresh_install_serves_the_shipped_weld_model() {
    let env = Env::new();
    let (server, addr) = start(&env);
    let deadline = Instant::now() + Duration::from_secs(60);
    while http(&addr, "GET", "/readyz", "text/plain", b"").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the shipped model never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let tile = std::fs::read(testdata().join("weld/RRT-106R_x0064_y0227.png")).unwrap();
    let (status, body) = http(
        &addr,
        "POST",
        "/v1/models/weldnet/predict",
        "image/png",
        &tile,
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["model"], "weldnet");
    assert_eq!(v["version"], "1.0.0");
    let p = v["probabilities"]["defect"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p), "{body}");
    stop(server, &env);
}

#[test]
fn serve_follows_a_production_alias_moved_by_the_cli() {
    let env = Env::new();
    for (dir, version) in [("b1", "1.0.0"), ("b2", "2.0.0")] {
        env.create(dir, version, &[]).ok();
        env.run(&["models", "push", env.path(dir).to_str().unwrap()])
            .ok();
    }
    let alias = |version: &str| {
        env.run(&[
            "models",
            "alias",
            "set",
            "weldnet",
            "production",
            version,
            "--reason",
            "e2e",
        ])
        .ok();
    };
    alias("1.0.0");

    let (server, addr) = start_with(
        &env,
        &[
            ("VIGIL__SERVER__ALIAS_POLL_INTERVAL", "200ms"),
            ("VIGIL__LOG__LEVEL", "info"),
        ],
    );
    wait_for_version(&addr, &env, "1.0.0");
    alias("2.0.0");
    wait_for_version(&addr, &env, "2.0.0");
    let png = std::fs::read(testdata().join("weld/RRT-106R_x0064_y0035.png")).unwrap();
    let (status, body) = http(
        &addr,
        "POST",
        "/v1/models/weldnet/predict",
        "image/png",
        &png,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"version\":\"2.0.0\""), "{body}");
    let log = std::fs::read_to_string(env.path("serve.log")).unwrap();
    assert!(log.contains("Deployment swapped."), "{log}");
    stop(server, &env);
}

/// Polls `/v1/models` until weldnet is served at `version` (at most 20 s).
fn wait_for_version(addr: &str, env: &Env, version: &str) {
    let started = Instant::now();
    let needle = format!("\"version\":\"{version}\"");
    loop {
        let (status, body) = http(addr, "GET", "/v1/models", "text/plain", b"");
        if status == 200 && body.contains(&needle) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never served {version}: {status} {body}\n{}",
            std::fs::read_to_string(env.path("serve.log")).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `vigil serve --port 0` (logs in `serve.log`) and reads the address it printed.
fn start(env: &Env) -> (Server, String) {
    start_with(env, &[])
}

#[test]
fn serve_refuses_to_listen_beyond_this_machine_with_auth_off_unless_told_it_is_insecure() {
    let env = Env::new();
    let open = [("VIGIL__SERVER__BIND", "0.0.0.0")];
    env.run_cmd(env.cmd().envs(open).args(["serve", "--port", "0"]))
        .code(5)
        .says("refusing to listen on 0.0.0.0")
        .says("--insecure");
    // Told, it starts, and says at every start that it is open.
    let (server, addr) = start_with(
        &env,
        &[
            ("VIGIL__SERVER__BIND", "0.0.0.0"),
            ("VIGIL__SERVER__INSECURE", "true"),
        ],
    );
    assert!(addr.starts_with("0.0.0.0:"), "{addr}");
    // Answering on loopback too; and only then stopped (SIGTERM before the server has set
    // up its signal handling would be the default action's kill).
    let local = addr.replace("0.0.0.0", "127.0.0.1");
    let started = Instant::now();
    while http(&local, "GET", "/healthz", "text/plain", b"").0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(30), "never healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(server, &env);
    let log = std::fs::read_to_string(env.path("serve.log")).unwrap();
    assert!(log.contains("INSECURE"), "{log}");
}
