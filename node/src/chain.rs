//! The committed chain of one node: the store, the in-memory committed state and the last
//! header. Executing and committing the next block is one call; it is what the node runs for
//! every final block, what sync runs for fetched blocks, and what recovery tests replay.

use crate::storage::{StorageError, Store};
use std::path::Path;
use tally_ledger::block::BlockHeader;
use tally_ledger::compliance::DueProposal;
use tally_ledger::genesis::Genesis;
use tally_ledger::primitives::{AccountId, Hash, Height, TimestampMs};
use tally_ledger::tx::VerifiedTransaction;
use tally_ledger::{execute_block, BlockContext, Receipt, State, StateError};

/// Executing or committing a block failed. Either is fatal for the node: state must not move
/// on without its record.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The committed state holds an undecodable entry.
    #[error(transparent)]
    State(#[from] StateError),
    /// The genesis is invalid.
    #[error(transparent)]
    Genesis(#[from] tally_ledger::genesis::GenesisError),
}

/// What consensus decided about the next block; execution adds the rest of the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockProposal {
    /// Consensus round.
    pub round: u64,
    /// Proposer.
    pub proposer: AccountId,
    /// Agreed timestamp (must not go backwards; execution clamps it to the parent's).
    pub timestamp_ms: TimestampMs,
    /// The batches, in order.
    pub batch_digests: Vec<Hash>,
    /// Consensus's own record of the block (its block and quorum certificate, encoded), stored
    /// with the executed block so that a restarted node resumes consensus from it and serves it
    /// to peers that sync. Opaque to the ledger.
    pub record: Vec<u8>,
    /// Consensus's id of the block, indexed for peers that sync.
    pub record_id: [u8; 32],
}

/// The node's committed chain.
pub struct Chain {
    chain_id: String,
    store: Store,
    state: State,
    last: Option<BlockHeader>,
    genesis_time_ms: TimestampMs,
    last_write_seconds: f64,
    rules_version: u64,
}

impl Chain {
    /// The rule-set version in force: the one the last committed block was checked against.
    pub fn rules_version(&self) -> u64 {
        self.rules_version
    }

    /// How long the last commit took to write to the store, fsync included.
    pub fn last_write_seconds(&self) -> f64 {
        self.last_write_seconds
    }

    /// Opens the store in `dir`, initialising it from `genesis` the first time, and loads the
    /// committed state.
    pub fn open(dir: &Path, genesis: &Genesis) -> Result<Chain, ChainError> {
        let store = Store::open(dir)?;
        let initial = genesis.initial_state()?;
        store.init_genesis(genesis.hash(), &initial, &genesis.header(initial.root()))?;
        let height = store.committed_height()?;
        let last = store.block(height)?.map(|b| b.header);
        let state = store.load_state()?;
        // Read once here; afterwards execution reports it with every block.
        let rules_version = state
            .get_raw(tally_ledger::compliance::registry::RULES_KEY)
            .and_then(|raw| {
                tally_ledger::codec::decode::<tally_ledger::compliance::RuleSet>(raw, 1 << 24).ok()
            })
            .map_or(0, |r| r.version);
        Ok(Chain {
            chain_id: genesis.chain_id.clone(),
            state,
            store,
            last,
            genesis_time_ms: genesis.genesis_time_ms,
            last_write_seconds: 0.0,
            rules_version,
        })
    }

    /// Last committed height.
    pub fn height(&self) -> Height {
        self.last.as_ref().map_or(0, |h| h.height)
    }

    /// Last committed header.
    pub fn last_header(&self) -> Option<&BlockHeader> {
        self.last.as_ref()
    }

    /// The committed state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Executes the next block and commits it durably (one atomic batch, one fsync). Returns
    /// its header, its receipts and the governance proposals that came due at its start.
    pub fn commit(
        &mut self,
        proposal: &BlockProposal,
        txs: &[VerifiedTransaction],
    ) -> Result<(BlockHeader, Vec<Receipt>, Vec<DueProposal>), ChainError> {
        let height = self.height() + 1;
        let parent_time = self
            .last
            .as_ref()
            .map_or(self.genesis_time_ms, |h| h.timestamp_ms);
        let timestamp_ms = proposal.timestamp_ms.max(parent_time);
        let ctx = BlockContext {
            height,
            timestamp_ms,
        };
        let out = execute_block(&self.state, &ctx, txs)?;
        // Applied in place: if the store then fails, the error is fatal and the node restarts
        // from what is on disk, so memory never runs ahead of a committed record.
        self.state.apply(&out.writes);
        let header = BlockHeader {
            chain_id: self.chain_id.clone(),
            height,
            round: proposal.round,
            parent_hash: self.last.as_ref().map_or(Hash::ZERO, BlockHeader::hash),
            proposer: proposal.proposer,
            timestamp_ms,
            batch_digests: proposal.batch_digests.clone(),
            tx_count: txs.len() as u64,
            receipt_root: out.receipt_root,
            state_root: self.state.root(),
        };
        let writing = std::time::Instant::now();
        self.store.commit_block(
            &header,
            &out.receipts,
            &out.writes,
            &proposal.record,
            &proposal.record_id,
        )?;
        self.last_write_seconds = writing.elapsed().as_secs_f64();
        self.rules_version = out.rules_version;
        self.last = Some(header.clone());
        Ok((header, out.receipts, out.governance))
    }
}
