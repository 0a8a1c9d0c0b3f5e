//! The default engine: ONNX Runtime through the `ort` crate, loaded at run time.
//!
//! The library is not linked: it is found at start-up (configured path, `ORT_DYLIB_PATH`,
//! next to the executable, or the repository's `third_party/onnxruntime/` that
//! `scripts/setup-onnxruntime` fills) and checked with a clear error, because a missing
//! library would otherwise panic at first use.
//!
//! With the `cuda` feature, `device = cuda:N` registers ONNX Runtime's CUDA execution provider
//! and refuses to load when it cannot be used, rather than quietly running on the CPU. That
//! needs the GPU build of the library (the onnxruntime-gpu wheel); the CPU build's refusal is
//! tested, a GPU run has not been (no GPU where this was written).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::TensorRef;
use tracing::info;
use vigil_core::bundle::Manifest;

use crate::backend::{Backend, Batch, OutputTensor, Outputs, check_batch};
use crate::{Device, EngineConfig, Error, Result};

/// The ONNX Runtime release this build is made and tested against.
pub const ORT_VERSION: &str = "1.32.0";

/// The highest default-domain opset this engine accepts. ONNX Runtime 1.32 implements
/// more; 23 is the newest we have tested with.
pub const MAX_OPSET: i64 = 23;

/// Operator domains ONNX Runtime's CPU build implements.
const DOMAINS: &[&str] = &["", "ai.onnx.ml", "com.microsoft"];

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
    input_shape: Vec<i64>,
    outputs: Vec<String>,
    threads: usize,
    device: Device,
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
            .map_err(|e| load(e.to_string()))?
            .with_intra_op_spinning(cfg.spin_wait)
            .map_err(|e| load(e.to_string()))?
            // Memory patterns plan one block per input shape and allocate it whole for each
            // call; batches here vary from 1 to max_batch_size, so each size kept its own
            // plan and the arena grew to the sum (measured on the shipped weld model at c=32:
            // 184 -> 200 MB over a minute with them, 108 -> 122 MB without, same throughput;
            // bench/README.md "Hardening"). ONNX Runtime's advice for dynamic batches.
            .with_memory_pattern(false)
            .map_err(|e| load(e.to_string()))?;
        if cfg.intra_threads > 0 {
            builder = builder
                .with_intra_threads(cfg.intra_threads)
                .map_err(|e| load(e.to_string()))?;
        }
        if let Device::Cuda { device_id } = cfg.device {
            builder = with_cuda(builder, device_id, &rt.library)?;
        }
        let session = builder
            .commit_from_memory(model)
            .map_err(|e| load(e.to_string()))?;
        let input = manifest.image_input().name.clone();
        let input_shape = manifest.image_input().shape.clone();
        if !session.inputs().iter().any(|o| o.name() == input) {
            return Err(Error::Load(format!(
                "the model has no input named {input:?}"
            )));
        }
        let outputs = manifest.outputs.iter().map(|o| o.name.clone()).collect();
        Ok(OrtBackend {
            session,
            input,
            input_shape,
            outputs,
            threads: cfg.intra_threads,
            device: cfg.device,
        })
    }
}

/// Registers the CUDA execution provider for `device_id`, as an error when it cannot be: ONNX
/// Runtime's default is to log and fall back to the CPU, which would hide a missing GPU, driver
/// or library behind slow answers.
#[cfg(feature = "cuda")]
fn with_cuda(builder: SessionBuilder, device_id: i32, library: &Path) -> Result<SessionBuilder> {
    use ort::ep::ExecutionProvider as _;
    let unusable = |why: String| {
        Error::Device(format!(
            "device cuda:{device_id} was asked for, but ONNX Runtime's CUDA execution provider cannot be used: {why}"
        ))
    };
    // The CPU build answers registration with an obscure message; say what to install.
    if !ort::ep::CUDA::is_available().map_err(|e| unusable(e.to_string()))? {
        return Err(unusable(format!(
            "{} is a build without CUDA. Use the GPU build (libonnxruntime from the onnxruntime-gpu wheel) or set engine.device = \"cpu\"",
            library.display()
        )));
    }
    builder
        .with_execution_providers([ort::ep::CUDA::default()
            .with_device_id(device_id)
            .build()
            .error_on_failure()])
        .map_err(|e| unusable(e.to_string()))
}

/// This build has no CUDA execution provider compiled in.
#[cfg(not(feature = "cuda"))]
fn with_cuda(_: SessionBuilder, device_id: i32, _: &Path) -> Result<SessionBuilder> {
    Err(Error::Unsupported(format!(
        "device cuda:{device_id} was asked for, but this build has no CUDA support; rebuild with --features cuda (or set engine.device = \"cpu\")"
    )))
}

impl Backend for OrtBackend {
    fn run(&mut self, batch: &Batch) -> Result<Outputs> {
        check_batch(batch, &self.input_shape)?;
        // A view over the batch's own buffer: the request path does not copy the input again.
        let tensor = TensorRef::from_array_view((batch.shape.to_vec(), batch.data.as_slice()))
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
            let s = if self.threads == 1 { "" } else { "s" };
            format!("{} intra-op thread{s}", self.threads)
        };
        let device = match self.device {
            Device::Cpu => "CPU".to_owned(),
            Device::Cuda { device_id } => format!("CUDA:{device_id}"),
        };
        format!("onnxruntime {ORT_VERSION} ({device}, {threads})")
    }
}
