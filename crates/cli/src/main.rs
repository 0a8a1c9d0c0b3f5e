//! `vigil`: the one binary. Parses flags, loads the configuration, sets up logging, runs one
//! command and turns its outcome into an exit code that means something.

mod assets;
mod cmd;
mod config;
mod drift_export;
mod efficacy;
mod exit;
mod output;
mod reference;
mod score;
mod simulate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};

/// Deploy and watch image-classification models on an inspection line.
///
/// Vigil packages a model with its exact preprocessing into a verifiable bundle, keeps
/// immutable versions and movable aliases in a registry with a tamper-evident audit log, and
/// (in later releases) serves, monitors and retrains it.
///
/// Configuration: built-in defaults, then --config FILE, then VIGIL__SECTION__KEY environment
/// variables (for example VIGIL__STORE__DATA_DIR). `vigil config` shows the result.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, after_long_help = exit::EXIT_CODES_HELP)]
struct Cli {
    /// A TOML configuration file layered over the built-in defaults.
    #[arg(
        long,
        global = true,
        env = "VIGIL_CONFIG",
        value_name = "FILE",
        help_heading = "Global options"
    )]
    config: Option<PathBuf>,

    /// Who is recorded in the audit log for changes made by this command
    /// (default: audit.actor from the config, else user@host).
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        help_heading = "Global options"
    )]
    actor: Option<String>,

    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet", help_heading = "Global options")]
    verbose: u8,

    /// Only errors in the log.
    #[arg(short, long, global = true, help_heading = "Global options")]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make, inspect, verify, sign and pack model bundles.
    #[command(subcommand)]
    Bundle(cmd::bundle::BundleCommand),
    /// Generate signing keys.
    #[command(subcommand)]
    Keys(cmd::keys::KeysCommand),
    /// Tokens and roles for the server's [auth] in the config file: make one, list the
    /// configured ones. (Tokens a running server picks up at once: `vigil tokens`.)
    #[command(subcommand)]
    Auth(cmd::auth::AuthCommand),
    /// API tokens in the store: create (the secret is shown once), list, revoke. A running
    /// server sees each change within a second; each is in the audit log.
    #[command(subcommand)]
    Tokens(cmd::tokens::TokensCommand),
    /// The model registry: push, list, show, alias, history, pull.
    #[command(subcommand)]
    Models(cmd::models::ModelsCommand),
    /// Score many images offline: folders, globs or CSV manifests into CSV, JSON Lines or
    /// Parquet, in parallel, with a progress bar, --resume and a summary.
    Score(cmd::score::ScoreArgs),
    /// Serve the production version of every model over HTTP (native API, Open Inference
    /// Protocol, /metrics, /healthz, /readyz) until SIGTERM or Ctrl-C.
    Serve(cmd::serve::ServeArgs),
    /// Train a small CNN on the CPU (or run your own training command) and write a complete
    /// bundle: ONNX model, threshold for the recall target, golden outputs, evaluation report.
    Train(Box<cmd::train::TrainArgs>),
    /// The audit log: list entries and verify the hash chain.
    #[command(subcommand)]
    Audit(cmd::audit::AuditCommand),
    /// Drift reports: current images (the prediction log, or a folder of new images) against
    /// the model's reference images, as an HTML page and its JSON twin; exit 1 on drift.
    #[command(subcommand)]
    Drift(cmd::drift::DriftCommand),
    /// Alert rules as Prometheus rules, and the stored alert history.
    #[command(subcommand)]
    Alerts(cmd::alerts::AlertsCommand),
    /// The inspectors' review queue, and the reviewed images exported as a training set.
    #[command(subcommand)]
    Review(cmd::review::ReviewCommand),
    /// Walk through the whole loop on the shipped weld model, narrated for a trainee.
    Demo(cmd::demo::DemoArgs),
    /// Check the installation: configuration, data directory, database, engine.
    Doctor,
    /// Print the effective configuration (all layers applied) as TOML.
    Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return exit::code_for(&e);
        }
    };
    // The demo narrates on stdout; routine INFO logs would bury the story.
    let quiet_info = matches!(cli.command, Command::Demo(_)) && cli.verbose == 0;
    init_logging(&config, cli.verbose, cli.quiet, quiet_info);
    match run(cli, config) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::code_for(&e)
        }
    }
}

fn run(cli: Cli, config: Config) -> anyhow::Result<ExitCode> {
    let ctx = cmd::Context {
        actor: config.actor(cli.actor.as_deref()),
        config,
    };
    match cli.command {
        Command::Bundle(c) => cmd::bundle::run(&ctx, c),
        Command::Keys(c) => cmd::keys::run(c),
        Command::Auth(c) => cmd::auth::run(c, &ctx.config),
        Command::Tokens(c) => cmd::tokens::run(&ctx, c),
        Command::Models(c) => cmd::models::run(&ctx, c),
        Command::Audit(c) => cmd::audit::run(&ctx, c),
        Command::Alerts(c) => cmd::alerts::run(&ctx, c),
        Command::Review(c) => cmd::review::run(&ctx, c),
        Command::Score(a) => cmd::score::run(&ctx, a),
        Command::Serve(a) => cmd::serve::run(&ctx, a),
        Command::Train(a) => cmd::train::run(&ctx, *a),
        Command::Drift(c) => cmd::drift::run(&ctx, c),
        Command::Demo(a) => cmd::demo::run(&ctx, a),
        Command::Doctor => cmd::doctor::run(&ctx),
        Command::Config => {
            print!("{}", toml::to_string_pretty(&ctx.config)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn init_logging(config: &Config, verbose: u8, quiet: bool, warn_only: bool) {
    use tracing_subscriber::EnvFilter;
    let level = match (quiet, verbose) {
        (true, _) => "error".to_owned(),
        // The demo narrates drift itself; the runtime's drift warnings would repeat it.
        (false, 0) if warn_only => {
            "warn,vigil_runtime::monitor=error,vigil_server::alerting=error".to_owned()
        }
        (false, 0) => config.log.level.clone(),
        (false, 1) => "debug".to_owned(),
        (false, _) => "trace".to_owned(),
    };
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_target(false).init(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    // A clashing flag name used to panic at run time, on first use of the subcommand.
    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
