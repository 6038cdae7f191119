//! Structure-aware fuzzing of everything a peer or a client hands the node: valid transactions,
//! batches and wire messages, mutated (bytes flipped, inserted, removed, truncated), then put
//! through the same decoders and stateless checks the node uses. Nothing may panic, and a
//! mutated input either fails with an error or is still a well-formed value that passes the
//! same checks again (decoding is canonical). `PROPTEST_CASES` scales the run.

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use tally_consensus::sim::mutate_bytes;
use tally_consensus::{BlockRequest, Digest};
use tally_ledger::codec;
use tally_ledger::primitives::{AccountId, AssetCode};
use tally_ledger::tx::{verify_batch, Payload, SignedTransaction, Transaction, Transfer};
use tally_node::runtime::batches::{self, Batch, Check};
use tally_node::runtime::wire::{DirectMessage, SyncRequest, SyncResponse};

const CHAIN: &str = "fuzz";

fn transfer(seed: u8, sequence: u64, amount: u64) -> SignedTransaction {
    let key = SigningKey::from_bytes(&[seed; 32]);
    Transaction {
        chain_id: CHAIN.into(),
        sender: AccountId(key.verifying_key().to_bytes()),
        sequence,
        expiry_height: 100,
        payload: Payload::Transfer(Transfer {
            to: AccountId([9; 32]),
            asset: AssetCode::new("USD").expect("code"),
            amount,
            memo: None,
            travel: None,
        }),
    }
    .sign(&key)
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..5)
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_transactions_fail_cleanly_and_single_and_batch_checks_agree(
        seed in 1u8..8, sequence in any::<u64>(), amount in 1u64..1_000_000, edits in edits()
    ) {
        let bytes = mutate_bytes(transfer(seed, sequence, amount).to_bytes(), &edits);
        if let Ok(signed) = SignedTransaction::from_bytes(&bytes) {
            let single = signed.clone().verify(CHAIN).map(|v| v.hash).map_err(|e| e.code());
            let batch = verify_batch(vec![signed], CHAIN).remove(0).map(|v| v.hash).map_err(|e| e.code());
            prop_assert_eq!(single, batch);
        }
    }

    #[test]
    fn mutated_batches_fail_cleanly(n in 1usize..6, nonce in any::<u64>(), edits in edits()) {
        let author = AccountId([1; 32]);
        let batch = Batch { author, nonce, txs: (0..n).map(|i| transfer(2, i as u64, 5)).collect() };
        let bytes = mutate_bytes(codec::encode(&batch), &edits);
        let full = batches::verify(bytes.clone(), CHAIN, 1 << 20, 100, Some(author), Check::Signatures);
        let attested = batches::verify(bytes.clone(), CHAIN, 1 << 20, 100, Some(author), Check::Attested);
        if let Ok(v) = &full {
            // Whatever decoded is the batch it claims to be.
            prop_assert_eq!(v.txs.len(), codec::decode::<Batch>(&bytes, 1 << 20).map(|b| b.txs.len()).unwrap_or(0));
            // The attested check skips only the signatures: it accepts all the full one does,
            // as the same batch.
            prop_assert_eq!(attested.as_ref().map(|a| a.digest).ok(), Some(v.digest));
        }
        if attested.is_err() {
            prop_assert!(full.is_err());
        }
    }

    #[test]
    fn mutated_wire_messages_fail_cleanly(
        block in any::<[u8; 32]>(), after in any::<u64>(), max in any::<u32>(),
        consensus in prop::collection::vec(any::<u8>(), 0..200), edits in edits()
    ) {
        let request = SyncRequest::Blocks(BlockRequest { block: Digest(block), after_height: after, max_blocks: max });
        let _ = codec::decode::<SyncRequest>(&mutate_bytes(codec::encode(&request), &edits), 1 << 20);
        let direct = DirectMessage::Consensus(consensus);
        let _ = codec::decode::<DirectMessage>(&mutate_bytes(codec::encode(&direct), &edits), 1 << 20);
        let answer = SyncResponse::Batch(Some(serde_bytes::ByteBuf::from(vec![7u8; 40])));
        let _ = codec::decode::<SyncResponse>(&mutate_bytes(codec::encode(&answer), &edits), 1 << 20);
        let _ = codec::decode::<SyncResponse>(&mutate_bytes(codec::encode(&SyncResponse::Blocks(Vec::new())), &edits), 1 << 20);
    }
}
