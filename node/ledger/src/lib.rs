#![doc = include_str!("../README.md")]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod accounts;
pub mod block;
pub mod codec;
pub mod compliance;
mod execute;
pub mod genesis;
pub mod merkle;
pub mod primitives;
mod receipt;
pub mod state;
pub mod tx;

// The multi-currency ledger: state, accounts and assets, receipts, and deterministic execution
// of committed blocks.
pub use accounts::{account_key, asset_key, AccountState, AssetInfo};
pub use execute::{execute_block, BlockContext, BlockOutput};
pub use receipt::{receipt_root, Event, Flag, Outcome, Receipt, RejectCode, Rejection};
pub use state::{Overlay, State, StateError, StateView, WriteSet};
