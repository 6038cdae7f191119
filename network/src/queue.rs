//! The inbound event queue, bounded in bytes as well as in events, with a share per peer.
//!
//! Every event the network hands to the node carries a [`Charge`] for its payload bytes
//! (plus a fixed overhead, so that empty messages cost something). The charge is taken from
//! the sending peer's share and from the total before the event is queued, and given back when
//! the node takes the event out. A peer that floods fills only its own share: its further
//! messages are dropped and counted, everyone else's still get through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use libp2p::PeerId;
use tokio::sync::mpsc;

use crate::handle::NetworkEvent;

/// Bytes charged per event on top of its payload.
pub(crate) const EVENT_OVERHEAD: usize = 256;

#[derive(Default)]
struct Usage {
    total: usize,
    per_peer: HashMap<PeerId, usize>,
}

/// The byte budget shared by the network task (which charges) and the receiver (which
/// releases).
#[derive(Clone)]
pub(crate) struct Budget {
    usage: Arc<Mutex<Usage>>,
    total: usize,
    per_peer: usize,
}

/// Why an event was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The queue as a whole is full.
    Full,
    /// This peer's share is full.
    PeerFull,
}

/// Bytes held by one queued event; released on drop.
pub(crate) struct Charge {
    usage: Arc<Mutex<Usage>>,
    peer: Option<PeerId>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        let Ok(mut u) = self.usage.lock() else {
            return;
        };
        u.total = u.total.saturating_sub(self.bytes);
        if let Some(peer) = self.peer {
            if let Some(used) = u.per_peer.get_mut(&peer) {
                *used = used.saturating_sub(self.bytes);
                if *used == 0 {
                    u.per_peer.remove(&peer);
                }
            }
        }
    }
}

impl Budget {
    pub(crate) fn new(total: usize, per_peer: usize) -> Budget {
        Budget {
            usage: Arc::new(Mutex::new(Usage::default())),
            total,
            per_peer,
        }
    }

    /// Takes `payload` bytes (plus the overhead) from `peer`'s share and the total.
    pub(crate) fn charge(&self, peer: Option<PeerId>, payload: usize) -> Result<Charge, Refused> {
        let bytes = payload.saturating_add(EVENT_OVERHEAD);
        let Ok(mut u) = self.usage.lock() else {
            return Err(Refused::Full);
        };
        if let Some(p) = peer {
            let used = u.per_peer.get(&p).copied().unwrap_or(0);
            if used.saturating_add(bytes) > self.per_peer {
                return Err(Refused::PeerFull);
            }
        }
        if u.total.saturating_add(bytes) > self.total {
            return Err(Refused::Full);
        }
        u.total = u.total.saturating_add(bytes);
        if let Some(p) = peer {
            let used = u.per_peer.entry(p).or_insert(0);
            *used = used.saturating_add(bytes);
        }
        Ok(Charge {
            usage: self.usage.clone(),
            peer,
            bytes,
        })
    }

    /// Bytes queued now (for tests and metrics).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.usage.lock().map_or(0, |u| u.total)
    }
}

/// What the node reads inbound events from.
pub struct NetworkEvents {
    pub(crate) rx: mpsc::Receiver<(NetworkEvent, Charge)>,
}

impl NetworkEvents {
    /// The next inbound event; `None` once the network task stopped. Taking an event out
    /// gives its bytes back to the queue.
    pub async fn recv(&mut self) -> Option<NetworkEvent> {
        self.rx.recv().await.map(|(event, _charge)| event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_peer_fills_only_its_share_and_bytes_come_back_when_taken() {
        let budget = Budget::new(10_000, 4_000);
        let (flooder, honest) = (PeerId::random(), PeerId::random());
        let mut held = Vec::new();
        while let Ok(c) = budget.charge(Some(flooder), 1_000) {
            held.push(c);
        }
        assert_eq!(held.len(), 3);
        assert_eq!(
            budget.charge(Some(flooder), 1_000).err(),
            Some(Refused::PeerFull)
        );
        // The other peer still gets through.
        let c = budget
            .charge(Some(honest), 1_000)
            .expect("honest peer's share");
        drop(c);
        drop(held);
        assert_eq!(budget.queued(), 0);
        assert!(budget.charge(Some(flooder), 1_000).is_ok());
    }

    #[test]
    fn the_total_bounds_all_peers_together() {
        let budget = Budget::new(5_000, 4_000);
        let _a = budget.charge(Some(PeerId::random()), 3_000).expect("a");
        assert_eq!(
            budget.charge(Some(PeerId::random()), 3_000).err(),
            Some(Refused::Full)
        );
    }
}
