//! `vigil serve` end to end: the real binary on a free port (`--port 0`, never a fixed one)
//! over a data directory with a pushed bundle aliased `production`; readiness, one predict,
//! then SIGTERM and a clean exit; and an alias moved by the CLI while the server runs is
//! picked up by its watcher.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Kills the server if the test fails before it stops it.
pub(crate) struct Server(pub(crate) Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection; gives the status code and the body.
pub(crate) fn http(
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nx-request-id: e2e-1\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

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
    assert!(body.contains("\"request_id\":\"e2e-1\""), "{body}");
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

/// [`start`] with extra environment variables.
pub(crate) fn start_with(env: &Env, vars: &[(&str, &str)]) -> (Server, String) {
    let log = std::fs::File::create(env.path("serve.log")).unwrap();
    let mut child = env
        .cmd()
        .envs(vars.iter().copied())
        .args(["serve", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| {
            panic!(
                "unexpected first line {line:?}\n{}",
                std::fs::read_to_string(env.path("serve.log")).unwrap()
            )
        })
        .to_owned();
    (server, addr)
}

/// Sends SIGTERM (not `Child::kill`, which is SIGKILL) and expects exit code 0.
pub(crate) fn stop(mut server: Server, env: &Env) {
    let pid = server.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(env.path("serve.log")).unwrap()
    );
}
