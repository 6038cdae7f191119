//! A governance validator-set change on a running 4-validator network: members vote one
//! validator out, every node switches to the new set after the boundary block, the remaining
//! three keep finalizing, and a restarted validator resumes in the new epoch.

use std::time::Duration;
use tally_ledger::compliance::GovAction;
use tally_ledger::primitives::Height;
use tally_ledger::tx::{Payload, Transaction};
use tally_node::keys;
use tally_tests::cluster::Cluster;

const EPOCH_BLOCKS: Height = 20;

async fn governance(cluster: &Cluster, member: usize, payload: Payload) {
    let key = cluster
        .testnet
        .named(&format!("member-{member}"))
        .expect("member key")
        .clone();
    let tx = Transaction {
        chain_id: cluster.testnet.genesis.chain_id.clone(),
        sender: keys::account_id(&key),
        sequence: 0,
        expiry_height: 1_000_000,
        payload,
    }
    .sign(&key);
    let (status, body) = cluster.submit(0, &tx).await;
    assert_eq!(status, 202, "{body}");
    let s = cluster
        .wait_final(0, &tx.hash(), Duration::from_secs(60))
        .await;
    let receipt = s.receipt.expect("receipt");
    assert_eq!(receipt.code.as_str(), "ok", "{}", receipt.reason);
}

/// Members vote the set down to `remaining` at the boundary four epochs ahead (the proposer,
/// member 0, and `voters`); returns that boundary.
async fn vote_set_change(
    cluster: &Cluster,
    remaining: Vec<tally_ledger::genesis::GenesisValidator>,
    voters: std::ops::Range<usize>,
) -> Height {
    let boundary = (cluster.height(0) / EPOCH_BLOCKS + 4) * EPOCH_BLOCKS;
    governance(
        cluster,
        0,
        Payload::Propose {
            action: GovAction::SetValidators {
                validators: remaining,
            },
            effective_height: boundary,
        },
    )
    .await;
    for m in voters {
        let vote = Payload::Vote {
            proposal: 1,
            approve: true,
        };
        governance(cluster, m, vote).await;
    }
    boundary
}

async fn status(cluster: &Cluster, i: usize) -> serde_json::Value {
    let (code, v) = cluster.get(i, "/v1/status").await;
    assert_eq!(code, 200, "{v}");
    v
}

async fn wait_for(what: &str, timeout: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !ok().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_vote_a_validator_out_and_the_rest_carry_on_in_the_next_epoch() {
    let mut cluster =
        Cluster::start_with_genesis(4, |g| g.params.epoch_blocks = EPOCH_BLOCKS, |_| {}).await;
    let remaining = cluster.testnet.genesis.validators[..3].to_vec();
    // A boundary far enough ahead for three members to propose and vote.
    let boundary = vote_set_change(&cluster, remaining.clone(), 1..3).await;
    assert!(
        cluster.height(0) < boundary,
        "the vote took too long for this boundary"
    );

    // Past the boundary every validator that stays is in epoch 1 with three validators.
    let after = boundary + 10;
    for i in 0..3 {
        let shared = cluster.node(i).shared().clone();
        tokio::time::timeout(Duration::from_secs(120), shared.wait_height(after))
            .await
            .unwrap_or_else(|_| panic!("validator {i} stuck at {}", shared.height()));
        let s = status(&cluster, i).await;
        assert_eq!(s["epoch"], 1, "{s}");
        assert_eq!(s["validators"].as_array().map(Vec::len), Some(3), "{s}");
    }
    let (_, rules) = cluster.get(0, "/v1/compliance/rules").await;
    assert_eq!(rules["validators"]["epoch"], 1, "{rules}");
    assert_eq!(rules["validators"]["first_height"], boundary + 1, "{rules}");

    // The removed validator executed the boundary block, follows the change and refuses
    // submissions: it no longer orders transactions.
    wait_for(
        "validator 3 to see epoch 1",
        Duration::from_secs(60),
        async || status(&cluster, 3).await["epoch"] == 1,
    )
    .await;
    assert!(cluster.height(3) >= boundary);
    let (code, body) = cluster.submit(3, &cluster.transfer(0, 1, 0, 5)).await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (503, Some("not_a_validator")),
        "{body}"
    );

    // Payments still finalize, on all three.
    let pay = cluster.transfer(0, 1, 0, 5);
    let (code, body) = cluster.submit(1, &pay).await;
    assert_eq!(code, 202, "{body}");
    let mut heights = Vec::new();
    for i in 0..3 {
        let s = cluster
            .wait_final(i, &pay.hash(), Duration::from_secs(60))
            .await;
        assert_eq!(s.status, "committed");
        heights.push(s.height.expect("height"));
    }
    assert!(
        heights.iter().all(|h| *h == heights[0] && *h > boundary),
        "{heights:?}"
    );
    // Its block is certified by the new set: the inclusion proof checks against those keys.
    let keys: Vec<_> = remaining.iter().map(|v| v.public_key).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let proof = loop {
        let s = cluster
            .wait_final(0, &pay.hash(), Duration::from_secs(60))
            .await;
        if let Some(p) = s.proof {
            break p;
        }
        assert!(tokio::time::Instant::now() < deadline, "no certificate");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    proof.verify(&keys).expect("proof verifies against epoch 1");
    assert!(proof
        .certificate
        .signatures
        .iter()
        .all(|(v, _)| keys.contains(v)));

    // From the next boundary on, the removed validator is no longer admitted on the network:
    // the others close its connections and refuse its redials.
    wait_for(
        "validator 3 disconnected after the next boundary",
        Duration::from_secs(120),
        async || {
            let url = format!("{}/metrics", cluster.url(0));
            let text = match cluster.http.get(url).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            cluster.height(0) > boundary + EPOCH_BLOCKS
                && tally_tests::metric_sum(&text, "tally_network_connected_peers") == 2.0
        },
    )
    .await;

    // A validator restarted in the new epoch picks it up from its state and keeps going.
    cluster.kill(2).await;
    let resume = cluster.height(0) + 5;
    cluster.restart(2).await;
    for i in 0..3 {
        let shared = cluster.node(i).shared().clone();
        tokio::time::timeout(Duration::from_secs(120), shared.wait_height(resume))
            .await
            .unwrap_or_else(|_| panic!("validator {i} stuck at {}", shared.height()));
    }
    assert_eq!(status(&cluster, 2).await["epoch"], 1);
    for h in [boundary, boundary + 1, resume] {
        let roots: Vec<_> = (0..3)
            .map(|i| {
                cluster
                    .node(i)
                    .shared()
                    .store
                    .block(h)
                    .expect("store")
                    .map(|b| b.header.state_root)
            })
            .collect();
        assert!(
            roots.iter().all(|r| r.is_some() && *r == roots[0]),
            "height {h}: {roots:?}"
        );
    }
    cluster.shutdown().await;
}

/// A validator that was down while the set changed catches up across the boundary: it checks
/// the blocks of epoch 0 with the set of epoch 0 and those of epoch 1 with the set its own
/// execution of the boundary block produced, never with a set a peer names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_down_across_a_set_change_catches_up_through_the_boundary() {
    let mut cluster =
        Cluster::start_with_genesis(5, |g| g.params.epoch_blocks = EPOCH_BLOCKS, |_| {}).await;
    let remaining = cluster.testnet.genesis.validators[..4].to_vec();
    // More than two thirds of five members: the proposer and three votes.
    let boundary = vote_set_change(&cluster, remaining, 1..4).await;
    // Validator 3 stops in epoch 0; four of five keep the old set going, then three of the
    // new four carry epoch 1.
    cluster.kill(3).await;
    let down_at = cluster.height(0);
    assert!(
        down_at < boundary,
        "the vote took too long for this boundary"
    );
    let ahead = boundary + 2 * EPOCH_BLOCKS;
    for i in [0, 1, 2] {
        let shared = cluster.node(i).shared().clone();
        tokio::time::timeout(Duration::from_secs(180), shared.wait_height(ahead))
            .await
            .unwrap_or_else(|_| panic!("validator {i} stuck at {}", shared.height()));
    }

    cluster.restart(3).await;
    let target = cluster.height(0) + 5;
    let shared = cluster.node(3).shared().clone();
    tokio::time::timeout(Duration::from_secs(180), shared.wait_height(target))
        .await
        .unwrap_or_else(|_| panic!("validator 3 stuck at {}", shared.height()));
    let s = status(&cluster, 3).await;
    assert_eq!(s["epoch"], 1, "{s}");
    assert_eq!(s["validators"].as_array().map(Vec::len), Some(4), "{s}");
    // The removed validator 4 stops at the boundary: compare the four of the new set, each
    // once it has executed the target height.
    cluster.kill(4).await;
    for i in 0..4 {
        let shared = cluster.node(i).shared().clone();
        tokio::time::timeout(Duration::from_secs(60), shared.wait_height(target))
            .await
            .unwrap_or_else(|_| panic!("validator {i} stuck at {}", shared.height()));
    }
    for h in [boundary, boundary + 1, target] {
        let roots = cluster.state_roots(h);
        assert_eq!(roots.len(), 4);
        assert!(
            roots.iter().all(|r| r.is_some() && *r == roots[0]),
            "height {h}: {roots:?}"
        );
    }
    // Back in the set: a payment submitted to it finalizes everywhere.
    let pay = cluster.transfer(0, 1, 0, 5);
    let (code, body) = cluster.submit(3, &pay).await;
    assert_eq!(code, 202, "{body}");
    for i in [0, 3] {
        let s = cluster
            .wait_final(i, &pay.hash(), Duration::from_secs(60))
            .await;
        assert_eq!(s.status, "committed");
    }
    cluster.shutdown().await;
}
