//! Four validators in one process move transaction batches (~1000 txs, ~200 KB) at the rate the
//! node needs, with no batch lost. The rate is printed, not asserted (shared CI machines).

mod common;

use std::time::Instant;

use common::*;

const BATCH_BYTES: usize = 200_000;
const TXS_PER_BATCH: usize = 1000;
const BATCHES_PER_NODE: usize = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_gossip_batches_without_loss() {
    let nodes = cluster(4).await;
    // Warm up: every node has learnt every other node's subscription.
    for (i, node) in nodes.iter().enumerate() {
        let others: Vec<&TestNode> = nodes
            .iter()
            .filter(|n| n.peer_id() != node.peer_id())
            .collect();
        publish_until_received(node, &others, format!("warm-up {i}").as_bytes()).await;
    }

    let start = Instant::now();
    for round in 0..BATCHES_PER_NODE {
        for (i, node) in nodes.iter().enumerate() {
            let mut batch = vec![(round * 4 + i) as u8; BATCH_BYTES];
            batch[..8].copy_from_slice(b"BATCH---");
            batch[8] = i as u8;
            batch[9] = round as u8;
            node.handle
                .publish(TOPIC, batch)
                .await
                .expect("publish batch");
        }
    }
    let want = BATCHES_PER_NODE * 3;
    wait_until("every batch reaches every other validator", || {
        nodes.iter().all(|n| {
            n.received("gossip")
                .iter()
                .filter(|r| r.data.starts_with(b"BATCH---"))
                .count()
                >= want
        })
    })
    .await;
    let elapsed = start.elapsed().as_secs_f64();
    let txs = (BATCHES_PER_NODE * 4 * TXS_PER_BATCH) as f64;
    println!(
        "gossiped {} batches of {} KB to 3 peers each in {:.2}s: {:.0} tx/s",
        BATCHES_PER_NODE * 4,
        BATCH_BYTES / 1000,
        elapsed,
        txs / elapsed
    );
    // No duplicates delivered to the node: each batch is validated once per receiver.
    for node in &nodes {
        let batches = node
            .received("gossip")
            .iter()
            .filter(|r| r.data.starts_with(b"BATCH---"))
            .count();
        assert_eq!(batches, want, "each batch delivered exactly once");
    }
    for node in &nodes {
        node.handle.shutdown().await;
    }
}
