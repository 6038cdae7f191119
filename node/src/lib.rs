#![doc = include_str!("../README.md")]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod api;
pub mod block;
pub mod chain;
pub mod cli;
pub mod codec;
pub mod compliance;
pub mod config;
pub mod genesis;
pub mod keys;
pub mod ledger;
pub mod loadgen;
pub mod merkle;
pub mod metrics;
pub mod primitives;
pub mod runtime;
pub mod scenarios;
pub mod storage;
pub mod testnet;
pub mod testnet_compliance;
pub mod tx;
