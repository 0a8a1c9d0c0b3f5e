//! `vigil alerts`: the configured alert rules as Prometheus alerting rules, and the stored
//! alert history (what `vigil serve` notified, firing and resolved).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use super::Context;
use super::common::{block_on, open_monitor_store};
use crate::config::ConfigError;
use crate::output;

/// An example rule, for `--help`.
const EXAMPLE_RULE: &str = "\
Rules live in the [alerts] section of the configuration (--config FILE), for example:

  [alerts]
  interval = \"30s\"

  [[alerts.rules]]
  name = \"weldnet_ood_high\"
  signal = \"ood_share\"          # drift, { drift_signal = \"embedding.mmd\" }, flagged_share,
                                # mean_confidence, error_rate, latency_p99_seconds
  model = \"weldnet\"             # left out: every served model
  comparison = \">\"
  threshold = 0.05              # shares are fractions: 5% is 0.05
  window = \"15m\"
  for = \"5m\"
  severity = \"critical\"
  cooldown = \"1h\"

  [[alerts.webhooks]]
  url = \"http://alerts.plant.local:9000/vigil\"
  format = \"json\"               # or \"slack\"

`vigil serve` evaluates the rules every interval, posts each firing and resolved
notification to the webhooks and keeps it in the store (GET /v1/alerts).";

/// Alert subcommands.
#[derive(Debug, Subcommand)]
#[command(after_long_help = EXAMPLE_RULE)]
pub enum AlertsCommand {
    /// Write the configured [[alerts.rules]] as a Prometheus alerting-rules file (YAML), to
    /// run the same rules in Prometheus over `vigil serve`'s /metrics.
    ///
    /// Example: vigil --config vigil.toml alerts export-prometheus --out vigil-rules.yml &&
    /// promtool check rules vigil-rules.yml
    #[command(after_long_help = EXAMPLE_RULE)]
    ExportPrometheus {
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// The stored alert history, newest first: every notification `vigil serve` sent, firing
    /// and resolved.
    ///
    /// Example: vigil alerts list --limit 20
    #[command(after_long_help = EXAMPLE_RULE)]
    List {
        /// At most this many notifications (default 50).
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an alerts subcommand.
pub fn run(ctx: &Context, cmd: AlertsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AlertsCommand::ExportPrometheus { out } => {
            let rules = &ctx.config.alerts.rules;
            vigil_core::monitor::alert::validate_rules(rules)
                .map_err(|e| ConfigError::Invalid(format!("[alerts]: {e}")))?;
            let yaml = vigil_core::monitor::alert::prometheus_rules(rules);
            match out {
                Some(path) => {
                    std::fs::write(&path, &yaml)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("{} rule(s) written to {}", rules.len(), path.display());
                }
                None => print!("{yaml}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        AlertsCommand::List { limit, json } => block_on(async {
            let store = open_monitor_store(ctx).await?;
            let events = store.alert_events(limit.max(1)).await?;
            if json {
                output::json(&events)?;
            } else if events.is_empty() {
                println!("no alert notifications stored yet");
            } else {
                let rows: Vec<Vec<String>> = events
                    .iter()
                    .map(|e| {
                        vec![
                            e.at.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string(),
                            e.state.to_string(),
                            e.severity.clone(),
                            e.rule.clone(),
                            e.model.clone().unwrap_or_else(|| "-".to_owned()),
                            e.value.to_string(),
                            e.message.clone(),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "AT", "STATE", "SEVERITY", "RULE", "MODEL", "VALUE", "MESSAGE",
                    ],
                    &rows,
                );
            }
            Ok(ExitCode::SUCCESS)
        })?,
    }
}
