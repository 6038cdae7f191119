//! The node's side of the network: a cloneable handle for commands and the inbound events.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
};

use libp2p::{gossipsub::MessageId, Multiaddr, PeerId};
use tokio::{
    sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
};

use crate::{
    config::SizeLimits,
    error::{NetworkError, Result},
    identity::peer_id_from_public_key,
};

/// The node's verdict on a gossip message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// Valid: forward it to the mesh.
    Accept,
    /// Invalid: drop it and lower the score of the peer that sent it.
    Reject,
    /// Not invalid but not wanted (e.g. a duplicate batch): drop it without penalty.
    Ignore,
}

/// Something that arrived from the network.
#[derive(Debug)]
pub enum NetworkEvent {
    /// A gossip message on a subscribed topic. It is held, not forwarded, until the node calls
    /// [`NetworkHandle::report_validation`] with `message_id` and `source`.
    Gossip {
        /// The topic name, as configured.
        topic: String,
        /// The member that delivered it to us (report validation against this peer).
        source: PeerId,
        /// The member that signed and published it.
        author: Option<PeerId>,
        /// Gossipsub's id of the message.
        message_id: MessageId,
        /// The payload.
        data: Vec<u8>,
    },
    /// A one-way direct message (already acknowledged to the sender).
    Direct {
        /// The sending member.
        from: PeerId,
        /// The payload.
        data: Vec<u8>,
    },
    /// A sync request; answer through `respond` (dropping it makes the request fail remotely).
    Request {
        /// The requesting member.
        from: PeerId,
        /// The request payload.
        data: Vec<u8>,
        /// Where the answer goes.
        respond: Responder,
    },
    /// The first connection to a member was established.
    PeerConnected(PeerId),
    /// The last connection to a member closed.
    PeerDisconnected(PeerId),
}

/// The answer slot of one inbound [`NetworkEvent::Request`].
#[derive(Debug)]
pub struct Responder(pub(crate) oneshot::Sender<Vec<u8>>);

impl Responder {
    /// Sends the response. A response over the configured `limits.response` is not sent (the
    /// request fails remotely) and is counted as `reason="response_too_large"`.
    pub fn respond(self, data: Vec<u8>) {
        // The network task may have stopped; then there is nobody left to answer.
        let _ = self.0.send(data);
    }
}

pub(crate) enum Command {
    Publish {
        topic: String,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<()>>,
    },
    Send {
        peer: PeerId,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<()>>,
    },
    Request {
        peer: PeerId,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>>>,
        /// This node's slot for requests to `peer`, held until the request ends on the wire
        /// (answer, failure or timeout), whatever became of the caller.
        slot: OwnedSemaphorePermit,
    },
    SetMembers(HashSet<PeerId>),
    Validation {
        message_id: MessageId,
        source: PeerId,
        acceptance: Acceptance,
    },
    Penalise {
        peer: PeerId,
        reason: &'static str,
    },
    PeerScore {
        peer: PeerId,
        reply: oneshot::Sender<Option<f64>>,
    },
    Shutdown,
}

/// State the network task publishes for cheap, synchronous reads.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub connected: BTreeSet<PeerId>,
    pub listen_addrs: Vec<Multiaddr>,
}

/// Peers whose request slots are remembered before idle ones are forgotten (members are few).
const MAX_REQUEST_PEERS: usize = 256;

pub(crate) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic elsewhere while holding the lock leaves plain data behind; keep using it.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Cloneable handle to a running network. The network task stops on [`Self::shutdown`] or when
/// every handle is dropped.
#[derive(Clone)]
pub struct NetworkHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    /// Sync requests in flight per peer, at most half the per-connection stream limit: the
    /// other half is the peer's requests to this node, which share the connection's slots.
    /// A request beyond it waits here rather than being refused by the peer ("at capacity"),
    /// which would fail it at once.
    pub(crate) request_slots: Arc<Mutex<HashMap<PeerId, Arc<Semaphore>>>>,
    pub(crate) requests_per_peer: usize,
    pub(crate) shared: Arc<Mutex<Shared>>,
    pub(crate) local_peer_id: PeerId,
    pub(crate) limits: SizeLimits,
    pub(crate) task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl NetworkHandle {
    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// Addresses the node listens on (filled in shortly after spawn, once the OS bound them).
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        lock(&self.shared).listen_addrs.clone()
    }

    /// Members with at least one open connection, in peer id order.
    pub fn connected_peers(&self) -> Vec<PeerId> {
        lock(&self.shared).connected.iter().copied().collect()
    }

    /// Publishes `data` on `topic` (one of the configured topics) to every connected member.
    pub async fn publish(&self, topic: &str, data: Vec<u8>) -> Result<()> {
        check_size("gossip", data.len(), self.limits.gossip)?;
        let (reply, rx) = oneshot::channel();
        self.command(Command::Publish {
            topic: topic.to_string(),
            data,
            reply,
        })
        .await?;
        rx.await.map_err(|_| NetworkError::Stopped)?
    }

    /// Sends a one-way message to `peer` (dialling it if needed). Returns once it is queued;
    /// delivery failures are logged, counted and left to the caller's own retransmission.
    pub async fn send(&self, peer: PeerId, data: Vec<u8>) -> Result<()> {
        check_size("direct", data.len(), self.limits.direct)?;
        let (reply, rx) = oneshot::channel();
        self.command(Command::Send { peer, data, reply }).await?;
        rx.await.map_err(|_| NetworkError::Stopped)?
    }

    /// Sends a sync request to `peer` and waits for its response (or the request timeout).
    /// At most half of `max_sync_streams` requests to one peer are in flight at once; more
    /// wait here for a slot. A slot is held until the request ends on the wire (answered,
    /// failed or timed out), even if the caller stopped waiting, because until then it holds
    /// one of the connection's streams on both sides.
    pub async fn request(&self, peer: PeerId, data: Vec<u8>) -> Result<Vec<u8>> {
        let rx = self.start_request(peer, data).await?;
        rx.await.map_err(|_| NetworkError::Stopped)?
    }

    /// As [`Self::request`], but gives up waiting for the answer `patience` after the request
    /// was sent (the wait for a slot does not count).
    pub async fn request_within(
        &self,
        peer: PeerId,
        data: Vec<u8>,
        patience: std::time::Duration,
    ) -> Result<Vec<u8>> {
        let rx = self.start_request(peer, data).await?;
        match tokio::time::timeout(patience, rx).await {
            Ok(answer) => answer.map_err(|_| NetworkError::Stopped)?,
            Err(_) => Err(NetworkError::Request {
                peer,
                reason: format!("no answer within {patience:?}"),
            }),
        }
    }

    async fn start_request(
        &self,
        peer: PeerId,
        data: Vec<u8>,
    ) -> Result<oneshot::Receiver<Result<Vec<u8>>>> {
        check_size("request", data.len(), self.limits.request)?;
        let slots = {
            let mut all = self.request_slots.lock().unwrap_or_else(|e| e.into_inner());
            if all.len() > MAX_REQUEST_PEERS {
                // Only peers with nothing in flight are forgotten.
                all.retain(|_, s| Arc::strong_count(s) > 1);
            }
            all.entry(peer)
                .or_insert_with(|| Arc::new(Semaphore::new(self.requests_per_peer)))
                .clone()
        };
        let slot = slots
            .acquire_owned()
            .await
            .map_err(|_| NetworkError::Stopped)?;
        let (reply, rx) = oneshot::channel();
        self.command(Command::Request {
            peer,
            data,
            reply,
            slot,
        })
        .await?;
        Ok(rx)
    }

    /// Replaces the membership by the holders of these ed25519 public keys. Connected peers
    /// outside it are disconnected at once; new members with known addresses are dialled.
    pub async fn set_members(&self, public_keys: &[[u8; 32]]) -> Result<()> {
        let peers = public_keys
            .iter()
            .map(peer_id_from_public_key)
            .collect::<Result<HashSet<_>>>()?;
        self.set_member_peers(peers).await
    }

    /// As [`Self::set_members`], with peer ids.
    pub async fn set_member_peers(&self, peers: impl IntoIterator<Item = PeerId>) -> Result<()> {
        self.command(Command::SetMembers(peers.into_iter().collect()))
            .await
    }

    /// The node's verdict on a [`NetworkEvent::Gossip`]: forward, reject (penalising `source`)
    /// or ignore it. Call exactly once per gossip event.
    pub async fn report_validation(
        &self,
        message_id: MessageId,
        source: PeerId,
        acceptance: Acceptance,
    ) -> Result<()> {
        self.command(Command::Validation {
            message_id,
            source,
            acceptance,
        })
        .await
    }

    /// Lowers `peer`'s score for a bad direct message or response (undecodable, bad signature,
    /// ...); counted as `tally_network_rejected_messages_total{reason}`. Use a short, fixed
    /// reason (it is a metric label).
    pub async fn penalise(&self, peer: PeerId, reason: &'static str) -> Result<()> {
        self.command(Command::Penalise { peer, reason }).await
    }

    /// Gossipsub's current score of `peer` (`None` if unknown): 0 is neutral, every rejected
    /// message and penalty lowers it, below -80 the peer is ignored until it decays.
    pub async fn peer_score(&self, peer: PeerId) -> Result<Option<f64>> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::PeerScore { peer, reply }).await?;
        rx.await.map_err(|_| NetworkError::Stopped)
    }

    /// Stops the network task, closing every connection and listener, and waits for it.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    async fn command(&self, command: Command) -> Result<()> {
        self.commands
            .send(command)
            .await
            .map_err(|_| NetworkError::Stopped)
    }
}

fn check_size(kind: &'static str, size: usize, limit: usize) -> Result<()> {
    if size > limit {
        Err(NetworkError::TooLarge { kind, size, limit })
    } else {
        Ok(())
    }
}
