//! The network task: owns the swarm and turns commands into protocol actions and swarm events
//! into [`NetworkEvent`]s. Nothing here blocks on the node: inbound events are handed over with
//! `try_send`, so a slow node loses messages (counted) rather than stalling pings and gossip.
//!
//! Over 600 lines because one task owns the swarm and every protocol's events meet in its
//! event loop; the parts that stand alone are apart (`gate.rs`, `ban.rs`, `queue.rs`,
//! `codec.rs`, `handle.rs`).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{future::BoxFuture, stream::FuturesUnordered, FutureExt, StreamExt};
use libp2p::{
    core::{upgrade, Transport},
    gossipsub::{self, IdentTopic, MessageAcceptance, TopicHash},
    identify, noise,
    request_response::{self, InboundFailure, OutboundFailure, OutboundRequestId, ResponseChannel},
    swarm::{
        dial_opts::{DialOpts, PeerCondition},
        DialError, SwarmEvent,
    },
    tcp, yamux, Multiaddr, PeerId, Swarm, SwarmBuilder,
};
use prometheus::Registry;
use tokio::{
    sync::{mpsc, oneshot},
    time::{Instant, MissedTickBehavior},
};

use crate::{
    ban::Bans,
    behaviour::{TallyBehaviour, TallyBehaviourEvent, DIRECT_PROTOCOL, SYNC_PROTOCOL},
    codec::{is_oversized, Frame},
    config::{NetworkConfig, SizeLimits},
    error::{NetworkError, Result},
    gate::MembershipGate,
    handle::{lock, Acceptance, Command, NetworkEvent, NetworkHandle, Responder, Shared},
    identity::{keypair_from_secret, peer_id_from_public_key},
    metrics::{close_cause, NetworkMetrics, IN, OUT},
    queue::{Budget, Charge, NetworkEvents, Refused},
    redial::Redialer,
};

type BoxedError = Box<dyn std::error::Error + Send + Sync>;

/// Metric kind labels of the request-response protocols.
const DIRECT: &str = "direct";
const SYNC: &str = "sync";
/// Application-score penalty per [`NetworkHandle::penalise`] or bad direct frame.
const PENALTY: f64 = 10.0;
/// Fraction of the application score kept per second.
const PENALTY_DECAY: f64 = 0.9;
const TICK: Duration = Duration::from_millis(200);

/// A request in flight: to whom, where its answer goes, and the caller's slot, freed with it.
type RequestReply = (
    PeerId,
    oneshot::Sender<Result<Vec<u8>>>,
    tokio::sync::OwnedSemaphorePermit,
);
type PendingResponse = BoxFuture<'static, (PeerId, ResponseChannel<Vec<u8>>, Option<Vec<u8>>)>;

/// Entry point: builds and starts a node's network.
pub struct Network;

impl Network {
    /// Builds the swarm, starts listening, dials the bootstrap peers and runs the network task
    /// on the current tokio runtime (call from inside one). Metrics go into `registry`.
    pub fn spawn(
        config: NetworkConfig,
        registry: &Registry,
    ) -> Result<(NetworkHandle, NetworkEvents)> {
        config.validate().map_err(NetworkError::InvalidConfig)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| NetworkError::Build("Network::spawn needs a tokio runtime".into()))?;
        let metrics = NetworkMetrics::register(registry)?;
        let key = keypair_from_secret(&config.secret_key)?;
        let local_peer_id = key.public().to_peer_id();
        let members = config
            .members
            .iter()
            .map(peer_id_from_public_key)
            .collect::<Result<HashSet<_>>>()?;
        let gate = MembershipGate::new(members, metrics.refused_connections.clone());
        let behaviour = TallyBehaviour::new(&key, &config, gate)?;
        let max_streams = config.max_streams_per_connection;

        let dead_link_after = config.dead_link_after;
        let mut swarm = SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|key| -> std::result::Result<_, BoxedError> {
                let mut muxer = yamux::Config::default();
                muxer.set_max_num_streams(max_streams);
                Ok(
                    tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                        .map(move |stream, _| drop_when_unacknowledged(stream, dead_link_after))
                        .upgrade(upgrade::Version::V1Lazy)
                        .authenticate(noise::Config::new(key)?)
                        .multiplex(muxer),
                )
            })
            .map_err(|e| NetworkError::Build(e.to_string()))?
            // `/dns4/<name>/tcp/<port>` addresses are resolved at every dial (containers and
            // Kubernetes pods change address when they restart; their names do not).
            .with_dns()
            .map_err(|e| NetworkError::Build(format!("DNS resolver: {e}")))?
            .with_behaviour(|_| behaviour)
            .map_err(|e| NetworkError::Build(e.to_string()))?
            .with_swarm_config(|c| {
                c.with_idle_connection_timeout(Duration::from_secs(3600))
                    .with_max_negotiating_inbound_streams(32)
            })
            .with_connection_timeout(config.dial_timeout)
            .build();
        for addr in &config.listen_addrs {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NetworkError::Listen {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })?;
        }

        let mut redialer = Redialer::new(config.redial_initial, config.redial_max);
        let mut first_dials = Vec::new();
        for peer in &config.bootstrap {
            let peer_id = peer_id_from_public_key(&peer.public_key)?;
            if peer_id != local_peer_id {
                redialer.add_address(peer_id, peer.addr.clone());
                first_dials.push(peer_id);
            }
        }

        let (commands_tx, commands_rx) = mpsc::channel(4096);
        let (events_tx, events_rx) = mpsc::channel(config.event_queue);
        let budget = Budget::new(config.event_queue_bytes, config.event_queue_peer_bytes);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let topics = config
            .topics
            .iter()
            .map(|t| (IdentTopic::new(t).hash(), t.clone()))
            .collect();
        let mut actor = Actor {
            swarm,
            commands: commands_rx,
            events: events_tx,
            metrics,
            redialer,
            topics,
            limits: config.limits,
            shared: shared.clone(),
            pending_requests: HashMap::new(),
            pending_responses: FuturesUnordered::new(),
            app_scores: HashMap::new(),
            budget,
            bans: Bans::new(config.ban_threshold, config.ban_initial, config.ban_max),
        };
        for peer in first_dials {
            actor.dial(peer);
        }
        let task = runtime.spawn(actor.run());
        let handle = NetworkHandle {
            commands: commands_tx,
            shared,
            local_peer_id,
            limits: config.limits,
            request_slots: Arc::default(),
            requests_per_peer: (config.max_sync_streams / 2).max(1),
            task: Arc::new(Mutex::new(Some(task))),
        };
        Ok((handle, NetworkEvents { rx: events_rx }))
    }
}

/// Sets `TCP_USER_TIMEOUT` on a new connection: once data sent on it has gone unacknowledged
/// for `after` (a partition, a peer whose host vanished), the kernel drops the connection and
/// the swarm reports it closed, so the peer is redialled at once. Without it the kernel backs
/// off its retransmissions for minutes and, after a partition heals, what is queued waits for
/// the next one. Pings keep data in flight on a silent link. Where the option cannot be set
/// (not Linux), the connection is kept as it is.
fn drop_when_unacknowledged(
    stream: tcp::tokio::TcpStream,
    after: Duration,
) -> tcp::tokio::TcpStream {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket2::SockRef::from(&stream.0).set_tcp_user_timeout(Some(after)) {
        tracing::warn!(error = %e, "cannot set TCP_USER_TIMEOUT; a dead link is noticed late");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = after;
    stream
}

struct Actor {
    swarm: Swarm<TallyBehaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<(NetworkEvent, Charge)>,
    metrics: NetworkMetrics,
    redialer: Redialer,
    /// Configured topics by hash, for metric labels and events.
    topics: HashMap<TopicHash, String>,
    limits: SizeLimits,
    shared: Arc<Mutex<Shared>>,
    pending_requests: HashMap<OutboundRequestId, RequestReply>,
    pending_responses: FuturesUnordered<PendingResponse>,
    /// Application-specific gossipsub score per peer (only penalties, decaying).
    app_scores: HashMap<PeerId, f64>,
    /// Bytes of inbound events waiting for the node, per peer.
    budget: Budget,
    /// Peers disconnected for misbehaviour, and for how long.
    bans: Bans,
}

impl Actor {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_decay = Instant::now();
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    None | Some(Command::Shutdown) => break,
                    Some(command) => self.on_command(command),
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some((peer, channel, response)) = self.pending_responses.next(),
                    if !self.pending_responses.is_empty() => {
                    self.respond(peer, channel, response);
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    self.redial_due(now);
                    if now.duration_since(last_decay) >= Duration::from_secs(1) {
                        last_decay = now;
                        self.decay_app_scores();
                        self.ban_by_gossip_score();
                    }
                }
            }
        }
        tracing::debug!(peer = %self.swarm.local_peer_id(), "network task stopped");
    }

    fn is_member(&self, peer: &PeerId) -> bool {
        self.swarm.behaviour().gate.is_member(peer)
    }

    /// Queues an event for the node, charging `payload` bytes to `peer`'s share.
    fn emit(&mut self, peer: Option<PeerId>, payload: usize, event: NetworkEvent) -> bool {
        let charge = match self.budget.charge(peer, payload) {
            Ok(c) => c,
            Err(Refused::Full) => {
                self.metrics.reject("event_queue_full");
                return false;
            }
            Err(Refused::PeerFull) => {
                self.metrics.reject("event_queue_peer_full");
                return false;
            }
        };
        match self.events.try_send((event, charge)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.reject("event_queue_full");
                false
            }
            // The node dropped its receiver: it is shutting down.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    // ---- commands -------------------------------------------------------------------------

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(self.publish(&topic, data));
            }
            Command::Send { peer, data, reply } => {
                let result = if self.is_member(&peer) {
                    self.metrics.message(OUT, DIRECT, data.len());
                    self.swarm
                        .behaviour_mut()
                        .direct
                        .send_request(&peer, Frame::Data(data));
                    Ok(())
                } else {
                    Err(NetworkError::NotMember(peer))
                };
                let _ = reply.send(result);
            }
            Command::Request {
                peer,
                data,
                reply,
                slot,
            } => {
                if self.is_member(&peer) {
                    self.metrics.message(OUT, SYNC, data.len());
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .sync
                        .send_request(&peer, Frame::Data(data));
                    self.pending_requests.insert(id, (peer, reply, slot));
                } else {
                    let _ = reply.send(Err(NetworkError::NotMember(peer)));
                }
            }
            Command::SetMembers(members) => self.set_members(members),
            Command::Validation {
                message_id,
                source,
                acceptance,
            } => {
                let acceptance = match acceptance {
                    Acceptance::Accept => MessageAcceptance::Accept,
                    Acceptance::Reject => {
                        self.metrics.reject("gossip_invalid");
                        MessageAcceptance::Reject
                    }
                    Acceptance::Ignore => MessageAcceptance::Ignore,
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &source, acceptance);
            }
            Command::Penalise { peer, reason } => self.penalise(peer, reason),
            Command::PeerScore { peer, reply } => {
                let _ = reply.send(self.swarm.behaviour().gossipsub.peer_score(&peer));
            }
            Command::Shutdown => {}
        }
    }

    fn publish(&mut self, topic: &str, data: Vec<u8>) -> Result<()> {
        let topic = IdentTopic::new(topic);
        let Some(name) = self.topics.get(&topic.hash()) else {
            return Err(NetworkError::UnknownTopic(topic.to_string()));
        };
        self.metrics.message(OUT, name, data.len());
        self.swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic, data)
            .map(|_| ())
            .map_err(|e| NetworkError::Publish(e.to_string()))
    }

    fn set_members(&mut self, members: HashSet<PeerId>) {
        let removed: Vec<PeerId> = lock(&self.shared)
            .connected
            .iter()
            .filter(|p| !members.contains(p))
            .copied()
            .collect();
        self.swarm.behaviour_mut().gate.set_members(members);
        for peer in removed {
            tracing::info!(%peer, "disconnecting peer removed from membership");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        // Newly admitted members we know an address of are dialled now.
        for peer in self.redialer.known_peers() {
            if self.is_member(&peer) && !self.swarm.is_connected(&peer) {
                self.dial(peer);
            }
        }
    }

    fn penalise(&mut self, peer: PeerId, reason: &'static str) {
        self.metrics.reject(reason);
        let score = self.app_scores.entry(peer).or_insert(0.0);
        *score -= PENALTY;
        let score = *score;
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, score);
        if self.bans.crossed(score) {
            self.ban(peer, reason);
        }
    }

    /// Peers whose gossipsub score (invalid messages, floods) crossed the ban threshold.
    fn ban_by_gossip_score(&mut self) {
        let low: Vec<(PeerId, f64)> = self
            .swarm
            .connected_peers()
            .filter_map(|p| {
                let score = self.swarm.behaviour().gossipsub.peer_score(p)?;
                self.bans.crossed(score).then_some((*p, score))
            })
            .collect();
        for (peer, score) in low {
            let app = self.app_scores.get(&peer).copied().unwrap_or(0.0);
            tracing::warn!(%peer, score, app, "gossip score at the ban threshold");
            self.ban(peer, "gossip_score");
        }
    }

    /// Disconnects a misbehaving member and refuses its connections (both ways) for a while,
    /// doubling with each ban. Its score starts over when the ban ends.
    fn ban(&mut self, peer: PeerId, reason: &'static str) {
        let until = self.bans.ban(peer, Instant::now());
        self.metrics.bans.inc();
        tracing::warn!(%peer, reason, "peer banned for misbehaviour");
        self.app_scores.remove(&peer);
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, 0.0);
        self.swarm.behaviour_mut().gate.ban(peer, until);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn decay_app_scores(&mut self) {
        let mut updates = Vec::new();
        self.app_scores.retain(|peer, score| {
            *score *= PENALTY_DECAY;
            if *score > -0.1 {
                *score = 0.0;
            }
            updates.push((*peer, *score));
            *score != 0.0
        });
        for (peer, score) in updates {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .set_application_score(&peer, score);
        }
    }

    // ---- dialling -------------------------------------------------------------------------

    fn dial(&mut self, peer: PeerId) {
        let addrs = self.redialer.addresses(&peer);
        if addrs.is_empty() || !self.is_member(&peer) {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        match self.swarm.dial(opts) {
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {}
            Err(e) => {
                tracing::debug!(%peer, error = %e, "dial failed");
                self.redialer.schedule(&peer, Instant::now());
            }
        }
    }

    fn redial_due(&mut self, now: Instant) {
        for (peer, _) in self.redialer.take_due(now) {
            if self.is_member(&peer) && !self.swarm.is_connected(&peer) {
                tracing::debug!(%peer, "redialling member");
                self.dial(peer);
            }
        }
    }

    // ---- swarm events ---------------------------------------------------------------------

    fn on_swarm_event(&mut self, event: SwarmEvent<TallyBehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                lock(&self.shared).listen_addrs.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                lock(&self.shared).listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                if endpoint.is_dialer() {
                    self.redialer
                        .add_address(peer_id, endpoint.get_remote_address().clone());
                }
                self.redialer.connected(&peer_id);
                if num_established.get() == 1 {
                    let count = {
                        let mut shared = lock(&self.shared);
                        shared.connected.insert(peer_id);
                        shared.connected.len()
                    };
                    self.metrics.connected_peers.set(count as i64);
                    tracing::info!(peer = %peer_id, "member connected");
                    self.emit(None, 0, NetworkEvent::PeerConnected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                endpoint,
                ..
            } => {
                let reason = close_cause(
                    cause
                        .as_ref()
                        .map(|e| e as &(dyn std::error::Error + 'static)),
                );
                if self.is_member(&peer_id) {
                    self.metrics.closed.with_label_values(&[reason]).inc();
                }
                tracing::debug!(
                    peer = %peer_id,
                    remote = %endpoint.get_remote_address(),
                    dialer = endpoint.is_dialer(),
                    cause = ?cause,
                    reason,
                    "connection closed"
                );
                if num_established > 0 {
                    return;
                }
                let count = {
                    let mut shared = lock(&self.shared);
                    shared.connected.remove(&peer_id);
                    shared.connected.len()
                };
                self.metrics.connected_peers.set(count as i64);
                tracing::info!(peer = %peer_id, cause = ?cause, "member disconnected");
                self.emit(None, 0, NetworkEvent::PeerDisconnected(peer_id));
                if self.is_member(&peer_id) {
                    self.redialer.schedule(&peer_id, Instant::now());
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "outgoing connection failed");
                if self.is_member(&peer) && !self.swarm.is_connected(&peer) {
                    self.redialer.schedule(&peer, Instant::now());
                }
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: TallyBehaviourEvent) {
        match event {
            TallyBehaviourEvent::Gossipsub(event) => self.on_gossip(event),
            TallyBehaviourEvent::Direct(event) => self.on_direct(event),
            TallyBehaviourEvent::Sync(event) => self.on_sync(event),
            TallyBehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })
                if self.is_member(&peer_id) =>
            {
                for addr in info.listen_addrs {
                    self.redialer.add_address(peer_id, addr);
                }
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source: source,
            message_id,
            message,
        } = event
        else {
            return;
        };
        let Some(topic) = self.topics.get(&message.topic).cloned() else {
            self.reject_gossip(&message_id, &source, "unknown_topic");
            return;
        };
        self.metrics.message(IN, &topic, message.data.len());
        if message.data.len() > self.limits.gossip {
            self.reject_gossip(&message_id, &source, "oversized");
            return;
        }
        if !message.source.is_some_and(|author| self.is_member(&author)) {
            self.reject_gossip(&message_id, &source, "non_member_author");
            return;
        }
        let len = message.data.len();
        let delivered = self.emit(
            Some(source),
            len,
            NetworkEvent::Gossip {
                topic,
                source,
                author: message.source,
                message_id: message_id.clone(),
                data: message.data,
            },
        );
        if !delivered {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&message_id, &source, MessageAcceptance::Ignore);
        }
    }

    fn reject_gossip(&mut self, id: &gossipsub::MessageId, source: &PeerId, reason: &str) {
        self.metrics.reject(reason);
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, MessageAcceptance::Reject);
    }

    fn on_direct(&mut self, event: request_response::Event<Frame, Vec<u8>>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let Some(request) = self.accept_frame(peer, request) else {
                    return;
                };
                self.metrics.message(IN, DIRECT, request.len());
                // The acknowledgement only says "received"; the receiver may be closing.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .direct
                    .send_response(channel, Vec::new());
                let len = request.len();
                self.emit(
                    Some(peer),
                    len,
                    NetworkEvent::Direct {
                        from: peer,
                        data: request,
                    },
                );
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, protocol = DIRECT_PROTOCOL, "direct send failed");
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                self.on_inbound_failure(peer, error);
            }
            _ => {}
        }
    }

    fn on_sync(&mut self, event: request_response::Event<Frame, Vec<u8>>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let Some(request) = self.accept_frame(peer, request) else {
                    return;
                };
                self.metrics.message(IN, SYNC, request.len());
                let (tx, rx) = oneshot::channel();
                let len = request.len();
                let delivered = self.emit(
                    Some(peer),
                    len,
                    NetworkEvent::Request {
                        from: peer,
                        data: request,
                        respond: Responder(tx),
                    },
                );
                if delivered {
                    self.pending_responses
                        .push(rx.map(move |r| (peer, channel, r.ok())).boxed());
                }
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                self.metrics.message(IN, SYNC, response.len());
                if let Some((_, reply, _slot)) = self.pending_requests.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                } else {
                    tracing::debug!(%peer, "response to an unknown request");
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let OutboundFailure::Io(e) = &error {
                    self.penalise_bad_frame(peer, e);
                }
                if let Some((_, reply, _slot)) = self.pending_requests.remove(&request_id) {
                    let _ = reply.send(Err(NetworkError::Request {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                self.on_inbound_failure(peer, error);
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// The payload of a well-formed request; a bad frame is counted, penalised and dropped
    /// (its response channel closes, so the sender sees a failure).
    fn accept_frame(&mut self, peer: PeerId, frame: Frame) -> Option<Vec<u8>> {
        match frame {
            Frame::Data(data) => Some(data),
            Frame::Oversized(len) => {
                tracing::debug!(%peer, len, "oversized request frame");
                self.penalise(peer, "oversized");
                None
            }
            Frame::Truncated => {
                tracing::debug!(%peer, "truncated request frame");
                self.penalise(peer, "malformed");
                None
            }
        }
    }

    fn on_inbound_failure(&mut self, peer: PeerId, error: InboundFailure) {
        match error {
            InboundFailure::Io(e) => self.penalise_bad_frame(peer, &e),
            other => tracing::debug!(%peer, error = %other, "inbound request failed"),
        }
    }

    /// A response from `peer` over our limit is its fault; other I/O errors (resets, a
    /// request the remote chose not to answer) are not.
    fn penalise_bad_frame(&mut self, peer: PeerId, error: &std::io::Error) {
        if is_oversized(error) {
            self.penalise(peer, "oversized");
        } else {
            tracing::debug!(%peer, %error, "stream error");
        }
    }

    fn respond(
        &mut self,
        peer: PeerId,
        channel: ResponseChannel<Vec<u8>>,
        response: Option<Vec<u8>>,
    ) {
        let Some(response) = response else {
            tracing::debug!(%peer, "request dropped without a response");
            return;
        };
        if response.len() > self.limits.response {
            self.metrics.reject("response_too_large");
            return;
        }
        self.metrics.message(OUT, SYNC, response.len());
        if self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(channel, response)
            .is_err()
        {
            tracing::debug!(%peer, protocol = SYNC_PROTOCOL, "requester went away before the response");
        }
    }
}

/// The TCP multiaddr of `ip` and `port`, e.g. `/ip4/127.0.0.1/tcp/0` (port 0: any free port).
pub fn tcp_addr(ip: std::net::Ipv4Addr, port: u16) -> Multiaddr {
    Multiaddr::empty()
        .with(libp2p::multiaddr::Protocol::Ip4(ip))
        .with(libp2p::multiaddr::Protocol::Tcp(port))
}
