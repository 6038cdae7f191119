//! Configuration of one node's network.

use std::time::Duration;

use libp2p::Multiaddr;

/// A peer to dial at start: its ed25519 public key and an address it listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapPeer {
    /// The peer's 32-byte ed25519 public key (its identity key).
    pub public_key: [u8; 32],
    /// Where it listens, e.g. `/ip4/10.0.0.2/tcp/7000`.
    pub addr: Multiaddr,
}

/// Size limits on everything that crosses the wire. Inbound payloads over a limit are dropped,
/// counted and penalised; outbound ones are refused with [`crate::NetworkError::TooLarge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimits {
    /// Largest gossip payload (a transaction batch), in bytes.
    pub gossip: usize,
    /// Largest direct message (e.g. a consensus vote or proposal), in bytes.
    pub direct: usize,
    /// Largest sync request, in bytes.
    pub request: usize,
    /// Largest sync response (e.g. a block with its batches), in bytes.
    pub response: usize,
}

impl Default for SizeLimits {
    fn default() -> Self {
        Self {
            gossip: 4 << 20,
            direct: 4 << 20,
            request: 1 << 20,
            response: 16 << 20,
        }
    }
}

/// Everything [`crate::Network::spawn`] needs.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The node's 32-byte ed25519 secret key; the libp2p identity is derived from it.
    pub secret_key: [u8; 32],
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/7000` (`tcp/0` picks a free port).
    pub listen_addrs: Vec<Multiaddr>,
    /// Peers to dial at start (and to redial, with backoff, whenever disconnected).
    pub bootstrap: Vec<BootstrapPeer>,
    /// ed25519 public keys of every member allowed to connect. The node's own key may be
    /// included; it is ignored.
    pub members: Vec<[u8; 32]>,
    /// Gossip topics to subscribe to, e.g. `tally/batches/1`.
    pub topics: Vec<String>,
    /// Size limits.
    pub limits: SizeLimits,
    /// Most connections kept to one peer (2 lets simultaneous dials from both sides succeed).
    pub max_connections_per_peer: u32,
    /// Most established connections in total.
    pub max_connections: u32,
    /// First redial delay after a disconnect or failed dial; doubles on each failure.
    pub redial_initial: Duration,
    /// Upper bound of the redial delay. Kept short: a member is worth a dial every few seconds,
    /// and after a partition heals the links come back within about this long.
    pub redial_max: Duration,
    /// How long a dial (TCP connect, noise handshake, yamux) may take before it fails and is
    /// retried: a dial across a partition otherwise waits on the kernel's SYN backoff (1, 3,
    /// 7 s ...) long after the partition heals.
    pub dial_timeout: Duration,
    /// How often each connection is pinged. A ping keeps unacknowledged data on a link that
    /// has gone silent, so `dead_link_after` applies to it even when nothing else is sent.
    pub ping_interval: Duration,
    /// How long data sent on a connection may stay unacknowledged by the peer's kernel (or
    /// unsent behind a closed window) before the connection is dropped (`TCP_USER_TIMEOUT`)
    /// and the peer redialled. Without it the kernel backs off its retransmissions across a
    /// partition (to minutes), and after the heal messages wait for the next one.
    pub dead_link_after: Duration,
    /// How long a direct message or sync request waits for its answer.
    pub request_timeout: Duration,
    /// Gossipsub heartbeat (mesh maintenance, gossip emission, score decay).
    pub heartbeat: Duration,
    /// Most inbound events waiting for the node. When the node falls this far behind, further
    /// inbound messages are dropped and counted (`reason="event_queue_full"`) rather than
    /// stalling the network task.
    pub event_queue: usize,
    /// Most payload bytes of inbound events waiting for the node, from all peers together.
    pub event_queue_bytes: usize,
    /// Most payload bytes waiting from any one peer (`reason="event_queue_peer_full"` past
    /// it): one peer cannot take the queue from the others.
    pub event_queue_peer_bytes: usize,
    /// Application score at or below which a peer is disconnected and banned (each
    /// penalty is -10, decaying by 10% a second; gossipsub's own score counts too).
    pub ban_threshold: f64,
    /// First ban; each further ban of the same peer doubles it.
    pub ban_initial: Duration,
    /// Longest ban.
    pub ban_max: Duration,
    /// Most concurrent substreams on one connection (yamux). Honest traffic needs a handful,
    /// but a peer may open up to 256 streams the other side has not acknowledged yet, and
    /// after a partition heals they all arrive at once on top of the open ones: a limit
    /// below that closes the connection (`TooManyStreams`) just as it recovers.
    pub max_streams_per_connection: usize,
    /// Most concurrent direct-message requests per connection.
    pub max_direct_streams: usize,
    /// Most concurrent sync requests per connection, both ways: a node keeps at most half
    /// of them in flight to one peer, and queues the rest.
    pub max_sync_streams: usize,
}

impl NetworkConfig {
    /// A config with the defaults of a 4..20 member consortium; set members, bootstrap peers
    /// and topics on the result.
    pub fn new(secret_key: [u8; 32], listen_addrs: Vec<Multiaddr>) -> Self {
        Self {
            secret_key,
            listen_addrs,
            bootstrap: Vec::new(),
            members: Vec::new(),
            topics: Vec::new(),
            limits: SizeLimits::default(),
            max_connections_per_peer: 2,
            max_connections: 128,
            redial_initial: Duration::from_millis(500),
            redial_max: Duration::from_secs(5),
            dial_timeout: Duration::from_secs(3),
            ping_interval: Duration::from_secs(1),
            dead_link_after: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_millis(500),
            event_queue: 16_384,
            event_queue_bytes: 256 << 20,
            event_queue_peer_bytes: 64 << 20,
            ban_threshold: -100.0,
            ban_initial: Duration::from_secs(30),
            ban_max: Duration::from_secs(3600),
            max_streams_per_connection: 512,
            max_direct_streams: 128,
            max_sync_streams: 32,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.listen_addrs.is_empty() {
            return Err("listen_addrs: at least one address is needed".into());
        }
        if self.max_connections_per_peer == 0 || self.max_connections == 0 {
            return Err("max_connections_per_peer / max_connections: must be positive".into());
        }
        if self.redial_initial.is_zero() || self.redial_max < self.redial_initial {
            return Err("redial_initial / redial_max: need 0 < initial <= max".into());
        }
        if self.dial_timeout.is_zero() || self.ping_interval.is_zero() {
            return Err("dial_timeout / ping_interval: must be positive".into());
        }
        if self.dead_link_after < Duration::from_secs(1)
            || self.dead_link_after < self.ping_interval
        {
            return Err("dead_link_after: must be at least 1 s and at least ping_interval".into());
        }
        if self.heartbeat.is_zero() {
            return Err("heartbeat: must be positive".into());
        }
        if self.event_queue == 0 {
            return Err("event_queue: must be positive".into());
        }
        let l = &self.limits;
        let largest = l.gossip.max(l.direct).max(l.request);
        if self.event_queue_peer_bytes < largest
            || self.event_queue_bytes < self.event_queue_peer_bytes
        {
            return Err(
                "event_queue_peer_bytes / event_queue_bytes: need largest message <= per peer <= total"
                    .into(),
            );
        }
        if self.ban_threshold.is_nan()
            || self.ban_threshold >= 0.0
            || self.ban_initial.is_zero()
            || self.ban_max < self.ban_initial
        {
            return Err(
                "ban_threshold / ban_initial / ban_max: need threshold < 0 and 0 < initial <= max"
                    .into(),
            );
        }
        if self.max_direct_streams == 0
            || self.max_sync_streams == 0
            || self.max_streams_per_connection < self.max_direct_streams + self.max_sync_streams + 8
        {
            return Err("max_streams_per_connection: must exceed max_direct_streams + max_sync_streams + 8 (gossip, identify, ping)".into());
        }
        if [l.gossip, l.direct, l.request, l.response]
            .iter()
            .any(|&n| n == 0 || n > u32::MAX as usize / 2)
        {
            return Err("limits: every limit must be between 1 byte and 2 GiB".into());
        }
        Ok(())
    }
}
