//! Tests of the trainer on real weld tiles (a small subset of data/weld, copied into a
//! temporary folder per test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod data;
mod export;
mod external;
mod train;
