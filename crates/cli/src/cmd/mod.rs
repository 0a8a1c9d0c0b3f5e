//! One module per command group. Each parses its own arguments and calls into the library
//! crates; shared steps (verifying a bundle, opening the registry) live in [`common`].

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod bundle;
pub mod common;
pub mod demo;
mod demo_monitor;
pub mod doctor;
pub mod drift;
pub mod keys;
pub mod models;
pub mod review;
pub mod score;
pub mod serve;
pub mod simulate;
pub mod tokens;
pub mod train;

use crate::config::Config;

/// What every command gets.
#[derive(Debug)]
pub struct Context {
    /// The effective configuration.
    pub config: Config,
    /// Who is recorded in the audit log.
    pub actor: String,
}
