//! Aggregation of verified votes into quorum certificates and of verified timeouts into
//! timeout certificates, with equivocation detection: a second, different vote or timeout of
//! one validator for one round becomes evidence.

use crate::types::{
    Digest, Evidence, Height, Message, QuorumCert, Round, Timeout, TimeoutCert, ValidatorIndex,
    ValidatorSet, Vote,
};
use ed25519_dalek::Signature;
use std::collections::BTreeMap;

/// Result of adding a vote or a timeout.
pub(crate) enum Added<C> {
    /// Counted; no certificate yet (or already formed).
    Pending,
    /// This one completed a certificate.
    Certificate(C),
    /// The signer already said something else for this round.
    Equivocation(Box<Evidence>),
    /// Already counted.
    Duplicate,
}

/// Votes for one block: its height, the signatures, and whether a QC was formed.
type VoteSet = (Height, BTreeMap<ValidatorIndex, Signature>, bool);
/// Timeouts for one round: (high QC round, signature) per signer, and whether a TC was formed.
type TimeoutSet = (BTreeMap<ValidatorIndex, (Round, Signature)>, bool);

#[derive(Default)]
pub(crate) struct Aggregator {
    votes_by_voter: BTreeMap<(Round, ValidatorIndex), Vote>,
    votes: BTreeMap<(Round, Digest), VoteSet>,
    timeouts_by_voter: BTreeMap<(Round, ValidatorIndex), Timeout>,
    timeouts: BTreeMap<Round, TimeoutSet>,
}

impl Aggregator {
    /// Adds a verified vote.
    pub(crate) fn add_vote(&mut self, vote: Vote, validators: &ValidatorSet) -> Added<QuorumCert> {
        if let Some(prev) = self.votes_by_voter.get(&(vote.round, vote.voter)) {
            if prev.block == vote.block {
                return Added::Duplicate;
            }
            return Added::Equivocation(Box::new(Evidence {
                validator: vote.voter,
                epoch: vote.epoch,
                round: vote.round,
                first: Message::Vote(prev.clone()),
                second: Message::Vote(vote),
            }));
        }
        self.votes_by_voter
            .insert((vote.round, vote.voter), vote.clone());
        let entry = self
            .votes
            .entry((vote.round, vote.block))
            .or_insert_with(|| (vote.height, BTreeMap::new(), false));
        entry.1.insert(vote.voter, vote.signature);
        if entry.2 || entry.1.len() < validators.quorum() {
            return Added::Pending;
        }
        entry.2 = true;
        Added::Certificate(QuorumCert {
            epoch: vote.epoch,
            round: vote.round,
            height: entry.0,
            block: vote.block,
            signatures: entry.1.iter().map(|(i, s)| (*i, *s)).collect(),
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
            return Added::Equivocation(Box::new(Evidence {
                validator: timeout.voter,
                epoch: timeout.epoch,
                round: timeout.round,
                first: Message::Timeout(prev.clone()),
                second: Message::Timeout(timeout),
            }));
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

    /// Distinct validators that timed out `round`.
    pub(crate) fn timeouts_for(&self, round: Round) -> usize {
        self.timeouts.get(&round).map_or(0, |t| t.0.len())
    }

    /// Forgets everything below `round`.
    pub(crate) fn prune(&mut self, round: Round) {
        self.votes_by_voter = self.votes_by_voter.split_off(&(round, 0));
        self.votes = self.votes.split_off(&(round, Digest::default()));
        self.timeouts_by_voter = self.timeouts_by_voter.split_off(&(round, 0));
        self.timeouts = self.timeouts.split_off(&round);
    }
}
