//! Oversized and garbage input from a member is rejected, counted and penalised; nothing
//! crashes and the sender can still talk afterwards.

mod common;

use std::time::Duration;

use common::*;
use tally_network::SizeLimits;

const SMALL: SizeLimits = SizeLimits {
    gossip: 64 << 10,
    direct: 16 << 10,
    request: 16 << 10,
    response: 64 << 10,
};

/// An honest receiver with small limits and a member ("sloppy") whose own limits are larger,
/// so it puts on the wire what the receiver must refuse.
async fn pair() -> (TestNode, TestNode) {
    let keys = [secret(0), secret(1)];
    let mut spec = NodeSpec::new(keys[0], &keys);
    spec.limits = SMALL;
    let receiver = TestNode::start(spec).await;
    let mut spec = NodeSpec::new(keys[1], &keys).bootstrap_to(&[&receiver]);
    spec.limits = SizeLimits {
        gossip: 1 << 20,
        direct: 1 << 20,
        request: 1 << 20,
        response: 1 << 20,
    };
    let sloppy = TestNode::start(spec).await;
    let nodes = [receiver, sloppy];
    wait_fully_connected(&nodes).await;
    let [receiver, sloppy] = nodes;
    // Gossip works between them before anything bad happens.
    publish_until_received(&sloppy, &[&receiver], b"good batch").await;
    (receiver, sloppy)
}

async fn score(of: &TestNode, at: &TestNode) -> f64 {
    at.handle
        .peer_score(of.peer_id())
        .await
        .expect("network running")
        .expect("peer is scored")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gossip_is_rejected_and_the_senders_score_drops() {
    let (receiver, sloppy) = pair().await;
    let before = score(&sloppy, &receiver).await;
    let mut garbage = INVALID_PREFIX.to_vec();
    garbage.extend_from_slice(&[0xff, 0x00, 0x13, 0x37]);
    sloppy
        .handle
        .publish(TOPIC, garbage)
        .await
        .expect("published");
    wait_until_async("score drops after a rejected message", || async {
        score(&sloppy, &receiver).await < before
    })
    .await;
    assert!(
        receiver.metric(
            "tally_network_rejected_messages_total",
            &[("reason", "gossip_invalid")]
        ) >= 1.0
    );
    assert!(receiver
        .received("gossip")
        .iter()
        .all(|r| !r.data.starts_with(INVALID_PREFIX)));
    // Still alive and still listening to the sender's valid messages.
    publish_until_received(&sloppy, &[&receiver], b"good again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_gossip_is_rejected_and_the_senders_score_drops() {
    let (receiver, sloppy) = pair().await;
    let before = score(&sloppy, &receiver).await;
    let oversized = vec![7u8; (SMALL.gossip) + 4096];
    sloppy
        .handle
        .publish(TOPIC, oversized)
        .await
        .expect("published under the sender's limit");
    wait_until_async("score drops after an oversized message", || async {
        score(&sloppy, &receiver).await < before
    })
    .await;
    assert!(receiver
        .received("gossip")
        .iter()
        .all(|r| r.data.len() <= SMALL.gossip));
    publish_until_received(&sloppy, &[&receiver], b"small again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_direct_message_and_request_are_dropped_counted_and_penalised() {
    let (receiver, sloppy) = pair().await;
    let before = score(&sloppy, &receiver).await;
    sloppy
        .handle
        .send(receiver.peer_id(), vec![1u8; SMALL.direct + 1])
        .await
        .expect("queued");
    assert!(sloppy
        .handle
        .request(receiver.peer_id(), vec![2u8; SMALL.request + 1])
        .await
        .is_err());
    wait_until("oversized frames counted", || {
        receiver.metric(
            "tally_network_rejected_messages_total",
            &[("reason", "oversized")],
        ) >= 2.0
    })
    .await;
    assert!(score(&sloppy, &receiver).await < before);
    assert!(receiver.received("direct").is_empty());
    assert!(receiver.received("request").is_empty());
    // A well-sized message still goes through.
    sloppy
        .handle
        .send(receiver.peer_id(), b"fine".to_vec())
        .await
        .expect("queued");
    wait_until("small direct message delivered", || {
        receiver.has_received("direct", b"fine")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_keeps_misbehaving_is_disconnected_and_banned() {
    let (receiver, sloppy) = pair().await;
    // Each oversized frame costs 10 points; the ban threshold is -100.
    for _ in 0..12 {
        let _ = sloppy
            .handle
            .send(receiver.peer_id(), vec![1u8; SMALL.direct + 1])
            .await;
    }
    wait_until("the misbehaving member is banned", || {
        receiver.metric("tally_network_peer_bans_total", &[]) >= 1.0
    })
    .await;
    wait_until("and disconnected", || !receiver.connected_to(&sloppy)).await;
    // Its redials are refused while the ban lasts (30 s at first).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!receiver.connected_to(&sloppy));
    assert!(!sloppy.connected_to(&receiver));
}
