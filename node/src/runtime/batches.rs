//! Transaction batches: the unit of data dissemination. Each validator packs its mempool into
//! batches (by count or age) and gossips them; every receiver verifies the signatures once, in
//! parallel, and keeps the batch. Consensus orders batch digests, never transactions.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use tally_consensus::Digest;
use tally_ledger::codec;
use tally_ledger::primitives::{AccountId, Hash};
use tally_ledger::tx::{verify_batch, SignedTransaction, TxError, VerifiedTransaction};

/// Domain tag of batch digests.
const BATCH_DOMAIN: &[u8] = b"tally/batch/v1";
/// Digests of committed batches remembered to refuse late copies.
const COMMITTED_MEMORY: usize = 200_000;

/// A batch as gossiped and stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The validator that packed it.
    pub author: AccountId,
    /// The author's batch counter (makes equal contents from one author distinct).
    pub nonce: u64,
    /// The transactions, in the author's mempool order.
    pub txs: Vec<SignedTransaction>,
}

/// Why a received batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The bytes do not decode as a batch.
    #[error("batch does not decode: {0}")]
    Malformed(#[from] codec::CodecError),
    /// The batch is empty or over the size limit.
    #[error("batch holds {0} transactions, outside 1..={1}")]
    BadSize(usize, usize),
    /// The batch names another author than the validator that signed its gossip message.
    #[error("batch names another author than its publisher")]
    WrongAuthor,
    /// A transaction fails the stateless checks.
    #[error("transaction {index} of the batch is invalid: {error}")]
    BadTransaction {
        /// Its position.
        index: usize,
        /// Why.
        error: TxError,
    },
}

impl BatchError {
    /// A stable reason for metrics and peer penalties.
    pub fn reason(&self) -> &'static str {
        match self {
            BatchError::Malformed(_) => "malformed",
            BatchError::BadSize(..) => "bad_size",
            BatchError::WrongAuthor => "wrong_author",
            BatchError::BadTransaction { .. } => "bad_transaction",
        }
    }
}

/// The digest of a batch's canonical bytes.
pub fn digest(bytes: &[u8]) -> Digest {
    Digest(codec::hash_with_domain(BATCH_DOMAIN, bytes).0)
}

/// Converts a consensus digest into a ledger hash.
pub fn to_hash(d: &Digest) -> Hash {
    Hash(d.0)
}

/// A batch whose every signature was checked.
#[derive(Debug, Clone)]
pub struct VerifiedBatch {
    /// Its digest.
    pub digest: Digest,
    /// The author.
    pub author: AccountId,
    /// The author's batch counter.
    pub nonce: u64,
    /// Its transactions.
    pub txs: Arc<Vec<VerifiedTransaction>>,
    /// Its canonical bytes (served to peers that miss it).
    pub bytes: Arc<Vec<u8>>,
}

/// Packs verified transactions into a batch.
pub fn pack(author: AccountId, nonce: u64, txs: Vec<VerifiedTransaction>) -> VerifiedBatch {
    let batch = Batch {
        author,
        nonce,
        txs: txs.iter().map(|t| t.signed.clone()).collect(),
    };
    let bytes = codec::encode(&batch);
    VerifiedBatch {
        digest: digest(&bytes),
        author,
        nonce,
        txs: Arc::new(txs),
        bytes: Arc::new(bytes),
    }
}

/// Decodes and verifies a batch received from a peer (CPU heavy: call off the event loop).
/// `publisher` is the validator that signed the gossip message carrying it: the batch must name
/// it as author (checked before any signature). Batches fetched by digest are bound to the
/// digest a certified block named, and pass `None`.
pub fn verify(
    bytes: Vec<u8>,
    chain_id: &str,
    max_bytes: usize,
    max_txs: usize,
    publisher: Option<AccountId>,
) -> Result<VerifiedBatch, BatchError> {
    let batch: Batch = codec::decode(&bytes, max_bytes)?;
    if publisher.is_some_and(|p| p != batch.author) {
        return Err(BatchError::WrongAuthor);
    }
    if batch.txs.is_empty() || batch.txs.len() > max_txs {
        return Err(BatchError::BadSize(batch.txs.len(), max_txs));
    }
    let mut txs = Vec::with_capacity(batch.txs.len());
    for (index, r) in verify_batch(batch.txs, chain_id).into_iter().enumerate() {
        txs.push(r.map_err(|error| BatchError::BadTransaction { index, error })?);
    }
    Ok(VerifiedBatch {
        digest: digest(&bytes),
        author: batch.author,
        nonce: batch.nonce,
        txs: Arc::new(txs),
        bytes: Arc::new(bytes),
    })
}

/// The batches a validator holds and has not yet seen committed, in arrival order.
#[derive(Default)]
pub struct BatchPool {
    held: HashMap<Digest, VerifiedBatch>,
    order: VecDeque<Digest>,
    committed: HashSet<Digest>,
    committed_order: VecDeque<Digest>,
}

impl BatchPool {
    /// Adds a verified batch; false if it was already held or is already committed.
    pub fn insert(&mut self, batch: VerifiedBatch) -> bool {
        if self.committed.contains(&batch.digest) || self.held.contains_key(&batch.digest) {
            return false;
        }
        self.order.push_back(batch.digest);
        self.held.insert(batch.digest, batch);
        true
    }

    /// True if the batch is held.
    pub fn holds(&self, d: &Digest) -> bool {
        self.held.contains_key(d)
    }

    /// True if the batch was committed.
    pub fn is_committed(&self, d: &Digest) -> bool {
        self.committed.contains(d)
    }

    /// A held batch.
    pub fn get(&self, d: &Digest) -> Option<&VerifiedBatch> {
        self.held.get(d)
    }

    /// Up to `max` held, uncommitted digests, oldest first, leaving out `exclude`; within the
    /// result, each author's batches are in the order the author made them, so that one
    /// account's transactions keep their sequence order.
    pub fn payload(&mut self, exclude: &[Digest], max: usize) -> Vec<Digest> {
        while let Some(front) = self.order.front() {
            if self.held.contains_key(front) {
                break;
            }
            self.order.pop_front();
        }
        let exclude: HashSet<&Digest> = exclude.iter().collect();
        let mut chosen: Vec<&VerifiedBatch> = self
            .order
            .iter()
            .filter(|d| !exclude.contains(d))
            .filter_map(|d| self.held.get(d))
            .take(max)
            .collect();
        // Stable: batches of different authors keep their arrival order relative to each other
        // where the author order allows it.
        let first_seen: HashMap<AccountId, usize> = chosen
            .iter()
            .enumerate()
            .rev()
            .map(|(i, b)| (b.author, i))
            .collect();
        chosen.sort_by_key(|b| (first_seen.get(&b.author).copied().unwrap_or(0), b.nonce));
        chosen.iter().map(|b| b.digest).collect()
    }

    /// Number of held, uncommitted batches.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// True when no batch waits.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Marks a batch committed and hands it over (if held) for execution.
    pub fn commit(&mut self, d: &Digest) -> Option<VerifiedBatch> {
        if self.committed.insert(*d) {
            self.committed_order.push_back(*d);
            if self.committed_order.len() > COMMITTED_MEMORY {
                if let Some(old) = self.committed_order.pop_front() {
                    self.committed.remove(&old);
                }
            }
        }
        self.held.remove(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use tally_ledger::primitives::AssetCode;
    use tally_ledger::tx::{Payload, Transaction, Transfer};

    fn txs(n: u64) -> Vec<VerifiedTransaction> {
        let key = SigningKey::from_bytes(&[3; 32]);
        (0..n)
            .map(|seq| {
                Transaction {
                    chain_id: "c".into(),
                    sender: AccountId(key.verifying_key().to_bytes()),
                    sequence: seq,
                    expiry_height: 9,
                    payload: Payload::Transfer(Transfer {
                        to: AccountId([1; 32]),
                        asset: AssetCode::new("EUR").unwrap(),
                        amount: 5,
                        memo: None,
                        travel: None,
                    }),
                }
                .sign(&key)
                .verify("c")
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_packed_batch_verifies_on_the_other_side_with_the_same_digest() {
        let b = pack(AccountId([1; 32]), 0, txs(10));
        let v = verify(b.bytes.to_vec(), "c", 1 << 20, 100, None).unwrap();
        assert_eq!(v.digest, b.digest);
        assert_eq!(v.txs.len(), 10);
        assert_eq!(v.txs[3].hash, b.txs[3].hash);
    }

    #[test]
    fn forged_truncated_or_oversized_batches_are_refused() {
        let b = pack(AccountId([1; 32]), 0, txs(3));
        let mut bad: Batch = codec::decode(&b.bytes, 1 << 20).unwrap();
        bad.txs[1].signature = SigningKey::from_bytes(&[9; 32]).sign_placeholder();
        let e = verify(codec::encode(&bad), "c", 1 << 20, 100, None).unwrap_err();
        assert_eq!(e.reason(), "bad_transaction");
        let e = verify(
            b.bytes[..b.bytes.len() - 3].to_vec(),
            "c",
            1 << 20,
            100,
            None,
        )
        .unwrap_err();
        assert_eq!(e.reason(), "malformed");
        assert_eq!(
            verify(b.bytes.to_vec(), "c", 1 << 20, 2, None)
                .unwrap_err()
                .reason(),
            "bad_size"
        );
        assert_eq!(
            verify(b.bytes.to_vec(), "other", 1 << 20, 100, None)
                .unwrap_err()
                .reason(),
            "bad_transaction"
        );
    }

    #[test]
    fn a_gossiped_batch_must_name_its_publisher_as_author() {
        let b = pack(AccountId([1; 32]), 0, txs(2));
        let bytes = b.bytes.to_vec();
        let e = verify(bytes.clone(), "c", 1 << 20, 100, Some(AccountId([2; 32]))).unwrap_err();
        assert_eq!(e.reason(), "wrong_author");
        assert!(verify(bytes, "c", 1 << 20, 100, Some(AccountId([1; 32]))).is_ok());
    }

    trait Placeholder {
        fn sign_placeholder(&self) -> ed25519_dalek::Signature;
    }
    impl Placeholder for SigningKey {
        fn sign_placeholder(&self) -> ed25519_dalek::Signature {
            use ed25519_dalek::Signer;
            self.sign(b"not the transaction")
        }
    }

    #[test]
    fn the_pool_proposes_in_order_and_forgets_committed_batches() {
        let mut pool = BatchPool::default();
        let a = pack(AccountId([1; 32]), 0, txs(1));
        let b = pack(AccountId([1; 32]), 1, txs(2));
        let c = pack(AccountId([2; 32]), 0, txs(3));
        for x in [&a, &b, &c] {
            assert!(pool.insert(x.clone()));
        }
        assert!(!pool.insert(a.clone()));
        assert_eq!(pool.payload(&[b.digest], 10), vec![a.digest, c.digest]);
        assert!(pool.commit(&a.digest).is_some());
        assert!(
            !pool.insert(a.clone()),
            "a committed batch is not taken again"
        );
        assert_eq!(pool.payload(&[], 1), vec![b.digest]);
        assert_eq!(pool.len(), 2);
    }
}
