//! The tests' HTTP side: `vigil serve` started on a free port and stopped with SIGTERM, and
//! a minimal HTTP/1.1 client (one request per connection, so no client state leaks between
//! requests).

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
pub(crate) fn stop(server: Server, env: &Env) {
    stop_with(server, env, "TERM");
}

/// Sends a signal by name (`TERM`, `QUIT`, `HUP`, ...) with `kill`.
pub(crate) fn signal(server: &Server, name: &str) {
    let pid = server.0.id().to_string();
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{name} {pid}");
}

/// Sends `signal` and expects the server to exit with code 0 within 30 s.
pub(crate) fn stop_with(mut server: Server, env: &Env, name: &str) {
    signal(&server, name);
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

/// One HTTP/1.1 request on a fresh connection, with extra headers: status and body.
pub(crate) fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    try_request(addr, method, path, headers, body).unwrap()
}

/// [`request`], or the I/O error (a server that stopped listening).
pub(crate) fn try_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
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
    Ok((status, body))
}

pub(crate) fn get(addr: &str, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = request(addr, "GET", path, &[], b"");
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{status} {body:?}: {e}"));
    (status, v)
}

/// A GET answered as text (`/metrics`).
pub(crate) fn get_text(addr: &str, path: &str) -> (u16, String) {
    request(addr, "GET", path, &[], b"")
}

/// A POST of a JSON body: status and body text.
pub(crate) fn post_json(addr: &str, path: &str, body: &serde_json::Value) -> (u16, String) {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

pub(crate) fn serve_log(env: &Env) -> String {
    std::fs::read_to_string(env.path("serve.log")).unwrap_or_default()
}

/// Starts the server with `vars` and waits (at most 60 s) until `/readyz` answers 200.
pub(crate) fn start_ready(env: &Env, vars: &[(&str, &str)]) -> (Server, String) {
    let (server, addr) = start_with(env, vars);
    let deadline = Instant::now() + Duration::from_secs(60);
    while request(&addr, "GET", "/readyz", &[], b"").0 != 200 {
        assert!(Instant::now() < deadline, "never ready\n{}", serve_log(env));
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, addr)
}

/// [`request`] with a content type and the request id `e2e-1`.
pub(crate) fn http(
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, String) {
    request(
        addr,
        method,
        path,
        &[("Content-Type", content_type), ("x-request-id", "e2e-1")],
        body,
    )
}
