//! The narrow interface between the HTTP API and the validator runtime: what the API reads and
//! the one thing it submits. The runtime implements it (`runtime::NodeShared`); the API knows
//! nothing else of the runtime, so it can be tested against any implementation.

use crate::metrics::Metrics;
use crate::storage::Store;
use tally_ledger::primitives::{AccountId, Hash, Height};
use tally_ledger::tx::VerifiedTransaction;

/// A snapshot of consensus progress.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Executed height.
    pub height: Height,
    /// Consensus round.
    pub round: u64,
    /// Consensus epoch.
    pub epoch: u64,
    /// Leader of the current round.
    pub leader: Option<AccountId>,
    /// Height of the highest block this node has seen certified by a quorum (its own or its
    /// peers'): what it would have executed if it were caught up.
    pub certified_height: Height,
    /// The first height at which a quorum certified a header other than the one this node
    /// executed: its state diverged from the network's, and it must be resynced.
    pub diverged_at: Option<Height>,
}

/// Why a transaction did not enter the mempool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// The mempool holds its maximum of transactions or bytes.
    #[error("the mempool is full ({0} transactions waiting); retry later")]
    Full(usize),
}

/// Request limits the API enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most transactions in one batch submission.
    pub max_batch_submit: usize,
}

/// What the API needs from a running validator.
pub trait Node: Send + Sync + 'static {
    /// The network's chain id.
    fn chain_id(&self) -> &str;
    /// This node's name.
    fn name(&self) -> &str;
    /// This node's validator key.
    fn account(&self) -> AccountId;
    /// Consensus progress.
    fn status(&self) -> Status;
    /// Executed height.
    fn height(&self) -> Height;
    /// The current epoch's validators, in consensus index order.
    fn validators(&self) -> Vec<AccountId>;
    /// Whether this node is a validator of the current epoch (only validators take
    /// submissions).
    fn is_validator(&self) -> bool;
    /// Whether the transaction waits in this node's mempool or uncommitted batches.
    fn is_pending(&self, hash: &Hash) -> bool;
    /// Peers connected now.
    fn connected_peers(&self) -> usize;
    /// The committed chain and state, for reads.
    fn store(&self) -> &Store;
    /// The node's metrics (the API records its own and renders all).
    fn metrics(&self) -> &Metrics;
    /// Request limits.
    fn limits(&self) -> Limits;
    /// Transactions waiting in the mempool.
    fn mempool_len(&self) -> usize;
    /// Whether the mempool refuses new transactions now.
    fn mempool_is_full(&self) -> bool;
    /// Offers verified transactions to the mempool; one result per transaction.
    fn admit(&self, txs: Vec<VerifiedTransaction>) -> Vec<Result<Hash, AdmitError>>;
}
