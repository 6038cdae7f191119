//! Shared helpers for Tally's multi-node tests.
