//! One ed25519 key per member: libp2p keypairs and peer ids derived from raw key bytes.

use libp2p::{identity, PeerId};

use crate::error::{NetworkError, Result};

/// Builds the libp2p keypair from a node's 32-byte ed25519 secret key (the node's key file).
pub fn keypair_from_secret(secret: &[u8; 32]) -> Result<identity::Keypair> {
    let mut bytes = *secret;
    identity::Keypair::ed25519_from_bytes(&mut bytes)
        .map_err(|e| NetworkError::InvalidSecretKey(e.to_string()))
}

/// The libp2p peer id of the member whose ed25519 public key is `public_key`.
pub fn peer_id_from_public_key(public_key: &[u8; 32]) -> Result<PeerId> {
    let key = identity::ed25519::PublicKey::try_from_bytes(public_key)
        .map_err(|e| NetworkError::InvalidPublicKey(e.to_string()))?;
    Ok(identity::PublicKey::from(key).to_peer_id())
}

/// The libp2p peer id of the holder of `secret`; equal to
/// `peer_id_from_public_key(public key of secret)`.
pub fn peer_id_from_secret(secret: &[u8; 32]) -> Result<PeerId> {
    Ok(keypair_from_secret(secret)?.public().to_peer_id())
}
