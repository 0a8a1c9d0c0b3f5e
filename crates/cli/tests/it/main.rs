//! End-to-end tests of the `vigil` binary: each test runs the real binary in a temporary
//! data directory and checks exit codes, output and what changed on disk.
#![allow(clippy::unwrap_used)]

mod alerts;
mod audit;
mod auth;
mod bundle;
mod common;
mod config;
mod drift;
mod http;
mod prediction_log;
mod registry;
mod review;
mod score;
mod serve;
mod tokens;
mod train;
