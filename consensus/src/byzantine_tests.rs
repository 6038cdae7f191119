//! One honest replica against one Byzantine validator that sends correctly signed messages with
//! forged or mutated fields. Each test is a finding of the safety review: it failed before the
//! rule it names existed. (Long because each finding keeps its own test and fixture steps.)

use crate::types::{timeout_digest, vote_digest};
use crate::{
    Action, Block, Config, Consensus, Digest, EpochProof, Event, Message, QuorumCert, Round,
    SafetyState, Timeout, TimeoutCert, ValidatorIndex, ValidatorSet, Vote, ROUND_WINDOW,
    SYNC_CHUNK,
};
use ed25519_dalek::{Signature, Signer, SigningKey};

const BYZANTINE: ValidatorIndex = 3;

pub(crate) struct Fixture {
    pub(crate) keys: Vec<SigningKey>,
    pub(crate) set: ValidatorSet,
    pub(crate) genesis: (Block, QuorumCert),
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        let keys: Vec<SigningKey> = (0..4u8)
            .map(|i| SigningKey::from_bytes(&[i + 1; 32]))
            .collect();
        let set = ValidatorSet::new(
            0,
            keys.iter().map(|k| k.verifying_key().to_bytes()).collect(),
        )
        .expect("set");
        let genesis = Block::genesis(&set);
        Fixture { keys, set, genesis }
    }

    fn set_keys(&self) -> Vec<[u8; 32]> {
        self.keys
            .iter()
            .map(|k| k.verifying_key().to_bytes())
            .collect()
    }

    pub(crate) fn replica(&self, i: usize, safety: Option<SafetyState>) -> Consensus {
        self.replica_with(Config::default(), i, safety)
    }

    /// Replica `i` with `config`.
    pub(crate) fn replica_with(
        &self,
        config: Config,
        i: usize,
        safety: Option<SafetyState>,
    ) -> Consensus {
        Consensus::new(
            config,
            self.keys[i].clone(),
            self.set.clone(),
            self.genesis.clone(),
            safety,
        )
    }

    pub(crate) fn vote(
        &self,
        by: ValidatorIndex,
        round: Round,
        height: u64,
        block: Digest,
    ) -> Vote {
        let signature = self.keys[usize::from(by)].sign(&vote_digest(0, round, height, &block).0);
        Vote {
            epoch: 0,
            round,
            height,
            block,
            voter: by,
            signature,
        }
    }

    /// A QC for `block` signed by validators 0, 1, 2.
    pub(crate) fn qc(&self, block: &Block) -> QuorumCert {
        let id = block.id();
        QuorumCert {
            epoch: 0,
            round: block.round,
            height: block.height,
            block: id,
            signatures: (0..3)
                .map(|i| (i, self.vote(i, block.round, block.height, id).signature))
                .collect(),
        }
    }

    /// The block validator `leader(round)` proposes on `justify`, signed by it.
    pub(crate) fn block(&self, round: Round, justify: &QuorumCert, timestamp_ms: u64) -> Block {
        let author = self.set.leader(round);
        Block {
            epoch: 0,
            round,
            height: justify.height + 1,
            parent: justify.block,
            justify: justify.clone(),
            timeout_cert: None,
            author,
            timestamp_ms,
            payload: vec![Digest([round as u8; 32])],
            signature: Signature::from_bytes(&[0; 64]),
        }
        .sign(&self.keys[usize::from(author)])
    }

    /// The genesis certificate with a forged round near `u64::MAX` and no signatures.
    fn forged_root_qc(&self) -> QuorumCert {
        QuorumCert {
            round: u64::MAX - 2,
            signatures: Vec::new(),
            ..self.genesis.1.clone()
        }
    }

    /// Replica 0 after it received b1 (round 1) and b2 (round 2, on QC(b1)) and voted for b2:
    /// the replica, b1, QC(b1), b2, and the safety state it persisted before the vote.
    fn voted_for_b2(&self) -> (Consensus, Block, QuorumCert, Block, SafetyState) {
        let mut r = self.replica(0, None);
        r.start();
        let b1 = self.block(1, &self.genesis.1, 10);
        let qc1 = self.qc(&b1);
        let b2 = self.block(2, &qc1, 20);
        r.handle(msg(1, Message::Proposal(b1.clone())));
        r.handle(msg(2, Message::Proposal(b2.clone())));
        let actions = r.handle(Event::PayloadValidated {
            block: b2.id(),
            valid: true,
        });
        let state = persisted(&actions);
        (r, b1, qc1, b2, state)
    }

    pub(crate) fn timeout(&self, by: ValidatorIndex, round: Round, high_qc: QuorumCert) -> Timeout {
        let signature = self.keys[usize::from(by)].sign(&timeout_digest(0, round, high_qc.round).0);
        Timeout {
            epoch: 0,
            round,
            high_qc,
            voter: by,
            signature,
            entered_by: None,
        }
    }
}

pub(crate) fn msg(from: ValidatorIndex, m: Message) -> Event {
    Event::Message {
        from,
        bytes: m.to_bytes(),
    }
}

pub(crate) fn penalised(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Misbehaviour { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

/// The safety state a vote persisted.
fn persisted(actions: &[Action]) -> SafetyState {
    actions
        .iter()
        .find_map(|a| match a {
            Action::PersistSafety(s) => Some(s.clone()),
            _ => None,
        })
        .expect("voting persists the safety state")
}

fn votes_to_validate(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::ValidatePayload { .. }))
        .count()
}

#[test]
fn a_timeout_carrying_the_root_certificate_with_a_forged_round_is_refused() {
    let f = Fixture::new();
    let mut r = f.replica(0, None);
    r.start();
    let forged = f.forged_root_qc();
    let actions = r.handle(msg(
        BYZANTINE,
        Message::Timeout(f.timeout(BYZANTINE, 1, forged)),
    ));
    assert_eq!(penalised(&actions), vec!["bad_timeout"]);
    assert_eq!(r.highest_qc().round, 0);
    assert_eq!(r.round(), 1);
}

#[test]
fn a_timeout_for_a_far_round_carrying_a_forged_certificate_just_below_it_is_refused() {
    let f = Fixture::new();
    let mut r = f.replica(0, None);
    r.start();
    let forged = f.forged_root_qc();
    let actions = r.handle(msg(
        BYZANTINE,
        Message::Timeout(f.timeout(BYZANTINE, u64::MAX - 1, forged)),
    ));
    assert_eq!(penalised(&actions), vec!["bad_timeout"]);
    assert_eq!(r.round(), 1);
}

#[test]
fn a_proposal_justified_by_a_forged_root_certificate_is_refused() {
    let f = Fixture::new();
    let mut r = f.replica(0, None);
    r.start();
    // Validator 3 leads round 3 (and every round = 3 mod 4).
    let round = u64::MAX - u64::MAX % 4 - 1;
    assert_eq!(f.set.leader(round), BYZANTINE);
    let mut b = f.block(round, &f.genesis.1, 10);
    b.justify.round = round - 1;
    let b = b.sign(&f.keys[3]);
    let actions = r.handle(msg(BYZANTINE, Message::Proposal(b)));
    assert_eq!(penalised(&actions), vec!["bad_qc"]);
    assert_eq!(r.highest_qc().round, 0);
    assert_eq!(r.round(), 1);
}

#[test]
fn a_vote_with_a_wrong_height_does_not_poison_the_certificate() {
    let f = Fixture::new();
    let mut r = f.replica(0, None);
    r.start();
    let b1 = f.block(1, &f.genesis.1, 10);
    let id = b1.id();
    // The Byzantine vote arrives first, signed, naming the block with the wrong height.
    r.handle(msg(BYZANTINE, Message::Vote(f.vote(BYZANTINE, 1, 7, id))));
    r.handle(msg(1, Message::Proposal(b1.clone())));
    for i in 1..3 {
        r.handle(msg(i, Message::Vote(f.vote(i, 1, 1, id))));
    }
    // Replica 0's own vote (validation answered) completes a quorum of the right height.
    r.handle(Event::PayloadValidated {
        block: id,
        valid: true,
    });
    let qc = r.highest_qc().clone();
    assert_eq!((qc.round, qc.height, qc.block), (1, 1, id));
    assert!(qc.verify(&f.set).is_ok(), "{qc:?}");
}

#[test]
fn a_restarted_replica_times_out_with_a_certificate_at_least_as_high_as_its_lock() {
    let f = Fixture::new();
    let (_, _, _, _, state) = f.voted_for_b2();
    assert_eq!(state.highest_qc_round, 1);
    // kill -9, restart from the committed root (genesis) and the persisted state.
    let mut restarted = f.replica(0, Some(state));
    restarted.start();
    let round = restarted.round();
    let actions = restarted.handle(Event::Timeout { round });
    let sent = actions.iter().find_map(|a| match a {
        Action::Broadcast { bytes } => match Message::from_bytes(bytes, 1 << 20) {
            Ok(Message::Timeout(t)) => Some(t),
            _ => None,
        },
        _ => None,
    });
    let t = sent.expect("the restarted replica times out its round");
    assert!(t.high_qc.round >= 1, "timeout below the lock: {t:?}");
}

#[test]
fn safety_rules_refuse_a_timeout_below_the_lock() {
    let f = Fixture::new();
    let (mut r, _, qc1, _, _) = f.voted_for_b2();
    assert!(r.safety.timeout(0, 3, &f.genesis.1, None).is_none());
    assert!(r.safety.timeout(0, 2, &qc1, None).is_some());
}

#[test]
fn messages_beyond_the_round_window_are_not_kept() {
    let f = Fixture::new();
    let mut r = f.replica(0, None);
    r.start();
    for k in 0..2_000u64 {
        let round = 1 + k * 7;
        r.handle(msg(
            BYZANTINE,
            Message::Timeout(f.timeout(BYZANTINE, round, f.genesis.1.clone())),
        ));
        let id = Digest([k as u8; 32]);
        r.handle(msg(
            BYZANTINE,
            Message::Vote(f.vote(BYZANTINE, round, 1, id)),
        ));
    }
    assert!(
        r.agg.len() <= 2 * (ROUND_WINDOW as usize + 2),
        "{}",
        r.agg.len()
    );
    assert_eq!(r.round(), 1);
    let out = r
        .stats()
        .ignored
        .get("timeout_out_of_window")
        .copied()
        .unwrap_or(0);
    assert!(out > 1_900, "{:?}", r.stats().ignored);
}

#[test]
fn rounds_and_heights_near_the_end_of_u64_never_panic_or_move_the_replica() {
    let f = Fixture::new();
    let mut r = f.replica(0, None);
    r.start();
    for round in [u64::MAX, u64::MAX - 1] {
        r.handle(msg(
            BYZANTINE,
            Message::Vote(f.vote(BYZANTINE, round, u64::MAX, Digest([1; 32]))),
        ));
        let qc = f.genesis.1.clone();
        r.handle(msg(
            BYZANTINE,
            Message::Timeout(f.timeout(BYZANTINE, round, qc)),
        ));
    }
    let mut b = f.block(3, &f.genesis.1, 10);
    b.justify.height = u64::MAX;
    b.height = 0;
    r.handle(msg(BYZANTINE, Message::Proposal(b.sign(&f.keys[3]))));
    assert_eq!(r.round(), 1);
}

#[test]
fn a_proposal_not_later_than_its_parent_gets_no_vote() {
    let f = Fixture::new();
    let mut r = f.replica(0, None);
    r.start();
    let b1 = f.block(1, &f.genesis.1, 50);
    r.handle(msg(1, Message::Proposal(b1.clone())));
    let b2 = f.block(2, &f.qc(&b1), 50);
    let actions = r.handle(msg(2, Message::Proposal(b2)));
    assert_eq!(votes_to_validate(&actions), 0);
    assert_eq!(penalised(&actions), vec!["timestamp_not_after_parent"]);
}

#[test]
fn a_proposal_in_a_round_no_certificate_leads_to_is_refused() {
    let f = Fixture::new();
    let mut r = f.replica(0, None);
    r.start();
    // Validator 3 leads round 7 but holds no certificate for round 6.
    let b = f.block(7, &f.genesis.1, 10);
    let actions = r.handle(msg(BYZANTINE, Message::Proposal(b)));
    assert_eq!(penalised(&actions), vec!["round_not_after_certificate"]);
}

#[test]
fn an_equivocating_leader_yields_one_piece_of_evidence_per_round() {
    let f = Fixture::new();
    let mut r = f.replica(0, None);
    r.start();
    let b1 = f.block(1, &f.genesis.1, 10);
    let qc1 = f.qc(&b1);
    r.handle(msg(1, Message::Proposal(b1)));
    let mut evidence = 0;
    for k in 0..50u8 {
        let mut b = f.block(2, &qc1, 20);
        b.payload = vec![Digest([k; 32])];
        let actions = r.handle(msg(2, Message::Proposal(b.sign(&f.keys[2]))));
        evidence += actions
            .iter()
            .filter(|a| matches!(a, Action::Evidence(_)))
            .count();
    }
    assert_eq!(evidence, 1);
}

#[test]
fn certificates_with_too_many_unknown_or_repeated_signers_are_refused() {
    let f = Fixture::new();
    let b1 = f.block(1, &f.genesis.1, 10);
    let good = f.qc(&b1);
    assert!(good.verify(&f.set).is_ok());
    let sig = good.signatures[0].1;
    let mut repeated = good.clone();
    repeated.signatures.push(good.signatures[2]);
    let mut unknown = good.clone();
    unknown.signatures.push((9, sig));
    let mut oversized = good.clone();
    oversized.signatures = (0..5).map(|i| (i, sig)).collect();
    let mut unsorted = good.clone();
    unsorted.signatures.reverse();
    let mut short = good.clone();
    short.signatures.truncate(2);
    for bad in [repeated, unknown, oversized, unsorted, short] {
        assert!(bad.verify(&f.set).is_err(), "{:?}", bad.signatures);
    }
    // A TC whose signer claims a QC at or above the TC's round is forged.
    let tc = TimeoutCert {
        epoch: 0,
        round: 4,
        timeouts: (0..3)
            .map(|i| {
                let hqc = if i == 2 { 4 } else { 0 };
                (
                    i,
                    hqc,
                    f.keys[usize::from(i)].sign(&timeout_digest(0, 4, hqc).0),
                )
            })
            .collect(),
    };
    assert!(tc.verify(&f.set).is_err());
}

#[test]
fn sync_answers_are_taken_only_from_the_peer_asked_and_only_up_to_the_chunk() {
    let f = Fixture::new();
    let mut r = f.replica(0, None);
    r.start();
    let b1 = f.block(1, &f.genesis.1, 10);
    let b2 = f.block(2, &f.qc(&b1), 20);
    // A proposal whose parent is unknown: the replica asks its sender.
    let actions = r.handle(msg(2, Message::Proposal(b2)));
    assert_eq!(asked(&actions), Some(2));
    // Someone else answers first: ignored.
    r.handle(Event::SyncResponse {
        from: BYZANTINE,
        blocks: vec![b1.clone()],
        proof: None,
    });
    assert!(r.block(&b1.id()).is_none());
    // The asked peer answers with far more than a chunk: refused.
    let actions = r.handle(Event::SyncResponse {
        from: 2,
        blocks: vec![b1.clone(); SYNC_CHUNK as usize + 1],
        proof: None,
    });
    assert_eq!(penalised(&actions), vec!["oversized_sync_answer"]);
    assert!(r.block(&b1.id()).is_none());
}

/// Replica 0 missed the end of epoch 0 (at b2): a message of epoch 1 makes it ask for the
/// chain; the answer ends at b2 with the proof that b2 committed (b3 and QC(b3)).
fn lagging_replica_and_epoch_end(f: &Fixture) -> (Consensus, [Block; 3], QuorumCert) {
    let mut r = f.replica(0, None);
    r.start();
    // Commits wait at the possible boundary until the node has executed it.
    r.handle(Event::HoldCommits { height: Some(2) });
    let b1 = f.block(1, &f.genesis.1, 10);
    let b2 = f.block(2, &f.qc(&b1), 20);
    let b3 = f.block(3, &f.qc(&b2), 30);
    let qc3 = f.qc(&b3);
    let mut later = f.block(1, &f.genesis.1, 40);
    later.epoch = 1;
    let actions = r.handle(msg(1, Message::Proposal(later)));
    assert_eq!(
        asked(&actions),
        Some(1),
        "a later epoch's message starts the catch-up"
    );
    (r, [b1, b2, b3], qc3)
}

fn committed_heights(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Commit { block, .. } => Some(block.height),
            _ => None,
        })
        .collect()
}

fn asked(actions: &[Action]) -> Option<ValidatorIndex> {
    actions.iter().find_map(|a| match a {
        Action::RequestBlocks { to, .. } => Some(*to),
        _ => None,
    })
}

#[test]
fn later_epoch_messages_lead_to_questions_to_the_validators_in_turn() {
    // Nothing in a later epoch's message can be checked yet; a Byzantine sender of such
    // messages must not keep the one sync slot for itself.
    let f = Fixture::new();
    let mut r = f.replica(0, None);
    r.start();
    let mut later = f.block(1, &f.genesis.1, 40);
    later.epoch = 1;
    let author = later.author;
    // Relayed by someone other than its signer: no question.
    let actions = r.handle(msg(BYZANTINE, Message::Proposal(later.clone())));
    assert_eq!(asked(&actions), None);
    // From its signer: a question; after an empty answer, the next one goes to the next
    // validator, not back to the sender.
    let first = asked(&r.handle(msg(author, Message::Proposal(later.clone()))));
    let first = first.expect("a question");
    r.handle(Event::SyncResponse {
        from: first,
        blocks: Vec::new(),
        proof: None,
    });
    let second = asked(&r.handle(msg(author, Message::Proposal(later))));
    assert!(
        second.is_some() && second != Some(first),
        "{first} then {second:?}"
    );
}

#[test]
fn a_replica_behind_an_epoch_change_commits_the_last_block_from_the_proof() {
    let f = Fixture::new();
    let (mut r, [b1, b2, b3], qc3) = lagging_replica_and_epoch_end(&f);
    let actions = r.handle(Event::SyncResponse {
        from: 1,
        blocks: vec![b1, b2],
        proof: Some(EpochProof {
            blocks: vec![b3],
            qc: qc3,
        }),
    });
    assert_eq!(committed_heights(&actions), vec![1, 2]);
    assert!(penalised(&actions).is_empty());
    // The node executes b2 and finds the next set there: the replica moves on.
    let next = ValidatorSet::new(1, f.set_keys()).expect("set");
    r.handle(Event::Reconfigure {
        height: 2,
        validators: next,
    });
    assert_eq!(r.epoch(), 1);
    assert_eq!(r.committed_height(), 2);
}

#[test]
fn a_forged_epoch_proof_commits_nothing_and_is_penalised() {
    let f = Fixture::new();
    let (mut r, [b1, b2, b3], qc3) = lagging_replica_and_epoch_end(&f);
    let forged = QuorumCert {
        signatures: Vec::new(),
        ..qc3
    };
    let actions = r.handle(Event::SyncResponse {
        from: 1,
        blocks: vec![b1, b2],
        proof: Some(EpochProof {
            blocks: vec![b3],
            qc: forged,
        }),
    });
    // b1 commits on b2's certificate (the two-chain rule); b2 needs the proof.
    assert_eq!(committed_heights(&actions), vec![1]);
    assert_eq!(penalised(&actions), vec!["bad_qc"]);
    assert_eq!(r.committed_height(), 1);
}

#[test]
fn an_epoch_proof_longer_than_a_chunk_is_refused() {
    let f = Fixture::new();
    let (mut r, [b1, b2, b3], qc3) = lagging_replica_and_epoch_end(&f);
    let actions = r.handle(Event::SyncResponse {
        from: 1,
        blocks: vec![b1, b2],
        proof: Some(EpochProof {
            blocks: vec![b3; SYNC_CHUNK as usize + 1],
            qc: qc3,
        }),
    });
    assert_eq!(penalised(&actions), vec!["oversized_sync_answer"]);
    assert!(committed_heights(&actions).is_empty());
    assert_eq!(r.committed_height(), 0);
}

#[test]
fn a_decoded_validator_set_is_checked_like_a_constructed_one() {
    let f = Fixture::new();
    let mut bytes = postcard::to_allocvec(&f.set).expect("encode");
    assert!(postcard::from_bytes::<ValidatorSet>(&bytes).is_ok());
    // An empty set.
    bytes = postcard::to_allocvec(&(0u64, Vec::<[u8; 32]>::new())).expect("encode");
    assert!(postcard::from_bytes::<ValidatorSet>(&bytes).is_err());
    // A small-order key.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert!(ValidatorSet::new(0, vec![identity]).is_err());
}

#[test]
fn after_a_timeout_a_block_below_the_highest_reported_certificate_gets_no_vote() {
    let f = Fixture::new();
    let b1 = f.block(1, &f.genesis.1, 10);
    let qc1 = f.qc(&b1);
    // Round 2 timed out; validator 1 reported QC(1) as its highest.
    let tc2 = TimeoutCert {
        epoch: 0,
        round: 2,
        timeouts: (0..3u16)
            .map(|i| {
                let hqc = if i == 1 { 1 } else { 0 };
                (
                    i,
                    hqc,
                    f.keys[usize::from(i)].sign(&timeout_digest(0, 2, hqc).0),
                )
            })
            .collect(),
    };
    let propose = |justify: &QuorumCert| {
        let mut b = f.block(3, justify, 30);
        b.timeout_cert = Some(tc2.clone());
        b.sign(&f.keys[3])
    };
    for (justify, votes) in [(&f.genesis.1, 0), (&qc1, 1)] {
        let mut r = f.replica(0, None);
        r.start();
        r.handle(msg(1, Message::Proposal(b1.clone())));
        let actions = r.handle(msg(BYZANTINE, Message::Proposal(propose(justify))));
        assert_eq!(
            votes_to_validate(&actions),
            votes,
            "justify round {}",
            justify.round
        );
    }
}

#[test]
fn a_replica_votes_once_per_round_even_across_a_restart() {
    let f = Fixture::new();
    let mut r = f.replica(0, None);
    r.start();
    let b1 = f.block(1, &f.genesis.1, 10);
    r.handle(msg(1, Message::Proposal(b1.clone())));
    let actions = r.handle(Event::PayloadValidated {
        block: b1.id(),
        valid: true,
    });
    let state = persisted(&actions);
    // Restarted, it sees the leader's other proposal for the same round.
    let mut restarted = f.replica(0, Some(state));
    restarted.start();
    let mut other = b1.clone();
    other.payload = vec![Digest([0xAB; 32])];
    let other = other.sign(&f.keys[1]);
    let actions = restarted.handle(msg(1, Message::Proposal(other)));
    assert_eq!(votes_to_validate(&actions), 0);
}

#[test]
fn uncommitted_blocks_survive_a_restart_with_the_safety_state() {
    // If every validator restarts before a certified block commits, its certificate (their
    // lock) comes back with the safety state; the block must come back too, or no leader
    // could ever extend it.
    let f = Fixture::new();
    let (_, b1, _, b2, state) = f.voted_for_b2();
    let restarted = f.replica(0, Some(state));
    assert!(restarted.block(&b1.id()).is_some());
    assert!(restarted.block(&b2.id()).is_some());
    assert_eq!(restarted.highest_qc().round, 1);
    assert_eq!(restarted.committed_height(), 0);
}

#[test]
fn a_voted_block_survives_a_timeout_and_a_restart() {
    // The vote for b2 may have made a certificate this replica never saw. Timing out the round
    // afterwards must not drop b2 from what it persists: if every voter forgot b2 across a
    // restart, no leader could extend its certificate and the network would stall (the
    // simulator found this with two voters crashing after their timeouts).
    let f = Fixture::new();
    let (mut r, _, _, b2, _) = f.voted_for_b2();
    let state = persisted(&r.handle(Event::Timeout { round: 2 }));
    assert!(state.blocks.iter().any(|b| b.id() == b2.id()), "{state:?}");
    let restarted = f.replica(0, Some(state));
    assert!(restarted.block(&b2.id()).is_some());
}

#[test]
fn a_lagging_replica_is_not_penalised_for_an_old_certificate() {
    let f = Fixture::new();
    let b1 = f.block(1, &f.genesis.1, 10);
    let qc1 = f.qc(&b1);
    // This replica committed block 1; validator 2 still carries the genesis certificate.
    let mut r = Consensus::new(
        Config::default(),
        f.keys[0].clone(),
        f.set.clone(),
        (b1, qc1),
        None,
    );
    r.start();
    let round = r.round();
    let actions = r.handle(msg(
        2,
        Message::Timeout(f.timeout(2, round, f.genesis.1.clone())),
    ));
    assert!(penalised(&actions).is_empty(), "{:?}", penalised(&actions));
    // A late proposal below the root is ignored too.
    let late = f.block(1, &f.genesis.1, 10);
    assert!(penalised(&r.handle(msg(1, Message::Proposal(late)))).is_empty());
}

#[test]
fn a_restart_commits_nothing_silently_and_the_next_certificate_commits_in_order() {
    // Found by the simulator: restoring the persisted chain and its highest QC used to commit
    // blocks inside `Consensus::new`, where no `Commit` action can be emitted, so the node
    // missed heights. Restoring must commit nothing; the next certificate commits, in order.
    let f = Fixture::new();
    let b1 = f.block(1, &f.genesis.1, 10);
    let qc1 = f.qc(&b1);
    let b2 = f.block(2, &qc1, 20);
    let qc2 = f.qc(&b2);
    let state = SafetyState {
        last_voted_round: 2,
        highest_qc_round: 1,
        highest_qc: Some(qc2.clone()),
        blocks: vec![b1.clone(), b2.clone()],
        ..SafetyState::default()
    };
    let mut r = f.replica(0, Some(state));
    assert_eq!(r.committed_height(), 0);
    r.start();
    let b3 = f.block(3, &qc2, 30);
    let actions = r.handle(msg(3, Message::Proposal(b3)));
    assert_eq!(committed_heights(&actions), vec![1]);
}

#[test]
fn a_proposal_naming_more_batches_than_allowed_is_refused() {
    let f = Fixture::new();
    let mut r = f.replica(0, None);
    r.start();
    let mut b = f.block(1, &f.genesis.1, 10);
    b.payload = (0..=Config::default().max_payload_digests)
        .map(|i| Digest([i as u8; 32]))
        .collect();
    let actions = r.handle(msg(1, Message::Proposal(b.sign(&f.keys[1]))));
    assert_eq!(penalised(&actions), vec!["oversized_payload"]);
    assert_eq!(votes_to_validate(&actions), 0);
}
