//! A Byzantine validator inside a real network: validator 3's key in a bare libp2p node that
//! sends correctly signed, forged messages to three honest validators (real sockets, real
//! sled, real HTTP). The honest ones keep finalizing, agree on the state, refuse every
//! forgery, count it in their metrics, keep the evidence and ban the forger.

use std::time::Duration;
use tally_ledger::primitives::AccountId;
use tally_tests::cluster::Cluster;
use tally_tests::forger::Forger;

const LONG: Duration = Duration::from_secs(90);
const BYZANTINE: usize = 3;

async fn metric(c: &Cluster, i: usize, series: &str) -> f64 {
    tally_tests::metric_sum(&c.metrics(i).await, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_byzantine_validator_cannot_halt_fork_or_flood_the_honest_ones() {
    let mut c = Cluster::start(4).await;
    c.wait_height(3, LONG).await;
    c.kill(BYZANTINE).await;
    let key = c.testnet.validator_keys[BYZANTINE].clone();
    let listen = c.options[BYZANTINE].p2p_listen.clone();
    let forger = Forger::join(key, BYZANTINE, listen, &c.testnet.genesis).await;

    // A block from an hour in the future, on a real certificate, in a round the forger leads:
    // no honest validator votes for it (a clock that runs ahead would freeze execution time).
    let future = forger
        .propose_from_the_future(Duration::from_secs(3600), LONG)
        .await
        .expect("a round the forger leads");
    let invalid = "tally_consensus_ignored_messages_total{reason=\"invalid_payload\"}";
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let mut refused = 0.0;
        for i in 0..BYZANTINE {
            refused += metric(&c, i, invalid).await;
        }
        if refused >= BYZANTINE as f64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the future block was not refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A batch gossiped by validator 3 that names validator 0 as its author.
    let tx = c.transfer(2, 5, 0, 1);
    let author = AccountId(c.testnet.validator_keys[0].verifying_key().to_bytes());
    forger.batch_in_the_name_of(author, tx.clone()).await;
    // A batch in the forger's own name with a forged signature, which it attests itself: one
    // attestation where two are needed. Validator 0 (the forger's checker) verifies it and
    // refuses it; validators 1 and 2 hold it unattested, check it themselves when the
    // attestations do not come, and refuse it too.
    let forged_tx = forger.attest_a_forged_batch(c.transfer(3, 6, 0, 1)).await;
    // Floods of concurrent sync requests, each asking for everything: more than the per-peer
    // limit at once are refused (a few floods, in case one is answered as fast as it arrives).
    let refused = "tally_sync_requests_total{kind=\"blocks\",outcome=\"refused\"}";
    for _ in 0..10 {
        forger.sync_flood(24).await;
        if metric(&c, 0, refused).await >= 1.0 {
            break;
        }
    }
    // Two different votes for one round: evidence.
    let round = metric(&c, 0, "tally_consensus_round").await as u64 + 1;
    forger.equivocate(round).await;
    // Timeouts carrying the genesis certificate with a forged round near u64::MAX and no
    // signatures (one used to become an honest replica's highest QC and halt it), enough of
    // them to cross the ban threshold.
    let mut rounds: Vec<u64> = (5..16).collect();
    rounds.push(u64::MAX - 1);
    forger.forged_root_timeouts(&rounds).await;

    // The honest three keep finalizing and agree.
    let now = c.height(0);
    c.wait_height(now + 10, LONG).await;
    let h = c.min_height();
    let roots = c.state_roots(h);
    assert!(
        roots[..BYZANTINE]
            .iter()
            .all(|r| r.is_some() && *r == roots[0]),
        "{roots:?}"
    );
    for i in 0..BYZANTINE {
        let round = metric(&c, i, "tally_consensus_round").await;
        assert!(round < 10_000.0, "validator {i} jumped to round {round}");
    }
    let reason = |r: &str| format!("tally_consensus_invalid_messages_total{{reason=\"{r}\"}}");
    assert!(metric(&c, 0, &reason("bad_timeout")).await >= 1.0);
    assert!(metric(&c, 0, refused).await >= 1.0);
    assert!(metric(&c, 0, "tally_consensus_evidence_total{kind=\"vote\"}").await >= 1.0);
    let mut wrong_author = 0.0;
    for i in 0..BYZANTINE {
        let series = "tally_batches_rejected_total{reason=\"wrong_author\"}";
        wrong_author += metric(&c, i, series).await;
    }
    assert!(
        wrong_author >= 1.0,
        "the forged batch was not refused as wrong_author"
    );
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let mut bad = Vec::new();
        for i in 0..BYZANTINE {
            let series = "tally_batches_rejected_total{reason=\"bad_transaction\"}";
            bad.push(metric(&c, i, series).await);
        }
        if bad.iter().all(|b| *b >= 1.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the attested forgery was not refused everywhere: {bad:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metric(&c, 0, &reason("bad_attestation")).await >= 1.0);
    // The forger crossed the ban threshold: disconnected and refused for a while.
    let deadline = tokio::time::Instant::now() + LONG;
    while metric(&c, 0, "tally_network_peer_bans_total").await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "never banned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !forger.net.connected_peers().contains(&forger.peers[0]),
        "still connected"
    );
    // What committed at the future block's height is an honest block of the present.
    let (status, block) = c.get(0, &format!("/v1/blocks/{}", future.height)).await;
    assert_eq!(status, 200, "{block}");
    let stamped = block["header"]["timestamp_ms"].as_u64().expect("timestamp");
    assert!(stamped < future.timestamp_ms - 3_000_000, "{block}");
    // The transaction in the forged batch was never committed.
    let (_, status) = c
        .get(0, &format!("/v1/transactions/{}", hex::encode(tx.hash().0)))
        .await;
    assert_ne!(status["status"], "committed", "{status}");
    let (_, status) = c
        .get(
            0,
            &format!("/v1/transactions/{}", hex::encode(forged_tx.hash().0)),
        )
        .await;
    assert_ne!(status["status"], "committed", "{status}");
    forger.net.shutdown().await;
    c.shutdown().await;
}
