//! Transactions: the signed envelope, its stateless checks, and parallel batch verification.
//!
//! On the wire a transaction is `SignedTransaction { body, signature }` where `body` is the
//! canonical encoding of a [`Transaction`]. The transaction's id is
//! `hash_with_domain("tally/tx/v1", body)` — the chain id is inside the body — and the ed25519
//! signature is over that id. A receiver therefore decodes each body once and hashes the bytes
//! it received once; nothing is re-encoded.

use crate::codec::{self, CodecError};
use crate::compliance::{FreezeOp, GovAction, IdentityOp, TravelRuleData};
use crate::primitives::{AccountId, Amount, AssetCode, Hash, Height};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use ed25519_zebra::{VerificationKey, VerificationKeyBytes};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Domain tag of transaction ids (and of what the sender signs).
pub const TX_DOMAIN: &[u8] = b"tally/tx/v1";
/// Largest accepted encoded transaction, in bytes (a governance proposal carrying a rule set or
/// a sanctions list).
pub const MAX_TX_BYTES: usize = 128 * 1024;
/// Largest accepted payment or identity operation, in bytes.
pub const MAX_PAYMENT_BYTES: usize = 4 * 1024;
/// Longest accepted memo, in bytes.
pub const MAX_MEMO_BYTES: usize = 140;

/// What a transaction does. New families are added as variants; the encoding of existing
/// variants never changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Payload {
    /// Move `amount` of `asset` from the sender to `to`.
    Transfer(Transfer),
    /// The asset's issuer creates `amount` new units into `to` (backed by its reserves).
    Issue {
        /// Receiving account.
        to: AccountId,
        /// Asset to issue; the sender must be its issuer.
        asset: AssetCode,
        /// Minor units to create.
        amount: Amount,
    },
    /// The asset's issuer destroys `amount` units from its own balance (paid out in fiat).
    Redeem {
        /// Asset to redeem; the sender must be its issuer.
        asset: AssetCode,
        /// Minor units to destroy.
        amount: Amount,
    },
    /// A KYC provider's identity operation.
    Identity(IdentityOp),
    /// A regulator's or issuer's freeze operation.
    Freeze(FreezeOp),
    /// A member proposes a governance change taking effect at `effective_height`.
    Propose {
        /// The change.
        action: GovAction,
        /// The height at whose start it takes effect.
        effective_height: Height,
    },
    /// A member votes on an open proposal.
    Vote {
        /// Proposal id.
        proposal: u64,
        /// Yes or no.
        approve: bool,
    },
}

/// A payment between two accounts in one asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// Receiving account.
    pub to: AccountId,
    /// Asset moved.
    pub asset: AssetCode,
    /// Minor units moved; zero is refused.
    pub amount: Amount,
    /// Free text for the parties (at most [`MAX_MEMO_BYTES`]).
    pub memo: Option<String>,
    /// Originator and beneficiary information, required at or above the travel-rule threshold.
    pub travel: Option<TravelRuleData>,
}

/// The signed content of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The network this transaction is for; a transaction for another chain is refused.
    pub chain_id: String,
    /// The account that signs and pays.
    pub sender: AccountId,
    /// Must equal the sender's next sequence number: stops replays and orders an account's
    /// transactions.
    pub sequence: u64,
    /// The last block height at which this transaction may execute.
    pub expiry_height: Height,
    /// What it does.
    pub payload: Payload,
}

/// The envelope that travels: canonical body bytes and the sender's signature over the id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTransaction {
    /// Canonical encoding of the [`Transaction`].
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// ed25519 signature of the sender over the transaction id.
    #[serde(with = "crate::primitives::signature_text")]
    pub signature: Signature,
}

/// Why a transaction was refused before it reached the mempool. Each has a stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The envelope or body does not decode, or is too large.
    #[error("malformed transaction: {0}")]
    Malformed(#[from] CodecError),
    /// The body names another chain.
    #[error("transaction is for chain {found:?}, this is {expected:?}")]
    WrongChain {
        /// This network's chain id.
        expected: String,
        /// The chain id in the transaction.
        found: String,
    },
    /// The sender is not a valid ed25519 public key.
    #[error("sender is not a valid ed25519 public key")]
    BadSender,
    /// The signature does not verify against the sender's key.
    #[error("signature does not verify for the sender")]
    BadSignature,
    /// The memo is longer than allowed.
    #[error("memo longer than {MAX_MEMO_BYTES} bytes")]
    MemoTooLong,
    /// The amount is zero.
    #[error("amount must be greater than zero")]
    ZeroAmount,
    /// A field of the payload is invalid; the message names it.
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    /// The transaction expired before the current height.
    #[error("transaction expired at height {expiry}, current height is {height}")]
    Expired {
        /// The transaction's expiry height.
        expiry: Height,
        /// The height it was checked against.
        height: Height,
    },
}

impl TxError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            TxError::Malformed(CodecError::TooLarge { .. }) => "tx_too_large",
            TxError::Malformed(_) => "malformed_tx",
            TxError::WrongChain { .. } => "wrong_chain",
            TxError::BadSender => "bad_sender_key",
            TxError::BadSignature => "bad_signature",
            TxError::MemoTooLong => "memo_too_long",
            TxError::ZeroAmount => "zero_amount",
            TxError::InvalidPayload(_) => "invalid_payload",
            TxError::Expired { .. } => "expired",
        }
    }
}

/// A transaction whose encoding, shape and signature have been checked: decoded once, hashed
/// once. Only these enter the mempool, batches and blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedTransaction {
    /// The transaction id.
    pub hash: Hash,
    /// The decoded body.
    pub tx: Transaction,
    /// The envelope as received (for gossip and storage without re-encoding).
    pub signed: SignedTransaction,
}

impl Transaction {
    /// Signs the transaction: canonical body, id, signature.
    pub fn sign(&self, key: &SigningKey) -> SignedTransaction {
        let body = codec::encode(self);
        let id = codec::hash_with_domain(TX_DOMAIN, &body);
        SignedTransaction {
            body,
            signature: key.sign(&id.0),
        }
    }

    fn check_shape(&self, chain_id: &str) -> Result<(), TxError> {
        if self.chain_id != chain_id {
            return Err(TxError::WrongChain {
                expected: chain_id.to_owned(),
                found: self.chain_id.clone(),
            });
        }
        match &self.payload {
            Payload::Transfer(t) => {
                if t.memo.as_ref().is_some_and(|m| m.len() > MAX_MEMO_BYTES) {
                    return Err(TxError::MemoTooLong);
                }
                if t.amount == 0 {
                    return Err(TxError::ZeroAmount);
                }
                if let Some(travel) = &t.travel {
                    travel.check_shape().map_err(TxError::InvalidPayload)?;
                }
            }
            Payload::Issue { amount, .. } | Payload::Redeem { amount, .. } => {
                if *amount == 0 {
                    return Err(TxError::ZeroAmount);
                }
            }
            Payload::Identity(op) => op.check_shape().map_err(TxError::InvalidPayload)?,
            Payload::Freeze(op) => op.check_shape().map_err(TxError::InvalidPayload)?,
            Payload::Propose { action, .. } => {
                crate::compliance::governance::validate_action(action)
                    .map_err(TxError::InvalidPayload)?
            }
            Payload::Vote { .. } => {}
        }
        Ok(())
    }
}

impl SignedTransaction {
    /// The transaction id: hash of the body bytes.
    pub fn hash(&self) -> Hash {
        codec::hash_with_domain(TX_DOMAIN, &self.body)
    }

    /// Canonical bytes of the envelope.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes an envelope from untrusted bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedTransaction, TxError> {
        Ok(codec::decode(bytes, MAX_TX_BYTES)?)
    }

    /// Decodes the body and checks its size and shape.
    fn decode_checked(&self, chain_id: &str) -> Result<Transaction, TxError> {
        let tx: Transaction = codec::decode(&self.body, MAX_TX_BYTES)?;
        if self.body.len() > MAX_PAYMENT_BYTES && !matches!(tx.payload, Payload::Propose { .. }) {
            return Err(TxError::Malformed(CodecError::TooLarge {
                len: self.body.len(),
                max: MAX_PAYMENT_BYTES,
            }));
        }
        tx.check_shape(chain_id)?;
        Ok(tx)
    }

    /// Decodes the body and checks everything but the signature.
    fn open(&self, chain_id: &str) -> Result<Opened, TxError> {
        let tx = self.decode_checked(chain_id)?;
        let key = sender_key(&tx.sender.0)?;
        Ok(Opened {
            hash: self.hash(),
            tx,
            key,
        })
    }

    /// All stateless checks of one transaction, signature included.
    pub fn verify(self, chain_id: &str) -> Result<VerifiedTransaction, TxError> {
        let opened = self.open(chain_id)?;
        opened.verify_one(self)
    }
}

/// A decoded, shape-checked transaction whose signature is still to be checked.
/// Most decompressed sender keys a verification thread keeps.
const KEY_CACHE_ENTRIES: usize = 1 << 16;

thread_local! {
    /// Decompressing an ed25519 public key costs about as much as half a verification; payers
    /// send many transactions, so each verification thread keeps the keys it decompressed.
    static SENDER_KEYS: std::cell::RefCell<std::collections::HashMap<[u8; 32], VerificationKey>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// The sender's public key, decompressed (cached per thread). Small-order keys are refused:
/// under them a signature can verify for any message.
fn sender_key(bytes: &[u8; 32]) -> Result<VerificationKey, TxError> {
    if let Some(k) = SENDER_KEYS.with(|c| c.borrow().get(bytes).copied()) {
        return Ok(k);
    }
    let weak = VerifyingKey::from_bytes(bytes).map_or(true, |k| k.is_weak());
    if weak {
        return Err(TxError::BadSender);
    }
    let key = VerificationKey::try_from(*bytes).map_err(|_| TxError::BadSender)?;
    SENDER_KEYS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= KEY_CACHE_ENTRIES {
            c.clear();
        }
        c.insert(*bytes, key);
    });
    Ok(key)
}

struct Opened {
    hash: Hash,
    tx: Transaction,
    key: VerificationKey,
}

impl Opened {
    fn verify_one(self, signed: SignedTransaction) -> Result<VerifiedTransaction, TxError> {
        self.key
            .verify(&signed.signature, &self.hash.0)
            .map_err(|_| TxError::BadSignature)?;
        Ok(self.accept(signed))
    }

    fn accept(self, signed: SignedTransaction) -> VerifiedTransaction {
        VerifiedTransaction {
            hash: self.hash,
            tx: self.tx,
            signed,
        }
    }
}

/// Every stateless check but the signature's, for the transactions of a batch that a quorum of
/// attestations vouches for: f + 1 validators signed that they verified every signature in the
/// batch with this digest, so at least one honest validator did (docs/consensus.md, "Verify
/// once"). Never call it on transactions nobody attested.
pub fn check_attested_batch(
    txs: Vec<SignedTransaction>,
    chain_id: &str,
) -> Vec<Result<VerifiedTransaction, TxError>> {
    txs.into_iter()
        .map(|signed| {
            let tx = signed.decode_checked(chain_id)?;
            Ok(VerifiedTransaction {
                hash: signed.hash(),
                tx,
                signed,
            })
        })
        .collect()
}

/// Transactions per ed25519 batch verification; big enough to amortise, small enough to
/// spread over cores and to localise a bad signature cheaply.
const VERIFY_CHUNK: usize = 64;

/// Stateless checks of many transactions, signatures verified with ed25519 batch verification
/// in parallel chunks. A chunk that fails batch verification is re-checked one by one so that
/// only the bad transactions are refused. Results are in input order.
pub fn verify_batch(
    txs: Vec<SignedTransaction>,
    chain_id: &str,
) -> Vec<Result<VerifiedTransaction, TxError>> {
    let mut out: Vec<Result<VerifiedTransaction, TxError>> = Vec::with_capacity(txs.len());
    let chunks: Vec<Vec<SignedTransaction>> = chunked(txs, VERIFY_CHUNK);
    let verified: Vec<Vec<Result<VerifiedTransaction, TxError>>> = chunks
        .into_par_iter()
        .map(|chunk| verify_chunk(chunk, chain_id))
        .collect();
    for part in verified {
        out.extend(part);
    }
    out
}

fn chunked<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut chunks = Vec::with_capacity(items.len().div_ceil(size));
    let mut current = Vec::with_capacity(size);
    for item in items {
        current.push(item);
        if current.len() == size {
            chunks.push(std::mem::replace(&mut current, Vec::with_capacity(size)));
        }
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

fn verify_chunk(
    chunk: Vec<SignedTransaction>,
    chain_id: &str,
) -> Vec<Result<VerifiedTransaction, TxError>> {
    let opened: Vec<Result<Opened, TxError>> = chunk.iter().map(|s| s.open(chain_id)).collect();
    let mut batch = ed25519_zebra::batch::Verifier::new();
    for (o, s) in opened.iter().zip(&chunk) {
        if let Ok(o) = o {
            batch.queue((VerificationKeyBytes::from(o.key), s.signature, &o.hash.0));
        }
    }
    // Batch verification accepts or refuses the whole set; single verification then tells
    // which ones are bad. Both use the ZIP-215 (cofactored) equation, under which a batch
    // passes exactly when every signature in it passes alone: the two paths always agree,
    // whatever a client puts in R (docs/adr/0002-transaction-signatures.md).
    let all_good = batch.verify(rand::thread_rng()).is_ok();
    opened
        .into_iter()
        .zip(chunk)
        .map(|(o, s)| {
            let o = o?;
            if all_good {
                Ok(o.accept(s))
            } else {
                o.verify_one(s)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn transfer(from: &SigningKey, seq: u64, amount: Amount) -> SignedTransaction {
        Transaction {
            chain_id: "test".into(),
            sender: AccountId(from.verifying_key().to_bytes()),
            sequence: seq,
            expiry_height: 100,
            payload: Payload::Transfer(Transfer {
                to: AccountId([9; 32]),
                asset: AssetCode::new("USD").unwrap(),
                amount,
                memo: None,
                travel: None,
            }),
        }
        .sign(from)
    }

    #[test]
    fn a_signed_transaction_verifies_and_round_trips() {
        let s = transfer(&key(1), 0, 5);
        let back = SignedTransaction::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(back, s);
        let v = back.verify("test").unwrap();
        assert_eq!(v.hash, s.hash());
        assert_eq!(v.tx.sequence, 0);
    }

    #[test]
    fn stateless_checks_refuse_bad_transactions_with_their_codes() {
        let good = transfer(&key(1), 0, 5);
        assert_eq!(
            good.clone().verify("other").unwrap_err().code(),
            "wrong_chain"
        );
        assert_eq!(
            transfer(&key(1), 0, 0).verify("test").unwrap_err().code(),
            "zero_amount"
        );
        let mut forged = good.clone();
        forged.signature = key(2).sign(&good.hash().0);
        assert_eq!(forged.verify("test").unwrap_err().code(), "bad_signature");
        let mut tampered = good;
        tampered.body[10] ^= 1;
        let code = tampered.verify("test").unwrap_err().code();
        assert!(code == "bad_signature" || code == "malformed_tx" || code == "bad_sender_key");
    }

    #[test]
    fn batch_verification_finds_exactly_the_bad_ones() {
        let mut txs: Vec<_> = (0..150).map(|i| transfer(&key(3), i, 1)).collect();
        txs[7].signature = key(4).sign(&txs[7].hash().0);
        txs[140].body.push(0);
        let results = verify_batch(txs.clone(), "test");
        assert_eq!(results.len(), 150);
        for (i, r) in results.iter().enumerate() {
            match i {
                7 => assert_eq!(r.as_ref().unwrap_err().code(), "bad_signature"),
                140 => assert_eq!(r.as_ref().unwrap_err().code(), "malformed_tx"),
                _ => assert_eq!(r.as_ref().unwrap().hash, txs[i].hash()),
            }
        }
    }

    /// A transaction from the identity point (a small-order key) with R = identity and s = 0
    /// satisfies the verification equation for any message. Both paths refuse the key, with the
    /// same code; and a mixed-order R is judged alike by both.
    #[test]
    fn single_and_batch_verification_agree_on_small_order_keys_and_points() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let tx = Transaction {
            chain_id: "test".into(),
            sender: AccountId(identity),
            sequence: 0,
            expiry_height: 100,
            payload: Payload::Transfer(Transfer {
                to: AccountId([9; 32]),
                asset: AssetCode::new("USD").unwrap(),
                amount: 5,
                memo: None,
                travel: None,
            }),
        };
        let mut sig = [0u8; 64];
        sig[0] = 1;
        let forged = SignedTransaction {
            body: crate::codec::encode(&tx),
            signature: Signature::from_bytes(&sig),
        };
        let single = forged.clone().verify("test").unwrap_err().code();
        let batch = verify_batch(vec![forged; 3], "test");
        for r in batch {
            assert_eq!(r.unwrap_err().code(), single);
        }
        // A valid key with R = rB + T (T of order 2) and s = r + k·a: a cofactorless batch
        // with an even random coefficient would take it while single verification refused it.
        // Under ZIP-215 both take it or both refuse it, in any batch.
        let signer = key(1);
        let good = transfer(&signer, 0, 5);
        let mut r_bytes = good.signature.to_bytes();
        let order_two = curve25519_dalek::edwards::CompressedEdwardsY([
            0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x7f,
        ])
        .decompress()
        .unwrap();
        let r = curve25519_dalek::edwards::CompressedEdwardsY(r_bytes[..32].try_into().unwrap())
            .decompress()
            .unwrap();
        r_bytes[..32].copy_from_slice((r + order_two).compress().as_bytes());
        let mut mixed = good.clone();
        mixed.signature = Signature::from_bytes(&r_bytes);
        let single = mixed
            .clone()
            .verify("test")
            .map(|v| v.hash)
            .map_err(|e| e.code());
        for n in [1, 2, 7, 64] {
            let mut txs = vec![mixed.clone()];
            txs.extend((1..n).map(|i| transfer(&signer, i as u64, 5)));
            let first = verify_batch(txs, "test").remove(0);
            assert_eq!(
                first.map(|v| v.hash).map_err(|e| e.code()),
                single,
                "batch of {n}"
            );
        }
    }
}
