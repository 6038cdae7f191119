//! Developer and operator tooling: the local devnet and `tally bench`, the load generator (and
//! `tally load`, which points it at a running network), the
//! scripted scenarios, and testnet generation (`tally testnet init`). The validator runtime
//! never imports these.

pub mod devnet;
pub mod load;
pub mod loadgen;
pub mod scenarios;
pub mod testnet;
pub mod testnet_compliance;
