//! The consensus driver: the one task that owns the consensus state machine and the pool of
//! batches. It turns network events, timers and the node's answers into consensus events, and
//! performs the actions that come back: sends, timers, durable safety state (fsync before
//! anything that follows), payload checks (fetching missing batches), commits (handed in order
//! to the executor once every batch is present), sync requests, evidence and penalties.

mod attest;
mod certify;
mod commit;
mod epochs;
mod fetch;

use super::batches::{self, Attestation, Attestations, BatchPool, Check, VerifiedBatch};
use super::executor::CommitJob;
use super::internal::{Internal, Origin};
use super::sync::SyncServer;
use super::wire::{DirectMessage, SyncRequest, SyncResponse, BATCH_TOPIC};
use super::{now_ms, NodeShared};
use ed25519_dalek::SigningKey;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tally_consensus::{
    Action, Block, BlockRequest, Consensus, Digest, Event, QuorumCert, Round, ValidatorIndex,
};
use tally_ledger::block::{CommitCertificate, CommitVote};
use tally_ledger::codec;
use tally_ledger::primitives::{AccountId, Hash, Height};
use tally_network::{Acceptance, MessageId, NetworkEvent, PeerId};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Largest direct message or sync frame decoded (a block request answer can be large).
const MAX_FRAME: usize = 32 << 20;
/// How long a replica waits for a proposal's batch to arrive by gossip before fetching it.
const FETCH_GRACE: Duration = Duration::from_millis(25);
/// Votes on executed headers are kept for heights this far behind the executed height.
const VOTE_WINDOW: Height = 64;
/// How long a batch received without its signatures checked (this validator is not one of the
/// author's checkers) waits for f + 1 attestations before this validator checks the signatures
/// itself. A checker attests within milliseconds of receiving the batch; the grace covers a
/// checker that is down or slow, at the cost of one more verification of that batch.
const ATTESTATION_GRACE: Duration = Duration::from_millis(500);
/// Block timestamps further than this in the future make a proposal invalid.
const MAX_CLOCK_SKEW_MS: u64 = 10_000;

/// Static parameters of the driver.
pub(crate) struct CoreParams {
    pub key: SigningKey,
    pub max_batch_bytes: usize,
    pub max_batch_txs: usize,
    /// Check every signature of every peer batch, as if this validator were every author's
    /// checker.
    pub verify_all_signatures: bool,
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
    /// Verified attestations of batches, by digest.
    attestations: Attestations,
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
    /// Ignored consensus messages already counted in the metrics.
    ignored_published: u64,
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
            ignored_published: 0,
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
            attestations: Attestations::default(),
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

    fn publish_status(&mut self) {
        let round = self.consensus.round();
        let leader = self.consensus.leader(round);
        let mut status = self.shared.write_status();
        status.round = round;
        status.epoch = self.consensus.epoch();
        status.leader = self.consensus.validators().key(leader).map(AccountId);
        status.certified_height = self.consensus.highest_qc().height;
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
        // Labelled counters are looked up only when something new was ignored.
        let ignored: u64 = stats.ignored.values().sum();
        if ignored == self.ignored_published {
            return;
        }
        self.ignored_published = ignored;
        for (reason, n) in &stats.ignored {
            let counter = self
                .shared
                .metrics
                .consensus_ignored_messages
                .with_label_values(&[reason]);
            let seen = counter.get();
            if *n > seen {
                counter.inc_by(n - seen);
            }
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
                    // A batch that became usable before this round began still ends its
                    // idle allowance (consensus ignores this outside quiet rounds).
                    if self.pool.has_usable() {
                        self.local.push_back(Event::PayloadReady);
                    }
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
                Action::ShortenTimer { round, after_ms } => {
                    let at = Instant::now() + Duration::from_millis(after_ms);
                    if let Some((r, due)) = &mut self.timer {
                        if *r == round && at < *due {
                            *due = at;
                        }
                    }
                }
                Action::RequestPayload {
                    round,
                    exclude,
                    wait_ms,
                } => {
                    // In a quiet round, wait up to the idle heartbeat for a batch (one arriving
                    // ends the wait); otherwise propose at once, empty if need be: the
                    // pipeline needs the block to certify or commit what is below.
                    let deadline = Instant::now() + Duration::from_millis(wait_ms);
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
                let index = author.and_then(|a| self.index_of.get(&a).copied());
                let publisher = index
                    .and_then(|i| self.consensus.validators().key(i))
                    .map(AccountId);
                let (Some(index), true) = (index, topic == BATCH_TOPIC && publisher.is_some())
                else {
                    self.report(message_id, source, Acceptance::Reject);
                    return;
                };
                // The author's checkers verify every signature and attest; the others check
                // the rest and wait for the attestations.
                let set = self.consensus.validators();
                let check = if self.me == NOT_A_VALIDATOR
                    || self.params.verify_all_signatures
                    || batches::is_checker(
                        index as usize,
                        self.me as usize,
                        set.len(),
                        set.faults(),
                    ) {
                    Check::Signatures
                } else {
                    Check::Attested
                };
                let shared = self.shared.clone();
                let internal = self.internal.clone();
                let (max_bytes, max_txs) = (self.params.max_batch_bytes, self.params.max_batch_txs);
                let order = self.gossip_received;
                self.gossip_received += 1;
                tokio::spawn(async move {
                    let batch = verify_off_loop(
                        data,
                        &shared.chain_id,
                        max_bytes,
                        max_txs,
                        publisher,
                        check,
                    )
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
                    (Ok(DirectMessage::Attestation(a)), Some(_)) => self.on_attestation(from, a),
                    // A validator of the previous epoch: its attestations no longer count.
                    (Ok(DirectMessage::Attestation(_)), None) => {}
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
                            // Only batches usable here are served (or stored): one held for
                            // its attestations may yet fail its signature check.
                            let d = Digest(hash.0);
                            let held = self
                                .pool
                                .get(&d)
                                .filter(|_| self.pool.is_usable(&d))
                                .map(|b| b.bytes.to_vec());
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
                let digest = batch.digest;
                self.add_batch(batch);
                self.attest(digest);
            }
            Internal::CheckSignatures(d) => self.check_signatures(d),
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
                self.refuse_awaiting(d);
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
        Ok(tally_consensus::Message::Certificates(c)) => tracing::debug!(
            high_qc_round = c.high_qc.round,
            tc_round = c.last_tc.as_ref().map(|tc| tc.round),
            "certificates sent"
        ),
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
    check: Check,
) -> Result<VerifiedBatch, batches::BatchError> {
    let chain_id = chain_id.to_owned();
    match tokio::task::spawn_blocking(move || {
        batches::verify(bytes, &chain_id, max_bytes, max_txs, publisher, check)
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(batches::BatchError::BadSize(0, 0)),
    }
}
