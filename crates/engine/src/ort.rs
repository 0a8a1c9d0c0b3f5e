//! The default engine: ONNX Runtime through the `ort` crate, loaded at run time.
//!
//! The library is not linked: it is found at start-up (configured path, `ORT_DYLIB_PATH`,
//! next to the executable, or the repository's `third_party/onnxruntime/` that
//! `scripts/setup-onnxruntime` fills) and checked with a clear error, because a missing
//! library would otherwise panic at first use.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;
use tracing::info;
use vigil_core::bundle::Manifest;

use crate::backend::{Backend, Batch, OutputTensor, Outputs};
use crate::{Error, Result};

/// The ONNX Runtime release this build is made and tested against.
pub const ORT_VERSION: &str = "1.32.0";

/// The highest default-domain opset this engine accepts. ONNX Runtime 1.32 implements
/// more; 23 is the newest we have tested with.
pub const MAX_OPSET: i64 = 23;

/// Operator domains ONNX Runtime's CPU build implements.
const DOMAINS: &[&str] = &["", "ai.onnx.ml", "com.microsoft"];

/// How to find and run ONNX Runtime.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// Intra-op threads per model session (0: ONNX Runtime's default, one per core).
    pub intra_threads: usize,
    /// An explicit path to `libonnxruntime.so`; searched first.
    pub library: Option<PathBuf>,
}

/// The loaded runtime, once per process.
#[derive(Debug)]
pub struct Runtime {
    /// The library file in use.
    pub library: PathBuf,
    /// ONNX Runtime's own build description.
    pub build_info: String,
    env: ort::environment::Environment,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Where the library is looked for, in order. An explicitly configured path, or else
/// `ORT_DYLIB_PATH`, is the only candidate when given: a typo there must be an error, not a
/// silent fall-back to another library.
pub fn search_path(cfg: &EngineConfig) -> Vec<PathBuf> {
    if let Some(p) = &cfg.library {
        return vec![p.clone()];
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    let mut out = Vec::new();
    let names = [
        "libonnxruntime.so".to_owned(),
        format!("libonnxruntime.so.{ORT_VERSION}"),
    ];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
    {
        for n in &names {
            out.push(dir.join(n));
        }
        for n in &names {
            out.push(dir.join("lib").join(n));
        }
    }
    // A binary built from this repository finds the library that scripts/setup-onnxruntime
    // put in the repository, so `cargo run` works without configuration.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../third_party/onnxruntime");
    for n in &names {
        out.push(repo.join(n));
    }
    out
}

/// Loads ONNX Runtime once per process and returns it; later calls return the same runtime.
pub fn runtime(cfg: &EngineConfig) -> Result<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let searched = search_path(cfg);
    let library = searched
        .iter()
        .find(|p| p.is_file())
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .ok_or_else(|| Error::LibraryNotFound {
            searched: searched.clone(),
        })?;
    let load_err = |reason: String| Error::LibraryLoad {
        path: library.clone(),
        reason,
    };
    let env = ort::init_from(&library)
        .map_err(|e| load_err(e.to_string()))?
        .with_name("vigil")
        .build()
        .map_err(|e| load_err(e.to_string()))?;
    let build_info = ort::info().to_owned();
    info!(library = %library.display(), build = %build_info, "ONNX Runtime loaded.");
    Ok(RUNTIME.get_or_init(|| Runtime {
        library,
        build_info,
        env,
    }))
}

/// Checks that the engine supports what the manifest requires, before loading anything.
pub fn check_requirements(manifest: &Manifest) -> Result<()> {
    for (domain, version) in &manifest.engine.opsets {
        if !DOMAINS.contains(&domain.as_str()) {
            return Err(Error::Unsupported(format!(
                "operator domain {domain:?} is not implemented by ONNX Runtime's CPU build"
            )));
        }
        if domain.is_empty() && *version > MAX_OPSET {
            return Err(Error::Unsupported(format!(
                "the model needs ONNX opset {version}; this engine supports up to {MAX_OPSET}"
            )));
        }
    }
    Ok(())
}

/// A model prepared in ONNX Runtime.
#[derive(Debug)]
pub struct OrtBackend {
    session: Session,
    input: String,
    outputs: Vec<String>,
    threads: usize,
}

impl OrtBackend {
    /// Prepares `model` (the bytes of `model.onnx`) as the manifest describes it.
    pub fn load(model: &[u8], manifest: &Manifest, cfg: &EngineConfig) -> Result<OrtBackend> {
        check_requirements(manifest)?;
        let rt = runtime(cfg)?;
        let load = |e: String| Error::Load(e);
        let mut builder = Session::builder(&rt.env)
            .map_err(|e| load(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| load(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| load(e.to_string()))?;
        if cfg.intra_threads > 0 {
            builder = builder
                .with_intra_threads(cfg.intra_threads)
                .map_err(|e| load(e.to_string()))?;
        }
        let session = builder
            .commit_from_memory(model)
            .map_err(|e| load(e.to_string()))?;
        let input = manifest.image_input().name.clone();
        if !session.inputs().iter().any(|o| o.name() == input) {
            return Err(Error::Load(format!(
                "the model has no input named {input:?}"
            )));
        }
        let outputs = manifest.outputs.iter().map(|o| o.name.clone()).collect();
        Ok(OrtBackend {
            session,
            input,
            outputs,
            threads: cfg.intra_threads,
        })
    }
}

impl Backend for OrtBackend {
    fn run(&mut self, batch: &Batch) -> Result<Outputs> {
        let expected: usize = batch.shape.iter().product();
        if batch.data.len() != expected {
            return Err(Error::Shape(format!(
                "shape {:?} needs {expected} values, got {}",
                batch.shape,
                batch.data.len()
            )));
        }
        let tensor = Tensor::from_array((batch.shape.to_vec(), batch.data.clone()))
            .map_err(|e| Error::Shape(e.to_string()))?;
        let results = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(|e| Error::Run(e.to_string()))?;
        let mut out = Outputs::new();
        for name in &self.outputs {
            let value = results
                .get(name)
                .ok_or_else(|| Error::Run(format!("the model gave no output {name:?}")))?;
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| Error::Run(format!("output {name:?}: {e}")))?;
            let shape = shape
                .iter()
                .map(|&d| usize::try_from(d).unwrap_or(0))
                .collect();
            out.insert(
                name.clone(),
                OutputTensor {
                    shape,
                    data: data.to_vec(),
                },
            );
        }
        Ok(out)
    }

    fn describe(&self) -> String {
        let threads = if self.threads == 0 {
            "default threads".to_owned()
        } else {
            format!("{} intra-op threads", self.threads)
        };
        format!("onnxruntime {ORT_VERSION} (CPU, {threads})")
    }
}
