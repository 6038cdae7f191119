//! Four members form a mesh; gossip, direct messages and sync requests flow between them.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_members_form_a_mesh_and_gossip_reaches_the_other_three() {
    let nodes = cluster(4).await;
    for node in &nodes {
        assert_eq!(node.metric("tally_network_connected_peers", &[]), 3.0);
    }
    let others: Vec<&TestNode> = nodes[1..].iter().collect();
    publish_until_received(&nodes[0], &others, b"batch from node 0").await;
    for node in &others {
        let got = node.received("gossip");
        let msg = got
            .iter()
            .find(|r| r.data.starts_with(b"batch from node 0"))
            .expect("received");
        assert_eq!(msg.from, nodes[0].peer_id(), "author is the publisher");
    }
    // A second publisher works too, and traffic is counted per topic.
    let others: Vec<&TestNode> = [&nodes[0], &nodes[1], &nodes[3]].into_iter().collect();
    publish_until_received(&nodes[2], &others, b"batch from node 2").await;
    assert!(
        nodes[2].metric(
            "tally_network_messages_total",
            &[("direction", "out"), ("kind", TOPIC)]
        ) >= 1.0
    );
    assert!(
        nodes[1].metric(
            "tally_network_bytes_total",
            &[("direction", "in"), ("kind", TOPIC)]
        ) >= 34.0
    );
    for node in &nodes {
        node.handle.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_round_trip_and_direct_send() {
    let nodes = cluster(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);

    let answer = a
        .handle
        .request(b.peer_id(), b"missing batch 7".to_vec())
        .await
        .expect("request answered");
    assert_eq!(answer, b"re:missing batch 7");
    assert!(b.has_received("request", b"missing batch 7"));
    assert_eq!(b.received("request")[0].from, a.peer_id());

    b.handle
        .send(a.peer_id(), b"vote round 3".to_vec())
        .await
        .expect("queued");
    wait_until("direct message delivered", || {
        a.has_received("direct", b"vote round 3")
    })
    .await;
    assert_eq!(a.received("direct")[0].from, b.peer_id());
    assert!(
        a.metric(
            "tally_network_messages_total",
            &[("direction", "in"), ("kind", "direct")]
        ) >= 1.0
    );

    // Payloads over the configured limit are refused before they reach the wire.
    let too_big = vec![0u8; tally_network::SizeLimits::default().request + 1];
    assert!(matches!(
        a.handle.request(b.peer_id(), too_big).await,
        Err(tally_network::NetworkError::TooLarge { .. })
    ));
    for node in &nodes {
        node.handle.shutdown().await;
    }
}

/// More requests to one peer than a connection has streams for: each node keeps half of
/// `max_sync_streams` of its own in flight and queues the rest, so every one is answered. Sent
/// all at once (as before the queue), the peer refused those beyond its streams ("at
/// capacity") and they failed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_streams_of_a_connection_wait_their_turn_and_are_answered() {
    let nodes = cluster(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let streams = tally_network::NetworkConfig::new([1; 32], Vec::new()).max_sync_streams;
    let count = streams + streams / 2;
    let asks = (0..count).map(|i| {
        let mut data = SLOW_PREFIX.to_vec();
        data.extend_from_slice(format!(" batch {i}").as_bytes());
        a.handle.request(b.peer_id(), data)
    });
    let answers = futures::future::join_all(asks).await;
    let failed: Vec<String> = answers
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {count} failed: {failed:?}",
        failed.len()
    );
    for node in &nodes {
        node.handle.shutdown().await;
    }
}
