//! A deterministic block workload for crash-recovery tests: the same genesis and the same
//! blocks every time, so a test can replay exactly what a killed writer committed.

use ed25519_dalek::SigningKey;
use tally_ledger::genesis::{Genesis, GenesisAccount, GenesisAsset, GenesisValidator};
use tally_ledger::primitives::{AssetCode, Hash, Height};
use tally_ledger::tx::{Payload, Transaction, Transfer, VerifiedTransaction};
use tally_node::chain::BlockProposal;
use tally_node::keys::account_id;
use tally_node::tools::testnet_compliance::SimpleCompliance;

const ACCOUNTS: usize = 8;
const CHAIN: &str = "crash-test";

fn key(i: usize) -> SigningKey {
    SigningKey::from_bytes(&[i as u8 + 1; 32])
}

fn usd() -> AssetCode {
    AssetCode::new("USD").expect("valid code")
}

/// The genesis every run starts from.
pub fn genesis() -> Genesis {
    let accounts: Vec<_> = (0..ACCOUNTS).map(|i| account_id(&key(i))).collect();
    let compliance = SimpleCompliance::new(account_id(&key(97)), &accounts, &[usd()]);
    Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: 0,
        validators: vec![GenesisValidator {
            name: "v".into(),
            public_key: account_id(&key(99)),
            p2p_addr: "/ip4/127.0.0.1/tcp/1".into(),
            api_addr: "127.0.0.1:1".into(),
        }],
        members: vec![],
        assets: vec![GenesisAsset {
            code: usd(),
            decimals: 6,
            issuer: account_id(&key(98)),
        }],
        accounts: (0..ACCOUNTS)
            .map(|i| GenesisAccount {
                id: account_id(&key(i)),
                balances: [(usd(), 1_000_000_000)].into(),
            })
            .collect(),
        roles: compliance.roles,
        identities: compliance.identities,
        sanctioned_identities: Default::default(),
        rules: compliance.rules,
        params: Default::default(),
    }
}

/// Block `height`: every account pays the one `height` places after it.
pub fn block(height: Height) -> (BlockProposal, Vec<VerifiedTransaction>) {
    let txs = (0..ACCOUNTS)
        .map(|i| {
            let to = (i + height as usize) % ACCOUNTS;
            Transaction {
                chain_id: CHAIN.into(),
                sender: account_id(&key(i)),
                sequence: height - 1,
                expiry_height: height + 100,
                payload: Payload::Transfer(Transfer {
                    to: account_id(&key(to)),
                    asset: usd(),
                    amount: 1 + (height % 97) * (i as u64 + 1),
                    memo: None,
                    travel: None,
                }),
            }
            .sign(&key(i))
            .verify(CHAIN)
            .expect("well-formed workload transaction")
        })
        .collect();
    let proposal = BlockProposal {
        round: height,
        proposer: account_id(&key(99)),
        timestamp_ms: height * 1000,
        batch_digests: vec![Hash([height as u8; 32])],
        record: height.to_be_bytes().to_vec(),
        record_id: [height as u8; 32],
    };
    (proposal, txs)
}
