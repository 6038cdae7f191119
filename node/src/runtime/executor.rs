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
use tally_ledger::primitives::{AccountId, Hash};
use tally_ledger::tx::VerifiedTransaction;
use tally_ledger::Outcome;
use tokio::sync::mpsc;

/// How often the store's size on disk is measured for `tally_storage_size_bytes`.
const SIZE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

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
    let mut rules_in_force = chain.rules_version();
    let mut sized_at: Option<Instant> = None;
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
        let lookup = |hash: &Hash| chain.store().tx_location(hash).map(|l| l.is_some());
        let (txs, duplicates) = match select_transactions(lookup, &job.batches) {
            Ok(selected) => selected,
            Err(e) => {
                // Never guess "not committed": that would execute a committed transaction
                // again on this node alone, and fork it from the others.
                shared.fail(format!(
                    "reading the transaction index for block {}: {e}",
                    job.block.height
                ));
                return;
            }
        };
        if duplicates > 0 {
            shared
                .metrics
                .transactions_rejected
                .with_label_values(&["execution", "duplicate"])
                .inc_by(duplicates);
        }
        let proposal = BlockProposal {
            round: job.block.round,
            proposer: job.proposer,
            timestamp_ms: job.block.timestamp_ms,
            batch_digests: job.block.payload.iter().map(batches::to_hash).collect(),
            record: codec::encode(&(&job.block, &job.qc)),
            record_id: job.block.id().0,
        };
        let (header, receipts, due) = match chain.commit(&proposal, &txs) {
            Ok(r) => r,
            Err(e) => {
                shared.fail(format!("committing block {}: {e}", job.block.height));
                return;
            }
        };
        let m = &shared.metrics;
        m.block_execution_seconds
            .observe(started.elapsed().as_secs_f64());
        m.storage_commit_seconds.observe(chain.last_write_seconds());
        m.block_transactions.observe(receipts.len() as f64);
        m.consensus_committed_blocks.inc();
        m.consensus_height.set(header.height as i64);
        // Sizing the store lists and stats every file of the database: a few times a minute
        // is enough for a gauge, and keeps the cost off every block.
        if sized_at.is_none_or(|t| t.elapsed() >= SIZE_EVERY) {
            m.storage_size_bytes.set(shared.store.size_on_disk() as i64);
            sized_at = Some(Instant::now());
        }
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
        log_block(&header, &receipts, applied, started);
        for p in &due {
            tracing::info!(
                height = header.height,
                proposal = p.id,
                action = p.kind,
                status = ?p.status,
                "governance proposal came due"
            );
        }
        let version = chain.rules_version();
        if version != rules_in_force {
            tracing::info!(
                height = header.height,
                version,
                previous = rules_in_force,
                "compliance rule set changed by governance"
            );
            rules_in_force = version;
        }
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

/// A committed block at info (at debug when empty: an idle network commits empty blocks), and
/// each compliance decision at info with the rule and version that made it. No personal data:
/// hashes, codes and rule ids only.
fn log_block(
    header: &tally_ledger::block::BlockHeader,
    receipts: &[tally_ledger::Receipt],
    applied: u64,
    started: Instant,
) {
    if receipts.is_empty() {
        tracing::debug!(height = header.height, state_root = %header.state_root, "empty block committed");
        return;
    }
    tracing::info!(
        height = header.height,
        txs = receipts.len(),
        applied,
        rejected = receipts.len() as u64 - applied,
        state_root = %header.state_root,
        ms = started.elapsed().as_millis() as u64,
        "block committed"
    );
    for r in receipts {
        for f in &r.flags {
            let decision = match r.outcome {
                Outcome::Applied => "flagged for review",
                Outcome::Rejected => "refused",
            };
            tracing::info!(
                height = header.height,
                tx = %r.tx_hash,
                rule = %f.rule_id,
                version = f.rule_version,
                code = %r.code,
                "compliance: payment {decision}"
            );
        }
    }
}

/// The block's transactions in order, without those committed before (`committed` says which)
/// or repeated within it, and how many were left out. A failed lookup is an error, never a
/// guess.
fn select_transactions<E>(
    committed: impl Fn(&Hash) -> Result<bool, E>,
    batches: &[VerifiedBatch],
) -> Result<(Vec<VerifiedTransaction>, u64), E> {
    let total: usize = batches.iter().map(|b| b.txs.len()).sum();
    let mut seen = HashSet::with_capacity(total);
    let mut out = Vec::with_capacity(total);
    let mut duplicates = 0u64;
    for b in batches {
        for tx in b.txs.iter() {
            if committed(&tx.hash)? || !seen.insert(tx.hash) {
                duplicates += 1;
                continue;
            }
            out.push(tx.clone());
        }
    }
    Ok((out, duplicates))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_ledger::primitives::AssetCode;
    use tally_ledger::tx::{Payload, Transaction, Transfer};

    fn tx(sequence: u64) -> VerifiedTransaction {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        Transaction {
            chain_id: "t".into(),
            sender: AccountId(key.verifying_key().to_bytes()),
            sequence,
            expiry_height: 10,
            payload: Payload::Transfer(Transfer {
                to: AccountId([1; 32]),
                asset: AssetCode::new("USD").expect("code"),
                amount: 1,
                memo: None,
                travel: None,
            }),
        }
        .sign(&key)
        .verify("t")
        .expect("valid")
    }

    fn batch(txs: Vec<VerifiedTransaction>) -> VerifiedBatch {
        VerifiedBatch {
            digest: Default::default(),
            author: AccountId([0; 32]),
            nonce: 0,
            txs: Arc::new(txs),
            bytes: Arc::new(Vec::new()),
            signatures_checked: true,
        }
    }

    #[test]
    fn committed_and_repeated_transactions_are_left_out_in_order() {
        let (a, b, c) = (tx(0), tx(1), tx(2));
        let batches = [
            batch(vec![a.clone(), b.clone()]),
            batch(vec![b.clone(), c.clone()]),
        ];
        let committed = |h: &Hash| Ok::<_, ()>(*h == a.hash);
        let (out, left_out) = select_transactions(committed, &batches).expect("no error");
        let hashes: Vec<Hash> = out.iter().map(|t| t.hash).collect();
        assert_eq!(hashes, vec![b.hash, c.hash]);
        assert_eq!(left_out, 2);
    }

    /// A storage error while asking "was this committed?" is not "no": the block is not
    /// executed at all (the executor stops the node), so no node re-executes a committed
    /// transaction that its peers skip.
    #[test]
    fn a_failed_index_lookup_is_an_error_not_a_guess() {
        let (a, b) = (tx(0), tx(1));
        let batches = [batch(vec![a.clone(), b.clone()])];
        let failing = |h: &Hash| if *h == b.hash { Err("disk") } else { Ok(false) };
        assert_eq!(select_transactions(failing, &batches).err(), Some("disk"));
    }
}
