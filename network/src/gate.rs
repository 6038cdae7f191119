//! The membership gate: a small `NetworkBehaviour` that refuses every connection, inbound or
//! outbound, whose remote peer id (proven by the Noise handshake) is not in the current
//! membership. It runs before any protocol stream is opened, so a non-member never gets an
//! application message processed.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    task::{Context, Poll},
};

use libp2p::{
    core::{transport::PortUse, Endpoint},
    swarm::{
        dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};
use prometheus::IntCounter;

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
#[error("peer {0} is not a member of the consortium")]
pub struct NotMember(pub PeerId);

/// Why a banned member's connection was refused.
#[derive(Debug, thiserror::Error)]
#[error("peer {0} is banned for misbehaviour")]
pub struct Banned(pub PeerId);

/// Allows connections only to and from members that are not banned.
pub(crate) struct MembershipGate {
    members: HashSet<PeerId>,
    banned: HashMap<PeerId, tokio::time::Instant>,
    refused: IntCounter,
}

impl MembershipGate {
    pub(crate) fn new(members: HashSet<PeerId>, refused: IntCounter) -> Self {
        Self {
            members,
            banned: HashMap::new(),
            refused,
        }
    }

    pub(crate) fn is_member(&self, peer: &PeerId) -> bool {
        self.members.contains(peer)
    }

    /// Replaces the membership; the caller disconnects peers that are no longer members.
    pub(crate) fn set_members(&mut self, members: HashSet<PeerId>) {
        self.members = members;
    }

    /// Refuses the peer's connections until `until`.
    pub(crate) fn ban(&mut self, peer: PeerId, until: tokio::time::Instant) {
        let now = tokio::time::Instant::now();
        self.banned.retain(|_, u| *u > now);
        self.banned.insert(peer, until);
    }

    fn check(&self, peer: PeerId) -> Result<(), ConnectionDenied> {
        if self
            .banned
            .get(&peer)
            .is_some_and(|u| *u > tokio::time::Instant::now())
        {
            self.refused.inc();
            tracing::debug!(%peer, "refused connection from banned member");
            return Err(ConnectionDenied::new(Banned(peer)));
        }
        if self.members.contains(&peer) {
            Ok(())
        } else {
            self.refused.inc();
            tracing::debug!(%peer, "refused connection from non-member");
            Err(ConnectionDenied::new(NotMember(peer)))
        }
    }
}

impl NetworkBehaviour for MembershipGate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer).map(|()| dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        maybe_peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        match maybe_peer {
            Some(peer) => self.check(peer).map(|()| Vec::new()),
            None => Ok(Vec::new()),
        }
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer).map(|()| dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}
