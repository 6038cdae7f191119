//! Shared helpers for Tally's multi-node, fault and end-to-end tests.

pub mod cluster;
pub mod crash_workload;
pub mod forger;
