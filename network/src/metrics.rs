//! Prometheus metrics, registered into the registry the caller passes (never the default one).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::error::Result;

/// Direction label values.
pub(crate) const IN: &str = "in";
/// Direction label values.
pub(crate) const OUT: &str = "out";

/// `cause` label values of `tally_network_connections_closed_total`.
pub(crate) const CLOSE_CAUSES: [&str; 4] = ["timed_out", "reset", "local", "other"];

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
    /// `tally_network_connections_closed_total{cause}`
    pub closed: IntCounterVec,
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
        let closed = IntCounterVec::new(
            Opts::new(
                "tally_network_connections_closed_total",
                "Connections to members closed, by cause: timed_out (the peer stopped acknowledging, \
                 e.g. a partition), reset (the peer's process or host went away), local (closed \
                 here: a ban, a removal, shutdown), other",
            ),
            &["cause"],
        )?;
        registry.register(Box::new(closed.clone()))?;
        for cause in CLOSE_CAUSES {
            closed.with_label_values(&[cause]);
        }
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
            closed,
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

/// The `cause` label of a closed connection: the first I/O error in the error's chain decides
/// (the muxer and the encryption layer wrap the socket's error).
pub(crate) fn close_cause(error: Option<&(dyn std::error::Error + 'static)>) -> &'static str {
    use std::io::ErrorKind;
    let Some(error) = error else {
        return "local";
    };
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                ErrorKind::TimedOut => return "timed_out",
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof => return "reset",
                _ => {}
            }
            if let Some(inner) = io.get_ref() {
                next = Some(inner);
                continue;
            }
        }
        next = e.source();
    }
    "other"
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::close_cause;

    #[test]
    fn a_close_is_named_by_the_socket_error_however_deeply_it_is_wrapped() {
        let timed_out = Error::new(ErrorKind::TimedOut, "connection timed out");
        assert_eq!(close_cause(Some(&timed_out)), "timed_out");
        // What yamux and noise do with the socket's error: wrap it as the source of another.
        let wrapped = Error::other(Error::new(ErrorKind::TimedOut, "connection timed out"));
        assert_eq!(close_cause(Some(&wrapped)), "timed_out");
        let reset = Error::other(Error::new(ErrorKind::ConnectionReset, "reset by peer"));
        assert_eq!(close_cause(Some(&reset)), "reset");
        assert_eq!(close_cause(Some(&Error::other("protocol error"))), "other");
        assert_eq!(close_cause(None), "local");
    }
}
