//! The consensus driver: the one task that owns the consensus state machine and the pool of
//! batches. It turns network events, timers and the node's answers into consensus events, and
//! performs the actions that come back: sends, timers, durable safety state (fsync before
//! anything that follows), payload checks (fetching missing batches), commits (handed in order
//! to the executor once every batch is present), sync requests, evidence and penalties.

use super::batches::{self, BatchPool, VerifiedBatch};
use super::executor::CommitJob;
use super::internal::{Internal, Origin};
use super::sync::SyncServer;
use super::wire::{DirectMessage, SyncRequest, SyncResponse, BATCH_TOPIC};
use super::{now_ms, NodeShared};
use crate::block::{CommitCertificate, CommitVote};
use crate::codec;
use crate::primitives::{AccountId, Hash, Height};
use ed25519_dalek::SigningKey;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tally_consensus::{
    Action, Block, BlockRequest, Consensus, Digest, Event, QuorumCert, Round, ValidatorIndex,
};
use tally_network::{Acceptance, MessageId, NetworkEvent, PeerId};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Largest direct message or sync frame decoded (a block request answer can be large).
const MAX_FRAME: usize = 32 << 20;
/// How long a replica waits for a proposal's batch to arrive by gossip before fetching it.
const FETCH_GRACE: Duration = Duration::from_millis(25);
/// Votes on executed headers are kept for heights this far behind the executed height.
const VOTE_WINDOW: Height = 64;
/// Block timestamps further than this in the future make a proposal invalid.
const MAX_CLOCK_SKEW_MS: u64 = 10_000;

/// Static parameters of the driver.
pub(crate) struct CoreParams {
    pub key: SigningKey,
    pub empty_block_delay: Duration,
    pub max_batch_bytes: usize,
    pub max_batch_txs: usize,
    pub max_payload: usize,
    /// Validator-set changes happen only after heights that are multiples of this.
    pub epoch_blocks: Height,
}

struct PendingCommit {
    block: Block,
    qc: QuorumCert,
    batches: Vec<Option<VerifiedBatch>>,
}

#[derive(Default)]
struct HeaderVotes {
    own: Option<Hash>,
    votes: Vec<CommitVote>,
    certified: bool,
}

/// The driver's state.
pub(crate) struct Core {
    shared: Arc<NodeShared>,
    consensus: Consensus,
    params: CoreParams,
    /// This validator's index in the current epoch (`NOT_A_VALIDATOR` when outside the set).
    me: ValidatorIndex,
    epoch: u64,
    peers: Vec<PeerId>,
    index_of: HashMap<PeerId, ValidatorIndex>,
    /// The previous epoch's keys and its last height: votes on its last headers still count.
    previous: Option<(Height, Vec<AccountId>)>,
    /// Commits are held above this height until it is executed (an epoch boundary).
    hold: Height,
    pool: BatchPool,
    local: VecDeque<Event>,
    timer: Option<(Round, Instant)>,
    payload_request: Option<(Round, Vec<Digest>, Instant)>,
    awaiting: Vec<(Digest, HashSet<Digest>)>,
    fetching: HashSet<Digest>,
    commits: VecDeque<PendingCommit>,
    executor: std::sync::mpsc::Sender<CommitJob>,
    internal: mpsc::Sender<Internal>,
    header_votes: BTreeMap<Height, HeaderVotes>,
    executed: Height,
    gossip_received: u64,
    gossip_applied: u64,
    reorder: BTreeMap<u64, (Result<VerifiedBatch, batches::BatchError>, Origin)>,
    sync: SyncServer,
    /// The admitted keys, applied in order by one task.
    members: watch::Sender<Vec<[u8; 32]>>,
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shared: Arc<NodeShared>,
        consensus: Consensus,
        params: CoreParams,
        peers: Vec<PeerId>,
        executor: std::sync::mpsc::Sender<CommitJob>,
        internal: mpsc::Sender<Internal>,
        executed: Height,
    ) -> Core {
        let index_of = peers
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, i as ValidatorIndex))
            .collect();
        let me = consensus
            .validators()
            .index_of(&params.key.verifying_key().to_bytes())
            .unwrap_or(NOT_A_VALIDATOR);
        let epoch = consensus.epoch();
        let hold = next_boundary(executed, params.epoch_blocks);
        let (members, mut admitted) = watch::channel(Vec::new());
        let net = shared.network.clone();
        tokio::spawn(async move {
            while admitted.changed().await.is_ok() {
                let keys = admitted.borrow_and_update().clone();
                if let Err(e) = net.set_members(&keys).await {
                    tracing::error!(error = %e, "network members not updated");
                }
            }
        });
        Core {
            members,
            sync: SyncServer::new(shared.clone()),
            shared,
            consensus,
            params,
            me,
            epoch,
            peers,
            index_of,
            previous: None,
            hold,
            pool: BatchPool::default(),
            local: VecDeque::new(),
            timer: None,
            payload_request: None,
            awaiting: Vec::new(),
            fetching: HashSet::new(),
            commits: VecDeque::new(),
            executor,
            internal,
            header_votes: BTreeMap::new(),
            executed,
            gossip_received: 0,
            gossip_applied: 0,
            reorder: BTreeMap::new(),
        }
    }

    /// Runs until `stop` flips or the node fails.
    pub(crate) async fn run(
        mut self,
        mut network: tally_network::NetworkEvents,
        mut internal: mpsc::Receiver<Internal>,
        mut stop: watch::Receiver<bool>,
    ) {
        // Start rounds once a quorum is connected (or after a while), so that a healthy
        // network does not begin with a timeout while its peers are still dialling.
        let quorum = self.consensus.validators().quorum();
        let waited = Instant::now();
        while self.shared.network.connected_peers().len() + 1 < quorum
            && waited.elapsed() < Duration::from_secs(10)
        {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        let mut actions = self.consensus.handle(Event::HoldCommits {
            height: Some(self.hold),
        });
        actions.extend(self.consensus.start());
        if self.perform(actions).is_err() {
            return;
        }
        loop {
            while let Some(event) = self.local.pop_front() {
                let actions = self.consensus.handle(event);
                if self.perform(actions).is_err() {
                    return;
                }
                if self.consensus.epoch() != self.epoch {
                    self.adopt_epoch();
                }
            }
            self.publish_status();
            let timer = self.timer.map(|t| t.1);
            let payload_deadline = self.payload_request.as_ref().map(|p| p.2);
            tokio::select! {
                _ = stop.changed() => return,
                ev = network.recv() => match ev {
                    Some(ev) => self.on_network(ev),
                    None => return,
                },
                msg = internal.recv() => match msg {
                    Some(msg) => self.on_internal(msg),
                    None => return,
                },
                _ = sleep_until(timer), if timer.is_some() => {
                    if let Some((round, _)) = self.timer.take() {
                        if round == self.consensus.round() {
                            self.shared.metrics.consensus_timeouts.inc();
                            tracing::warn!(round, "round timed out");
                        }
                        self.local.push_back(Event::Timeout { round });
                    }
                },
                _ = sleep_until(payload_deadline), if payload_deadline.is_some() => {
                    self.answer_payload(true);
                },
            }
        }
    }

    fn publish_status(&self) {
        let round = self.consensus.round();
        let leader = self.consensus.leader(round);
        let mut status = self.shared.write_status();
        status.round = round;
        status.epoch = self.consensus.epoch();
        status.leader = self.consensus.validators().key(leader).map(AccountId);
        self.shared.metrics.consensus_round.set(round as i64);
        let stats = self.consensus.stats();
        let view_changes = stats.view_changes;
        let prev = self.shared.metrics.consensus_view_changes.get();
        if view_changes > prev {
            self.shared
                .metrics
                .consensus_view_changes
                .inc_by(view_changes - prev);
        }
    }

    // ---- actions ---------------------------------------------------------------------------

    /// Performs actions in order. `Err` means a fatal storage failure: the node stops.
    fn perform(&mut self, actions: Vec<Action>) -> Result<(), ()> {
        for action in actions {
            match action {
                Action::Send { to, bytes } => self.send(to, DirectMessage::Consensus(bytes)),
                Action::Broadcast { bytes } => {
                    log_outgoing(&bytes);
                    for to in 0..self.peers.len() as ValidatorIndex {
                        if to != self.me {
                            self.send(to, DirectMessage::Consensus(bytes.clone()));
                        }
                    }
                }
                Action::SetTimer { round, after_ms } => {
                    self.timer = Some((round, Instant::now() + Duration::from_millis(after_ms)));
                }
                Action::PersistSafety(state) => {
                    let bytes = codec::encode(&state);
                    let store = self.shared.store.clone();
                    let r = tokio::task::block_in_place(|| store.put_safety_state(&bytes));
                    if let Err(e) = r {
                        self.shared
                            .fail(format!("persisting consensus safety state: {e}"));
                        return Err(());
                    }
                }
                Action::RequestPayload { round, exclude } => {
                    let deadline = Instant::now() + self.params.empty_block_delay;
                    self.payload_request = Some((round, exclude, deadline));
                    self.answer_payload(false);
                }
                Action::ValidatePayload {
                    block,
                    author,
                    timestamp_ms,
                    digests,
                    ..
                } => self.validate_payload(block, author, timestamp_ms, digests),
                Action::Commit { block, qc } => self.on_commit(block, qc),
                Action::RequestBlocks { to, request } => self.request_blocks(to, request),
                Action::EpochEnded { height, proof } => {
                    // Kept for peers that catch up across this boundary; a node that loses it
                    // in a crash leaves the serving to the others.
                    if let Err(e) = self
                        .shared
                        .store
                        .put_epoch_proof(height, &codec::encode(&proof))
                    {
                        tracing::warn!(height, error = %e, "could not keep the epoch proof");
                    }
                }
                Action::Evidence(evidence) => {
                    self.shared
                        .metrics
                        .consensus_evidence
                        .with_label_values(&[evidence.kind()])
                        .inc();
                    tracing::error!(
                        validator = evidence.validator(),
                        round = evidence.round(),
                        kind = evidence.kind(),
                        "equivocation evidence"
                    );
                    self.shared.record_evidence(&evidence);
                }
                Action::Misbehaviour { from, reason } => self.penalise_index(from, reason),
            }
        }
        Ok(())
    }

    fn send(&mut self, to: ValidatorIndex, message: DirectMessage) {
        if to == self.me {
            if let DirectMessage::Consensus(bytes) = message {
                self.local.push_back(Event::Message { from: to, bytes });
            }
            return;
        }
        let Some(peer) = self.peers.get(to as usize).copied() else {
            return;
        };
        let net = self.shared.network.clone();
        let data = codec::encode(&message);
        tokio::spawn(async move {
            if let Err(e) = net.send(peer, data).await {
                tracing::debug!(%peer, error = %e, "direct message not delivered");
            }
        });
    }

    fn penalise_index(&self, from: ValidatorIndex, reason: &'static str) {
        self.shared
            .metrics
            .consensus_invalid_messages
            .with_label_values(&[reason])
            .inc();
        if let Some(peer) = self.peers.get(from as usize).copied() {
            self.penalise(peer, reason);
        }
    }

    fn penalise(&self, peer: PeerId, reason: &'static str) {
        let net = self.shared.network.clone();
        tokio::spawn(async move {
            let _ = net.penalise(peer, reason).await;
        });
    }

    /// Answers the leader's payload request: at once when batches wait or an ancestor still
    /// carries payload to commit, otherwise when a batch arrives or the empty-block delay ends.
    fn answer_payload(&mut self, deadline_passed: bool) {
        let Some((round, exclude, deadline)) = self.payload_request.take() else {
            return;
        };
        let digests = self.pool.payload(&exclude, self.params.max_payload);
        let now = Instant::now();
        if digests.is_empty() && exclude.is_empty() && !deadline_passed && now < deadline {
            self.payload_request = Some((round, exclude, deadline));
            return;
        }
        self.local.push_back(Event::Payload {
            round,
            digests,
            timestamp_ms: now_ms(),
        });
    }

    fn validate_payload(
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
        let missing: HashSet<Digest> = digests
            .iter()
            .filter(|d| !self.pool.holds(d) && !self.pool.is_committed(d))
            .copied()
            .collect();
        if missing.is_empty() {
            self.local
                .push_back(Event::PayloadValidated { block, valid: true });
            return;
        }
        for d in &missing {
            self.fetch(*d, Some(author), FETCH_GRACE);
        }
        self.awaiting.push((block, missing));
    }

    fn on_commit(&mut self, block: Block, qc: QuorumCert) {
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
            let held = self.pool.commit(d);
            if let Some(b) = &held {
                if b.author == me {
                    self.shared.own_batch_committed(b.txs.len());
                }
            } else {
                self.fetch(*d, Some(block.author), Duration::ZERO);
            }
            slots.push(held);
        }
        self.awaiting.retain(|(_, missing)| !missing.is_empty());
        self.commits.push_back(PendingCommit {
            block,
            qc,
            batches: slots,
        });
        self.release_commits();
    }

    /// Hands the oldest commits whose batches are all present to the executor, in order.
    fn release_commits(&mut self) {
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

    fn request_blocks(&self, to: ValidatorIndex, request: BlockRequest) {
        let Some(peer) = self.peers.get(to as usize).copied() else {
            return;
        };
        let net = self.shared.network.clone();
        let internal = self.internal.clone();
        let data = codec::encode(&SyncRequest::Blocks(request));
        tokio::spawn(async move {
            let (blocks, proof) = match net.request(peer, data).await {
                Ok(bytes) => match codec::decode::<SyncResponse>(&bytes, MAX_FRAME) {
                    Ok(SyncResponse::Blocks(blocks)) => (blocks, None),
                    Ok(SyncResponse::BlocksToEpochEnd(blocks, proof)) => (blocks, Some(proof)),
                    _ => {
                        let _ = net.penalise(peer, "bad_sync_response").await;
                        (Vec::new(), None)
                    }
                },
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "block request failed");
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
    fn fetch(&mut self, digest: Digest, first: Option<ValidatorIndex>, grace: Duration) {
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
                let batch =
                    verify_off_loop(bytes, &shared.chain_id, max_bytes, max_txs, None).await;
                let _ = internal
                    .send(Internal::Verified {
                        batch,
                        origin: Origin::Disk,
                        expected: Some(digest),
                        order: None,
                    })
                    .await;
                return;
            }
            tokio::time::sleep(grace).await;
            let request = codec::encode(&SyncRequest::Batch(hash));
            for attempt in 0..5u64 {
                for peer in &order {
                    let Ok(bytes) = shared.network.request(*peer, request.clone()).await else {
                        continue;
                    };
                    match codec::decode::<SyncResponse>(&bytes, MAX_FRAME) {
                        Ok(SyncResponse::Batch(Some(bytes))) => {
                            let batch = verify_off_loop(
                                bytes.into_vec(),
                                &shared.chain_id,
                                max_bytes,
                                max_txs,
                                None,
                            )
                            .await;
                            let _ = internal
                                .send(Internal::Verified {
                                    batch,
                                    origin: Origin::Peer(*peer),
                                    expected: Some(digest),
                                    order: None,
                                })
                                .await;
                            return;
                        }
                        Ok(SyncResponse::Batch(None)) => {}
                        _ => {
                            let _ = shared.network.penalise(*peer, "bad_batch_response").await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
            }
            let _ = internal.send(Internal::FetchFailed(digest)).await;
        });
    }

    // ---- inputs ----------------------------------------------------------------------------

    fn on_network(&mut self, event: NetworkEvent) {
        match event {
            NetworkEvent::Gossip {
                topic,
                source,
                author,
                message_id,
                data,
            } => {
                // The validator that signed the gossip message: the batch must name it.
                let publisher = author
                    .and_then(|a| self.index_of.get(&a).copied())
                    .and_then(|i| self.consensus.validators().key(i))
                    .map(AccountId);
                if topic != BATCH_TOPIC || publisher.is_none() {
                    self.report(message_id, source, Acceptance::Reject);
                    return;
                }
                let shared = self.shared.clone();
                let internal = self.internal.clone();
                let (max_bytes, max_txs) = (self.params.max_batch_bytes, self.params.max_batch_txs);
                let order = self.gossip_received;
                self.gossip_received += 1;
                tokio::spawn(async move {
                    let batch =
                        verify_off_loop(data, &shared.chain_id, max_bytes, max_txs, publisher)
                            .await;
                    let _ = internal
                        .send(Internal::Verified {
                            batch,
                            origin: Origin::Gossip { message_id, source },
                            expected: None,
                            order: Some(order),
                        })
                        .await;
                });
            }
            NetworkEvent::Direct { from, data } => {
                let index = self.index_of.get(&from).copied();
                if index.is_none() && !self.was_validator(&from) {
                    self.penalise(from, "direct_from_non_validator");
                    return;
                }
                match (codec::decode::<DirectMessage>(&data, MAX_FRAME), index) {
                    (Ok(DirectMessage::Consensus(bytes)), Some(index)) => {
                        self.local.push_back(Event::Message { from: index, bytes });
                    }
                    // A validator of the previous epoch finishing its last round.
                    (Ok(DirectMessage::Consensus(_)), None) => {}
                    (Ok(DirectMessage::CommitVote { height, vote }), _) => {
                        self.on_header_vote(from, height, vote)
                    }
                    (Err(_), _) => self.penalise(from, "malformed_direct"),
                }
            }
            NetworkEvent::Request {
                from,
                data,
                respond,
            } => {
                if !self.index_of.contains_key(&from) {
                    self.penalise(from, "sync_from_non_validator");
                    return;
                }
                // Served off this loop, under per-peer limits (runtime/sync.rs). A request
                // over its peer's limit is refused: dropping `respond` fails it remotely.
                match codec::decode::<SyncRequest>(&data, MAX_FRAME) {
                    Ok(SyncRequest::Blocks(request)) => {
                        if let Some(slot) = self.sync.admit(from, "blocks") {
                            let plan = self.consensus.uncommitted_chain(&request);
                            self.sync.blocks(slot, request, plan, respond);
                        }
                    }
                    Ok(SyncRequest::Batch(hash)) => {
                        if let Some(slot) = self.sync.admit(from, "batch") {
                            let held = self.pool.get(&Digest(hash.0)).map(|b| b.bytes.to_vec());
                            self.sync.batch(slot, hash, held, respond);
                        }
                    }
                    Err(_) => self.penalise(from, "malformed_sync_request"),
                }
            }
            NetworkEvent::PeerConnected(_) | NetworkEvent::PeerDisconnected(_) => {}
        }
    }

    fn report(&self, message_id: MessageId, source: PeerId, verdict: Acceptance) {
        let net = self.shared.network.clone();
        tokio::spawn(async move {
            let _ = net.report_validation(message_id, source, verdict).await;
        });
    }

    fn on_internal(&mut self, msg: Internal) {
        match msg {
            Internal::OwnBatch(batch) => {
                self.shared
                    .metrics
                    .batches_stored
                    .with_label_values(&["own"])
                    .inc();
                self.store_batch(&batch);
                self.add_batch(batch);
            }
            Internal::Verified {
                batch,
                origin,
                expected,
                order: Some(order),
            } => {
                self.reorder.insert(order, (batch, origin));
                while let Some((batch, origin)) = self.reorder.remove(&self.gossip_applied) {
                    self.gossip_applied += 1;
                    self.on_verified(batch, origin, expected);
                }
            }
            Internal::Verified {
                batch,
                origin,
                expected,
                order: None,
            } => self.on_verified(batch, origin, expected),
            Internal::FetchFailed(d) => {
                self.fetching.remove(&d);
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
                if self.commits.iter().any(|c| c.block.payload.contains(&d)) {
                    tracing::warn!(digest = %hex::encode(d.0), "committed batch not found yet; retrying");
                    self.fetch(d, None, Duration::from_secs(1));
                }
            }
            Internal::SyncBlocks {
                from,
                blocks,
                proof,
            } => {
                self.local.push_back(Event::SyncResponse {
                    from,
                    blocks,
                    proof,
                });
            }
            Internal::Executed {
                height,
                header_hash,
            } => self.on_executed(height, header_hash),
        }
    }

    fn on_verified(
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
            (Ok(batch), origin) => {
                let kind = match origin {
                    Origin::Gossip { message_id, source } => {
                        self.report(message_id, source, Acceptance::Accept);
                        "gossip"
                    }
                    Origin::Peer(_) => "fetched",
                    Origin::Disk => "disk",
                };
                self.fetching.remove(&batch.digest);
                if !self.pool.holds(&batch.digest) {
                    self.shared
                        .metrics
                        .batches_stored
                        .with_label_values(&[kind])
                        .inc();
                    if !matches!(kind, "disk") {
                        self.store_batch(&batch);
                    }
                    self.add_batch(batch);
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
            }
        }
    }

    fn store_batch(&self, batch: &VerifiedBatch) {
        if let Err(e) = self
            .shared
            .store
            .put_batch(&batches::to_hash(&batch.digest), &batch.bytes)
        {
            self.shared.fail(format!("storing a batch: {e}"));
        }
    }

    fn add_batch(&mut self, batch: VerifiedBatch) {
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
            self.pool.commit(&d);
            if batch.author == self.shared.me {
                self.shared.own_batch_committed(batch.txs.len());
            }
            self.release_commits();
        } else if !self.pool.is_committed(&d) {
            self.pool.insert(batch);
        }
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
        self.answer_payload(false);
    }

    // ---- certificates over executed headers ------------------------------------------------

    fn on_executed(&mut self, height: Height, header_hash: Hash) {
        self.executed = height;
        self.sign_header(height, header_hash);
        if height >= self.hold {
            self.at_boundary(height);
        }
    }

    /// The boundary block executed: hand consensus the next epoch's set if governance changed
    /// it here, then hold commits at the next boundary.
    fn at_boundary(&mut self, height: Height) {
        let next = match self.shared.validator_epoch() {
            Ok(e) => e,
            Err(e) => return self.shared.fail(e),
        };
        if let Some(next) = next.filter(|e| e.epoch > self.epoch && e.first_height == height + 1) {
            let keys = next.validators.iter().map(|v| v.public_key.0).collect();
            match tally_consensus::ValidatorSet::new(next.epoch, keys) {
                Ok(set) => {
                    tracing::info!(
                        epoch = next.epoch,
                        after = height,
                        validators = next.validators.len(),
                        "validator set changes"
                    );
                    self.local.push_back(Event::Reconfigure {
                        height,
                        validators: set,
                    });
                }
                Err(e) => {
                    return self
                        .shared
                        .fail(format!("the validator set of epoch {}: {e}", next.epoch))
                }
            }
        }
        // A boundary after the one that changed the set: the previous set's last headers are
        // long certified, so its keys are no longer admitted.
        if self
            .previous
            .as_ref()
            .is_some_and(|(last, _)| height > *last)
        {
            self.previous = None;
        }
        self.refresh_members();
        self.hold = next_boundary(height, self.params.epoch_blocks);
        self.local.push_back(Event::HoldCommits {
            height: Some(self.hold),
        });
    }

    /// Hands the network the keys it admits now (see `network_members`): at every boundary and
    /// epoch change, so governance removals take effect there. The latest list wins.
    fn refresh_members(&self) {
        let previous = self
            .previous
            .as_ref()
            .map_or(&[][..], |(_, keys)| &keys[..]);
        let members = super::network_members(
            &self.shared.store,
            &self.shared.genesis,
            &self.shared.validators(),
            previous,
        );
        let _ = self.members.send(members);
    }

    /// Consensus entered a new epoch: address its validators, admit them on the network.
    fn adopt_epoch(&mut self) {
        let set = self.consensus.validators().clone();
        let keys: Vec<AccountId> = (0..set.len() as ValidatorIndex)
            .filter_map(|i| set.key(i).map(AccountId))
            .collect();
        let peers: Vec<PeerId> = keys
            .iter()
            .filter_map(|k| tally_network::peer_id_from_public_key(&k.0).ok())
            .collect();
        let old_keys = self.shared.validators();
        self.previous = Some((self.executed, old_keys));
        self.index_of = peers
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, i as ValidatorIndex))
            .collect();
        self.peers = peers;
        self.me = set
            .index_of(&self.params.key.verifying_key().to_bytes())
            .unwrap_or(NOT_A_VALIDATOR);
        self.epoch = self.consensus.epoch();
        self.shared.set_validators(keys.clone());
        self.refresh_members();
        self.shared.metrics.consensus_epoch.set(self.epoch as i64);
        tracing::info!(
            epoch = self.epoch,
            validators = keys.len(),
            validator = self.me != NOT_A_VALIDATOR,
            "epoch started"
        );
    }

    fn sign_header(&mut self, height: Height, header_hash: Hash) {
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
        let keep_from = height.saturating_sub(VOTE_WINDOW);
        self.header_votes = self.header_votes.split_off(&keep_from);
    }

    /// True if `peer` was a validator of the previous epoch (its last votes may still come).
    fn was_validator(&self, peer: &PeerId) -> bool {
        self.previous.as_ref().is_some_and(|(_, keys)| {
            keys.iter()
                .any(|k| tally_network::peer_id_from_public_key(&k.0).ok().as_ref() == Some(peer))
        })
    }

    /// The validators that sign the header at `height`.
    fn signers_of(&self, height: Height) -> Vec<AccountId> {
        match &self.previous {
            Some((last, keys)) if height <= *last => keys.clone(),
            _ => self.shared.validators(),
        }
    }

    fn on_header_vote(&mut self, from: PeerId, height: Height, vote: CommitVote) {
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
    }

    fn try_certify(&mut self, height: Height) {
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
                self.shared
                    .metrics
                    .consensus_invalid_messages
                    .with_label_values(&["state_divergence"])
                    .inc();
                entry.certified = true;
            }
        }
    }
}

/// `Core::me` outside the validator set.
const NOT_A_VALIDATOR: ValidatorIndex = ValidatorIndex::MAX;

/// The first epoch boundary above `height`: commits wait there for its execution.
fn next_boundary(height: Height, epoch_blocks: Height) -> Height {
    (height / epoch_blocks + 1) * epoch_blocks
}

/// Debug-level record of a block's life as this validator takes part in it.
fn log_outgoing(bytes: &[u8]) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    match tally_consensus::Message::from_bytes(bytes, MAX_FRAME) {
        Ok(tally_consensus::Message::Proposal(b)) => tracing::debug!(
            height = b.height,
            round = b.round,
            batches = b.payload.len(),
            block = %b.id(),
            "block proposed"
        ),
        Ok(tally_consensus::Message::Vote(v)) => {
            tracing::debug!(height = v.height, round = v.round, block = %v.block, "voted")
        }
        Ok(tally_consensus::Message::Timeout(t)) => {
            tracing::debug!(
                round = t.round,
                high_qc_round = t.high_qc.round,
                "timeout sent"
            )
        }
        Err(_) => {}
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Verifies a batch on the blocking pool (rayon inside), off the event loop.
pub(crate) async fn verify_off_loop(
    bytes: Vec<u8>,
    chain_id: &str,
    max_bytes: usize,
    max_txs: usize,
    publisher: Option<AccountId>,
) -> Result<VerifiedBatch, batches::BatchError> {
    let chain_id = chain_id.to_owned();
    match tokio::task::spawn_blocking(move || {
        batches::verify(bytes, &chain_id, max_bytes, max_txs, publisher)
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(batches::BatchError::BadSize(0, 0)),
    }
}
