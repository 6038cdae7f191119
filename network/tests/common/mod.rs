//! Real swarms on 127.0.0.1 for the integration tests: a node per key, with a small driver
//! task that plays the node's part (validates gossip, answers requests, records what arrived).

#![allow(dead_code)]

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use ed25519_dalek::SigningKey;
use prometheus::Registry;
use tally_network::{
    tcp_addr, Acceptance, BootstrapPeer, Multiaddr, Network, NetworkConfig, NetworkEvent,
    NetworkHandle, PeerId, SizeLimits,
};

pub const TOPIC: &str = "tally/batches/1";
/// Gossip payloads starting with this are rejected by the test node's validator.
pub const INVALID_PREFIX: &[u8] = b"INVALID";
/// Requests starting with this are answered after [`SLOW_ANSWER`] (a busy peer).
pub const SLOW_PREFIX: &[u8] = b"SLOW";
pub const SLOW_ANSWER: Duration = Duration::from_millis(300);
/// Generous: the machine running the tests may be loaded.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A deterministic member key.
pub fn secret(i: u8) -> [u8; 32] {
    [i.wrapping_add(1); 32]
}

/// The ed25519 public key of `secret`, as the node computes it (ed25519-dalek).
pub fn public(secret: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(secret).verifying_key().to_bytes()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub kind: &'static str,
    pub from: PeerId,
    pub data: Vec<u8>,
}

pub struct TestNode {
    pub handle: NetworkHandle,
    pub registry: Registry,
    pub secret: [u8; 32],
    pub received: Arc<Mutex<Vec<Received>>>,
}

pub struct NodeSpec {
    pub secret: [u8; 32],
    pub members: Vec<[u8; 32]>,
    pub bootstrap: Vec<BootstrapPeer>,
    pub port: u16,
    pub limits: SizeLimits,
}

impl NodeSpec {
    pub fn new(secret: [u8; 32], members: &[[u8; 32]]) -> Self {
        Self {
            secret,
            members: members.iter().map(public).collect(),
            bootstrap: Vec::new(),
            port: 0,
            limits: SizeLimits::default(),
        }
    }

    pub fn bootstrap_to(mut self, nodes: &[&TestNode]) -> Self {
        for node in nodes {
            self.bootstrap.push(node.bootstrap_peer());
        }
        self
    }
}

impl TestNode {
    pub async fn start(spec: NodeSpec) -> TestNode {
        let mut config = NetworkConfig::new(
            spec.secret,
            vec![tcp_addr(std::net::Ipv4Addr::LOCALHOST, spec.port)],
        );
        config.members = spec.members;
        config.bootstrap = spec.bootstrap;
        config.topics = vec![TOPIC.to_string()];
        config.limits = spec.limits;
        config.redial_initial = Duration::from_millis(200);
        config.redial_max = Duration::from_secs(2);
        config.heartbeat = Duration::from_millis(200);
        config.request_timeout = Duration::from_secs(20);
        let registry = Registry::new();
        let (handle, mut events) = Network::spawn(config, &registry).expect("spawn network");
        let received = Arc::new(Mutex::new(Vec::new()));
        let (driver_handle, log) = (handle.clone(), received.clone());
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                drive(&driver_handle, &log, event).await;
            }
        });
        let node = TestNode {
            handle,
            registry,
            secret: spec.secret,
            received,
        };
        wait_until("listening", || !node.handle.listen_addrs().is_empty()).await;
        node
    }

    pub fn peer_id(&self) -> PeerId {
        self.handle.local_peer_id()
    }

    pub fn addr(&self) -> Multiaddr {
        self.handle.listen_addrs()[0].clone()
    }

    pub fn port(&self) -> u16 {
        self.addr()
            .iter()
            .find_map(|p| match p {
                tally_network::multiaddr::Protocol::Tcp(port) => Some(port),
                _ => None,
            })
            .expect("tcp listen address")
    }

    pub fn bootstrap_peer(&self) -> BootstrapPeer {
        BootstrapPeer {
            public_key: public(&self.secret),
            addr: self.addr(),
        }
    }

    pub fn received(&self, kind: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.kind == kind)
            .cloned()
            .collect()
    }

    pub fn has_received(&self, kind: &str, data: &[u8]) -> bool {
        self.received(kind).iter().any(|r| r.data == data)
    }

    pub fn connected_to(&self, other: &TestNode) -> bool {
        self.handle.connected_peers().contains(&other.peer_id())
    }

    /// Value of a counter or gauge in this node's registry (summed over label sets that contain
    /// every `(label, value)` in `labels`).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("encode metrics");
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter(|line| {
                labels
                    .iter()
                    .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

async fn drive(handle: &NetworkHandle, log: &Mutex<Vec<Received>>, event: NetworkEvent) {
    match event {
        NetworkEvent::Gossip {
            source,
            author,
            message_id,
            data,
            ..
        } => {
            let verdict = if data.starts_with(INVALID_PREFIX) {
                Acceptance::Reject
            } else {
                log.lock().unwrap().push(Received {
                    kind: "gossip",
                    from: author.unwrap_or(source),
                    data,
                });
                Acceptance::Accept
            };
            let _ = handle.report_validation(message_id, source, verdict).await;
        }
        NetworkEvent::Direct { from, data } => log.lock().unwrap().push(Received {
            kind: "direct",
            from,
            data,
        }),
        NetworkEvent::Request {
            from,
            data,
            respond,
        } => {
            let mut answer = b"re:".to_vec();
            answer.extend_from_slice(&data);
            let slow = data.starts_with(SLOW_PREFIX);
            log.lock().unwrap().push(Received {
                kind: "request",
                from,
                data,
            });
            if slow {
                tokio::spawn(async move {
                    tokio::time::sleep(SLOW_ANSWER).await;
                    respond.respond(answer);
                });
            } else {
                respond.respond(answer);
            }
        }
        NetworkEvent::PeerConnected(_) | NetworkEvent::PeerDisconnected(_) => {}
    }
}

/// Polls `condition` every 50 ms until it holds; panics after [`TIMEOUT`].
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls an async condition every 100 ms until it holds; panics after [`TIMEOUT`].
pub async fn wait_until_async<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `n` members; node i bootstraps to every earlier node, so they form a full mesh.
pub async fn cluster(n: u8) -> Vec<TestNode> {
    let keys: Vec<[u8; 32]> = (0..n).map(secret).collect();
    let mut nodes: Vec<TestNode> = Vec::new();
    for key in &keys {
        let earlier: Vec<&TestNode> = nodes.iter().collect();
        let spec = NodeSpec::new(*key, &keys).bootstrap_to(&earlier);
        nodes.push(TestNode::start(spec).await);
    }
    wait_fully_connected(&nodes).await;
    nodes
}

pub async fn wait_fully_connected(nodes: &[TestNode]) {
    let want = nodes.len() - 1;
    wait_until("full mesh of connections", || {
        nodes
            .iter()
            .all(|n| n.handle.connected_peers().len() >= want)
    })
    .await;
}

/// Publishes `data` from `from` (retrying while gossipsub has not yet learnt the others'
/// subscriptions) until every node in `to` has accepted it.
pub async fn publish_until_received(from: &TestNode, to: &[&TestNode], data: &[u8]) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut attempt = 0u32;
    loop {
        // Each attempt is a new message (gossipsub drops exact duplicates by id anyway).
        let mut payload = data.to_vec();
        if attempt > 0 {
            payload.extend_from_slice(format!("#{attempt}").as_bytes());
        }
        let _ = from.handle.publish(TOPIC, payload).await;
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while tokio::time::Instant::now() < until {
            if to.iter().all(|n| {
                n.received("gossip")
                    .iter()
                    .any(|r| r.data.starts_with(data))
            }) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gossip {:?} did not reach every node",
            String::from_utf8_lossy(data)
        );
        attempt += 1;
    }
}
