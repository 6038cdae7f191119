#![doc = include_str!("../README.md")]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod block;
pub mod codec;
pub mod compliance;
pub mod genesis;
pub mod ledger;
pub mod merkle;
pub mod primitives;
pub mod tx;
