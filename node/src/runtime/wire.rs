//! What validators say to each other beyond gossiped batches: direct messages (consensus,
//! signatures over executed headers, batch attestations) and sync requests (blocks, batches). Encoded with the
//! canonical codec; every inbound frame is decoded with a size limit and refused if it does not
//! decode, which penalises the peer.

use super::batches::Attestation;
use serde::{Deserialize, Serialize};
use tally_consensus::{Block, BlockRequest, EpochProof};
use tally_ledger::block::CommitVote;
use tally_ledger::primitives::{Hash, Height};

/// Gossip topic of transaction batches.
pub const BATCH_TOPIC: &str = "tally/batches/1";

/// A one-way message to one validator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DirectMessage {
    /// Bytes for the consensus state machine.
    Consensus(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A validator's signature over the header it executed at `height`.
    CommitVote {
        /// Height of the header.
        height: Height,
        /// The signature.
        vote: CommitVote,
    },
    /// A validator's attestation that it holds a batch and verified its every signature.
    Attestation(Attestation),
}

/// A question to a peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SyncRequest {
    /// Consensus blocks (see `BlockRequest`).
    Blocks(BlockRequest),
    /// A batch by digest.
    Batch(Hash),
}

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SyncResponse {
    /// Blocks, oldest first.
    Blocks(Vec<Block>),
    /// The batch's bytes, if held.
    Batch(Option<serde_bytes::ByteBuf>),
    /// Blocks, oldest first, the last of which ended an epoch, and the proof that it
    /// committed (see `Consensus::cut_at_epoch_end`).
    BlocksToEpochEnd(Vec<Block>, EpochProof),
}
