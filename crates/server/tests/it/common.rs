//! Fixtures: the reference weld model as a real bundle (golden cases recorded on two
//! tiles), a server state over a runtime that serves it, and request helpers for driving
//! the router in process.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use bytes::Bytes;
use tower::ServiceExt as _;
use vigil_core::bundle::{BundleWriter, GOLDEN_EXPECTED_FILE, MODEL_FILE, Manifest, Step};
use vigil_engine::EngineConfig;
use vigil_engine::preprocess::{Limits, Pipeline};
use vigil_runtime::{BundleFiles, DeployConfig, Infer, InferConfig};
use vigil_server::{AppState, HttpLimits};

pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

pub fn model_bytes() -> Vec<u8> {
    std::fs::read(testdata().join("weldnet-s.onnx")).unwrap()
}

pub const LABELS: [&str; 4] = ["crack", "porosity", "slag", "no_defect"];

/// One real weld tile.
pub fn tile() -> Bytes {
    Bytes::from(std::fs::read(testdata().join("weld/RRT-106R_x0064_y0035.png")).unwrap())
}

fn steps() -> Vec<Step> {
    let text = std::fs::read_to_string(testdata().join("weld-preprocess.toml")).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    value["preprocess"].clone().try_into().unwrap()
}

/// The weld model's manifest at `version`.
pub fn manifest(version: &str) -> Manifest {
    let info = vigil_core::onnx::inspect(&model_bytes()).unwrap();
    let labels = LABELS.iter().map(|l| l.parse().unwrap()).collect();
    let mut m = Manifest::for_model(&info, "weldnet".parse().unwrap(), labels, steps());
    m.model.version = version.parse().unwrap();
    m
}

/// ONNX Runtime, one thread, no spinning: tests share the cores.
pub fn engine() -> EngineConfig {
    EngineConfig {
        intra_threads: 1,
        spin_wait: false,
        ..EngineConfig::default()
    }
}

/// A real bundle of the weld model at `version`, with golden cases recorded on two tiles,
/// written to disk and read back verified, as the server gets it.
pub fn bundle(version: &str) -> BundleFiles {
    let dir = tempfile::tempdir().unwrap();
    let written = written_bundle(version, dir.path(), false);
    BundleFiles::from_bundle(&written).unwrap()
}

/// [`bundle`], written under `dir`; with `broken_golden` the two golden inputs are swapped
/// after recording, so the bundle verifies but its golden check fails.
pub fn written_bundle(
    version: &str,
    dir: &Path,
    broken_golden: bool,
) -> vigil_core::bundle::Bundle {
    let m = manifest(version);
    let golden: Vec<(String, Vec<u8>)> = ["RRT-106R_x0000_y0035.png", "RRT-106R_x0064_y0227.png"]
        .iter()
        .enumerate()
        .map(|(i, f)| {
            (
                format!("golden/input-{i:03}.png"),
                std::fs::read(testdata().join("weld").join(f)).unwrap(),
            )
        })
        .collect();
    let mut writer = BundleWriter::new(m.clone());
    writer.add_file(MODEL_FILE, model_bytes()).unwrap();
    for (i, (name, _)) in golden.iter().enumerate() {
        let from = if broken_golden { 1 - i } else { i };
        writer.add_file(name, golden[from].1.clone()).unwrap();
    }
    let mut backend = vigil_engine::load(&model_bytes(), &m, &engine()).unwrap();
    let pipeline = Pipeline::new(&m, Limits::default());
    let set = vigil_engine::golden::record(backend.as_mut(), &pipeline, &golden).unwrap();
    writer
        .add_file(GOLDEN_EXPECTED_FILE, set.to_json())
        .unwrap();
    writer.write(&dir.join("bundle")).unwrap()
}

/// A state over a runtime with nothing deployed yet.
pub fn empty_state(limits: HttpLimits) -> AppState {
    let infer = Infer::new(
        InferConfig {
            preprocess_threads: 2,
            ..InferConfig::default()
        },
        DeployConfig {
            engine: engine(),
            ..DeployConfig::default()
        },
    )
    .unwrap();
    AppState::new(infer, limits)
}

/// A state serving weldnet version 1, and its router.
pub async fn served(limits: HttpLimits) -> (AppState, Router) {
    let state = empty_state(limits);
    vigil_server::deploy(&state, bundle("1")).await.unwrap();
    let app = vigil_server::app(state.clone());
    (state, app)
}

/// Sends one request through the router.
pub async fn send(app: &Router, req: Request<Body>) -> Response<Body> {
    app.clone().oneshot(req).await.unwrap()
}

/// A GET request.
pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

/// A POST of `body` with a content type.
pub fn post(uri: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri)
        .header("content-type", content_type)
        .body(body.into())
        .unwrap()
}

/// The body as bytes.
pub async fn bytes(r: Response<Body>) -> Bytes {
    axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap()
}

/// The body as JSON.
pub async fn json(r: Response<Body>) -> serde_json::Value {
    serde_json::from_slice(&bytes(r).await).unwrap()
}

/// The sum of the samples of `name` whose labels include every pair in `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().unwrap())
        })
        .sum()
}

/// A stand-in engine held at a gate: reports each batch on `entered`, waits for a `()` (or
/// for the gate's sender to drop), then answers every row with the same probabilities.
#[derive(Debug)]
pub struct GatedBackend {
    pub gate: std::sync::mpsc::Receiver<()>,
    pub entered: tokio::sync::mpsc::UnboundedSender<usize>,
}

impl vigil_engine::Backend for GatedBackend {
    fn run(&mut self, batch: &vigil_engine::Batch) -> vigil_engine::Result<vigil_engine::Outputs> {
        let n = batch.shape[0];
        let _ = self.entered.send(n);
        let _ = self.gate.recv();
        let mut out = std::collections::BTreeMap::new();
        out.insert(
            "probabilities".to_owned(),
            vigil_engine::OutputTensor {
                shape: vec![n, 4],
                data: [0.7, 0.1, 0.1, 0.1].repeat(n),
            },
        );
        out.insert(
            "embedding".to_owned(),
            vigil_engine::OutputTensor {
                shape: vec![n, 128],
                data: vec![0.0; n * 128],
            },
        );
        Ok(out)
    }

    fn describe(&self) -> String {
        "gated fake".into()
    }
}

/// A state admitting one request at a time, serving weldnet on a gated fake engine; the
/// gate's sender and the receiver of "batch started" reports.
pub async fn gated_state() -> (
    AppState,
    std::sync::mpsc::Sender<()>,
    tokio::sync::mpsc::UnboundedReceiver<usize>,
) {
    let infer = Infer::new(
        InferConfig {
            max_in_flight: 1,
            preprocess_threads: 1,
            ..InferConfig::default()
        },
        DeployConfig::default(),
    )
    .unwrap();
    let (gate_tx, gate) = std::sync::mpsc::channel();
    let (entered, entered_rx) = tokio::sync::mpsc::unbounded_channel();
    let bundle = BundleFiles {
        manifest: manifest("1"),
        digest: vigil_core::types::Sha256Digest::of(b"fake"),
        files: std::collections::BTreeMap::new(),
    };
    infer
        .deployments()
        .load_with_backend(bundle, Box::new(GatedBackend { gate, entered }))
        .await
        .unwrap();
    (
        AppState::new(infer, HttpLimits::default()),
        gate_tx,
        entered_rx,
    )
}
