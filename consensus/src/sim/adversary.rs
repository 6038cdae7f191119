//! The simulator's Byzantine validators.
//!
//! - **classic**: equivocating leaders, leaders that fork from an old certificate, double
//!   voters, silent validators and senders of garbage bytes;
//! - **twins** (Bano et al., "Twins: BFT Systems Made Robust", OPODIS 2021): two honest
//!   instances share one key; the simulator partitions the honest validators between them and
//!   changes the partition over time, so equivocation arises from honest code paths;
//! - **forge**: an honest instance whose messages go out with mutated fields, correctly signed
//!   wherever a signature covers the field: rounds and heights far ahead or near `u64::MAX`,
//!   wrong heights in votes, certificates naming the root with fake rounds, certificates with
//!   duplicate, unknown or too few signers, timeouts with forged high QCs or TCs, proposals
//!   with past or future timestamps or oversized payloads, sync answers from another fork or
//!   another epoch, oversized and truncated encodings.

use crate::types::{timeout_digest, vote_digest, Block, Digest, Message, QuorumCert, TimeoutCert};
use crate::{Round, ValidatorIndex, SYNC_CHUNK};
use ed25519_dalek::{Signature, Signer, SigningKey};
use rand::{Rng, RngCore};

/// What a validator does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Behaviour {
    Honest,
    Silent,
    Equivocate,
    Fork,
    DoubleVote,
    Garbage,
    Twins,
    Forge,
}

impl Behaviour {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Behaviour::Honest => "honest",
            Behaviour::Silent => "silent",
            Behaviour::Equivocate => "equivocate",
            Behaviour::Fork => "fork",
            Behaviour::DoubleVote => "double-vote",
            Behaviour::Garbage => "garbage",
            Behaviour::Twins => "twins",
            Behaviour::Forge => "forge",
        }
    }
}

/// Which Byzantine behaviours a run draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adversary {
    /// Equivocate, fork, double-vote, silent, garbage.
    Classic,
    /// Two honest instances with one key.
    Twins,
    /// Correctly signed messages with forged or mutated fields.
    Forge,
    /// Any of the above.
    All,
}

impl Adversary {
    /// Parses `classic`, `twins`, `forge` or `all`.
    pub fn parse(s: &str) -> Option<Adversary> {
        match s {
            "classic" => Some(Adversary::Classic),
            "twins" => Some(Adversary::Twins),
            "forge" => Some(Adversary::Forge),
            "all" => Some(Adversary::All),
            _ => None,
        }
    }

    pub(crate) fn behaviours(self) -> &'static [Behaviour] {
        const CLASSIC: &[Behaviour] = &[
            Behaviour::Equivocate,
            Behaviour::Fork,
            Behaviour::DoubleVote,
            Behaviour::Silent,
            Behaviour::Garbage,
        ];
        const ALL: &[Behaviour] = &[
            Behaviour::Equivocate,
            Behaviour::Fork,
            Behaviour::DoubleVote,
            Behaviour::Silent,
            Behaviour::Garbage,
            Behaviour::Twins,
            Behaviour::Forge,
            Behaviour::Twins,
            Behaviour::Forge,
        ];
        match self {
            Adversary::Classic => CLASSIC,
            Adversary::Twins => &[Behaviour::Twins],
            Adversary::Forge => &[Behaviour::Forge],
            Adversary::All => ALL,
        }
    }
}

/// The largest round a validator leads that is at most `below`.
fn led_round_below(below: Round, me: ValidatorIndex, n: usize) -> Round {
    let n = n as u64;
    let base = below - below % n;
    base.checked_add(u64::from(me))
        .filter(|r| *r <= below)
        .unwrap_or_else(|| base.saturating_sub(n).saturating_add(u64::from(me)))
}

/// A certificate naming `qc`'s block with a forged round and no signatures.
fn forged_qc(qc: &QuorumCert, round: Round) -> QuorumCert {
    QuorumCert {
        round,
        signatures: Vec::new(),
        ..qc.clone()
    }
}

/// One signature, repeated or re-indexed: the signer list a forged certificate carries.
fn mangle_signers(qc: &QuorumCert, how: u32, n: usize) -> QuorumCert {
    let mut qc = qc.clone();
    match (how, qc.signatures.first().copied()) {
        (0, Some(first)) => qc.signatures.push(first),
        (1, Some((_, sig))) => qc.signatures.push((n as ValidatorIndex + 3, sig)),
        (2, _) => qc.signatures.truncate(1),
        (_, Some((_, sig))) => {
            // More entries than validators.
            qc.signatures = (0..=n as ValidatorIndex).map(|i| (i, sig)).collect();
        }
        _ => {}
    }
    qc
}

/// A timeout certificate signed by the forger alone.
fn forged_tc(
    epoch: u64,
    round: Round,
    hqc: Round,
    me: ValidatorIndex,
    key: &SigningKey,
) -> TimeoutCert {
    let sig = key.sign(&timeout_digest(epoch, round, hqc).0);
    TimeoutCert {
        epoch,
        round,
        timeouts: vec![(me, hqc, sig)],
    }
}

/// A correctly signed, mutated copy of an outgoing message of validator `me`.
pub(crate) fn forge(
    bytes: &[u8],
    me: ValidatorIndex,
    n: usize,
    key: &SigningKey,
    rng: &mut impl RngCore,
) -> Vec<u8> {
    let Ok(msg) = Message::from_bytes(bytes, usize::MAX) else {
        return bytes.to_vec();
    };
    let choice = rng.gen_range(0..12u32);
    let forged = match msg {
        Message::Proposal(mut b) => {
            match choice {
                0 => {
                    // Self-consistent: a round the forger leads, justified by a forged QC of
                    // the round before, naming the certified block.
                    b.round = led_round_below(u64::MAX - 1, me, n);
                    b.justify = forged_qc(&b.justify, b.round - 1);
                    b.timeout_cert = None;
                }
                1 => b.justify = forged_qc(&b.justify, b.round.saturating_sub(1)),
                2 | 3 => {
                    b.justify = mangle_signers(&b.justify, choice - 2 + rng.gen_range(0..2), n)
                }
                4 => b.round = led_round_below(u64::MAX, me, n),
                5 => b.round = led_round_below(b.round.saturating_add(10_000), me, n),
                6 => b.height = b.height.wrapping_add(1),
                7 => b.timestamp_ms = 0,
                8 => b.timestamp_ms = u64::MAX,
                9 => b.payload = (0..1000u32).map(|i| Digest([i as u8; 32])).collect(),
                10 => {
                    let round = b.round.saturating_sub(1);
                    let hqc = if rng.gen_bool(0.5) { u64::MAX - 2 } else { 0 };
                    b.timeout_cert = Some(forged_tc(b.epoch, round, hqc, me, key));
                }
                _ => b.epoch = b.epoch.wrapping_add(1),
            }
            Message::Proposal(b.sign(key))
        }
        Message::Vote(mut v) => {
            match choice % 6 {
                0 | 1 => v.height = v.height.wrapping_add(1),
                2 => v.round = u64::MAX - 1,
                3 => v.round = v.round.saturating_add(10_000),
                4 => {
                    let mut d = [0u8; 32];
                    rng.fill_bytes(&mut d);
                    v.block = Digest(d);
                }
                _ => {
                    // Impersonation: another voter's index with this key's signature.
                    v.voter = (v.voter + 1) % n as ValidatorIndex;
                }
            }
            v.signature = key.sign(&vote_digest(v.epoch, v.round, v.height, &v.block).0);
            Message::Vote(v)
        }
        Message::Timeout(mut t) => {
            match choice % 6 {
                0 => {
                    t.round = u64::MAX - 1;
                    t.high_qc = forged_qc(&t.high_qc, u64::MAX - 2);
                }
                1 => t.high_qc = forged_qc(&t.high_qc, t.round.saturating_sub(1)),
                2 => t.round = u64::MAX - 1,
                3 => t.round = t.round.saturating_add(1_000),
                4 => {
                    let tc_round = t.round.saturating_sub(1);
                    t.entered_by = Some(forged_tc(t.epoch, tc_round, 0, me, key));
                }
                _ => t.high_qc = mangle_signers(&t.high_qc, rng.gen_range(0..4), n),
            }
            t.signature = key.sign(&timeout_digest(t.epoch, t.round, t.high_qc.round).0);
            Message::Timeout(t)
        }
        Message::Certificates(mut c) => {
            match choice % 4 {
                0 => c.high_qc = forged_qc(&c.high_qc, u64::MAX - 2),
                1 => c.high_qc = mangle_signers(&c.high_qc, rng.gen_range(0..4), n),
                2 => {
                    let round = c.high_qc.round.saturating_add(1_000);
                    c.last_tc = Some(forged_tc(c.high_qc.epoch, round, 0, me, key));
                }
                _ => c.high_qc.epoch = c.high_qc.epoch.wrapping_add(1),
            }
            Message::Certificates(c)
        }
    };
    let mut out = forged.to_bytes();
    match rng.gen_range(0..10) {
        // Truncated encoding.
        0 if !out.is_empty() => out.truncate(rng.gen_range(0..out.len())),
        // Trailing bytes.
        1 => out.push(0),
        _ => {}
    }
    out
}

/// A forged answer to a block request: another fork, another epoch, forged certificates,
/// or more blocks than anyone asks for.
pub(crate) fn forge_sync(
    mut blocks: Vec<Block>,
    key: &SigningKey,
    rng: &mut impl RngCore,
) -> Vec<Block> {
    if blocks.is_empty() {
        return blocks;
    }
    let k = rng.gen_range(0..blocks.len());
    match rng.gen_range(0..5) {
        0 => {
            // A fork: one block's payload changed and re-signed (the signature then only
            // checks if the forger was its author), its descendants re-linked to it.
            let mut prev: Option<Digest> = None;
            for b in blocks.iter_mut().skip(k) {
                if let Some(p) = prev {
                    b.parent = p;
                    b.justify = forged_qc(&b.justify, b.justify.round);
                    b.justify.block = p;
                } else {
                    b.payload.push(Digest([0xF0; 32]));
                }
                *b = b.clone().sign(key);
                prev = Some(b.id());
            }
        }
        1 => {
            blocks[k].justify = forged_qc(&blocks[k].justify, u64::MAX - 2);
            blocks[k] = blocks[k].clone().sign(key);
        }
        2 => {
            let first = blocks[0].clone();
            blocks = std::iter::repeat_n(first, 2 * SYNC_CHUNK as usize).collect();
        }
        3 => {
            blocks[k].epoch = blocks[k].epoch.wrapping_add(1);
            blocks[k] = blocks[k].clone().sign(key);
        }
        _ => {
            blocks[k].signature = Signature::from_bytes(&[7; 64]);
        }
    }
    blocks
}
