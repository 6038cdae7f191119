//! Prometheus metrics, registered into the registry the caller passes (never the default one).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::error::Result;

/// Direction label values.
pub(crate) const IN: &str = "in";
/// Direction label values.
pub(crate) const OUT: &str = "out";

/// The network's metrics.
#[derive(Clone)]
pub(crate) struct NetworkMetrics {
    /// `tally_network_connected_peers`
    pub connected_peers: IntGauge,
    /// `tally_network_refused_connections_total`
    pub refused_connections: IntCounter,
    /// `tally_network_messages_total{direction,kind}`
    pub messages: IntCounterVec,
    /// `tally_network_bytes_total{direction,kind}`
    pub bytes: IntCounterVec,
    /// `tally_network_rejected_messages_total{reason}`
    pub rejected: IntCounterVec,
    /// `tally_network_peer_bans_total`
    pub bans: IntCounter,
}

impl NetworkMetrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self> {
        let connected_peers = IntGauge::new(
            "tally_network_connected_peers",
            "Member peers with at least one open connection",
        )?;
        let refused_connections = IntCounter::new(
            "tally_network_refused_connections_total",
            "Connections refused because the remote peer is not a member",
        )?;
        let messages = IntCounterVec::new(
            Opts::new(
                "tally_network_messages_total",
                "Messages sent (out) and received (in), by topic or protocol",
            ),
            &["direction", "kind"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new(
                "tally_network_bytes_total",
                "Payload bytes sent (out) and received (in), by topic or protocol",
            ),
            &["direction", "kind"],
        )?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "tally_network_rejected_messages_total",
                "Inbound messages dropped or rejected, by reason",
            ),
            &["reason"],
        )?;
        let bans = IntCounter::new(
            "tally_network_peer_bans_total",
            "Members disconnected and banned for a while for misbehaviour",
        )?;
        registry.register(Box::new(bans.clone()))?;
        registry.register(Box::new(connected_peers.clone()))?;
        registry.register(Box::new(refused_connections.clone()))?;
        registry.register(Box::new(messages.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        // The reasons this crate gives itself exist from the start, at zero, so an alert on
        // their rate sees a series before the first rejection (the node adds its own reasons
        // through `penalise`).
        for reason in [
            "event_queue_full",
            "event_queue_peer_full",
            "gossip_invalid",
            "malformed",
            "non_member_author",
            "oversized",
            "response_too_large",
            "unknown_topic",
        ] {
            rejected.with_label_values(&[reason]);
        }
        Ok(Self {
            connected_peers,
            refused_connections,
            messages,
            bytes,
            rejected,
            bans,
        })
    }

    /// Counts one message of `len` payload bytes.
    pub(crate) fn message(&self, direction: &str, kind: &str, len: usize) {
        self.messages.with_label_values(&[direction, kind]).inc();
        self.bytes
            .with_label_values(&[direction, kind])
            .inc_by(len as u64);
    }

    /// Counts one rejected or dropped inbound message.
    pub(crate) fn reject(&self, reason: &str) {
        self.rejected.with_label_values(&[reason]).inc();
    }
}
