//! Integration tests for `vigil-store` on the embedded backend (SQLite + local folder).

#![allow(clippy::unwrap_used)]

mod access;
mod alias;
mod audit;
mod common;
mod failure;
mod monitor;
mod push;
mod review;
