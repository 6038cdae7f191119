//! Block headers, commit certificates and inclusion proofs.
//!
//! Consensus orders batch digests and certifies its own blocks; execution follows commit. After
//! executing a block every validator signs the header it produced (which carries the receipt
//! root and the state root); 2f+1 such signatures form a [`CommitCertificate`]. A regulator
//! checks a receipt offline: receipt → Merkle path → receipt root → header → certificate signed
//! by a quorum of the genesis validator set. See docs/adr/0001-execution-certificates.md.

use crate::codec;
use crate::merkle::MerkleProof;
use crate::primitives::{AccountId, Hash, Height, TimestampMs};
use crate::Receipt;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Domain tag of header hashes.
const HEADER_DOMAIN: &[u8] = b"tally/header/v1";
/// Domain tag of what validators sign to certify an executed header.
const COMMIT_DOMAIN: &[u8] = b"tally/commit-vote/v1";

/// The header of an executed, committed block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    /// The network.
    pub chain_id: String,
    /// Height; the first block is 1.
    pub height: Height,
    /// Consensus round in which the block was proposed.
    pub round: u64,
    /// Hash of the previous header (all zero for height 1).
    pub parent_hash: Hash,
    /// The validator that proposed it.
    pub proposer: AccountId,
    /// Agreed timestamp; execution's only notion of time.
    pub timestamp_ms: TimestampMs,
    /// Digests of the transaction batches, in execution order.
    pub batch_digests: Vec<Hash>,
    /// Number of transactions executed.
    pub tx_count: u64,
    /// Merkle root over the receipts.
    pub receipt_root: Hash,
    /// Merkle root over the ledger state after the block.
    pub state_root: Hash,
}

impl BlockHeader {
    /// The header's hash.
    pub fn hash(&self) -> Hash {
        codec::hash_value(HEADER_DOMAIN, self)
    }
}

fn commit_message(header_hash: &Hash) -> Hash {
    codec::hash_with_domain(COMMIT_DOMAIN, &header_hash.0)
}

/// One validator's signature over an executed header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitVote {
    /// Hash of the header signed.
    pub header_hash: Hash,
    /// The signing validator.
    pub validator: AccountId,
    /// Its signature.
    #[serde(with = "crate::primitives::signature_text")]
    pub signature: Signature,
}

impl CommitVote {
    /// Signs a header hash.
    pub fn sign(header_hash: Hash, key: &SigningKey) -> CommitVote {
        CommitVote {
            header_hash,
            validator: AccountId(key.verifying_key().to_bytes()),
            signature: key.sign(&commit_message(&header_hash).0),
        }
    }

    /// True if the signature is the validator's over the header hash.
    pub fn verify(&self) -> bool {
        VerifyingKey::from_bytes(&self.validator.0)
            .and_then(|k| k.verify_strict(&commit_message(&self.header_hash).0, &self.signature))
            .is_ok()
    }
}

/// Signatures of a quorum of validators over one executed header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitCertificate {
    /// Hash of the certified header.
    pub header_hash: Hash,
    /// (validator, signature), sorted by validator, at most one each.
    #[serde(with = "crate::primitives::signature_text::pairs")]
    pub signatures: Vec<(AccountId, Signature)>,
}

/// Why a certificate or proof does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The certificate is for another header.
    #[error("certificate is for header {found}, not {expected}")]
    WrongHeader {
        /// The header's hash.
        expected: Hash,
        /// The certificate's header hash.
        found: Hash,
    },
    /// A signer is not in the validator set.
    #[error("signer {0} is not a validator")]
    NotAValidator(AccountId),
    /// A validator signed twice.
    #[error("validator {0} appears twice")]
    DuplicateSigner(AccountId),
    /// A signature does not verify.
    #[error("signature of {0} does not verify")]
    BadSignature(AccountId),
    /// Fewer than a quorum of valid signatures.
    #[error("{have} valid signatures, a quorum of {need} validators is needed")]
    NoQuorum {
        /// Valid signatures.
        have: usize,
        /// Quorum size.
        need: usize,
    },
    /// The receipt is not under the header's receipt root.
    #[error("the receipt's Merkle path does not lead to the header's receipt root")]
    BadMerklePath,
    /// The path claims another number of leaves than the header's transaction count.
    #[error("the Merkle path has {path} leaves, the block has {header} transactions")]
    LeafCount {
        /// Leaves the path claims.
        path: u64,
        /// Transactions the header names.
        header: u64,
    },
}

/// Quorum size for `n` validators: 2f+1 with f = ⌊(n−1)/3⌋.
pub fn quorum(n: usize) -> usize {
    n - (n.saturating_sub(1)) / 3
}

impl CommitCertificate {
    /// Builds a certificate from votes for `header_hash` by members of `validators`; `None`
    /// until a quorum of distinct valid votes is present.
    pub fn from_votes<'a>(
        header_hash: Hash,
        votes: impl IntoIterator<Item = &'a CommitVote>,
        validators: &[AccountId],
    ) -> Option<CommitCertificate> {
        let mut signatures: Vec<(AccountId, Signature)> = votes
            .into_iter()
            .filter(|v| v.header_hash == header_hash && validators.contains(&v.validator))
            .map(|v| (v.validator, v.signature))
            .collect();
        signatures.sort_by_key(|s| s.0);
        signatures.dedup_by(|a, b| a.0 == b.0);
        (signatures.len() >= quorum(validators.len())).then_some(CommitCertificate {
            header_hash,
            signatures,
        })
    }

    /// Checks the certificate against a header and the validator set.
    pub fn verify(&self, header: &BlockHeader, validators: &[AccountId]) -> Result<(), ProofError> {
        let expected = header.hash();
        if self.header_hash != expected {
            return Err(ProofError::WrongHeader {
                expected,
                found: self.header_hash,
            });
        }
        let msg = commit_message(&expected);
        let mut seen = BTreeSet::new();
        for (who, sig) in &self.signatures {
            if !validators.contains(who) {
                return Err(ProofError::NotAValidator(*who));
            }
            if !seen.insert(*who) {
                return Err(ProofError::DuplicateSigner(*who));
            }
            VerifyingKey::from_bytes(&who.0)
                .and_then(|k| k.verify_strict(&msg.0, sig))
                .map_err(|_| ProofError::BadSignature(*who))?;
        }
        let need = quorum(validators.len());
        if seen.len() < need {
            return Err(ProofError::NoQuorum {
                have: seen.len(),
                need,
            });
        }
        Ok(())
    }
}

/// Everything needed to check offline that a receipt is part of the certified ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The receipt.
    pub receipt: Receipt,
    /// Its path to the header's receipt root.
    pub path: MerkleProof,
    /// The block header.
    pub header: BlockHeader,
    /// A quorum's signatures over the header.
    pub certificate: CommitCertificate,
}

impl InclusionProof {
    /// Checks the whole chain against the validator set (from genesis).
    pub fn verify(&self, validators: &[AccountId]) -> Result<(), ProofError> {
        // One receipt per transaction: "leaf i of n" must be the block's n.
        if self.path.leaf_count != self.header.tx_count {
            return Err(ProofError::LeafCount {
                path: self.path.leaf_count,
                header: self.header.tx_count,
            });
        }
        if !self
            .path
            .verify(self.receipt.leaf(), &self.header.receipt_root)
        {
            return Err(ProofError::BadMerklePath);
        }
        self.certificate.verify(&self.header, validators)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle;
    use crate::{receipt_root, Receipt};

    fn keys(n: u8) -> Vec<SigningKey> {
        (1..=n).map(|i| SigningKey::from_bytes(&[i; 32])).collect()
    }

    fn ids(keys: &[SigningKey]) -> Vec<AccountId> {
        keys.iter()
            .map(|k| AccountId(k.verifying_key().to_bytes()))
            .collect()
    }

    fn proof(signers: &[SigningKey]) -> InclusionProof {
        let receipts: Vec<Receipt> = (0..5u8)
            .map(|i| Receipt::applied(Hash([i; 32]), vec![], vec![], 1))
            .collect();
        let header = BlockHeader {
            chain_id: "t".into(),
            height: 3,
            round: 4,
            parent_hash: Hash::ZERO,
            proposer: AccountId([1; 32]),
            timestamp_ms: 1,
            batch_digests: vec![],
            tx_count: 5,
            receipt_root: receipt_root(&receipts),
            state_root: Hash::ZERO,
        };
        let leaves: Vec<Hash> = receipts.iter().map(Receipt::leaf).collect();
        let votes: Vec<CommitVote> = signers
            .iter()
            .map(|k| CommitVote::sign(header.hash(), k))
            .collect();
        let all = ids(&keys(4));
        let certificate = CommitCertificate::from_votes(header.hash(), &votes, &all).unwrap_or(
            CommitCertificate {
                header_hash: header.hash(),
                signatures: votes.iter().map(|v| (v.validator, v.signature)).collect(),
            },
        );
        InclusionProof {
            receipt: receipts[2].clone(),
            path: merkle::prove(&leaves, 2).unwrap(),
            header,
            certificate,
        }
    }

    #[test]
    fn quorum_sizes() {
        assert_eq!(quorum(1), 1);
        assert_eq!(quorum(4), 3);
        assert_eq!(quorum(7), 5);
        assert_eq!(quorum(10), 7);
    }

    #[test]
    fn a_quorum_certified_receipt_verifies_and_any_tampering_fails() {
        let k = keys(4);
        let validators = ids(&k);
        let p = proof(&k[..3]);
        assert_eq!(p.verify(&validators), Ok(()));

        let too_few = proof(&k[..2]);
        assert!(matches!(
            too_few.verify(&validators),
            Err(ProofError::NoQuorum { have: 2, need: 3 })
        ));

        let mut other_receipt = p.clone();
        other_receipt.receipt.code = "forged".into();
        assert_eq!(
            other_receipt.verify(&validators),
            Err(ProofError::BadMerklePath)
        );

        let mut other_state = p.clone();
        other_state.header.state_root = Hash([9; 32]);
        assert!(matches!(
            other_state.verify(&validators),
            Err(ProofError::WrongHeader { .. })
        ));

        // Leaf counts that give the same path shape still must match the header.
        for count in [6, 7, 8] {
            let mut q = p.clone();
            q.path.leaf_count = count;
            assert!(matches!(
                q.verify(&validators),
                Err(ProofError::LeafCount { .. })
            ));
        }

        let outsiders = ids(&keys(4)[1..]);
        assert!(matches!(
            p.verify(&outsiders),
            Err(ProofError::NotAValidator(_))
        ));
    }
}
