//! Getting what consensus needs from peers: missing batches (from disk, then the proposer and,
//! hedged, every other validator), their verification and pooling in arrival order, and block
//! requests.

use super::*;

/// How long a batch fetch waits for one peer before also asking the next.
const HEDGE: Duration = Duration::from_millis(100);

/// How long a block request waits for its peer before consensus moves on to the next one.
/// An answer holds at most `SYNC_CHUNK` blocks of payload digests (no transactions), which a
/// reachable peer on a LAN or a continental WAN sends well within it. A constant for now: on
/// links slow enough to need more, consensus would keep moving to the next validator.
const BLOCK_PATIENCE: Duration = Duration::from_secs(1);

impl Core {
    pub(super) fn request_blocks(&self, to: ValidatorIndex, request: BlockRequest) {
        let Some(peer) = self.peers.get(to as usize).copied() else {
            return;
        };
        let net = self.shared.network.clone();
        let internal = self.internal.clone();
        let data = codec::encode(&SyncRequest::Blocks(request));
        tokio::spawn(async move {
            // A peer that has not answered within `BLOCK_PATIENCE` of the request leaving (the
            // wait for a request slot does not count) counts as having nothing: consensus then
            // asks the next validator at once. A paused or hung peer (its connection open,
            // nothing answered) would otherwise hold the sync, and any vote that waits for the
            // missing block, for the whole request timeout.
            let answer = net.request_within(peer, data, BLOCK_PATIENCE).await;
            let (blocks, proof) = match answer {
                Ok(bytes) => match codec::decode::<SyncResponse>(&bytes, MAX_FRAME) {
                    Ok(SyncResponse::Blocks(blocks)) => (blocks, None),
                    Ok(SyncResponse::BlocksToEpochEnd(blocks, proof)) => (blocks, Some(proof)),
                    _ => {
                        let _ = net.penalise(peer, "bad_sync_response").await;
                        (Vec::new(), None)
                    }
                },
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "block request failed; asking the next validator");
                    (Vec::new(), None)
                }
            };
            let _ = internal
                .send(Internal::SyncBlocks {
                    from: to,
                    blocks,
                    proof,
                })
                .await;
        });
    }

    /// Gets a batch: from disk if stored, else from `first` and then every other validator.
    pub(super) fn fetch(&mut self, digest: Digest, first: Option<ValidatorIndex>, grace: Duration) {
        if !self.fetching.insert(digest) {
            return;
        }
        let mut order: Vec<PeerId> = Vec::new();
        if let Some(p) = first.and_then(|i| self.peers.get(i as usize)) {
            if first != Some(self.me) {
                order.push(*p);
            }
        }
        for (i, p) in self.peers.iter().enumerate() {
            if i as ValidatorIndex != self.me && !order.contains(p) {
                order.push(*p);
            }
        }
        let shared = self.shared.clone();
        let internal = self.internal.clone();
        let (max_bytes, max_txs) = (self.params.max_batch_bytes, self.params.max_batch_txs);
        tokio::spawn(async move {
            let hash = batches::to_hash(&digest);
            if let Ok(Some(bytes)) = shared.store.batch(&hash) {
                let limits = (max_bytes, max_txs);
                check_and_deliver(&shared, &internal, bytes, limits, digest, Origin::Disk).await;
                return;
            }
            tokio::time::sleep(grace).await;
            let request = codec::encode(&SyncRequest::Batch(hash));
            for attempt in 0..5u64 {
                // Hedged requests: the author at once, each other validator `HEDGE` later
                // than the one before, and the first batch wins. A peer that neither answers
                // nor disconnects (paused, hung, partitioned without a reset) then delays the
                // batch, and so this validator's vote, by `HEDGE` instead of by the request
                // timeout.
                let mut asks = futures::stream::FuturesUnordered::new();
                for (k, peer) in order.iter().copied().enumerate() {
                    let network = shared.network.clone();
                    let request = request.clone();
                    let delay = HEDGE.saturating_mul(u32::try_from(k).unwrap_or(u32::MAX));
                    asks.push(async move {
                        tokio::time::sleep(delay).await;
                        (peer, network.request(peer, request).await)
                    });
                }
                while let Some((peer, answer)) = futures::StreamExt::next(&mut asks).await {
                    let Ok(bytes) = answer else {
                        continue;
                    };
                    match codec::decode::<SyncResponse>(&bytes, MAX_FRAME) {
                        Ok(SyncResponse::Batch(Some(bytes))) => {
                            let (bytes, limits) = (bytes.into_vec(), (max_bytes, max_txs));
                            let origin = Origin::Peer(peer);
                            check_and_deliver(&shared, &internal, bytes, limits, digest, origin)
                                .await;
                            return;
                        }
                        Ok(SyncResponse::Batch(None)) => {}
                        _ => {
                            let _ = shared.network.penalise(peer, "bad_batch_response").await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
            }
            let _ = internal.send(Internal::FetchFailed(digest)).await;
        });
    }

    // ---- inputs ----------------------------------------------------------------------------

    pub(super) fn on_verified(
        &mut self,
        batch: Result<VerifiedBatch, batches::BatchError>,
        origin: Origin,
        expected: Option<Digest>,
    ) {
        let batch = match (batch, expected) {
            (Ok(b), Some(e)) if b.digest != e => Err(b.digest),
            (Ok(b), _) => Ok(b),
            (Err(e), _) => {
                tracing::debug!(error = %e, "invalid batch");
                self.shared
                    .metrics
                    .batches_rejected
                    .with_label_values(&[e.reason()])
                    .inc();
                Err(Digest::default())
            }
        };
        match (batch, origin) {
            (Ok(batch), Origin::SelfCheck) => {
                self.shared
                    .metrics
                    .batches_checked
                    .with_label_values(&["late_attestations"])
                    .inc();
                self.pool.mark_checked(&batch.digest);
                self.store_held(batch.digest);
                self.attest(batch.digest);
                self.on_usable(batch.digest);
            }
            (Err(_), Origin::SelfCheck) => {
                if let Some(d) = expected {
                    self.refuse_held(d);
                }
            }
            (Ok(batch), origin) => {
                if !matches!(origin, Origin::Disk) {
                    self.shared
                        .metrics
                        .batches_checked
                        .with_label_values(&[if batch.signatures_checked {
                            "signatures"
                        } else {
                            "attested"
                        }])
                        .inc();
                }
                let kind = match origin {
                    Origin::Gossip { message_id, source } => {
                        self.report(message_id, source, Acceptance::Accept);
                        "gossip"
                    }
                    Origin::Peer(_) => "fetched",
                    Origin::Disk | Origin::SelfCheck => "disk",
                };
                self.fetching.remove(&batch.digest);
                let digest = batch.digest;
                if !self.pool.holds(&digest) {
                    self.shared
                        .metrics
                        .batches_stored
                        .with_label_values(&[kind])
                        .inc();
                    // A batch is stored (and so served) once usable here: one held for its
                    // attestations is stored when they come or when it is checked here.
                    let checked = batch.signatures_checked;
                    if !matches!(kind, "disk") && checked {
                        self.store_batch(&batch);
                    }
                    self.add_batch(batch);
                    if checked {
                        self.attest(digest);
                    } else if self.pool.is_usable(&digest) {
                        self.store_held(digest);
                    } else {
                        self.check_later(digest);
                    }
                } else if batch.signatures_checked && !self.pool.is_usable(&digest) {
                    // A checked copy (fetched) of a batch held for its attestations.
                    self.pool.mark_checked(&digest);
                    self.store_held(digest);
                    self.attest(digest);
                    self.on_usable(digest);
                }
            }
            (Err(_), Origin::Gossip { message_id, source }) => {
                self.report(message_id, source, Acceptance::Reject);
            }
            (Err(_), Origin::Peer(peer)) => {
                self.penalise(peer, "bad_batch");
                if let Some(d) = expected {
                    self.fetching.remove(&d);
                    self.fetch(d, None, Duration::from_millis(100));
                }
            }
            (Err(_), Origin::Disk) => {
                tracing::error!("a stored batch does not verify");
                if let Some(d) = expected {
                    self.fetching.remove(&d);
                    self.refuse_awaiting(d);
                }
            }
        }
    }

    pub(super) fn store_batch(&self, batch: &VerifiedBatch) {
        if let Err(e) = self
            .shared
            .store
            .put_batch(&batches::to_hash(&batch.digest), &batch.bytes)
        {
            self.shared.fail(format!("storing a batch: {e}"));
        }
    }

    /// Stores a held batch (one that became usable here).
    pub(super) fn store_held(&self, d: Digest) {
        if let Some(batch) = self.pool.get(&d) {
            self.store_batch(batch);
        }
    }

    pub(super) fn add_batch(&mut self, batch: VerifiedBatch) {
        let d = batch.digest;
        // A batch that a pending commit waits for goes straight to it.
        let mut used = false;
        for c in &mut self.commits {
            for (slot, digest) in c.batches.iter_mut().zip(&c.block.payload) {
                if slot.is_none() && *digest == d {
                    *slot = Some(batch.clone());
                    used = true;
                }
            }
        }
        if used {
            if !batch.signatures_checked {
                // Committed before it was usable here: the block's quorum vouches for it, and
                // it is kept for peers that fetch it.
                self.store_batch(&batch);
            }
            self.pool.commit(&d);
            if batch.author == self.shared.me {
                self.shared.own_batch_committed(batch.txs.len());
            }
            self.release_commits();
        } else if !self.pool.is_committed(&d) {
            self.pool.insert(batch);
            if self.attestations.count(&d, &self.shared.validators()) >= self.attesters_needed() {
                self.pool.mark_attested(&d);
            }
        }
        if used || self.pool.is_usable(&d) {
            self.on_usable(d);
        }
    }

    /// A batch became usable (or was committed): blocks that waited for it may be voted for,
    /// and an idle leader may propose it.
    pub(super) fn on_usable(&mut self, d: Digest) {
        let mut ready = Vec::new();
        for (block, missing) in &mut self.awaiting {
            if missing.remove(&d) && missing.is_empty() {
                ready.push(*block);
            }
        }
        self.awaiting.retain(|(_, m)| !m.is_empty());
        for block in ready {
            self.local
                .push_back(Event::PayloadValidated { block, valid: true });
        }
        if !self.pool.is_committed(&d) {
            // A quiet round's timer stops allowing for the idle wait: a leader that has it
            // proposes now.
            self.local.push_back(Event::PayloadReady);
        }
        self.answer_payload(false);
    }

    // ---- certificates over executed headers ------------------------------------------------
}

/// Verifies every signature of a batch expected under `digest` (from disk, a peer, or held
/// for its attestations) off the event loop, and hands the result to the driver.
pub(super) async fn check_and_deliver(
    shared: &NodeShared,
    internal: &mpsc::Sender<Internal>,
    bytes: Vec<u8>,
    (max_bytes, max_txs): (usize, usize),
    digest: Digest,
    origin: Origin,
) {
    let batch = verify_off_loop(
        bytes,
        &shared.chain_id,
        max_bytes,
        max_txs,
        None,
        Check::Signatures,
    )
    .await;
    let _ = internal
        .send(Internal::Verified {
            batch,
            origin,
            expected: Some(digest),
            order: None,
        })
        .await;
}
