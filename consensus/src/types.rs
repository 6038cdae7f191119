//! The vocabulary of the protocol: digests, the validator set, blocks, votes, timeouts and the
//! certificates they aggregate into. Every signed thing is signed over a domain-separated
//! sha2-256 digest of its canonical (postcard) encoding.

use crate::ConsensusError;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeSet;

/// Round within an epoch.
pub type Round = u64;
/// Block height: genesis is 0, each block is its parent's height + 1.
pub type Height = u64;
/// Validator-set generation.
pub type Epoch = u64;
/// Position of a validator in the [`ValidatorSet`].
pub type ValidatorIndex = u16;

const BLOCK_DOMAIN: &[u8] = b"tally/consensus/block/v1";
const VOTE_DOMAIN: &[u8] = b"tally/consensus/vote/v1";
const TIMEOUT_DOMAIN: &[u8] = b"tally/consensus/timeout/v1";

/// A sha2-256 digest: block ids and payload (batch) digests.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize, Default,
)]
pub struct Digest(pub [u8; 32]);

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

pub(crate) fn hash_parts(domain: &[u8], body: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update((domain.len() as u64).to_be_bytes());
    h.update(domain);
    h.update(body);
    Digest(h.finalize().into())
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // postcard cannot fail on these plain data types.
    postcard::to_allocvec(v).unwrap_or_default()
}

/// The validators of one epoch, in index order. Decoding goes through [`ValidatorSet::new`], so
/// a decoded set is as valid as a constructed one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ValidatorSetWire")]
pub struct ValidatorSet {
    epoch: Epoch,
    keys: Vec<[u8; 32]>,
    #[serde(skip)]
    verifying: Vec<VerifyingKey>,
}

#[derive(Deserialize)]
struct ValidatorSetWire {
    epoch: Epoch,
    keys: Vec<[u8; 32]>,
}

impl TryFrom<ValidatorSetWire> for ValidatorSet {
    type Error = ConsensusError;

    fn try_from(w: ValidatorSetWire) -> Result<ValidatorSet, ConsensusError> {
        ValidatorSet::new(w.epoch, w.keys)
    }
}

impl ValidatorSet {
    /// A set from ed25519 public keys (order = index). Keys must be valid and distinct.
    pub fn new(epoch: Epoch, keys: Vec<[u8; 32]>) -> Result<ValidatorSet, ConsensusError> {
        if keys.is_empty() || keys.len() > u16::MAX as usize {
            return Err(ConsensusError::InvalidValidatorSet(
                "size out of range".into(),
            ));
        }
        let distinct: BTreeSet<_> = keys.iter().collect();
        if distinct.len() != keys.len() {
            return Err(ConsensusError::InvalidValidatorSet("duplicate key".into()));
        }
        let mut verifying = Vec::with_capacity(keys.len());
        for k in &keys {
            let v = VerifyingKey::from_bytes(k).map_err(|_| {
                ConsensusError::InvalidValidatorSet("not an ed25519 public key".into())
            })?;
            if v.is_weak() {
                return Err(ConsensusError::InvalidValidatorSet(
                    "a small-order ed25519 key".into(),
                ));
            }
            verifying.push(v);
        }
        Ok(ValidatorSet {
            epoch,
            keys,
            verifying,
        })
    }

    /// Its epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Number of validators.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true for a constructed set.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Faults tolerated: f = ⌊(n−1)/3⌋.
    pub fn faults(&self) -> usize {
        self.len().saturating_sub(1) / 3
    }

    /// Quorum: n − f (= 2f+1 when n = 3f+1).
    pub fn quorum(&self) -> usize {
        self.len().saturating_sub(self.faults())
    }

    /// Index of a public key.
    pub fn index_of(&self, key: &[u8; 32]) -> Option<ValidatorIndex> {
        self.keys
            .iter()
            .position(|k| k == key)
            .map(|i| i as ValidatorIndex)
    }

    /// Public key of a validator.
    pub fn key(&self, i: ValidatorIndex) -> Option<[u8; 32]> {
        self.keys.get(i as usize).copied()
    }

    /// Leader of a round: round-robin.
    pub fn leader(&self, round: Round) -> ValidatorIndex {
        // A constructed set has 1..=u16::MAX members, so the remainder fits an index.
        round
            .checked_rem(self.len() as u64)
            .and_then(|i| ValidatorIndex::try_from(i).ok())
            .unwrap_or(0)
    }

    /// Checks `sig` by validator `i` over `msg`.
    pub(crate) fn verify(&self, i: ValidatorIndex, msg: &Digest, sig: &Signature) -> bool {
        let Some(k) = self.verifying.get(usize::from(i)) else {
            return false;
        };
        let check = || k.verify_strict(&msg.0, sig).is_ok();
        MEMO.with(|memo| match memo.borrow_mut().as_mut() {
            None => check(),
            Some(seen) => {
                let mut id = [0u8; 128];
                id[..32].copy_from_slice(k.as_bytes());
                id[32..64].copy_from_slice(&msg.0);
                id[64..].copy_from_slice(&sig.to_bytes());
                *seen.entry(id).or_insert_with(check)
            }
        })
    }
}

thread_local! {
    /// Outcomes of signature checks on this thread, kept while a [`VerificationMemo`] lives.
    static MEMO: std::cell::RefCell<Option<std::collections::HashMap<[u8; 128], bool>>> =
        const { std::cell::RefCell::new(None) };
}

/// While it lives, signature checks on this thread are remembered (key, message and signature
/// → outcome) and not repeated. A check is a pure function of those three, so nothing but the
/// time changes; the simulator, where every replica checks every signature it is shown (each
/// certificate again and again), spends most of its time there otherwise. A node never starts
/// one: it checks each signature once by design (`verified_once`).
pub(crate) struct VerificationMemo(());

impl VerificationMemo {
    /// Starts remembering on this thread, with nothing remembered yet.
    pub(crate) fn start() -> VerificationMemo {
        MEMO.with(|memo| *memo.borrow_mut() = Some(std::collections::HashMap::new()));
        VerificationMemo(())
    }
}

impl Drop for VerificationMemo {
    fn drop(&mut self) {
        MEMO.with(|memo| *memo.borrow_mut() = None);
    }
}

/// What a vote signs: a block at a round, height and epoch.
pub fn vote_digest(epoch: Epoch, round: Round, height: Height, block: &Digest) -> Digest {
    hash_parts(VOTE_DOMAIN, &encode(&(epoch, round, height, block)))
}

/// What a timeout signs: the round given up and the signer's highest QC round.
pub fn timeout_digest(epoch: Epoch, round: Round, high_qc_round: Round) -> Digest {
    hash_parts(TIMEOUT_DOMAIN, &encode(&(epoch, round, high_qc_round)))
}

/// The signer list of a certificate: between a quorum and n entries, every one a member of
/// the set, strictly ascending (so no signer appears twice). Checked before any signature, so
/// an oversized certificate costs nothing to refuse.
fn check_signers(
    signers: impl ExactSizeIterator<Item = ValidatorIndex>,
    validators: &ValidatorSet,
) -> Result<(), ConsensusError> {
    let count = signers.len();
    if count > validators.len() {
        return Err(ConsensusError::InvalidCertificate(
            "more signers than validators",
        ));
    }
    if count < validators.quorum() {
        return Err(ConsensusError::InvalidCertificate("no quorum"));
    }
    let mut previous: Option<ValidatorIndex> = None;
    for i in signers {
        if usize::from(i) >= validators.len() {
            return Err(ConsensusError::InvalidCertificate("unknown signer"));
        }
        if previous.is_some_and(|p| p >= i) {
            return Err(ConsensusError::InvalidCertificate(
                "signers not strictly ascending",
            ));
        }
        previous = Some(i);
    }
    Ok(())
}

/// 2f+1 votes for one block: the block is certified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumCert {
    /// Epoch of the votes.
    pub epoch: Epoch,
    /// Round of the certified block.
    pub round: Round,
    /// Height of the certified block.
    pub height: Height,
    /// The certified block.
    pub block: Digest,
    /// (voter, signature), sorted by voter.
    pub signatures: Vec<(ValidatorIndex, Signature)>,
}

impl QuorumCert {
    /// True for the certificate of a genesis block (which carries no signatures).
    pub fn is_genesis(&self) -> bool {
        self.round == 0 && self.height == 0 && self.signatures.is_empty()
    }

    /// Checks a quorum of distinct validators signed the block.
    pub fn verify(&self, validators: &ValidatorSet) -> Result<(), ConsensusError> {
        if self.is_genesis() {
            let (genesis, _) = Block::genesis(validators);
            return if self.block == genesis.id() {
                Ok(())
            } else {
                Err(ConsensusError::InvalidCertificate(
                    "not this epoch's genesis",
                ))
            };
        }
        if self.epoch != validators.epoch() {
            return Err(ConsensusError::InvalidCertificate("wrong epoch"));
        }
        check_signers(self.signatures.iter().map(|s| s.0), validators)?;
        let msg = vote_digest(self.epoch, self.round, self.height, &self.block);
        for (i, sig) in &self.signatures {
            if !validators.verify(*i, &msg, sig) {
                return Err(ConsensusError::InvalidCertificate("bad signature"));
            }
        }
        Ok(())
    }
}

/// 2f+1 timeouts for one round: the round is abandoned, and the next leader may extend the
/// highest QC among them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutCert {
    /// Epoch.
    pub epoch: Epoch,
    /// The abandoned round.
    pub round: Round,
    /// (signer, its highest QC round, signature), sorted by signer.
    pub timeouts: Vec<(ValidatorIndex, Round, Signature)>,
}

impl TimeoutCert {
    /// The highest QC round any signer reported (each is below `round` in a verified TC).
    pub fn max_high_qc_round(&self) -> Round {
        self.timeouts.iter().map(|t| t.1).max().unwrap_or(0)
    }

    /// Checks a quorum of distinct validators signed the timeout.
    pub fn verify(&self, validators: &ValidatorSet) -> Result<(), ConsensusError> {
        if self.epoch != validators.epoch() {
            return Err(ConsensusError::InvalidCertificate(
                "timeout cert of another epoch",
            ));
        }
        check_signers(self.timeouts.iter().map(|t| t.0), validators)?;
        for (i, hqc, sig) in &self.timeouts {
            // A replica gives up a round above every QC it knows: a higher claim is forged.
            if *hqc >= self.round {
                return Err(ConsensusError::InvalidCertificate(
                    "timeout high QC round not below the round",
                ));
            }
            if !validators.verify(*i, &timeout_digest(self.epoch, self.round, *hqc), sig) {
                return Err(ConsensusError::InvalidCertificate("bad timeout signature"));
            }
        }
        Ok(())
    }
}

/// A proposal: a block of payload digests extending a certified parent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// Epoch.
    pub epoch: Epoch,
    /// Round in which it was proposed.
    pub round: Round,
    /// parent.height + 1.
    pub height: Height,
    /// Id of the parent (= justify.block).
    pub parent: Digest,
    /// Certificate of the parent.
    pub justify: QuorumCert,
    /// Present when the previous round ended by timeout.
    pub timeout_cert: Option<TimeoutCert>,
    /// Proposer.
    pub author: ValidatorIndex,
    /// Proposer's clock (the node supplies it; execution clamps it to be monotonic).
    pub timestamp_ms: u64,
    /// Batch digests, in execution order.
    pub payload: Vec<Digest>,
    /// The author's signature over `id()`.
    pub signature: Signature,
}

#[derive(Serialize)]
struct BlockContent<'a> {
    epoch: Epoch,
    round: Round,
    height: Height,
    parent: &'a Digest,
    justify: &'a QuorumCert,
    timeout_cert: &'a Option<TimeoutCert>,
    author: ValidatorIndex,
    timestamp_ms: u64,
    payload: &'a [Digest],
}

impl Block {
    /// The block id: a digest of everything but the signature.
    pub fn id(&self) -> Digest {
        hash_parts(
            BLOCK_DOMAIN,
            &encode(&BlockContent {
                epoch: self.epoch,
                round: self.round,
                height: self.height,
                parent: &self.parent,
                justify: &self.justify,
                timeout_cert: &self.timeout_cert,
                author: self.author,
                timestamp_ms: self.timestamp_ms,
                payload: &self.payload,
            }),
        )
    }

    /// The genesis block of an epoch's set and its certificate. Deterministic; unsigned.
    pub fn genesis(validators: &ValidatorSet) -> (Block, QuorumCert) {
        let placeholder = QuorumCert {
            epoch: validators.epoch(),
            round: 0,
            height: 0,
            block: Digest::default(),
            signatures: Vec::new(),
        };
        let keys = hash_parts(b"tally/consensus/genesis/v1", &encode(&validators.keys));
        let block = Block {
            epoch: validators.epoch(),
            round: 0,
            height: 0,
            parent: keys,
            justify: placeholder,
            timeout_cert: None,
            author: 0,
            timestamp_ms: 0,
            payload: Vec::new(),
            signature: Signature::from_bytes(&[0; 64]),
        };
        let qc = QuorumCert {
            epoch: validators.epoch(),
            round: 0,
            height: 0,
            block: block.id(),
            signatures: Vec::new(),
        };
        (block, qc)
    }

    pub(crate) fn sign(mut self, key: &SigningKey) -> Block {
        self.signature = key.sign(&self.id().0);
        self
    }

    /// Checks the author's signature.
    pub(crate) fn verify_signature(&self, validators: &ValidatorSet) -> bool {
        validators.verify(self.author, &self.id(), &self.signature)
    }
}

/// A replica's vote for a block, sent to the next leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// Epoch.
    pub epoch: Epoch,
    /// Round of the block.
    pub round: Round,
    /// Height of the block.
    pub height: Height,
    /// The block.
    pub block: Digest,
    /// The voter.
    pub voter: ValidatorIndex,
    /// Signature over [`vote_digest`].
    pub signature: Signature,
}

impl Vote {
    pub(crate) fn verify(&self, validators: &ValidatorSet) -> bool {
        validators.verify(
            self.voter,
            &vote_digest(self.epoch, self.round, self.height, &self.block),
            &self.signature,
        )
    }
}

/// A replica gives up a round; carries its highest QC. Broadcast to all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeout {
    /// Epoch.
    pub epoch: Epoch,
    /// The round given up.
    pub round: Round,
    /// The signer's highest QC.
    pub high_qc: QuorumCert,
    /// The signer.
    pub voter: ValidatorIndex,
    /// Signature over [`timeout_digest`] (epoch, round, high_qc.round).
    pub signature: Signature,
    /// The timeout certificate through which the signer entered `round`, if it did: lets a
    /// replica that missed it catch up (self-certifying, not covered by the signature).
    pub entered_by: Option<TimeoutCert>,
}

impl Timeout {
    pub(crate) fn verify(&self, validators: &ValidatorSet) -> bool {
        validators.verify(
            self.voter,
            &timeout_digest(self.epoch, self.round, self.high_qc.round),
            &self.signature,
        )
    }
}

/// Proof that the last block of an epoch committed, for a replica that catches up from an
/// earlier epoch: the blocks from that block's child up to the block `qc` certifies, and `qc`,
/// all of the ending epoch. Fed through the two-chain rule like any other blocks and QC, they
/// commit the last block, so the replica executes it and learns the next set from its own
/// state, never from a peer. (Those blocks themselves are not committed: the next epoch starts
/// on the last block.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochProof {
    /// The last block's child and its descendants up to `qc`'s block, oldest first.
    pub blocks: Vec<Block>,
    /// The certificate that committed the last block.
    pub qc: QuorumCert,
}

/// Everything validators say to each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A leader's block.
    Proposal(Block),
    /// A vote, to the next leader.
    Vote(Vote),
    /// A timeout, to everyone.
    Timeout(Timeout),
    /// The certificates that moved the sender past a round, to a validator whose timeout
    /// shows it still waits in that round.
    Certificates(Certificates),
}

/// What a replica that moved on tells one still in an earlier round: its highest QC and the
/// TC it entered its round by, if any. Each proves, by its own signatures, that the round it
/// certifies is over, so the lagging replica enters the next round at once instead of waiting
/// for its timer or the next proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificates {
    /// The sender's highest QC.
    pub high_qc: QuorumCert,
    /// The TC the sender entered its current round by.
    pub last_tc: Option<TimeoutCert>,
}

impl Message {
    /// Canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes with a size limit.
    pub fn from_bytes(bytes: &[u8], max: usize) -> Result<Message, ConsensusError> {
        if bytes.len() > max {
            return Err(ConsensusError::Malformed("message over the size limit"));
        }
        match postcard::take_from_bytes::<Message>(bytes) {
            Ok((m, [])) => Ok(m),
            Ok(_) => Err(ConsensusError::Malformed("trailing bytes")),
            Err(_) => Err(ConsensusError::Malformed("does not decode")),
        }
    }
}

/// Asks a peer for the chain of blocks ending at `block`, after height `after_height`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRequest {
    /// The newest block wanted.
    pub block: Digest,
    /// Blocks at or below this height are not wanted.
    pub after_height: Height,
    /// Most blocks in the answer (the oldest ones first).
    pub max_blocks: u32,
}

/// Two conflicting signed messages from one validator for one round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The equivocating validator.
    pub validator: ValidatorIndex,
    /// Epoch.
    pub epoch: Epoch,
    /// Round.
    pub round: Round,
    /// The first message seen.
    pub first: Message,
    /// The conflicting one.
    pub second: Message,
}

impl Evidence {
    /// The equivocating validator.
    pub fn validator(&self) -> ValidatorIndex {
        self.validator
    }

    /// The round.
    pub fn round(&self) -> Round {
        self.round
    }

    /// `proposal` or `vote`.
    pub fn kind(&self) -> &'static str {
        match self.first {
            Message::Proposal(_) => "proposal",
            Message::Vote(_) => "vote",
            Message::Timeout(_) => "timeout",
            Message::Certificates(_) => "certificates",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The simulator's memo remembers outcomes, never turns one into the other: a forged
    /// signature stays refused, a good one accepted, on first sight and after.
    #[test]
    fn a_remembered_check_gives_the_outcome_of_the_check() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let set = ValidatorSet::new(0, vec![key.verifying_key().to_bytes()]).expect("set");
        let msg = vote_digest(0, 1, 1, &Digest([1; 32]));
        let good = key.sign(&msg.0);
        let other = vote_digest(0, 2, 1, &Digest([1; 32]));
        let _memo = VerificationMemo::start();
        for _ in 0..2 {
            assert!(set.verify(0, &msg, &good));
            assert!(
                !set.verify(0, &other, &good),
                "a signature over another message"
            );
            assert!(!set.verify(1, &msg, &good), "an index outside the set");
        }
    }
}
