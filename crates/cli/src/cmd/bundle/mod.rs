//! `vigil bundle`: create, inspect, verify, sign, pack and unpack model bundles.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use vigil_core::bundle::{self, Bundle, SecretKey};
use vigil_core::types::Sha256Digest;

mod create;
mod inspect;
mod reference;

pub use self::create::{CreateArgs, create, parse_preprocess, read_preprocess};
use self::inspect::inspect;
pub use self::reference::ReferenceArgs;
use self::reference::rebuild_reference;
use super::Context;
use super::common::{VerifyOptions, verify_bundle};

/// Bundle subcommands.
#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Make a bundle from an ONNX model, its labels and its declared preprocessing; records
    /// golden outputs by running the model on the golden inputs.
    Create(Box<CreateArgs>),
    /// Show what a bundle holds, without running anything.
    Inspect {
        /// A bundle folder or archive.
        bundle: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a bundle: every file's hash, the signature, engine support and golden outputs.
    /// Exits 0 only when every check passes.
    Verify(VerifyArgs),
    /// Sign a bundle's manifest with an ed25519 key (writes the `signature` file).
    Sign {
        /// A bundle folder or archive (an archive is rewritten in place).
        bundle: PathBuf,
        /// The secret key file from `vigil keys generate`.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Pack a bundle folder into one archive (.tar, .tar.gz or .tgz) for transport.
    Pack {
        /// The bundle folder.
        bundle: PathBuf,
        /// The archive to write.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Write a copy of a bundle with a new reference profile (reference.json) computed from
    /// images, for drift and out-of-distribution monitoring; the model, preprocessing and
    /// golden cases stay as they are. The copy has a new identity (and no signature).
    ///
    /// Example: vigil bundle reference models/weldnet.tar --data data/weld/manifest.csv
    /// --split val --out weldnet-ref.tar
    Reference(ReferenceArgs),
    /// Unpack a bundle archive into a new folder, refusing unsafe entries.
    Unpack {
        /// The archive.
        archive: PathBuf,
        /// The folder to create.
        #[arg(long, short)]
        out: PathBuf,
    },
}

/// Arguments of `bundle verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A bundle folder or archive.
    pub bundle: PathBuf,
    /// Trust signatures by this public key (repeatable; adds to bundle.trusted_keys).
    #[arg(long, value_name = "FILE")]
    pub key: Vec<PathBuf>,
    /// Fail unless the bundle is signed by a trusted key.
    #[arg(long)]
    pub require_signature: bool,
    /// Skip running the model on the golden inputs (no engine needed).
    #[arg(long)]
    pub skip_golden: bool,
}

/// Runs a bundle subcommand.
pub fn run(ctx: &Context, cmd: BundleCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BundleCommand::Create(args) => {
            let bundle = create(ctx, &args)?;
            println!(
                "created {}:{} at {} (sha256 {})",
                bundle.manifest().model.name,
                bundle.manifest().model.version,
                args.out.display(),
                bundle.digest()
            );
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Reference(args) => {
            let b = rebuild_reference(ctx, &args)?;
            println!(
                "wrote {}:{} with a new reference profile to {} (sha256 {})",
                b.manifest().model.name,
                b.manifest().model.version,
                args.out.display(),
                b.digest()
            );
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Inspect { bundle, json } => {
            let b = Bundle::open(&bundle)
                .with_context(|| format!("cannot open bundle {}", bundle.display()))?;
            inspect(&b, json)?;
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Verify(args) => {
            let b = Bundle::open(&args.bundle)
                .with_context(|| format!("cannot open bundle {}", args.bundle.display()))?;
            let mut opts = VerifyOptions::from_config(ctx, &args.key, args.require_signature)?;
            opts.golden = !args.skip_golden;
            eprintln!("verifying {}", args.bundle.display());
            verify_bundle(ctx, &b, &opts)?;
            println!(
                "verified {}:{} (sha256 {})",
                b.manifest().model.name,
                b.manifest().model.version,
                b.digest()
            );
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Sign { bundle, key } => {
            let key = read_secret_key(&key)?;
            let digest = sign_in_place(&bundle, &key, &ctx.actor)?;
            println!(
                "signed {} (sha256 {digest}) with key {}",
                bundle.display(),
                key.public().key_id()
            );
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Pack { bundle, out } => {
            let b = Bundle::open(&bundle)
                .with_context(|| format!("cannot open bundle {}", bundle.display()))?;
            b.verify_files()
                .context("refusing to pack a bundle that does not verify")?;
            bundle::pack(b.root(), &out)?;
            println!("packed {} into {}", bundle.display(), out.display());
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Unpack { archive, out } => {
            if out.exists() {
                return Err(bundle::Error::Exists { path: out }.into());
            }
            let parent = out
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let staging = tempfile::Builder::new()
                .prefix(".vigil-unpack-")
                .tempdir_in(parent)
                .with_context(|| format!("cannot write in {}", parent.display()))?;
            bundle::unpack(&archive, staging.path())?;
            Bundle::open(staging.path())?.verify_files()?;
            std::fs::rename(staging.keep(), &out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            println!("unpacked {} into {}", archive.display(), out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads a secret key file.
pub fn read_secret_key(path: &Path) -> anyhow::Result<SecretKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key {}", path.display()))?;
    SecretKey::parse(&text).with_context(|| format!("key {}", path.display()))
}

/// Signs a bundle folder, or an archive by unpacking, signing and repacking it in place.
pub fn sign_in_place(path: &Path, key: &SecretKey, actor: &str) -> anyhow::Result<Sha256Digest> {
    let b = Bundle::open(path).with_context(|| format!("cannot open bundle {}", path.display()))?;
    b.verify_files()
        .context("refusing to sign a bundle that does not verify")?;
    b.sign(key, actor)?;
    if path.is_file() {
        // `b.root()` is the unpacked copy: repack it beside the original, then swap.
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.signing"));
        let _ = std::fs::remove_file(&tmp);
        let tmp_archive = tmp.with_file_name(format!(".{name}.signing{}", archive_suffix(&name)));
        let _ = std::fs::remove_file(&tmp_archive);
        bundle::pack(b.root(), &tmp_archive)?;
        std::fs::rename(&tmp_archive, path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
    }
    Ok(b.digest())
}

fn archive_suffix(name: &str) -> &'static str {
    if name.ends_with(".tar.gz") {
        ".tar.gz"
    } else if name.ends_with(".tgz") {
        ".tgz"
    } else {
        ".tar"
    }
}
