//! Which member to dial when: addresses learnt from bootstrap and identify, and an exponential
//! backoff per peer that resets once a connection is established.

use std::{collections::BTreeMap, time::Duration};

use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;

/// Most addresses remembered per peer.
const MAX_ADDRS_PER_PEER: usize = 8;

#[derive(Debug)]
struct PeerDial {
    addrs: Vec<Multiaddr>,
    /// Delay to use for the next scheduled attempt.
    delay: Duration,
    /// When the next attempt is due; `None` while connected or being dialled.
    due: Option<Instant>,
}

/// Redial schedule of known member peers.
#[derive(Debug)]
pub(crate) struct Redialer {
    initial: Duration,
    max: Duration,
    peers: BTreeMap<PeerId, PeerDial>,
}

impl Redialer {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            peers: BTreeMap::new(),
        }
    }

    /// Remembers an address of `peer`. Returns true if it was new.
    pub(crate) fn add_address(&mut self, peer: PeerId, addr: Multiaddr) -> bool {
        let entry = self.peers.entry(peer).or_insert_with(|| PeerDial {
            addrs: Vec::new(),
            delay: self.initial,
            due: None,
        });
        if entry.addrs.contains(&addr) {
            return false;
        }
        if entry.addrs.len() >= MAX_ADDRS_PER_PEER {
            entry.addrs.remove(0);
        }
        entry.addrs.push(addr);
        true
    }

    pub(crate) fn addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.peers
            .get(peer)
            .map(|p| p.addrs.clone())
            .unwrap_or_default()
    }

    /// Every peer with a known address, in peer id order.
    pub(crate) fn known_peers(&self) -> Vec<PeerId> {
        self.peers.keys().copied().collect()
    }

    /// A connection to `peer` is up: no redial pending, backoff reset.
    pub(crate) fn connected(&mut self, peer: &PeerId) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.due = None;
            p.delay = self.initial;
        }
    }

    /// The last connection closed or a dial failed: schedule the next attempt and double the
    /// delay for the one after.
    pub(crate) fn schedule(&mut self, peer: &PeerId, now: Instant) {
        if let Some(p) = self.peers.get_mut(peer) {
            if p.addrs.is_empty() || p.due.is_some() {
                return;
            }
            p.due = Some(now + p.delay);
            p.delay = (p.delay * 2).min(self.max);
        }
    }

    /// Peers whose attempt is due at `now`, with their addresses; their schedule is cleared.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.peers
            .iter_mut()
            .filter(|(_, p)| p.due.is_some_and(|due| due <= now))
            .map(|(peer, p)| {
                p.due = None;
                (*peer, p.addrs.clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn backoff_doubles_up_to_max_and_resets_on_connect() {
        let mut r = Redialer::new(Duration::from_millis(100), Duration::from_millis(350));
        let peer = PeerId::random();
        let t0 = Instant::now();
        r.schedule(&peer, t0);
        assert!(r.take_due(t0).is_empty(), "unknown peers are never dialled");
        assert!(r.add_address(peer, addr(1)));
        assert!(!r.add_address(peer, addr(1)));

        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..4 {
            r.schedule(&peer, now);
            let mut waited = Duration::ZERO;
            while r.take_due(now + waited).is_empty() {
                waited += Duration::from_millis(50);
            }
            delays.push(waited.as_millis());
            now += waited;
        }
        assert_eq!(delays, vec![100, 200, 350, 350]);

        r.connected(&peer);
        r.schedule(&peer, now);
        assert!(r.take_due(now + Duration::from_millis(99)).is_empty());
        assert_eq!(
            r.take_due(now + Duration::from_millis(100)),
            vec![(peer, vec![addr(1)])]
        );
    }
}
