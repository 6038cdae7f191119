//! Certificates over executed headers: this validator signs each header it executed, gathers the
//! others' signatures, and stores a certificate once a quorum of the block's epoch agrees.

use super::*;

impl Core {
    pub(super) fn sign_header(&mut self, height: Height, header_hash: Hash) {
        if !self.signers_of(height).contains(&self.shared.me) {
            return;
        }
        let vote = CommitVote::sign(header_hash, &self.params.key);
        for to in 0..self.peers.len() as ValidatorIndex {
            if to != self.me {
                self.send(
                    to,
                    DirectMessage::CommitVote {
                        height,
                        vote: vote.clone(),
                    },
                );
            }
        }
        let entry = self.header_votes.entry(height).or_default();
        entry.own = Some(header_hash);
        entry.votes.push(vote);
        self.try_certify(height);
        self.trim_header_votes(height);
    }

    /// Forgets header votes more than `VOTE_WINDOW` below `height`.
    fn trim_header_votes(&mut self, height: Height) {
        let keep_from = height.saturating_sub(VOTE_WINDOW);
        if self
            .header_votes
            .first_key_value()
            .is_some_and(|(h, _)| *h < keep_from)
        {
            self.header_votes = self.header_votes.split_off(&keep_from);
        }
    }

    /// The validators that sign the header at `height`.
    pub(super) fn signers_of(&self, height: Height) -> Vec<AccountId> {
        match &self.previous {
            Some((last, keys)) if height <= *last => keys.clone(),
            _ => self.shared.validators(),
        }
    }

    pub(super) fn on_header_vote(&mut self, from: PeerId, height: Height, vote: CommitVote) {
        let sender_signed =
            tally_network::peer_id_from_public_key(&vote.validator.0).ok() == Some(from);
        if !sender_signed || !self.signers_of(height).contains(&vote.validator) || !vote.verify() {
            self.shared
                .metrics
                .consensus_invalid_messages
                .with_label_values(&["bad_commit_vote"])
                .inc();
            self.penalise(from, "bad_commit_vote");
            return;
        }
        if height + VOTE_WINDOW < self.executed || height > self.executed + 10_000 {
            return;
        }
        let entry = self.header_votes.entry(height).or_default();
        if entry.votes.iter().any(|v| v.validator == vote.validator) {
            return;
        }
        entry.votes.push(vote);
        self.try_certify(height);
        // A node that signs no headers (not a validator of the epoch) trims here, or its
        // store of others' votes would grow with the chain.
        self.trim_header_votes(self.executed);
    }

    pub(super) fn try_certify(&mut self, height: Height) {
        let signers = self.signers_of(height);
        let validators: &[AccountId] = &signers;
        let Some(entry) = self.header_votes.get_mut(&height) else {
            return;
        };
        let Some(own) = entry.own else {
            return;
        };
        if entry.certified {
            return;
        }
        if let Some(cert) = CommitCertificate::from_votes(own, entry.votes.iter(), validators) {
            entry.certified = true;
            if let Err(e) = self.shared.store.put_certificate(height, &cert) {
                self.shared
                    .fail(format!("storing a commit certificate: {e}"));
            }
            return;
        }
        let others: HashSet<Hash> = entry
            .votes
            .iter()
            .filter(|v| v.header_hash != own)
            .map(|v| v.header_hash)
            .collect();
        for other in others {
            if CommitCertificate::from_votes(other, entry.votes.iter(), validators).is_some() {
                tracing::error!(
                    height,
                    ours = %own,
                    quorum = %other,
                    "a quorum of validators executed this block to a different header: this node's state diverged"
                );
                self.shared.mark_diverged(height);
                entry.certified = true;
            }
        }
    }
}
