//! What an engine is asked for: which engine, how many threads, where ONNX Runtime lives, and
//! which device. Plain data, parsed by the caller's configuration; [`crate::load`] turns it
//! into a prepared model and is where anything unavailable is refused.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How to prepare and run models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Which engine runs the model.
    pub kind: EngineKind,
    /// Threads per prepared model (0: one per core). ONNX Runtime uses them as intra-op
    /// threads; tract as the thread pool of its matrix products and element-wise kernels.
    pub intra_threads: usize,
    /// An explicit path to `libonnxruntime.so`, searched first (ONNX Runtime only).
    pub library: Option<PathBuf>,
    /// Where the model runs. Only ONNX Runtime (built with the `cuda` feature) runs on a GPU.
    pub device: Device,
    /// Whether idle engine threads spin-wait for the next piece of work (ONNX Runtime only).
    /// Spinning shaves latency off each call when the cores are otherwise idle, and burns CPU
    /// that decode threads need when they share the cores (batch scoring turns it off).
    pub spin_wait: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            kind: EngineKind::default(),
            intra_threads: 0,
            library: None,
            device: Device::default(),
            spin_wait: true,
        }
    }
}

/// The engines Vigil can run a model on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EngineKind {
    /// ONNX Runtime, loaded at run time: the default, and the engine golden outputs are
    /// usually recorded on.
    #[default]
    #[serde(rename = "onnxruntime")]
    OnnxRuntime,
    /// tract, pure Rust: needs no native library; present when built with the `tract` feature.
    #[serde(rename = "tract")]
    Tract,
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EngineKind::OnnxRuntime => "onnxruntime",
            EngineKind::Tract => "tract",
        })
    }
}

/// Where a model runs. Written `cpu` or `cuda:N` in configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Device {
    /// The CPU.
    #[default]
    Cpu,
    /// An NVIDIA GPU through ONNX Runtime's CUDA execution provider.
    Cuda {
        /// The CUDA device ordinal, as `nvidia-smi` numbers the GPUs.
        device_id: i32,
    },
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda { device_id } => write!(f, "cuda:{device_id}"),
        }
    }
}

/// A device name that is neither `cpu` nor `cuda:N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown device {0:?}: expected \"cpu\" or \"cuda:N\" (N the GPU's number, e.g. \"cuda:0\")"
)]
pub struct DeviceParseError(String);

impl FromStr for Device {
    type Err = DeviceParseError;

    fn from_str(s: &str) -> Result<Device, DeviceParseError> {
        let s = s.trim();
        if s == "cpu" {
            return Ok(Device::Cpu);
        }
        s.strip_prefix("cuda:")
            // Digits only: `i32::from_str` would also take "+1" and "-1".
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse().ok())
            .map(|device_id| Device::Cuda { device_id })
            .ok_or_else(|| DeviceParseError(s.to_owned()))
    }
}

impl TryFrom<String> for Device {
    type Error = DeviceParseError;

    fn try_from(s: String) -> Result<Device, DeviceParseError> {
        s.parse()
    }
}

impl From<Device> for String {
    fn from(d: Device) -> String {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print_back() {
        assert_eq!("cpu".parse(), Ok(Device::Cpu));
        assert_eq!("cuda:0".parse(), Ok(Device::Cuda { device_id: 0 }));
        assert_eq!(" cuda:3 ".parse(), Ok(Device::Cuda { device_id: 3 }));
        for d in [Device::Cpu, Device::Cuda { device_id: 7 }] {
            assert_eq!(d.to_string().parse(), Ok(d));
        }
    }

    #[test]
    fn anything_else_is_a_clear_error() {
        for bad in [
            "",
            "gpu",
            "cuda",
            "cuda:",
            "cuda:-1",
            "cuda:+1",
            "cuda:x",
            "CPU",
            "cuda:99999999999",
        ] {
            let err = bad.parse::<Device>().unwrap_err();
            assert!(err.to_string().contains("\"cuda:N\""), "{bad:?}: {err}");
        }
    }

    #[test]
    fn kinds_use_their_configuration_names() {
        #[derive(Deserialize)]
        struct T {
            kind: EngineKind,
            device: Device,
        }
        let t: T = serde_json::from_str(r#"{"kind": "tract", "device": "cuda:1"}"#).unwrap();
        assert_eq!(t.kind, EngineKind::Tract);
        assert_eq!(t.device, Device::Cuda { device_id: 1 });
        assert_eq!(EngineKind::OnnxRuntime.to_string(), "onnxruntime");
        let err = serde_json::from_str::<T>(r#"{"kind": "tract", "device": "gpu"}"#)
            .err()
            .unwrap();
        assert!(err.to_string().contains("unknown device"), "{err}");
    }
}
