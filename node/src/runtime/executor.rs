//! The executor: a dedicated thread that owns the committed chain. It takes final blocks in
//! height order with their batches, drops transactions that were already committed (a
//! transaction submitted twice commits once), executes, commits in one atomic write with one
//! fsync, and reports the executed header back to the driver, which signs it.

use super::batches::{self, VerifiedBatch};
use super::internal::Internal;
use super::NodeShared;
use crate::chain::{BlockProposal, Chain};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use tally_consensus::{Block, QuorumCert};
use tally_ledger::codec;
use tally_ledger::primitives::AccountId;
use tally_ledger::tx::VerifiedTransaction;
use tally_ledger::Outcome;
use tokio::sync::mpsc;

/// A final block with every batch it names, in order.
pub(crate) struct CommitJob {
    /// The block's author (resolved in the epoch the block belongs to).
    pub proposer: AccountId,
    pub block: Block,
    pub qc: QuorumCert,
    pub batches: Vec<VerifiedBatch>,
}

/// Runs until the job channel closes.
pub(crate) fn run(
    mut chain: Chain,
    shared: Arc<NodeShared>,
    jobs: std::sync::mpsc::Receiver<CommitJob>,
    internal: mpsc::Sender<Internal>,
) {
    while let Ok(job) = jobs.recv() {
        if job.block.height <= chain.height() {
            continue;
        }
        let started = Instant::now();
        let span = tracing::info_span!(
            "execute",
            height = job.block.height,
            round = job.block.round
        );
        let _enter = span.enter();
        let txs = select_transactions(&chain, &shared, &job.batches);
        let proposal = BlockProposal {
            round: job.block.round,
            proposer: job.proposer,
            timestamp_ms: job.block.timestamp_ms,
            batch_digests: job.block.payload.iter().map(batches::to_hash).collect(),
            record: codec::encode(&(&job.block, &job.qc)),
            record_id: job.block.id().0,
        };
        let (header, receipts) = match chain.commit(&proposal, &txs) {
            Ok(r) => r,
            Err(e) => {
                shared.fail(format!("committing block {}: {e}", job.block.height));
                return;
            }
        };
        let m = &shared.metrics;
        m.block_execution_seconds
            .observe(started.elapsed().as_secs_f64());
        m.block_transactions.observe(receipts.len() as f64);
        m.consensus_committed_blocks.inc();
        m.consensus_height.set(header.height as i64);
        m.storage_size_bytes.set(shared.store.size_on_disk() as i64);
        let mut applied = 0u64;
        for r in &receipts {
            let decision = match r.outcome {
                Outcome::Applied => {
                    applied += 1;
                    "flag"
                }
                Outcome::Rejected => {
                    m.transactions_rejected
                        .with_label_values(&["execution", r.code.as_str()])
                        .inc();
                    "reject"
                }
            };
            for f in &r.flags {
                m.compliance_decisions
                    .with_label_values(&[f.rule_id.as_str(), decision])
                    .inc();
            }
        }
        m.transactions_committed
            .with_label_values(&["applied"])
            .inc_by(applied);
        m.transactions_committed
            .with_label_values(&["rejected"])
            .inc_by(receipts.len() as u64 - applied);
        shared.finish_inflight(&txs);
        tracing::debug!(
            height = header.height,
            txs = receipts.len(),
            state_root = %header.state_root,
            "block executed and committed"
        );
        shared.set_height(header.height);
        let msg = Internal::Executed {
            height: header.height,
            header_hash: header.hash(),
        };
        if internal.blocking_send(msg).is_err() {
            return;
        }
    }
}

/// The block's transactions in order, without those committed before or repeated within it.
fn select_transactions(
    chain: &Chain,
    shared: &NodeShared,
    batches: &[VerifiedBatch],
) -> Vec<VerifiedTransaction> {
    let total: usize = batches.iter().map(|b| b.txs.len()).sum();
    let mut seen = HashSet::with_capacity(total);
    let mut out = Vec::with_capacity(total);
    let mut duplicates = 0u64;
    for b in batches {
        for tx in b.txs.iter() {
            let committed = chain.store().tx_location(&tx.hash).ok().flatten().is_some();
            if committed || !seen.insert(tx.hash) {
                duplicates += 1;
                continue;
            }
            out.push(tx.clone());
        }
    }
    if duplicates > 0 {
        shared
            .metrics
            .transactions_rejected
            .with_label_values(&["execution", "duplicate"])
            .inc_by(duplicates);
    }
    out
}
