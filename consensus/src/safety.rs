//! Safety rules: the only code that signs votes, timeouts and proposals. It refuses to sign
//! twice for one round, and every signature is preceded by the new safety state, which the node
//! makes durable before it performs anything that follows (so a validator restarted from disk
//! never signs two different things for one round).
//!
//! Voting rule (two-chain HotStuff / DiemBFT v4 / Jolteon):
//!   vote for B iff B.round > last_voted_round and
//!     B.justify.round + 1 == B.round                                    (normal case), or
//!     B.tc.round + 1 == B.round and B.justify.round >= max hqc in B.tc  (after a timeout).
//! Timeout rule: sign a timeout for round r iff r >= last_voted_round; afterwards
//! last_voted_round = r, so the replica never votes in a round it gave up.

use crate::types::{
    timeout_digest, vote_digest, Block, Epoch, QuorumCert, Round, Timeout, ValidatorIndex, Vote,
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
    /// Highest QC round seen when voting (the lock of the two-chain rule).
    pub highest_qc_round: Round,
    /// The last timeout signed: its round and the high QC it carried. A timeout for that round
    /// is only ever signed again with that same QC (ed25519 signatures are deterministic, so
    /// the message is identical), even after a restart with an older QC at hand.
    pub last_timeout: Option<(Round, QuorumCert)>,
}

/// The signer.
pub(crate) struct SafetyRules {
    key: SigningKey,
    me: ValidatorIndex,
    pub(crate) state: SafetyState,
    /// Test-only: vote without the safety checks (to prove the simulator's checker works).
    pub(crate) ignore_rules: bool,
}

impl SafetyRules {
    pub(crate) fn new(key: SigningKey, me: ValidatorIndex, state: SafetyState) -> SafetyRules {
        SafetyRules {
            key,
            me,
            state,
            ignore_rules: false,
        }
    }

    /// Whether voting for `block` is safe.
    pub(crate) fn safe_to_vote(&self, block: &Block) -> bool {
        if self.ignore_rules {
            return true;
        }
        if block.epoch != self.state.epoch || block.round <= self.state.last_voted_round {
            return false;
        }
        let qc_round = block.justify.round;
        if qc_round + 1 == block.round {
            return true;
        }
        match &block.timeout_cert {
            Some(tc) => tc.round + 1 == block.round && qc_round >= tc.max_high_qc_round(),
            None => false,
        }
    }

    /// Signs a vote: returns the new state to persist first, and the vote.
    pub(crate) fn vote(&mut self, block: &Block) -> Option<(SafetyState, Vote)> {
        if !self.safe_to_vote(block) {
            return None;
        }
        self.state.last_voted_round = self.state.last_voted_round.max(block.round);
        self.state.highest_qc_round = self.state.highest_qc_round.max(block.justify.round);
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

    /// Signs a timeout for `round` carrying `high_qc`.
    pub(crate) fn timeout(
        &mut self,
        epoch: Epoch,
        round: Round,
        high_qc: &QuorumCert,
    ) -> Option<(SafetyState, Timeout)> {
        if epoch != self.state.epoch || round < self.state.last_voted_round {
            return None;
        }
        let high_qc = match &self.state.last_timeout {
            Some((r, signed)) if *r == round => signed.clone(),
            _ => high_qc.clone(),
        };
        self.state.last_voted_round = round;
        self.state.last_timeout = Some((round, high_qc.clone()));
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
