//! Aggregation of verified votes into quorum certificates and of verified timeouts into
//! timeout certificates, with equivocation detection: a second, different vote or timeout of
//! one validator for one round becomes evidence.
//!
//! Votes are grouped by everything their signature covers (epoch, round, height, block), so a
//! vote that names the right block with a wrong height can never end up in the certificate the
//! honest votes form. Memory is bounded by the caller's round window: at most one vote and one
//! timeout per validator per round are kept, and rounds below the window are pruned.

use crate::types::{
    Digest, Epoch, Evidence, Height, Message, QuorumCert, Round, Timeout, TimeoutCert,
    ValidatorIndex, ValidatorSet, Vote,
};
use ed25519_dalek::Signature;
use std::collections::{BTreeMap, BTreeSet};

/// Result of adding a vote or a timeout.
pub(crate) enum Added<C> {
    /// Counted; no certificate yet (or already formed).
    Pending,
    /// This one completed a certificate.
    Certificate(C),
    /// The signer already said something else for this round.
    Equivocation(Box<Evidence>),
    /// Already counted, or a further conflict of a signer already reported for this round.
    Duplicate,
}

/// What a vote signs: votes count together only when all of it is equal.
type VoteKey = (Round, Digest, Height, Epoch);

/// Votes for one signed tuple: the signatures, and whether a QC was formed.
type VoteSet = (BTreeMap<ValidatorIndex, Signature>, bool);
/// Timeouts for one round: (high QC round, signature) per signer, and whether a TC was formed.
type TimeoutSet = (BTreeMap<ValidatorIndex, (Round, Signature)>, bool);

#[derive(Default)]
pub(crate) struct Aggregator {
    votes_by_voter: BTreeMap<(Round, ValidatorIndex), Vote>,
    votes: BTreeMap<VoteKey, VoteSet>,
    timeouts_by_voter: BTreeMap<(Round, ValidatorIndex), Timeout>,
    timeouts: BTreeMap<Round, TimeoutSet>,
    /// (round, validator, kind) already reported: one piece of evidence each.
    reported: BTreeSet<(Round, ValidatorIndex, u8)>,
    /// Test-only: group votes by round and block alone, taking the height of the first vote
    /// (the broken rule, to show the simulator catches it).
    pub(crate) group_by_block_only: bool,
}

fn signed_tuple(v: &Vote) -> VoteKey {
    (v.round, v.block, v.height, v.epoch)
}

impl Aggregator {
    /// Adds a verified vote.
    pub(crate) fn add_vote(&mut self, vote: Vote, validators: &ValidatorSet) -> Added<QuorumCert> {
        if let Some(prev) = self.votes_by_voter.get(&(vote.round, vote.voter)) {
            if signed_tuple(prev) == signed_tuple(&vote) {
                return Added::Duplicate;
            }
            let first = Message::Vote(prev.clone());
            return self.equivocation(vote.voter, vote.epoch, vote.round, 0, first, || {
                Message::Vote(vote)
            });
        }
        self.votes_by_voter
            .insert((vote.round, vote.voter), vote.clone());
        let key = if self.group_by_block_only {
            self.votes
                .keys()
                .find(|k| k.0 == vote.round && k.1 == vote.block)
                .copied()
                .unwrap_or_else(|| signed_tuple(&vote))
        } else {
            signed_tuple(&vote)
        };
        let entry = self.votes.entry(key).or_default();
        entry.0.insert(vote.voter, vote.signature);
        if entry.1 || entry.0.len() < validators.quorum() {
            return Added::Pending;
        }
        entry.1 = true;
        let (round, block, height, epoch) = key;
        Added::Certificate(QuorumCert {
            epoch,
            round,
            height,
            block,
            signatures: entry.0.iter().map(|(i, s)| (*i, *s)).collect(),
        })
    }

    /// Adds a verified timeout.
    pub(crate) fn add_timeout(
        &mut self,
        timeout: Timeout,
        validators: &ValidatorSet,
    ) -> Added<TimeoutCert> {
        if let Some(prev) = self.timeouts_by_voter.get(&(timeout.round, timeout.voter)) {
            if prev.high_qc.round == timeout.high_qc.round && prev.signature == timeout.signature {
                return Added::Duplicate;
            }
            let first = Message::Timeout(prev.clone());
            return self.equivocation(
                timeout.voter,
                timeout.epoch,
                timeout.round,
                1,
                first,
                || Message::Timeout(timeout),
            );
        }
        self.timeouts_by_voter
            .insert((timeout.round, timeout.voter), timeout.clone());
        let entry = self.timeouts.entry(timeout.round).or_default();
        entry
            .0
            .insert(timeout.voter, (timeout.high_qc.round, timeout.signature));
        if entry.1 || entry.0.len() < validators.quorum() {
            return Added::Pending;
        }
        entry.1 = true;
        Added::Certificate(TimeoutCert {
            epoch: timeout.epoch,
            round: timeout.round,
            timeouts: entry.0.iter().map(|(i, (r, s))| (*i, *r, *s)).collect(),
        })
    }

    /// Evidence once per (round, validator, kind); later conflicts are duplicates.
    fn equivocation<C>(
        &mut self,
        validator: ValidatorIndex,
        epoch: Epoch,
        round: Round,
        kind: u8,
        first: Message,
        second: impl FnOnce() -> Message,
    ) -> Added<C> {
        if !self.reported.insert((round, validator, kind)) {
            return Added::Duplicate;
        }
        Added::Equivocation(Box::new(Evidence {
            validator,
            epoch,
            round,
            first,
            second: second(),
        }))
    }

    /// Distinct validators that timed out `round`.
    pub(crate) fn timeouts_for(&self, round: Round) -> usize {
        self.timeouts.get(&round).map_or(0, |t| t.0.len())
    }

    /// Forgets everything below `round`.
    pub(crate) fn prune(&mut self, round: Round) {
        self.votes_by_voter = self.votes_by_voter.split_off(&(round, 0));
        self.votes = self.votes.split_off(&(round, Digest::default(), 0, 0));
        self.timeouts_by_voter = self.timeouts_by_voter.split_off(&(round, 0));
        self.timeouts = self.timeouts.split_off(&round);
        self.reported = self.reported.split_off(&(round, 0, 0));
    }

    /// Entries held (for the memory bound tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.votes_by_voter.len() + self.timeouts_by_voter.len()
    }
}
