//! `vigil models`: the registry. Push verified bundles, list and show versions, move aliases,
//! read the alias history ("which version was in production at time T"), pull bundles back.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDateTime, Utc};
use clap::Subcommand;
use vigil_core::bundle::{self, Bundle, MANIFEST_FILE, SIGNATURE_FILE};
use vigil_core::types::{AliasName, ModelName, ModelRef, ModelVersion};
use vigil_store::{AliasChange, AliasOutcome, PushOutcome, PushRequest};

use super::Context;
use super::common::{VerifyOptions, block_on, open_registry, verify_bundle};
use crate::output;

/// Registry subcommands.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Verify a bundle (hashes, signature policy, golden outputs) and add it to the registry.
    /// Versions are immutable: the same version with other content is refused; pushing the
    /// identical bundle again changes nothing.
    Push {
        /// A bundle folder or archive.
        bundle: PathBuf,
        /// Why, for the audit log.
        #[arg(long, default_value = "")]
        reason: String,
        /// Trust signatures by this public key (repeatable).
        #[arg(long, value_name = "FILE")]
        key: Vec<PathBuf>,
        /// Refuse the bundle unless signed by a trusted key.
        #[arg(long)]
        require_signature: bool,
    },
    /// List models with their version count, latest version and aliases.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one version: NAME (latest), NAME:VERSION or NAME@ALIAS; with --all, every
    /// version of NAME.
    Show {
        /// The model reference.
        reference: ModelRef,
        /// List every version of the model.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move or remove aliases.
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Every alias change of a model (when, who, from, to, why); with --at, which version
    /// each alias pointed at at that time.
    History {
        /// The model.
        name: ModelName,
        /// Only this alias.
        #[arg(long)]
        alias: Option<AliasName>,
        /// A time (RFC 3339, or "YYYY-MM-DD HH:MM:SS" in UTC): answer which version each
        /// alias pointed at then.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        at: Option<DateTime<Utc>>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export a version as a bundle folder or archive, byte-identical to what was pushed.
    Pull {
        /// NAME, NAME:VERSION or NAME@ALIAS.
        reference: ModelRef,
        /// A new folder, or an archive (.tar, .tar.gz, .tgz).
        #[arg(long, short)]
        out: PathBuf,
    },
}

/// Alias subcommands.
#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Point ALIAS of NAME at VERSION (recorded in the history and the audit log).
    Set {
        /// The model.
        name: ModelName,
        /// The alias: production, candidate, shadow, or any name.
        alias: AliasName,
        /// The version; it must exist.
        version: ModelVersion,
        /// Why (required: the audit log asks).
        #[arg(long)]
        reason: String,
    },
    /// Remove an alias.
    Rm {
        /// The model.
        name: ModelName,
        /// The alias.
        alias: AliasName,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc());
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, fmt) {
            return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
        }
    }
    Err(format!(
        "{s:?} is not a time (use RFC 3339, e.g. 2026-11-25T14:00:00Z)"
    ))
}

/// Runs a models subcommand.
pub fn run(ctx: &Context, cmd: ModelsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ModelsCommand::Push {
            bundle,
            reason,
            key,
            require_signature,
        } => {
            let opts = VerifyOptions::from_config(ctx, &key, require_signature)?;
            push(ctx, &bundle, &reason, &opts)?;
            Ok(ExitCode::SUCCESS)
        }
        other => block_on(run_registry(ctx, other))?,
    }
}

/// Verifies and pushes a bundle; prints what happened.
pub fn push(
    ctx: &Context,
    path: &Path,
    reason: &str,
    opts: &VerifyOptions,
) -> anyhow::Result<PushOutcome> {
    let b = Bundle::open(path).with_context(|| format!("cannot open bundle {}", path.display()))?;
    eprintln!("verifying {}", path.display());
    let verified = verify_bundle(ctx, &b, opts).context("refusing to push")?;
    let signature = b.signature()?.map(|s| s.to_bytes());
    let outcome = block_on(async {
        let registry = open_registry(ctx).await?;
        let outcome = registry
            .push(PushRequest {
                manifest: b.manifest(),
                manifest_bytes: b.manifest_bytes(),
                files: &verified.files,
                signature: signature.as_deref(),
                actor: &ctx.actor,
                reason,
            })
            .await?;
        anyhow::Ok(outcome)
    })??;
    match &outcome {
        PushOutcome::Created(v) => {
            println!("pushed {}:{} (sha256 {})", v.name, v.version, v.digest)
        }
        PushOutcome::Unchanged(v) => println!(
            "{}:{} is already in the registry with the same content (sha256 {}); nothing changed",
            v.name, v.version, v.digest
        ),
    }
    Ok(outcome)
}

async fn run_registry(ctx: &Context, cmd: ModelsCommand) -> anyhow::Result<ExitCode> {
    let registry = open_registry(ctx).await?;
    match cmd {
        ModelsCommand::Push { .. } => unreachable!("push is handled before the registry opens"),
        ModelsCommand::List { json } => {
            let models = registry.list_models().await?;
            if json {
                output::json(&models)?;
            } else if models.is_empty() {
                println!("no models yet: push a bundle with `vigil models push BUNDLE`");
            } else {
                let rows: Vec<Vec<String>> = models
                    .iter()
                    .map(|m| {
                        vec![
                            m.name.to_string(),
                            m.versions.to_string(),
                            m.latest
                                .as_ref()
                                .map(ToString::to_string)
                                .unwrap_or_default(),
                            m.aliases
                                .iter()
                                .map(|(a, v)| format!("{a}={v}"))
                                .collect::<Vec<_>>()
                                .join(" "),
                            m.updated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "VERSIONS", "LATEST", "ALIASES", "UPDATED"], &rows);
            }
        }
        ModelsCommand::Show {
            reference,
            all,
            json,
        } => {
            let versions = if all {
                registry.list_versions(&reference.name).await?
            } else {
                vec![registry.resolve(&reference).await?]
            };
            if json {
                if all {
                    output::json(&versions)?;
                } else {
                    output::json(&versions[0])?;
                }
            } else {
                for v in &versions {
                    println!("{}:{}", v.name, v.version);
                    println!("  digest     sha256:{}", v.digest);
                    println!("  created    {}", v.created_at.to_rfc3339());
                    println!(
                        "  pushed     {} by {}",
                        v.pushed_at.to_rfc3339(),
                        v.pushed_by
                    );
                    let aliases: Vec<&str> = v.aliases.iter().map(|a| a.as_str()).collect();
                    println!(
                        "  aliases    {}",
                        if aliases.is_empty() {
                            "-".into()
                        } else {
                            aliases.join(", ")
                        }
                    );
                    println!("  signed     {}", if v.signed { "yes" } else { "no" });
                    for f in &v.files {
                        println!(
                            "  file       {}  {:>10}  {}",
                            f.digest.short(),
                            output::bytes(f.size),
                            f.path
                        );
                    }
                }
            }
        }
        ModelsCommand::Alias(AliasCommand::Set {
            name,
            alias,
            version,
            reason,
        }) => {
            let outcome = registry
                .set_alias(AliasChange {
                    name: &name,
                    alias: &alias,
                    version: &version,
                    actor: &ctx.actor,
                    reason: &reason,
                })
                .await?;
            match outcome {
                AliasOutcome::Moved { from: Some(from) } => {
                    println!("{name}@{alias}: {from} → {version}")
                }
                AliasOutcome::Moved { from: None } => println!("{name}@{alias}: (new) → {version}"),
                AliasOutcome::Unchanged => {
                    println!("{name}@{alias} already points at {version}; nothing changed")
                }
            }
        }
        ModelsCommand::Alias(AliasCommand::Rm {
            name,
            alias,
            reason,
        }) => {
            let was = registry
                .remove_alias(&name, &alias, &ctx.actor, &reason)
                .await?;
            println!("{name}@{alias} removed (it pointed at {was})");
        }
        ModelsCommand::History {
            name,
            alias,
            at,
            json,
        } => {
            if let Some(at) = at {
                let aliases: Vec<AliasName> = match alias {
                    Some(a) => vec![a],
                    None => {
                        let mut all: Vec<AliasName> = registry
                            .alias_history(&name, None)
                            .await?
                            .into_iter()
                            .map(|e| e.alias)
                            .collect();
                        all.sort();
                        all.dedup();
                        all
                    }
                };
                let mut answers = Vec::new();
                for a in aliases {
                    let v = registry.alias_at(&name, &a, at).await?;
                    answers.push(serde_json::json!({"alias": a, "version": v, "at": at}));
                    if !json {
                        match v {
                            Some(v) => println!("{name}@{a} at {}: {v}", at.to_rfc3339()),
                            None => println!("{name}@{a} at {}: (not set)", at.to_rfc3339()),
                        }
                    }
                }
                if json {
                    output::json(&answers)?;
                }
            } else {
                let events = registry.alias_history(&name, alias.as_ref()).await?;
                if json {
                    output::json(&events)?;
                } else if events.is_empty() {
                    println!("no alias changes for {name} yet");
                } else {
                    let dash = || "-".to_owned();
                    let rows: Vec<Vec<String>> = events
                        .iter()
                        .map(|e| {
                            vec![
                                e.at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                                e.alias.to_string(),
                                e.from.as_ref().map_or_else(dash, ToString::to_string),
                                e.to.as_ref()
                                    .map_or_else(|| "(removed)".to_owned(), ToString::to_string),
                                e.actor.clone(),
                                e.reason.clone(),
                            ]
                        })
                        .collect();
                    output::table(&["WHEN (UTC)", "ALIAS", "FROM", "TO", "WHO", "WHY"], &rows);
                }
            }
        }
        ModelsCommand::Pull { reference, out } => {
            let v = registry.resolve(&reference).await?;
            let files = registry.fetch(&v.name, &v.version).await?;
            write_pulled(&files, &out)?;
            println!(
                "pulled {}:{} (sha256 {}) into {}",
                v.name,
                v.version,
                v.digest,
                out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a fetched version as a folder (or archive), then checks it opens and verifies.
pub fn write_pulled(files: &vigil_store::BundleFiles, out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        return Err(bundle::Error::Exists {
            path: out.to_owned(),
        }
        .into());
    }
    let name = out.to_string_lossy();
    let archive = name.ends_with(".tar") || name.ends_with(".tar.gz") || name.ends_with(".tgz");
    let staging = super::common::staging_dir(out, ".vigil-pull-")?;
    let root = staging.path();
    std::fs::write(root.join(MANIFEST_FILE), &files.manifest_bytes)?;
    if let Some(sig) = &files.signature {
        std::fs::write(root.join(SIGNATURE_FILE), sig)?;
    }
    for (rel, bytes) in &files.files {
        bundle::check_relative_path(rel)?;
        let p = root.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&p, bytes)?;
    }
    let b = Bundle::open(root)?;
    b.verify_files()
        .context("the pulled bundle does not verify")?;
    if b.digest() != files.info.digest {
        // The store handed back other bytes than it recorded: damage, not the caller's error.
        return crate::exit::fail(
            vigil_core::ErrorKind::Unavailable,
            format!(
                "the pulled manifest's digest {} differs from the registry's {}",
                b.digest(),
                files.info.digest
            ),
        );
    }
    if archive {
        bundle::pack(root, out)?;
    } else {
        std::fs::rename(staging.keep(), out)
            .with_context(|| format!("cannot create {}", out.display()))?;
    }
    Ok(())
}
