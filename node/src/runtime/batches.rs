//! Transaction batches: the unit of data dissemination. Each validator packs its mempool into
//! batches (by count or age) and gossips them. Signatures are verified once in the network, not
//! by every validator: the author verified each transaction when its client submitted it, the
//! f validators after the author (its checkers) verify the batch's signatures and sign an
//! attestation, and the others check everything but the signatures and wait for f + 1
//! attestations (at least one of them honest) before they propose or vote for the batch.
//! Consensus orders batch digests, never transactions (docs/consensus.md, "Verify once").

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use tally_consensus::Digest;
use tally_ledger::codec;
use tally_ledger::primitives::{AccountId, Hash};
use tally_ledger::tx::{
    check_attested_batch, verify_batch, SignedTransaction, TxError, VerifiedTransaction,
};

/// Domain tag of batch digests.
const BATCH_DOMAIN: &[u8] = b"tally/batch/v1";
/// Domain tag of batch attestations.
const ATTESTATION_DOMAIN: &[u8] = b"tally/batch-attestation/v1";
/// Digests a validator's attestations are remembered for, per validator: a flood of
/// attestations for batches nobody has evicts only its sender's own.
const ATTESTATIONS_PER_VALIDATOR: usize = 4_096;
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

/// How much of a received batch this validator checks itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Everything, every signature included: the author's checkers, fetched batches, and any
    /// batch whose attestations did not come in time.
    Signatures,
    /// Everything but the signatures; the batch is usable only once f + 1 validators attest it.
    Attested,
}

/// A batch that passed the checks its origin calls for: every signature (`signatures_checked`),
/// or all the rest, to be used once attested (see `Check`).
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
    /// True if this validator verified every signature itself.
    pub signatures_checked: bool,
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
        signatures_checked: true,
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
    check: Check,
) -> Result<VerifiedBatch, BatchError> {
    let batch: Batch = codec::decode(&bytes, max_bytes)?;
    if publisher.is_some_and(|p| p != batch.author) {
        return Err(BatchError::WrongAuthor);
    }
    if batch.txs.is_empty() || batch.txs.len() > max_txs {
        return Err(BatchError::BadSize(batch.txs.len(), max_txs));
    }
    let mut txs = Vec::with_capacity(batch.txs.len());
    let checked = match check {
        Check::Signatures => verify_batch(batch.txs, chain_id),
        Check::Attested => check_attested_batch(batch.txs, chain_id),
    };
    for (index, r) in checked.into_iter().enumerate() {
        txs.push(r.map_err(|error| BatchError::BadTransaction { index, error })?);
    }
    Ok(VerifiedBatch {
        digest: digest(&bytes),
        author: batch.author,
        nonce: batch.nonce,
        txs: Arc::new(txs),
        bytes: Arc::new(bytes),
        signatures_checked: check == Check::Signatures,
    })
}

/// A validator's signed statement that it holds the batch with this digest and verified every
/// signature in it. f + 1 of them from distinct validators of the current set make the batch
/// usable without checking its signatures again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The batch.
    pub digest: Digest,
    /// The attesting validator.
    pub validator: AccountId,
    /// Its signature over the domain-tagged digest.
    #[serde(with = "tally_ledger::primitives::signature_text")]
    pub signature: Signature,
}

fn attestation_message(digest: &Digest) -> Hash {
    codec::hash_with_domain(ATTESTATION_DOMAIN, &digest.0)
}

impl Attestation {
    /// Attests a batch.
    pub fn sign(digest: Digest, key: &SigningKey) -> Attestation {
        Attestation {
            digest,
            validator: AccountId(key.verifying_key().to_bytes()),
            signature: key.sign(&attestation_message(&digest).0),
        }
    }

    /// True if the signature is the validator's over the digest.
    pub fn verify(&self) -> bool {
        VerifyingKey::from_bytes(&self.validator.0)
            .and_then(|k| k.verify_strict(&attestation_message(&self.digest).0, &self.signature))
            .is_ok()
    }
}

/// The checkers of an author's batches: the `faults` validators after it in index order.
pub fn is_checker(author: usize, me: usize, validators: usize, faults: usize) -> bool {
    validators > 0 && (1..=faults).any(|k| (author + k) % validators == me)
}

/// Verified attestations, by digest, bounded per validator.
#[derive(Default)]
pub struct Attestations {
    by_digest: HashMap<Digest, Vec<AccountId>>,
    by_validator: HashMap<AccountId, VecDeque<Digest>>,
}

impl Attestations {
    /// Records a (verified) attestation.
    pub fn add(&mut self, digest: Digest, validator: AccountId) {
        let attesters = self.by_digest.entry(digest).or_default();
        if !attesters.contains(&validator) {
            attesters.push(validator);
            let order = self.by_validator.entry(validator).or_default();
            order.push_back(digest);
            if order.len() > ATTESTATIONS_PER_VALIDATOR {
                if let Some(old) = order.pop_front() {
                    if let Some(a) = self.by_digest.get_mut(&old) {
                        a.retain(|v| *v != validator);
                        if a.is_empty() {
                            self.by_digest.remove(&old);
                        }
                    }
                }
            }
        }
    }

    /// True if `validator` attested `digest`.
    pub fn has(&self, digest: &Digest, validator: &AccountId) -> bool {
        self.by_digest
            .get(digest)
            .is_some_and(|a| a.contains(validator))
    }

    /// The distinct attesters of a digest among `members`.
    pub fn count(&self, digest: &Digest, members: &[AccountId]) -> usize {
        self.by_digest
            .get(digest)
            .map_or(0, |a| a.iter().filter(|v| members.contains(v)).count())
    }

    /// Forgets a digest (committed or refused); its entries in the per-validator order age out.
    pub fn forget(&mut self, digest: &Digest) {
        self.by_digest.remove(digest);
    }

    /// Digests with at least one attestation.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// True when nothing is attested.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// The batches a validator holds and has not yet seen committed, in arrival order. Only usable
/// ones (attested, or checked here) are proposed.
#[derive(Default)]
pub struct BatchPool {
    held: HashMap<Digest, VerifiedBatch>,
    attested: HashSet<Digest>,
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

    /// Marks a held batch as attested by f + 1 validators: it may be proposed, and voted for.
    pub fn mark_attested(&mut self, d: &Digest) {
        if self.held.contains_key(d) {
            self.attested.insert(*d);
        }
    }

    /// True if the batch is held and attested.
    pub fn is_attested(&self, d: &Digest) -> bool {
        self.attested.contains(d)
    }

    /// Records that this validator verified every signature of a held batch itself.
    pub fn mark_checked(&mut self, d: &Digest) {
        if let Some(b) = self.held.get_mut(d) {
            b.signatures_checked = true;
        }
    }

    /// True if a block may name the batch as far as this validator can tell: held, and either
    /// attested or checked here signature by signature.
    pub fn is_usable(&self, d: &Digest) -> bool {
        self.held
            .get(d)
            .is_some_and(|b| b.signatures_checked || self.attested.contains(d))
    }

    /// Drops a held batch that failed its checks.
    pub fn remove(&mut self, d: &Digest) -> Option<VerifiedBatch> {
        self.attested.remove(d);
        self.held.remove(d)
    }

    /// True if a held batch is usable (it could be proposed, unless a block already names it).
    pub fn has_usable(&self) -> bool {
        self.order
            .iter()
            .any(|d| self.held.contains_key(d) && self.is_usable(d))
    }

    /// Up to `max` usable, uncommitted digests, oldest first, leaving out `exclude`; within the
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
            .filter(|d| !exclude.contains(d) && self.is_usable(d))
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
        self.attested.remove(d);
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
        let v = verify(b.bytes.to_vec(), "c", 1 << 20, 100, None, Check::Signatures).unwrap();
        assert_eq!(v.digest, b.digest);
        assert_eq!(v.txs.len(), 10);
        assert_eq!(v.txs[3].hash, b.txs[3].hash);
    }

    #[test]
    fn forged_truncated_or_oversized_batches_are_refused() {
        let b = pack(AccountId([1; 32]), 0, txs(3));
        let mut bad: Batch = codec::decode(&b.bytes, 1 << 20).unwrap();
        bad.txs[1].signature = SigningKey::from_bytes(&[9; 32]).sign_placeholder();
        let e = verify(
            codec::encode(&bad),
            "c",
            1 << 20,
            100,
            None,
            Check::Signatures,
        )
        .unwrap_err();
        assert_eq!(e.reason(), "bad_transaction");
        let e = verify(
            b.bytes[..b.bytes.len() - 3].to_vec(),
            "c",
            1 << 20,
            100,
            None,
            Check::Signatures,
        )
        .unwrap_err();
        assert_eq!(e.reason(), "malformed");
        assert_eq!(
            verify(b.bytes.to_vec(), "c", 1 << 20, 2, None, Check::Signatures)
                .unwrap_err()
                .reason(),
            "bad_size"
        );
        assert_eq!(
            verify(
                b.bytes.to_vec(),
                "other",
                1 << 20,
                100,
                None,
                Check::Signatures
            )
            .unwrap_err()
            .reason(),
            "bad_transaction"
        );
    }

    #[test]
    fn a_gossiped_batch_must_name_its_publisher_as_author() {
        let b = pack(AccountId([1; 32]), 0, txs(2));
        let bytes = b.bytes.to_vec();
        let e = verify(
            bytes.clone(),
            "c",
            1 << 20,
            100,
            Some(AccountId([2; 32])),
            Check::Signatures,
        )
        .unwrap_err();
        assert_eq!(e.reason(), "wrong_author");
        assert!(verify(
            bytes,
            "c",
            1 << 20,
            100,
            Some(AccountId([1; 32])),
            Check::Signatures
        )
        .is_ok());
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

    #[test]
    fn an_attested_check_skips_only_the_signatures() {
        let b = pack(AccountId([1; 32]), 0, txs(3));
        let mut forged: Batch = codec::decode(&b.bytes, 1 << 20).unwrap();
        forged.txs[1].signature = SigningKey::from_bytes(&[9; 32]).sign_placeholder();
        let bytes = codec::encode(&forged);
        let v = verify(bytes.clone(), "c", 1 << 20, 100, None, Check::Attested).unwrap();
        assert!(
            !v.signatures_checked,
            "the batch must wait for attestations"
        );
        assert_eq!(
            verify(bytes, "c", 1 << 20, 100, None, Check::Signatures)
                .unwrap_err()
                .reason(),
            "bad_transaction"
        );
        assert_eq!(
            verify(
                b.bytes.to_vec(),
                "other",
                1 << 20,
                100,
                None,
                Check::Attested
            )
            .unwrap_err()
            .reason(),
            "bad_transaction",
            "the chain, encoding and shape are still checked"
        );
    }

    #[test]
    fn an_unattested_batch_is_usable_only_once_checked_here() {
        let mut pool = BatchPool::default();
        let b = pack(AccountId([1; 32]), 0, txs(2));
        let mut unchecked = b.clone();
        unchecked.signatures_checked = false;
        pool.insert(unchecked);
        assert!(!pool.is_usable(&b.digest));
        assert!(
            pool.payload(&[], 10).is_empty(),
            "nothing unusable is proposed"
        );
        pool.mark_checked(&b.digest);
        assert!(pool.is_usable(&b.digest));
        assert_eq!(pool.payload(&[], 10), vec![b.digest]);
        assert!(pool.remove(&b.digest).is_some());
        assert!(!pool.is_usable(&b.digest));
    }

    #[test]
    fn attestations_are_verified_counted_per_member_and_bounded_per_validator() {
        let keys: Vec<SigningKey> = (1..=3).map(|i| SigningKey::from_bytes(&[i; 32])).collect();
        let members: Vec<AccountId> = keys[..2]
            .iter()
            .map(|k| AccountId(k.verifying_key().to_bytes()))
            .collect();
        let d = Digest([7; 32]);
        let a = Attestation::sign(d, &keys[0]);
        assert!(a.verify());
        let mut forged = a.clone();
        forged.digest = Digest([8; 32]);
        assert!(!forged.verify());

        let mut store = Attestations::default();
        store.add(d, a.validator);
        store.add(d, a.validator);
        assert_eq!(store.count(&d, &members), 1, "one validator counts once");
        store.add(d, AccountId(keys[2].verifying_key().to_bytes()));
        assert_eq!(store.count(&d, &members), 1, "a non-member does not count");
        store.add(d, members[1]);
        assert_eq!(store.count(&d, &members), 2);

        // A flood from one validator evicts only its own attestations.
        for i in 0..(ATTESTATIONS_PER_VALIDATOR as u32 + 10) {
            let mut x = [0u8; 32];
            x[..4].copy_from_slice(&i.to_be_bytes());
            x[31] = 1;
            store.add(Digest(x), members[1]);
        }
        assert_eq!(store.count(&d, &members), 1);
        assert!(store.len() <= ATTESTATIONS_PER_VALIDATOR + 1);
    }

    #[test]
    fn the_checkers_are_the_f_validators_after_the_author() {
        let checkers = |author| {
            (0..7)
                .filter(|me| is_checker(author, *me, 7, 2))
                .collect::<Vec<_>>()
        };
        assert_eq!(checkers(0), vec![1, 2]);
        assert_eq!(checkers(6), vec![0, 1]);
        assert!((0..4).all(|me| !is_checker(0, me, 4, 0)));
    }
}
