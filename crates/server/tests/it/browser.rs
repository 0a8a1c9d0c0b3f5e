//! The web pages in a real browser: headless Chromium driven through chromedriver
//! (WebDriver) against the app served in process on `127.0.0.1:0`. Items are enqueued
//! straight into the review store; an inspector names herself, works the queue with the
//! keyboard, and the verdicts must land in the store and the metrics. Screenshots of the
//! three pages go to `$CARGO_TARGET_DIR/screenshots/` (or the temp dir) for people to look
//! at.
//!
//! chromedriver and Chromium are found at `/usr/bin` or through `CHROMEDRIVER` and
//! `CHROMIUM`; when either is missing the test fails and says so (CI installs them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use fantoccini::actions::{InputSource, MOUSE_BUTTON_RIGHT, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use vigil_core::review::Flag;
use vigil_runtime::{DeployConfig, Infer, InferConfig};
use vigil_server::{AppState, HttpLimits};
use vigil_store::{DriftWindowRow, NewReviewItem, OpenOptions, ReviewImage, ReviewStore};

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

/// Polls `script` (a JavaScript expression) until it is true.
async fn until(c: &Client, what: &str, script: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = c
            .execute(&format!("return !!({script});"), vec![])
            .await
            .unwrap();
        if v == serde_json::Value::Bool(true) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
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

async fn press(c: &Client, keys: &str) {
    c.find(Locator::Css("body"))
        .await
        .unwrap()
        .send_keys(keys)
        .await
        .unwrap();
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
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

/// A queue item of weldnet with `flags`, predicted `minutes` ago.
fn item(
    request_id: &str,
    label: &str,
    probabilities: [f32; 4],
    flags: Vec<Flag>,
    minutes: i64,
    image: Vec<u8>,
    details: serde_json::Value,
) -> NewReviewItem {
    let confidence = probabilities.iter().copied().fold(0.0, f32::max);
    NewReviewItem {
        request_id: request_id.into(),
        model: "weldnet".into(),
        version: "1".into(),
        at: Utc::now() - chrono::Duration::minutes(minutes),
        label: label.into(),
        confidence,
        probabilities: probabilities.to_vec(),
        labels: LABELS.iter().map(|l| (*l).to_owned()).collect(),
        flags,
        image: Some(ReviewImage {
            content_type: "image/png".into(),
            bytes: image,
        }),
        details,
    }
}

/// A drift report as the runtime writes it, with two signals at `k` times their thresholds.
fn drift_row(minutes_ago: i64, k: f64) -> DriftWindowRow {
    DriftWindowRow {
        model: "weldnet".into(),
        version: "1".into(),
        ended_at: Utc::now() - chrono::Duration::minutes(minutes_ago),
        images: 200,
        drift: k > 1.0,
        report: serde_json::json!({
            "images": 200,
            "drift": k > 1.0,
            "summary": if k > 1.0 { "Images are darker than the reference images." } else { "No drift." },
            "signals": [
                {"name": "stat.mean", "statistic": 0.08 * k, "threshold": 0.08},
                {"name": "embedding.mmd", "statistic": 0.002 * k * 0.8, "threshold": 0.002},
            ],
        }),
    }
}

/// The app on a socket, with a review store and a monitoring store in `dir`.
async fn serve(dir: &Path) -> (AppState, Arc<dyn ReviewStore>, SocketAddr) {
    serve_with_auth(dir, None).await
}

/// [`serve`] with tokens guarding the routes.
async fn serve_with_auth(
    dir: &Path,
    auth: Option<Arc<vigil_server::auth::Auth>>,
) -> (AppState, Arc<dyn ReviewStore>, SocketAddr) {
    let opts = OpenOptions::new(dir);
    let monitor_store = vigil_store::open_monitor(&opts).await.unwrap();
    let metrics = vigil_runtime::Metrics::new();
    let log = vigil_runtime::PredictionLog::start(
        vigil_runtime::LogConfig::default(),
        Arc::new(vigil_server::monitoring::StoreSink(monitor_store.clone())),
        &metrics,
    );
    let mut deploy = DeployConfig {
        engine: engine(),
        ..DeployConfig::default()
    };
    deploy.monitor.log = Some(log.clone());
    let infer = Infer::with_metrics(
        InferConfig {
            preprocess_threads: 2,
            ..InferConfig::default()
        },
        deploy,
        metrics,
    )
    .unwrap();
    let review = vigil_store::open_review(&opts).await.unwrap();
    let review_state = vigil_server::review::ReviewState::new(
        review.clone(),
        // No QA sample: it is drawn from the request id, which is the server's (random), so
        // the live traffic below would join the queue by chance and the counts be off.
        vigil_server::review::ReviewConfig {
            flag: vigil_core::review::FlagPolicy {
                qa_share: 0.0,
                ..vigil_core::review::FlagPolicy::default()
            },
            ..vigil_server::review::ReviewConfig::default()
        },
        infer.metrics().registry(),
    )
    .unwrap();
    let registry = crate::promote::registry(&dir.join("registry")).await;
    let state = AppState::new(infer, HttpLimits::default())
        .with_registry(registry)
        .with_monitoring(monitor_store.clone(), log)
        .with_review(review_state)
        .with_auth(auth);
    vigil_server::deploy(&state, bundle("1")).await.unwrap();
    // One rule that fires on the live traffic, for the dashboard's alerts.
    let rule = vigil_core::monitor::alert::AlertRule {
        name: "confident".to_owned(),
        signal: vigil_core::monitor::alert::Signal::MeanConfidence,
        model: None,
        comparison: vigil_core::monitor::alert::Comparison::Above,
        threshold: 0.5,
        window: Duration::from_secs(60),
        for_duration: Duration::ZERO,
        severity: vigil_core::monitor::alert::Severity::Warning,
        cooldown: Duration::ZERO,
        description: String::new(),
    };
    let source = Arc::new(vigil_server::alert_source::LiveSignals::new(
        state.infer().clone(),
        std::slice::from_ref(&rule),
    ));
    let alerting =
        vigil_server::alerting::Alerting::new(vec![rule], vec![], Duration::from_millis(100), 20)
            .unwrap();
    let state = state.with_alerting(alerting.handle());
    vigil_server::alerting::spawn_alerting(
        alerting,
        source,
        None,
        tokio_util::sync::CancellationToken::new(),
    );
    for (m, k) in [
        (50, 0.4),
        (40, 0.6),
        (30, 0.5),
        (20, 0.9),
        (10, 1.4),
        (5, 1.7),
    ] {
        monitor_store
            .append_drift_window(&drift_row(m, k))
            .await
            .unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = vigil_server::app(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (state, review, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inspector_works_the_queue_with_the_keyboard_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let (state, store, addr) = serve(dir.path()).await;
    let base = format!("http://{addr}");

    // Some live traffic for the dashboard.
    // The review config has no QA sample, so none of these joins the queue by chance.
    let http = std::sync::Arc::new(vigil_server::app(state.clone()));
    for (i, f) in [
        "RRT-106R_x0000_y0035.png",
        "RRT-106R_x0064_y0227.png",
        "RRT-106R_x0128_y0227.png",
    ]
    .into_iter()
    .enumerate()
    {
        let png = std::fs::read(testdata().join("weld").join(f)).unwrap();
        let mut req = post("/v1/models/weldnet/predict", "image/png", png);
        req.headers_mut()
            .insert("x-correlation-id", format!("live-{i}").parse().unwrap());
        let r = send(&http, req).await;
        assert_eq!(r.status(), axum::http::StatusCode::OK);
    }

    // The queue: a whole film with tile scores (oldest, out of distribution), a tile near
    // the threshold, one answered while drifting, one QA sample.
    let film = std::fs::read(testdata().join("weld/films/bam5.png")).unwrap();
    let (columns, rows) = (28, 3);
    let scores: Vec<f64> = (0..columns * rows)
        .map(|i| {
            let x = f64::from(i % columns);
            (-((x - 17.0) / 2.5).powi(2)).exp() * if i / columns == 1 { 1.0 } else { 0.6 }
        })
        .collect();
    let items = vec![
        item(
            "film-bam5",
            "crack",
            [0.62, 0.21, 0.09, 0.08],
            vec![Flag::OutOfDistribution, Flag::Review],
            50,
            film,
            serde_json::json!({"ood_score": 1.84, "tiles": {"columns": columns, "rows": rows, "scores": scores}}),
        ),
        item(
            "tile-7",
            "porosity",
            [0.08, 0.48, 0.41, 0.03],
            vec![Flag::Review],
            20,
            tile().to_vec(),
            serde_json::json!({}),
        ),
        item(
            "tile-8",
            "no_defect",
            [0.02, 0.05, 0.06, 0.87],
            vec![Flag::Drift],
            10,
            tile().to_vec(),
            serde_json::json!({}),
        ),
        item(
            "tile-9",
            "no_defect",
            [0.01, 0.02, 0.02, 0.95],
            vec![Flag::QaSample],
            5,
            tile().to_vec(),
            serde_json::json!({}),
        ),
    ];
    assert_eq!(store.enqueue(&items).await.unwrap(), 4);

    let (_driver, c) = browser().await;
    let shots = screenshots();

    // The queue page counts them.
    c.goto(&format!("{base}/review/queue")).await.unwrap();
    assert_eq!(text(&c, r#"[data-stat="waiting"] span"#).await, "4");
    for (flag, n) in [
        ("out_of_distribution", "1"),
        ("review", "2"),
        ("drift", "1"),
        ("qa_sample", "1"),
    ] {
        let got = text(&c, &format!(r#"#by-flag tr[data-flag="{flag}"] td.num"#)).await;
        assert_eq!(got, n, "{flag}");
    }
    assert_eq!(
        text(&c, r#"#by-state tr[data-state="open"] td.num"#).await,
        "4"
    );
    assert_eq!(
        c.find_all(Locator::Css("#items tbody tr"))
            .await
            .unwrap()
            .len(),
        4
    );
    screenshot(&c, &shots, "queue.png").await;

    // The review page asks who is reviewing, once.
    c.goto(&format!("{base}/review")).await.unwrap();
    until(
        &c,
        "the name dialog",
        "!document.getElementById('who-dialog').hidden",
    )
    .await;
    let name = c.find(Locator::Css("#who-name")).await.unwrap();
    name.send_keys("Ada Lovelace").await.unwrap();
    click(&c, "#who-form button").await;

    // The film comes first (most urgent, oldest), drawn on the canvas.
    until(
        &c,
        "the first item",
        "document.getElementById('pred-label').textContent === 'crack'",
    )
    .await;
    until(
        &c,
        "the film's pixels",
        "document.getElementById('viewinfo').textContent.startsWith('3512×366')",
    )
    .await;
    assert!(
        text(&c, "#why")
            .await
            .contains("does not resemble the training images")
    );
    assert!(text(&c, "#labels").await.contains("porosity"));
    press(&c, "h").await;
    until(
        &c,
        "the heat-map",
        "document.getElementById('heat').getAttribute('aria-pressed') === 'true'",
    )
    .await;
    // Something was drawn: the canvas is not all black in its middle.
    let lit = c
        .execute(
            "const v = document.getElementById('view'); const d = v.getContext('2d') \
             .getImageData(0, Math.floor(v.height / 2) - 20, v.width, 40).data; \
             let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s;",
            vec![],
        )
        .await
        .unwrap();
    assert!(lit.as_f64().unwrap() > 0.0, "the canvas stayed black");
    tokio::time::sleep(Duration::from_millis(300)).await;
    screenshot(&c, &shots, "review.png").await;

    // 2 = porosity on the film; S skips the near-threshold tile; 4 = no_defect on the next.
    press(&c, "2").await;
    until(
        &c,
        "the second item",
        "document.getElementById('done-count').textContent === '1'",
    )
    .await;
    until(
        &c,
        "tile-7",
        "document.getElementById('meta').textContent.includes('tile-7')",
    )
    .await;
    press(&c, "s").await;
    until(
        &c,
        "tile-8",
        "document.getElementById('meta').textContent.includes('tile-8')",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    screenshot(&c, &shots, "review-tile.png").await;
    press(&c, "4").await;
    until(
        &c,
        "tile-9",
        "document.getElementById('meta').textContent.includes('tile-9')",
    )
    .await;
    assert_eq!(text(&c, "#done-count").await, "2");
    // The last one; the skipped tile is not offered again, so the queue is empty for Ada.
    press(&c, "1").await;
    until(
        &c,
        "the empty queue",
        "!document.getElementById('empty').hidden && document.getElementById('item').hidden",
    )
    .await;
    assert_eq!(text(&c, "#done-count").await, "3");
    screenshot(&c, &shots, "review-empty.png").await;

    let film = store.verdicts_for("film-bam5").await.unwrap();
    assert_eq!(film.len(), 1);
    assert_eq!(film[0].label, "porosity");
    assert_eq!(film[0].inspector, "Ada Lovelace");
    assert!(film[0].time_spent_ms.is_some_and(|t| t > 0), "{film:?}");
    let drifting = store.verdicts_for("tile-8").await.unwrap();
    assert_eq!(drifting.len(), 1);
    assert_eq!(drifting[0].label, "no_defect");
    assert!(store.verdicts_for("tile-7").await.unwrap().is_empty());
    let skipped = store
        .review_item_by_request("tile-7")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(skipped.skipped_by, vec!["Ada Lovelace".to_owned()]);

    let metrics = send(&http, get("/metrics")).await;
    let metrics = String::from_utf8(bytes(metrics).await.to_vec()).unwrap();
    assert_eq!(
        sample(&metrics, "vigil_review_verdicts_total", &[]),
        3.0,
        "the review verdict counter on /metrics"
    );
    // Realised accuracy follows the keyboard verdicts: the share of them that kept the
    // model's label, on the API and on /metrics.
    let settled = store.settled("weldnet", None, None).await.unwrap();
    assert_eq!(settled.len(), 3);
    let kept = settled.iter().filter(|s| s.predicted == s.actual).count();
    let expected = kept as f64 / 3.0;
    let perf = json(send(&http, get("/v1/models/weldnet/performance")).await).await;
    let realised = &perf["versions"]["1"]["realised"];
    assert_eq!(realised["verdicts"], 3, "{perf}");
    assert!((realised["accuracy"].as_f64().unwrap() - expected).abs() < 1e-12);
    let mv = [("model", "weldnet"), ("version", "1")];
    assert!((sample(&metrics, "vigil_review_realised_accuracy", &mv) - expected).abs() < 1e-12);

    c.goto(&format!("{base}/dashboard")).await.unwrap();
    assert!(text(&c, "main").await.contains("weldnet"));
    assert!(
        text(&c, "main")
            .await
            .contains("estimated (from confidence, no verdicts)")
    );
    assert!(text(&c, "main").await.contains("1 waiting for review"));
    assert!(
        text(&c, "main").await.contains("production → 1.0.0"),
        "the registry's aliases"
    );
    assert!(
        c.find_all(Locator::Css("svg.chart polyline"))
            .await
            .unwrap()
            .len()
            >= 2
    );
    assert!(
        text(&c, "main").await.contains("confident"),
        "the firing alert"
    );
    screenshot(&c, &shots, "dashboard.png").await;
    c.goto(&format!("{base}/review/queue")).await.unwrap();
    screenshot(&c, &shots, "queue-after.png").await;
    // The name is kept: coming back goes straight to work (here: nothing left for Ada).
    c.goto(&format!("{base}/review")).await.unwrap();
    until(
        &c,
        "the queue without asking the name again",
        "document.getElementById('who-dialog').hidden && !document.getElementById('empty').hidden",
    )
    .await;
    assert_eq!(text(&c, "#inspector").await, "Ada Lovelace");

    c.close().await.unwrap();
    state.infer().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_an_inspector_signs_in_and_her_verdict_carries_her_tokens_name() {
    use vigil_core::auth::{Role, Secret, TokenEntry};
    let dir = tempfile::tempdir().unwrap();
    let secret = Secret::generate().unwrap();
    // Sessions live in the store, beside the review queue.
    let sessions = vigil_store::open_access(&OpenOptions::new(dir.path()))
        .await
        .unwrap();
    let auth = vigil_server::auth::Auth::new(
        &vigil_server::auth::AuthConfig {
            enabled: true,
            tokens: vec![TokenEntry {
                name: "Grace Hopper".into(),
                role: Role::Inspector,
                sha256: secret.digest(),
            }],
            ..Default::default()
        },
        Some(sessions),
        None,
    )
    .unwrap();
    let (state, store, addr) = serve_with_auth(dir.path(), auth).await;
    let base = format!("http://{addr}");
    let queued = vec![item(
        "signed-1",
        "porosity",
        [0.08, 0.48, 0.41, 0.03],
        vec![Flag::Review],
        3,
        tile().to_vec(),
        serde_json::json!({}),
    )];
    assert_eq!(store.enqueue(&queued).await.unwrap(), 1);

    let (_driver, c) = browser().await;
    // The review page sends the browser to sign in first, and back after.
    c.goto(&format!("{base}/review")).await.unwrap();
    until(&c, "the sign-in page", "location.pathname === '/login'").await;
    screenshot(&c, &screenshots(), "login.png").await;
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(secret.expose())
        .await
        .unwrap();
    click(&c, "#sign-in").await;
    until(&c, "the review page", "location.pathname === '/review'").await;
    // No name to type: the token's holder is shown, and "change" signs out instead.
    until(
        &c,
        "the item",
        "document.getElementById('pred-label').textContent === 'porosity'",
    )
    .await;
    assert_eq!(text(&c, "#inspector").await, "Grace Hopper");
    assert_eq!(text(&c, "#change-who").await, "sign out");
    let asked = c
        .execute(
            "return document.getElementById('who-dialog').hidden;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(asked, serde_json::Value::Bool(true), "no name dialog");
    // The script cannot read the cookie (HttpOnly).
    let cookie = c.execute("return document.cookie;", vec![]).await.unwrap();
    assert_eq!(cookie, serde_json::json!(""));

    press(&c, "1").await;
    until(
        &c,
        "the empty queue",
        "!document.getElementById('empty').hidden",
    )
    .await;
    let verdicts = store.verdicts_for("signed-1").await.unwrap();
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].inspector, "Grace Hopper");
    assert_eq!(verdicts[0].label, "crack");

    // The cookie holds a random session id, not the token.
    let cookies = c.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|k| k.name() == vigil_server::session::COOKIE)
        .expect("a session cookie")
        .value()
        .to_owned();
    assert!(!session.contains(secret.expose()) && session.len() == 64);
    assert_eq!(
        status_with_cookie(addr, &session),
        200,
        "the session opens the page"
    );
    // Signing out: the next visit asks for the token again.
    click(&c, "#change-who").await;
    until(
        &c,
        "the sign-in page again",
        "location.pathname === '/login'",
    )
    .await;
    c.goto(&format!("{base}/review")).await.unwrap();
    until(&c, "still signed out", "location.pathname === '/login'").await;
    // A copy of the old cookie no longer opens anything: the session is gone from the store.
    assert_eq!(
        status_with_cookie(addr, &session),
        303,
        "the old cookie still works"
    );
    c.close().await.unwrap();
    state.infer().shutdown().await;
}

/// The status of `GET /dashboard` sent with `vigil_session=<session>`, on a plain socket
/// (no cookie jar, no redirects followed).
fn status_with_cookie(addr: SocketAddr, session: &str) -> u16 {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /dashboard HTTP/1.1\r\nHost: {addr}\r\nCookie: {}={session}\r\nConnection: close\r\n\r\n",
        vigil_server::session::COOKIE
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
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

/// An uncompressed 16-bit grey TIFF (little-endian, one strip) of `w`×`h` pixels.
fn tiff16(w: u16, h: u16, pixel: impl Fn(u16, u16) -> u16) -> Vec<u8> {
    let data: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .flat_map(|(x, y)| pixel(x, y).to_le_bytes())
        .collect();
    let data_len = u32::try_from(data.len()).unwrap();
    // Header (8 bytes), then the pixels, then the IFD.
    let ifd_at = 8 + data_len;
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&ifd_at.to_le_bytes());
    out.extend_from_slice(&data);
    // (tag, type: 3 = SHORT, 4 = LONG, value)
    let entries: [(u16, u16, u32); 9] = [
        (256, 3, u32::from(w)), // ImageWidth
        (257, 3, u32::from(h)), // ImageLength
        (258, 3, 16),           // BitsPerSample
        (259, 3, 1),            // Compression: none
        (262, 3, 1),            // PhotometricInterpretation: black is zero
        (273, 4, 8),            // StripOffsets
        (277, 3, 1),            // SamplesPerPixel
        (278, 3, u32::from(h)), // RowsPerStrip
        (279, 4, data_len),     // StripByteCounts
    ];
    out.extend_from_slice(&u16::try_from(entries.len()).unwrap().to_le_bytes());
    for (tag, ty, value) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

/// The darkest and brightest red values of the review canvas's middle band.
async fn canvas_range(c: &Client) -> (f64, f64) {
    let v = c
        .execute(
            "const v = document.getElementById('view'); const d = v.getContext('2d') \
             .getImageData(Math.floor(v.width / 2) - 40, Math.floor(v.height / 2) - 40, 80, 80).data; \
             let lo = 255, hi = 0; for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); } \
             return [lo, hi];",
            vec![],
        )
        .await
        .unwrap();
    (v[0].as_f64().unwrap(), v[1].as_f64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_level_spreads_16_bit_pixels_over_the_grey_scale() {
    let dir = tempfile::tempdir().unwrap();
    let (state, store, addr) = serve(dir.path()).await;
    // A 16-bit checkerboard of 20,000 and 20,990: drawn as 8-bit without a window it is one
    // flat grey; the auto window must spread it to black and white.
    let image = tiff16(160, 120, |x, y| 20_000 + ((x / 4 + y / 4) % 2) * 990);
    let mut it = item(
        "film-16",
        "slag",
        [0.1, 0.2, 0.6, 0.1],
        vec![Flag::Review],
        1,
        image,
        serde_json::json!({}),
    );
    if let Some(img) = it.image.as_mut() {
        img.content_type = "image/tiff".into();
    }
    // And one two inspectors disagree on (feedback from an existing system, two-person
    // policy): disputed, highlighted on the queue page.
    let disputed = item(
        "tile-d",
        "crack",
        [0.5, 0.3, 0.1, 0.1],
        vec![Flag::QaSample],
        0,
        tile().to_vec(),
        serde_json::json!({}),
    );
    assert_eq!(store.enqueue(&[it, disputed]).await.unwrap(), 2);
    for (who, label) in [("Ann", "crack"), ("Bob", "slag")] {
        let v = vigil_store::NewVerdict {
            request_id: "tile-d".into(),
            inspector: who.into(),
            label: label.into(),
            comment: String::new(),
            time_spent_ms: None,
            source: vigil_store::VerdictSource::Feedback,
            claim_token: None,
        };
        store
            .record_verdict(&v, vigil_core::review::SecondOpinion::Always)
            .await
            .unwrap();
    }

    let (_driver, c) = browser().await;
    let base = format!("http://{addr}");
    c.goto(&format!("{base}/review/queue")).await.unwrap();
    assert_eq!(
        text(&c, r#"#by-state tr[data-state="disputed"] td.num"#).await,
        "1"
    );
    assert_eq!(
        c.find_all(Locator::Css("#items tr.row-disputed"))
            .await
            .unwrap()
            .len(),
        1
    );
    screenshot(&c, &screenshots(), "queue-disputed.png").await;
    c.execute("localStorage.setItem('vigil.inspector', 'Grace');", vec![])
        .await
        .unwrap();
    c.goto(&format!("{base}/review")).await.unwrap();
    until(
        &c,
        "the 16-bit pixels",
        "document.getElementById('viewinfo').textContent.startsWith('160×120, 16-bit')",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (lo, hi) = canvas_range(&c).await;
    assert!(lo < 40.0 && hi > 215.0, "auto window spread {lo}..{hi}");

    // A wide window (the slider) flattens it again; A brings the auto window back.
    c.execute(
        "const w = document.getElementById('win'); w.value = '65536'; \
         w.dispatchEvent(new Event('input'));",
        vec![],
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (lo, hi) = canvas_range(&c).await;
    assert!(hi - lo < 10.0, "a full-range window is flat: {lo}..{hi}");
    press(&c, "a").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (lo, hi) = canvas_range(&c).await;
    assert!(lo < 40.0 && hi > 215.0, "auto again: {lo}..{hi}");

    // Dragging right with the right button widens the window: the contrast goes.
    let info = || async { text(&c, "#viewinfo").await };
    let before = info().await;
    let drag = MouseActions::new("mouse".into())
        .then(PointerAction::MoveTo {
            duration: None,
            x: 500.0,
            y: 400.0,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_RIGHT,
        })
        .then(PointerAction::MoveBy {
            duration: Some(Duration::from_millis(100)),
            x: 200.0,
            y: 0.0,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_RIGHT,
        });
    c.perform_actions(drag).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (lo, hi) = canvas_range(&c).await;
    assert!(
        hi - lo < 60.0,
        "a right-drag widened the window: {lo}..{hi} ({before} → {})",
        info().await
    );
    // + zooms in.
    let zoom = |t: String| {
        t.rsplit(" · ")
            .find(|p| p.ends_with('%'))
            .map(str::to_owned)
    };
    let z0 = zoom(info().await);
    press(&c, "+").await;
    let z1 = zoom(info().await);
    assert!(z0.is_some() && z0 != z1, "zoom {z0:?} → {z1:?}");

    c.close().await.unwrap();
    state.infer().shutdown().await;
}
