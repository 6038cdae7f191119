//! Verify once: attestations of batches. A validator that verified every signature of a batch
//! signs an attestation and sends it to the others; a batch with f + 1 attestations from
//! distinct validators of the current set (at least one of them honest) is proposed and voted
//! for without anyone checking its signatures again. A batch that gathers too few within
//! `ATTESTATION_GRACE` is checked here after all, so a checker that is down, or that never got
//! the batch, costs time, never liveness; a batch whose check fails is dropped and its author
//! penalised.

use super::*;

impl Core {
    /// Attestations that make a batch usable: f + 1.
    pub(super) fn attesters_needed(&self) -> usize {
        self.consensus.validators().faults() + 1
    }

    /// Attests a batch whose every signature this validator verified (once per batch).
    pub(super) fn attest(&mut self, d: Digest) {
        if self.me == NOT_A_VALIDATOR {
            return;
        }
        let me = self.shared.me;
        if self.attestations.has(&d, &me) {
            return;
        }
        self.attestations.add(d, me);
        let attestation = Attestation::sign(d, &self.params.key);
        for to in 0..self.peers.len() as ValidatorIndex {
            if to != self.me {
                self.send(to, DirectMessage::Attestation(attestation.clone()));
            }
        }
        self.count_attestations(d);
    }

    pub(super) fn on_attestation(&mut self, from: PeerId, a: Attestation) {
        let sender_signed =
            tally_network::peer_id_from_public_key(&a.validator.0).ok() == Some(from);
        if !sender_signed || !self.shared.validators().contains(&a.validator) || !a.verify() {
            self.shared
                .metrics
                .consensus_invalid_messages
                .with_label_values(&["bad_attestation"])
                .inc();
            self.penalise(from, "bad_attestation");
            return;
        }
        if self.pool.is_committed(&a.digest) {
            return;
        }
        self.attestations.add(a.digest, a.validator);
        self.count_attestations(a.digest);
    }

    /// Marks a held batch attested once it has enough attestations.
    fn count_attestations(&mut self, d: Digest) {
        if !self.pool.holds(&d) || self.pool.is_attested(&d) {
            return;
        }
        if self.attestations.count(&d, &self.shared.validators()) >= self.attesters_needed() {
            let was_usable = self.pool.is_usable(&d);
            self.pool.mark_attested(&d);
            if !was_usable {
                self.store_held(d);
            }
            self.on_usable(d);
        }
    }

    /// Schedules the check of a batch held without its signatures checked.
    pub(super) fn check_later(&self, d: Digest) {
        let internal = self.internal.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ATTESTATION_GRACE).await;
            let _ = internal.send(Internal::CheckSignatures(d)).await;
        });
    }

    /// The grace of a batch ran out: unless attested by now, verify its signatures here.
    pub(super) fn check_signatures(&mut self, d: Digest) {
        let Some(batch) = self.pool.get(&d) else {
            return;
        };
        if self.pool.is_attested(&d) || batch.signatures_checked {
            return;
        }
        let bytes = batch.bytes.to_vec();
        let shared = self.shared.clone();
        let internal = self.internal.clone();
        let (max_bytes, max_txs) = (self.params.max_batch_bytes, self.params.max_batch_txs);
        tokio::spawn(async move {
            let limits = (max_bytes, max_txs);
            fetch::check_and_deliver(&shared, &internal, bytes, limits, d, Origin::SelfCheck).await;
        });
    }

    /// A held batch failed the signature check: drop it, penalise its author, refuse the
    /// blocks that named it. Anyone that attested it signed a falsehood.
    pub(super) fn refuse_held(&mut self, d: Digest) {
        let Some(batch) = self.pool.remove(&d) else {
            return;
        };
        let attesters = self.attestations.count(&d, &self.shared.validators());
        tracing::error!(
            digest = %hex::encode(d.0),
            author = %hex::encode(batch.author.0),
            attesters,
            "a batch held for its attestations has a bad signature"
        );
        if let Ok(peer) = tally_network::peer_id_from_public_key(&batch.author.0) {
            self.penalise(peer, "bad_batch");
        }
        self.attestations.forget(&d);
        self.refuse_awaiting(d);
    }

    /// Blocks waiting for `d` are refused (not voted for).
    pub(super) fn refuse_awaiting(&mut self, d: Digest) {
        let mut refused = Vec::new();
        self.awaiting.retain(|(block, missing)| {
            if missing.contains(&d) {
                refused.push(*block);
                false
            } else {
                true
            }
        });
        for block in refused {
            self.local.push_back(Event::PayloadValidated {
                block,
                valid: false,
            });
        }
    }
}
