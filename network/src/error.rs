//! The crate's one error type.

use libp2p::PeerId;

/// Everything that can go wrong in `tally-network`.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The 32-byte ed25519 secret key could not be turned into a libp2p keypair.
    #[error("invalid ed25519 secret key: {0}")]
    InvalidSecretKey(String),
    /// A 32-byte value is not a valid ed25519 public key (not a curve point).
    #[error("invalid ed25519 public key: {0}")]
    InvalidPublicKey(String),
    /// The configuration is inconsistent; the message names the field.
    #[error("invalid network config: {0}")]
    InvalidConfig(String),
    /// Building the libp2p transport or behaviours failed.
    #[error("failed to build the libp2p swarm: {0}")]
    Build(String),
    /// Listening on a configured address failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address from the config.
        addr: String,
        /// Why the transport refused it.
        reason: String,
    },
    /// The network task has stopped (shut down, or its runtime ended).
    #[error("the network task has stopped")]
    Stopped,
    /// A payload is larger than the configured limit for its kind.
    #[error("{kind} payload of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// `gossip`, `direct`, `request` or `response`.
        kind: &'static str,
        /// The payload size in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The topic is not one of the configured topics.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// Gossipsub refused to publish (no peers, duplicate, ...).
    #[error("publish failed: {0}")]
    Publish(String),
    /// The peer is not in the current membership.
    #[error("peer {0} is not a member")]
    NotMember(PeerId),
    /// A direct message or request to a peer failed (dial failure, timeout, closed, ...).
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// The peer the request was sent to.
        peer: PeerId,
        /// What failed.
        reason: String,
    },
    /// Registering a metric into the caller's registry failed (e.g. a name already registered).
    #[error("metrics registration failed: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, NetworkError>;
