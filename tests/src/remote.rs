//! Clients of validators that run as separate OS processes or containers, over their HTTP API:
//! shared by the process and container fault tests.

use ed25519_dalek::SigningKey;
use tally_ledger::primitives::{AccountId, AssetCode, Hash};
use tally_ledger::tx::{Payload, SignedTransaction, Transaction, Transfer};
use tally_node::tools::testnet::Testnet;

/// A base port in `range` with `n` free consecutive loopback ports.
pub fn free_ports(n: u16, range: std::ops::Range<u16>) -> u16 {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    loop {
        let base: u16 = rng.gen_range(range.clone());
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

/// One minor unit of USD from demo account `from` to demo account `to`, signed.
pub fn transfer(testnet: &Testnet, from: usize, to: usize, sequence: u64) -> SignedTransaction {
    let key: &SigningKey = &testnet.account_keys[from];
    Transaction {
        chain_id: testnet.genesis.chain_id.clone(),
        sender: AccountId(key.verifying_key().to_bytes()),
        sequence,
        expiry_height: 1_000_000_000,
        payload: Payload::Transfer(Transfer {
            to: AccountId(testnet.account_keys[to].verifying_key().to_bytes()),
            asset: AssetCode::new("USD").expect("code"),
            amount: 1,
            memo: None,
            travel: None,
        }),
    }
    .sign(key)
}

/// Submits `tx` to the validator at `base` (`http://host:port`); whether it was accepted (202).
pub async fn submit(http: &reqwest::Client, base: &str, tx: &SignedTransaction) -> bool {
    let body = serde_json::json!({ "tx": hex::encode(tx.to_bytes()) });
    match http
        .post(format!("{base}/v1/transactions"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r.status().as_u16() == 202,
        Err(_) => false,
    }
}

/// A signed read of `path` at the validator at `base`, as the demo consortium's KYC provider
/// (it registered every demo account's identity, so it sees their payments in full).
pub fn signed_get(
    http: &reqwest::Client,
    testnet: &Testnet,
    base: &str,
    path: &str,
) -> reqwest::RequestBuilder {
    let kyc = testnet
        .named("kyc")
        .expect("the demo network has a KYC provider key");
    tally_node::api::auth::signed_get(http, base, path, kyc, &testnet.genesis.chain_id)
}

/// The status of transaction `hash` at the validator at `base`, if it answers.
pub async fn tx_status(
    http: &reqwest::Client,
    testnet: &Testnet,
    base: &str,
    hash: &Hash,
) -> Option<String> {
    let r = signed_get(http, testnet, base, &format!("/v1/transactions/{hash}"))
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    v["status"].as_str().map(str::to_owned)
}
