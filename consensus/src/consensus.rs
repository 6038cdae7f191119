//! The round logic: `handle(Event) -> Vec<Action>`. Pure and deterministic: no clock, no I/O,
//! no randomness. See docs/consensus.md for the protocol and the message flow of one round.
//!
//! Longer than most files on purpose: it is one state machine whose handlers (proposal, vote,
//! timeout, sync, epoch change) share its private state and read best top to bottom in the
//! order of a round. What can stand alone already does: the safety rules (`safety.rs`), the
//! block tree and commit rule (`block_tree.rs`), aggregation (`aggregator.rs`), verified
//! certificates (`verified.rs`) and the message types (`types.rs`).

use crate::aggregator::{Added, Aggregator};
use crate::block_tree::BlockTree;
use crate::safety::{SafetyRules, SafetyState};
use crate::types::{
    Block, BlockRequest, Certificates, Digest, Epoch, EpochProof, Evidence, Height, Message,
    QuorumCert, Round, Timeout, TimeoutCert, ValidatorIndex, ValidatorSet, Vote,
};
use crate::verified::Verified;
use crate::{Action, Config, Event, SYNC_CHUNK};
use ed25519_dalek::{Signature, SigningKey};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// How far ahead of its current round a replica keeps single-signed messages (proposals,
/// votes, timeouts). Anything further ahead is not stored: certificates it carries (checked
/// against a quorum) are still processed, which is how a lagging replica catches up. Together
/// with one vote and one timeout per validator per round, this bounds what a peer can make a
/// replica hold.
pub const ROUND_WINDOW: Round = 100;

/// At most this many uncommitted blocks are persisted with the safety state.
const KEPT_BLOCKS: usize = 256;

/// What became of one block of a sync answer.
enum Synced {
    Inserted,
    Known,
    Stop,
}

/// A safety rule the tests can switch off, to show the simulator catches the broken protocol.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The voting rule (vote once per round, only on a certified parent or a TC).
    Voting,
    /// Verification of quorum certificates carried by proposals and timeouts.
    QcVerification,
    /// The lock in the timeout rule (`safe_to_timeout`).
    TimeoutLock,
    /// Grouping votes by everything they sign.
    WholeTupleAggregation,
    /// The two-chain commit rule (and the voting rule): commit on one certificate.
    TwoChainCommit,
}

/// Adds one to a counter, saturating.
fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

/// Counters for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages dropped and held against their sender (`Action::Misbehaviour`), by reason.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Messages set aside without a penalty (stale, outside the round window, another epoch,
    /// a payload this replica found invalid), by reason.
    pub ignored: BTreeMap<&'static str, u64>,
    /// Local round timeouts.
    pub timeouts: u64,
    /// Rounds entered through a timeout certificate.
    pub view_changes: u64,
    /// Equivocations detected.
    pub evidence: u64,
    /// Blocks this replica proposed.
    pub proposals: u64,
    /// Votes this replica signed.
    pub votes: u64,
    /// Blocks committed.
    pub commits: u64,
}

/// One validator's consensus state machine.
pub struct Consensus {
    config: Config,
    validators: ValidatorSet,
    me: Option<ValidatorIndex>,
    pub(crate) safety: SafetyRules,
    tree: BlockTree,
    pub(crate) agg: Aggregator,
    round: Round,
    entered_by: Option<TimeoutCert>,
    proposals_seen: BTreeMap<(Round, ValidatorIndex), Block>,
    /// (round, leader) of equivocating proposals already reported: one piece of evidence each.
    reported_proposals: BTreeSet<(Round, ValidatorIndex)>,
    awaiting_validation: HashMap<Digest, Block>,
    pending_proposal: Option<(ValidatorIndex, Block)>,
    /// The peer asked for blocks, while its answer is awaited.
    pub(crate) sync_peer: Option<ValidatorIndex>,
    /// The validator asked next when catching up to a later epoch (they are asked in turn).
    catch_up_turn: ValidatorIndex,
    /// Test-only: certificates pass without verification.
    skip_qc_verification: bool,
    /// Certificates already checked: each copy's signatures are verified once.
    verified: Verified,
    my_timeout: Option<Timeout>,
    payload_requested: Option<Round>,
    /// The round whose idle wait a ready batch cut short.
    idle_timer_shortened: Option<Round>,
    reconfiguration: Option<(Height, ValidatorSet)>,
    /// Leaders whose last round here ended without their proposal: their rounds get a short
    /// timer until they propose again (a local failure detector; safety does not depend on it).
    suspected: BTreeSet<ValidatorIndex>,
    proposal_seen_this_round: bool,
    /// Per validator, this replica's round when it last answered a stale timeout of it with
    /// [`Message::Certificates`]: at most one answer per validator per round of this replica.
    answered_laggers: BTreeMap<ValidatorIndex, Round>,
    stats: Stats,
}

impl Consensus {
    /// A replica whose last committed block is `root` (use [`Block::genesis`] on a fresh
    /// chain), resuming from `safety` if it ran before.
    pub fn new(
        config: Config,
        key: SigningKey,
        validators: ValidatorSet,
        root: (Block, QuorumCert),
        safety: Option<SafetyState>,
    ) -> Consensus {
        let me = validators.index_of(&key.verifying_key().to_bytes());
        // A replica that stopped right after the boundary block of its epoch restarts in the
        // next one: its signatures there name the new epoch, so its counters start over.
        let safety_state = match safety {
            Some(s) if s.epoch >= validators.epoch() => s,
            _ => SafetyState {
                epoch: validators.epoch(),
                ..SafetyState::default()
            },
        };
        let mut tree = BlockTree::new(root.0, root.1);
        // The uncommitted blocks persisted with the safety state come back first, then the
        // highest QC (the lock); a block still missing is fetched from peers on start.
        if safety_state.epoch == validators.epoch() {
            for b in &safety_state.blocks {
                tree.restore(b.clone());
            }
        }
        if let Some(qc) = &safety_state.highest_qc {
            if qc.epoch == validators.epoch() && qc.verify(&validators).is_ok() {
                tree.record_qc(qc);
            }
        }
        let round = tree
            .highest_qc()
            .round
            .saturating_add(1)
            .max(safety_state.last_voted_round);
        let entered_by = safety_state
            .last_tc
            .clone()
            .filter(|tc| tc.round.checked_add(1) == Some(round));
        Consensus {
            config,
            me,
            safety: SafetyRules::new(key, me.unwrap_or(u16::MAX), safety_state),
            tree,
            agg: Aggregator::default(),
            round,
            entered_by,
            proposals_seen: BTreeMap::new(),
            reported_proposals: BTreeSet::new(),
            awaiting_validation: HashMap::new(),
            pending_proposal: None,
            sync_peer: None,
            catch_up_turn: 0,
            skip_qc_verification: false,
            verified: Verified::default(),
            my_timeout: None,
            payload_requested: None,
            idle_timer_shortened: None,
            reconfiguration: None,
            suspected: BTreeSet::new(),
            proposal_seen_this_round: false,
            answered_laggers: BTreeMap::new(),
            stats: Stats::default(),
            validators,
        }
    }

    /// Test support: switch off one safety rule of this replica.
    #[doc(hidden)]
    pub fn break_rule_for_tests(&mut self, rule: Rule) {
        match rule {
            Rule::Voting => self.safety.ignore_voting_rule = true,
            Rule::QcVerification => self.skip_qc_verification = true,
            Rule::TimeoutLock => self.safety.ignore_timeout_lock = true,
            Rule::WholeTupleAggregation => self.agg.group_by_block_only = true,
            Rule::TwoChainCommit => {
                self.safety.ignore_voting_rule = true;
                self.tree.one_chain = true;
            }
        }
    }

    /// Arms the first timer and, if this replica leads the round, asks for a payload. A
    /// replica restarted with a highest QC whose block it lacks asks a signer of it first.
    pub fn start(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        let entered_by = self.entered_by.take();
        self.enter_round(self.round, entered_by, &mut out);
        let hqc = self.tree.highest_qc().clone();
        if !self.tree.knows(&hqc.block) && hqc.height > self.tree.committed_height() {
            let from = hqc
                .signatures
                .iter()
                .map(|s| s.0)
                .find(|i| Some(*i) != self.me)
                .unwrap_or(0);
            self.request_sync(from, hqc.block, &mut out);
        }
        out
    }

    /// Current round.
    pub fn round(&self) -> Round {
        self.round
    }

    /// Current epoch.
    pub fn epoch(&self) -> Epoch {
        self.validators.epoch()
    }

    /// Height of the last committed block.
    pub fn committed_height(&self) -> Height {
        self.tree.committed_height()
    }

    /// Highest quorum certificate known.
    pub fn highest_qc(&self) -> &QuorumCert {
        self.tree.highest_qc()
    }

    /// The validator set of the current epoch.
    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    /// Leader of a round.
    pub fn leader(&self, round: Round) -> ValidatorIndex {
        self.validators.leader(round)
    }

    /// A block of the uncommitted tree (or the committed root).
    pub fn block(&self, id: &Digest) -> Option<&Block> {
        self.tree.get(id)
    }

    /// Simulator support: a Byzantine instance keeps the block it forged, so it can vote on
    /// what extends it.
    pub(crate) fn keep_forged_block(&mut self, b: Block) {
        self.tree.insert(b);
    }

    /// The last committed block's certificate.
    pub fn committed_qc(&self) -> &QuorumCert {
        self.tree.root_qc()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The part of a block request this replica answers from memory: when the requested
    /// block is the committed root or in the tree of uncommitted blocks, the highest committed
    /// height the answer starts from and the uncommitted blocks above it (oldest first, above
    /// `after_height`, ending at the requested block). `None` when the block is unknown here
    /// (it may be an older committed block: the node looks it up in its store). No I/O, so
    /// the node calls it on its event loop and reads the committed part elsewhere.
    pub fn uncommitted_chain(&self, request: &BlockRequest) -> Option<(Height, Vec<Block>)> {
        self.tree
            .uncommitted_chain(&request.block, request.after_height)
    }

    /// Assembles the answer to `request` from the committed blocks up to `top` (read with
    /// `committed`) and the uncommitted ones in `upper`, as returned by
    /// [`Consensus::uncommitted_chain`] (or, for an older committed block, its height and no
    /// uncommitted blocks): at most [`SYNC_CHUNK`] blocks, oldest first. Pure, so the node
    /// calls it off its event loop with a closure that reads its store.
    pub fn assemble_sync_answer(
        request: &BlockRequest,
        top: Height,
        upper: Vec<Block>,
        committed: &dyn Fn(Height) -> Option<Block>,
    ) -> Vec<Block> {
        let max = request.max_blocks.min(SYNC_CHUNK) as usize;
        crate::block_tree::assemble_chain(request.after_height, max, top, upper, committed)
    }

    /// Ends a sync answer at the first block that ended an epoch (`proof_at` returns the proof
    /// kept from `Action::EpochEnded` for such a height) and attaches that proof: a replica of
    /// the ending epoch can check nothing beyond it until it has executed that block.
    pub fn cut_at_epoch_end(
        mut blocks: Vec<Block>,
        proof_at: &dyn Fn(Height) -> Option<EpochProof>,
    ) -> (Vec<Block>, Option<EpochProof>) {
        let end = blocks
            .iter()
            .enumerate()
            .find_map(|(i, b)| proof_at(b.height).map(|p| (i, p)));
        match end {
            Some((i, proof)) => {
                blocks.truncate(i.saturating_add(1));
                (blocks, Some(proof))
            }
            None => (blocks, None),
        }
    }

    /// Answers a peer's block request from the tree and, for committed blocks, `committed`.
    pub fn serve_blocks(
        &self,
        request: &BlockRequest,
        committed: &dyn Fn(Height) -> Option<Block>,
    ) -> Vec<Block> {
        let max = request.max_blocks.min(SYNC_CHUNK) as usize;
        self.tree
            .chain(&request.block, request.after_height, max, committed)
    }

    /// Feeds one event; returns the actions to perform, in order.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Message { from, bytes } => self.on_message(from, &bytes, &mut out),
            Event::Timeout { round } => self.on_local_timeout(round, &mut out),
            Event::PayloadReady => self.on_payload_ready(&mut out),
            Event::Payload {
                round,
                digests,
                timestamp_ms,
            } => self.on_payload(round, digests, timestamp_ms, &mut out),
            Event::PayloadValidated { block, valid } => self.on_validated(block, valid, &mut out),
            Event::SyncResponse {
                from,
                blocks,
                proof,
            } => self.on_sync(from, blocks, proof, &mut out),
            Event::Reconfigure { height, validators } => {
                self.on_reconfigure(height, validators, &mut out)
            }
            Event::HoldCommits { height } => self.on_hold(height, &mut out),
        }
        out
    }

    fn drop_message(&mut self, from: ValidatorIndex, reason: &'static str, out: &mut Vec<Action>) {
        bump(self.stats.dropped.entry(reason).or_default());
        out.push(Action::Misbehaviour { from, reason });
    }

    fn ignore(&mut self, reason: &'static str) {
        bump(self.stats.ignored.entry(reason).or_default());
    }

    fn on_message(&mut self, from: ValidatorIndex, bytes: &[u8], out: &mut Vec<Action>) {
        if from as usize >= self.validators.len() {
            self.ignore("unknown_sender");
            return;
        }
        let msg = match Message::from_bytes(bytes, self.config.max_message_bytes) {
            Ok(m) => m,
            Err(_) => return self.drop_message(from, "malformed", out),
        };
        match msg {
            Message::Proposal(b) => self.on_proposal(from, b, out),
            Message::Vote(v) => self.on_vote(from, v, out),
            Message::Timeout(t) => self.on_timeout(from, t, out),
            Message::Certificates(c) => self.on_certificates(from, c, out),
        }
    }

    // ---- certificates ----------------------------------------------------------------------

    /// A certificate is accepted when it certifies exactly what the stored root certificate
    /// certifies (same epoch, round, height and block: checked when the root committed, or
    /// genesis), or when a quorum of the current set signed it. Nothing else: a certificate
    /// naming the root with another round, or without signatures, is forged.
    fn verify_qc(&mut self, qc: &QuorumCert) -> bool {
        let root = self.tree.root_qc();
        if qc.epoch == root.epoch
            && qc.round == root.round
            && qc.height == root.height
            && qc.block == root.block
        {
            return true;
        }
        if self.skip_qc_verification {
            return true;
        }
        !qc.signatures.is_empty()
            && self.verified_once(Verified::qc_key(qc), |set| qc.verify(set).is_ok())
    }

    /// A timeout certificate signed by a quorum of the current set (checked once per copy).
    fn verify_tc(&mut self, tc: &TimeoutCert) -> bool {
        self.verified_once(Verified::tc_key(tc), |set| tc.verify(set).is_ok())
    }

    /// `check` against the current set, unless the certificate with this key already passed.
    fn verified_once(&mut self, key: Digest, check: impl FnOnce(&ValidatorSet) -> bool) -> bool {
        if self.verified.contains(&key) {
            return true;
        }
        let ok = check(&self.validators);
        if ok {
            self.verified.insert(key);
        }
        ok
    }

    /// Whether a single-signed message for `round` is kept: from the previous round up to
    /// [`ROUND_WINDOW`] rounds ahead.
    fn in_window(&self, round: Round) -> bool {
        round.saturating_add(1) >= self.round && round <= self.round.saturating_add(ROUND_WINDOW)
    }

    /// Records a QC: commits what it commits and moves to the next round.
    fn process_qc(&mut self, qc: &QuorumCert, out: &mut Vec<Action>) {
        for (block, cert) in self.tree.add_qc(qc) {
            bump(&mut self.stats.commits);
            let height = block.height;
            out.push(Action::Commit { block, qc: cert });
            if let Some((h, _)) = &self.reconfiguration {
                if *h == height {
                    self.switch_epoch(out);
                    return;
                }
            }
        }
        if qc.round >= self.round {
            self.enter_round(qc.round.saturating_add(1), None, out);
        }
    }

    fn process_tc(&mut self, tc: TimeoutCert, out: &mut Vec<Action>) {
        if tc.round >= self.round {
            bump(&mut self.stats.view_changes);
            let next = tc.round.saturating_add(1);
            self.enter_round(next, Some(tc), out);
        }
    }

    fn enter_round(&mut self, round: Round, tc: Option<TimeoutCert>, out: &mut Vec<Action>) {
        self.round = round;
        self.entered_by = tc;
        self.my_timeout = None;
        self.proposal_seen_this_round = false;
        self.awaiting_validation.retain(|_, b| b.round >= round);
        let keep = round.saturating_sub(2);
        self.agg.prune(keep);
        self.proposals_seen = self.proposals_seen.split_off(&(keep, 0));
        self.reported_proposals = self.reported_proposals.split_off(&(keep, 0));
        out.push(Action::SetTimer {
            round,
            after_ms: self.timeout_ms(),
        });
        if self.me == Some(self.validators.leader(round)) {
            self.request_payload(out);
        }
    }

    /// The round's timer: the base for the round after a certified one and for one failed
    /// round after it, then doubling with each further round since the highest certified one.
    /// It depends on the round and the highest QC only, so replicas in the same round with the
    /// same highest QC arm the same timer whatever their own history (restarts, partitions,
    /// which timeouts they saw): a replica whose timer is shorter than its peers' gives up
    /// rounds they would still certify, and with f validators silent every honest vote counts.
    /// A leader whose last round here ended without its proposal gets a quarter of it (a local
    /// failure detector; safety does not depend on it, and it backs off with the rest).
    /// A round that may be quiet adds the longest idle wait (`idle_allowance_ms`) until a batch
    /// is ready here (`Event::PayloadReady`).
    fn timeout_ms(&self) -> u64 {
        self.failure_timeout_ms()
            .saturating_add(self.idle_allowance_ms())
    }

    /// The longest idle wait (zero when the heartbeat is off).
    fn max_idle_wait_ms(&self) -> u64 {
        if self.config.heartbeat_ms == 0 {
            return 0;
        }
        self.config.max_heartbeat_ms.max(self.config.heartbeat_ms)
    }

    /// What a replica's timer allows for the leader's idle wait: the longest wait unless the
    /// replica knows the round is not quiet. The wait an honest leader takes depends on how
    /// many empty blocks it has seen in a row, which a replica that restarted or synced counts
    /// from its own root; the timer must not be shorter than any honest leader's wait, or the
    /// replica gives up a round the others would certify.
    fn idle_allowance_ms(&self) -> u64 {
        match self.tree.quiet(&self.tree.highest_qc().block) {
            Some(false) => 0,
            _ => self.max_idle_wait_ms(),
        }
    }

    /// The idle wait of this leader's round, extending `parent`. None unless the round is
    /// quiet: `parent` names no batch and everything below it is committed (a block's
    /// certificate commits its parent at every replica at once, since votes go to all), and
    /// the round was not entered by a timeout certificate (after a failed round the leader
    /// proposes at once, so the chain commits again without waiting). Then the heartbeat,
    /// doubled for each further empty block in a row, at most `max_heartbeat_ms`.
    fn idle_wait_ms(&self, parent: &Digest) -> u64 {
        if self.entered_by.is_some() || self.tree.quiet(parent) != Some(true) {
            return 0;
        }
        let doublings = self.tree.quiet_streak(parent).saturating_sub(1).min(16) as u32;
        self.config
            .heartbeat_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_idle_wait_ms())
    }

    /// A batch is ready: a round whose timer allows for the idle wait gets the failure
    /// timeout from now instead (once per round).
    fn on_payload_ready(&mut self, out: &mut Vec<Action>) {
        if self.idle_timer_shortened == Some(self.round) || self.my_timeout.is_some() {
            return;
        }
        if self.idle_allowance_ms() == 0 {
            return;
        }
        self.idle_timer_shortened = Some(self.round);
        out.push(Action::ShortenTimer {
            round: self.round,
            after_ms: self.failure_timeout_ms(),
        });
    }

    fn failure_timeout_ms(&self) -> u64 {
        let failed = self
            .round
            .saturating_sub(self.tree.highest_qc().round)
            .saturating_sub(2);
        // The shift is at most 6 and the product saturates: no overflow.
        let full = (self
            .config
            .base_timeout_ms
            .saturating_mul(1u64 << failed.min(6)))
        .min(self.config.max_timeout_ms);
        if self.suspected.contains(&self.validators.leader(self.round)) {
            return (full / 4).max(50);
        }
        full
    }

    // ---- leader ----------------------------------------------------------------------------

    /// A leader can hold its round's certificate before the block it certifies: votes and the
    /// proposal travel separately, and the votes of the other three can arrive first. Entering
    /// the round it could not propose (the parent was unknown); once the block arrives, by
    /// proposal or by sync, it proposes, unless it has given the round up (its timeout is
    /// signed). Without this the round ran out its timer: about one view change in 80 rounds
    /// among four processes on one machine.
    fn propose_if_parent_arrived(&mut self, out: &mut Vec<Action>) {
        if self.me == Some(self.validators.leader(self.round)) && self.my_timeout.is_none() {
            self.request_payload(out);
        }
    }

    fn request_payload(&mut self, out: &mut Vec<Action>) {
        let parent = self.tree.highest_qc().block;
        if !self.tree.knows(&parent) || self.payload_requested == Some(self.round) {
            return;
        }
        if self.safety.state.last_proposed_round >= self.round {
            return;
        }
        self.payload_requested = Some(self.round);
        out.push(Action::RequestPayload {
            round: self.round,
            exclude: self.tree.uncommitted_payload(&parent),
            wait_ms: self.idle_wait_ms(&parent),
        });
    }

    fn on_payload(
        &mut self,
        round: Round,
        mut digests: Vec<Digest>,
        timestamp_ms: u64,
        out: &mut Vec<Action>,
    ) {
        let Some(me) = self.me else {
            return;
        };
        if round != self.round
            || self.payload_requested != Some(round)
            || self.validators.leader(round) != me
        {
            return;
        }
        let hqc = self.tree.highest_qc().clone();
        let Some(parent) = self.tree.get(&hqc.block) else {
            return;
        };
        let timeout_cert = if hqc.round.checked_add(1) == Some(round) {
            None
        } else {
            match &self.entered_by {
                Some(tc) if tc.round.checked_add(1) == Some(round) => Some(tc.clone()),
                _ => return,
            }
        };
        let (Some(height), Some(after_parent)) = (
            hqc.height.checked_add(1),
            parent.timestamp_ms.checked_add(1),
        ) else {
            return;
        };
        digests.truncate(self.config.max_payload_digests);
        let block = Block {
            epoch: self.validators.epoch(),
            round,
            height,
            parent: hqc.block,
            // Block time strictly increases along a chain.
            timestamp_ms: timestamp_ms.max(after_parent),
            justify: hqc,
            timeout_cert,
            author: me,
            payload: digests,
            signature: Signature::from_bytes(&[0; 64]),
        };
        let Some((state, block)) = self.safety.propose(block) else {
            return;
        };
        bump(&mut self.stats.proposals);
        out.push(Action::PersistSafety(state));
        out.push(Action::Broadcast {
            bytes: Message::Proposal(block.clone()).to_bytes(),
        });
        self.on_proposal(me, block, out);
    }

    // ---- replica ---------------------------------------------------------------------------

    /// Stateless checks of a block: epoch, leader, signature, shape, certificates.
    fn check_block(&mut self, b: &Block) -> Result<(), &'static str> {
        if b.epoch != self.validators.epoch() {
            return Err("wrong_epoch");
        }
        if b.author != self.validators.leader(b.round) {
            return Err("not_leader");
        }
        if b.parent != b.justify.block || b.justify.height.checked_add(1) != Some(b.height) {
            return Err("malformed_block");
        }
        // A leader proposes in the round after the certificate it extends: the QC's round, or
        // the TC's round when the previous round timed out. So a proposal's round is fixed by
        // certificates, never by its author alone.
        let after_qc = b.justify.round.checked_add(1) == Some(b.round);
        let after_tc = b
            .timeout_cert
            .as_ref()
            .is_some_and(|tc| tc.round.checked_add(1) == Some(b.round));
        if !after_qc && !after_tc && !self.safety.ignore_voting_rule {
            return Err("round_not_after_certificate");
        }
        if b.payload.len() > self.config.max_payload_digests {
            return Err("oversized_payload");
        }
        if !b.verify_signature(&self.validators) {
            return Err("bad_signature");
        }
        if !self.verify_qc(&b.justify) {
            return Err("bad_qc");
        }
        if let Some(tc) = &b.timeout_cert {
            if tc.round >= b.round || !self.verify_tc(tc) {
                return Err("bad_tc");
            }
        }
        Ok(())
    }

    fn on_proposal(&mut self, from: ValidatorIndex, b: Block, out: &mut Vec<Action>) {
        if b.epoch != self.validators.epoch() {
            self.catch_up_to_later_epoch(from, b.author, b.epoch, b.justify.block, out);
            return self.ignore("wrong_epoch");
        }
        // A late proposal (its certificate may be older than anything this replica still
        // checks): not the sender's fault, and nothing to do.
        if b.height <= self.tree.committed_height() {
            return self.ignore("stale_proposal");
        }
        if let Err(reason) = self.check_block(&b) {
            return self.drop_message(from, reason, out);
        }
        if !self.in_window(b.round) {
            // Its certificates are checked: a replica far behind catches up through them.
            self.process_qc(&b.justify.clone(), out);
            if let Some(tc) = b.timeout_cert.clone() {
                if b.epoch == self.validators.epoch() {
                    self.process_tc(tc, out);
                }
            }
            if b.epoch != self.validators.epoch() || !self.in_window(b.round) {
                return self.ignore("proposal_out_of_window");
            }
        }
        let id = b.id();
        match self.proposals_seen.get(&(b.round, b.author)) {
            Some(prev) if prev.id() != id => {
                if self.reported_proposals.insert((b.round, b.author)) {
                    bump(&mut self.stats.evidence);
                    out.push(Action::Evidence(Box::new(Evidence {
                        validator: b.author,
                        epoch: b.epoch,
                        round: b.round,
                        first: Message::Proposal(prev.clone()),
                        second: Message::Proposal(b),
                    })));
                }
                return;
            }
            Some(_) if self.tree.knows(&id) => return,
            _ => {
                self.proposals_seen.insert((b.round, b.author), b.clone());
            }
        }
        self.process_qc(&b.justify.clone(), out);
        if b.epoch != self.validators.epoch() {
            // The certificate closed the epoch this block belongs to.
            return;
        }
        if let Some(tc) = b.timeout_cert.clone() {
            self.process_tc(tc, out);
        }
        if !self.tree.knows(&b.parent) {
            if b.justify.height <= self.tree.committed_height() {
                return self.ignore("stale_proposal");
            }
            let parent = b.parent;
            self.pending_proposal = Some((from, b));
            self.request_sync(from, parent, out);
            return;
        }
        if b.height <= self.tree.committed_height() {
            return self.ignore("stale_proposal");
        }
        if !self.after_parent_time(&b) {
            return self.drop_message(from, "timestamp_not_after_parent", out);
        }
        self.tree.insert(b.clone());
        self.suspected.remove(&b.author);
        self.propose_if_parent_arrived(out);
        if b.round == self.round {
            self.proposal_seen_this_round = true;
        }
        if b.round == self.round && self.safety.safe_to_vote(&b) && self.me.is_some() {
            out.push(Action::ValidatePayload {
                block: id,
                author: b.author,
                round: b.round,
                timestamp_ms: b.timestamp_ms,
                digests: b.payload.clone(),
            });
            self.awaiting_validation.insert(id, b);
        }
    }

    /// Puts into the safety state (persisted with the next signature) the uncommitted blocks
    /// leading to `ids` and those kept before (the blocks this replica voted for, until they
    /// commit or fall off the tree), oldest first. Past [`KEPT_BLOCKS`] (a long stretch
    /// without commits), only the chains to `ids` and to the last block voted for.
    ///
    /// A block this replica voted for may be certified without it knowing: if every voter
    /// forgot it across a restart, no leader could extend that certificate and the network
    /// would stall. So a voted block is kept until it is committed or abandoned.
    fn keep_blocks(&mut self, ids: &[Digest]) {
        let kept: Vec<Digest> = self.safety.state.blocks.iter().map(Block::id).collect();
        let mut blocks = self.chains_to(ids.iter().chain(&kept));
        if blocks.len() > KEPT_BLOCKS {
            // Too many: the chains to `ids` and to the newest block kept (the last vote).
            let newest = self
                .safety
                .state
                .blocks
                .iter()
                .max_by_key(|b| b.round)
                .map(Block::id);
            blocks = self.chains_to(ids.iter().chain(newest.as_ref()));
        }
        self.safety.state.blocks = blocks;
    }

    /// The uncommitted blocks leading to `ids`, each once, oldest first.
    fn chains_to<'a>(&self, ids: impl Iterator<Item = &'a Digest>) -> Vec<Block> {
        let mut seen = BTreeSet::new();
        let mut blocks: Vec<Block> = Vec::new();
        for id in ids {
            for (id, b) in self.tree.path_to(id) {
                if seen.insert(id) {
                    blocks.push(b.clone());
                }
            }
        }
        blocks.sort_by_key(|b| b.height);
        blocks
    }

    /// Block time strictly increases along the chain (the node checks the other bound: not
    /// ahead of its own clock by more than its tolerance). Needs the parent in the tree.
    fn after_parent_time(&self, b: &Block) -> bool {
        self.tree
            .get(&b.parent)
            .is_some_and(|p| b.timestamp_ms > p.timestamp_ms)
    }

    fn on_validated(&mut self, block: Digest, valid: bool, out: &mut Vec<Action>) {
        let Some(b) = self.awaiting_validation.remove(&block) else {
            return;
        };
        if !valid {
            return self.ignore("invalid_payload");
        }
        if b.round != self.round {
            return;
        }
        let hqc = self.tree.highest_qc().clone();
        let entered_by = self.entered_by.clone();
        self.keep_blocks(&[hqc.block, block]);
        let Some((state, vote)) = self.safety.vote(&b, &hqc, entered_by.as_ref()) else {
            return;
        };
        bump(&mut self.stats.votes);
        out.push(Action::PersistSafety(state));
        // Votes go to every validator, so each forms the QC itself: a crashed next leader
        // costs only its own round, and every replica is ready for the next round one
        // message delay earlier.
        out.push(Action::Broadcast {
            bytes: Message::Vote(vote.clone()).to_bytes(),
        });
        self.add_vote(vote, out);
    }

    fn on_vote(&mut self, from: ValidatorIndex, v: Vote, out: &mut Vec<Action>) {
        if v.epoch != self.validators.epoch() {
            self.catch_up_to_later_epoch(from, v.voter, v.epoch, v.block, out);
            return self.ignore("wrong_epoch");
        }
        if v.voter != from || !v.verify(&self.validators) {
            return self.drop_message(from, "bad_vote", out);
        }
        if !self.in_window(v.round) {
            return self.ignore("vote_out_of_window");
        }
        self.add_vote(v, out);
    }

    fn add_vote(&mut self, v: Vote, out: &mut Vec<Action>) {
        match self.agg.add_vote(v, &self.validators) {
            Added::Certificate(qc) => {
                if !self.tree.knows(&qc.block) {
                    let block = qc.block;
                    let from = qc.signatures.first().map_or(0, |s| s.0);
                    self.request_sync(from, block, out);
                }
                self.process_qc(&qc, out);
            }
            Added::Equivocation(e) => {
                bump(&mut self.stats.evidence);
                out.push(Action::Evidence(e));
            }
            Added::Pending | Added::Duplicate => {}
        }
    }

    // ---- timeouts --------------------------------------------------------------------------

    fn on_local_timeout(&mut self, round: Round, out: &mut Vec<Action>) {
        if round != self.round || self.me.is_none() {
            return;
        }
        bump(&mut self.stats.timeouts);
        // An unanswered block request must not block sync forever.
        self.sync_peer = None;
        if !self.proposal_seen_this_round {
            self.suspected.insert(self.validators.leader(round));
        }
        let timeout = match &self.my_timeout {
            Some(t) if t.round == round => Some(t.clone()),
            _ => {
                let hqc = if self.safety.ignore_timeout_lock {
                    // The broken rule: nothing binds the QC a timeout carries to the lock.
                    self.tree.root_qc().clone()
                } else {
                    self.tree.highest_qc().clone()
                };
                let entered_by = self.entered_by.clone();
                let epoch = self.validators.epoch();
                self.keep_blocks(&[hqc.block]);
                match self.safety.timeout(epoch, round, &hqc, entered_by.as_ref()) {
                    Some((state, t)) => {
                        out.push(Action::PersistSafety(state));
                        self.my_timeout = Some(t.clone());
                        Some(t)
                    }
                    None => None,
                }
            }
        };
        // The round is given up: the timer now only paces re-sending the timeout (so a TC
        // still forms after losses), at the base interval, not the backed-off one.
        out.push(Action::SetTimer {
            round,
            after_ms: self.failure_timeout_ms().min(self.config.base_timeout_ms),
        });
        if let Some(mut t) = timeout {
            t.entered_by = self
                .entered_by
                .clone()
                .filter(|tc| tc.round.checked_add(1) == Some(round));
            out.push(Action::Broadcast {
                bytes: Message::Timeout(t.clone()).to_bytes(),
            });
            self.add_timeout(t, out);
        }
    }

    fn on_timeout(&mut self, from: ValidatorIndex, t: Timeout, out: &mut Vec<Action>) {
        if t.epoch != self.validators.epoch() {
            self.catch_up_to_later_epoch(from, t.voter, t.epoch, t.high_qc.block, out);
            return self.ignore("wrong_epoch");
        }
        // A replica gives up a round above its highest QC: a QC at or above the round is forged.
        if t.voter != from || t.high_qc.round >= t.round || !t.verify(&self.validators) {
            return self.drop_message(from, "bad_timeout", out);
        }
        if !self.verify_qc(&t.high_qc) {
            // A replica that lags behind carries a certificate below this one's root (genesis,
            // or one this replica no longer checks): ignored, not held against it.
            if t.high_qc.height < self.tree.committed_height() {
                return self.ignore("stale_timeout_certificate");
            }
            return self.drop_message(from, "bad_timeout", out);
        }
        if t.round < self.round {
            self.answer_lagging(from, out);
        }
        if t.round.saturating_add(1) < self.round {
            return self.ignore("stale_timeout");
        }
        if let Some(tc) = t.entered_by.clone() {
            if tc.round >= self.round {
                if tc.epoch != t.epoch || !self.verify_tc(&tc) {
                    return self.drop_message(from, "bad_tc", out);
                }
                self.process_tc(tc, out);
            }
        }
        let hqc = t.high_qc.clone();
        if !self.tree.knows(&hqc.block) && hqc.height > self.tree.committed_height() {
            self.request_sync(from, hqc.block, out);
        }
        self.process_qc(&hqc, out);
        if !self.in_window(t.round) {
            return self.ignore("timeout_out_of_window");
        }
        let round = t.round;
        self.add_timeout(t, out);
        // f+1 validators gave up the round this replica is in: one of them is honest, so give
        // it up too, without waiting for the local timer (this keeps replicas' rounds together
        // after partitions, restarts and backoff). Rounds ahead are entered only through the
        // certificates the timeouts carry, so that every timeout this replica signs is for a
        // round it entered through a QC or a TC (the timeout rule).
        let joined = self.my_timeout.as_ref().is_some_and(|m| m.round == round);
        if round == self.round && !joined && self.agg.timeouts_for(round) > self.validators.faults()
        {
            self.on_local_timeout(round, out);
        }
    }

    /// Tells a validator whose signed timeout is for a round this replica has left how it
    /// moved on, and hands it this round's proposal if this replica has one: a validator that
    /// missed the certificates of a round has usually missed its proposal too, and without it
    /// it could enter the round but not vote in it, so the round would fail whenever its vote
    /// is one of the 2f + 1 (a lost message during a partition would cost a whole backed-off
    /// round after the heal). At most once per validator per round of this replica, whatever
    /// old rounds its timeouts name, so a peer cannot draw more answers than this replica has
    /// rounds.
    fn answer_lagging(&mut self, to: ValidatorIndex, out: &mut Vec<Action>) {
        if self.answered_laggers.get(&to) == Some(&self.round) {
            return;
        }
        self.answered_laggers.insert(to, self.round);
        let bytes = self.certificates(self.entered_by.clone());
        out.push(Action::Send { to, bytes });
        let leader = self.validators.leader(self.round);
        if let Some(b) = self.proposals_seen.get(&(self.round, leader)) {
            if self.tree.knows(&b.id()) {
                let bytes = Message::Proposal(b.clone()).to_bytes();
                out.push(Action::Send { to, bytes });
            }
        }
    }

    /// A [`Message::Certificates`] with this replica's highest QC and `last_tc`.
    fn certificates(&self, last_tc: Option<TimeoutCert>) -> Vec<u8> {
        Message::Certificates(Certificates {
            high_qc: self.tree.highest_qc().clone(),
            last_tc,
        })
        .to_bytes()
    }

    /// Certificates a peer sent because this replica looked behind: each is checked like any
    /// other, then processed as if it had come with a proposal or a timeout: the QC first, so
    /// that the timer of the round the TC leads to is armed with the highest QC known.
    fn on_certificates(&mut self, from: ValidatorIndex, c: Certificates, out: &mut Vec<Action>) {
        let epoch = self.validators.epoch();
        if c.last_tc.as_ref().is_some_and(|tc| tc.epoch != epoch) {
            return self.ignore("wrong_epoch");
        }
        // At the start of an epoch the highest QC is the previous epoch's last one (the root):
        // `verify_qc` accepts exactly that one, and any other of another epoch is stale here.
        if !self.verify_qc(&c.high_qc) {
            if c.high_qc.epoch != epoch || c.high_qc.height < self.tree.committed_height() {
                return self.ignore("stale_certificates");
            }
            return self.drop_message(from, "bad_certificates", out);
        }
        let tc = c.last_tc.filter(|tc| tc.round >= self.round);
        if let Some(tc) = &tc {
            if !self.verify_tc(tc) {
                return self.drop_message(from, "bad_certificates", out);
            }
        }
        let qc = c.high_qc;
        if !self.tree.knows(&qc.block) && qc.height > self.tree.committed_height() {
            self.request_sync(from, qc.block, out);
        }
        self.process_qc(&qc, out);
        if let Some(tc) = tc {
            self.process_tc(tc, out);
        }
    }

    fn add_timeout(&mut self, t: Timeout, out: &mut Vec<Action>) {
        match self.agg.add_timeout(t, &self.validators) {
            Added::Certificate(tc) => {
                // The replicas whose timeouts this replica did not see learn the round is over
                // now, not when their timers fire again: all enter the next round together.
                if tc.round >= self.round {
                    let bytes = self.certificates(Some(tc.clone()));
                    out.push(Action::Broadcast { bytes });
                }
                self.process_tc(tc, out)
            }
            Added::Equivocation(e) => {
                bump(&mut self.stats.evidence);
                out.push(Action::Evidence(e));
            }
            Added::Pending | Added::Duplicate => {}
        }
    }

    // ---- sync ------------------------------------------------------------------------------

    fn request_sync(&mut self, from: ValidatorIndex, block: Digest, out: &mut Vec<Action>) {
        if self.sync_peer.is_some() {
            return;
        }
        let to = if Some(from) == self.me {
            self.next_validator(from)
        } else {
            from
        };
        self.sync_peer = Some(to);
        out.push(Action::RequestBlocks {
            to,
            request: BlockRequest {
                block,
                after_height: self.tree.committed_height(),
                max_blocks: SYNC_CHUNK,
            },
        });
    }

    /// The validator after `i`, wrapping.
    fn next_validator(&self, i: ValidatorIndex) -> ValidatorIndex {
        let n = self.validators.len();
        ValidatorIndex::try_from(usize::from(i).saturating_add(1).checked_rem(n).unwrap_or(0))
            .unwrap_or(0)
    }

    fn on_sync(
        &mut self,
        from: ValidatorIndex,
        blocks: Vec<Block>,
        proof: Option<EpochProof>,
        out: &mut Vec<Action>,
    ) {
        if self.sync_peer != Some(from) {
            // Not the answer awaited (late, or unasked for).
            return self.ignore("unexpected_sync_answer");
        }
        self.sync_peer = None;
        let proof_len = proof.as_ref().map_or(0, |p| p.blocks.len());
        if blocks.len() > SYNC_CHUNK as usize || proof_len > SYNC_CHUNK as usize {
            return self.drop_message(from, "oversized_sync_answer", out);
        }
        let mut inserted = 0u32;
        let mut complete = true;
        for b in blocks {
            match self.take_synced_block(from, b, out) {
                Synced::Inserted => inserted = inserted.saturating_add(1),
                Synced::Known => {}
                Synced::Stop => {
                    complete = false;
                    break;
                }
            }
        }
        if let Some(p) = proof.filter(|_| complete) {
            // The end of this epoch: the blocks above its last one, and the QC that committed
            // it, checked like everything else with this epoch's set.
            let epoch = self.validators.epoch();
            let mut usable = p.qc.epoch == epoch;
            for b in p.blocks {
                if !usable || self.validators.epoch() != epoch {
                    break;
                }
                usable = !matches!(self.take_synced_block(from, b, out), Synced::Stop);
            }
            if usable && self.validators.epoch() == epoch {
                if !self.verify_qc(&p.qc) {
                    return self.drop_message(from, "bad_qc", out);
                }
                self.process_qc(&p.qc, out);
            }
            if self.validators.epoch() != epoch {
                // The proof committed the epoch's last block and the replica moved on.
                return;
            }
        }
        // A QC learned without its block (from votes or timeouts) may now commit.
        let hqc = self.tree.highest_qc().clone();
        if self.tree.knows(&hqc.block) {
            self.process_qc(&hqc, out);
        }
        if let Some((pfrom, p)) = self.pending_proposal.take() {
            if self.tree.knows(&p.parent) {
                self.on_proposal(pfrom, p, out);
            } else if p.justify.height > self.tree.committed_height() {
                let parent = p.parent;
                self.pending_proposal = Some((pfrom, p));
                // No progress from this peer: ask the next one.
                let next = if inserted == 0 {
                    self.next_validator(from)
                } else {
                    from
                };
                self.request_sync(next, parent, out);
            }
        } else if !self.tree.knows(&hqc.block) && hqc.height > self.tree.committed_height() {
            let next = if inserted == 0 {
                self.next_validator(from)
            } else {
                from
            };
            self.request_sync(next, hqc.block, out);
        }
    }

    /// One block of a sync answer: checked with this epoch's set and inserted, or known, or
    /// the end of what this answer can give (a later epoch, a gap, a bad block).
    fn take_synced_block(
        &mut self,
        from: ValidatorIndex,
        b: Block,
        out: &mut Vec<Action>,
    ) -> Synced {
        let id = b.id();
        if self.tree.knows(&id)
            || b.height <= self.tree.committed_height()
            || b.epoch < self.validators.epoch()
        {
            // Known, committed, or of an epoch this replica has already left (an answer asked
            // for before it switched): nothing to do, and not the sender's fault.
            return Synced::Known;
        }
        if b.epoch > self.validators.epoch() {
            // A block of a later epoch: this replica cannot check its certificates until it
            // has executed the last block of its own epoch.
            self.ignore("later_epoch");
            return Synced::Stop;
        }
        if let Err(reason) = self.check_block(&b) {
            self.drop_message(from, reason, out);
            return Synced::Stop;
        }
        if !self.tree.knows(&b.parent) {
            return Synced::Stop;
        }
        if !self.after_parent_time(&b) {
            self.drop_message(from, "timestamp_not_after_parent", out);
            return Synced::Stop;
        }
        let justify = b.justify.clone();
        self.tree.insert(b);
        self.process_qc(&justify, out);
        self.propose_if_parent_arrived(out);
        Synced::Inserted
    }

    /// A message of a later epoch: this replica missed the end of its own. It asks for the
    /// chain up to `block` (the answer stops at the end of this epoch, with its proof), from the
    /// validators in turn rather than always from the sender, so that a Byzantine sender of
    /// later-epoch messages cannot keep the one sync slot for itself. Nothing in such a message
    /// can be checked yet, so it only ever leads to a question; the answer is checked in full.
    fn catch_up_to_later_epoch(
        &mut self,
        from: ValidatorIndex,
        signer: ValidatorIndex,
        epoch: Epoch,
        block: Digest,
        out: &mut Vec<Action>,
    ) {
        if epoch <= self.validators.epoch() || signer != from || self.sync_peer.is_some() {
            return;
        }
        let mut ask = self.catch_up_turn;
        if Some(ask) == self.me {
            ask = self.next_validator(ask);
        }
        self.catch_up_turn = self.next_validator(ask);
        self.request_sync(ask, block, out);
    }

    // ---- epochs ----------------------------------------------------------------------------

    fn on_reconfigure(&mut self, height: Height, validators: ValidatorSet, out: &mut Vec<Action>) {
        if Some(validators.epoch()) != self.validators.epoch().checked_add(1)
            || height < self.tree.committed_height()
        {
            return self.ignore("late_reconfiguration");
        }
        self.reconfiguration = Some((height, validators));
        self.tree.commit_limit = Some(height);
        if height == self.tree.committed_height() {
            self.switch_epoch(out);
        }
    }

    fn on_hold(&mut self, height: Option<Height>, out: &mut Vec<Action>) {
        if let Some((boundary, _)) = &self.reconfiguration {
            // A pending reconfiguration already holds commits at its boundary.
            self.tree.commit_limit = Some(*boundary);
            return;
        }
        let lifted = match (self.tree.commit_limit, height) {
            (Some(old), Some(new)) => new > old,
            (Some(_), None) => true,
            (None, _) => false,
        };
        self.tree.commit_limit = height;
        if lifted {
            // Certificates that arrived during the hold commit now.
            let hqc = self.tree.highest_qc().clone();
            if self.tree.knows(&hqc.block) {
                self.process_qc(&hqc, out);
            }
        }
    }

    /// The block at the boundary height committed: the next epoch starts on top of it, with
    /// the new set, from round 1. Uncommitted blocks of the old epoch are discarded.
    fn switch_epoch(&mut self, out: &mut Vec<Action>) {
        let Some((_, validators)) = self.reconfiguration.take() else {
            return;
        };
        if let Some(proof) = self.tree.commit_proof() {
            out.push(Action::EpochEnded {
                height: self.tree.committed_height(),
                proof,
            });
        }
        let root = self.tree.root().clone();
        let root_qc = self.tree.root_qc().clone();
        let key_me = self.me.and_then(|i| self.validators.key(i));
        self.me = key_me.and_then(|k| validators.index_of(&k));
        self.validators = validators;
        self.safety.set_index(self.me.unwrap_or(u16::MAX));
        let state = self.safety.enter_epoch(self.validators.epoch());
        out.push(Action::PersistSafety(state));
        self.tree = BlockTree::new(root, root_qc);
        self.agg = Aggregator::default();
        self.verified.clear();
        self.proposals_seen.clear();
        self.reported_proposals.clear();
        self.awaiting_validation.clear();
        self.answered_laggers.clear();
        self.pending_proposal = None;
        self.payload_requested = None;
        self.idle_timer_shortened = None;
        // An answer still on its way was asked for in the old epoch: not awaited any more.
        self.sync_peer = None;
        let first = self.tree.root_qc().round.saturating_add(1);
        self.enter_round(first, None, out);
    }
}
