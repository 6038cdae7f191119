//! A Byzantine validator inside a real network: validator 3's key in a raw libp2p node that
//! sends correctly signed, forged messages to three honest validators (real sockets, real
//! sled, real HTTP). The honest ones keep finalizing, agree on the state, refuse every
//! forgery and count it in their metrics.

use ed25519_dalek::{Signer, SigningKey};
use std::time::Duration;
use tally_consensus::{
    timeout_digest, vote_digest, Block, BlockRequest, Digest, Message, QuorumCert, Timeout,
    ValidatorIndex, ValidatorSet, Vote, SYNC_CHUNK,
};
use tally_network::{BootstrapPeer, Network, NetworkConfig, NetworkHandle, PeerId};
use tally_node::codec;
use tally_node::runtime::batches::Batch;
use tally_node::runtime::wire::{DirectMessage, SyncRequest, SyncResponse, BATCH_TOPIC};
use tally_tests::cluster::Cluster;

const LONG: Duration = Duration::from_secs(90);
const BYZANTINE: usize = 3;

/// Validator 3's key in a bare network node: it can sign anything validator 3 may sign.
async fn impersonate(c: &Cluster) -> (NetworkHandle, SigningKey, Vec<PeerId>) {
    let key = c.testnet.validator_keys[BYZANTINE].clone();
    let validators = &c.testnet.genesis.validators;
    let mut config = NetworkConfig::new(
        key.to_bytes(),
        vec![c.options[BYZANTINE].p2p_listen.clone()],
    );
    config.members = validators.iter().map(|v| v.public_key.0).collect();
    config.topics = vec![BATCH_TOPIC.to_string()];
    config.bootstrap = validators
        .iter()
        .take(BYZANTINE)
        .map(|v| BootstrapPeer {
            public_key: v.public_key.0,
            addr: v.p2p_addr.parse().expect("multiaddr"),
        })
        .collect();
    let registry = prometheus::Registry::new();
    let (net, mut events) = Network::spawn(config, &registry).expect("network");
    // Drain what the honest validators send.
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let peers: Vec<PeerId> = validators
        .iter()
        .take(BYZANTINE)
        .map(|v| tally_network::peer_id_from_public_key(&v.public_key.0).expect("peer id"))
        .collect();
    let deadline = tokio::time::Instant::now() + LONG;
    while net.connected_peers().len() < BYZANTINE {
        assert!(tokio::time::Instant::now() < deadline, "never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (net, key, peers)
}

async fn metric(c: &Cluster, i: usize, series: &str) -> f64 {
    let url = format!("{}/metrics", c.url(i));
    let text = c
        .http
        .get(url)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_byzantine_validator_cannot_halt_fork_or_flood_the_honest_ones() {
    let mut c = Cluster::start(4).await;
    c.wait_height(3, LONG).await;
    c.kill(BYZANTINE).await;
    let (net, key, peers) = impersonate(&c).await;

    // 1. A batch gossiped by validator 3 that names validator 0 as its author.
    let tx = c.transfer(2, 5, 0, 1);
    let forged_batch = Batch {
        author: tally_node::primitives::AccountId(
            c.testnet.validator_keys[0].verifying_key().to_bytes(),
        ),
        nonce: 7,
        txs: vec![tx.clone()],
    };
    let _ = net.publish(BATCH_TOPIC, codec::encode(&forged_batch)).await;

    // 2. A flood of sync requests for unknown blocks asking for everything.
    let mut asks = Vec::new();
    for k in 0..24u8 {
        let request = SyncRequest::Blocks(BlockRequest {
            block: Digest([k; 32]),
            after_height: 0,
            max_blocks: u32::MAX,
        });
        let net = net.clone();
        let to = peers[0];
        asks.push(tokio::spawn(async move {
            net.request(to, codec::encode(&request)).await
        }));
    }
    let mut answered = 0;
    for a in asks {
        if let Ok(Ok(bytes)) = a.await {
            answered += 1;
            match codec::decode::<SyncResponse>(&bytes, 64 << 20) {
                Ok(SyncResponse::Blocks(blocks)) => assert!(blocks.len() <= SYNC_CHUNK as usize),
                other => panic!("unexpected answer {other:?}"),
            }
        }
    }
    assert!(
        answered < 24,
        "every one of 24 concurrent requests was served"
    );

    // 4. Two different votes for one round: equivocation, kept as evidence.
    let round = metric(&c, 0, "tally_consensus_round").await as u64 + 1;
    for block in [Digest([1; 32]), Digest([2; 32])] {
        let signature = key.sign(&vote_digest(0, round, 1, &block).0);
        let v = Message::Vote(Vote {
            epoch: 0,
            round,
            height: 1,
            block,
            voter: BYZANTINE as ValidatorIndex,
            signature,
        });
        let data = codec::encode(&DirectMessage::Consensus(v.to_bytes()));
        let _ = net.send(peers[0], data).await;
    }

    // 3. Timeouts carrying the committed root's certificate with a forged round near
    //    u64::MAX and no signatures (it once became an honest replica's highest QC).
    let set = ValidatorSet::new(
        0,
        c.testnet
            .genesis
            .validators
            .iter()
            .map(|v| v.public_key.0)
            .collect(),
    )
    .expect("validator set");
    let (_, root_qc) = Block::genesis(&set);
    let forged_qc = QuorumCert {
        round: u64::MAX - 2,
        signatures: Vec::new(),
        ..root_qc
    };
    //    Enough of them to cross the ban threshold.
    for round in [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, u64::MAX - 1] {
        let signature = key.sign(&timeout_digest(0, round, forged_qc.round).0);
        let t = Message::Timeout(Timeout {
            epoch: 0,
            round,
            high_qc: forged_qc.clone(),
            voter: BYZANTINE as ValidatorIndex,
            signature,
            entered_by: None,
        });
        for p in &peers {
            let data = codec::encode(&DirectMessage::Consensus(t.to_bytes()));
            let _ = net.send(*p, data).await;
        }
    }

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
    assert!(
        metric(
            &c,
            0,
            "tally_consensus_invalid_messages_total{reason=\"bad_timeout\"}"
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            &c,
            0,
            "tally_sync_requests_total{kind=\"blocks\",outcome=\"refused\"}"
        )
        .await
            >= 1.0
    );
    let wrong_author: f64 = {
        let mut sum = 0.0;
        for i in 0..BYZANTINE {
            sum += metric(
                &c,
                i,
                "tally_batches_rejected_total{reason=\"wrong_author\"}",
            )
            .await;
        }
        sum
    };
    assert!(
        wrong_author >= 1.0,
        "the forged batch was not refused as wrong_author"
    );
    assert!(metric(&c, 0, "tally_consensus_evidence_total{kind=\"vote\"}").await >= 1.0);
    // The forger crossed the ban threshold: disconnected and refused for a while.
    let deadline = tokio::time::Instant::now() + LONG;
    while metric(&c, 0, "tally_network_peer_bans_total").await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "never banned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !net.connected_peers().contains(&peers[0]),
        "still connected"
    );
    // The transaction in the forged batch was never committed.
    let (_, status) = c
        .get(0, &format!("/v1/transactions/{}", hex::encode(tx.hash().0)))
        .await;
    assert_ne!(status["status"], "committed", "{status}");
    net.shutdown().await;
    c.shutdown().await;
}
