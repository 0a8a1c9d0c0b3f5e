//! Fixtures: the reference weld model as bundles of any version, a fake engine that can be
//! held at a gate (to put requests in flight deterministically) or made to panic, and a
//! reader for the rendered metrics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use vigil_core::bundle::{BundleWriter, GOLDEN_EXPECTED_FILE, MODEL_FILE, Manifest, Step};
use vigil_core::types::{ModelName, Sha256Digest};
use vigil_engine::preprocess::{Limits, Pipeline};
use vigil_engine::{Backend, Batch, EngineConfig, OutputTensor, Outputs};
use vigil_runtime::{BatchConfig, BundleFiles, DeployConfig, Infer, InferConfig};

pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

pub fn model_bytes() -> Vec<u8> {
    std::fs::read(testdata().join("weldnet-s.onnx")).unwrap()
}

pub fn name() -> ModelName {
    "weldnet".parse().unwrap()
}

/// The six weld tiles, sorted by file name.
pub fn tiles() -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(testdata().join("weld")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "png") {
            out.push((
                p.file_name().unwrap().to_string_lossy().into_owned(),
                Bytes::from(std::fs::read(&p).unwrap()),
            ));
        }
    }
    out.sort();
    out
}

fn steps() -> Vec<Step> {
    let text = std::fs::read_to_string(testdata().join("weld-preprocess.toml")).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    value["preprocess"].clone().try_into().unwrap()
}

/// The weld model's manifest at `version`.
pub fn manifest(version: &str) -> Manifest {
    let info = vigil_core::onnx::inspect(&model_bytes()).unwrap();
    let labels = ["crack", "porosity", "slag", "no_defect"]
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    let mut m = Manifest::for_model(&info, name(), labels, steps());
    m.model.version = version.parse().unwrap();
    m
}

/// ONNX Runtime, one thread, no spinning: tests share two cores.
pub fn engine() -> EngineConfig {
    EngineConfig {
        intra_threads: 1,
        spin_wait: false,
        ..EngineConfig::default()
    }
}

/// A real bundle of the weld model at `version`, with golden cases recorded on two tiles,
/// written to disk and read back verified, as a server would.
pub fn bundle(version: &str) -> BundleFiles {
    let m = manifest(version);
    let golden: Vec<(String, Vec<u8>)> = tiles()
        .into_iter()
        .take(2)
        .enumerate()
        .map(|(i, (_, b))| (format!("golden/input-{i:03}.png"), b.to_vec()))
        .collect();
    let mut writer = BundleWriter::new(m.clone());
    writer.add_file(MODEL_FILE, model_bytes()).unwrap();
    for (name, bytes) in &golden {
        writer.add_file(name, bytes.clone()).unwrap();
    }
    let mut backend = vigil_engine::load(&model_bytes(), &m, &engine()).unwrap();
    let pipeline = Pipeline::new(&m, Limits::default());
    let set = vigil_engine::golden::record(backend.as_mut(), &pipeline, &golden).unwrap();
    writer
        .add_file(GOLDEN_EXPECTED_FILE, set.to_json())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let written = writer.write(&dir.path().join("bundle")).unwrap();
    BundleFiles::from_bundle(&written).unwrap()
}

/// A runtime with two preprocess threads.
pub fn runtime(max_in_flight: usize, batch: BatchConfig) -> Infer {
    Infer::new(
        InferConfig {
            max_in_flight,
            preprocess_threads: 2,
            ..InferConfig::default()
        },
        DeployConfig {
            batch,
            engine: engine(),
            ..DeployConfig::default()
        },
    )
    .unwrap()
}

pub fn batch(max_batch_size: usize, delay: Duration) -> BatchConfig {
    BatchConfig {
        max_batch_size,
        max_queue_delay: delay,
    }
}

/// A stand-in engine: reports each batch it starts on `entered`, then waits for a `()` on
/// its gate (or for the gate's sender to be dropped), and answers every row with the same
/// probabilities. With `panic_first`, its first batch panics.
#[derive(Debug)]
pub struct FakeBackend {
    pub gate: Option<std_mpsc::Receiver<()>>,
    pub entered: Option<mpsc::UnboundedSender<usize>>,
    pub panic_first: bool,
    pub calls: usize,
}

impl Backend for FakeBackend {
    fn run(&mut self, batch: &Batch) -> vigil_engine::Result<Outputs> {
        self.calls += 1;
        let n = batch.shape[0];
        if let Some(tx) = &self.entered {
            let _ = tx.send(n);
        }
        if let Some(gate) = &self.gate {
            let _ = gate.recv();
        }
        if self.panic_first && self.calls == 1 {
            panic!("the fake engine fell over");
        }
        let mut out = BTreeMap::new();
        out.insert(
            "probabilities".to_owned(),
            OutputTensor {
                shape: vec![n, 4],
                data: [0.7, 0.1, 0.1, 0.1].repeat(n),
            },
        );
        out.insert(
            "embedding".to_owned(),
            OutputTensor {
                shape: vec![n, 128],
                data: vec![0.0; n * 128],
            },
        );
        Ok(out)
    }

    fn describe(&self) -> String {
        "fake".into()
    }
}

/// A bundle for the fake engine: the weld manifest, no files, so no golden check.
pub fn fake_bundle(version: &str) -> BundleFiles {
    BundleFiles {
        manifest: manifest(version),
        digest: Sha256Digest::of(version.as_bytes()),
        files: BTreeMap::new(),
    }
}

/// A gated fake engine, the sender that opens its gate once per `()`, and the receiver of
/// its "batch started" reports.
pub fn gated() -> (
    FakeBackend,
    std_mpsc::Sender<()>,
    mpsc::UnboundedReceiver<usize>,
) {
    let (gate_tx, gate_rx) = std_mpsc::channel();
    let (entered_tx, entered_rx) = mpsc::unbounded_channel();
    (
        FakeBackend {
            gate: Some(gate_rx),
            entered: Some(entered_tx),
            panic_first: false,
            calls: 0,
        },
        gate_tx,
        entered_rx,
    )
}

/// The sum of the samples of `name` whose labels include every pair in `labels` (0 when
/// there is none), read from the Prometheus text.
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

/// Waits, in short steps, until `cond` holds: for ordering, not timing (gives up after
/// 10 s so that a bug fails the test instead of hanging it).
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting until {what}");
}
