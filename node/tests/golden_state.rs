//! Consensus-relevant bytes do not move: a fixed genesis and a fixed sequence of blocks produce
//! the recorded state root and header hash. A change that alters them (encoding, hashing,
//! execution, genesis) changes what validators sign and breaks a running chain; if it is meant,
//! record the new values here and say why in the commit.

use ed25519_dalek::SigningKey;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use tally_ledger::block::BlockHeader;
use tally_ledger::primitives::AssetCode;
use tally_ledger::tx::{Payload, Transaction, Transfer, VerifiedTransaction};
use tally_ledger::{execute_block, BlockContext, BlockOutput};
use tally_node::keys;
use tally_node::storage::Store;
use tally_node::tools::testnet::{ReusedKeys, Testnet, TestnetSpec};

/// The state root after the last block. (Changed on purpose: conversion to the reference
/// asset for the compliance limits rounds up, against the sender, so the rolling usage recorded
/// for payments whose conversion is not exact moved; and when KYC providers gained a maximum
/// tier, kept with a table of providers in the state, and the demo genesis a tier-4 limit, a
/// GBP asset without a rate and two scenario accounts; and when KYC providers gained the
/// jurisdictions they may act in, which the demo provider's registry entry lists.)
const STATE_ROOT: &str = "fbb4a0539a84a570ae83aa0deda69f02639926c8d18a15ed9240097b139b885a";
/// The hash of the last header. (Changed on purpose: block 1 names the genesis header, the
/// block of height 0, as its parent instead of the zero hash; with the state root above; and
/// when receipts began to carry the rule-set version they were decided under, which changes the
/// receipt root; and with the state roots of the provider table and the providers'
/// jurisdictions above.)
const HEADER_HASH: &str = "686b370a7f0e7541334c116296685d6c730fb0fddc11c80652fc51f58ef6331d";

fn key(label: &str) -> SigningKey {
    SigningKey::from_bytes(&Sha256::digest(format!("tally/golden/{label}")).into())
}

fn network() -> Testnet {
    let spec = TestnetSpec {
        chain_id: "tally-golden".into(),
        accounts: 4,
        genesis_time_ms: 1_780_000_000_000,
        ..TestnetSpec::default()
    };
    // The names of the consortium keys, then every key derived from its name.
    let names = Testnet::generate(spec.clone()).expect("testnet").named_keys;
    let reuse = ReusedKeys {
        validators: (0..spec.validators)
            .map(|i| key(&format!("validator-{i}")))
            .collect(),
        issuers: ["USD", "EUR", "SGD"]
            .into_iter()
            .map(|c| {
                (
                    AssetCode::new(c).expect("code"),
                    key(&format!("issuer-{c}")),
                )
            })
            .collect(),
        accounts: (0..spec.accounts)
            .map(|i| key(&format!("account-{i}")))
            .collect(),
        named: names
            .keys()
            .map(|n| (n.clone(), key(n)))
            .collect::<BTreeMap<_, _>>(),
    };
    Testnet::generate_with(spec, Some(reuse)).expect("testnet")
}

fn transfer(
    net: &Testnet,
    from: usize,
    to: usize,
    seq: u64,
    asset: &str,
    amount: u64,
) -> VerifiedTransaction {
    let sender = &net.account_keys[from];
    Transaction {
        chain_id: net.genesis.chain_id.clone(),
        sender: keys::account_id(sender),
        sequence: seq,
        expiry_height: 100,
        payload: Payload::Transfer(Transfer {
            to: keys::account_id(&net.account_keys[to]),
            asset: AssetCode::new(asset).expect("code"),
            amount,
            memo: None,
            travel: None,
        }),
    }
    .sign(sender)
    .verify(&net.genesis.chain_id)
    .expect("valid transaction")
}

#[test]
fn a_fixed_genesis_and_block_sequence_give_the_recorded_root_and_header() {
    let net = network();
    let header = run_blocks(&net, &mut |_, _, _| {});
    assert_eq!(
        (
            hex::encode(header.state_root.0),
            hex::encode(header.hash().0)
        ),
        (STATE_ROOT.to_owned(), HEADER_HASH.to_owned()),
        "consensus-relevant bytes changed"
    );
}

/// The ledger reads state through a view: the node's store on disk serves execution exactly as
/// the in-memory state does, block after block (same writes, same receipts, same root).
#[test]
fn the_store_on_disk_serves_execution_like_the_state_in_memory() {
    let net = network();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let genesis = net.genesis.initial_state().expect("genesis state");
    store
        .init_genesis(
            net.genesis.hash(),
            &genesis,
            &net.genesis.header(genesis.root()),
        )
        .expect("genesis");
    let header = run_blocks(&net, &mut |header, txs, out| {
        let ctx = BlockContext {
            height: header.height,
            timestamp_ms: header.timestamp_ms,
        };
        let from_disk = execute_block(&store, &ctx, txs).expect("execution from disk");
        assert_eq!(from_disk.writes, out.writes, "height {}", header.height);
        assert_eq!(from_disk.receipt_root, out.receipt_root);
        let id = [header.height as u8; 32];
        store
            .commit_block(header, &from_disk.receipts, &from_disk.writes, &[], &id)
            .expect("commit");
    });
    let on_disk = store.load_state().expect("state");
    assert_eq!(on_disk.root(), header.state_root);
    assert_eq!(hex::encode(on_disk.root().0), STATE_ROOT);
}

/// Executes the fixed block sequence in memory, calling `each` with every block's header, its
/// transactions and the output; returns the last header.
fn run_blocks(
    net: &Testnet,
    each: &mut dyn FnMut(&BlockHeader, &[VerifiedTransaction], &BlockOutput),
) -> BlockHeader {
    let mut state = net.genesis.initial_state().expect("genesis state");
    let mut parent_hash = net.genesis.header(state.root()).hash();
    let blocks = [
        vec![
            transfer(net, 0, 1, 0, "USD", 1_000_000),
            transfer(net, 1, 2, 0, "EUR", 250_000),
            // Over the compliance limits: rejected, and still in the receipts.
            transfer(net, 2, 3, 0, "SGD", u64::MAX / 2),
        ],
        vec![
            transfer(net, 0, 3, 1, "SGD", 42),
            // A replayed sequence: rejected.
            transfer(net, 1, 0, 0, "USD", 7),
            transfer(net, 3, 0, 0, "USD", 999_999),
        ],
    ];
    let mut last = None;
    let mut codes = Vec::new();
    for (i, txs) in blocks.iter().enumerate() {
        let height = i as u64 + 1;
        let ctx = BlockContext {
            height,
            timestamp_ms: net.genesis.genesis_time_ms + 1_000 * height,
        };
        let out = execute_block(&state, &ctx, txs).expect("execution");
        codes.extend(out.receipts.iter().map(|r| r.code.clone()));
        state.apply(&out.writes);
        let header = BlockHeader {
            chain_id: net.genesis.chain_id.clone(),
            height,
            round: height,
            parent_hash,
            proposer: keys::account_id(&net.validator_keys[0]),
            timestamp_ms: ctx.timestamp_ms,
            batch_digests: Vec::new(),
            tx_count: txs.len() as u64,
            receipt_root: out.receipt_root,
            state_root: state.root(),
        };
        each(&header, txs, &out);
        parent_hash = header.hash();
        last = Some(header);
    }
    let header = last.expect("blocks");
    assert_eq!(
        codes,
        [
            "ok",
            "ok",
            "compliance_rejected",
            "ok",
            "bad_sequence",
            "ok"
        ],
        "the sequence exercises applied and rejected transactions"
    );
    header
}
