#![doc = include_str!("../README.md")]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

mod actor;
mod ban;
mod behaviour;
mod codec;
mod config;
mod error;
mod gate;
mod handle;
mod identity;
mod metrics;
mod queue;
mod redial;

pub use actor::{tcp_addr, Network};
pub use behaviour::{DIRECT_PROTOCOL, IDENTIFY_PROTOCOL, SYNC_PROTOCOL};
pub use config::{BootstrapPeer, NetworkConfig, SizeLimits};
pub use error::{NetworkError, Result};
pub use gate::{Banned, NotMember};
pub use handle::{Acceptance, NetworkEvent, NetworkHandle, Responder};
pub use identity::{keypair_from_secret, peer_id_from_public_key, peer_id_from_secret};
pub use libp2p::{gossipsub::MessageId, multiaddr, Multiaddr, PeerId};
pub use queue::NetworkEvents;
