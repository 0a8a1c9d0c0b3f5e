//! `vigil tokens`: API tokens kept in the store, made, listed and revoked while servers run.
//! A running `vigil serve` on the same store sees a new token, a revocation or an expiry
//! within a second, without a restart. Each creation and revocation is in the audit log.

use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde::Serialize;
use vigil_core::auth::{Role, Secret};
use vigil_store::access::{NewToken, TokenRow};

use super::Context;
use super::common::{block_on, existing_data_dir};
use crate::output;

/// `vigil tokens` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a token: prints its secret once (give it to its holder; only its SHA-256 is
    /// stored). Servers on this store accept it within a second.
    #[command(after_help = "\
Examples:
  vigil tokens create --name alice --role inspector --expires 90d
  vigil tokens create --name line-3-camera --role viewer --expires 2027-06-30T00:00:00Z
Alice signs in at /login with the secret, or a client sends it as
`Authorization: Bearer vgl_...`.")]
    Create {
        /// Who holds it: what the audit log and review verdicts record (1 to 80 characters;
        /// one token that is not revoked per name).
        #[arg(long)]
        name: String,
        /// What it may do: viewer, inspector, operator or admin (each may do what the ones
        /// before it may).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// When it stops working: a span from now (`12h`, `90d`, `1y`) or a time (RFC 3339).
        /// Without it the token works until revoked.
        #[arg(long, value_parser = parse_expiry)]
        expires: Option<DateTime<Utc>>,
        /// Print the token as JSON (id, name, role, expiry, secret) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List every token made in this store: id, name, role, status (active, expired,
    /// revoked), who made it and when. Never secrets.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id or by name: servers on this store refuse it within a second, and
    /// the browser sessions opened with it end at once.
    Revoke {
        /// The token's id (from `list`) or the name of the token that is not revoked.
        token: String,
        /// Why, for the audit log.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse().map_err(|e: vigil_core::auth::AuthError| e.0)
}

/// `90d` from now, or an RFC 3339 time; in the future either way.
fn parse_expiry(s: &str) -> Result<DateTime<Utc>, String> {
    let at = match DateTime::parse_from_rfc3339(s) {
        Ok(t) => t.with_timezone(&Utc),
        Err(_) => {
            let span = humantime::parse_duration(s).map_err(|_| {
                format!("{s:?} is neither a span (12h, 90d, 1y) nor an RFC 3339 time")
            })?;
            chrono::Duration::from_std(span)
                .ok()
                .and_then(|d| Utc::now().checked_add_signed(d))
                .ok_or_else(|| format!("{s:?} is too far in the future"))?
        }
    };
    if at <= Utc::now() {
        return Err(format!("{s:?} is in the past"));
    }
    Ok(at)
}

/// A made token, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Made<'a> {
    #[serde(flatten)]
    token: &'a TokenRow,
    secret: &'a str,
}

/// A token as `list` shows it.
#[derive(Debug, Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    token: &'a TokenRow,
    status: &'static str,
}

/// Runs a `vigil tokens` subcommand.
pub fn run(ctx: &Context, cmd: TokensCommand) -> anyhow::Result<ExitCode> {
    block_on(run_async(ctx, cmd))?
}

async fn run_async(ctx: &Context, cmd: TokensCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokensCommand::Create {
            name,
            role,
            expires,
            json,
        } => {
            let access = open(ctx, true).await?;
            let secret = Secret::generate()?;
            let token = access
                .create_token(&NewToken {
                    name,
                    role,
                    sha256: secret.digest(),
                    expires_at: expires,
                    created_by: ctx.actor.clone(),
                })
                .await?;
            if json {
                output::json(&Made {
                    token: &token,
                    secret: secret.expose(),
                })?;
            } else {
                let until = token
                    .expires_at
                    .map_or("until revoked".to_owned(), |t| format!("until {t}"));
                println!(
                    "Token {} for {:?} ({role}), valid {until}. Give this secret to its \
                     holder; it is shown only now and cannot be recovered:\n\n  {}\n",
                    token.id,
                    token.name,
                    secret.expose()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::List { json } => {
            let access = open(ctx, false).await?;
            let tokens = access.tokens().await?;
            let now = Utc::now();
            if json {
                let listed: Vec<Listed<'_>> = tokens
                    .iter()
                    .map(|token| Listed {
                        token,
                        status: token.status(now),
                    })
                    .collect();
                output::json(&listed)?;
            } else if tokens.is_empty() {
                println!("no tokens in this store (make one with `vigil tokens create`)");
            } else {
                let time = |t: Option<DateTime<Utc>>| {
                    t.map_or("-".to_owned(), |t| t.format("%Y-%m-%d %H:%M").to_string())
                };
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.to_string(),
                            t.name.clone(),
                            t.role.to_string(),
                            t.status(now).to_owned(),
                            time(t.expires_at),
                            format!("{} by {}", time(Some(t.created_at)), t.created_by),
                        ]
                    })
                    .collect();
                output::table(
                    &["ID", "NAME", "ROLE", "STATUS", "EXPIRES", "CREATED"],
                    &rows,
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::Revoke { token, reason } => {
            let access = open(ctx, false).await?;
            let t = access.revoke_token(&token, &ctx.actor, &reason).await?;
            println!(
                "Revoked token {} ({:?}, {}). Servers on this store refuse it within a second.",
                t.id, t.name, t.role
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The store's tokens. Only `create` may make a new store; the others need one to exist.
async fn open(
    ctx: &Context,
    create: bool,
) -> anyhow::Result<std::sync::Arc<dyn vigil_store::access::AccessStore>> {
    let data_dir = if create {
        ctx.config.data_dir()?
    } else {
        existing_data_dir(ctx)?
    };
    vigil_store::open_access(&ctx.config.store.open_options(data_dir.clone()))
        .await
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_spans_or_times_in_the_future() {
        let in_90d = parse_expiry("90d").unwrap();
        let days = (in_90d - Utc::now()).num_days();
        assert!((89..=90).contains(&days), "{days}");
        assert_eq!(
            parse_expiry("2999-01-01T00:00:00Z").unwrap().to_rfc3339(),
            "2999-01-01T00:00:00+00:00"
        );
        assert!(
            parse_expiry("2001-01-01T00:00:00Z")
                .unwrap_err()
                .contains("past")
        );
        assert!(parse_expiry("soon").unwrap_err().contains("neither"));
    }
}
