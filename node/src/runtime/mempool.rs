//! The mempool: transactions that passed the stateless checks, waiting to be packed into a
//! batch. Bounded by count and bytes; when full, submissions are refused with `mempool_full`
//! (HTTP 429) instead of growing without limit. First in, first out, so the transactions of one
//! account submitted to one node keep their sequence order.

use crate::metrics::Metrics;
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Instant;
use tally_ledger::primitives::Hash;
use tally_ledger::tx::VerifiedTransaction;

pub use crate::api::AdmitError;

/// A transaction waiting for a batch, with the moment this node accepted it.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The verified transaction.
    pub tx: VerifiedTransaction,
    /// When the client's submission was accepted (for finality latency).
    pub received: Instant,
}

struct Inner {
    queue: VecDeque<Pending>,
    known: HashSet<Hash>,
    bytes: usize,
}

/// The bounded mempool.
pub struct Mempool {
    inner: Mutex<Inner>,
    max_txs: usize,
    max_bytes: usize,
    metrics: Metrics,
}

impl Mempool {
    /// An empty mempool holding at most `max_txs` transactions and `max_bytes` encoded bytes.
    pub fn new(max_txs: usize, max_bytes: usize, metrics: Metrics) -> Mempool {
        metrics.mempool_capacity_transactions.set(max_txs as i64);
        Mempool {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                known: HashSet::new(),
                bytes: 0,
            }),
            max_txs,
            max_bytes,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits verified transactions in order. A transaction already waiting is accepted again
    /// without a second copy (submission is idempotent).
    pub fn admit(&self, txs: Vec<VerifiedTransaction>) -> Vec<Result<Hash, AdmitError>> {
        let now = Instant::now();
        let mut inner = self.lock();
        let mut out = Vec::with_capacity(txs.len());
        let mut added = 0u64;
        for tx in txs {
            let hash = tx.hash;
            if inner.known.contains(&hash) {
                out.push(Ok(hash));
                continue;
            }
            let size = tx.signed.body.len() + 64;
            if inner.queue.len() >= self.max_txs || inner.bytes + size > self.max_bytes {
                out.push(Err(AdmitError::Full(inner.queue.len())));
                continue;
            }
            inner.known.insert(hash);
            inner.bytes += size;
            inner.queue.push_back(Pending { tx, received: now });
            added += 1;
            out.push(Ok(hash));
        }
        self.metrics.transactions_received.inc_by(added);
        self.update_gauges(&inner);
        out
    }

    /// Takes up to `max` transactions, oldest first.
    pub fn take(&self, max: usize) -> Vec<Pending> {
        let mut inner = self.lock();
        let n = max.min(inner.queue.len());
        let taken: Vec<Pending> = inner.queue.drain(..n).collect();
        for p in &taken {
            inner.known.remove(&p.tx.hash);
            inner.bytes -= p.tx.signed.body.len() + 64;
        }
        self.update_gauges(&inner);
        taken
    }

    /// True when no transaction fits: the API then refuses submissions before spending any
    /// work on them.
    pub fn is_full(&self) -> bool {
        let inner = self.lock();
        inner.queue.len() >= self.max_txs
            || inner.bytes + tally_ledger::tx::MAX_TX_BYTES > self.max_bytes
    }

    /// True if the transaction is waiting here.
    pub fn contains(&self, hash: &Hash) -> bool {
        self.lock().known.contains(hash)
    }

    /// Transactions waiting.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Age of the oldest waiting transaction.
    pub fn oldest_age(&self) -> Option<std::time::Duration> {
        self.lock().queue.front().map(|p| p.received.elapsed())
    }

    fn update_gauges(&self, inner: &Inner) {
        self.metrics
            .mempool_transactions
            .set(inner.queue.len() as i64);
        self.metrics.mempool_bytes.set(inner.bytes as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use tally_ledger::primitives::{AccountId, AssetCode};
    use tally_ledger::tx::{Payload, Transaction, Transfer};

    fn tx(seq: u64) -> VerifiedTransaction {
        let key = SigningKey::from_bytes(&[7; 32]);
        Transaction {
            chain_id: "t".into(),
            sender: AccountId(key.verifying_key().to_bytes()),
            sequence: seq,
            expiry_height: 10,
            payload: Payload::Transfer(Transfer {
                to: AccountId([1; 32]),
                asset: AssetCode::new("USD").unwrap(),
                amount: 1,
                memo: None,
                travel: None,
            }),
        }
        .sign(&key)
        .verify("t")
        .unwrap()
    }

    #[test]
    fn keeps_order_refuses_when_full_and_deduplicates() {
        let pool = Mempool::new(3, 1 << 20, Metrics::new("t").unwrap());
        let r = pool.admit(vec![tx(0), tx(1), tx(0), tx(2), tx(3)]);
        assert!(r[0].is_ok() && r[1].is_ok() && r[2].is_ok() && r[3].is_ok());
        assert_eq!(r[4], Err(AdmitError::Full(3)));
        assert_eq!(pool.len(), 3);
        let taken: Vec<u64> = pool.take(2).iter().map(|p| p.tx.tx.sequence).collect();
        assert_eq!(taken, vec![0, 1]);
        assert!(pool.admit(vec![tx(3)])[0].is_ok());
        let rest: Vec<u64> = pool.take(10).iter().map(|p| p.tx.tx.sequence).collect();
        assert_eq!(rest, vec![2, 3]);
        assert!(pool.is_empty());
    }

    #[test]
    fn the_byte_limit_holds() {
        let one = tx(0).signed.body.len() + 64;
        let pool = Mempool::new(100, one * 2, Metrics::new("t").unwrap());
        let r = pool.admit(vec![tx(0), tx(1), tx(2)]);
        assert!(r[0].is_ok() && r[1].is_ok());
        assert!(r[2].is_err());
    }
}
