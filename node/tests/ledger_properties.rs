//! Properties of the ledger over random transaction sequences: supply conservation, no negative
//! balance, rejected transactions change nothing, and deterministic replay.

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use std::collections::BTreeMap;
use tally_ledger::codec;
use tally_ledger::genesis::{Genesis, GenesisAccount, GenesisAsset, GenesisValidator};
use tally_ledger::primitives::{AccountId, AssetCode};
use tally_ledger::tx::{Payload, Transaction, Transfer, VerifiedTransaction};
use tally_ledger::{
    asset_key, execute_block, AccountState, AssetInfo, BlockContext, Event, Outcome, State,
};
use tally_node::chain::{BlockProposal, Chain};
use tally_node::keys::account_id;
use tally_node::tools::testnet_compliance::SimpleCompliance;

const ACCOUNTS: usize = 4;
const CHAIN: &str = "prop";

fn key(i: usize) -> SigningKey {
    SigningKey::from_bytes(&[i as u8 + 1; 32])
}

fn asset(i: usize) -> AssetCode {
    AssetCode::new(["USD", "EUR"][i % 2]).unwrap()
}

/// Accounts 0..4 hold balances; account 0 issues USD and account 1 issues EUR.
fn genesis() -> Genesis {
    let accounts: Vec<_> = (0..ACCOUNTS).map(|i| account_id(&key(i))).collect();
    let compliance = SimpleCompliance::new(account_id(&key(60)), &accounts, &[asset(0), asset(1)]);
    Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: 1_000,
        validators: vec![GenesisValidator {
            name: "v".into(),
            public_key: account_id(&key(50)),
            p2p_addr: "/ip4/127.0.0.1/tcp/1".into(),
            api_addr: "127.0.0.1:1".into(),
        }],
        members: vec![],
        assets: (0..2)
            .map(|i| GenesisAsset {
                code: asset(i),
                decimals: 6,
                issuer: account_id(&key(i)),
            })
            .collect(),
        accounts: (0..ACCOUNTS)
            .map(|i| GenesisAccount {
                id: account_id(&key(i)),
                balances: [(asset(0), 1_000), (asset(1), u64::MAX / 8)].into(),
            })
            .collect(),
        roles: compliance.roles,
        identities: compliance.identities,
        sanctioned_identities: Default::default(),
        rules: compliance.rules,
        params: Default::default(),
    }
}

/// One random action: who signs, what, and whether its sequence/expiry are right.
#[derive(Debug, Clone)]
enum Op {
    Transfer {
        from: usize,
        to: usize,
        asset: usize,
        amount: u64,
    },
    Issue {
        by: usize,
        to: usize,
        asset: usize,
        amount: u64,
    },
    Redeem {
        by: usize,
        asset: usize,
        amount: u64,
    },
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![1u64..2_000, Just(u64::MAX), Just(u64::MAX / 2)]
}

fn op() -> impl Strategy<Value = (Op, bool, bool)> {
    let who = 0..ACCOUNTS;
    let action = prop_oneof![
        4 => (who.clone(), who.clone(), 0..2usize, amount())
            .prop_map(|(from, to, asset, amount)| Op::Transfer { from, to, asset, amount }),
        1 => (who.clone(), who.clone(), 0..2usize, amount())
            .prop_map(|(by, to, asset, amount)| Op::Issue { by, to, asset, amount }),
        1 => (who, 0..2usize, amount()).prop_map(|(by, asset, amount)| Op::Redeem { by, asset, amount }),
    ];
    // (op, sequence is right, not expired)
    (
        action,
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.95),
    )
}

/// Signs and verifies the ops, tracking each account's next sequence optimistically.
fn build(
    ops: &[(Op, bool, bool)],
    seqs: &mut BTreeMap<usize, u64>,
    height: u64,
) -> Vec<VerifiedTransaction> {
    ops.iter()
        .map(|(op, seq_ok, fresh)| {
            let (signer, payload) = match op.clone() {
                Op::Transfer {
                    from,
                    to,
                    asset: a,
                    amount,
                } => (
                    from,
                    Payload::Transfer(Transfer {
                        to: account_id(&key(to)),
                        asset: asset(a),
                        amount,
                        memo: None,
                        travel: None,
                    }),
                ),
                Op::Issue {
                    by,
                    to,
                    asset: a,
                    amount,
                } => (
                    by,
                    Payload::Issue {
                        to: account_id(&key(to)),
                        asset: asset(a),
                        amount,
                    },
                ),
                Op::Redeem {
                    by,
                    asset: a,
                    amount,
                } => (
                    by,
                    Payload::Redeem {
                        asset: asset(a),
                        amount,
                    },
                ),
            };
            let next = seqs.entry(signer).or_insert(0);
            let sequence = if *seq_ok { *next } else { *next + 7 };
            let tx = Transaction {
                chain_id: CHAIN.into(),
                sender: account_id(&key(signer)),
                sequence,
                expiry_height: if *fresh { height + 10 } else { height - 1 },
                payload,
            };
            tx.sign(&key(signer))
                .verify(CHAIN)
                .expect("well-formed test transaction")
        })
        .collect()
}

fn balances(state: &State) -> BTreeMap<AccountId, AccountState> {
    state
        .scan_prefix(b"acct/")
        .map(|(k, v)| {
            let mut id = [0u8; 32];
            id.copy_from_slice(&k[5..]);
            (AccountId(id), codec::decode(v, 1 << 20).unwrap())
        })
        .collect()
}

fn supply(state: &State, a: &AssetCode) -> u64 {
    let info: AssetInfo = codec::decode(state.get_raw(&asset_key(a)).unwrap(), 1 << 20).unwrap();
    info.supply
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn supply_moves_only_by_issue_and_redeem_and_rejections_change_nothing(
        blocks in prop::collection::vec(prop::collection::vec(op(), 1..12), 1..6)
    ) {
        let g = genesis();
        let mut state = g.initial_state().unwrap();
        let mut expected: BTreeMap<AssetCode, u128> =
            (0..2).map(|i| (asset(i), supply(&state, &asset(i)) as u128)).collect();
        let mut seqs = BTreeMap::new();
        for (b, ops) in blocks.iter().enumerate() {
            let height = b as u64 + 1;
            let ctx = BlockContext { height, timestamp_ms: 2_000 + height };
            let txs = build(ops, &mut seqs, height);
            // Each transaction alone: a rejection leaves the root unchanged.
            for tx in &txs {
                let out = execute_block(&state, &ctx, std::slice::from_ref(tx)).unwrap();
                if out.receipts[0].outcome == Outcome::Rejected {
                    prop_assert!(out.writes.is_empty(), "rejected {:?} wrote state", out.receipts[0].code);
                }
            }
            let out = execute_block(&state, &ctx, &txs).unwrap();
            for r in &out.receipts {
                if r.outcome == Outcome::Rejected {
                    prop_assert!(r.events.is_empty());
                }
                for e in &r.events {
                    match e {
                        Event::Issued { asset, amount, .. } => *expected.get_mut(asset).unwrap() += *amount as u128,
                        Event::Redeemed { asset, amount } => *expected.get_mut(asset).unwrap() -= *amount as u128,
                        _ => {}
                    }
                }
            }
            state.apply(&out.writes);
            // Keep the optimistic sequence tracker honest: read back the real ones.
            for (i, acct) in (0..ACCOUNTS).map(|i| (i, balances(&state).get(&account_id(&key(i))).cloned())) {
                seqs.insert(i, acct.map_or(0, |a| a.sequence));
            }
            let accts = balances(&state);
            for i in 0..2 {
                let a = asset(i);
                let held: u128 = accts.values().map(|s| s.balance(&a) as u128).sum();
                prop_assert_eq!(held, expected[&a], "balances of {} drifted from issue/redeem", a);
                prop_assert_eq!(supply(&state, &a) as u128, expected[&a]);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn replaying_the_same_blocks_into_a_fresh_store_gives_the_same_roots(
        blocks in prop::collection::vec(prop::collection::vec(op(), 1..10), 1..5)
    ) {
        let g = genesis();
        let run = |dir: &std::path::Path| {
            let mut chain = Chain::open(dir, &g).unwrap();
            let mut seqs = BTreeMap::new();
            let mut headers = Vec::new();
            for (b, ops) in blocks.iter().enumerate() {
                let height = b as u64 + 1;
                let txs = build(ops, &mut seqs, height);
                let proposal = BlockProposal {
                    round: height,
                    proposer: account_id(&key(50)),
                    timestamp_ms: 2_000 + height,
                    batch_digests: vec![],
                    record: vec![height as u8],
                    record_id: [height as u8; 32],
                };
                headers.push(chain.commit(&proposal, &txs).unwrap().0);
                for i in 0..ACCOUNTS {
                    let s = balances(chain.state()).get(&account_id(&key(i))).map_or(0, |a| a.sequence);
                    seqs.insert(i, s);
                }
            }
            (headers, chain.state().root())
        };
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (ha, ra) = run(a.path());
        let (hb, rb) = run(b.path());
        prop_assert_eq!(ra, rb);
        prop_assert_eq!(&ha, &hb);
        // Reopening gives the committed state back.
        let reopened = Chain::open(a.path(), &g).unwrap();
        prop_assert_eq!(reopened.state().root(), ra);
        prop_assert_eq!(reopened.last_header(), ha.last());
    }
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = tally_ledger::tx::SignedTransaction::from_bytes(&bytes);
        let _ = codec::decode::<Transaction>(&bytes, 4096);
        let _ = codec::decode::<tally_ledger::block::BlockHeader>(&bytes, 4096);
        let _ = codec::decode::<Vec<tally_ledger::Receipt>>(&bytes, 4096);
    }

    #[test]
    fn transactions_round_trip(amount in 1u64.., seq in any::<u64>(), memo in proptest::option::of("[a-z ]{0,40}")) {
        let tx = Transaction {
            chain_id: CHAIN.into(),
            sender: account_id(&key(1)),
            sequence: seq,
            expiry_height: 5,
            payload: Payload::Transfer(Transfer { to: account_id(&key(2)), asset: asset(0), amount, memo, travel: None }),
        };
        let signed = tx.sign(&key(1));
        let back = tally_ledger::tx::SignedTransaction::from_bytes(&signed.to_bytes()).unwrap();
        prop_assert_eq!(back.verify(CHAIN).unwrap().tx, tx);
    }
}
