//! The pacemaker keeps honest replicas in the same round: a replica that forms a timeout
//! certificate tells everyone, one still in a round the others left is told how they moved on,
//! and replicas in the same round with the same highest certificate arm the same timer. Each
//! test failed before the rule it names: with one validator silent every honest vote counts,
//! and a replica left a round behind, or with a shorter timer, cost the network its liveness.

use crate::byzantine_tests::{msg, penalised, Fixture};
use crate::types::timeout_digest;
use crate::{
    Action, Block, Certificates, Consensus, Event, Message, QuorumCert, Round, TimeoutCert,
};
use ed25519_dalek::Signer;

impl Fixture {
    /// A TC for `round` signed by validators 0, 1, 2, each reporting `high_qc_round`.
    fn tc(&self, round: Round, high_qc_round: Round) -> TimeoutCert {
        TimeoutCert {
            epoch: 0,
            round,
            timeouts: (0..3u16)
                .map(|i| {
                    let digest = timeout_digest(0, round, high_qc_round);
                    (i, high_qc_round, self.keys[usize::from(i)].sign(&digest.0))
                })
                .collect(),
        }
    }

    fn certificates(&self, tc: Option<TimeoutCert>) -> Message {
        Message::Certificates(Certificates {
            high_qc: self.genesis.1.clone(),
            last_tc: tc,
        })
    }
}

/// The certificates sent in `actions`: (to whom, or `None` for everyone; the TC's round).
fn certificates_sent(actions: &[Action]) -> Vec<(Option<u16>, Option<Round>)> {
    let decode = |bytes: &[u8]| match Message::from_bytes(bytes, 1 << 20) {
        Ok(Message::Certificates(c)) => Some(c.last_tc.map(|tc| tc.round)),
        _ => None,
    };
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, bytes } => decode(bytes).map(|tc| (Some(*to), tc)),
            Action::Broadcast { bytes } => decode(bytes).map(|tc| (None, tc)),
            _ => None,
        })
        .collect()
}

fn timer(actions: &[Action]) -> Option<(Round, u64)> {
    actions.iter().rev().find_map(|a| match a {
        Action::SetTimer { round, after_ms } => Some((*round, *after_ms)),
        _ => None,
    })
}

/// Replica 0 after it gave up round 1 and formed the TC from validators 1 and 2's timeouts,
/// and the actions of the step that formed it.
fn replica_past_round_one(f: &Fixture) -> (Consensus, Vec<Action>) {
    let mut r = f.replica(0, None);
    r.start();
    r.handle(Event::Timeout { round: 1 });
    let root = f.genesis.1.clone();
    r.handle(msg(1, Message::Timeout(f.timeout(1, 1, root.clone()))));
    let actions = r.handle(msg(2, Message::Timeout(f.timeout(2, 1, root))));
    (r, actions)
}

#[test]
fn a_replica_that_forms_a_timeout_certificate_tells_everyone() {
    let f = Fixture::new();
    let (r, actions) = replica_past_round_one(&f);
    assert_eq!(r.round(), 2);
    assert_eq!(certificates_sent(&actions), vec![(None, Some(1))]);
}

#[test]
fn a_validator_still_in_a_left_round_is_told_once_per_round_how_the_others_moved_on() {
    let f = Fixture::new();
    let (mut r, _) = replica_past_round_one(&f);
    let late = || msg(1, Message::Timeout(f.timeout(1, 1, f.genesis.1.clone())));
    // Validator 1 re-sends its timeout for round 1: it never saw the TC.
    assert_eq!(
        certificates_sent(&r.handle(late())),
        vec![(Some(1), Some(1))]
    );
    // Repeating it gets no second answer while this replica stays in round 2.
    assert!(certificates_sent(&r.handle(late())).is_empty());
    // A validator in the current round is not behind: no answer.
    let current = msg(2, Message::Timeout(f.timeout(2, 2, f.genesis.1.clone())));
    assert!(certificates_sent(&r.handle(current)).is_empty());
}

#[test]
fn a_lagging_validator_is_handed_the_proposal_of_the_round_it_missed_and_can_vote_in_it() {
    let f = Fixture::new();
    let (mut r, _) = replica_past_round_one(&f);
    // The leader of round 2 proposes after the TC of round 1; replica 0 has the proposal.
    let mut b = f.block(2, &f.genesis.1, 20);
    b.timeout_cert = Some(f.tc(1, 0));
    let b = b.sign(&f.keys[usize::from(f.set.leader(2))]);
    r.handle(msg(f.set.leader(2), Message::Proposal(b.clone())));
    // Validator 1 missed both the TC and the proposal: it re-sends its timeout for round 1.
    let late = msg(1, Message::Timeout(f.timeout(1, 1, f.genesis.1.clone())));
    let answer = r.handle(late);
    let forwarded: Vec<Message> = answer
        .iter()
        .filter_map(|a| match a {
            Action::Send { to: 1, bytes } => Message::from_bytes(bytes, 1 << 20).ok(),
            _ => None,
        })
        .filter(|m| matches!(m, Message::Proposal(_)))
        .collect();
    assert_eq!(forwarded.len(), 1, "{answer:?}");
    // Replica 1 takes both from replica 0 (not the proposal's author) and asks to vote.
    let mut lagging = f.replica(1, None);
    lagging.start();
    lagging.handle(msg(0, f.certificates(Some(f.tc(1, 0)))));
    let actions = lagging.handle(msg(0, forwarded[0].clone()));
    assert_eq!(lagging.round(), 2);
    assert!(penalised(&actions).is_empty(), "{actions:?}");
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::ValidatePayload { round: 2, .. })),
        "{actions:?}"
    );
}

/// A proposal relayed by a validator other than its author is checked as the author's: a
/// Byzantine relay that mutates a field (here the timestamp, the block keeping the leader's
/// signature) is penalised and gets no vote, and the round stays where it was.
#[test]
fn a_mutated_proposal_relayed_by_another_validator_is_refused_and_its_relay_penalised() {
    let f = Fixture::new();
    let mut lagging = f.replica(1, None);
    lagging.start();
    lagging.handle(msg(0, f.certificates(Some(f.tc(1, 0)))));
    let mut b = f.block(2, &f.genesis.1, 20);
    b.timeout_cert = Some(f.tc(1, 0));
    let mut b = b.sign(&f.keys[usize::from(f.set.leader(2))]);
    b.timestamp_ms = b.timestamp_ms.saturating_add(1);
    let actions = lagging.handle(msg(3, Message::Proposal(b)));
    assert_eq!(penalised(&actions), vec!["bad_signature"]);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::ValidatePayload { .. })),
        "{actions:?}"
    );
    assert_eq!(lagging.round(), 2);
}

#[test]
fn a_lagging_replica_enters_the_next_round_from_the_certificates() {
    let f = Fixture::new();
    let mut r = f.replica(1, None);
    r.start();
    assert_eq!(r.round(), 1);
    r.handle(msg(0, f.certificates(Some(f.tc(1, 0)))));
    assert_eq!(r.round(), 2);
}

#[test]
fn forged_certificates_move_nothing_and_are_penalised() {
    let f = Fixture::new();
    let mut r = f.replica(1, None);
    r.start();
    // Two signers are not a quorum of four.
    let mut short = f.tc(1, 0);
    short.timeouts.pop();
    let actions = r.handle(msg(3, f.certificates(Some(short))));
    assert_eq!(penalised(&actions), vec!["bad_certificates"]);
    // A TC whose signatures are for another round.
    let mut moved = f.tc(1, 0);
    moved.round = 1_000;
    let actions = r.handle(msg(3, f.certificates(Some(moved))));
    assert_eq!(penalised(&actions), vec!["bad_certificates"]);
    // The root certificate with a forged round.
    let forged = Message::Certificates(Certificates {
        high_qc: QuorumCert {
            round: u64::MAX - 2,
            signatures: Vec::new(),
            ..f.genesis.1.clone()
        },
        last_tc: None,
    });
    let actions = r.handle(msg(3, forged));
    assert_eq!(penalised(&actions), vec!["bad_certificates"]);
    assert_eq!(r.round(), 1);
}

#[test]
fn replicas_with_different_histories_arm_the_same_timer_for_the_same_round() {
    let f = Fixture::new();
    // Replica 0 saw the proposals of rounds 1 and 2 and gave up both rounds itself.
    let mut seen = f.replica(0, None);
    seen.start();
    let mut entered = Vec::new();
    for round in 1..=2 {
        let mut b = f.block(round, &f.genesis.1, round * 10);
        b.timeout_cert = (round > 1).then(|| f.tc(round - 1, 0));
        let author = f.set.leader(round);
        let b = b.sign(&f.keys[usize::from(author)]);
        seen.handle(msg(author, Message::Proposal(b)));
        seen.handle(Event::Timeout { round });
        for by in [1, 2] {
            let t = f.timeout(by, round, f.genesis.1.clone());
            entered = seen.handle(msg(by, Message::Timeout(t)));
        }
    }
    // Replica 1 was down, came back, and learned both TCs from a peer.
    let mut restarted = f.replica(1, None);
    restarted.start();
    restarted.handle(msg(0, f.certificates(Some(f.tc(1, 0)))));
    let actions = restarted.handle(msg(0, f.certificates(Some(f.tc(2, 0)))));
    assert_eq!((seen.round(), restarted.round()), (3, 3));
    // Two failed rounds since the highest QC (genesis): the base timer doubled once, for both.
    let base = crate::Config::default().base_timeout_ms;
    assert_eq!(timer(&actions), Some((3, base * 2)));
    assert_eq!(timer(&entered), Some((3, base * 2)));
}

/// The reason lists the node turns into metrics are the reasons the code gives: every literal
/// reason in consensus.rs is listed, and every listed reason occurs.
#[test]
fn the_published_reason_lists_are_the_reasons_the_code_gives() {
    use std::collections::BTreeSet;
    let source = include_str!("consensus.rs");
    let literals = |prefix: &str| -> BTreeSet<String> {
        source
            .split(prefix)
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_owned)
            .collect()
    };
    let mut penalised = literals("drop_message(from, \"");
    penalised.extend(literals("return Err(\""));
    let ignored = literals("ignore(\"");
    let set = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(set(crate::PENALTY_REASONS), penalised);
    assert_eq!(set(crate::IGNORE_REASONS), ignored);
}

/// The leader of round 2 forms QC(b1) from the votes of the other three before b1 itself
/// arrives (votes and proposals travel separately): it enters round 2 unable to propose, and
/// proposes as soon as b1 arrives, instead of letting its round time out.
#[test]
fn a_leader_that_got_the_certificate_before_the_block_proposes_when_the_block_arrives() {
    let f = Fixture::new();
    let leader = f.set.leader(2);
    let mut r = f.replica(usize::from(leader), None);
    r.start();
    let b1 = f.block(1, &f.genesis.1, 10);
    let mut actions = Vec::new();
    for voter in (0..4u16).filter(|v| *v != leader) {
        let vote = f.vote(voter, 1, b1.height, b1.id());
        actions.extend(r.handle(msg(voter, Message::Vote(vote))));
    }
    assert_eq!(r.round(), 2, "the QC of round 1 moves the leader on");
    let asked = |actions: &[Action]| {
        actions
            .iter()
            .any(|a| matches!(a, Action::RequestPayload { round: 2, .. }))
    };
    assert!(
        !asked(&actions),
        "no payload without the parent: {actions:?}"
    );
    let actions = r.handle(msg(f.set.leader(1), Message::Proposal(b1)));
    assert!(asked(&actions), "{actions:?}");
    assert!(penalised(&actions).is_empty(), "{actions:?}");
}

// ---- the idle heartbeat ------------------------------------------------------------------

const HEARTBEAT: u64 = 1000;
const MAX_HEARTBEAT: u64 = 8000;

/// Replica `i` with the idle heartbeat on, started.
fn heartbeat_replica(f: &Fixture, i: usize) -> Consensus {
    heartbeat_replica_and_start(f, i).0
}

/// Replica `i` with the idle heartbeat on, and the actions of its start.
fn heartbeat_replica_and_start(f: &Fixture, i: usize) -> (Consensus, Vec<Action>) {
    let config = crate::Config {
        heartbeat_ms: HEARTBEAT,
        max_heartbeat_ms: MAX_HEARTBEAT,
        ..crate::Config::default()
    };
    let mut r = f.replica_with(config, i, None);
    let started = r.start();
    (r, started)
}

/// Block `round` on `justify`, carrying a batch or not, signed by its leader.
fn chain_block(f: &Fixture, round: Round, justify: &QuorumCert, with_payload: bool) -> Block {
    let mut b = f.block(round, justify, round * 10);
    if !with_payload {
        b.payload.clear();
        let key = &f.keys[usize::from(b.author)];
        b = b.sign(key);
    }
    b
}

/// Feeds replica `r` the proposals of rounds 1..=n in a row, block k carrying a batch iff
/// `with_payload(k)`; returns the actions of each proposal's step (the round it enters is the
/// round of that proposal: its QC moves the replica on).
fn feed_chain(
    f: &Fixture,
    r: &mut Consensus,
    n: Round,
    with_payload: impl Fn(Round) -> bool,
) -> Vec<Vec<Action>> {
    let mut justify = f.genesis.1.clone();
    let mut steps = Vec::new();
    for round in 1..=n {
        let b = chain_block(f, round, &justify, with_payload(round));
        steps.push(r.handle(msg(b.author, Message::Proposal(b.clone()))));
        justify = f.qc(&b);
    }
    steps
}

fn base() -> u64 {
    crate::Config::default().base_timeout_ms
}

fn wait_asked(actions: &[Action]) -> Option<u64> {
    actions.iter().find_map(|a| match a {
        Action::RequestPayload { wait_ms, .. } => Some(*wait_ms),
        _ => None,
    })
}

#[test]
fn an_idle_leader_waits_a_heartbeat_that_doubles_with_each_empty_block_up_to_the_cap() {
    let f = Fixture::new();
    // Round k is entered on the QC of block k - 1; its leader counts the empty blocks in a
    // row ending there (the genesis included) and waits 1, 2, 4, 8 s, then the cap.
    let mut waits = Vec::new();
    for round in 1..=5u64 {
        let (mut r, started) = heartbeat_replica_and_start(&f, usize::from(f.set.leader(round)));
        // Block `round`'s proposal carries QC(round - 1): its step enters the round.
        let steps = feed_chain(&f, &mut r, round, |_| false);
        let entered = if round == 1 {
            &started
        } else {
            &steps[steps.len() - 1]
        };
        waits.push(wait_asked(entered));
    }
    assert_eq!(
        waits,
        [1000, 2000, 4000, 8000, 8000].map(Some).to_vec(),
        "{waits:?}"
    );
}

#[test]
fn every_replica_allows_the_longest_idle_wait_in_a_quiet_round_and_none_in_a_busy_one() {
    let f = Fixture::new();
    let mut r = heartbeat_replica(&f, 0);
    // Block 1 carries a batch; 2, 3 and 4 are empty.
    let steps = feed_chain(&f, &mut r, 5, |k| k == 1);
    let timers: Vec<Option<(Round, u64)>> = steps.iter().map(|a| timer(a)).collect();
    assert_eq!(
        timers[1..],
        [
            // On QC(b1): b1 commits only once its child is certified.
            Some((2, base())),
            // On QC(b2), which commits b1 at every replica (votes go to all): quiet. The
            // allowance is the cap whatever this replica counted: a leader that counted more
            // empty blocks waits longer, and must not be timed out.
            Some((3, base() + MAX_HEARTBEAT)),
            Some((4, base() + MAX_HEARTBEAT)),
            Some((5, base() + MAX_HEARTBEAT)),
        ]
    );
}

/// A replica that formed the QC from votes before the block arrived cannot tell whether the
/// round is quiet: it allows for the wait rather than time out an honest leader.
#[test]
fn a_replica_without_the_certified_block_allows_for_the_idle_wait() {
    let f = Fixture::new();
    let mut r = heartbeat_replica(&f, 0);
    let b1 = chain_block(&f, 1, &f.genesis.1, true);
    let mut actions = Vec::new();
    for voter in 1..4u16 {
        let vote = f.vote(voter, 1, b1.height, b1.id());
        actions.extend(r.handle(msg(voter, Message::Vote(vote))));
    }
    assert_eq!(r.round(), 2);
    assert_eq!(timer(&actions), Some((2, base() + MAX_HEARTBEAT)));
}

/// After a failed round the chain must commit again: the leader of the round entered by the
/// timeout certificate proposes at once, and so does the next (its parent's parent is not
/// committed yet).
#[test]
fn after_a_timeout_certificate_the_leaders_do_not_wait() {
    let f = Fixture::new();
    let leader = usize::from(f.set.leader(2));
    let mut r = heartbeat_replica(&f, leader);
    r.handle(Event::Timeout { round: 1 });
    let mut entered = Vec::new();
    for by in (0..4u16).filter(|v| usize::from(*v) != leader).take(2) {
        let t = f.timeout(by, 1, f.genesis.1.clone());
        entered = r.handle(msg(by, Message::Timeout(t)));
    }
    assert_eq!(r.round(), 2);
    assert_eq!(wait_asked(&entered), Some(0), "{entered:?}");
}

#[test]
fn the_leader_of_a_quiet_round_may_wait_for_a_batch_and_a_busy_one_may_not() {
    let f = Fixture::new();
    let leader = usize::from(f.set.leader(4));
    let mut quiet = heartbeat_replica(&f, leader);
    let steps = feed_chain(&f, &mut quiet, 4, |_| false);
    assert_eq!(wait_asked(&steps[3]), Some(MAX_HEARTBEAT));
    let mut busy = heartbeat_replica(&f, leader);
    let steps = feed_chain(&f, &mut busy, 4, |k| k == 3);
    assert_eq!(wait_asked(&steps[3]), Some(0));
}

#[test]
fn a_ready_batch_cuts_a_quiet_rounds_timer_to_the_failure_timeout_once() {
    let f = Fixture::new();
    let shortened = |actions: &[Action]| {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ShortenTimer { round, after_ms } => Some((*round, *after_ms)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let mut quiet = heartbeat_replica(&f, 0);
    feed_chain(&f, &mut quiet, 4, |_| false);
    assert_eq!(quiet.round(), 4);
    assert_eq!(
        shortened(&quiet.handle(Event::PayloadReady)),
        vec![(4, base())]
    );
    assert!(shortened(&quiet.handle(Event::PayloadReady)).is_empty());
    // A round without an idle allowance has nothing to cut.
    let mut busy = heartbeat_replica(&f, 0);
    feed_chain(&f, &mut busy, 4, |k| k == 3);
    assert!(shortened(&busy.handle(Event::PayloadReady)).is_empty());
}
