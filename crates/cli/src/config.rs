//! The configuration tree: defaults compiled in, then a TOML file, then `VIGIL__...`
//! environment variables. Parsed and validated once, in [`Config::load`], then turned into
//! the objects the commands use; nothing after that re-checks options.

use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};
use vigil_core::monitor::alert::duration_text;

/// [`Config::engine_placement`] on `cores` cores.
fn placement(
    cores: usize,
    mut engine: vigil_engine::EngineConfig,
    instances: Option<usize>,
) -> (usize, vigil_engine::EngineConfig) {
    let threads = engine.intra_threads;
    let instances = match instances.filter(|&n| n > 0) {
        Some(n) => n,
        None if threads == 0 => cores,
        None => (cores / threads).max(1),
    };
    if threads == 0 {
        engine.intra_threads = (cores / instances).max(1);
    }
    (instances, engine)
}

/// The defaults, compiled in; `config/default.toml` documents every field.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Everything configurable.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where metadata and artifacts live.
    pub store: StoreConfig,
    /// The audit log.
    pub audit: AuditConfig,
    /// The model engine.
    pub engine: EngineSection,
    /// Bundle trust policy.
    pub bundle: BundlePolicyConfig,
    /// Logging.
    pub log: LogConfig,
    /// The HTTP server (`vigil serve`).
    pub server: ServerSection,
    /// Monitoring: drift windows and the prediction log.
    pub monitoring: MonitoringSection,
    /// Alert rules and webhooks.
    pub alerts: vigil_server::alerting::AlertingConfig,
    /// The review queue.
    pub review: vigil_server::review::ReviewConfig,
    /// Tokens and roles.
    pub auth: vigil_server::auth::AuthConfig,
}

/// `[monitoring]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringSection {
    /// Per-image statistics, OOD scores and drift windows.
    pub enabled: bool,
    /// Seed of the permutation tests.
    pub seed: u64,
    /// The least time between two drift evaluations of one version.
    #[serde(with = "duration_text")]
    pub drift_min_interval: std::time::Duration,
    /// The prediction log.
    pub log: PredictionLogSection,
}

/// `[monitoring.log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictionLogSection {
    /// Keep a prediction log.
    pub enabled: bool,
    /// Records waiting before the overload policy applies.
    pub capacity: usize,
    /// Most records per transaction.
    pub batch_size: usize,
    /// The longest a record waits for its batch.
    #[serde(with = "duration_text")]
    pub flush_interval: std::time::Duration,
    /// `block`, `reject` or `drop`.
    pub on_full: String,
    /// `refuse` or `serve`: what a prediction gets while the store refuses writes.
    pub on_store_error: String,
    /// Predictions older than this are deleted ("0s": keep everything).
    #[serde(with = "duration_text")]
    pub retention: std::time::Duration,
}

impl MonitoringSection {
    /// The runtime's monitoring settings (without the log, which needs a store).
    pub fn runtime(&self) -> vigil_runtime::MonitorConfig {
        vigil_runtime::MonitorConfig {
            enabled: self.enabled,
            seed: self.seed,
            drift_min_interval: self.drift_min_interval,
            ..vigil_runtime::MonitorConfig::default()
        }
    }

    /// The prediction log's settings; `None` when it is off.
    pub fn log_config(&self) -> anyhow::Result<Option<vigil_runtime::LogConfig>> {
        let l = &self.log;
        if !l.enabled {
            return Ok(None);
        }
        anyhow::ensure!(
            l.capacity > 0 && l.batch_size > 0,
            ConfigError::Invalid(
                "monitoring.log.capacity and monitoring.log.batch_size must be at least 1".into()
            )
        );
        Ok(Some(vigil_runtime::LogConfig {
            capacity: l.capacity,
            batch_size: l.batch_size,
            flush_interval: l.flush_interval,
            on_full: l.on_full.parse().map_err(|e: String| {
                ConfigError::Invalid(format!("monitoring.log.on_full: {e}"))
            })?,
            on_store_error: l.on_store_error.parse().map_err(|e: String| {
                ConfigError::Invalid(format!("monitoring.log.on_store_error: {e}"))
            })?,
        }))
    }
}

/// `[store]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Folder of the SQLite database and the artifact store; empty for the platform default.
    pub data_dir: PathBuf,
    /// The most the database may grow to, in bytes; 0: no cap. At the cap writes fail as on
    /// a full disk: the prediction log refuses new predictions (or serves them unlogged, by
    /// `monitoring.log.on_store_error`) until retention frees space.
    #[serde(default)]
    pub max_size: u64,
}

impl StoreConfig {
    /// How the store is opened in `data_dir`.
    pub fn open_options(&self, data_dir: PathBuf) -> vigil_store::OpenOptions {
        vigil_store::OpenOptions {
            data_dir,
            max_size: (self.max_size > 0).then_some(self.max_size),
        }
    }
}

/// `[audit]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The actor recorded for changes; empty for `user@host`.
    pub actor: String,
}

/// `[engine]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// Which engine runs models: `onnxruntime` (the default) or `tract` (pure Rust; only in a
    /// build with the `tract` feature, and CPU only).
    pub kind: vigil_engine::EngineKind,
    /// Threads per engine instance; 0 splits the cores among the instances.
    pub threads: usize,
    /// Explicit `libonnxruntime.so`; empty to search.
    pub onnxruntime_library: PathBuf,
    /// Where models run: `cpu`, or `cuda:N` for GPU N through ONNX Runtime's CUDA execution
    /// provider (a build with the `cuda` feature and the GPU build of ONNX Runtime).
    pub device: vigil_engine::Device,
    /// Whether idle ONNX Runtime threads spin-wait for the next call.
    pub spin_wait: bool,
}

/// `[bundle]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundlePolicyConfig {
    /// Refuse unsigned or untrusted bundles.
    pub require_signature: bool,
    /// Trusted public key files.
    pub trusted_keys: Vec<PathBuf>,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter directive.
    pub level: String,
}

/// `[server]`: the HTTP server and its request path (`vigil serve`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Address to listen on; `0.0.0.0` for every interface. `serve --bind` overrides it.
    pub bind: std::net::IpAddr,
    /// Listen beyond this machine with auth off (refused otherwise); `serve --insecure`.
    pub insecure: bool,
    /// TCP port; 0 picks a free one. `serve --port` overrides it.
    pub port: u16,
    /// Largest request body in bytes; a larger one is refused with 413.
    pub max_body_bytes: usize,
    /// Largest image, in pixels (width x height); a larger one is refused with 413 before
    /// it is decoded.
    pub max_image_pixels: u64,
    /// Bytes that request bodies being received and images being decoded may hold together;
    /// 0: no limit.
    pub memory_budget: u64,
    /// Connections served normally at once; past it new ones get one second to send their
    /// request, past twice it they are closed at once.
    pub max_connections: usize,
    /// The longest a connection may take to send a request's headers (and stay idle between
    /// requests).
    #[serde(with = "duration_text")]
    pub header_read_timeout: std::time::Duration,
    /// The longest a request's body may take to arrive.
    #[serde(with = "duration_text")]
    pub body_timeout: std::time::Duration,
    /// The longest a request may take, end to end ("30s", "500ms"); past it, 429.
    #[serde(with = "duration_text")]
    pub request_timeout: std::time::Duration,
    /// Requests admitted at once across all models; one more is refused with 429.
    pub max_in_flight: usize,
    /// Most images (or tiles) per engine call.
    pub max_batch_size: usize,
    /// Engine instances per served version; 0 fits them to the cores
    /// ([`Config::engine_placement`]).
    pub instances: usize,
    /// How long a batch that is not full may wait for more requests ("0s": never wait).
    #[serde(with = "duration_text")]
    pub max_queue_delay: std::time::Duration,
    /// OS threads that decode and preprocess images; 0 for one per core.
    pub preprocess_threads: usize,
    /// How often the server reads each model's `production` alias and deploys a version
    /// moved by another process ("2s"; "0s" turns the watcher off).
    #[serde(with = "duration_text")]
    pub alias_poll_interval: std::time::Duration,
    /// Serve the shipped weld model while no model has a `production` alias.
    pub serve_shipped_model: bool,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file given with --config does not exist.
    #[error("config file {} does not exist", .0.display())]
    Missing(PathBuf),
    /// A layer does not parse or has unknown keys.
    #[error("{0}")]
    Invalid(String),
}

impl ConfigError {
    /// What a caller can do about it.
    pub fn kind(&self) -> vigil_core::ErrorKind {
        match self {
            ConfigError::Missing(_) => vigil_core::ErrorKind::NotFound,
            ConfigError::Invalid(_) => vigil_core::ErrorKind::Invalid,
        }
    }
}

impl Config {
    /// Loads the layers: defaults, then `file` (which must exist when given), then the
    /// environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Missing(path.to_owned()).into());
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed("VIGIL__").split("__"));
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))
            .context("invalid configuration (see config/default.toml for every setting)")?;
        vigil_core::auth::Tokens::new(config.auth.tokens.clone())
            .map_err(|e| ConfigError::Invalid(format!("[auth]: {e}")))
            .context("invalid configuration (see config/default.toml for every setting)")?;
        Ok(config)
    }

    /// The server's auth over `stores` (tokens and sessions there, refusals audited there):
    /// `None` when it is off. A bad token entry is a configuration error, found by
    /// [`Config::load`] before any command runs.
    pub fn auth(
        &self,
        stores: &vigil_store::Stores,
    ) -> anyhow::Result<Option<std::sync::Arc<vigil_server::auth::Auth>>> {
        vigil_server::auth::Auth::new(
            &self.auth,
            Some(stores.access.clone()),
            Some(stores.registry.clone()),
        )
        .map_err(|e| ConfigError::Invalid(format!("[auth]: {e}")))
        .context("invalid configuration (see config/default.toml for every setting)")
    }

    /// The data directory, with the platform default filled in.
    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        if !self.store.data_dir.as_os_str().is_empty() {
            return Ok(self.store.data_dir.clone());
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            return Ok(PathBuf::from(x).join("vigil"));
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .context("no data directory: set store.data_dir (VIGIL__STORE__DATA_DIR) or HOME")?;
        Ok(PathBuf::from(home).join(".local/share/vigil"))
    }

    /// The actor for audit entries: the flag, else the config, else `user@host`.
    pub fn actor(&self, flag: Option<&str>) -> String {
        if let Some(a) = flag.filter(|a| !a.trim().is_empty()) {
            return a.trim().to_owned();
        }
        if !self.audit.actor.trim().is_empty() {
            return self.audit.actor.trim().to_owned();
        }
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(login_name)
            .unwrap_or_else(|| "unknown".into());
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        if host.is_empty() {
            user
        } else {
            format!("{user}@{host}")
        }
    }

    /// The engine configuration.
    pub fn engine(&self) -> vigil_engine::EngineConfig {
        vigil_engine::EngineConfig {
            kind: self.engine.kind,
            intra_threads: self.engine.threads,
            library: Some(self.engine.onnxruntime_library.clone())
                .filter(|p| !p.as_os_str().is_empty()),
            device: self.engine.device,
            spin_wait: self.engine.spin_wait,
        }
    }

    /// How a model's engines are placed on this machine's cores: how many instances, each
    /// with the returned engine configuration. The one rule `vigil score` and `vigil serve`
    /// share: `instances` given (and not 0) is kept; otherwise as many as fit the cores with
    /// engine.threads threads each. engine.threads = 0 splits the cores among the instances,
    /// so with neither set there is one single-threaded instance per core: for throughput
    /// the best placement measured on CNNs small and large (bench/README.md).
    pub fn engine_placement(
        &self,
        instances: Option<usize>,
    ) -> (usize, vigil_engine::EngineConfig) {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        placement(cores, self.engine(), instances)
    }

    /// The trusted public keys, read from their files.
    pub fn trusted_keys(&self) -> anyhow::Result<Vec<vigil_core::bundle::PublicKey>> {
        self.bundle
            .trusted_keys
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read trusted key {}", p.display()))?;
                vigil_core::bundle::PublicKey::parse(&text)
                    .with_context(|| format!("trusted key {}", p.display()))
            })
            .collect()
    }
}

/// The login name of this process's user, from its uid and /etc/passwd (no libc needed).
fn login_name() -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let uid = std::fs::metadata("/proc/self").ok()?.uid();
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?;
            let id: u32 = f.nth(1)?.parse().ok()?;
            (id == uid).then(|| name.to_owned())
        })
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_defaults_parse() {
        let c: Config = Figment::from(Toml::string(DEFAULT_TOML)).extract().unwrap();
        assert_eq!(c.engine.threads, 0);
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.server.port, 8080);
        assert_eq!(c.server.request_timeout, std::time::Duration::from_secs(30));
    }

    #[test]
    fn a_duration_that_does_not_parse_is_an_error_naming_it() {
        let err = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string("[server]\nrequest_timeout = \"soon\"\n"))
            .extract::<Config>()
            .unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string("[store]\ndata_dri = \"/x\"\n"))
            .extract::<Config>()
            .unwrap_err();
        assert!(err.to_string().contains("data_dri"), "{err}");
    }
}

#[cfg(test)]
mod placement_tests {
    use super::placement;

    fn threads(t: usize) -> vigil_engine::EngineConfig {
        vigil_engine::EngineConfig {
            intra_threads: t,
            ..vigil_engine::EngineConfig::default()
        }
    }

    #[test]
    fn engines_fill_the_cores_one_way_or_the_other() {
        // (cores, engine.threads, instances asked) -> (instances, threads each)
        let cases = [
            (2, 0, None, (2, 1)),
            (2, 0, Some(0), (2, 1)),
            (2, 0, Some(1), (1, 2)),
            (8, 0, Some(2), (2, 4)),
            (8, 2, None, (4, 2)),
            (2, 4, None, (1, 4)),
            (2, 1, Some(3), (3, 1)),
            (1, 0, Some(4), (4, 1)),
        ];
        for (cores, t, asked, expected) in cases {
            let (n, e) = placement(cores, threads(t), asked);
            assert_eq!(
                (n, e.intra_threads),
                expected,
                "{cores} cores, {t} threads, {asked:?}"
            );
        }
    }
}

#[cfg(test)]
mod exit_tests {
    // An invalid config used to exit 1 instead of 5: the mapping missed the wrapped error.
    #[test]
    fn an_invalid_config_exits_as_invalid_input() {
        let err = super::Config::load(Some(std::path::Path::new("Cargo.toml"))).unwrap_err();
        assert_eq!(crate::exit::code_for(&err), std::process::ExitCode::from(5));
    }
}
