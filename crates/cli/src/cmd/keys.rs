//! `vigil keys`: make ed25519 signing keys.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use vigil_core::bundle::SecretKey;

/// Key subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a key pair: PREFIX.key (secret, mode 0600) and PREFIX.pub (share this one).
    Generate {
        /// Path prefix of the two files; existing files are never overwritten.
        #[arg(long, short, value_name = "PREFIX")]
        out: PathBuf,
    },
}

/// Runs a keys subcommand.
pub fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Generate { out } => {
            let (secret, public) = generate(&out)?;
            println!("secret key  {}  (keep it private)", secret.display());
            println!(
                "public key  {}  (give it to whoever verifies bundles)",
                public.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes a new key pair next to `prefix`; returns the two paths.
pub fn generate(prefix: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let key = SecretKey::generate()?;
    let secret_path = with_suffix(prefix, "key");
    let public_path = with_suffix(prefix, "pub");
    for p in [&secret_path, &public_path] {
        if p.exists() {
            return Err(vigil_core::bundle::Error::Exists { path: p.clone() }.into());
        }
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&secret_path)
        .with_context(|| format!("cannot create {}", secret_path.display()))?;
    f.write_all(key.to_file_text().as_bytes())?;
    std::fs::write(&public_path, key.public().to_file_text())
        .with_context(|| format!("cannot create {}", public_path.display()))?;
    Ok((secret_path, public_path))
}

fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}
