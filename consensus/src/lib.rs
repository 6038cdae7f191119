#![doc = include_str!("../README.md")]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::panic, clippy::arithmetic_side_effects)
)]

mod aggregator;
mod block_tree;
#[cfg(test)]
mod byzantine_tests;
mod consensus;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod pacemaker_tests;
mod safety;
// The simulator is test tooling: its clock and counters are its own, not a peer's.
#[allow(clippy::arithmetic_side_effects)]
pub mod sim;
mod types;
mod verified;

pub use consensus::{Consensus, Rule, Stats, ROUND_WINDOW};

/// Most blocks asked for in, and accepted from, one sync answer.
pub const SYNC_CHUNK: u32 = 100;
pub use safety::SafetyState;
pub use types::{
    timeout_digest, vote_digest, Block, BlockRequest, Certificates, Digest, Epoch, EpochProof,
    Evidence, Height, Message, QuorumCert, Round, Timeout, TimeoutCert, ValidatorIndex,
    ValidatorSet, Vote,
};

/// Every reason a replica drops a message and holds it against its sender
/// (`Action::Misbehaviour`): the node counts each in a metric that exists from the start.
pub const PENALTY_REASONS: &[&str] = &[
    "bad_certificates",
    "bad_qc",
    "bad_signature",
    "bad_tc",
    "bad_timeout",
    "bad_vote",
    "malformed",
    "malformed_block",
    "not_leader",
    "oversized_payload",
    "oversized_sync_answer",
    "round_not_after_certificate",
    "timestamp_not_after_parent",
    "wrong_epoch",
];

/// Every reason a replica sets a message aside without a penalty ([`Stats::ignored`]).
pub const IGNORE_REASONS: &[&str] = &[
    "invalid_payload",
    "late_reconfiguration",
    "later_epoch",
    "proposal_out_of_window",
    "stale_certificates",
    "stale_proposal",
    "stale_timeout",
    "stale_timeout_certificate",
    "timeout_out_of_window",
    "unexpected_sync_answer",
    "unknown_sender",
    "vote_out_of_window",
    "wrong_epoch",
];

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsensusError {
    /// The validator set is empty, too large, or has a bad or repeated key.
    #[error("invalid validator set: {0}")]
    InvalidValidatorSet(String),
    /// A quorum or timeout certificate does not check out.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(&'static str),
    /// Bytes from a peer do not decode.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

/// Parameters of the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Round timeout before the first view change, in milliseconds.
    pub base_timeout_ms: u64,
    /// Upper bound of the doubling timeout.
    pub max_timeout_ms: u64,
    /// Most payload digests one block may name.
    pub max_payload_digests: usize,
    /// Largest message decoded.
    pub max_message_bytes: usize,
    /// The idle heartbeat: how long a leader waits for a batch, in a quiet round (no payload
    /// in the block it extends or in an uncommitted block below), before it proposes an empty
    /// block. The wait doubles with each further empty block in a row, up to
    /// `max_heartbeat_ms`; a batch arriving ends it at once. Every replica adds the same wait
    /// to the round's timer. Zero: no wait.
    pub heartbeat_ms: u64,
    /// The longest idle wait (see `heartbeat_ms`).
    pub max_heartbeat_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            base_timeout_ms: 1000,
            max_timeout_ms: 10_000,
            max_payload_digests: 64,
            max_message_bytes: 4 << 20,
            heartbeat_ms: 0,
            max_heartbeat_ms: 0,
        }
    }
}

/// What the node tells the state machine.
#[derive(Clone, Debug)]
pub enum Event {
    /// Bytes another validator sent (its `Action::Send`/`Broadcast`). The node says which
    /// validator sent them (the authenticated peer); the state machine decodes them with a
    /// size limit and checks every signature, dropping (and reporting) bad ones.
    Message {
        /// Sender.
        from: ValidatorIndex,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A batch this validator could order became available (usable here and not committed):
    /// a quiet round's timer no longer allows for the idle wait, since an honest leader that
    /// has the batch proposes at once (the heartbeat is not waited out for a failed leader).
    PayloadReady,
    /// A timer set by `Action::SetTimer` expired.
    Timeout {
        /// Its round.
        round: Round,
    },
    /// Answer to `Action::RequestPayload`: what this leader proposes, and its clock.
    Payload {
        /// The round asked for.
        round: Round,
        /// Batch digests to order.
        digests: Vec<Digest>,
        /// The node's clock in milliseconds.
        timestamp_ms: u64,
    },
    /// Answer to `Action::ValidatePayload`.
    PayloadValidated {
        /// The block.
        block: Digest,
        /// True when the node holds every batch the block names and accepts its timestamp.
        valid: bool,
    },
    /// Answer to `Action::RequestBlocks`: blocks oldest first (possibly partial or empty).
    SyncResponse {
        /// Who answered.
        from: ValidatorIndex,
        /// The blocks.
        blocks: Vec<Block>,
        /// When the last block ends an epoch: the proof that it committed.
        proof: Option<EpochProof>,
    },
    /// The validator set changes after the committed block at `height` (which must not be
    /// committed yet, so that every replica switches at the same block).
    Reconfigure {
        /// Last block of the current epoch.
        height: Height,
        /// The next epoch's set (its epoch = current + 1).
        validators: ValidatorSet,
    },
    /// Commit nothing above `height` until told otherwise (`None` lifts the hold). The node
    /// holds commits at each possible epoch boundary until it has executed the boundary block
    /// and knows whether the validator set changes there; voting goes on meanwhile.
    HoldCommits {
        /// Highest height that may commit.
        height: Option<Height>,
    },
}

/// What the state machine asks the node to do, in order.
// Actions are consumed right away; boxing the commit's block would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Action {
    /// Send to one validator (a direct message).
    Send {
        /// Recipient.
        to: ValidatorIndex,
        /// The bytes (an encoded `Message`).
        bytes: Vec<u8>,
    },
    /// Send to every other validator.
    Broadcast {
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Deliver `Event::Timeout { round }` after `after_ms` (a later timer replaces it).
    SetTimer {
        /// Round.
        round: Round,
        /// Delay.
        after_ms: u64,
    },
    /// Make this durable (fsync) BEFORE performing any action that follows it.
    PersistSafety(SafetyState),
    /// This replica leads `round`: answer with `Event::Payload`. `exclude` lists the digests
    /// already in the uncommitted ancestors being extended.
    ///
    /// With nothing to propose, the leader may wait up to `wait_ms` for a batch (a batch
    /// arriving ends the wait) before it answers with an empty payload. `wait_ms` is zero
    /// unless the round is quiet (no payload in the block being extended or an uncommitted
    /// block below it: no payload waits for this block to be certified or committed); then it
    /// is the idle heartbeat (see [`Config::heartbeat_ms`]).
    RequestPayload {
        /// Round.
        round: Round,
        /// Digests not to propose again.
        exclude: Vec<Digest>,
        /// The longest the leader may wait for a batch.
        wait_ms: u64,
    },
    /// Bring the timer of `round` forward to `after_ms` from now if it is set later (a timer
    /// already due sooner stays).
    ShortenTimer {
        /// Round.
        round: Round,
        /// Delay.
        after_ms: u64,
    },
    /// Check that every batch is held (fetch missing ones, from `author` first), then answer
    /// `Event::PayloadValidated`. The replica votes only after `valid = true`.
    ValidatePayload {
        /// Block id.
        block: Digest,
        /// Its proposer.
        author: ValidatorIndex,
        /// Its round.
        round: Round,
        /// Its timestamp.
        timestamp_ms: u64,
        /// The batches it names.
        digests: Vec<Digest>,
    },
    /// The block is final. Emitted once per height, in height order, with a QC certifying it.
    Commit {
        /// The block.
        block: Block,
        /// Its certificate.
        qc: QuorumCert,
    },
    /// Ask validator `to` for blocks (it answers with `Consensus::serve_blocks`); the answer
    /// comes back as `Event::SyncResponse`.
    RequestBlocks {
        /// Whom to ask.
        to: ValidatorIndex,
        /// What.
        request: BlockRequest,
    },
    /// The epoch ended with the committed block at `height`: keep `proof` and answer sync
    /// requests that reach that block with it (see `Consensus::cut_at_epoch_end`).
    EpochEnded {
        /// The last block of the epoch.
        height: Height,
        /// The proof that it committed.
        proof: EpochProof,
    },
    /// Two conflicting signed messages of one validator for one round.
    Evidence(Box<Evidence>),
    /// The validator sent something malformed or wrongly signed: penalise it.
    Misbehaviour {
        /// Who.
        from: ValidatorIndex,
        /// Why (stable, for metrics).
        reason: &'static str,
    },
}
