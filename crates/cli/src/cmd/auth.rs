//! `vigil auth`: make tokens for the server's `[auth]`, and list the configured ones.

use std::process::ExitCode;

use clap::Subcommand;
use serde::Serialize;
use vigil_core::auth::{Role, Secret, TokenEntry, Tokens};

use crate::config::Config;
use crate::output;

/// Auth subcommands.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Make a token: prints its secret (once: give it to its holder) and the `[[auth.tokens]]`
    /// entry to add to the server's config, which holds only the secret's SHA-256.
    #[command(after_help = "\
Example:
  vigil auth token --name alice --role inspector
Then add the printed entry to the config file `vigil serve` reads, set `[auth] enabled = true`
and restart it. Alice signs in at /login with the secret, or a client sends it as
`Authorization: Bearer vgl_...`.")]
    Token {
        /// Who holds it: what the audit log and review verdicts record (1 to 80 characters,
        /// unique among the configured tokens).
        #[arg(long)]
        name: String,
        /// What it may do: viewer, inspector, operator or admin (each may do what the ones
        /// before it may).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Print the token as JSON (name, role, secret, sha256) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the configured tokens (names, roles, digest prefixes; never secrets) and whether
    /// auth is on.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse().map_err(|e: vigil_core::auth::AuthError| e.0)
}

/// A made token, as `--json` prints it.
#[derive(Debug, Serialize)]
struct MadeToken<'a> {
    name: &'a str,
    role: Role,
    secret: &'a str,
    sha256: &'a str,
}

/// A configured token, as `list` shows it.
#[derive(Debug, Serialize)]
struct Listed<'a> {
    name: &'a str,
    role: Role,
    sha256_prefix: &'a str,
}

/// Runs an auth subcommand.
pub fn run(cmd: AuthCommand, config: &Config) -> anyhow::Result<ExitCode> {
    match cmd {
        AuthCommand::Token { name, role, json } => {
            let secret = Secret::generate()?;
            let entry = TokenEntry {
                name,
                role,
                sha256: secret.digest(),
            };
            // Checked with the configured tokens: a name already in use is refused here,
            // not on the server's next start.
            let mut all = config.auth.tokens.clone();
            all.push(entry.clone());
            Tokens::new(all)?;
            if json {
                output::json(&MadeToken {
                    name: &entry.name,
                    role,
                    secret: secret.expose(),
                    sha256: &entry.sha256,
                })?;
            } else {
                println!(
                    "Token for {:?} ({role}). Give this secret to its holder; it is shown only \
                     now and cannot be recovered:\n\n  {}\n",
                    entry.name,
                    secret.expose()
                );
                println!(
                    "Add this to the config `vigil serve` reads (with `[auth] enabled = true`) \
                     and restart it:\n\n{}",
                    toml_entry(&entry)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AuthCommand::List { json } => {
            let listed: Vec<Listed<'_>> = config
                .auth
                .tokens
                .iter()
                .map(|t| Listed {
                    name: &t.name,
                    role: t.role,
                    sha256_prefix: t.sha256.get(..12).unwrap_or(&t.sha256),
                })
                .collect();
            if json {
                output::json(&serde_json::json!({
                    "enabled": config.auth.enabled,
                    "guard_predictions": config.auth.guard_predictions,
                    "guard_health": config.auth.guard_health,
                    "tokens": listed,
                }))?;
            } else {
                println!(
                    "auth is {}{}",
                    if config.auth.enabled { "on" } else { "off" },
                    if config.auth.enabled && config.auth.guard_predictions {
                        " (predictions need a token too)"
                    } else {
                        ""
                    }
                );
                for t in &listed {
                    println!("{:<24} {:<10} sha256 {}…", t.name, t.role, t.sha256_prefix);
                }
                if listed.is_empty() {
                    println!("no tokens configured (make one with `vigil auth token`)");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The entry as TOML for the config file.
fn toml_entry(e: &TokenEntry) -> String {
    format!(
        "[[auth.tokens]]\nname = {}\nrole = \"{}\"\nsha256 = \"{}\"",
        toml_string(&e.name),
        e.role,
        e.sha256
    )
}

/// A TOML basic string (names are checked free of control characters).
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_entry_is_toml_that_reads_back_as_the_entry() {
        let e = TokenEntry {
            name: r#"night "shift" \ line 2"#.into(),
            role: Role::Operator,
            sha256: "ab".repeat(32),
        };
        #[derive(serde::Deserialize)]
        struct Wrapper {
            auth: Tokens_,
        }
        #[derive(serde::Deserialize)]
        struct Tokens_ {
            tokens: Vec<TokenEntry>,
        }
        let back: Wrapper = toml::from_str(&toml_entry(&e)).unwrap();
        assert_eq!(back.auth.tokens, vec![e]);
    }
}
