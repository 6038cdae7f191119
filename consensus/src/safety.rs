//! Safety rules: the only code that signs votes, timeouts and proposals. It refuses to sign
//! twice for one round, and every signature is preceded by the new safety state, which the node
//! makes durable before it performs anything that follows (so a validator restarted from disk
//! never signs two different things for one round, and never forgets its lock).
//!
//! Voting rule (two-chain HotStuff / DiemBFT v4 / Jolteon):
//!   vote for B iff B.round > last_voted_round and
//!     B.justify.round + 1 == B.round                                    (normal case), or
//!     B.tc.round + 1 == B.round and B.justify.round >= max hqc in B.tc  (after a timeout).
//! Timeout rule (DiemBFT v4 `safe_to_timeout`): sign a timeout for round r carrying QC q iff
//!     r >= last_voted_round, q.round >= highest_qc_round                (the lock), and
//!     r == q.round + 1 or r == tc.round + 1 for the TC that entered r   (r was entered legally);
//! afterwards last_voted_round = r, so the replica never votes in a round it gave up.
//! The highest QC and the TC that entered the round are part of the persisted state, so after a
//! restart the replica still carries a QC at least as high as its lock.

use crate::types::{
    timeout_digest, vote_digest, Block, Epoch, QuorumCert, Round, Timeout, TimeoutCert,
    ValidatorIndex, Vote,
};
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

/// What must survive a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SafetyState {
    /// Epoch these rounds belong to.
    pub epoch: Epoch,
    /// Highest round voted or timed out in.
    pub last_voted_round: Round,
    /// Highest round proposed in.
    pub last_proposed_round: Round,
    /// Highest QC round seen when voting or timing out (the lock of the two-chain rule).
    pub highest_qc_round: Round,
    /// The last timeout signed: its round and the high QC it carried. A timeout for that round
    /// is only ever signed again with that same QC (ed25519 signatures are deterministic, so
    /// the message is identical), even after a restart with an older QC at hand.
    pub last_timeout: Option<(Round, QuorumCert)>,
    /// The highest QC known when this state was written (round >= `highest_qc_round`). A
    /// restarted replica starts from it, so its timeouts can carry its lock.
    pub highest_qc: Option<QuorumCert>,
    /// The timeout certificate through which the replica entered its current round, if it did.
    pub last_tc: Option<TimeoutCert>,
    /// The uncommitted blocks from the committed root up to the block of `highest_qc` and the
    /// last block voted for, oldest first. Uncommitted blocks live only in memory otherwise:
    /// without them, validators that all restart before a certified block commits would hold
    /// its certificate (their lock) but not the block, and no leader could extend it.
    pub blocks: Vec<Block>,
}

/// The signer.
pub(crate) struct SafetyRules {
    key: SigningKey,
    me: ValidatorIndex,
    pub(crate) state: SafetyState,
    /// Test-only: vote without the voting rule (to prove the simulator's checker works).
    pub(crate) ignore_voting_rule: bool,
    /// Test-only: time out without the lock (to prove the simulator's checker works).
    pub(crate) ignore_timeout_lock: bool,
}

/// `r == base + 1`, without overflow.
fn follows(r: Round, base: Round) -> bool {
    base.checked_add(1) == Some(r)
}

impl SafetyRules {
    pub(crate) fn new(key: SigningKey, me: ValidatorIndex, state: SafetyState) -> SafetyRules {
        SafetyRules {
            key,
            me,
            state,
            ignore_voting_rule: false,
            ignore_timeout_lock: false,
        }
    }

    /// Whether voting for `block` is safe.
    pub(crate) fn safe_to_vote(&self, block: &Block) -> bool {
        if self.ignore_voting_rule {
            return true;
        }
        if block.epoch != self.state.epoch || block.round <= self.state.last_voted_round {
            return false;
        }
        let qc_round = block.justify.round;
        if follows(block.round, qc_round) {
            return true;
        }
        match &block.timeout_cert {
            Some(tc) => follows(block.round, tc.round) && qc_round >= tc.max_high_qc_round(),
            None => false,
        }
    }

    /// Whether giving up `round` carrying `high_qc`, having entered it through `tc`, is safe.
    fn safe_to_timeout(
        &self,
        epoch: Epoch,
        round: Round,
        high_qc: &QuorumCert,
        tc: Option<&TimeoutCert>,
    ) -> bool {
        if epoch != self.state.epoch || round < self.state.last_voted_round {
            return false;
        }
        if self.ignore_timeout_lock {
            return true;
        }
        high_qc.round >= self.state.highest_qc_round
            && (follows(round, high_qc.round) || tc.is_some_and(|tc| follows(round, tc.round)))
    }

    /// Keeps the higher of the stored and the given QC.
    fn observe_qc(&mut self, qc: &QuorumCert) {
        let higher = match &self.state.highest_qc {
            Some(known) => qc.round > known.round,
            None => true,
        };
        if higher {
            self.state.highest_qc = Some(qc.clone());
        }
    }

    /// Signs a vote: returns the new state to persist first, and the vote. `highest_qc` is the
    /// highest QC the replica knows (at least `block.justify`), `entered_by` the TC through
    /// which it entered the block's round.
    pub(crate) fn vote(
        &mut self,
        block: &Block,
        highest_qc: &QuorumCert,
        entered_by: Option<&TimeoutCert>,
    ) -> Option<(SafetyState, Vote)> {
        if !self.safe_to_vote(block) {
            return None;
        }
        self.state.last_voted_round = self.state.last_voted_round.max(block.round);
        self.state.highest_qc_round = self.state.highest_qc_round.max(block.justify.round);
        self.observe_qc(&block.justify);
        self.observe_qc(highest_qc);
        self.state.last_tc = entered_by.cloned();
        let block_id = block.id();
        let signature = self
            .key
            .sign(&vote_digest(block.epoch, block.round, block.height, &block_id).0);
        Some((
            self.state.clone(),
            Vote {
                epoch: block.epoch,
                round: block.round,
                height: block.height,
                block: block_id,
                voter: self.me,
                signature,
            },
        ))
    }

    /// Signs a timeout for `round` carrying `high_qc`, having entered `round` through
    /// `entered_by` (if by a TC).
    pub(crate) fn timeout(
        &mut self,
        epoch: Epoch,
        round: Round,
        high_qc: &QuorumCert,
        entered_by: Option<&TimeoutCert>,
    ) -> Option<(SafetyState, Timeout)> {
        if epoch != self.state.epoch || round < self.state.last_voted_round {
            return None;
        }
        let high_qc = match &self.state.last_timeout {
            // Already signed: sign the identical message again.
            Some((r, signed)) if *r == round => signed.clone(),
            _ => {
                if !self.safe_to_timeout(epoch, round, high_qc, entered_by) {
                    return None;
                }
                high_qc.clone()
            }
        };
        self.state.last_voted_round = round;
        self.state.highest_qc_round = self.state.highest_qc_round.max(high_qc.round);
        self.state.last_timeout = Some((round, high_qc.clone()));
        self.observe_qc(&high_qc);
        if entered_by.is_some() {
            self.state.last_tc = entered_by.cloned();
        }
        let signature = self
            .key
            .sign(&timeout_digest(epoch, round, high_qc.round).0);
        Some((
            self.state.clone(),
            Timeout {
                epoch,
                round,
                high_qc,
                voter: self.me,
                signature,
                entered_by: None,
            },
        ))
    }

    /// Signs a proposal: at most one per round.
    pub(crate) fn propose(&mut self, block: Block) -> Option<(SafetyState, Block)> {
        if block.epoch != self.state.epoch || block.round <= self.state.last_proposed_round {
            return None;
        }
        self.state.last_proposed_round = block.round;
        Some((self.state.clone(), block.sign(&self.key)))
    }

    /// This validator's index in a new epoch's set.
    pub(crate) fn set_index(&mut self, me: ValidatorIndex) {
        self.me = me;
    }

    /// Moves to a new epoch: its signatures name the epoch, so the round counters start over.
    pub(crate) fn enter_epoch(&mut self, epoch: Epoch) -> SafetyState {
        if epoch > self.state.epoch {
            self.state = SafetyState {
                epoch,
                ..SafetyState::default()
            };
        }
        self.state.clone()
    }
}
