//! The composed libp2p behaviour and the tuning of its parts for a small consortium.

use std::{collections::HashMap, time::Duration};

use libp2p::{
    connection_limits::{self, ConnectionLimits},
    gossipsub::{
        self, IdentTopic, MessageAuthenticity, PeerScoreParams, PeerScoreThresholds,
        TopicScoreParams, ValidationMode,
    },
    identify, identity, ping,
    request_response::{self, ProtocolSupport},
    swarm::NetworkBehaviour,
    StreamProtocol,
};

use crate::{
    codec::FrameCodec,
    config::NetworkConfig,
    error::{NetworkError, Result},
    gate::MembershipGate,
};

/// Protocol of one-way direct messages (answered by an empty acknowledgement).
pub const DIRECT_PROTOCOL: &str = "/tally/direct/1";
/// Protocol of sync requests (missing batches, blocks with certificates).
pub const SYNC_PROTOCOL: &str = "/tally/sync/1";
/// Identify protocol version string; peers announce it with their listen addresses.
pub const IDENTIFY_PROTOCOL: &str = "/tally/1";

/// Bytes of protobuf envelope (signature, key, seqno, topic) allowed on top of a gossip payload.
const GOSSIP_ENVELOPE: usize = 1024;
/// Penalty per invalid gossip message; P4 squares the count, so 1 → -10, 2 → -40, 3 → -90.
const INVALID_MESSAGE_WEIGHT: f64 = -10.0;

/// All of a node's protocols. The gate comes first so a non-member is refused before the
/// other behaviours hear of the connection.
#[derive(NetworkBehaviour)]
pub(crate) struct TallyBehaviour {
    pub gate: MembershipGate,
    pub limits: connection_limits::Behaviour,
    pub gossipsub: gossipsub::Behaviour,
    pub direct: request_response::Behaviour<FrameCodec>,
    pub sync: request_response::Behaviour<FrameCodec>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
}

impl TallyBehaviour {
    pub(crate) fn new(
        key: &identity::Keypair,
        config: &NetworkConfig,
        gate: MembershipGate,
    ) -> Result<Self> {
        let limits = ConnectionLimits::default()
            .with_max_established_per_peer(Some(config.max_connections_per_peer))
            .with_max_established(Some(config.max_connections))
            .with_max_pending_incoming(Some(config.max_connections))
            .with_max_pending_outgoing(Some(config.max_connections));
        let rr_config = |streams: usize| {
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(streams)
        };
        let direct = request_response::Behaviour::with_codec(
            FrameCodec {
                max_request: config.limits.direct,
                max_response: 0,
            },
            [(StreamProtocol::new(DIRECT_PROTOCOL), ProtocolSupport::Full)],
            rr_config(config.max_direct_streams),
        );
        let sync = request_response::Behaviour::with_codec(
            FrameCodec {
                max_request: config.limits.request,
                max_response: config.limits.response,
            },
            [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
            rr_config(config.max_sync_streams),
        );
        let identify = identify::Behaviour::new(identify::Config::new(
            IDENTIFY_PROTOCOL.to_string(),
            key.public(),
        ));
        Ok(Self {
            gate,
            limits: connection_limits::Behaviour::new(limits),
            gossipsub: gossipsub(key, config)?,
            direct,
            sync,
            identify,
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(config.ping_interval)
                    .with_timeout(config.dead_link_after),
            ),
        })
    }
}

/// Gossipsub for 4..20 known members: signed messages, strict validation by the node before
/// forwarding, flood publishing (the publisher sends to every member directly, so a batch
/// arrives in one hop), a mesh that covers the whole consortium, and scoring that only
/// punishes: invalid messages (P4) and the node's own penalties (application score), never an
/// honest member's bad luck (a partition, a restart, a quiet mempool).
fn gossipsub(key: &identity::Keypair, config: &NetworkConfig) -> Result<gossipsub::Behaviour> {
    let topics: Vec<IdentTopic> = config.topics.iter().map(IdentTopic::new).collect();
    let per_message = config.limits.gossip + GOSSIP_ENVELOPE;
    let mut builder = gossipsub::ConfigBuilder::default();
    builder
        .validation_mode(ValidationMode::Strict)
        .validate_messages()
        .heartbeat_interval(config.heartbeat)
        .flood_publish(true)
        .mesh_n(12)
        .mesh_n_low(4)
        .mesh_n_high(24)
        .mesh_outbound_min(2)
        .gossip_lazy(6)
        .history_length(6)
        .history_gossip(3)
        .duplicate_cache_time(Duration::from_secs(120))
        // A frame may carry one maximal message plus control traffic; each message inside is
        // held to the per-topic limit, and one above it counts as invalid (P4) for the sender.
        .max_transmit_size(2 * per_message + (64 << 10))
        .idontwant_message_size_threshold(16 << 10);
    for topic in &topics {
        builder.max_transmit_size_for_topic(per_message, topic.hash());
    }
    let gossip_config = builder
        .build()
        .map_err(|e| NetworkError::Build(format!("gossipsub config: {e}")))?;
    let mut behaviour =
        gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), gossip_config)
            .map_err(|e| NetworkError::Build(format!("gossipsub: {e}")))?;
    behaviour
        .with_peer_score(score_params(&topics), score_thresholds())
        .map_err(|e| NetworkError::Build(format!("gossipsub scoring: {e}")))?;
    for topic in &topics {
        behaviour
            .subscribe(topic)
            .map_err(|e| NetworkError::Build(format!("subscribe {topic}: {e}")))?;
    }
    Ok(behaviour)
}

fn score_params(topics: &[IdentTopic]) -> PeerScoreParams {
    let topic_params = TopicScoreParams {
        topic_weight: 1.0,
        // Members are few and known: no reward for time in mesh or first deliveries, and no
        // penalty for quiet mesh members (a validator with an empty mempool sends nothing).
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: INVALID_MESSAGE_WEIGHT,
        invalid_message_deliveries_decay: 0.9,
        ..TopicScoreParams::default()
    };
    let topics: HashMap<_, _> = topics
        .iter()
        .map(|t| (t.hash(), topic_params.clone()))
        .collect();
    PeerScoreParams {
        topics,
        topic_score_cap: 10.0,
        app_specific_weight: 1.0,
        // Every member may run on one host (tests, devnet): no IP colocation penalty.
        ip_colocation_factor_weight: 0.0,
        // No behaviour penalty (P7) either: a partition makes honest members break IWANT
        // promises (the messages they announced cannot arrive) and GRAFT again during a
        // PRUNE backoff once it heals. P7 grows with the square of such events: a few
        // seconds of partition were enough for a validator to ban its honest peers, and the
        // healed network lost its quorum at the next fault. What a member does wrong on
        // purpose (invalid messages, floods, forged frames) is counted by P4 and the node's
        // own penalties.
        behaviour_penalty_weight: 0.0,
        // Nor a slow-peer penalty: each message that expires in the send queue to a peer costs
        // it 0.2, and a partition expires hundreds at once (a validator banned an honest peer
        // at -106 a few seconds after a 3 + 1 partition healed, with no invalid message).
        slow_peer_weight: 0.0,
        decay_interval: Duration::from_secs(1),
        ..PeerScoreParams::default()
    }
}

fn score_thresholds() -> PeerScoreThresholds {
    PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: -80.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only P4 (invalid messages) and the application score can make a member's score
    /// negative: every weight of a component an honest member can run up by bad luck is 0.
    #[test]
    fn only_invalid_messages_and_the_nodes_penalties_lower_a_score() {
        let topics = [IdentTopic::new("batches")];
        let p = score_params(&topics);
        assert_eq!(p.behaviour_penalty_weight, 0.0, "P7");
        assert_eq!(p.slow_peer_weight, 0.0, "slow peer");
        assert_eq!(p.ip_colocation_factor_weight, 0.0, "P6");
        assert!(p.app_specific_weight > 0.0, "P5");
        for t in p.topics.values() {
            assert_eq!(t.mesh_message_deliveries_weight, 0.0, "P3");
            assert_eq!(t.mesh_failure_penalty_weight, 0.0, "P3b");
            assert!(t.invalid_message_deliveries_weight < 0.0, "P4");
        }
    }
}
