//! Serving peers' sync requests (blocks and batches) off the consensus loop, with limits.
//!
//! The loop does only what needs its memory: the uncommitted part of a block request (from
//! consensus) and batches still in the pool. Everything that reads the store runs on the
//! blocking pool, within [`BLOCK_REQUESTS_IN_FLIGHT`] and [`BATCH_REQUESTS_IN_FLIGHT`] (per peer,
//! and from all peers); a request over a limit is refused at once (its responder is
//! dropped, so the peer's request fails and it asks another validator). An answer holds at
//! most `SYNC_CHUNK` blocks whatever the request asks for (`Consensus::assemble_sync_answer`).

use super::wire::SyncResponse;
use super::NodeShared;
use crate::storage::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tally_consensus::{Block, BlockRequest, Consensus, EpochProof};
use tally_ledger::codec;
use tally_ledger::primitives::{Hash, Height};
use tally_network::{PeerId, Responder};

/// Limits per kind of request: (in flight per peer, in flight from all peers). Each kind has
/// its own allowance, so peers asking for blocks never starve batch fetches (which votes and
/// catching up wait on). A block request reads up to `SYNC_CHUNK` blocks; a batch request one
/// record of at most the batch size limit, and a validator catching up asks for many at once.
pub const BLOCK_REQUESTS_IN_FLIGHT: (usize, usize) = (2, 16);
/// See [`BLOCK_REQUESTS_IN_FLIGHT`].
pub const BATCH_REQUESTS_IN_FLIGHT: (usize, usize) = (16, 64);

type InFlight = Arc<Mutex<HashMap<(PeerId, &'static str), usize>>>;

/// The server: clone it freely, every clone shares the limits.
#[derive(Clone)]
pub(crate) struct SyncServer {
    shared: Arc<NodeShared>,
    in_flight: InFlight,
}

/// A request admitted under the limits; dropping it gives its slot back.
pub(crate) struct Slot {
    key: (PeerId, &'static str),
    in_flight: InFlight,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.in_flight.lock() {
            if let Some(n) = m.get_mut(&self.key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&self.key);
                }
            }
        }
    }
}

impl SyncServer {
    pub(crate) fn new(shared: Arc<NodeShared>) -> SyncServer {
        SyncServer {
            shared,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A slot for one request of `peer`, or `None` over a limit (counted as refused).
    pub(crate) fn admit(&self, peer: PeerId, kind: &'static str) -> Option<Slot> {
        let admitted = match self.in_flight.lock() {
            Ok(mut m) => {
                let (per_peer, all) = if kind == "batch" {
                    BATCH_REQUESTS_IN_FLIGHT
                } else {
                    BLOCK_REQUESTS_IN_FLIGHT
                };
                let total: usize = m.iter().filter(|(k, _)| k.1 == kind).map(|(_, n)| n).sum();
                let mine = m.get(&(peer, kind)).copied().unwrap_or(0);
                if total >= all || mine >= per_peer {
                    false
                } else {
                    *m.entry((peer, kind)).or_insert(0) += 1;
                    true
                }
            }
            Err(_) => false,
        };
        let outcome = if admitted { "served" } else { "refused" };
        self.shared
            .metrics
            .sync_requests
            .with_label_values(&[kind, outcome])
            .inc();
        admitted.then(|| Slot {
            key: (peer, kind),
            in_flight: self.in_flight.clone(),
        })
    }

    /// Answers a block request: committed blocks from the store, then `plan`'s uncommitted
    /// ones (see `Consensus::uncommitted_chain`); for a block unknown to consensus, the store's
    /// block index says where the chain ends.
    pub(crate) fn blocks(
        &self,
        slot: Slot,
        request: BlockRequest,
        plan: Option<(Height, Vec<Block>)>,
        respond: Responder,
    ) {
        let store = self.shared.store.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let response = match answer(&store, &request, plan) {
                (blocks, None) => SyncResponse::Blocks(blocks),
                (blocks, Some(proof)) => SyncResponse::BlocksToEpochEnd(blocks, proof),
            };
            respond.respond(codec::encode(&response));
        });
    }

    /// Answers a batch request: `held` from the pool, else from the store.
    pub(crate) fn batch(&self, slot: Slot, hash: Hash, held: Option<Vec<u8>>, respond: Responder) {
        let store = self.shared.store.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let bytes = held.or_else(|| store.batch(&hash).ok().flatten());
            respond.respond(codec::encode(&SyncResponse::Batch(
                bytes.map(serde_bytes::ByteBuf::from),
            )));
        });
    }
}

fn answer(
    store: &Store,
    request: &BlockRequest,
    plan: Option<(Height, Vec<Block>)>,
) -> (Vec<Block>, Option<EpochProof>) {
    let (top, upper) = match plan {
        Some(p) => p,
        None => match store.height_of_block(&request.block.0) {
            Ok(Some(h)) => (h, Vec::new()),
            _ => return (Vec::new(), None),
        },
    };
    let committed = |h: Height| super::stored_consensus_block(store, h);
    let blocks = Consensus::assemble_sync_answer(request, top, upper, &committed);
    let proof_at = |h: Height| {
        let bytes = store.epoch_proof(h).ok().flatten()?;
        codec::decode(&bytes, MAX_EPOCH_PROOF_BYTES).ok()
    };
    Consensus::cut_at_epoch_end(blocks, &proof_at)
}

/// Largest stored epoch proof decoded (a proof holds at most `SYNC_CHUNK` blocks).
pub(crate) const MAX_EPOCH_PROOF_BYTES: usize = 64 << 20;
