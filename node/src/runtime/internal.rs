//! The messages the node's tasks (batcher, verifiers, fetches, sync requests, executor) send to
//! the consensus driver (`core.rs`). Apart from both, so neither imports the other.

use super::batches::{self, VerifiedBatch};
use tally_consensus::{Block, Digest, EpochProof, ValidatorIndex};
use tally_ledger::primitives::{Hash, Height};
use tally_network::{MessageId, PeerId};

/// Messages from the node's other tasks to the driver.
pub(crate) enum Internal {
    /// A batch this validator packed (already gossiped).
    OwnBatch(VerifiedBatch),
    /// A batch received by gossip, fetched from a peer or read from disk, after verification.
    Verified {
        batch: Result<VerifiedBatch, batches::BatchError>,
        origin: Origin,
        expected: Option<Digest>,
        /// Arrival number of a gossiped batch: results are applied in arrival order, so that
        /// an author's batches enter the pool in the order it made them.
        order: Option<u64>,
    },
    /// No peer could supply the batch.
    FetchFailed(Digest),
    /// A batch held without its signatures checked has waited `ATTESTATION_GRACE`: unless
    /// attested by now, this validator checks them itself.
    CheckSignatures(Digest),
    /// Answer to a block request.
    SyncBlocks {
        from: ValidatorIndex,
        blocks: Vec<Block>,
        proof: Option<EpochProof>,
    },
    /// The executor committed `height` with this header hash.
    Executed { height: Height, header_hash: Hash },
}

/// Where a verified batch came from.
pub(crate) enum Origin {
    Gossip {
        message_id: MessageId,
        source: PeerId,
    },
    Peer(PeerId),
    Disk,
    /// A held batch whose signatures this validator checked after its attestations were late.
    SelfCheck,
}
