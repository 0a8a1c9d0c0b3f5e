//! `vigil audit`: list the audit log and verify its hash chain.

use std::process::ExitCode;

use clap::Subcommand;
use vigil_core::types::Sha256Digest;

use super::Context;
use super::common::{block_on, open_existing_registry};
use crate::exit::CheckFailed;
use crate::output;

/// Audit subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List entries, oldest first.
    Log {
        /// Only the last N entries.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain: finds edited, deleted, inserted and reordered entries and says
    /// which. Exits 1 when the log was tampered with.
    Verify {
        /// The head hash recorded earlier (printed by this command); catches entries cut off
        /// the end, which a chain alone cannot.
        #[arg(long, value_name = "HASH")]
        expect_head: Option<Sha256Digest>,
    },
}

/// Runs an audit subcommand.
pub fn run(ctx: &Context, cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    block_on(async {
        let registry = open_existing_registry(ctx).await?;
        let entries = registry.audit_log().await?;
        match cmd {
            AuditCommand::Log { limit, json } => {
                let skip = limit.map_or(0, |n| entries.len().saturating_sub(n));
                let shown = &entries[skip..];
                if json {
                    output::json(&shown)?;
                } else {
                    let rows: Vec<Vec<String>> = shown
                        .iter()
                        .map(|e| {
                            vec![
                                e.seq.to_string(),
                                e.at.clone(),
                                e.record.actor.clone(),
                                e.record.action.clone(),
                                e.record.subject.clone(),
                                e.record.reason.clone(),
                            ]
                        })
                        .collect();
                    output::table(
                        &["SEQ", "AT", "ACTOR", "ACTION", "SUBJECT", "REASON"],
                        &rows,
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            AuditCommand::Verify { expect_head } => {
                let problems = vigil_core::audit::verify(&entries, expect_head.as_ref());
                if problems.is_empty() {
                    match entries.last() {
                        Some(last) => println!(
                            "audit log intact: {} entries; head {} (entry {}). Keep this head hash elsewhere and pass it to --expect-head to also detect truncation.",
                            entries.len(),
                            last.hash,
                            last.seq
                        ),
                        None => println!("audit log intact: no entries yet"),
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                for p in &problems {
                    println!("TAMPERED: {p}");
                }
                Err(CheckFailed(format!(
                    "the audit log fails verification ({} problem(s))",
                    problems.len()
                ))
                .into())
            }
        }
    })?
}
