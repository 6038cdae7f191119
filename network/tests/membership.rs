//! Membership enforcement: outsiders are refused, removed members are cut off, restarted
//! members are redialled.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_valid_key_that_is_not_a_member_cannot_connect_nor_publish() {
    let nodes = cluster(3).await;
    let members: Vec<[u8; 32]> = (0..3).map(secret).collect();
    // The outsider believes in a membership that includes itself and dials every member.
    let mut its_view = members.clone();
    its_view.push(secret(9));
    let refs: Vec<&TestNode> = nodes.iter().collect();
    let outsider = TestNode::start(NodeSpec::new(secret(9), &its_view).bootstrap_to(&refs)).await;

    wait_until("members refuse the outsider", || {
        nodes
            .iter()
            .all(|n| n.metric("tally_network_refused_connections_total", &[]) >= 1.0)
    })
    .await;
    // Give it several redial rounds: it must never get in.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for node in &nodes {
            assert!(!node.connected_to(&outsider), "member accepted an outsider");
        }
    }
    assert!(outsider
        .handle
        .publish(TOPIC, b"forged batch".to_vec())
        .await
        .is_err());
    assert!(outsider
        .handle
        .request(nodes[0].peer_id(), b"hello".to_vec())
        .await
        .is_err());
    // Members still talk to each other, and nothing from the outsider arrived.
    publish_until_received(&nodes[0], &[&nodes[1], &nodes[2]], b"members only").await;
    for node in &nodes {
        assert!(node
            .received("gossip")
            .iter()
            .all(|r| r.from != outsider.peer_id()));
        assert!(node.received("request").is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_at_runtime_is_disconnected_at_once() {
    let nodes = cluster(3).await;
    let (removed, remaining) = (&nodes[2], &nodes[..2]);
    let keep = [secret(0), secret(1)].map(|s| public(&s));
    for node in remaining {
        node.handle.set_members(&keep).await.expect("set members");
    }
    wait_until("removed member disconnected", || {
        remaining.iter().all(|n| !n.connected_to(removed))
            && removed.handle.connected_peers().is_empty()
    })
    .await;
    // It keeps redialling (it still thinks it is a member) and is refused every time.
    let refused_before: f64 = remaining
        .iter()
        .map(|n| n.metric("tally_network_refused_connections_total", &[]))
        .sum();
    wait_until("removed member refused on redial", || {
        remaining
            .iter()
            .map(|n| n.metric("tally_network_refused_connections_total", &[]))
            .sum::<f64>()
            > refused_before
    })
    .await;
    assert!(remaining.iter().all(|n| !n.connected_to(removed)));
    // The remaining members still gossip, and the removed one no longer hears it.
    publish_until_received(&nodes[0], &[&nodes[1]], b"after removal").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!removed
        .received("gossip")
        .iter()
        .any(|r| r.data.starts_with(b"after removal")));
    assert!(remaining[0]
        .handle
        .request(removed.peer_id(), b"x".to_vec())
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_is_redialled_and_rejoins() {
    let mut nodes = cluster(4).await;
    let keys: Vec<[u8; 32]> = (0..4).map(secret).collect();
    let restarted = nodes.pop().expect("four nodes");
    let port = restarted.port();
    restarted.handle.shutdown().await;
    wait_until("others notice the restart", || {
        nodes.iter().all(|n| n.handle.connected_peers().len() == 2)
    })
    .await;

    // Same key, same address, no bootstrap peers: the others must find it by redialling.
    let mut spec = NodeSpec::new(keys[3], &keys);
    spec.port = port;
    let back = TestNode::start(spec).await;
    nodes.push(back);
    wait_fully_connected(&nodes).await;
    let others: Vec<&TestNode> = nodes[..3].iter().collect();
    publish_until_received(&nodes[3], &others, b"back online").await;
    publish_until_received(&nodes[0], &[&nodes[3]], b"welcome back").await;
}
