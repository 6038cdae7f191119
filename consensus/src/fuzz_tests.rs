//! Structure-aware fuzzing (proptest): messages with arbitrary fields, correctly signed by one
//! Byzantine validator, and mutated encodings of valid messages, fed to an honest replica. No
//! input may panic it, and one validator alone can never move it past the rounds its
//! certificates justify. `PROPTEST_CASES` scales the run (the long suite sets it to millions).

use crate::sim::mutate_bytes;
use crate::types::{timeout_digest, vote_digest};
use crate::{
    Block, Config, Consensus, Digest, EpochProof, Event, Message, QuorumCert, SafetyState, Timeout,
    TimeoutCert, ValidatorSet, Vote,
};
use ed25519_dalek::{Signature, Signer, SigningKey};
use proptest::prelude::*;

const BYZANTINE: u16 = 3;

fn keys() -> Vec<SigningKey> {
    (0..4u8)
        .map(|i| SigningKey::from_bytes(&[i + 1; 32]))
        .collect()
}

fn replica() -> (Consensus, ValidatorSet, QuorumCert) {
    let keys = keys();
    let set = ValidatorSet::new(
        0,
        keys.iter().map(|k| k.verifying_key().to_bytes()).collect(),
    )
    .expect("set");
    let genesis = Block::genesis(&set);
    let qc = genesis.1.clone();
    let mut c = Consensus::new(
        Config::default(),
        keys[0].clone(),
        set.clone(),
        genesis,
        None,
    );
    c.start();
    (c, set, qc)
}

/// Numbers a forger likes: small, near the current round, near the end of u64.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..8,
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(u64::MAX - 2),
        (u64::MAX - 16)..=u64::MAX,
        any::<u64>(),
    ]
}

fn signer_list() -> impl Strategy<Value = Vec<(u16, Signature)>> {
    prop::collection::vec(
        (prop_oneof![0u16..6, any::<u16>()], any::<[u8; 32]>()).prop_map(|(i, b)| {
            let sig = SigningKey::from_bytes(&b).sign(b"x");
            (i, sig)
        }),
        0..7,
    )
}

fn qc(root: QuorumCert) -> impl Strategy<Value = QuorumCert> {
    (number(), number(), number(), any::<bool>(), signer_list()).prop_map(
        move |(epoch, round, height, keep_block, signatures)| QuorumCert {
            epoch: epoch % 3,
            round,
            height,
            block: if keep_block {
                root.block
            } else {
                Digest([round as u8; 32])
            },
            signatures,
        },
    )
}

fn tc() -> impl Strategy<Value = TimeoutCert> {
    (number(), prop::collection::vec((0u16..6, number()), 0..7)).prop_map(|(round, entries)| {
        let key = &keys()[usize::from(BYZANTINE)];
        TimeoutCert {
            epoch: 0,
            round,
            timeouts: entries
                .into_iter()
                .map(|(i, h)| (i, h, key.sign(&timeout_digest(0, round, h).0)))
                .collect(),
        }
    })
}

fn message(root: QuorumCert) -> impl Strategy<Value = Message> {
    let key = keys()[usize::from(BYZANTINE)].clone();
    let (k1, k2, k3) = (key.clone(), key.clone(), key);
    prop_oneof![
        (
            number(),
            number(),
            qc(root.clone()),
            prop::option::of(tc()),
            number(),
            prop::collection::vec(any::<[u8; 32]>().prop_map(Digest), 0..80)
        )
            .prop_map(move |(round, height, justify, timeout_cert, ts, payload)| {
                let b = Block {
                    epoch: 0,
                    round,
                    height,
                    parent: justify.block,
                    justify,
                    timeout_cert,
                    author: BYZANTINE,
                    timestamp_ms: ts,
                    payload,
                    signature: Signature::from_bytes(&[0; 64]),
                };
                Message::Proposal(b.sign(&k1))
            }),
        (number(), number(), any::<[u8; 32]>()).prop_map(move |(round, height, block)| {
            let block = Digest(block);
            Message::Vote(Vote {
                epoch: 0,
                round,
                height,
                block,
                voter: BYZANTINE,
                signature: k2.sign(&vote_digest(0, round, height, &block).0),
            })
        }),
        (number(), qc(root), prop::option::of(tc())).prop_map(move |(round, high_qc, tc)| {
            Message::Timeout(Timeout {
                epoch: 0,
                round,
                signature: k3.sign(&timeout_digest(0, round, high_qc.round).0),
                high_qc,
                voter: BYZANTINE,
                entered_by: tc,
            })
        }),
    ]
}

proptest! {
    // Cases: proptest's default (256) or PROPTEST_CASES, which the long suite sets to millions.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Message::from_bytes(&bytes, 1 << 20);
        let _ = postcard::from_bytes::<SafetyState>(&bytes);
        let _ = postcard::from_bytes::<ValidatorSet>(&bytes);
    }

    #[test]
    fn forged_messages_from_one_validator_never_panic_or_move_a_replica(
        msgs in prop::collection::vec(message(Block::genesis(&replica().1).1), 1..8)
    ) {
        let (mut c, _, _) = replica();
        for m in msgs {
            c.handle(Event::Message { from: BYZANTINE, bytes: m.to_bytes() });
        }
        // No quorum behind any of it: the replica is where it started.
        prop_assert_eq!(c.round(), 1);
        prop_assert_eq!(c.highest_qc().round, 0);
        prop_assert_eq!(c.committed_height(), 0);
    }

    #[test]
    fn mutated_encodings_of_forged_messages_never_panic_a_replica(
        m in message(Block::genesis(&replica().1).1),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..6)
    ) {
        let (mut c, _, _) = replica();
        let bytes = mutate_bytes(m.to_bytes(), &edits);
        c.handle(Event::Message { from: BYZANTINE, bytes });
        prop_assert_eq!(c.highest_qc().round, 0);
    }

    #[test]
    fn forged_sync_answers_never_panic_or_commit(
        msgs in prop::collection::vec(message(Block::genesis(&replica().1).1), 0..6)
    ) {
        let (mut c, _, _) = replica();
        // As if the replica had asked the Byzantine validator for blocks.
        c.sync_peer = Some(BYZANTINE);
        let blocks: Vec<Block> = msgs.into_iter().filter_map(|m| match m {
            Message::Proposal(b) => Some(b),
            _ => None,
        }).collect();
        // Half the time the last block comes back as a claimed end of epoch.
        let proof = blocks.last().filter(|b| b.round % 2 == 0).map(|b| EpochProof {
            blocks: vec![b.clone()],
            qc: b.justify.clone(),
        });
        c.handle(Event::SyncResponse { from: BYZANTINE, blocks, proof });
        prop_assert_eq!(c.committed_height(), 0);
    }
}
