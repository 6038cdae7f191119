//! A network of real validators in one process: commits, agreement, faults, restarts, sync,
//! duplicate and invalid submissions.

use std::time::Duration;
use tally_tests::cluster::Cluster;

const LONG: Duration = Duration::from_secs(90);

fn usd() -> tally_ledger::primitives::AssetCode {
    tally_ledger::primitives::AssetCode::new("USD").expect("code")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_validators_commit_transfers_and_agree_on_state_and_receipts() {
    let c = Cluster::start(4).await;
    let before = c.account_view(0, 1).await.balances[&usd()];
    let txs: Vec<_> = (0..50).map(|s| c.transfer(0, 1, s, 7)).collect();
    let answer = c.submit_batch(0, &txs).await;
    assert_eq!(answer.accepted, 50);
    let last = c.wait_final(0, &txs[49].hash(), LONG).await;
    assert_eq!(last.status, "committed");
    let height = last.height.expect("final height");
    c.wait_height(height, LONG).await;
    // Every validator executed the same block to the same state and the same receipts.
    let roots = c.state_roots(height);
    assert!(
        roots.iter().all(|r| r.is_some() && *r == roots[0]),
        "{roots:?}"
    );
    for h in 1..=height {
        let receipts: Vec<_> = c
            .running()
            .map(|i| c.node(i).shared().store.receipts(h).expect("store"))
            .collect();
        assert!(
            receipts.windows(2).all(|w| w[0] == w[1]),
            "receipts differ at {h}"
        );
    }
    // Once a quorum has signed the executed header, the answer carries a proof that checks out
    // offline against the genesis validator set.
    let deadline = tokio::time::Instant::now() + LONG;
    let proof = loop {
        let s = c.wait_final(2, &txs[49].hash(), LONG).await;
        if let Some(p) = s.proof {
            break p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no certificate gathered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(proof.receipt.tx_hash, txs[49].hash());
    proof
        .verify(&c.testnet.genesis.validator_keys())
        .expect("the inclusion proof verifies");
    let mut forged = proof.clone();
    forged.receipt.code = "insufficient_funds".into();
    assert!(forged.verify(&c.testnet.genesis.validator_keys()).is_err());
    for i in 0..4 {
        let a = c.account_view(i, 1).await;
        assert_eq!(a.balances[&usd()], before + 50 * 7, "validator {i}");
        assert_eq!(c.account_view(i, 0).await.sequence, 50);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_one_validator_down_the_rest_finalize_and_it_catches_up_after_restart() {
    let mut c = Cluster::start(4).await;
    c.kill(3).await;
    let h = c.min_height();
    c.wait_height(h + 5, LONG).await;
    // Submitted to validator 2, whose batches validator 3 checks and attests: with 3 down the
    // batch has one attestation of the two it needs, so validators 0 and 1 verify it
    // themselves after the grace, and it commits.
    let tx = c.transfer(2, 3, 0, 11);
    let (status, body) = c.submit(2, &tx).await;
    assert_eq!(status, 202, "{body}");
    let fin = c.wait_final(2, &tx.hash(), LONG).await;
    assert_eq!(fin.status, "committed");
    let late = "tally_batches_checked_total{how=\"late_attestations\"}";
    let mut checked_late = 0.0;
    for i in 0..2 {
        checked_late += tally_tests::metric_sum(&c.metrics(i).await, late);
    }
    assert!(checked_late >= 1.0, "no validator checked the batch itself");
    c.restart(3).await;
    let target = c.height(0) + 3;
    c.wait_height(target, LONG).await;
    let roots = c.state_roots(target);
    assert!(roots.iter().all(|r| *r == roots[0]), "{roots:?}");
    assert_eq!(
        c.account_view(3, 2).await.sequence,
        1,
        "the restarted validator has the transfer"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_does_not_stall_the_network() {
    let mut c = Cluster::start(4).await;
    c.wait_height(3, LONG).await;
    let leader = c.leader(0);
    c.kill(leader).await;
    let h = c.min_height();
    // One base timeout (1.5 s) plus its backoff, with margin for a loaded machine.
    c.wait_height(h + 5, Duration::from_secs(60)).await;
    c.shutdown().await;
}

/// Submits a payment (account 4 to 5, its first) to validator `to` and returns how long until
/// it is committed on every validator of `among`.
async fn time_to_commit(c: &Cluster, to: usize, among: std::ops::Range<usize>) -> Duration {
    let tx = c.transfer(4, 5, 0, 1_000);
    let submitted = std::time::Instant::now();
    assert_eq!(c.submit(to, &tx).await.0, 202);
    for i in among {
        let fin = c.wait_final(i, &tx.hash(), LONG).await;
        assert_eq!(fin.status, "committed");
    }
    submitted.elapsed()
}

/// With nothing to order, a leader waits out the heartbeat before an empty block; a payment
/// arriving ends the wait, and the blocks that certify and commit it follow at once (they do
/// not wait for the heartbeat), so it is final everywhere well before the next beat.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_network_beats_slowly_and_a_payment_wakes_it_at_once() {
    const HEARTBEAT: Duration = Duration::from_secs(6);
    let c = Cluster::start_with(4, |o| {
        o.consensus.heartbeat_ms = HEARTBEAT.as_millis() as u64;
        o.consensus.max_heartbeat_ms = HEARTBEAT.as_millis() as u64;
    })
    .await;
    c.wait_height(2, LONG).await;
    let idle_from = c.height(0);
    tokio::time::sleep(Duration::from_secs(13)).await;
    let beats = c.height(0) - idle_from;
    // Two or three heartbeats (a 50 ms wait made about 260 blocks here).
    assert!(beats <= 4, "{beats} blocks in 13 s of idling");
    let took = time_to_commit(&c, 1, 0..4).await;
    assert!(
        took < HEARTBEAT * 3 / 4,
        "final on every validator after {took:?}: a block of the commit pipeline waited for \
         the heartbeat"
    );
    c.shutdown().await;
}

/// With a validator down in an idle network its rounds are long: every replica allows for the
/// longest idle wait. A payment arriving in such a round is not held for it: the ready batch
/// cuts each replica's timer to the failure timeout, the round is given up, and the next leader
/// proposes the payment at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_in_a_failed_leaders_idle_round_waits_a_failure_timeout_not_the_heartbeat() {
    const MAX_HEARTBEAT: Duration = Duration::from_secs(12);
    let mut c = Cluster::start_with(4, |o| {
        o.consensus.heartbeat_ms = 1000;
        o.consensus.max_heartbeat_ms = MAX_HEARTBEAT.as_millis() as u64;
    })
    .await;
    c.wait_height(2, LONG).await;
    c.kill(3).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while c.leader(0) != 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "validator 0 never entered a round led by validator 3"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = time_to_commit(&c, 0, 0..3).await;
    assert!(
        took < MAX_HEARTBEAT / 2,
        "final on the three after {took:?}: the failed leader's round ran its idle allowance"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_validator_that_missed_a_thousand_blocks_syncs_them() {
    let mut c = Cluster::start_with(4, |o| {
        o.consensus.heartbeat_ms = 0;
        o.consensus.base_timeout_ms = 400;
    })
    .await;
    c.kill(3).await;
    let start = c.min_height();
    c.wait_height(start + 1000, Duration::from_secs(120)).await;
    c.restart(3).await;
    let target = c.height(0);
    // While it catches up, its status says how far behind it is and that it is not ready.
    let mut seen_behind = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while c.node(3).shared().height() < target {
        let (_, s) = c.get(3, "/v1/status").await;
        if s["ready"] == false && s["sync_lag"].as_u64().unwrap_or(0) > 10 {
            seen_behind.get_or_insert(s);
        }
        assert!(tokio::time::Instant::now() < deadline, "never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_behind.is_some(), "never reported itself behind");
    c.wait_height(target, Duration::from_secs(300)).await;
    let roots = c.state_roots(target);
    assert!(roots.iter().all(|r| *r == roots[0]), "{roots:?}");
    // Caught up: ready, with a small lag.
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let (_, s) = c.get(3, "/v1/status").await;
        if s["ready"] == true && s["sync_lag"].as_u64().is_some_and(|l| l <= 10) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready after catching up: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_submitted_twice_commits_once() {
    let c = Cluster::start(4).await;
    let before = c.account_view(0, 5).await.balances[&usd()];
    let tx = c.transfer(4, 5, 0, 1_000);
    // Twice to one validator, and once more to another.
    assert_eq!(c.submit(0, &tx).await.0, 202);
    assert_eq!(c.submit(0, &tx).await.0, 202);
    assert_eq!(c.submit(2, &tx).await.0, 202);
    let fin = c.wait_final(0, &tx.hash(), LONG).await;
    assert_eq!(fin.status, "committed");
    // Let any second copy reach a block too.
    let h = c.height(0) + 5;
    c.wait_height(h, LONG).await;
    assert_eq!(c.account_view(0, 5).await.balances[&usd()], before + 1_000);
    assert_eq!(c.account_view(0, 4).await.sequence, 1);
    let (status, body) = c.submit(1, &tx).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "already_committed");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_validator_that_cannot_commit_refuses_the_excess_with_429_and_loses_nothing() {
    let mut c = Cluster::start_with(4, |o| {
        o.batch_max_txs = 10;
        o.batch_max_inflight_txs = 10;
        o.mempool_max_txs = 20;
    })
    .await;
    // Without a quorum nothing commits, so validator 0's own batches stay in flight.
    for i in 1..4 {
        c.kill(i).await;
    }
    let txs: Vec<_> = (0..31).map(|s| c.transfer(0, 1, s, 5)).collect();
    assert_eq!(c.submit_batch(0, &txs[..10]).await.accepted, 10);
    // The batcher seals those ten into one batch, which fills the in-flight allowance...
    let mempool = &c.node(0).shared().mempool;
    let deadline = tokio::time::Instant::now() + LONG;
    while !mempool.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no batch sealed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...so the next twenty stay in the mempool and fill it.
    assert_eq!(c.submit_batch(0, &txs[10..30]).await.accepted, 20);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        mempool.len(),
        20,
        "no batch may be sealed beyond the allowance"
    );
    let (status, body) = c.submit(0, &txs[30]).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "mempool_full");
    // Refused before any work: even a body that does not parse gets 429, not 400.
    let (status, body) = c
        .post_json(0, "/v1/transactions", &serde_json::json!({ "tx": "zz" }))
        .await;
    assert_eq!(status, 429, "{body}");
    // With a quorum back, everything accepted commits and submissions are taken again.
    c.restart(1).await;
    c.restart(2).await;
    let fin = c.wait_final(0, &txs[29].hash(), LONG).await;
    assert_eq!(fin.status, "committed");
    let mut retried = (0, serde_json::Value::Null);
    while tokio::time::Instant::now() < deadline + LONG {
        retried = c.submit(0, &txs[30]).await;
        if retried.0 == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(retried.0, 202, "{}", retried.1);
    assert_eq!(
        c.wait_final(0, &txs[30].hash(), LONG).await.status,
        "committed"
    );
    assert_eq!(c.account_view(0, 0).await.sequence, 31);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_transactions_get_their_4xx_and_never_reach_a_block() {
    use ed25519_dalek::Signer;
    let c = Cluster::start(4).await;
    let good = c.transfer(6, 7, 0, 5);

    let mut forged = good.clone();
    forged.signature = c.account(7).0.sign(&good.hash().0);
    let (s, b) = c.submit(0, &forged).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("bad_signature"))
    );

    let (s, b) = c
        .post_json(0, "/v1/transactions", &serde_json::json!({ "tx": "00ff" }))
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("malformed_tx"))
    );

    let (s, b) = c
        .post_json(0, "/v1/transactions", &serde_json::json!({ "nope": 1 }))
        .await;
    // Well-formed JSON of the wrong shape.
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("bad_body")));

    // Just over the 1 MiB limit, so the whole body is on the wire before the answer.
    let huge = "0".repeat((1 << 20) + 1024);
    let (s, b) = c
        .post_json(0, "/v1/transactions", &serde_json::json!({ "tx": huge }))
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (413, Some("body_too_large"))
    );

    let (key, id) = c.account(6);
    let payload = tally_ledger::tx::Payload::Transfer(tally_ledger::tx::Transfer {
        to: c.account(7).1,
        asset: tally_ledger::primitives::AssetCode::new("USD").expect("code"),
        amount: 5,
        memo: None,
        travel: None,
    });
    let expired = tally_ledger::tx::Transaction {
        chain_id: c.testnet.genesis.chain_id.clone(),
        sender: id,
        sequence: 0,
        expiry_height: 1,
        payload: payload.clone(),
    }
    .sign(&key);
    let (s, b) = c.submit(0, &expired).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("expired")));

    let wrong_chain = tally_ledger::tx::Transaction {
        chain_id: "another-network".into(),
        sender: id,
        sequence: 0,
        expiry_height: 1_000_000,
        payload,
    }
    .sign(&key);
    let (s, b) = c.submit(0, &wrong_chain).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("wrong_chain")));

    let h = c.height(0) + 3;
    c.wait_height(h, LONG).await;
    for bad in [&forged, &expired, &wrong_chain] {
        let (s, b) = c.get(0, &format!("/v1/transactions/{}", bad.hash())).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (404, Some("tx_not_found"))
        );
    }
    assert_eq!(
        c.account_view(0, 6).await.sequence,
        0,
        "nothing invalid executed"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dry_run_tells_the_decision_and_changes_nothing() {
    let c = Cluster::start(1).await;
    let before = c.account_view(0, 6).await;
    let dry = |tx: &tally_ledger::tx::SignedTransaction| {
        let body = serde_json::json!({ "tx": hex::encode(tx.to_bytes()) });
        let c = &c;
        async move { c.post_json(0, "/v1/transactions?dry_run=true", &body).await }
    };
    let good = c.transfer(6, 7, 0, 5);
    let (s, b) = dry(&good).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("would_apply")), "{b}");
    assert_eq!(b["hash"].as_str(), Some(good.hash().to_string().as_str()));
    assert_eq!(b["receipt"]["outcome"], "applied", "{b}");
    assert_eq!(b["receipt"]["events"][0]["transferred"]["amount"], 5, "{b}");

    let too_much = c.transfer(6, 7, 0, before.balances[&usd()] + 1);
    let (s, b) = dry(&too_much).await;
    assert_eq!(
        (s, b["status"].as_str()),
        (200, Some("would_reject")),
        "{b}"
    );
    // More than the balance, and above the travel-rule threshold without the data: the
    // compliance rule decides first. The answer goes to whoever holds the sender's key, so it
    // says that compliance refused, not which rule (the tipping-off policy).
    assert_eq!(b["receipt"]["code"], "compliance_refused", "{b}");
    assert_eq!(b["receipt"]["flags"], serde_json::json!([]), "{b}");
    assert!(!b.to_string().contains("travel_rule"), "{b}");

    let out_of_order = c.transfer(6, 7, 5, 1);
    let (_, b) = dry(&out_of_order).await;
    assert_eq!(b["receipt"]["code"], "bad_sequence", "{b}");

    // Stateless checks come first, as for a submission.
    use ed25519_dalek::Signer;
    let mut forged = good.clone();
    forged.signature = c.account(7).0.sign(&good.hash().0);
    let (s, b) = dry(&forged).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("bad_signature"))
    );
    let (s, b) = c
        .post_json(
            0,
            "/v1/transactions?dry_run=maybe",
            &serde_json::json!({"tx": "00"}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("bad_query")),
        "{b}"
    );

    // Nothing was admitted or written: the dry-run transaction is unknown, the account is
    // unchanged several blocks later, and the same transaction still commits for real.
    let h = c.height(0) + 3;
    c.wait_height(h, LONG).await;
    let (s, _) = c.get(0, &format!("/v1/transactions/{}", good.hash())).await;
    assert_eq!(s, 404);
    let after = c.account_view(0, 6).await;
    assert_eq!(
        (after.sequence, &after.balances),
        (before.sequence, &before.balances)
    );
    let (s, b) = c.submit(0, &good).await;
    assert_eq!(s, 202, "{b}");
    let fin = c.wait_final(0, &good.hash(), LONG).await;
    assert_eq!(fin.status, "committed");
    // A committed transaction's dry run is refused as a submission would be.
    let (s, b) = dry(&good).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (409, Some("already_committed"))
    );
    c.shutdown().await;
}

/// Before members vote on a rule-set change, the proposal shows exactly what it would change
/// against the rules in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rule_change_proposal_shows_what_it_would_change() {
    use tally_ledger::compliance::GovAction;
    use tally_ledger::tx::{Payload, Transaction};
    let c = Cluster::start(1).await;
    let mut rules = tally_node::tools::testnet_compliance::demo_rules();
    for limit in rules.limits.iter_mut().filter(|l| l.tier == 1) {
        limit.per_transaction = Some(4_321);
    }
    let key = c.testnet.named_keys["member-0"].clone();
    let member = tally_ledger::primitives::AccountId(key.verifying_key().to_bytes());
    let tx = Transaction {
        chain_id: c.testnet.genesis.chain_id.clone(),
        sender: member,
        sequence: 0,
        expiry_height: 1_000_000,
        payload: Payload::Propose {
            action: GovAction::SetRules(rules),
            effective_height: 1_000_000,
        },
    }
    .sign(&key);
    let (s, b) = c.submit(0, &tx).await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(c.wait_final(0, &tx.hash(), LONG).await.status, "committed");
    let (s, p) = c.get(0, "/v1/governance/proposals/1").await;
    assert_eq!(s, 200, "{p}");
    // (The one-validator test network has one member, so the proposal passed at once; it is
    // due far ahead and not applied.)
    assert_eq!(p["status"], "passed", "{p}");
    let changes = p["changes"].as_object().expect("changes");
    assert_eq!(changes.keys().collect::<Vec<_>>(), vec!["limits"], "{p}");
    let to = changes["limits"]["to"].to_string();
    let from = changes["limits"]["from"].to_string();
    assert!(to.contains("4321") && !from.contains("4321"), "{p}");
    c.shutdown().await;
}

/// A node whose executed state diverged from the quorum's says so everywhere an operator or a
/// load balancer looks: its health and readiness checks fail, its status is not ready and names the height,
/// and a counter that exists at zero from the start moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_diverged_node_fails_its_health_check_and_counts_it() {
    let c = Cluster::start(1).await;
    let divergence = "tally_state_divergence_total";
    let scrape = || async {
        let text = c.metrics(0).await;
        assert!(text.contains(&format!("\n{divergence}{{")), "{text}");
        tally_tests::metric_sum(&text, divergence)
    };
    assert_eq!(scrape().await, 0.0);
    let (s, h) = c.get(0, "/health").await;
    assert_eq!((s, h["status"].as_str()), (200, Some("ok")));
    let (s, r) = c.get(0, "/ready").await;
    assert_eq!((s, r["ready"].as_bool()), (200, Some(true)), "{r}");

    // What the certifier does when a quorum signs another header at height 5.
    c.node(0).shared().mark_diverged(5);
    c.node(0).shared().mark_diverged(6);
    let (s, h) = c.get(0, "/health").await;
    assert_eq!((s, h["status"].as_str()), (503, Some("diverged")), "{h}");
    assert_eq!(h["diverged_at"], 5);
    let (_, st) = c.get(0, "/v1/status").await;
    assert_eq!(
        (st["ready"].as_bool(), st["diverged_at"].as_u64()),
        (Some(false), Some(5))
    );
    let (s, r) = c.get(0, "/ready").await;
    assert_eq!((s, r["reason"].as_str()), (503, Some("diverged")), "{r}");
    assert_eq!(scrape().await, 2.0);
    c.shutdown().await;
}

/// What an operator needs to see is exported from the start: the process's own resources,
/// free disk, how long a commit takes to reach the disk, the rule-set version and the sync lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_node_exports_its_resources_commit_time_rules_and_lag() {
    let c = Cluster::start(1).await;
    c.wait_height(3, LONG).await;
    let text = c.metrics(0).await;
    let value = |series: &str| tally_tests::metric_sum(&text, series);
    assert!(value("process_resident_memory_bytes") > 0.0, "{text}");
    // Whole seconds of CPU: a young process may still be at zero, but the series is there.
    assert!(text.contains("\nprocess_cpu_seconds_total{"), "{text}");
    assert!(value("process_open_fds") > 0.0, "{text}");
    assert!(value("tally_storage_free_bytes") > 0.0, "{text}");
    assert!(value("tally_storage_commit_seconds_count") >= 3.0, "{text}");
    assert_eq!(value("tally_compliance_rules_version"), 1.0, "{text}");
    assert!(text.contains("tally_sync_lag_blocks{"), "{text}");
    // Every series carries the chain id, the process's own too.
    assert!(
        text.lines()
            .filter(|l| l.starts_with("process_resident_memory_bytes"))
            .all(|l| l.contains("chain_id=")),
        "{text}"
    );
    c.shutdown().await;
}

/// The HTTP metrics' labels come from a fixed set: a client that invents methods or paths adds
/// no series.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invented_methods_and_paths_add_no_metric_series() {
    let c = Cluster::start(1).await;
    let http = reqwest::Client::new();
    for i in 0..5 {
        let method =
            reqwest::Method::from_bytes(format!("INVENTED{i}").as_bytes()).expect("method");
        let r = http
            .request(method, format!("{}/v1/made-up-{i}", c.url(0)))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 404);
    }
    let metrics = c.metrics(0).await;
    assert!(
        !metrics.contains("INVENTED") && !metrics.contains("made-up"),
        "{metrics}"
    );
    assert_eq!(
        tally_tests::metric_sum(
            &metrics,
            r#"tally_http_requests_total{route="unmatched",method="other",status="404"}"#
        ),
        5.0,
        "{metrics}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_documented_route_is_served() {
    let c = Cluster::start(1).await;
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/api/openapi.yaml"
    ))
    .expect("openapi document");
    let documented = tally_node::api::documented_routes(&doc);
    let mut served: Vec<(String, String)> = tally_node::api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    served.sort();
    assert_eq!(
        documented, served,
        "router and docs/api/openapi.yaml disagree"
    );
    for (method, path) in &served {
        let path = path
            .replace("{hash}", &"ab".repeat(32))
            .replace("{id}", &"cd".repeat(32))
            .replace("{height}", "1");
        let url = format!("{}{path}", c.url(0));
        let r = match method.as_str() {
            "get" => c.http.get(url).send().await,
            _ => c.http.post(url).json(&serde_json::json!({})).send().await,
        }
        .expect("request");
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        assert_ne!(
            body["error"]["code"], "route",
            "{method} {path} is not routed"
        );
        assert!(status < 500, "{method} {path}: {status} {body}");
    }
    // Height 0 is the genesis block, and block 1 names it as its parent.
    c.wait_height(1, LONG).await;
    let (status, genesis) = c.get(0, "/v1/blocks/0").await;
    assert_eq!(status, 200, "{genesis}");
    assert_eq!(genesis["header"]["height"], 0, "{genesis}");
    assert_eq!(genesis["header"]["tx_count"], 0, "{genesis}");
    let (_, first) = c.get(0, "/v1/blocks/1").await;
    assert_eq!(first["header"]["parent_hash"], genesis["hash"], "{first}");
    c.shutdown().await;
}

/// Every error has one shape, `{"error": {"code", "message"}}` as JSON with a stable code,
/// whatever refuses the request: the handlers, or the HTTP layer before them (a route that
/// does not exist, a method a route does not take, a path segment or query that does not
/// decode, a body that is not JSON, of the wrong shape, of another media type, or too large).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_error_is_the_documented_json_envelope() {
    let c = Cluster::start(1).await;
    let base = c.url(0);
    // A fresh connection per request: the server closes one after refusing an oversized body,
    // and a pooled connection reused after that would fail on the client's side.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut cases: Vec<(String, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "unknown route".into(),
            http.get(format!("{base}/v1/nothing-here")),
            404,
            "route",
        ),
        (
            "query that does not decode".into(),
            http.get(format!("{base}/v1/blocks/1?receipts=maybe")),
            400,
            "bad_query",
        ),
    ];
    // Each value has one text form; another form of the same value is refused, not guessed.
    for (path, code) in [
        (format!("/v1/accounts/{}", "CD".repeat(32)), "bad_account"),
        (format!("/v1/transactions/{}", "AB".repeat(32)), "bad_hash"),
        (format!("/v1/roles/{}", "Cd".repeat(32)), "bad_key"),
        ("/v1/blocks/+1".into(), "bad_height"),
        ("/v1/blocks/01".into(), "bad_height"),
        ("/v1/blocks/-1".into(), "bad_height"),
        ("/v1/governance/proposals/0".into(), "bad_proposal"),
        ("/v1/governance/proposals/+1".into(), "bad_proposal"),
    ] {
        cases.push((
            format!("GET {path}"),
            http.get(format!("{base}{path}")),
            400,
            code,
        ));
    }
    for (method, path) in tally_node::api::ROUTES {
        let path = path
            .replace("{hash}", &"ab".repeat(32))
            .replace("{id}", &"cd".repeat(32))
            .replace("{key}", &"cd".repeat(32))
            .replace("{height}", "1");
        let url = format!("{base}{path}");
        if *method == "get" {
            cases.push((
                format!("DELETE {path}"),
                http.delete(&url),
                405,
                "method_not_allowed",
            ));
            if let Some(prefix) = path.strip_suffix(&"cd".repeat(32)) {
                cases.push((
                    format!("GET {path} with a segment that is not UTF-8"),
                    http.get(format!("{base}{prefix}%FF%FE")),
                    400,
                    "bad_path",
                ));
            }
            continue;
        }
        let post = || http.post(&url);
        cases.extend([
            (
                format!("GET {path}"),
                http.get(&url),
                405,
                "method_not_allowed",
            ),
            (
                format!("POST {path} with broken JSON"),
                post().header("content-type", "application/json").body("{"),
                400,
                "malformed_json",
            ),
            (
                format!("POST {path} with JSON of the wrong shape"),
                post().json(&serde_json::json!({"tx": 5, "txs": 5})),
                400,
                "bad_body",
            ),
            (
                format!("POST {path} as text"),
                post().header("content-type", "text/plain").body("{}"),
                415,
                "unsupported_media_type",
            ),
            (
                format!("POST {path} over the body limit"),
                post()
                    .header("content-type", "application/json")
                    .body(vec![b' '; (1 << 20) + 1024]),
                413,
                "body_too_large",
            ),
        ]);
    }
    for (what, request, status, code) in cases {
        let r = request.send().await.expect("request");
        assert_eq!(r.status().as_u16(), status, "{what}");
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("application/json"),
            "{what}: {content_type}"
        );
        let body: serde_json::Value = r.json().await.expect("JSON body");
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{what}: {body}");
    }
    c.shutdown().await;
}
