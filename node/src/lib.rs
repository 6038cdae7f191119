#![doc = include_str!("../README.md")]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

// The state machine lives in its own crate (node/ledger); its modules keep their paths here.
pub use tally_ledger::{block, codec, compliance, genesis, ledger, merkle, primitives, tx};

pub mod api;
pub mod chain;
pub mod cli;
pub mod config;
pub mod keys;
pub mod metrics;
pub mod process;
pub mod runtime;
pub mod storage;
pub mod tools;
