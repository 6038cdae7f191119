//! The multi-currency ledger: state, accounts and assets, receipts, and deterministic execution
//! of committed blocks.

mod accounts;
mod execute;
mod receipt;
pub mod state;

pub use accounts::{account_key, asset_key, AccountState, AssetInfo};
pub use execute::{execute_block, BlockContext, BlockOutput};
pub use receipt::{receipt_root, Event, Flag, Outcome, Receipt, RejectCode, Rejection};
pub use state::{Overlay, State, StateError, WriteSet};
