//! The round logic: `handle(Event) -> Vec<Action>`. Pure and deterministic: no clock, no I/O,
//! no randomness. See docs/consensus.md for the protocol and the message flow of one round.

use crate::aggregator::{Added, Aggregator};
use crate::block_tree::BlockTree;
use crate::safety::{SafetyRules, SafetyState};
use crate::types::{
    Block, BlockRequest, Digest, Epoch, Evidence, Height, Message, QuorumCert, Round, Timeout,
    TimeoutCert, ValidatorIndex, ValidatorSet, Vote,
};
use crate::{Action, Config, Event};
use ed25519_dalek::{Signature, SigningKey};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Most blocks asked for in one sync request.
const SYNC_CHUNK: u32 = 100;

/// Counters for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages dropped before the round logic, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
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
    safety: SafetyRules,
    tree: BlockTree,
    agg: Aggregator,
    round: Round,
    entered_by: Option<TimeoutCert>,
    consecutive_timeouts: u32,
    proposals_seen: BTreeMap<(Round, ValidatorIndex), Block>,
    awaiting_validation: HashMap<Digest, Block>,
    pending_proposal: Option<(ValidatorIndex, Block)>,
    sync_in_flight: bool,
    my_timeout: Option<Timeout>,
    payload_requested: Option<Round>,
    reconfiguration: Option<(Height, ValidatorSet)>,
    /// Leaders whose last round here ended without their proposal: their rounds get a short
    /// timer until they propose again (a local failure detector; safety does not depend on it).
    suspected: BTreeSet<ValidatorIndex>,
    proposal_seen_this_round: bool,
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
        let tree = BlockTree::new(root.0, root.1);
        let round = (tree.highest_qc().round + 1).max(safety_state.last_voted_round);
        Consensus {
            config,
            me,
            safety: SafetyRules::new(key, me.unwrap_or(u16::MAX), safety_state),
            tree,
            agg: Aggregator::default(),
            round,
            entered_by: None,
            consecutive_timeouts: 0,
            proposals_seen: BTreeMap::new(),
            awaiting_validation: HashMap::new(),
            pending_proposal: None,
            sync_in_flight: false,
            my_timeout: None,
            payload_requested: None,
            reconfiguration: None,
            suspected: BTreeSet::new(),
            proposal_seen_this_round: false,
            stats: Stats::default(),
            validators,
        }
    }

    /// Test support: make this replica vote without its safety rules.
    #[doc(hidden)]
    pub fn break_voting_rule_for_tests(&mut self) {
        self.safety.ignore_rules = true;
    }

    /// Test support: make this replica ignore its lock: it votes without the safety rules and
    /// commits a block on its own certificate instead of the two-chain rule.
    #[doc(hidden)]
    pub fn break_safety_for_tests(&mut self) {
        self.safety.ignore_rules = true;
        self.tree.one_chain = true;
    }

    /// Arms the first timer and, if this replica leads the round, asks for a payload.
    pub fn start(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.enter_round(self.round, None, &mut out);
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

    /// The last committed block's certificate.
    pub fn committed_qc(&self) -> &QuorumCert {
        self.tree.root_qc()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
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
            Event::Payload {
                round,
                digests,
                timestamp_ms,
            } => self.on_payload(round, digests, timestamp_ms, &mut out),
            Event::PayloadValidated { block, valid } => self.on_validated(block, valid, &mut out),
            Event::SyncResponse { from, blocks } => self.on_sync(from, blocks, &mut out),
            Event::Reconfigure { height, validators } => {
                self.on_reconfigure(height, validators, &mut out)
            }
            Event::HoldCommits { height } => self.on_hold(height, &mut out),
        }
        out
    }

    fn drop_message(&mut self, from: ValidatorIndex, reason: &'static str, out: &mut Vec<Action>) {
        *self.stats.dropped.entry(reason).or_default() += 1;
        out.push(Action::Misbehaviour { from, reason });
    }

    fn ignore(&mut self, reason: &'static str) {
        *self.stats.dropped.entry(reason).or_default() += 1;
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
        }
    }

    // ---- certificates ----------------------------------------------------------------------

    fn verify_qc(&self, qc: &QuorumCert) -> bool {
        if qc.block == self.tree.root_id() && qc.height == self.tree.root().height {
            // The root's certificate was checked when it committed (or is genesis).
            return true;
        }
        qc.verify(&self.validators).is_ok()
    }

    /// Records a QC: commits what it commits and moves to the next round.
    fn process_qc(&mut self, qc: &QuorumCert, out: &mut Vec<Action>) {
        for (block, cert) in self.tree.add_qc(qc) {
            self.stats.commits += 1;
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
            self.enter_round(qc.round + 1, None, out);
        }
    }

    fn process_tc(&mut self, tc: TimeoutCert, out: &mut Vec<Action>) {
        if tc.round >= self.round {
            self.stats.view_changes += 1;
            let next = tc.round + 1;
            self.enter_round(next, Some(tc), out);
        }
    }

    fn enter_round(&mut self, round: Round, tc: Option<TimeoutCert>, out: &mut Vec<Action>) {
        if tc.is_none() {
            self.consecutive_timeouts = 0;
        }
        self.round = round;
        self.entered_by = tc;
        self.my_timeout = None;
        self.proposal_seen_this_round = false;
        self.awaiting_validation.retain(|_, b| b.round >= round);
        let keep = round.saturating_sub(2);
        self.agg.prune(keep);
        self.proposals_seen = self.proposals_seen.split_off(&(keep, 0));
        out.push(Action::SetTimer {
            round,
            after_ms: self.timeout_ms(),
        });
        if self.me == Some(self.validators.leader(round)) {
            self.request_payload(out);
        }
    }

    fn timeout_ms(&self) -> u64 {
        if self.suspected.contains(&self.validators.leader(self.round)) {
            return (self.config.base_timeout_ms / 4).max(50);
        }
        let factor = 1u64 << self.consecutive_timeouts.min(6);
        (self.config.base_timeout_ms.saturating_mul(factor)).min(self.config.max_timeout_ms)
    }

    // ---- leader ----------------------------------------------------------------------------

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
        let timeout_cert = if hqc.round + 1 == round {
            None
        } else {
            match &self.entered_by {
                Some(tc) if tc.round + 1 == round => Some(tc.clone()),
                _ => return,
            }
        };
        digests.truncate(self.config.max_payload_digests);
        let block = Block {
            epoch: self.validators.epoch(),
            round,
            height: hqc.height + 1,
            parent: hqc.block,
            timestamp_ms: timestamp_ms.max(parent.timestamp_ms),
            justify: hqc,
            timeout_cert,
            author: me,
            payload: digests,
            signature: Signature::from_bytes(&[0; 64]),
        };
        let Some((state, block)) = self.safety.propose(block) else {
            return;
        };
        self.stats.proposals += 1;
        out.push(Action::PersistSafety(state));
        out.push(Action::Broadcast {
            bytes: Message::Proposal(block.clone()).to_bytes(),
        });
        self.on_proposal(me, block, out);
    }

    // ---- replica ---------------------------------------------------------------------------

    /// Stateless checks of a block: epoch, leader, signature, shape, certificates.
    fn check_block(&self, b: &Block) -> Result<(), &'static str> {
        if b.epoch != self.validators.epoch() {
            return Err("wrong_epoch");
        }
        if b.author != self.validators.leader(b.round) {
            return Err("not_leader");
        }
        let same_epoch = b.justify.epoch == b.epoch;
        if b.parent != b.justify.block
            || b.height != b.justify.height + 1
            || (same_epoch && b.round <= b.justify.round)
        {
            return Err("malformed_block");
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
            if tc.round + 1 != b.round || tc.verify(&self.validators).is_err() {
                return Err("bad_tc");
            }
        }
        Ok(())
    }

    fn on_proposal(&mut self, from: ValidatorIndex, b: Block, out: &mut Vec<Action>) {
        if b.epoch != self.validators.epoch() {
            return self.ignore("wrong_epoch");
        }
        if let Err(reason) = self.check_block(&b) {
            return self.drop_message(from, reason, out);
        }
        let id = b.id();
        match self.proposals_seen.get(&(b.round, b.author)) {
            Some(prev) if prev.id() != id => {
                self.stats.evidence += 1;
                out.push(Action::Evidence(Box::new(Evidence {
                    validator: b.author,
                    epoch: b.epoch,
                    round: b.round,
                    first: Message::Proposal(prev.clone()),
                    second: Message::Proposal(b),
                })));
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
        self.tree.insert(b.clone());
        self.suspected.remove(&b.author);
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
        let Some((state, vote)) = self.safety.vote(&b) else {
            return;
        };
        self.stats.votes += 1;
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
            return self.ignore("wrong_epoch");
        }
        if v.voter != from || !v.verify(&self.validators) {
            return self.drop_message(from, "bad_vote", out);
        }
        if v.round + 1 < self.round {
            return self.ignore("stale_vote");
        }
        self.add_vote(v, out);
    }

    fn add_vote(&mut self, v: Vote, out: &mut Vec<Action>) {
        match self.agg.add_vote(v, &self.validators) {
            Added::Certificate(qc) => {
                if !self.tree.knows(&qc.block) {
                    let block = qc.block;
                    let from = qc.signatures.first().map_or(0, |s| s.0);
                    self.tree.add_qc(&qc);
                    self.request_sync(from, block, out);
                }
                self.process_qc(&qc, out);
            }
            Added::Equivocation(e) => {
                self.stats.evidence += 1;
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
        self.stats.timeouts += 1;
        // An unanswered block request must not block sync forever.
        self.sync_in_flight = false;
        if !self.proposal_seen_this_round {
            self.suspected.insert(self.validators.leader(round));
        } else {
            self.consecutive_timeouts += 1;
        }
        let timeout = match &self.my_timeout {
            Some(t) if t.round == round => Some(t.clone()),
            _ => {
                let hqc = self.tree.highest_qc().clone();
                match self.safety.timeout(self.validators.epoch(), round, &hqc) {
                    Some((state, t)) => {
                        out.push(Action::PersistSafety(state));
                        self.my_timeout = Some(t.clone());
                        Some(t)
                    }
                    None => None,
                }
            }
        };
        out.push(Action::SetTimer {
            round,
            after_ms: self.timeout_ms(),
        });
        if let Some(mut t) = timeout {
            t.entered_by = self.entered_by.clone().filter(|tc| tc.round + 1 == round);
            out.push(Action::Broadcast {
                bytes: Message::Timeout(t.clone()).to_bytes(),
            });
            self.add_timeout(t, out);
        }
    }

    fn on_timeout(&mut self, from: ValidatorIndex, t: Timeout, out: &mut Vec<Action>) {
        if t.epoch != self.validators.epoch() {
            return self.ignore("wrong_epoch");
        }
        if t.voter != from || !t.verify(&self.validators) || !self.verify_qc(&t.high_qc) {
            return self.drop_message(from, "bad_timeout", out);
        }
        if t.round + 1 < self.round {
            return self.ignore("stale_timeout");
        }
        if let Some(tc) = t.entered_by.clone() {
            if tc.round >= self.round {
                if tc.verify(&self.validators).is_err() {
                    return self.drop_message(from, "bad_tc", out);
                }
                self.process_tc(tc, out);
            }
        }
        let hqc = t.high_qc.clone();
        if self.tree.knows(&hqc.block) {
            self.process_qc(&hqc, out);
        } else if hqc.height > self.tree.committed_height() {
            self.tree.add_qc(&hqc);
            self.request_sync(from, hqc.block, out);
        }
        let round = t.round;
        self.add_timeout(t, out);
        // f+1 validators gave up a round this replica has reached or not yet reached: one of
        // them is honest, so give it up too, without waiting for the local timer (this keeps
        // replicas' rounds together after partitions, restarts and backoff).
        let joined = self.my_timeout.as_ref().is_some_and(|m| m.round == round);
        if round >= self.round && !joined && self.agg.timeouts_for(round) > self.validators.faults()
        {
            if round > self.round {
                self.enter_round(round, None, out);
            }
            self.on_local_timeout(round, out);
        }
    }

    fn add_timeout(&mut self, t: Timeout, out: &mut Vec<Action>) {
        match self.agg.add_timeout(t, &self.validators) {
            Added::Certificate(tc) => self.process_tc(tc, out),
            Added::Equivocation(e) => {
                self.stats.evidence += 1;
                out.push(Action::Evidence(e));
            }
            Added::Pending | Added::Duplicate => {}
        }
    }

    // ---- sync ------------------------------------------------------------------------------

    fn request_sync(&mut self, from: ValidatorIndex, block: Digest, out: &mut Vec<Action>) {
        if self.sync_in_flight {
            return;
        }
        let to = if Some(from) == self.me {
            (from + 1) % self.validators.len() as ValidatorIndex
        } else {
            from
        };
        self.sync_in_flight = true;
        out.push(Action::RequestBlocks {
            to,
            request: BlockRequest {
                block,
                after_height: self.tree.committed_height(),
                max_blocks: SYNC_CHUNK,
            },
        });
    }

    fn on_sync(&mut self, from: ValidatorIndex, blocks: Vec<Block>, out: &mut Vec<Action>) {
        self.sync_in_flight = false;
        let mut inserted = 0;
        for b in blocks {
            let id = b.id();
            if self.tree.knows(&id) || b.height <= self.tree.committed_height() {
                continue;
            }
            if b.epoch > self.validators.epoch() {
                // An honest peer that is already in a later epoch: this replica cannot check
                // those certificates until it executes the boundary block itself.
                self.ignore("later_epoch");
                break;
            }
            if let Err(reason) = self.check_block(&b) {
                self.drop_message(from, reason, out);
                break;
            }
            if !self.tree.knows(&b.parent) {
                break;
            }
            let justify = b.justify.clone();
            self.tree.insert(b);
            inserted += 1;
            self.process_qc(&justify, out);
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
                    (from + 1) % self.validators.len() as ValidatorIndex
                } else {
                    from
                };
                self.request_sync(next, parent, out);
            }
        } else if !self.tree.knows(&hqc.block) && hqc.height > self.tree.committed_height() {
            let next = if inserted == 0 {
                (from + 1) % self.validators.len() as ValidatorIndex
            } else {
                from
            };
            self.request_sync(next, hqc.block, out);
        }
    }

    // ---- epochs ----------------------------------------------------------------------------

    fn on_reconfigure(&mut self, height: Height, validators: ValidatorSet, out: &mut Vec<Action>) {
        if validators.epoch() != self.validators.epoch() + 1
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
        self.proposals_seen.clear();
        self.awaiting_validation.clear();
        self.pending_proposal = None;
        self.payload_requested = None;
        let first = self.tree.root_qc().round + 1;
        self.enter_round(first, None, out);
    }
}
