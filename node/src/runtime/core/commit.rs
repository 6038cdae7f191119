//! Payloads and commits: the leader's payload, the checks before a vote (batches present, time
//! within bounds), and committed blocks handed to the executor in height order once every batch
//! is held.

use super::*;

impl Core {
    /// Answers the leader's payload request: at once when batches wait or an ancestor still
    /// carries payload to commit, otherwise when a batch arrives or the empty-block delay ends.
    pub(super) fn answer_payload(&mut self, deadline_passed: bool) {
        let Some((round, exclude, deadline)) = self.payload_request.take() else {
            return;
        };
        let digests = self.pool.payload(&exclude, self.params.max_payload);
        let now = Instant::now();
        if digests.is_empty() && !deadline_passed && now < deadline {
            self.payload_request = Some((round, exclude, deadline));
            return;
        }
        self.local.push_back(Event::Payload {
            round,
            digests,
            timestamp_ms: now_ms(),
        });
    }

    pub(super) fn validate_payload(
        &mut self,
        block: Digest,
        author: ValidatorIndex,
        timestamp_ms: u64,
        digests: Vec<Digest>,
    ) {
        if timestamp_ms > now_ms() + MAX_CLOCK_SKEW_MS || digests.len() > self.params.max_payload {
            self.local.push_back(Event::PayloadValidated {
                block,
                valid: false,
            });
            return;
        }
        // A batch counts once it is usable here: attested by f + 1 validators, or its
        // signatures checked here. One held but not yet usable waits for its attestations (or
        // for the check after `ATTESTATION_GRACE`); one not held is fetched.
        let missing: HashSet<Digest> = digests
            .iter()
            .filter(|d| !self.pool.is_usable(d) && !self.pool.is_committed(d))
            .copied()
            .collect();
        if missing.is_empty() {
            self.local
                .push_back(Event::PayloadValidated { block, valid: true });
            return;
        }
        for d in &missing {
            if !self.pool.holds(d) {
                self.fetch(*d, Some(author), FETCH_GRACE);
            }
        }
        self.awaiting.push((block, missing));
    }

    pub(super) fn on_commit(&mut self, block: Block, qc: QuorumCert) {
        let latency_ms = now_ms().saturating_sub(block.timestamp_ms);
        tracing::debug!(
            height = block.height,
            round = block.round,
            batches = block.payload.len(),
            certified_by = qc.signatures.len(),
            latency_ms,
            "block committed"
        );
        self.shared
            .metrics
            .consensus_commit_latency
            .observe(latency_ms as f64 / 1000.0);
        let me = self.shared.me;
        let mut slots = Vec::with_capacity(block.payload.len());
        for d in &block.payload {
            self.attestations.forget(d);
            let usable = self.pool.is_usable(d);
            let held = self.pool.commit(d);
            if let Some(b) = &held {
                if !usable {
                    // Held for its attestations and committed first: the quorum that
                    // certified the block vouches for it (docs/consensus.md, "Verify once").
                    self.store_batch(b);
                }
                if b.author == me {
                    self.shared.own_batch_committed(b.txs.len());
                }
            } else {
                self.fetch(*d, Some(block.author), Duration::ZERO);
            }
            slots.push(held);
        }
        for d in &block.payload {
            // A proposal that waited for a batch this block committed may now be voted for.
            self.on_usable(*d);
        }
        self.commits.push_back(PendingCommit {
            block,
            qc,
            batches: slots,
        });
        self.release_commits();
    }

    /// Hands the oldest commits whose batches are all present to the executor, in order.
    pub(super) fn release_commits(&mut self) {
        while self
            .commits
            .front()
            .is_some_and(|c| c.batches.iter().all(Option::is_some))
        {
            let Some(c) = self.commits.pop_front() else {
                break;
            };
            let proposer = self
                .consensus
                .validators()
                .key(c.block.author)
                .map_or(AccountId([0; 32]), AccountId);
            let job = CommitJob {
                proposer,
                block: c.block,
                qc: c.qc,
                batches: c.batches.into_iter().flatten().collect(),
            };
            if self.executor.send(job).is_err() {
                return;
            }
        }
    }
}
