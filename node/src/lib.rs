#![doc = include_str!("../README.md")]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

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
