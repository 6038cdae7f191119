//! Who may read what, through real HTTP on a 4-validator network: reads about a person or their
//! money need a signed request (docs/api/README.md, "Signed reads"); the holder, the KYC
//! provider that registered the identity and a regulator of its jurisdiction see it; anyone
//! else is told it does not exist; a customer whose payment a compliance rule refused learns
//! only `compliance_refused` (docs/privacy.md, the tipping-off policy).

use ed25519_dalek::SigningKey;
use std::time::Duration;
use tally_ledger::compliance::{GovAction, SanctionsUpdate};
use tally_ledger::primitives::{AccountId, AssetCode};
use tally_ledger::tx::{Payload, Transaction, Transfer};
use tally_node::api::auth::{request_message, sign_request};
use tally_node::api::TxStatus;
use tally_node::keys;
use tally_tests::cluster::Cluster;

fn named(c: &Cluster, name: &str) -> SigningKey {
    c.testnet.named(name).expect(name).clone()
}

fn code(v: &serde_json::Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_about_people_and_money_need_a_signature_and_a_right_to_see() {
    let c = Cluster::start(4).await;
    // Load account 0 belongs to a DE business identity registered by the demo KYC provider.
    let (holder, holder_id) = c.account(0);
    let other = c.account(1).0;
    let (kyc, eu, apac) = (
        named(&c, "kyc"),
        named(&c, "regulator-eu"),
        named(&c, "regulator-apac"),
    );
    let account = format!("/v1/accounts/{holder_id}");
    let nobody = format!("/v1/accounts/{}", AccountId([7; 32]));

    // Unsigned: the same refusal whether the account exists or not.
    let (s1, b1) = c.get_with(0, &account, &[]).await;
    let (s2, b2) = c.get_with(0, &nobody, &[]).await;
    assert_eq!((s1, code(&b1)), (401, "unauthenticated"), "{b1}");
    assert_eq!((s2, &b2), (401, &b1));

    // The request's form is checked before who asks: it says nothing about what exists.
    let (s, v) = c.get_with(0, "/v1/accounts/not-an-account", &[]).await;
    assert_eq!((s, code(&v)), (400, "bad_account"), "{v}");

    // In scope: the holder, its KYC provider, the regulator of DE.
    for key in [&holder, &kyc, &eu] {
        let (s, v) = c.get_as(0, &account, key).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["id"], holder_id.to_string());
    }
    // Out of scope: answered exactly as an account that does not exist.
    for key in [&other, &apac] {
        let (s, v) = c.get_as(0, &account, key).await;
        assert_eq!((s, code(&v)), (404, "account_not_found"), "{v}");
    }
    let (s, v) = c.get_as(0, &nobody, &eu).await;
    assert_eq!((s, code(&v)), (404, "account_not_found"), "{v}");
    // Identities: the provider and the regulator in scope, no one else.
    let identity = "/v1/identities/business-0";
    assert_eq!(c.get_as(0, identity, &eu).await.0, 200);
    assert_eq!(c.get_as(0, identity, &kyc).await.0, 200);
    assert_eq!(
        code(&c.get_as(0, identity, &apac).await.1),
        "identity_not_found"
    );
    assert_eq!(
        code(&c.get_as(0, identity, &holder).await.1),
        "identity_not_found"
    );

    // A replayed request, a stale one, one signed for another path, one by an unknown key.
    let headers = sign_request(&eu, &c.testnet.genesis.chain_id, "GET", &account, b"");
    assert_eq!(c.get_with(0, &account, &headers).await.0, 200);
    let (s, v) = c.get_with(0, &account, &headers).await;
    assert_eq!((s, code(&v)), (401, "replayed"), "{v}");
    let (s, v) = c.get_with(1, &nobody, &headers).await;
    assert_eq!((s, code(&v)), (401, "bad_signature"), "{v}");
    let stale_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
        - 120_000;
    let nonce = "stale-request-nonce-1";
    let message = request_message(
        &c.testnet.genesis.chain_id,
        "GET",
        &account,
        "",
        b"",
        stale_ms,
        nonce,
    );
    let stale = [
        ("tally-key", hex::encode(eu.verifying_key().as_bytes())),
        ("tally-timestamp", stale_ms.to_string()),
        ("tally-nonce", nonce.to_owned()),
        (
            "tally-signature",
            hex::encode(ed25519_dalek::Signer::sign(&eu, &message).to_bytes()),
        ),
    ];
    let (s, v) = c.get_with(0, &account, &stale).await;
    assert_eq!((s, code(&v)), (401, "stale_request"), "{v}");
    let (s, v) = c.get_as(0, &account, &keys::generate()).await;
    assert_eq!((s, code(&v)), (401, "unknown_key"), "{v}");

    // A payment to a sanctioned identity's account, refused by compliance.
    let listed = keys::account_id(&named(&c, "scenario-listed-de"));
    let tx = Transaction {
        chain_id: c.testnet.genesis.chain_id.clone(),
        sender: holder_id,
        sequence: 0,
        expiry_height: 1_000_000,
        payload: Payload::Transfer(Transfer {
            to: listed,
            asset: AssetCode::new("USD").expect("code"),
            amount: 100,
            memo: None,
            travel: None,
        }),
    }
    .sign(&holder);
    let (s, v) = c.submit(0, &tx).await;
    assert_eq!(s, 202, "{v}");
    c.wait_final(0, &tx.hash(), Duration::from_secs(60)).await;
    // The proof comes with the block's commit certificate, a moment after the block.
    let path = format!("/v1/transactions/{}", tx.hash());
    let mut full: TxStatus;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (s, v) = c.get_as(0, &path, &kyc).await;
        assert_eq!(s, 200, "{v}");
        full = serde_json::from_value(v).expect("status");
        if full.proof.is_some() || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let receipt = full.receipt.expect("receipt");
    assert_eq!(receipt.code, "compliance_rejected");
    assert!(
        receipt.flags[0].rule_id.starts_with("sanctions"),
        "{receipt:?}"
    );
    assert!(full.proof.is_some(), "the KYC provider gets the proof");
    // The regulator of DE sees the rule; the payer sees only that compliance refused.
    let (s, v) = c.get_as(0, &path, &eu).await;
    assert_eq!(s, 200, "{v}");
    let seen: TxStatus = serde_json::from_value(v).expect("status");
    assert_eq!(seen.receipt.expect("receipt").flags, receipt.flags);
    let (s, v) = c.get_as(0, &path, &holder).await;
    assert_eq!(s, 200, "{v}");
    let text = v.to_string();
    let own: TxStatus = serde_json::from_value(v).expect("status");
    let own_receipt = own.receipt.expect("receipt");
    assert_eq!(own.status, "rejected");
    assert_eq!(own_receipt.code, "compliance_refused");
    assert!(own_receipt.flags.is_empty() && own.proof.is_none());
    assert!(
        !text.contains("sanction"),
        "the payer is tipped off: {text}"
    );
    // Someone else is told the payment does not exist.
    let (s, v) = c.get_as(0, &path, &other).await;
    assert_eq!((s, code(&v)), (404, "tx_not_found"), "{v}");
    let (s, v) = c.get_as(0, &path, &apac).await;
    assert_eq!((s, code(&v)), (404, "tx_not_found"), "{v}");

    // Which persons a sanctions proposal names is for the consortium's institutions.
    let listing = Transaction {
        chain_id: c.testnet.genesis.chain_id.clone(),
        sender: keys::account_id(&named(&c, "member-0")),
        sequence: 0,
        expiry_height: 1_000_000,
        payload: Payload::Propose {
            action: GovAction::UpdateSanctions(SanctionsUpdate {
                list: "test list".into(),
                add_identities: ["business-1".to_owned()].into(),
                remove_identities: Default::default(),
                add_jurisdictions: Default::default(),
                remove_jurisdictions: Default::default(),
            }),
            effective_height: 1_000_000,
        },
    }
    .sign(&named(&c, "member-0"));
    assert_eq!(c.submit(0, &listing).await.0, 202);
    c.wait_final(0, &listing.hash(), Duration::from_secs(60))
        .await;
    let proposal = "/v1/governance/proposals/1";
    let (s, public) = c.get_with(0, proposal, &[]).await;
    assert_eq!(s, 200, "{public}");
    assert_eq!(public["identities_withheld"], 1, "{public}");
    assert!(!public.to_string().contains("business-1"), "{public}");
    let (_, as_holder) = c.get_as(0, proposal, &holder).await;
    assert!(!as_holder.to_string().contains("business-1"), "{as_holder}");
    let (_, as_regulator) = c.get_as(0, proposal, &eu).await;
    assert!(
        as_regulator.to_string().contains("business-1"),
        "{as_regulator}"
    );
    // Its transaction likewise: institutions read it, a customer does not.
    let path = format!("/v1/transactions/{}", listing.hash());
    assert_eq!(c.get_as(0, &path, &apac).await.0, 200);
    assert_eq!(code(&c.get_as(0, &path, &holder).await.1), "tx_not_found");

    // A regulator that governance removed is refused as a key the network does not know.
    let us = named(&c, "regulator-us");
    let (s, v) = c.get_as(0, &account, &us).await;
    assert_eq!((s, code(&v)), (404, "account_not_found"), "{v}");
    let effective = c.height(0) + 12;
    let member = |m: usize| named(&c, &format!("member-{m}"));
    let governance = |m: usize, sequence: u64, payload: Payload| {
        Transaction {
            chain_id: c.testnet.genesis.chain_id.clone(),
            sender: keys::account_id(&member(m)),
            sequence,
            expiry_height: 1_000_000,
            payload,
        }
        .sign(&member(m))
    };
    let removal = governance(
        0,
        1,
        Payload::Propose {
            action: GovAction::RemoveRole {
                key: keys::account_id(&us),
            },
            effective_height: effective,
        },
    );
    let votes: Vec<_> = (1..3)
        .map(|m| {
            governance(
                m,
                0,
                Payload::Vote {
                    proposal: 2,
                    approve: true,
                },
            )
        })
        .collect();
    for tx in std::iter::once(&removal).chain(&votes) {
        assert_eq!(c.submit(0, tx).await.0, 202);
        let s = c.wait_final(0, &tx.hash(), Duration::from_secs(60)).await;
        assert_eq!(s.status, "committed", "{s:?}");
    }
    c.wait_height(effective, Duration::from_secs(120)).await;
    let (s, v) = c.get_as(0, &account, &us).await;
    assert_eq!((s, code(&v)), (401, "unknown_key"), "{v}");
    c.shutdown().await;
}
